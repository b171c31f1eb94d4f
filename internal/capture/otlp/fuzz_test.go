package otlp

import (
	"net/http"
	"testing"

	"github.com/aitrail/aitrail/internal/event"
)

// FuzzDecode feeds arbitrary bodies to both paths in both encodings: the
// receiver must answer 200 or 400 and never panic, a refused request (400)
// records nothing, and every record an accepted one appends is canonical
// (ParseRecord takes it back). The seed corpus in testdata/fuzz/FuzzDecode
// holds valid trace and log requests.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"resourceSpans":[]}`), true, false)
	f.Fuzz(func(t *testing.T, body []byte, json, logs bool) {
		h, l := newHandler(t, Options{KeepOtherSpans: true, KeepOtherLogs: true})
		path, ct := TracesPath, mediaProto
		if logs {
			path = LogsPath
		}
		if json {
			ct = mediaJSON
		}
		w := post(h, rootPrincipal, path, ct, body)
		l.mu.Lock()
		recs := append([][]byte(nil), l.records...)
		l.mu.Unlock()
		switch w.Code {
		case http.StatusOK:
		case http.StatusBadRequest:
			if len(recs) != 0 {
				t.Fatalf("400 (%s) but %d records appended", w.Body, len(recs))
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		for _, b := range recs {
			if _, err := event.ParseRecord(b); err != nil {
				t.Fatalf("appended record %s: %v", b, err)
			}
		}
	})
}
