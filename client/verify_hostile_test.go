package client

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/aitrail/aitrail/internal/merkle"
)

// logServer serves l, of n records, as C2SP tiles with a checkpoint
// signed by a new key, and returns the key's verifier. answer, if set, may
// answer a request itself (it returns true then).
func logServer(t *testing.T, l *fuzzLog, answer func(w http.ResponseWriter, r *http.Request) bool) (*httptest.Server, note.Verifier) {
	t.Helper()
	skey, vkey, _ := note.GenerateKey(rand.Reader, "hostile.example/log")
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	n := len(l.records)
	root, err := tlog.TreeHash(int64(n), l)
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := merkle.Checkpoint{Origin: "hostile.example/log", Size: uint64(n), Hash: root}.Sign(signer)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if answer != nil && answer(w, r) {
			return
		}
		if r.URL.Path == "/log/checkpoint" {
			w.Write(cp)
			return
		}
		data, ok := l.serve(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv, verifier
}

// endless writes to w until the client stops reading, and adds what it
// wrote to written.
func endless(w http.ResponseWriter, written *atomic.Int64) {
	chunk := make([]byte, 64<<10)
	for {
		n, err := w.Write(chunk)
		written.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// TestVerifyReadsOnlyWhatAnAnswerCanHold: a server without the log's key
// that sends endless bodies gets an error, after the client has read no
// more than the answer can hold (a hash tile: 32 bytes a hash; a
// checkpoint: 64 KiB; a bundle: 65,537 bytes an entry), not 256 MiB each.
func TestVerifyReadsOnlyWhatAnAnswerCanHold(t *testing.T) {
	l := newFuzzLog(600)
	for _, what := range []string{"checkpoint", "tile/0/", "tile/1/", "tile/entries/"} {
		t.Run(what, func(t *testing.T) {
			var written atomic.Int64
			srv, v := logServer(t, l, func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.HasPrefix(r.URL.Path, "/log/"+what) {
					return false
				}
				endless(w, &written)
				return true
			})
			_, err := New(srv.URL, "tok").Verify(context.Background(), v, VerifyOptions{Entries: true})
			if err == nil || !strings.Contains(err.Error(), "larger than") {
				t.Errorf("Verify = %v; want an error saying the answer is too large", err)
			}
			// What the server could write is what the client read plus
			// what the connection buffers hold.
			if n := written.Load(); n > 64<<20 {
				t.Errorf("the server wrote %d MiB before the client stopped reading", n>>20)
			}
		})
	}
}

// TestVerifyWaitsOnlyAsLongAsItsPatience: a server pushing back on a tile
// with Retry-After of an hour gets an error at once, not an hour's wait.
func TestVerifyWaitsOnlyAsLongAsItsPatience(t *testing.T) {
	srv, v := logServer(t, newFuzzLog(300), func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/log/tile/") {
			return false
		}
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return true
	})
	done := make(chan error, 1)
	go func() {
		_, err := New(srv.URL, "").Verify(context.Background(), v, VerifyOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("Verify = %v; want the pushback as the error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Verify still waits after 30 s")
	}
}

// TestVerifyFetchesEachTileOnce: re-hashing the entries of 67,000 records
// (262 bundles) reads each hash tile once, not once for every bundle
// under it.
func TestVerifyFetchesEachTileOnce(t *testing.T) {
	var mu sync.Mutex
	fetched := map[string]int{}
	srv, v := logServer(t, newFuzzLog(67000), func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		fetched[r.URL.Path]++
		mu.Unlock()
		return false
	})
	res, err := New(srv.URL, "tok").Verify(context.Background(), v, VerifyOptions{Entries: true})
	if err != nil || res.EntriesChecked != 67000 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	for path, n := range fetched {
		if n > 1 {
			t.Errorf("%s fetched %d times", path, n)
		}
	}
}

// TestVerifyKeepsTheTokenAtHome: the token goes only with the requests
// that need it (entry bundles), and no request follows a redirect to
// another address (another port, or from https to http), where the token
// would go too.
func TestVerifyKeepsTheTokenAtHome(t *testing.T) {
	var mu sync.Mutex
	tokens := map[string]bool{}
	l := newFuzzLog(300)
	srv, v := logServer(t, l, func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		tokens[r.URL.Path] = r.Header.Get("Authorization") != ""
		mu.Unlock()
		return false
	})
	if _, err := New(srv.URL, "tok").Verify(context.Background(), v, VerifyOptions{Entries: true}); err != nil {
		t.Fatal(err)
	}
	for path, sent := range tokens {
		if sent != strings.HasPrefix(path, "/log/tile/entries/") {
			t.Errorf("%s: token sent %v", path, sent)
		}
	}

	var leaked atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("Authorization") != "")
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(elsewhere.Close)
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(moved.Close)
	_, err := New(moved.URL, "tok").Verify(context.Background(), v, VerifyOptions{Entries: true})
	if err == nil || !strings.Contains(err.Error(), "another address") || leaked.Load() {
		t.Errorf("Verify through a redirect elsewhere = %v, token sent there: %v; want an error and no token", err, leaked.Load())
	}
}
