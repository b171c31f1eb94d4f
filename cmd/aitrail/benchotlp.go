package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// otlpBodies returns a function that makes OTLP trace export requests
// (protobuf) of n GenAI chat spans of about size bytes each, all with fresh
// ids. It encodes one request and then only replaces its trace id, so that
// the load generator, which shares the machine, takes little of its CPU.
func otlpBodies(n, size int, content bool) func() []byte {
	var tid pcommon.TraceID
	rand.Read(tid[:])
	template := otlpBenchBody(tid, n, size, content)
	return func() []byte {
		var next pcommon.TraceID
		rand.Read(next[:])
		return bytes.ReplaceAll(template, tid[:], next[:])
	}
}

// otlpBenchBody encodes one OTLP trace export request of n GenAI chat
// spans of trace tid.
func otlpBenchBody(tid pcommon.TraceID, n, size int, content bool) []byte {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "bench")
	rs.Resource().Attributes().PutStr("aitrail.tenant", "bench")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	spans.EnsureCapacity(n)
	now := pcommon.NewTimestampFromTime(time.Now())
	pad := strings.Repeat("x", max(0, size-400))
	for j := 0; j < n; j++ {
		sp := spans.AppendEmpty()
		sp.SetTraceID(tid)
		var sid pcommon.SpanID
		binary.BigEndian.PutUint64(sid[:], uint64(j+1))
		sp.SetSpanID(sid)
		sp.SetName("chat gpt-4o")
		sp.SetKind(ptrace.SpanKindClient)
		sp.SetStartTimestamp(now)
		sp.SetEndTimestamp(now + 1e6)
		a := sp.Attributes()
		a.PutStr("gen_ai.operation.name", "chat")
		a.PutStr("gen_ai.provider.name", "openai")
		a.PutStr("gen_ai.request.model", "gpt-4o")
		a.PutStr("gen_ai.response.model", "gpt-4o-2024-08-06")
		a.PutInt("gen_ai.usage.input_tokens", int64(j))
		a.PutInt("gen_ai.usage.output_tokens", int64(2*j))
		a.PutStr("user.id", "user-"+strconv.Itoa(j%1000))
		if content {
			a.PutStr("gen_ai.input.messages", `[{"role":"user","parts":[{"type":"text","content":"`+pad+`"}]}]`)
		} else {
			a.PutStr("gen_ai.bench.padding", pad)
		}
	}
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		panic(err) // cannot happen: the request is built in memory
	}
	return body
}

// checkOTLP checks an OTLP trace export response: no span was rejected.
func checkOTLP(body []byte) error {
	r := ptraceotlp.NewExportResponse()
	if err := r.UnmarshalProto(body); err != nil {
		return fmt.Errorf("couldn't decode the OTLP response: %w", err)
	}
	if n := r.PartialSuccess().RejectedSpans(); n > 0 {
		return fmt.Errorf("%d spans rejected: %s", n, r.PartialSuccess().ErrorMessage())
	}
	return nil
}
