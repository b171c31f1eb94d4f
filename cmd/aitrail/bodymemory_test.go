package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/aitrail/aitrail/internal/fakeprovider"
)

// TestBodyMemoryIsBounded: while two requests' bodies hold most of
// limits.max_body_memory_bytes, others whose bodies would pass it are
// answered 503 pushback with Retry-After on every way in (the API, OTLP,
// the recording proxy, whose provider is not called), as is reading back
// content that would, and all are taken once those are done. Many large requests at once cannot take the server's
// memory.
func TestBodyMemoryIsBounded(t *testing.T) {
	up := fakeprovider.New()
	t.Cleanup(up.Close)
	const maxBody = 1 << 20
	config := writeConfig(t, fmt.Sprintf("limits:\n  max_body_bytes: %d\n  max_body_memory_bytes: %d\n", maxBody, 2*maxBody))
	s := startServerEnv(t, t.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + adminToken, "AITRAIL_OPENAI_API_KEY=" + openaiKey},
		"--config", config, "--openai-upstream", up.URL+"/v1")

	// An event whose content takes more than the budget leaves once
	// decrypted and answered.
	var bigContent bytes.Buffer
	json.NewEncoder(&bigContent).Encode(map[string]any{"id": "big-content", "type": "ai.inference", "tenant": "disk",
		"content": map[string]any{"prompt": strings.Repeat("c", 300_000)}})
	if _, err := postNDJSON(http.DefaultClient, s.url, &bigContent); err != nil {
		t.Fatal(err)
	}
	s.waitIndexed()

	// Two requests announce bodies of nearly 1 MiB each and send half.
	type held struct {
		pw    *io.PipeWriter
		body  []byte
		reply chan *http.Response
	}
	hold := func(r int) held {
		h := held{body: fillBody(r, 900).Bytes(), reply: make(chan *http.Response, 1)}
		if len(h.body) > maxBody {
			t.Fatalf("a held body of %d bytes is over the limit", len(h.body))
		}
		var pr *io.PipeReader
		pr, h.pw = io.Pipe()
		req, _ := http.NewRequest("POST", s.url+"/v1/events", pr)
		req.ContentLength = int64(len(h.body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/x-ndjson")
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("a held request: %v", err)
			}
			h.reply <- resp
		}()
		h.pw.Write(h.body[:len(h.body)/2])
		return h
	}
	holds := []held{hold(0), hold(1)}
	charged := float64(len(holds[0].body) + len(holds[1].body))
	for deadline := time.Now().Add(10 * time.Second); s.metric("aitrail_http_body_memory_bytes") < charged; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held requests' bodies were never charged")
		}
	}
	left := 2*maxBody - int(s.metric("aitrail_http_body_memory_bytes"))

	second := fillBody(2, 400).Bytes() // with the held ones', past 2 MiB
	var tid pcommon.TraceID
	copy(tid[:], "body-memory-trac")
	chat := append([]byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"`), bytes.Repeat([]byte("x"), len(second))...)
	chat = append(chat, `"}]}`...)
	for _, c := range []struct {
		path, contentType string
		body              []byte
	}{
		{"/v1/events", "application/x-ndjson", second},
		{"/otlp/v1/traces", "application/x-protobuf", otlpBenchBody(tid, 300, 1000, false)},
		{"/openai/v1/chat/completions", "application/json", chat},
	} {
		if len(c.body) <= left || len(c.body) > maxBody {
			t.Fatalf("%s: a body of %d bytes does not test the budget", c.path, len(c.body))
		}
		code, ecode, retry := errorAnswer(t, s, c.path, adminToken, c.contentType, c.body, "X-Aitrail-Tenant", "disk")
		if code != http.StatusServiceUnavailable || retry == "" || c.path != "/otlp/v1/traces" && ecode != "pushback" {
			t.Errorf("%s while the budget is taken: %d %q, Retry-After %q; want 503 pushback with Retry-After", c.path, code, ecode, retry)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("the provider was called %d times", n)
	}
	if code, body := s.do("GET", "/v1/events/big-content?tenant=disk", adminToken, "", nil); code != http.StatusServiceUnavailable || !strings.Contains(string(body), `"pushback"`) {
		t.Errorf("GET of content larger than the budget left: %d %.200s; want 503 pushback", code, body)
	}
	if v := s.metric("aitrail_http_body_memory_refused_total"); v != 4 {
		t.Errorf("aitrail_http_body_memory_refused_total = %v, want 4", v)
	}
	// Small requests still go through.
	if _, err := postNDJSON(http.DefaultClient, s.url, fillBody(3, 10)); err != nil {
		t.Errorf("a small request while the budget is mostly taken: %v", err)
	}

	for _, h := range holds {
		h.pw.Write(h.body[len(h.body)/2:])
		h.pw.Close()
		if resp := <-h.reply; resp == nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a held request: %v", resp)
		} else {
			resp.Body.Close()
		}
	}
	for deadline := time.Now().Add(10 * time.Second); s.metric("aitrail_http_body_memory_bytes") != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held requests' bodies were never given back")
		}
	}
	if _, err := postNDJSON(http.DefaultClient, s.url, bytes.NewReader(second)); err != nil {
		t.Errorf("a refused request once the held ones were done: %v", err)
	}
	var ev map[string]any
	s.getJSON("/v1/events/big-content?tenant=disk", &ev)
	if dc, _ := ev["decrypted_content"].(map[string]any); len(fmt.Sprint(dc["prompt"])) != 300_000 {
		t.Errorf("the content once the held requests were done: %.200v", ev)
	}
}
