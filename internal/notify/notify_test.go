package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// request is one request a receiver got.
type request struct {
	header http.Header
	path   string
	body   []byte
}

// receiver records what it is sent and answers with answer(n), n counting
// requests from 0.
type receiver struct {
	mu     sync.Mutex
	got    []request
	answer func(n int, w http.ResponseWriter)
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	n := len(r.got)
	r.got = append(r.got, request{header: req.Header.Clone(), path: req.URL.Path, body: body})
	answer := r.answer
	r.mu.Unlock()
	if answer != nil {
		answer(n, w)
	}
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// start returns a running Notifier for cfg, stopped when the test ends.
// The alerts given are sent before it runs, so that they are queued
// together.
func start(t *testing.T, cfg Config, o Options, before ...Alert) *Notifier {
	t.Helper()
	n, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range before {
		if err := n.Send(a); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

var t0 = time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)

func alert(name, instance string) Alert {
	return Alert{
		Labels:       map[string]string{"alertname": name, "tenant": "acme", "instance": instance},
		Annotations:  map[string]string{"summary": "Many denied requests from one actor"},
		StartsAt:     t0,
		GeneratorURL: "https://aitrail.example.com/rules/" + name,
	}
}

// TestWebhookPayload checks the exact v4 payload and headers a webhook
// receiver gets, against a golden file, field by field.
func TestWebhookPayload(t *testing.T) {
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	firing := alert("DeniedBurst", "api-1")
	other := alert("DeniedBurst", "api-2")
	other.Annotations["runbook"] = "https://runbooks.example.com/denied"
	resolved := alert("DeniedBurst", "api-3")
	resolved.EndsAt = t0.Add(5 * time.Minute)
	start(t, Config{
		ExternalURL: "https://aitrail.example.com",
		Webhooks: []WebhookConfig{{Name: "oncall", URL: srv.URL + "/hook", BearerTokenFile: tokenFile,
			Headers: map[string]string{"X-Team": "security"}}},
	}, Options{}, firing, other, resolved)
	waitFor(t, "the webhook to get the alerts", func() bool { return countAlerts(t, rcv) == 3 })

	reqs := rcv.requests()
	for _, r := range reqs {
		if r.path != "/hook" {
			t.Errorf("posted to %s, want /hook", r.path)
		}
		if got := r.header.Get("Authorization"); got != "Bearer s3cret-token" {
			t.Errorf("Authorization = %q, want the token from the file", got)
		}
		if got := r.header.Get("X-Team"); got != "security" {
			t.Errorf("X-Team = %q, want the configured header", got)
		}
		if got := r.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
	}
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want the three alerts of one name in one", len(reqs))
	}
	var got map[string]any
	if err := json.Unmarshal(reqs[0].body, &got); err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("testdata/webhook-v4.json")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(golden, &want); err != nil {
		t.Fatal(err)
	}
	compareJSON(t, "payload", got, want)
}

// compareJSON reports every field where got and want differ.
func compareJSON(t *testing.T, path string, got, want any) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			t.Errorf("%s = %v, want an object", path, got)
			return
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				t.Errorf("%s.%s is missing", path, k)
				continue
			}
			compareJSON(t, path+"."+k, gv, wv)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				t.Errorf("%s.%s is not in the golden payload", path, k)
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			t.Errorf("%s = %v, want %d elements", path, got, len(w))
			return
		}
		for i := range w {
			compareJSON(t, fmt.Sprintf("%s[%d]", path, i), g[i], w[i])
		}
	default:
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
}

// countAlerts counts the alerts in every webhook payload rcv got.
func countAlerts(t *testing.T, rcv *receiver) int {
	n := 0
	for _, r := range rcv.requests() {
		var m webhookMessage
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Errorf("webhook payload: %v", err)
		}
		n += len(m.Alerts)
	}
	return n
}
