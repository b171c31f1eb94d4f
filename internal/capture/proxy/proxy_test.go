package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/authz/authztest"
	"github.com/aitrail/aitrail/internal/capture/proxy"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/fakeprovider"
	"github.com/aitrail/aitrail/internal/httpapi"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
)

// fakeLedger fails every append with err, or, if err is nil, accepts it
// and keeps the records.
type fakeLedger struct {
	mu      sync.Mutex
	err     error
	records [][]byte
	// held, if set, receives each Append before it takes its items, and
	// the Append waits until release is closed: a commit in progress.
	held, release chan struct{}
}

func (l *fakeLedger) Err() error { return nil }

func (l *fakeLedger) Append(_ context.Context, items []ledger.Item) (ledger.Receipt, error) {
	if l.held != nil {
		l.held <- struct{}{}
		<-l.release
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return ledger.Receipt{}, l.err
	}
	var r ledger.Receipt
	for _, it := range items {
		r.Results = append(r.Results, ledger.Result{Index: uint64(len(l.records))})
		l.records = append(l.records, it.Record)
	}
	return r, nil
}

const rootToken = "proxy-test-root-token"

// newServer serves the real API (authentication, the one error mapping)
// with both proxies forwarding to up, over a real ingest pipeline in front
// of led.
func newServer(t *testing.T, led ingest.Ledger, up *fakeprovider.Upstream) *httptest.Server {
	t.Helper()
	return newServerWith(t, led, up.URL, serverOptions{})
}

// serverOptions are what newServerWith changes from newServer.
type serverOptions struct {
	transport http.RoundTripper           // the proxies call upstream through it (the default if nil)
	admit     func(context.Context) error // the pipeline's Admit
	budget    *httpbody.Budget            // the body memory bound, none if nil
	timeout   time.Duration               // the proxies' Timeout, a minute if 0
}

