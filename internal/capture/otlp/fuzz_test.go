package otlp

import (
	"net/http"
	"testing"
)

// FuzzDecode feeds arbitrary bodies to both paths in both encodings: the
// receiver must answer 200 or 400 and never panic. The seed corpus in
// testdata/fuzz/FuzzDecode holds valid trace and log requests.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"resourceSpans":[]}`), true, false)
	f.Fuzz(func(t *testing.T, body []byte, json, logs bool) {
		h, _ := newHandler(t, Options{KeepOtherSpans: true, KeepOtherLogs: true})
		path, ct := TracesPath, mediaProto
		if logs {
			path = LogsPath
		}
		if json {
			ct = mediaJSON
		}
		w := post(h, rootPrincipal, path, ct, body)
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}
