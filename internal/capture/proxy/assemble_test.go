package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/aitrail/aitrail/internal/apierr"
)

// TestAssembleToolCalls checks that streamed tool calls are put together
// as the unstreamed answer would carry them.
func TestAssembleToolCalls(t *testing.T) {
	chat := openAI.newStream(&openAI.ops[0])
	for _, c := range []string{
		`{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_","arguments":""}}]}}]}`,
		`{"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"weather","arguments":"{\"city\":"}}]}}]}`,
		`{"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]},"finish_reason":"tool_calls"}]}`,
		`[DONE]`,
	} {
		chat.event("", []byte(c))
	}
	a, content := chat.result()
	if !strings.Contains(string(content), `"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]`) ||
		!slices.Equal(a.finishReasons, []string{"tool_calls"}) {
		t.Fatalf("chat: %v %s", a, content)
	}

	// Parallel calls, streamed interleaved and told apart by index, with
	// the usage, fingerprint and log probabilities the unstreamed answer
	// would carry.
	chat = openAI.newStream(&openAI.ops[0])
	for _, c := range []string{
		`{"id":"c2","model":"m","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":{"content":[{"token":"a","logprob":-0.5}],"refusal":null}}]}`,
		`{"id":"c2","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]}}]}`,
		`{"id":"c2","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":{"content":[{"token":"b","logprob":-1}],"refusal":null}}]}`,
		`{"id":"c2","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\":\"CET\"}"}}]},"finish_reason":"tool_calls"}],"usage":null}`,
		`{"id":"c2","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":2}}}`,
		`[DONE]`,
	} {
		chat.event("", []byte(c))
	}
	a, content = chat.result()
	for _, want := range []string{
		`"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"CET\"}"}}]}`,
		`"logprobs":{"content":[{"token":"a","logprob":-0.5},{"token":"b","logprob":-1}],"refusal":null}`,
		`"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":2}}`,
		`"system_fingerprint":"fp_1"`,
	} {
		if !strings.Contains(string(content), want) {
			t.Errorf("parallel calls: %s\nlacks %s", content, want)
		}
	}
	if f := chat.failure(); f != "" {
		t.Errorf("parallel calls: failure %q, want none", f)
	}

	msg := anthropic.newStream(&anthropic.ops[0])
	for _, e := range []string{
		`{"type":"message_start","message":{"id":"msg_1","model":"claude","role":"assistant","content":[],"usage":{"input_tokens":5,"cache_read_input_tokens":2}}}`,
		`{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"tu_1","name":"weather","input":{}}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\""}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":":\"Oslo\"}"}}`,
		`{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":12}}`,
	} {
		msg.event("", []byte(e))
	}
	a, content = msg.result()
	var m struct {
		Content []map[string]any `json:"content"`
	}
	json.Unmarshal(content, &m)
	attrs := map[string]any{}
	a.attributes(attrs)
	if len(m.Content) != 1 || m.Content[0]["input"].(map[string]any)["city"] != "Oslo" ||
		attrs["gen_ai.usage.input_tokens"] != 7.0 || attrs["gen_ai.usage.output_tokens"] != 12.0 ||
		attrs["gen_ai.response.finish_reasons"] != "tool_use" {
		t.Fatalf("anthropic: %v %s", attrs, content)
	}
}