// newServerWith is newServer with the provider at upstreamURL and o.
func newServerWith(t *testing.T, led ingest.Ledger, upstreamURL string, o serverOptions) *httptest.Server {
	t.Helper()
	kek, err := crypto.NewLocalKEK("", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	auth := authz.NewAuthenticator(&authztest.MemTokenStore{})
	if _, _, err := auth.Bootstrap(context.Background(), rootToken); err != nil {
		t.Fatal(err)
	}
	pipeline := &ingest.Pipeline{Ledger: led, Sealer: crypto.NewKeyring(kek, &cryptotest.MemKeyStore{}), Admit: o.admit}
	api := &httpapi.Server{Ingest: pipeline, Auth: auth, MaxBodyBytes: 1 << 20, BodyBudget: o.budget}
	upstream, _ := url.Parse(upstreamURL)
	if o.timeout == 0 {
		o.timeout = time.Minute
	}
	c := proxy.Config{Timeout: o.timeout, MaxBodyBytes: 1 << 20, Ingest: pipeline, WriteError: api.WriteError, Transport: o.transport}
	// Not JoinPath, whose result has a relative path ("v1") when the URL
	// has none: the path of a configured upstream starts with a slash.
	c.Upstream = &url.URL{Scheme: upstream.Scheme, Host: upstream.Host, Path: "/v1"}
	if api.OpenAI, err = proxy.OpenAI(c); err != nil {
		t.Fatal(err)
	}
	c.Upstream = upstream
	if api.Anthropic, err = proxy.Anthropic(c); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, url, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+rootToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestRefusesWhenTheLogCannotRecord checks the proxy fails closed: when the
// log pushes back, the caller gets 503 with Retry-After and the provider
// sees nothing.
func TestRefusesWhenTheLogCannotRecord(t *testing.T) {
	up := fakeprovider.New()
	defer up.Close()
	srv := newServer(t, &fakeLedger{err: ledger.ErrPushback}, up)
	for _, path := range []string{"/openai/v1/chat/completions", "/anthropic/v1/messages"} {
		resp := post(t, srv.URL+path, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(string(body), `"code":"pushback"`) {
			t.Errorf("%s: %d %v %s, want 503 pushback with Retry-After", path, resp.StatusCode, resp.Header, body)
		}
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("the provider received %d requests", n)
	}
}

// TestForwardsOnlyWhatIsDurable checks that a call reaches the provider
// only once the ledger has taken its request event: while that append
// waits for its commit, the provider has seen nothing, so a crash then
// cannot leave a forwarded call unrecorded.
func TestForwardsOnlyWhatIsDurable(t *testing.T) {
	for _, path := range []string{"/openai/v1/chat/completions", "/anthropic/v1/messages"} {
		up := fakeprovider.New()
		defer up.Close()
		// Room for the outcome event's append too, which follows the answer.
		led := &fakeLedger{held: make(chan struct{}, 2), release: make(chan struct{})}
		srv := newServer(t, led, up)
		answered := make(chan int, 1)
		go func() {
			req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Authorization", "Bearer "+rootToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answered <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answered <- resp.StatusCode
		}()
		<-led.held
		time.Sleep(200 * time.Millisecond)
		if n := len(up.Requests()); n != 0 {
			t.Errorf("%s: the provider received the call while its request event was not yet appended", path)
		}
		close(led.release)
		if code := <-answered; code != http.StatusOK {
			t.Fatalf("%s: status %d once the request event was appended, want 200", path, code)
		}
		if n := len(up.Requests()); n != 1 {
			t.Errorf("%s: the provider received %d calls, want 1", path, n)
		}
	}
}

// TestRecordsBothEvents checks, in process, that a call leaves a request
// and an outcome event linked by id, trace and span, with the prompt and the
// answer encrypted: the records hold neither.
func TestRecordsBothEvents(t *testing.T) {
	up := fakeprovider.New()
	defer up.Close()
	led := &fakeLedger{}
	srv := newServer(t, led, up)
	resp := post(t, srv.URL+"/anthropic/v1/messages", `{"model":"claude-x","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"SECRET-PROMPT"}]}`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("event: message_stop")) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	recs := waitRecords(t, led, 2)
	led.mu.Lock()
	for _, b := range led.records {
		if bytes.Contains(b, []byte("SECRET-PROMPT")) || bytes.Contains(b, []byte("Hello")) {
			t.Fatalf("a record holds content: %s", b)
		}
	}
	led.mu.Unlock()
	req, out := recs[0], recs[1]
	if resp.Header.Get(proxy.HeaderEventID) != req.ID || out.Attributes["aitrail.proxy.request_event_id"] != req.ID ||
		out.TraceID != req.TraceID || out.SpanID != req.SpanID || req.Content == nil || out.Content == nil ||
		out.Outcome != "success" || out.Attributes["gen_ai.usage.output_tokens"] != 4.0 || req.Tenant != "default" {
		t.Fatalf("request %+v\noutcome %+v", req, out)
	}
}

// TestOutcomeOfAnAdmittedCall: once a call's request event is recorded and
// the call forwarded, its outcome is recorded even if ingest has started
// refusing appends since (the disk ran short of space).
func TestOutcomeOfAnAdmittedCall(t *testing.T) {
	up := fakeprovider.New()
	defer up.Close()
	led := &fakeLedger{}
	var admits atomic.Int32
	srv := newServerWith(t, led, up.URL, serverOptions{admit: func(context.Context) error {
		if admits.Add(1) > 1 {
			return ingest.ErrLowSpace
		}
		return nil
	}})
	resp := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	recs := waitRecords(t, led, 2)
	if recs[1].Attributes["aitrail.proxy.request_event_id"] != recs[0].ID {
		t.Fatalf("second record is not the call's outcome: %+v", recs[1])
	}
	// The next call is refused before it is forwarded.
	resp = post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "insufficient_storage") {
		t.Fatalf("call while ingest is refused: %d %s", resp.StatusCode, body)
	}
	if n := len(up.Requests()); n != 1 {
		t.Fatalf("the provider got %d calls, want 1", n)
	}
}

// TestForwardsInOneWrite checks that a call goes to the provider in one
// write, its headers and body together, and whole. (The reverse proxy
// wraps the body in a reader the transport cannot see into, and the
// transport then sent the headers ahead, in a packet of their own.)
func TestForwardsInOneWrite(t *testing.T) {
	up := fakeprovider.New()
	defer up.Close()
	var writes atomic.Int64
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &writes}, nil
	}
	srv := newServerWith(t, &fakeLedger{}, up.URL, serverOptions{transport: tr})
	for i, body := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("long prompt ", 300) + `"}]}`,
	} {
		before := writes.Load()
		resp := post(t, srv.URL+"/openai/v1/chat/completions", body)
		if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, b)
		}
		if n := writes.Load() - before; n != 1 {
			t.Errorf("call %d went upstream in %d writes, want 1", i, n)
		}
		if reqs := up.Requests(); string(reqs[len(reqs)-1].Body) != body {
			t.Errorf("call %d: the provider got %q, want %q", i, reqs[len(reqs)-1].Body, body)
		}
	}
}

