package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/client/openairecord"
	"github.com/aitrail/aitrail/internal/fakeprovider"
)

// movingServerTransport connects to wherever the server runs now, as a
// load balancer in front of a restarted server would, and counts the 503
// answers.
type movingServerTransport struct {
	addr        atomic.Value // host:port of the current server
	unavailable atomic.Int64
	http.Transport
}

func newMovingServerTransport() *movingServerTransport {
	m := &movingServerTransport{}
	m.Transport.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, m.addr.Load().(string))
	}
	return m
}

func (m *movingServerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := m.Transport.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
		m.unavailable.Add(1)
	}
	return resp, err
}

// TestSDKLosesNothingAcrossCrashesAndPushback runs several Recorders, as
// several instances of an application would, against the real server while
// it is SIGKILLed and restarted twice and while its commit queue is so small
// that concurrent requests are pushed back with 503. After Close every event
// must be in the log exactly once: retries carry the same ids, so a request
// whose answer was lost in a crash is deduplicated, not stored twice.
func TestSDKLosesNothingAcrossCrashesAndPushback(t *testing.T) {
	const recorders, perRecorder = 4, 750
	const total = recorders * perRecorder
	data := t.TempDir()
	cfg := writeConfig(t, "ledger:\n  max_pending: 1\n")
	tr := newMovingServerTransport()
	start := func() *server {
		s := startServer(t, data, "--config", cfg)
		tr.addr.Store(strings.TrimPrefix(s.url, "http://"))
		return s
	}
	s := start()

	var failed atomic.Int64
	recs := make([]*client.Recorder, recorders)
	for i := range recs {
		c := client.New("http://aitrail.test", adminToken).WithHTTPClient(&http.Client{Transport: tr, Timeout: 30 * time.Second})
		recs[i] = client.NewRecorder(c, client.RecorderOptions{
			MaxBatchEvents: 100,
			MaxQueueEvents: 300, // producers block on a full queue while the server is down
			MinBackoff:     10 * time.Millisecond,
			MaxBackoff:     500 * time.Millisecond,
			OnError:        func(ids []string, err error) { failed.Add(int64(len(ids))) },
		})
	}
	var producers sync.WaitGroup
	for i, rec := range recs {
		producers.Add(1)
		go func() {
			defer producers.Done()
			for j := range perRecorder {
				// No id: the Recorder assigns one, which is what is under test.
				err := rec.Record(context.Background(), client.Event{Type: "api.call", Tenant: "sdk", Action: "test",
					Actor: &client.Actor{ID: fmt.Sprintf("app-%d", i), Type: "service"}, Attributes: client.Attributes{"seq": fmt.Sprintf("%d-%d", i, j)}})
				if err != nil {
					t.Errorf("Record: %v", err)
					return
				}
			}
		}()
	}
	sent := func() uint64 {
		var n uint64
		for _, rec := range recs {
			n += rec.Stats().Sent
		}
		return n
	}
	for crash := 1; crash <= 2; crash++ {
		for sent() < uint64(total*crash/3) {
			time.Sleep(5 * time.Millisecond)
		}
		s.kill()
		s = start()
	}
	producers.Wait()
	var retries, duplicates uint64
	for _, rec := range recs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := rec.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		cancel()
		retries += rec.Stats().Retries
		duplicates += rec.Stats().Duplicates
	}
	if failed.Load() != 0 {
		t.Fatalf("%d events reported as not stored", failed.Load())
	}
	if tr.unavailable.Load() == 0 || retries == 0 {
		t.Fatalf("%d answers were 503 and %d requests retried: the test did not exercise pushback and crashes", tr.unavailable.Load(), retries)
	}
	t.Logf("%d events, %d retries, %d pushback answers, %d acknowledged as duplicates, 2 crashes", total, retries, tr.unavailable.Load(), duplicates)

	s.waitIndexed()
	// Only what the recorders sent: the test's own reads are recorded in the
	// tenant too (log.access), and may land between its pages.
	events := s.allEvents("tenant=sdk&type=api.call")
	ids, seqs := map[string]bool{}, map[string]int{}
	for _, e := range events {
		id, ok := e["id"].(string)
		if !ok {
			t.Fatalf("an event without an id: %v", e)
		}
		if ids[id] {
			t.Errorf("id %s is in the log twice", id)
		}
		ids[id] = true
		seq, ok := e["attributes"].(map[string]any)["seq"].(string)
		if !ok {
			t.Fatalf("an event the recorders did not send: %v", e)
		}
		seqs[seq]++
	}
	if len(events) != total {
		t.Errorf("the log holds %d events, %d were recorded", len(events), total)
	}
	for i := range recorders {
		for j := range perRecorder {
			if n := seqs[fmt.Sprintf("%d-%d", i, j)]; n != 1 {
				t.Fatalf("event %d-%d is in the log %d times", i, j, n)
			}
		}
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
}

