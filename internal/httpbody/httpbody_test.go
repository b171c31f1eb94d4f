package httpbody

import (
	"bytes"
	"compress/gzip"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/apierr"
)

// TestRead: bodies come back whole whatever their size and whether their
// length is announced, also in buffers given back by earlier requests;
// bodies over the limit are refused before and after gzip.
func TestRead(t *testing.T) {
	const limit = 1 << 16
	zip := func(b []byte) []byte {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(b)
		w.Close()
		return z.Bytes()
	}
	for round := 0; round < 3; round++ { // later rounds reuse released buffers
		for _, n := range []int{0, 1, 511, 512, 513, 4096, 40_000, limit} {
			want := bytes.Repeat([]byte{byte('a' + n%26)}, n)
			for _, tt := range []struct {
				name    string
				body    []byte
				gzip    bool
				unknown bool // no Content-Length
			}{{"plain", want, false, false}, {"chunked", want, false, true}, {"gzip", zip(want), true, false}} {
				r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(tt.body))
				r.Header.Set("Content-Type", "application/json")
				if tt.gzip {
					r.Header.Set("Content-Encoding", "gzip")
				}
				if tt.unknown {
					r.ContentLength = -1
				}
				got, mt, err := Read(httptest.NewRecorder(), r, limit, "application/json")
				if err != nil || mt != "application/json" || !bytes.Equal(got, want) {
					t.Fatalf("%s body of %d bytes: got %d bytes (%q...), %q, %v", tt.name, n, len(got), got[:min(len(got), 8)], mt, err)
				}
				Release(got)
			}
		}
	}
	for _, tt := range []struct {
		name string
		body []byte
		gzip bool
	}{
		{"plain", bytes.Repeat([]byte("x"), limit+1), false},
		{"gzip", zip(bytes.Repeat([]byte("x"), limit+1)), true},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(tt.body))
		r.Header.Set("Content-Type", "application/json")
		if tt.gzip {
			r.Header.Set("Content-Encoding", "gzip")
		}
		_, _, err := Read(httptest.NewRecorder(), r, limit, "application/json")
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("%s body over the limit: %v", tt.name, err)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("{}"))
	r.Header.Set("Content-Type", "text/plain")
	if _, _, err := Read(httptest.NewRecorder(), r, limit, "application/json"); err == nil {
		t.Error("a text/plain body was read")
	}
}
