package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// exportErrors collects what the OpenTelemetry SDK reports through its
// global error handler: failed exports and partial successes.
type exportErrors struct {
	mu   sync.Mutex
	errs []error
}

func (e *exportErrors) Handle(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

func (e *exportErrors) check(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, err := range e.errs {
		t.Errorf("export: %v", err)
	}
	e.errs = nil
}

const otlpMarker = "OTLP-SECRET-PROMPT-1729"

// TestOTLPExportersRecordGenAI sends GenAI spans and log events with the
// OpenTelemetry Go SDK's OTLP/HTTP exporters, as an instrumented
// application would, and reads the resulting events back.
func TestOTLPExportersRecordGenAI(t *testing.T) {
	s := startServer(t, t.TempDir())
	_, _, ingestTok := mint(t, s, adminToken, `{"name":"otel","roles":["ingest"],"tenants":["acme"]}`)
	_, _, reader := mint(t, s, adminToken, `{"name":"auditor","roles":["read"],"tenants":["acme"]}`)
	_, _, contentReader := mint(t, s, adminToken, `{"name":"investigator","roles":["read","read_content"],"tenants":["acme"]}`)
	errs := &exportErrors{}
	otel.SetErrorHandler(errs)
	ctx := context.Background()
	headers := map[string]string{"Authorization": "Bearer " + ingestTok}
	res := resource.NewSchemaless(attribute.String("service.name", "support-bot"))

	// Traces, once as gzipped protobuf and once as JSON.
	spanIDs := map[string]string{}
	for _, enc := range []struct {
		name string
		opt  otlptracehttp.Option
	}{
		{"protobuf", otlptracehttp.WithCompression(otlptracehttp.GzipCompression)},
		{"json", otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON)},
	} {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(s.url+"/otlp/v1/traces"), otlptracehttp.WithHeaders(headers), enc.opt)
		if err != nil {
			t.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res))
		tracer := tp.Tracer("test")
		_, sp := tracer.Start(ctx, "chat gpt-4o", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String("gen_ai.operation.name", "chat"),
			attribute.String("gen_ai.provider.name", "openai"),
			attribute.String("gen_ai.request.model", "gpt-4o-"+enc.name),
			attribute.Int("gen_ai.usage.input_tokens", 11),
			attribute.Int("gen_ai.usage.output_tokens", 22),
			attribute.String("user.id", "alice"),
			attribute.String("gen_ai.input.messages", `[{"role":"user","parts":[{"type":"text","content":"`+otlpMarker+`"}]}]`),
		))
		sp.End()
		_, tool := tracer.Start(ctx, "execute_tool get_weather", trace.WithAttributes(
			attribute.String("gen_ai.operation.name", "execute_tool"),
			attribute.String("gen_ai.tool.name", "get_weather"),
		))
		tool.SetStatus(codes.Error, "tool failed")
		tool.End()
		_, plain := tracer.Start(ctx, "GET /healthz")
		plain.End()
		if err := tp.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		spanIDs[enc.name] = sp.SpanContext().TraceID().String() + "/" + sp.SpanContext().SpanID().String()
	}
	errs.check(t)

	// Log events.
	lexp, err := otlploghttp.New(ctx, otlploghttp.WithEndpointURL(s.url+"/otlp/v1/logs"), otlploghttp.WithHeaders(headers))
	if err != nil {
		t.Fatal(err)
	}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(lexp)), sdklog.WithResource(res))
	var rec otellog.Record
	rec.SetEventName("gen_ai.client.inference.operation.details")
	rec.AddAttributes(
		attribute.String("gen_ai.operation.name", "chat"),
		attribute.String("gen_ai.request.model", "claude-logs"),
		attribute.Int("gen_ai.usage.input_tokens", 5),
		attribute.String("gen_ai.output.messages", `[{"role":"assistant","parts":[{"type":"text","content":"`+otlpMarker+`"}]}]`),
	)
	lp.Logger("test").Emit(ctx, rec)
	var msg otellog.Record
	msg.SetEventName("gen_ai.user.message")
	msg.SetBody(attribute.MapValue(attribute.String("content", otlpMarker)))
	lp.Logger("test").Emit(ctx, msg)
	var other otellog.Record
	other.SetBody(attribute.StringValue("cache warmed"))
	lp.Logger("test").Emit(ctx, other)
	if err := lp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	errs.check(t)

	s.waitIndexed()
	events := s.allEvents("tenant=acme")
	byModel := map[string]map[string]any{}
	var tools, messages int
	for _, e := range events {
		if m, ok := e["model"].(map[string]any); ok {
			byModel[m["name"].(string)] = e
		}
		switch e["type"] {
		case "ai.tool_call":
			tools++
			if e["outcome"] != "failure" || e["resource"].(map[string]any)["name"] != "get_weather" {
				t.Errorf("tool call = %v", e)
			}
		case "ai.message":
			messages++
		}
	}
	if len(events) != 6 || tools != 2 || messages != 1 {
		t.Fatalf("got %d events (%d tool calls, %d messages), want 6: 2 chat spans, 2 tool spans and 2 log events", len(events), tools, messages)
	}
	for _, enc := range []string{"protobuf", "json"} {
		e := byModel["gpt-4o-"+enc]
		if e == nil {
			t.Fatalf("no event for the %s chat span", enc)
		}
		attrs := e["attributes"].(map[string]any)
		if e["type"] != "ai.inference" || attrs["gen_ai.usage.input_tokens"] != 11.0 || attrs["gen_ai.usage.output_tokens"] != 22.0 ||
			e["trace_id"].(string)+"/"+e["span_id"].(string) != spanIDs[enc] ||
			!strings.HasPrefix(e["actor"].(map[string]any)["id"].(string), "hmac-sha256:") {
			t.Errorf("%s chat span became %v; want its user as a pseudonym", enc, e)
		}
	}
	if n := len(s.allEvents("tenant=acme&type=ai.inference&actor=alice")); n < 2 {
		t.Errorf("a search for the spans' user finds %d inference events; want both chat spans", n)
	}
	if e := byModel["claude-logs"]; e == nil || e["type"] != "ai.inference" || e["attributes"].(map[string]any)["gen_ai.usage.input_tokens"] != 5.0 {
		t.Errorf("log event became %v", e)
	}

	// Content: only a read_content token sees it.
	if s := string(mustMarshal(events)); strings.Contains(s, otlpMarker) {
		t.Fatalf("content in query results: %s", s)
	}
	for _, e := range []map[string]any{byModel["gpt-4o-json"], byModel["claude-logs"]} {
		id := e["id"].(string)
		if code, body := s.do("GET", "/v1/events/"+id, reader, "", nil); code != 200 || strings.Contains(string(body), otlpMarker) {
			t.Errorf("read token: %d %s", code, body)
		}
		if code, body := s.do("GET", "/v1/events/"+id, contentReader, "", nil); code != 200 || !strings.Contains(string(body), otlpMarker) {
			t.Errorf("read_content token: %d %s", code, body)
		}
	}

	// A span for a tenant the token may not write: the exporter reports the
	// partial success, and nothing of it is stored.
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(s.url+"/otlp/v1/traces"), otlptracehttp.WithHeaders(headers))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("aitrail.tenant", "globex"))))
	_, sp := tp.Tracer("test").Start(ctx, "chat", trace.WithAttributes(attribute.String("gen_ai.operation.name", "chat")))
	sp.End()
	tp.Shutdown(ctx)
	errs.mu.Lock()
	if len(errs.errs) != 1 || !strings.Contains(errs.errs[0].Error(), `1 of the spans could not be recorded`) ||
		!strings.Contains(errs.errs[0].Error(), `may not write to tenant "globex"`) {
		t.Errorf("exporter reported %v, want one partial success naming the tenant", errs.errs)
	}
	errs.errs = nil
	errs.mu.Unlock()
	s.waitIndexed()
	if n := len(s.allEvents("type=ai.*")); n != 6 {
		t.Errorf("log holds %d AI records, want 6", n)
	}

	code, body := s.do("GET", "/metrics", "", "", nil)
	if code != 200 || !strings.Contains(string(body), `aitrail_otlp_items_total{result="recorded",signal="spans"} 4`) {
		t.Errorf("metrics lack the OTLP counters")
	}
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestOTLPBadInputStoresNothing checks the answers to requests that cannot
// be recorded, and that a re-sent batch stores nothing new.
func TestOTLPBadInputStoresNothing(t *testing.T) {
	// Refused requests are recorded too, counted per access window (see
	// TestReadsAreRecorded); a window longer than the test keeps
	// those records out of the count of what the requests stored.
	s := startServer(t, t.TempDir(), "--config", writeConfig(t, "access_window: 1h\n"))
	_, _, reader := mint(t, s, adminToken, `{"name":"auditor","roles":["read"],"tenants":["*"]}`)
	before := s.settledSize() // the token's creation and its alert
	td := ptrace.NewTraces()
	sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	sp.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	sp.Attributes().PutStr("gen_ai.operation.name", "embeddings")
	valid, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if code, body := s.do("POST", "/otlp/v1/traces", adminToken, "application/x-protobuf", valid); code != 200 {
			t.Fatalf("export: %d %s", code, body)
		}
	}
	if n := s.size() - before; n != 1 {
		t.Fatalf("log holds %d records after sending one span twice, want 1", n)
	}
	for _, tc := range []struct {
		name, path, token, ct string
		body                  []byte
		hdr                   []string
		status                int
	}{
		{"missing token", "/otlp/v1/traces", "", "application/x-protobuf", valid, nil, 401},
		{"token without ingest", "/otlp/v1/traces", reader, "application/x-protobuf", valid, nil, 403},
		{"unknown path", "/otlp/v1/metrics", adminToken, "application/x-protobuf", valid, nil, 404},
		{"wrong media type", "/otlp/v1/traces", adminToken, "text/plain", valid, nil, 415},
		{"malformed protobuf", "/otlp/v1/traces", adminToken, "application/x-protobuf", []byte("\xff\xffnot protobuf"), nil, 400},
		{"malformed JSON", "/otlp/v1/logs", adminToken, "application/json", []byte(`{"resourceLogs":[{]}`), nil, 400},
		{"bad gzip", "/otlp/v1/traces", adminToken, "application/x-protobuf", valid, []string{"Content-Encoding", "gzip"}, 400},
		{"over the body limit", "/otlp/v1/traces", adminToken, "application/x-protobuf", gz(make([]byte, 65<<20)), []string{"Content-Encoding", "gzip"}, 413},
	} {
		code, body := s.do("POST", tc.path, tc.token, tc.ct, tc.body, tc.hdr...)
		if code != tc.status || len(body) == 0 {
			t.Errorf("%s: %d %q, want %d with a body", tc.name, code, body, tc.status)
		}
	}
	if code, _ := s.do("GET", "/otlp/v1/traces", adminToken, "", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", code)
	}
	if n := s.size() - before; n != 1 {
		t.Errorf("bad requests changed the log: %d records besides the token's", n)
	}
}

