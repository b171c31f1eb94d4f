package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/aitrail/aitrail/internal/fakeprovider"
)

// TestTokenRateLimit: with limits.token_events_per_second, a token past its
// rate is answered 429 rate_limited with Retry-After on every way in (the
// API, OTLP, the recording proxy, whose provider is not called) and stores
// nothing; other tokens are not held back; the refusals are counted and
// recorded. (The bucket filling again is TestTokenRate's, on a clock of its
// own: here the rate is so low that a slow machine cannot refill it.)
func TestTokenRateLimit(t *testing.T) {
	up := fakeprovider.New()
	t.Cleanup(up.Close)
	config := writeConfig(t, "access_window: 200ms\nlimits:\n  max_batch_events: 10\n  token_events_per_second: 0.001\n  token_burst_events: 10\n")
	s := startServerEnv(t, t.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + adminToken, "AITRAIL_OPENAI_API_KEY=" + openaiKey},
		"--config", config, "--openai-upstream", up.URL+"/v1")

	batch := make([]map[string]any, 10)
	for i := range batch {
		batch[i] = map[string]any{"type": "ai.inference", "id": "burst-" + strconv.Itoa(i)}
	}
	s.post(batch...) // the whole burst

	var tid pcommon.TraceID
	copy(tid[:], "rate-limit-trace")
	for _, c := range []struct {
		path, contentType string
		body              []byte
	}{
		{"/v1/events", "application/json", []byte(`{"type":"ai.inference","id":"over"}`)},
		{"/otlp/v1/traces", "application/x-protobuf", otlpBenchBody(tid, 2, 100, false)},
		{"/openai/v1/chat/completions", "application/json", []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)},
	} {
		code, ecode, retry := errorAnswer(t, s, c.path, adminToken, c.contentType, c.body)
		// An event every 1,000 s: about that long for one, twice for two.
		if secs, _ := strconv.Atoi(retry); code != http.StatusTooManyRequests || secs < 900 || secs > 2000 || c.path != "/otlp/v1/traces" && ecode != "rate_limited" {
			t.Errorf("%s past the token's rate: %d %q, Retry-After %q; want 429 rate_limited, Retry-After 900-2000", c.path, code, ecode, retry)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("the provider was called %d times", n)
	}
	if v := s.metric(`aitrail_ingest_rate_limited_total{token_id="root"}`); v != 3 {
		t.Errorf(`aitrail_ingest_rate_limited_total{token_id="root"} = %v, want 3`, v)
	}

	// Another token has a bucket of its own.
	code, body := s.do("POST", "/v1/tokens", adminToken, "application/json", []byte(`{"name":"other","roles":["ingest"],"tenants":["*"]}`))
	var tok struct{ Token string }
	if json.Unmarshal(body, &tok); code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	if code, body := s.do("POST", "/v1/events", tok.Token, "application/json", []byte(`{"type":"ai.inference","id":"other-token"}`)); code != 200 {
		t.Errorf("another token while the first is limited: %d %s", code, body)
	}

	// The refusals are recorded once per window and token.
	var rec map[string]any
	for deadline := time.Now().Add(10 * time.Second); rec == nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no access.attempt record of the refusals")
		}
		for _, e := range s.allEvents("type=access.attempt") {
			if e["action"] == "rate_limit" {
				rec = e
			}
		}
	}
	a := rec["attributes"].(map[string]any)
	if rec["outcome"] != "denied" || a["aitrail.token_id"] != "root" || a["access.attempts"] != 3.0 || a["access.events_refused"].(float64) < 3 ||
		a["http.response.status_code"] != 429.0 {
		t.Errorf("the record of the refusals: %v", rec)
	}

	// Nothing refused was stored.
	if code, _ := s.do("GET", "/v1/events/over", adminToken, "", nil); code != 404 {
		t.Errorf("the refused event: %d; want 404", code)
	}
}

// TestTokenOwnRateLimit: a token minted with a limit of its own is held to
// it on a server that sets none for all; the limit is listed and recorded
// with the token; a limit that is not one is refused.
func TestTokenOwnRateLimit(t *testing.T) {
	s := startServer(t, t.TempDir())
	code, body := s.do("POST", "/v1/tokens", adminToken, "application/json",
		[]byte(`{"name":"slow","roles":["ingest"],"tenants":["*"],"events_per_second":0.001,"burst_events":2}`))
	var tok struct {
		ID, Token       string
		EventsPerSecond float64 `json:"events_per_second"`
		BurstEvents     int     `json:"burst_events"`
	}
	if json.Unmarshal(body, &tok); code != 201 || tok.EventsPerSecond != 0.001 || tok.BurstEvents != 2 {
		t.Fatalf("token with a limit: %d %s", code, body)
	}
	post := func(token string, n int) (int, string, string) {
		var evs []map[string]any
		for i := range n {
			evs = append(evs, map[string]any{"type": "ai.inference", "id": fmt.Sprintf("%s-%d-%d", token[:8], n, i)})
		}
		b, _ := json.Marshal(map[string]any{"events": evs})
		return errorAnswer(t, s, "/v1/events", token, "application/json", b)
	}
	if code, _, _ := post(tok.Token, 2); code != 200 {
		t.Fatalf("the token's burst: %d", code)
	}
	if code, ecode, retry := post(tok.Token, 1); code != 429 || ecode != "rate_limited" || retry == "" {
		t.Errorf("past the token's own limit: %d %q, Retry-After %q; want 429 rate_limited", code, ecode, retry)
	}
	if code, ecode, _ := post(tok.Token, 3); code != 413 || ecode != "too_large" {
		t.Errorf("more events than the token's burst: %d %q; want 413", code, ecode)
	}
	if code, _, _ := post(adminToken, 50); code != 200 {
		t.Errorf("a token without a limit, on a server with none: %d", code)
	}

	var list struct {
		Tokens []map[string]any `json:"tokens"`
	}
	s.getJSON("/v1/tokens", &list)
	found := false
	for _, tk := range list.Tokens {
		if tk["id"] == tok.ID {
			found = tk["events_per_second"] == 0.001 && tk["burst_events"] == 2.0
		}
	}
	if !found {
		t.Errorf("GET /v1/tokens does not list the token's limit: %v", list.Tokens)
	}
	s.waitIndexed()
	var recorded bool
	for _, e := range s.allEvents("type=admin.change") {
		if r, _ := e["resource"].(map[string]any); r["id"] == tok.ID {
			a := e["attributes"].(map[string]any)
			recorded = a["token.events_per_second"] == 0.001 && a["token.burst_events"] == 2.0
		}
	}
	if !recorded {
		t.Error("the record of the token's creation does not name its limit")
	}
	for _, bad := range []string{`"events_per_second":-1`, `"burst_events":5`, `"events_per_second":"fast"`, `"events_per_second":1e12`} {
		req := `{"name":"bad","roles":["ingest"],"tenants":["*"],` + bad + `}`
		if code, body := s.do("POST", "/v1/tokens", adminToken, "application/json", []byte(req)); code != 400 {
			t.Errorf("token with %s: %d %s; want 400", bad, code, body)
		}
	}
}
