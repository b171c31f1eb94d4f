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
