package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
)

// fakeLedger is an in-memory ledger: atomic, idempotent on keys, and able
// to push back.
type fakeLedger struct {
	mu       sync.Mutex
	records  [][]byte
	keys     map[string]uint64
	appends  int
	pushback bool
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
	if l.pushback {
		return ledger.Receipt{}, ledger.ErrPushback
	}
	if l.keys == nil {
		l.keys = map[string]uint64{}
	}
	l.appends++
	r := ledger.Receipt{Checkpoint: []byte("checkpoint\n")}
	for _, it := range items {
		if i, ok := l.keys[it.Key]; ok {
			r.Results = append(r.Results, ledger.Result{Index: i, Duplicate: true})
			continue
		}
		i := uint64(len(l.records))
		l.keys[it.Key] = i
		l.records = append(l.records, it.Record)
		r.Results = append(r.Results, ledger.Result{Index: i})
	}
	return r, nil
}

// stored returns the stored records, decoded.
func (l *fakeLedger) stored(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, rec := range l.records {
		var m map[string]any
		if err := json.Unmarshal(rec, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// fakeSealer "encrypts" by prefixing, and keeps the plaintexts.
type fakeSealer struct {
	mu    sync.Mutex
	plain [][]byte
}

func (s *fakeSealer) Seal(_ context.Context, scope string, plaintext, _ []byte) ([]byte, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.plain) < 10 {
		s.plain = append(s.plain, bytes.Clone(plaintext))
	}
	return append([]byte("sealed:"), plaintext...), "key-" + scope, nil
}

func newHandler(t *testing.T, o Options) (*Handler, *fakeLedger) {
	h, l, _ := newHandlerSealer(t, o)
	return h, l
}

func newHandlerSealer(t *testing.T, o Options) (*Handler, *fakeLedger, *fakeSealer) {
	t.Helper()
	l, s := &fakeLedger{}, &fakeSealer{}
	o.Ingest = &ingest.Pipeline{Ledger: l, Sealer: s}
	return New(o), l, s
}

var rootPrincipal = authz.Principal{TokenID: "root", Root: true}

// post sends body to h as principal p and returns the recorded response.
func post(h http.Handler, p authz.Principal, path, contentType string, body []byte, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	req = req.WithContext(authz.WithPrincipal(req.Context(), p))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

var (
	traceID = pcommon.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID  = pcommon.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	start   = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
)

// chatSpan adds a GenAI chat span to ss.
func chatSpan(ss ptrace.ScopeSpans, id byte) ptrace.Span {
	sp := ss.Spans().AppendEmpty()
	sp.SetTraceID(traceID)
	sid := spanID
	sid[7] = id
	sp.SetSpanID(sid)
	sp.SetName("chat gpt-4o")
	sp.SetKind(ptrace.SpanKindClient)
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(1500 * time.Millisecond)))
	a := sp.Attributes()
	a.PutStr("gen_ai.operation.name", "chat")
	a.PutStr("gen_ai.system", "openai")
	a.PutStr("gen_ai.request.model", "gpt-4o")
	a.PutStr("gen_ai.response.model", "gpt-4o-2024-08-06")
	a.PutInt("gen_ai.usage.prompt_tokens", 12)
	a.PutInt("gen_ai.usage.output_tokens", 34)
	a.PutEmptySlice("gen_ai.response.finish_reasons").AppendEmpty().SetStr("stop")
	a.PutStr("gen_ai.conversation.id", "conv-1")
	a.PutStr("user.id", "alice")
	a.PutStr("gen_ai.input.messages", `[{"role":"user","parts":[{"type":"text","content":"secret prompt"}]}]`)
	a.PutStr("gen_ai.output.messages", `[{"role":"assistant","parts":[{"type":"text","content":"secret answer"}]}]`)
	a.PutStr("url.full", "https://api.example/v1?key=x")
	return sp
}

// traces returns a request with one GenAI span and one plain HTTP span.
func traces() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "chatbot")
	ss := rs.ScopeSpans().AppendEmpty()
	chatSpan(ss, 1)
	plain := ss.Spans().AppendEmpty()
	plain.SetTraceID(traceID)
	plain.SetSpanID(pcommon.SpanID{9, 9, 9, 9, 9, 9, 9, 9})
	plain.SetName("GET /health")
	plain.Attributes().PutStr("http.request.method", "GET")
	return td
}