// TestStreamFailures checks how each assembler tells a complete stream
// from one that failed or ended early, for streams that end cleanly.
func TestStreamFailures(t *testing.T) {
	chunk := `{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}`
	finished := `{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
	text := `{"type":"content_block_delta","index":0,"delta":{"text":"x"}}`
	for _, tc := range []struct {
		name   string
		op     *operation
		events []string
		want   string
	}{
		{"chat complete", &openAI.ops[0], []string{chunk, finished, "[DONE]"}, ""},
		{"chat finished, no [DONE]", &openAI.ops[0], []string{chunk, finished}, ""},
		{"chat cut", &openAI.ops[0], []string{chunk}, "stream_incomplete"},
		{"chat empty", &openAI.ops[0], nil, "stream_incomplete"},
		{"chat error", &openAI.ops[0], []string{chunk, `{"error":{"message":"m","type":"server_error","code":null}}`}, "server_error"},
		{"chat error without type", &openAI.ops[0], []string{chunk, `{"error":{"message":"m"}}`}, "provider_error"},
		{"responses complete", &openAI.ops[1], []string{`{"type":"response.completed","response":{"id":"r","status":"completed"}}`}, ""},
		{"responses incomplete", &openAI.ops[1], []string{`{"type":"response.incomplete","response":{"id":"r","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}}`}, ""},
		{"responses failed", &openAI.ops[1], []string{`{"type":"response.failed","response":{"id":"r","status":"failed","error":{"code":"server_error","message":"m"}}}`}, "server_error"},
		{"responses error event", &openAI.ops[1], []string{`{"type":"error","code":"rate_limit_exceeded","message":"m"}`}, "rate_limit_exceeded"},
		{"responses cut", &openAI.ops[1], []string{`{"type":"response.output_text.delta","delta":"x"}`}, "stream_incomplete"},
		{"anthropic complete", &anthropic.ops[0], []string{text, `{"type":"message_delta","delta":{"stop_reason":"end_turn"}}`, `{"type":"message_stop"}`}, ""},
		{"anthropic stop reason, no message_stop", &anthropic.ops[0], []string{text, `{"type":"message_delta","delta":{"stop_reason":"end_turn"}}`}, ""},
		{"anthropic cut", &anthropic.ops[0], []string{text}, "stream_incomplete"},
		{"anthropic error", &anthropic.ops[0], []string{text, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`}, "overloaded_error"},
	} {
		p := openAI
		if tc.op == &anthropic.ops[0] {
			p = anthropic
		}
		s := p.newStream(tc.op)
		for _, e := range tc.events {
			s.event("", []byte(e))
		}
		if got := s.failure(); got != tc.want {
			t.Errorf("%s: failure %q, want %q", tc.name, got, tc.want)
		}
		if _, content := s.result(); !json.Valid(content) {
			t.Errorf("%s: assembled %q", tc.name, content)
		}
	}
}

// FuzzStream feeds arbitrary bytes to every stream assembler: it must not
// panic, and what it assembles must be JSON.
func FuzzStream(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"index\":3,\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\n" +
		"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"text\":\"x\"}}\n\n"))
	f.Add([]byte("data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\"}}\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []struct {
			p  *provider
			op *operation
		}{{openAI, &openAI.ops[0]}, {openAI, &openAI.ops[1]}, {anthropic, &anthropic.ops[0]}} {
			o := newOutput(c.p, c.op, true, 1<<16, nil)
			o.take(b)
			_, content, _ := o.result()
			if !json.Valid(content) {
				t.Fatalf("%s %s: assembled %q", c.p.name, c.op.action, content)
			}
		}
	})
}

// FuzzBodies feeds arbitrary bytes to what reads whole bodies: a caller's
// request (parse) and a provider's non-streamed answer (the output
// assembler). Neither may panic; parse refuses with a 400 whatever is not
// one JSON object, and the content kept for an answer is always JSON.
func FuzzBodies(f *testing.F) {
	f.Add([]byte(`{"model":"gpt-4o","temperature":0.5,"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"u"}}`))
	f.Add([]byte(`{"id":"chatcmpl-1","model":"m","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}`))
	f.Add([]byte(`{"model":"a","model":"b"}`))
	f.Add([]byte("<html>bad gateway</html>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req requestFields
		err := req.parse(b)
		var ae *apierr.Error
		switch {
		case err == nil && (!jsontext.Value(b).IsValid() || jsontext.Value(b).Kind() != '{'):
			t.Fatalf("parse accepted %q", b)
		case err != nil && (!errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Message == ""):
			t.Fatalf("parse(%q) = %v, want a 400 with a message", b, err)
		}
		o := newOutput(openAI, &openAI.ops[0], false, 1<<16, nil)
		o.take(b)
		if _, content, _ := o.result(); len(b) > 0 && !json.Valid(content) {
			t.Fatalf("answer %q kept as %q", b, content)
		}
	})
}

// TestWholeAnswers checks what is recorded of a whole (unstreamed) answer:
// JSON is kept as it came, and read for the answer's fields if it has an
// answer's shape; anything else, including JSON a strict decoder refuses,
// is kept as a string.
func TestWholeAnswers(t *testing.T) {
	for _, tc := range []struct {
		body, model string
		asString    bool
	}{
		{`{"id":"c1","model":"gpt-x","choices":[{"finish_reason":"stop"}]}`, "gpt-x", false},
		{`{"id":"c1","model":"gpt-x","choices":"not a list"}`, "", false},
		{`[1,2,3]`, "", false},
		{`null`, "", false},
		{`<html>Bad gateway</html>`, "", true},
		{`{"id":"c1","model":"gpt-x"`, "", true},
		{`{"id":"c1","id":"c2"}`, "", true},
		{"{\"id\":\"\xff\"}", "", true},
		{"{\"choices\":\"not a list\",\"id\":\"\xff\"}", "", true},
		{`{"choices":"not a list","id":"c1"`, "", true},
	} {
		o := newOutput(openAI, &openAI.ops[0], false, 1<<20, nil)
		o.take([]byte(tc.body))
		a, content, truncated := o.result()
		if truncated || a.model != tc.model {
			t.Errorf("%q: model %q, truncated %v; want %q", tc.body, a.model, truncated, tc.model)
		}
		if tc.asString != (jsontext.Value(content).Kind() == '"') || !tc.asString && string(content) != tc.body {
			t.Errorf("%q: recorded as %s", tc.body, content)
		}
	}
}
