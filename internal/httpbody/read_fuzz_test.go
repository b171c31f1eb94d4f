package httpbody

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aitrail/aitrail/internal/apierr"
)

// FuzzRead: every request body (raw, gzipped by a client, or raw bytes
// claimed to be gzip) either comes back whole and within the limit, or is
// refused with a 400, 413, 415 or 503 apierr; and the budget is all given
// back when the handler returns.
func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"type":"a"}`), uint8(0), "application/json", uint16(1024), uint8(0), uint16(0))
	f.Add([]byte(`{"type":"a"}`), uint8(1), "application/x-ndjson; charset=utf-8", uint16(16), uint8(1), uint16(600))
	f.Add(bytes.Repeat([]byte("a"), 5000), uint8(1), "application/json", uint16(1024), uint8(2), uint16(0))
	f.Add([]byte("\x1f\x8b\x08\x00garbage"), uint8(2), "application/json", uint16(1024), uint8(0), uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, mode uint8, ct string, limit16 uint16, clMode uint8, budget16 uint16) {
		limit := int64(limit16%4096) + 1
		want := body
		sent := body
		enc := ""
		switch mode % 4 {
		case 1: // a real gzip stream of body
			var z bytes.Buffer
			w := gzip.NewWriter(&z)
			w.Write(body)
			w.Close()
			sent, enc = z.Bytes(), "gzip"
		case 2: // raw bytes said to be gzip
			enc = "gzip"
		case 3:
			enc = " GZip "
		}
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(sent))
		r.Header.Set("Content-Type", ct)
		if enc != "" {
			r.Header.Set("Content-Encoding", enc)
		}
		switch clMode % 3 {
		case 1:
			r.ContentLength = -1
		case 2:
			r.ContentLength = int64(len(sent) / 2) // a lying length
		}
		var b *Budget
		if budget16 > 0 {
			b = NewBudget(int64(budget16))
		}
		var data []byte
		var mt string
		var err error
		h := http.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			data, mt, err = Read(w, r, limit, "application/json", "application/x-ndjson")
		}))
		if b != nil {
			h = b.Wrap(h)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if b != nil && b.Used() != 0 {
			t.Fatalf("budget holds %d bytes after the handler returned", b.Used())
		}
		if err != nil {
			var ae *apierr.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T) is not an apierr", err, err)
			}
			switch ae.Status {
			case 400, 413, 415, 503:
			default:
				t.Fatalf("status %d: %v", ae.Status, err)
			}
			if ae.Status == 413 && int64(len(want)) <= limit && int64(len(sent)) <= limit && mode%4 != 2 {
				t.Fatalf("413 for a body of %d bytes (%d sent) under the limit %d", len(want), len(sent), limit)
			}
			return
		}
		if mt != "application/json" && mt != "application/x-ndjson" {
			t.Fatalf("media type %q accepted", mt)
		}
		if int64(len(data)) > limit {
			t.Fatalf("%d bytes returned over the limit %d", len(data), limit)
		}
		if mode%4 == 0 || mode%4 == 1 {
			if !bytes.Equal(data, want) {
				t.Fatalf("body %q came back as %q", want, data)
			}
		} else {
			// Raw bytes taken as gzip: they must have been a gzip stream.
			zr, zerr := gzip.NewReader(bytes.NewReader(body))
			if zerr != nil {
				t.Fatalf("non-gzip %q accepted as gzip", body)
			}
			all, zerr := io.ReadAll(zr)
			if zerr != nil || !bytes.Equal(all, data) {
				t.Fatalf("gzip %q read as %q; gunzip gives %q, %v", body, data, all, zerr)
			}
		}
		Release(data)
	})
}