// TestSDKRecordSyncReceipt checks that RecordSync's receipt names where the
// events are in the real log.
func TestSDKRecordSyncReceipt(t *testing.T) {
	s := startServer(t, t.TempDir())
	rec := client.NewRecorder(client.New(s.url, adminToken), client.RecorderOptions{})
	defer rec.Close(context.Background())
	rc, err := rec.RecordSync(context.Background(),
		client.Event{Type: "model.deploy", Tenant: "acme", Model: &client.Model{Name: "m", Version: "3"}},
		client.Event{ID: "deploy-4", Type: "model.deploy", Tenant: "acme", Model: &client.Model{Name: "m", Version: "4"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Results) != 2 || rc.Results[1].ID != "deploy-4" || !strings.Contains(rc.Checkpoint, "\n2\n") {
		t.Fatalf("receipt %+v", rc)
	}
	s.waitIndexed()
	for _, r := range rc.Results {
		var ev map[string]any
		s.getJSON("/v1/events/"+r.ID+"?tenant=acme", &ev)
		if uint64(ev["index"].(float64)) != r.Index {
			t.Errorf("event %s is at %v, the receipt says %d", r.ID, ev["index"], r.Index)
		}
	}
	// Sending the same events again stores nothing new.
	again, err := rec.RecordSync(context.Background(), client.Event{ID: rc.Results[0].ID, Type: "model.deploy", Tenant: "acme", Model: &client.Model{Name: "m", Version: "3"}})
	if err != nil || !again.Results[0].Duplicate || again.Results[0].Index != rc.Results[0].Index {
		t.Fatalf("resent event: %+v, %v", again, err)
	}
}

// TestSDKHTTPMiddlewareFailsClosed runs an application behind the HTTP
// middleware in Sync mode against the real server: a call is answered only
// once it is in the log, and refused when it cannot be recorded.
func TestSDKHTTPMiddlewareFailsClosed(t *testing.T) {
	s := startServer(t, t.TempDir())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /reports/{id}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "report") })
	rec := client.NewRecorder(client.New(s.url, adminToken), client.RecorderOptions{})
	defer rec.Close(context.Background())
	app := httptest.NewServer(client.HTTPMiddleware(rec, client.HTTPOptions{Tenant: "acme", Sync: true})(mux))
	defer app.Close()
	// The same application with a tenant name the server refuses.
	bad := httptest.NewServer(client.HTTPMiddleware(rec, client.HTTPOptions{Tenant: "Not A Tenant", Sync: true})(mux))
	defer bad.Close()

	resp, err := http.Get(app.URL + "/reports/7")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	s.waitIndexed()
	evs := s.allEvents("tenant=acme&type=api.call")
	// The client's address is personal data: stored as a pseudonym.
	if ip, _ := evs[0]["actor"].(map[string]any)["ip"].(string); len(evs) != 1 || evs[0]["action"] != "GET /reports/{id}" || !strings.HasPrefix(ip, "hmac-sha256:") {
		t.Fatalf("events %v", evs)
	}

	resp, err = http.Get(bad.URL + "/reports/7")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d for a call that could not be recorded, want 503", resp.StatusCode)
	}
}