// countingConn counts the writes to a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestUpstreamUnreachable checks that a provider that cannot be reached
// gets the caller a 502 and leaves a failed outcome.
func TestUpstreamUnreachable(t *testing.T) {
	up := fakeprovider.New()
	up.Close() // nothing listens at its address any more
	led := &fakeLedger{}
	srv := newServer(t, led, up)
	resp := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"m","messages":[]}`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), `"code":"upstream_unavailable"`) {
		t.Fatalf("%d %s, want 502 upstream_unavailable", resp.StatusCode, body)
	}
	out := waitRecords(t, led, 2)[1]
	if out.Outcome != "failure" || out.Attributes["error.type"] != "upstream_error" {
		t.Fatalf("outcome %+v", out)
	}
}

// waitRecords waits for n records (the outcome is appended in the
// background) and returns them.
func waitRecords(t *testing.T, led *fakeLedger, n int) []event.Record {
	t.Helper()
	var recs []event.Record
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		led.mu.Lock()
		recs = recs[:0]
		for _, b := range led.records {
			var r event.Record
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
		led.mu.Unlock()
		if len(recs) >= n {
			return recs
		}
	}
	t.Fatalf("%d records, want %d", len(recs), n)
	return nil
}

// waitOutcome waits for the outcome event of the call whose request event
// is requestID, and returns it.
func waitOutcome(t *testing.T, led *fakeLedger, requestID string) event.Record {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		led.mu.Lock()
		recs := slices.Clone(led.records)
		led.mu.Unlock()
		for _, b := range recs {
			var r event.Record
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.Attributes["aitrail.proxy.request_event_id"] == requestID {
				return r
			}
		}
	}
	t.Fatalf("no outcome event for request event %q", requestID)
	return event.Record{}
}

// TestStreamsThatFailAfterTheirStatus: a stream is answered 200 before it
// is over. One the provider ends with an error event is recorded as a
// failure with the provider's error type; one that ends cleanly before its
// last event, as a failure with stream_incomplete; a complete one as a
// success.
func TestStreamsThatFailAfterTheirStatus(t *testing.T) {
	up := fakeprovider.New()
	defer up.Close()
	led := &fakeLedger{}
	srv := newServer(t, led, up)
	for _, path := range []string{"/openai/v1/chat/completions", "/openai/v1/responses", "/anthropic/v1/messages"} {
		for _, tc := range []struct{ model, outcome, errorType string }{
			{fakeprovider.ModelFailMidStream, "failure", fakeprovider.StreamErrorType},
			{fakeprovider.ModelEndMidStream, "failure", "stream_incomplete"},
			{"m", "success", ""},
		} {
			resp := post(t, srv.URL+path, fmt.Sprintf(`{"model":%q,"stream":true,"max_tokens":5,"input":"hi","messages":[{"role":"user","content":"hi"}]}`, tc.model))
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(fakeprovider.ReplyPieces[0])) {
				t.Fatalf("%s %s: %d %s", path, tc.model, resp.StatusCode, body)
			}
			out := waitOutcome(t, led, resp.Header.Get(proxy.HeaderEventID))
			if errType, _ := out.Attributes["error.type"].(string); out.Outcome != tc.outcome || errType != tc.errorType {
				t.Errorf("%s %s: outcome %q, error.type %q; want %q, %q", path, tc.model, out.Outcome, errType, tc.outcome, tc.errorType)
			}
		}
	}
}

// TestModelIDsWithSlashes: servers that name models after Hugging Face
// repositories (vLLM) have model ids with a slash, which SDKs send as it
// is or encoded; either reaches the provider as sent.
func TestModelIDsWithSlashes(t *testing.T) {
	up := fakeprovider.New()
	defer up.Close()
	srv := newServer(t, &fakeLedger{}, up)
	for _, path := range []string{"meta-llama/Llama-3.1-8B", "meta-llama%2FLlama-3.1-8B"} {
		req, _ := http.NewRequest("GET", srv.URL+"/openai/v1/models/"+path, nil)
		req.Header.Set("Authorization", "Bearer "+rootToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		reqs := up.Requests()
		if len(reqs) == 0 || reqs[len(reqs)-1].EscapedPath != "/v1/models/"+path {
			t.Errorf("GET /openai/v1/models/%s: %d, the provider got %+v", path, resp.StatusCode, reqs)
		}
	}
}

// TestAnswerHeaders: the provider's headers reach the caller as sent, once
// (the server's own Cache-Control: no-store only where the provider sends
// none), a HEAD answer keeps its Content-Length, and headers meant for a
// proxy do not reach the provider.
func TestAnswerHeaders(t *testing.T) {
	var got http.Header
	var mu sync.Mutex
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/models" {
			w.Header().Set("Cache-Control", "no-cache, must-revalidate")
			w.Header().Set("Content-Length", "23")
		}
		if r.Method != http.MethodHead {
			io.WriteString(w, `{"object":"list","data":[]}`[:23])
		}
	}))
	defer up.Close()
	srv := newServerWith(t, &fakeLedger{}, up.URL, serverOptions{})
	do := func(method, path string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{"model":"m"}`))
		req.Header.Set("Authorization", "Bearer "+rootToken)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Proxy-Foo", "for a proxy")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := do("GET", "/openai/v1/models")
	if cc := resp.Header.Values("Cache-Control"); !slices.Equal(cc, []string{"no-cache, must-revalidate"}) {
		t.Errorf("Cache-Control %q, want the provider's alone", cc)
	}
	mu.Lock()
	if v := got.Get("Proxy-Foo"); v != "" {
		t.Errorf("the provider got Proxy-Foo: %q", v)
	}
	mu.Unlock()
	if resp = do("HEAD", "/openai/v1/models"); resp.StatusCode != http.StatusOK || resp.ContentLength != 23 {
		t.Errorf("HEAD: %d, Content-Length %d; want 200 and the provider's 23", resp.StatusCode, resp.ContentLength)
	}
	if resp = do("POST", "/openai/v1/chat/completions"); resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("an answer without the provider's Cache-Control has %q, want no-store", resp.Header.Values("Cache-Control"))
	}
}