// TestBenchOTLP runs the OTLP load generator briefly.
func TestBenchOTLP(t *testing.T) {
	s := startServer(t, t.TempDir())
	code, out, errOut := runCLI("bench", "--otlp", "--url", s.url, "--token", adminToken, "--clients", "2", "--batch", "50", "--duration", "300ms")
	if code != 0 || !strings.Contains(out, "events/s") || !strings.Contains(errOut, "OTLP spans") {
		t.Fatalf("bench --otlp: %d %q %s", code, out, errOut)
	}
	if s.size() == 0 {
		t.Fatal("bench --otlp stored nothing")
	}
}

// TestOTLPKeepOtherSpans checks the configuration that records spans that
// are not GenAI.
func TestOTLPKeepOtherSpans(t *testing.T) {
	s := startServer(t, t.TempDir(), "--config", writeConfig(t, "capture:\n  otlp:\n    keep_other_spans: true\n"))
	td := ptrace.NewTraces()
	sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	sp.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	sp.SetName("GET /orders")
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if code, resp := s.do("POST", "/otlp/v1/traces", adminToken, "application/json", body); code != 200 || string(resp) != "{}" {
		t.Fatalf("export: %d %s", code, resp)
	}
	s.waitIndexed()
	if evs := s.allEvents("type=trace.span"); len(evs) != 1 || evs[0]["action"] != "GET /orders" {
		t.Fatalf("events %v, want the span as trace.span", evs)
	}
}