func encodeTraces(t *testing.T, td ptrace.Traces, json bool) []byte {
	t.Helper()
	req := ptraceotlp.NewExportRequestFromTraces(td)
	b, err := req.MarshalProto()
	if json {
		b, err = req.MarshalJSON()
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// traceResponse decodes a successful trace export response.
func traceResponse(t *testing.T, w *httptest.ResponseRecorder) ptraceotlp.ExportResponse {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	resp := ptraceotlp.NewExportResponse()
	var err error
	switch ct := w.Header().Get("Content-Type"); ct {
	case mediaProto:
		err = resp.UnmarshalProto(w.Body.Bytes())
	case mediaJSON:
		err = resp.UnmarshalJSON(w.Body.Bytes())
	default:
		t.Fatalf("Content-Type %q", ct)
	}
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestTracesRecordGenAISpans(t *testing.T) {
	for _, tc := range []struct {
		name       string
		json, gzip bool
	}{{"protobuf", false, false}, {"json", true, false}, {"protobuf+gzip", false, true}, {"json+gzip", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			h, l, sealer := newHandlerSealer(t, Options{})
			body := encodeTraces(t, traces(), tc.json)
			ct, hdr := mediaProto, []string{}
			if tc.json {
				ct = mediaJSON + "; charset=utf-8"
			}
			if tc.gzip {
				body, hdr = gzipped(body), []string{"Content-Encoding", "gzip"}
			}
			w := post(h, rootPrincipal, TracesPath, ct, body, hdr...)
			resp := traceResponse(t, w)
			if !strings.HasPrefix(ct, w.Header().Get("Content-Type")) {
				t.Errorf("response Content-Type %q for a %s request", w.Header().Get("Content-Type"), ct)
			}
			if n := resp.PartialSuccess().RejectedSpans(); n != 0 {
				t.Errorf("rejected %d spans: %s", n, resp.PartialSuccess().ErrorMessage())
			}
			recs := l.stored(t)
			if len(recs) != 1 {
				t.Fatalf("stored %d records, want 1 (the plain span is dropped)", len(recs))
			}
			r := recs[0]
			want := map[string]any{
				"id": "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba90201", "type": "ai.inference", "tenant": "default",
				"time": "2026-11-27T10:00:00.123456789Z", "action": "chat", "outcome": "success",
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba90201",
			}
			for k, v := range want {
				if r[k] != v {
					t.Errorf("%s = %v, want %v", k, r[k], v)
				}
			}
			model, _ := r["model"].(map[string]any)
			if model["provider"] != "openai" || model["name"] != "gpt-4o" || model["version"] != "gpt-4o-2024-08-06" {
				t.Errorf("model = %v", model)
			}
			actor, _ := r["actor"].(map[string]any)
			if actor["id"] != "alice" || actor["type"] != "user" || actor["session_id"] != "conv-1" {
				t.Errorf("actor = %v", actor)
			}
			attrs, _ := r["attributes"].(map[string]any)
			for k, v := range map[string]any{
				"gen_ai.usage.input_tokens": 12.0, "gen_ai.usage.output_tokens": 34.0, "gen_ai.provider.name": "openai",
				"gen_ai.response.finish_reasons": "stop", "service.name": "chatbot", "duration_ms": 1500.0,
				"otel.span.kind": "client",
			} {
				if attrs[k] != v {
					t.Errorf("attributes[%s] = %v, want %v", k, attrs[k], v)
				}
			}
			for _, k := range []string{"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system", "gen_ai.usage.prompt_tokens", "url.full"} {
				if _, ok := attrs[k]; ok {
					t.Errorf("attributes keep %s", k)
				}
			}
			if c, _ := r["content"].(map[string]any); c["digest"] == nil {
				t.Errorf("no content reference: %v", r["content"])
			}
			if s := string(mustJSON(r)); strings.Contains(s, "secret") {
				t.Errorf("message content in the record: %s", s)
			}
			// The messages are stored as the JSON they hold, not as strings.
			var content struct {
				Input  []map[string]any `json:"gen_ai.input.messages"`
				Output []map[string]any `json:"gen_ai.output.messages"`
			}
			if err := json.Unmarshal(sealer.plain[0], &content); err != nil || len(content.Input) != 1 || content.Output[0]["role"] != "assistant" {
				t.Errorf("content %s: %v", sealer.plain[0], err)
			}
		})
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestResentBatchStoresNothingNew(t *testing.T) {
	h, l := newHandler(t, Options{})
	body := encodeTraces(t, traces(), false)
	for i := 0; i < 3; i++ {
		traceResponse(t, post(h, rootPrincipal, TracesPath, mediaProto, body))
	}
	if n := len(l.stored(t)); n != 1 {
		t.Errorf("stored %d records after sending the batch 3 times, want 1", n)
	}
}

// TestAnswersOnlyWhatIsDurable checks that an exporter is told its spans
// are recorded only once the ledger has taken them: while the append waits
// for its commit, the export has no answer, so a crash then cannot lose a
// span the exporter was told was kept.
func TestAnswersOnlyWhatIsDurable(t *testing.T) {
	h, l := newHandler(t, Options{})
	l.held, l.release = make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(authz.WithPrincipal(r.Context(), rootPrincipal)))
	}))
	defer srv.Close()
	answered := make(chan int, 1)
	go func() {
		resp, err := http.Post(srv.URL+TracesPath, mediaProto, bytes.NewReader(encodeTraces(t, traces(), false)))
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-l.held
	select {
	case code := <-answered:
		t.Fatalf("the export was answered (%d) while its append had not returned", code)
	case <-time.After(200 * time.Millisecond):
	}
	close(l.release)
	if code := <-answered; code != http.StatusOK {
		t.Fatalf("status %d once the append returned, want 200", code)
	}
	if n := len(l.stored(t)); n != 1 {
		t.Errorf("stored %d records, want 1", n)
	}
}

func TestPartialSuccess(t *testing.T) {
	h, l := newHandler(t, Options{})
	td := traces()
	// A span the pipeline finds invalid (its user id is too long), and one
	// in a tenant the token may not write.
	ss := td.ResourceSpans().At(0).ScopeSpans().At(0)
	chatSpan(ss, 10).Attributes().PutStr("user.id", strings.Repeat("u", 2000))
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("aitrail.tenant", "other")
	chatSpan(rs.ScopeSpans().AppendEmpty(), 11)
	p := authz.Principal{TokenID: "t", Roles: []authz.Role{authz.RoleIngest}, Tenants: []string{"acme"}}
	resp := traceResponse(t, post(h, p, TracesPath, mediaJSON, encodeTraces(t, td, true)))
	ps := resp.PartialSuccess()
	if ps.RejectedSpans() != 2 {
		t.Errorf("rejected_spans = %d, want 2", ps.RejectedSpans())
	}
	for _, want := range []string{"2 of the spans could not be recorded", "actor.id: must be at most 1024 bytes", `may not write to tenant "other"`, "span 4bf92f3577b34da6a3ce929d0e0e4736/00f067aa0ba9020a"} {
		if !strings.Contains(ps.ErrorMessage(), want) {
			t.Errorf("error_message %q lacks %q", ps.ErrorMessage(), want)
		}
	}
	recs := l.stored(t)
	if len(recs) != 1 || recs[0]["tenant"] != "acme" {
		t.Errorf("stored %v, want the one span in the token's only tenant", recs)
	}
}

func TestPushback(t *testing.T) {
	for _, json := range []bool{false, true} {
		h, l := newHandler(t, Options{})
		l.pushback = true
		ct := mediaProto
		if json {
			ct = mediaJSON
		}
		w := post(h, rootPrincipal, TracesPath, ct, encodeTraces(t, traces(), json))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Errorf("%s: status %d, Retry-After %q; want 503 with Retry-After", ct, w.Code, w.Header().Get("Retry-After"))
		}
		if st := status(t, w); !strings.Contains(st.GetMessage(), "capacity") || ErrorCode(st) != "pushback" {
			t.Errorf("%s: status message %q, reason %q; want pushback", ct, st.GetMessage(), ErrorCode(st))
		}
	}
}