// TestSlowCallerIsNotSilence: the timeout bounds the provider's silence.
// A stream the provider sends at once, to a caller that stops reading for
// longer than the timeout, reaches the caller whole and is recorded as a
// success: the proxy was waiting for the caller, not the provider.
func TestSlowCallerIsNotSilence(t *testing.T) {
	const timeout = 300 * time.Millisecond
	gate := make(chan struct{})
	close(gate)
	var held atomic.Int32
	url, _, stream := largeAnswers(t, 24<<20, gate, &held)
	led := &fakeLedger{}
	srv := newServerWith(t, led, url, serverOptions{timeout: timeout})
	resp := post(t, srv.URL+"/openai/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	time.Sleep(4 * timeout) // socket buffers full, the proxy's writes wait
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, stream) {
		t.Fatalf("the caller got %d of %d bytes: %v", len(body), len(stream), err)
	}
	out := waitOutcome(t, led, resp.Header.Get(proxy.HeaderEventID))
	if out.Outcome != "success" {
		t.Errorf("outcome %q, error.type %v; want success", out.Outcome, out.Attributes["error.type"])
	}
}

// largeAnswers is a provider answering every chat completion with an
// answer of about size bytes (a stream of pieces when the call asks for
// one), all of it but its end at once and the end once gate is closed.
// held counts the answers waiting for the gate.
func largeAnswers(t *testing.T, size int, gate <-chan struct{}, held *atomic.Int32) (url string, whole, stream []byte) {
	text := strings.Repeat("0123456789abcdef", size/16)
	whole, _ = json.Marshal(map[string]any{"id": "c1", "object": "chat.completion", "model": "m",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": text}}}})
	var sb strings.Builder
	for piece := range slices.Chunk([]byte(text), 1000) {
		b, _ := json.Marshal(map[string]any{"id": "c1", "object": "chat.completion.chunk", "model": "m",
			"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": string(piece)}}}})
		sb.WriteString("data: " + string(b) + "\n\n")
	}
	stream = []byte(sb.String() + "data: [DONE]\n\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		answer := whole
		if bytes.Contains(body, []byte(`"stream":true`)) {
			answer = stream
			w.Header().Set("Content-Type", "text/event-stream")
		} else {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(len(answer)))
		}
		end := len(answer) - 16
		w.Write(answer[:end])
		http.NewResponseController(w).Flush()
		held.Add(1)
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Write(answer[end:])
	}))
	t.Cleanup(srv.Close)
	return srv.URL, whole, stream
}

