package client

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/aitrail/aitrail/internal/merkle"
)

// TestVerifyHugeCheckpoint: a log (anyone holding its key) that signs a
// checkpoint of 2^62 records or more gets an error from Verify, not a
// verifier that never returns (the tree math overflows past 2^62).
func TestVerifyHugeCheckpoint(t *testing.T) {
	skey, vkey, _ := note.GenerateKey(rand.Reader, "fuzz.example/log")
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	for _, size := range []uint64{1 << 62, 1<<63 - 1, 1 << 63, 1<<64 - 1} {
		cp, _ := merkle.Checkpoint{Origin: "fuzz.example/log", Size: size}.Sign(s)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/log/checkpoint" {
				w.Write(cp)
				return
			}
			http.NotFound(w, r)
		}))
		done := make(chan error, 1)
		go func() {
			_, err := New(srv.URL, "").Verify(context.Background(), v, VerifyOptions{})
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, merkle.ErrBadCheckpoint) {
				t.Errorf("size %d: %v, want a bad checkpoint", size, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("size %d: Verify has not returned after 5 s", size)
		}
		srv.Close()
	}
}