// status decodes an error response's google.rpc.Status.
func status(t *testing.T, w *httptest.ResponseRecorder) *statuspb.Status {
	t.Helper()
	st := &statuspb.Status{}
	var err error
	switch ct := w.Header().Get("Content-Type"); ct {
	case mediaProto:
		err = proto.Unmarshal(w.Body.Bytes(), st)
	case mediaJSON:
		err = protojson.Unmarshal(w.Body.Bytes(), st)
	default:
		t.Fatalf("error Content-Type %q", ct)
	}
	if err != nil {
		t.Fatalf("error body %q is not a google.rpc.Status: %v", w.Body, err)
	}
	if ErrorCode(st) == "" {
		t.Fatalf("error body %q names no reason", w.Body)
	}
	return st
}

func TestBadInput(t *testing.T) {
	valid := encodeTraces(t, traces(), false)
	for _, tc := range []struct {
		name, path, ct string
		body           []byte
		hdr            []string
		status         int
		message        string
	}{
		{"malformed protobuf", TracesPath, mediaProto, []byte("\xff\xff\xff not protobuf"), nil, 400, "couldn't decode"},
		{"malformed JSON", TracesPath, mediaJSON, []byte(`{"resourceSpans":[`), nil, 400, "couldn't decode"},
		{"malformed log JSON", LogsPath, mediaJSON, []byte(`[1,2]`), nil, 400, "couldn't decode"},
		{"too large", TracesPath, mediaProto, bytes.Repeat([]byte{0}, 2048), nil, 413, "exceeds 1024 bytes"},
		{"too large after gzip", TracesPath, mediaProto, gzipped(bytes.Repeat([]byte{0}, 4096)), []string{"Content-Encoding", "gzip"}, 413, "exceeds"},
		{"wrong media type", TracesPath, "text/plain", valid, nil, 415, "Content-Type must be"},
		{"no media type", TracesPath, "", valid, nil, 415, "Content-Type must be"},
		{"bad gzip", TracesPath, mediaProto, valid, []string{"Content-Encoding", "gzip"}, 400, "gzip"},
		{"truncated gzip", TracesPath, mediaProto, gzipped(valid)[:20], []string{"Content-Encoding", "gzip"}, 400, "gzip"},
		{"unknown encoding", TracesPath, mediaProto, valid, []string{"Content-Encoding", "br"}, 415, "Content-Encoding"},
		{"unknown path", "/otlp/v1/metrics", mediaProto, valid, nil, 404, "no such OTLP endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, l := newHandler(t, Options{MaxBodyBytes: 1024})
			w := post(h, rootPrincipal, tc.path, tc.ct, tc.body, tc.hdr...)
			if w.Code != tc.status {
				t.Errorf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if st := status(t, w); !strings.Contains(st.GetMessage(), tc.message) {
				t.Errorf("message %q lacks %q", st.GetMessage(), tc.message)
			}
			if n := len(l.stored(t)); n != 0 {
				t.Errorf("stored %d records", n)
			}
		})
	}
}