// TestSDKHTTPMiddlewareRecordsEveryRequest: whatever a client puts in the
// path, the method, the user agent or the trace context, the middleware's
// event is one the real server stores, so no request keeps itself out of
// the log (in Sync mode it would have been answered 503 after running).
// Authentication inside the middleware names the actor with SetActor.
func TestSDKHTTPMiddlewareRecordsEveryRequest(t *testing.T) {
	s := startServer(t, t.TempDir())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "item") })
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Service") != "" {
				client.SetActor(r.Context(), client.Actor{ID: r.Header.Get("X-Service"), Type: "service"})
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), struct{}{}, "authenticated")))
		})
	}
	rec := client.NewRecorder(client.New(s.url, adminToken), client.RecorderOptions{})
	defer rec.Close(context.Background())
	app := httptest.NewServer(client.HTTPMiddleware(rec, client.HTTPOptions{Tenant: "acme", Sync: true})(auth(mux)))
	defer app.Close()

	for _, c := range []struct {
		path   string
		header map[string]string
		status int
	}{
		{"/items/42", map[string]string{"X-Service": "svc-billing"}, 200},
		{"/items/a%01b", nil, 200},
		{"/nope%0Ax", nil, 404},
		{"/" + strings.Repeat("n", 1100), nil, 404},
		{"/items/" + strings.Repeat("x", 5000), nil, 200},
		{"/items/1", map[string]string{"User-Agent": strings.Repeat("u", 1100)}, 200},
		{"/items/2", map[string]string{"User-Agent": "Mozilla\tX"}, 200},
		{"/items/3", map[string]string{"Traceparent": "00-" + strings.Repeat("0", 32) + "-" + strings.Repeat("0", 16) + "-01"}, 200},
		{"/items/4", map[string]string{"X-Service": "svc\u0085odd"}, 200},
	} {
		req, _ := http.NewRequest("GET", app.URL+c.path, nil)
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("GET %.40s: %d; want %d (recorded and answered)", c.path, resp.StatusCode, c.status)
		}
	}
	s.waitIndexed()
	evs := s.allEvents("tenant=acme&type=api.call")
	if len(evs) != 9 {
		t.Fatalf("%d api.call events stored for 9 requests", len(evs))
	}
	actors := map[string]bool{}
	for _, e := range evs {
		a, _ := e["actor"].(map[string]any)
		if a["type"] == "service" {
			actors[a["id"].(string)] = true
		}
	}
	if !actors["svc-billing"] || !actors["svc\uFFFDodd"] {
		t.Errorf("service actors %v; want those SetActor named", actors)
	}
}

// TestSDKOpenAIMiddleware records calls made with the official OpenAI client
// to a fake upstream in the real server, content included.
func TestSDKOpenAIMiddleware(t *testing.T) {
	s := startServer(t, t.TempDir())
	upstream := fakeprovider.New()
	defer upstream.Close()
	rec := client.NewRecorder(client.New(s.url, adminToken), client.RecorderOptions{})
	oai := openai.NewClient(option.WithBaseURL(upstream.URL+"/v1/"), option.WithAPIKey("sk-test"),
		option.WithMiddleware(openairecord.Middleware(rec, openairecord.Options{Tenant: "oai"})))
	params := openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4o,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")},
	}
	ctx := openairecord.WithActor(context.Background(), client.Actor{ID: "u-1", Type: "user"})
	if _, err := oai.Chat.Completions.New(ctx, params); err != nil {
		t.Fatal(err)
	}
	params.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := oai.Chat.Completions.NewStreaming(ctx, params)
	var streamed strings.Builder
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 {
			streamed.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || streamed.String() != fakeprovider.Reply {
		t.Fatalf("stream: %q, %v", streamed.String(), err)
	}
	stream.Close()
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	s.waitIndexed()
	evs := s.allEvents("tenant=oai&type=ai.*")
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	for i, e := range evs {
		attrs := e["attributes"].(map[string]any)
		if e["type"] != "ai.inference" || e["outcome"] != "success" || attrs["gen_ai.response.id"] != fakeprovider.ChatID ||
			attrs["gen_ai.usage.output_tokens"] != float64(fakeprovider.OutputTokens) || attrs["gen_ai.provider.name"] != "openai" {
			t.Errorf("event %d: %v", i, e)
		}
		var full struct {
			Decrypted struct {
				Response struct {
					Choices []struct {
						Message struct {
							Content string `json:"content"`
						} `json:"message"`
					} `json:"choices"`
				} `json:"response"`
			} `json:"decrypted_content"`
		}
		s.getJSON("/v1/events/"+e["id"].(string)+"?tenant=oai", &full)
		if c := full.Decrypted.Response.Choices; len(c) != 1 || c[0].Message.Content != fakeprovider.Reply {
			raw, _ := json.Marshal(full)
			t.Errorf("event %d: stored content %s", i, raw)
		}
	}
}