// TestAnswersWithinTheBodyMemoryBound: the answers the proxy holds for the
// record are charged to the bound on body memory, until the record is
// appended. Past the bound, a caller still gets the whole answer, and the
// record keeps its beginning, marked as cut for memory.
func TestAnswersWithinTheBodyMemoryBound(t *testing.T) {
	const size, calls = 600 << 10, 4
	for _, streamed := range []bool{false, true} {
		t.Run(fmt.Sprintf("stream=%v", streamed), func(t *testing.T) {
			gate := make(chan struct{})
			var held atomic.Int32
			upURL, whole, stream := largeAnswers(t, size, gate, &held)
			want := whole
			if streamed {
				want = stream
			}
			// Room for two answers, not four.
			budget := httpbody.NewBudget(size * 5 / 2)
			led := &fakeLedger{}
			srv := newServerWith(t, led, upURL, serverOptions{budget: budget})
			body := fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, streamed)
			answers := make([][]byte, calls)
			errs := make([]error, calls)
			var wg sync.WaitGroup
			for i := range calls {
				wg.Go(func() {
					req, _ := http.NewRequest("POST", srv.URL+"/openai/v1/chat/completions", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+rootToken)
					req.Header.Set("Content-Type", "application/json")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						errs[i] = err
						return
					}
					defer resp.Body.Close()
					answers[i], errs[i] = io.ReadAll(resp.Body)
					if errs[i] == nil && resp.StatusCode != 200 {
						errs[i] = fmt.Errorf("status %d: %s", resp.StatusCode, answers[i])
					}
				})
			}
			// Every answer is on its way, and the bound has been reached.
			for deadline := time.Now().Add(10 * time.Second); held.Load() < calls || budget.Refused.Load() == 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					close(gate)
					t.Fatalf("%d answers held by the provider, %d bytes charged, %d refused", held.Load(), budget.Used(), budget.Refused.Load())
				}
			}
			if used := budget.Used(); used > size*5/2 {
				t.Errorf("%d bytes charged, over the bound of %d", used, size*5/2)
			}
			close(gate)
			wg.Wait()
			for i := range calls {
				if errs[i] != nil || !bytes.Equal(answers[i], want) {
					t.Fatalf("call %d: %d bytes of the %d answered (%v)", i, len(answers[i]), len(want), errs[i])
				}
			}
			cut, kept := 0, 0
			for _, r := range waitRecords(t, led, 2*calls) {
				if r.Attributes["aitrail.proxy.phase"] != "response" {
					continue
				}
				switch {
				case r.Content == nil:
					t.Fatalf("outcome without content: %+v", r)
				case r.Attributes["aitrail.proxy.content_truncated"] == true:
					if r.Attributes["aitrail.proxy.content_truncated_for"] != "memory" || r.Content.Size >= size {
						t.Fatalf("outcome cut for memory: %v, content of %d bytes", r.Attributes, r.Content.Size)
					}
					cut++
				default:
					if r.Content.Size < size {
						t.Fatalf("whole outcome with content of %d bytes", r.Content.Size)
					}
					kept++
				}
			}
			if cut == 0 || cut+kept != calls {
				t.Fatalf("%d outcomes cut for memory, %d whole; want some cut, of %d", cut, kept, calls)
			}
			// Given back once the records are appended.
			for deadline := time.Now().Add(10 * time.Second); budget.Used() != 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d bytes still charged after every call was recorded", budget.Used())
				}
			}
		})
	}
}

// TestAnswersOverTheBodyLimit: an answer larger than the body limit reaches
// the caller whole; the record keeps its beginning, marked as cut.
func TestAnswersOverTheBodyLimit(t *testing.T) {
	const size = 3 << 19 // the proxies' limit is 1 MiB
	gate := make(chan struct{})
	close(gate)
	upURL, whole, stream := largeAnswers(t, size, gate, new(atomic.Int32))
	led := &fakeLedger{}
	srv := newServer(t, led, &fakeprovider.Upstream{Server: &httptest.Server{URL: upURL}})
	for i, want := range [][]byte{whole, stream} {
		resp := post(t, srv.URL+"/openai/v1/chat/completions",
			fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, i == 1))
		if got, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want) {
			t.Fatalf("call %d: %d, %d bytes of the %d answered (%v)", i, resp.StatusCode, len(got), len(want), err)
		}
		out := waitRecords(t, led, 2*(i+1))[2*i+1]
		if out.Attributes["aitrail.proxy.content_truncated"] != true || out.Attributes["aitrail.proxy.content_truncated_for"] != nil ||
			out.Content == nil || out.Content.Size > 1<<20+1<<10 || out.Content.Size < 1<<19 {
			t.Fatalf("call %d: outcome %v, content %+v", i, out.Attributes, out.Content)
		}
	}
}