func TestLargeRequestIsSplit(t *testing.T) {
	h, l := newHandler(t, Options{MaxBatchEvents: 2})
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	for i := 1; i <= 5; i++ {
		chatSpan(ss, byte(i))
	}
	traceResponse(t, post(h, rootPrincipal, TracesPath, mediaProto, encodeTraces(t, td, false)))
	if n := len(l.stored(t)); n != 5 || l.appends != 3 {
		t.Errorf("stored %d records in %d appends, want 5 in 3", n, l.appends)
	}
}

func TestKeepOtherSpans(t *testing.T) {
	h, l := newHandler(t, Options{KeepOtherSpans: true})
	traceResponse(t, post(h, rootPrincipal, TracesPath, mediaProto, encodeTraces(t, traces(), false)))
	recs := l.stored(t)
	if len(recs) != 2 || recs[1]["type"] != "trace.span" || recs[1]["action"] != "GET /health" {
		t.Errorf("stored %v, want the plain span as trace.span", recs)
	}
}

func TestOperationTypes(t *testing.T) {
	for op, want := range map[string]string{
		"chat": "ai.inference", "text_completion": "ai.inference", "generate_content": "ai.inference",
		"embeddings": "ai.embedding", "execute_tool": "ai.tool_call", "invoke_agent": "ai.agent",
		"create_agent": "ai.agent", "rerank": "ai.operation",
	} {
		td := ptrace.NewTraces()
		sp := chatSpan(td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty(), 1)
		sp.Attributes().PutStr("gen_ai.operation.name", op)
		sp.Attributes().PutStr("gen_ai.tool.name", "get_weather")
		sp.Status().SetCode(ptrace.StatusCodeError)
		b := (&mapper{}).spans(td)
		if len(b.items) != 1 {
			t.Fatalf("%s: %d items", op, len(b.items))
		}
		ev := b.items[0].ev
		if ev.Type != want || ev.Outcome != "failure" {
			t.Errorf("%s: type %s outcome %s, want %s failure", op, ev.Type, ev.Outcome, want)
		}
		if want == "ai.tool_call" && (ev.Resource == nil || ev.Resource.Name != "get_weather") {
			t.Errorf("tool call resource = %v", ev.Resource)
		}
	}
}