// TestSDKOpenAIMiddlewareRecordsEveryCall: calls whose events the server
// would refuse as made (a seed beyond 2^53, an answer cut inside an emoji,
// a request over the content limit) are recorded all the same, and a
// streamed legacy completion is recorded in the shape of a whole one.
func TestSDKOpenAIMiddlewareRecordsEveryCall(t *testing.T) {
	s := startServer(t, t.TempDir())
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Seed   *int64 `json:"seed"`
			Stream bool   `json:"stream"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if r.URL.Path == "/v1/completions" && req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, piece := range []string{`"Hel"`, `"lo"`} {
				fmt.Fprintf(w, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"index\":0,\"text\":%s,\"finish_reason\":null}]}\n\n", piece)
			}
			fmt.Fprint(w, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
			return
		}
		reply := "Hello"
		if req.Seed != nil && *req.Seed == 7 {
			reply = `Great job \ud83d` // cut inside a surrogate pair
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"%s"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, reply)
	}))
	defer upstream.Close()
	rec := client.NewRecorder(client.New(s.url, adminToken), client.RecorderOptions{})
	oai := openai.NewClient(option.WithBaseURL(upstream.URL+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0),
		option.WithMiddleware(openairecord.Middleware(rec, openairecord.Options{Tenant: "oai"})))
	ctx := context.Background()
	chat := func(seed int64, message string) {
		t.Helper()
		_, err := oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4o, Seed: openai.Int(seed),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(message)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	chat(math.MaxInt64, "big seed")
	chat(7, "cut emoji")
	chat(1, strings.Repeat("a", 17<<20))
	stream := oai.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model: openai.CompletionNewParamsModelGPT3_5TurboInstruct, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hello")}})
	for stream.Next() {
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	if err := rec.Close(ctx); err != nil {
		t.Fatalf("Close: %v; want every call recorded", err)
	}

	s.waitIndexed()
	evs := s.allEvents("tenant=oai&type=ai.inference&order=asc")
	if len(evs) != 4 {
		t.Fatalf("%d events for 4 calls", len(evs))
	}
	content := func(e map[string]any) map[string]any {
		var full struct {
			Decrypted map[string]any `json:"decrypted_content"`
		}
		s.getJSON("/v1/events/"+e["id"].(string)+"?tenant=oai", &full)
		return full.Decrypted
	}
	reply := func(c map[string]any, field string) any {
		ch := c["response"].(map[string]any)["choices"].([]any)[0].(map[string]any)
		if field == "text" {
			return ch["text"]
		}
		return ch["message"].(map[string]any)["content"]
	}
	if a := evs[0]["attributes"].(map[string]any); a["gen_ai.request.seed"] != "9223372036854775807" {
		t.Errorf("seed recorded as %v", a["gen_ai.request.seed"])
	}
	if got := reply(content(evs[1]), "message"); got != "Great job \uFFFD" {
		t.Errorf("the cut answer recorded as %q", got)
	}
	if a := evs[2]["attributes"].(map[string]any); a["aitrail.content_omitted"] != true || evs[2]["content"] != nil {
		t.Errorf("the call over the content limit: %v", evs[2])
	}
	if got := reply(content(evs[3]), "text"); got != "Hello" {
		t.Errorf("the streamed completion recorded as %q; want choices[0].text", got)
	}
}