// genAILogs returns GenAI log events as the OpenTelemetry GenAI
// instrumentations emit them, and a log record that is not one.
func genAILogs() plog.Logs {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "chatbot")
	sl := rl.ScopeLogs().AppendEmpty()
	details := sl.LogRecords().AppendEmpty()
	details.SetEventName("gen_ai.client.inference.operation.details")
	details.SetTimestamp(pcommon.NewTimestampFromTime(start))
	details.SetTraceID(traceID)
	details.SetSpanID(spanID)
	details.Attributes().PutStr("gen_ai.operation.name", "chat")
	details.Attributes().PutStr("gen_ai.provider.name", "anthropic")
	details.Attributes().PutStr("gen_ai.request.model", "claude-sonnet")
	details.Attributes().PutInt("gen_ai.usage.input_tokens", 7)
	details.Attributes().PutStr("gen_ai.input.messages", `[{"role":"user","parts":[{"type":"text","content":"secret prompt"}]}]`)
	msg := sl.LogRecords().AppendEmpty()
	msg.Attributes().PutStr("event.name", "gen_ai.user.message")
	msg.Attributes().PutStr("gen_ai.system", "openai")
	msg.Body().SetEmptyMap().PutStr("content", "secret question")
	msg.SetObservedTimestamp(pcommon.NewTimestampFromTime(start))
	other := sl.LogRecords().AppendEmpty()
	other.Body().SetStr("server started")
	return ld
}

func TestLogsRecordGenAIEvents(t *testing.T) {
	for _, ct := range []string{mediaProto, mediaJSON} {
		h, l := newHandler(t, Options{})
		req := plogotlp.NewExportRequestFromLogs(genAILogs())
		body, err := req.MarshalProto()
		if ct == mediaJSON {
			body, err = req.MarshalJSON()
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			w := post(h, rootPrincipal, LogsPath, ct, body)
			if w.Code != http.StatusOK || w.Header().Get("Content-Type") != ct {
				t.Fatalf("%s: status %d %s: %s", ct, w.Code, w.Header().Get("Content-Type"), w.Body)
			}
			// Full success leaves partial_success unset: an empty message.
			if want := map[string]string{mediaProto: "", mediaJSON: "{}"}[ct]; w.Body.String() != want {
				t.Errorf("%s: response %q, want %q", ct, w.Body, want)
			}
		}
		recs := l.stored(t)
		if len(recs) != 2 {
			t.Fatalf("%s: stored %d records after sending twice, want 2", ct, len(recs))
		}
		d, m := recs[0], recs[1]
		if d["type"] != "ai.inference" || d["action"] != "chat" || d["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" ||
			d["model"].(map[string]any)["name"] != "claude-sonnet" || d["content"] == nil {
			t.Errorf("%s: details event = %v", ct, d)
		}
		if m["type"] != "ai.message" || m["action"] != "gen_ai.user.message" || m["content"] == nil ||
			m["model"].(map[string]any)["provider"] != "openai" || m["time"] != "2026-11-27T10:00:00.123456789Z" {
			t.Errorf("%s: message event = %v", ct, m)
		}
		if s := string(mustJSON(recs)); strings.Contains(s, "secret") {
			t.Errorf("%s: content in the records: %s", ct, s)
		}
	}
}

// TestUnusualSpansAreKept: a span is recorded whole, not rejected and not
// cut down, when it carries the current openai.* attributes, a list of
// finish reasons, a content attribute whose key JSON must escape, or a
// message string holding JSON nested past the limit of an event's
// content, which is kept as the string it is.
func TestUnusualSpansAreKept(t *testing.T) {
	h, l, sealer := newHandlerSealer(t, Options{})
	td := ptrace.NewTraces()
	sp := chatSpan(td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty(), 1)
	a := sp.Attributes()
	a.PutStr("openai.response.service_tier", "default")
	a.PutStr("openai.response.system_fingerprint", "fp_1")
	a.PutStr("gen_ai.openai.request.service_tier", "auto") // legacy: stored as openai.request.service_tier
	fr := a.PutEmptySlice("gen_ai.response.finish_reasons")
	fr.AppendEmpty().SetStr("stop")
	fr.AppendEmpty().SetStr("length")
	a.PutStr("gen_ai.prompt.\x7f\a", "odd key")
	deep := strings.Repeat("[", 70) + strings.Repeat("]", 70)
	a.PutStr("gen_ai.output.messages", deep)
	resp := traceResponse(t, post(h, rootPrincipal, TracesPath, mediaProto, encodeTraces(t, td, false)))
	if ps := resp.PartialSuccess(); ps.RejectedSpans() != 0 {
		t.Fatalf("rejected: %s", ps.ErrorMessage())
	}
	recs := l.stored(t)
	if len(recs) != 1 {
		t.Fatalf("stored %d records, want 1", len(recs))
	}
	attrs := recs[0]["attributes"].(map[string]any)
	for k, v := range map[string]any{"openai.response.service_tier": "default", "openai.response.system_fingerprint": "fp_1",
		"openai.request.service_tier": "auto", "gen_ai.response.finish_reasons": "stop,length"} {
		if attrs[k] != v {
			t.Errorf("attributes[%s] = %v, want %v", k, attrs[k], v)
		}
	}
	var content map[string]any
	if err := json.Unmarshal(sealer.plain[0], &content); err != nil {
		t.Fatalf("content %q: %v", sealer.plain[0], err)
	}
	if content["gen_ai.output.messages"] != deep || content["gen_ai.prompt.\x7f\a"] != "odd key" {
		t.Errorf("content %s", sealer.plain[0])
	}
}

// TestLogRecordsToldApartByAnyAttribute: log records have no id; two that
// differ only in an attribute the event does not keep are two events, and
// a re-sent batch still stores nothing new.
func TestLogRecordsToldApartByAnyAttribute(t *testing.T) {
	h, l := newHandler(t, Options{KeepOtherLogs: true})
	ld := plog.NewLogs()
	sl := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty()
	for _, id := range []string{"r-1", "r-2"} {
		lr := sl.LogRecords().AppendEmpty()
		lr.Body().SetStr("request served")
		lr.SetTimestamp(pcommon.NewTimestampFromTime(start))
		lr.Attributes().PutStr("request.id", id)
	}
	body, err := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if w := post(h, rootPrincipal, LogsPath, mediaProto, body); w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	if n := len(l.stored(t)); n != 2 {
		t.Errorf("stored %d records, want 2", n)
	}
}

// TestAttrKeys: attribute keys the event rules accept are kept, others
// (spaces, non-ASCII letters, empty or over 256 bytes) are dropped.
func TestAttrKeys(t *testing.T) {
	for k, want := range map[string]bool{
		"gen_ai.request.model": true, "http.route": true, "a/b:c-d_E9": true, strings.Repeat("k", 256): true,
		"": false, "a b": false, "tëst": false, "a\x00": false, "a=b": false, strings.Repeat("k", 257): false,
	} {
		if got := isAttrKey(k); got != want {
			t.Errorf("isAttrKey(%q) = %v, want %v", k, got, want)
		}
	}
}
