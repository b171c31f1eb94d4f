package proxy

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

var openAI = &provider{
	name:  "openai",
	title: "OpenAI",
	mount: "/openai/v1",
	ops: []operation{
		{method: http.MethodPost, path: "/chat/completions", name: "chat", action: "chat.completions.create", eventType: "ai.inference", body: true},
		{method: http.MethodPost, path: "/responses", name: "chat", action: "responses.create", eventType: "ai.inference", body: true},
		{method: http.MethodPost, path: "/embeddings", name: "embeddings", action: "embeddings.create", eventType: "ai.embedding", body: true},
		{method: http.MethodGet, path: "/models", name: "list_models", action: "models.list", eventType: "api.call"},
		{method: http.MethodGet, path: "/models/", name: "retrieve_model", action: "models.retrieve", eventType: "api.call"},
	},
	setKey:     func(h http.Header, key string) { h.Set("Authorization", "Bearer "+key) },
	apiVersion: func(http.Header) string { return "v1" },
	newStream: func(op *operation) assembler {
		if op.action == "responses.create" {
			return &responsesStream{}
		}
		return &chatStream{}
	},
}

// chatStream assembles a streamed chat completion from its chunks into the
// chat.completion object the same call would have answered unstreamed.
type chatStream struct {
	a       answer
	created float64
	// fingerprint and tier are system_fingerprint and service_tier, and
	// usageJSON the usage object as the provider sent it.
	fingerprint, tier string
	usageJSON         json.RawMessage
	choices           []*chatChoice
	done              bool            // [DONE] came
	err               json.RawMessage // an error object sent in the stream
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      chatMessage   `json:"message"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
	content      strings.Builder
	refusal      strings.Builder
}

type chatMessage struct {
	Role      string          `json:"role"`
	Content   *string         `json:"content"`
	Refusal   *string         `json:"refusal,omitempty"`
	ToolCalls []*chatToolCall `json:"tool_calls,omitempty"`
}

// chatLogprobs are a choice's log probabilities, each chunk's appended.
type chatLogprobs struct {
	Content []json.RawMessage `json:"content"`
	Refusal []json.RawMessage `json:"refusal"`
}

type chatToolCall struct {
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function chatFunction `json:"function"`
	index    int          // which of the choice's calls, as the deltas number them
}

type chatFunction struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// chatToolCallDelta is a piece of a streamed tool call. Parallel calls are
// streamed interleaved, told apart by index.
type chatToolCallDelta struct {
	Index    int          `json:"index"`
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function chatFunction `json:"function"`
}

func (s *chatStream) event(_ string, data []byte) {
	if string(data) == "[DONE]" {
		s.done = true
		return
	}
	var c struct {
		ID          string  `json:"id"`
		Model       string  `json:"model"`
		Created     float64 `json:"created"`
		Fingerprint string  `json:"system_fingerprint"`
		Tier        string  `json:"service_tier"`
		Choices     []struct {
			Index int `json:"index"`
			Delta struct {
				Role      string              `json:"role"`
				Content   string              `json:"content"`
				Refusal   string              `json:"refusal"`
				ToolCalls []chatToolCallDelta `json:"tool_calls"`
			} `json:"delta"`
			Logprobs     *chatLogprobs `json:"logprobs"`
			FinishReason string        `json:"finish_reason"`
		} `json:"choices"`
		Usage json.RawMessage `json:"usage"`
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(data, &c) != nil { // not a chunk
		return
	}
	if isSet(c.Error) {
		s.err = c.Error
	}
	s.a.id, s.a.model = firstNonEmpty(s.a.id, c.ID), firstNonEmpty(s.a.model, c.Model)
	s.fingerprint, s.tier = firstNonEmpty(c.Fingerprint, s.fingerprint), firstNonEmpty(c.Tier, s.tier)
	s.created = max(s.created, c.Created)
	if isSet(c.Usage) {
		var u usage
		if json.Unmarshal(c.Usage, &u) == nil {
			s.a.usage.merge(u)
			s.usageJSON = c.Usage
		}
	}
	for _, d := range c.Choices {
		ch := s.choice(d.Index)
		ch.Message.Role = firstNonEmpty(ch.Message.Role, d.Delta.Role)
		ch.content.WriteString(d.Delta.Content)
		ch.refusal.WriteString(d.Delta.Refusal)
		if d.FinishReason != "" {
			ch.FinishReason = &d.FinishReason
		}
		if lp := d.Logprobs; lp != nil {
			if ch.Logprobs == nil {
				ch.Logprobs = &chatLogprobs{}
			}
			ch.Logprobs.Content = append(ch.Logprobs.Content, lp.Content...)
			ch.Logprobs.Refusal = append(ch.Logprobs.Refusal, lp.Refusal...)
		}
		for _, tc := range d.Delta.ToolCalls {
			i := slices.IndexFunc(ch.Message.ToolCalls, func(t *chatToolCall) bool { return t.index == tc.Index })
			if i < 0 {
				ch.Message.ToolCalls = append(ch.Message.ToolCalls, &chatToolCall{index: tc.Index})
				i = len(ch.Message.ToolCalls) - 1
			}
			t := ch.Message.ToolCalls[i]
			t.ID, t.Type = firstNonEmpty(t.ID, tc.ID), firstNonEmpty(t.Type, tc.Type)
			t.Function.Name += tc.Function.Name
			t.Function.Arguments += tc.Function.Arguments
		}
	}
}

func (s *chatStream) choice(i int) *chatChoice {
	for _, c := range s.choices {
		if c.Index == i {
			return c
		}
	}
	c := &chatChoice{Index: i}
	s.choices = append(s.choices, c)
	return c
}

func (s *chatStream) result() (answer, json.RawMessage) {
	slices.SortFunc(s.choices, func(a, b *chatChoice) int { return a.Index - b.Index })
	a := s.a
	a.finishReasons = nil
	for _, c := range s.choices {
		slices.SortStableFunc(c.Message.ToolCalls, func(a, b *chatToolCall) int { return a.index - b.index })
		content, refusal := c.content.String(), c.refusal.String()
		// As unstreamed: null content for a message of only tool calls or
		// a refusal.
		c.Message.Content = &content
		if content == "" && (len(c.Message.ToolCalls) > 0 || refusal != "") {
			c.Message.Content = nil
		}
		if refusal != "" {
			c.Message.Refusal = &refusal
		}
		if c.FinishReason != nil {
			a.finishReasons = append(a.finishReasons, *c.FinishReason)
		}
	}
	out := map[string]any{"id": s.a.id, "object": "chat.completion", "model": s.a.model, "choices": s.choices}
	if s.created != 0 {
		out["created"] = s.created
	}
	if s.fingerprint != "" {
		out["system_fingerprint"] = s.fingerprint
	}
	if s.tier != "" {
		out["service_tier"] = s.tier
	}
	if s.usageJSON != nil {
		out["usage"] = s.usageJSON
	}
	if s.err != nil {
		out["error"] = s.err
	}
	return a, mustJSON(out)
}

// failure: an error object in the stream, or an end before [DONE] with a
// choice unfinished.
func (s *chatStream) failure() string {
	if s.err != nil {
		return errorType(s.err, "type", "code")
	}
	finished := len(s.choices) > 0 && !slices.ContainsFunc(s.choices, func(c *chatChoice) bool { return c.FinishReason == nil })
	if !s.done && !finished {
		return errIncompleteStream
	}
	return ""
}

// responsesStream assembles a streamed Responses API answer: the final
// response object its closing event carries, or, if the stream ended
// before one, the text streamed so far.
type responsesStream struct {
	a      answer
	final  json.RawMessage
	status string          // the final response's
	err    json.RawMessage // the final response's error, or an error event
	text   strings.Builder
}

func (s *responsesStream) event(_ string, data []byte) {
	var e struct {
		Type     string          `json:"type"`
		Response json.RawMessage `json:"response"`
		Delta    string          `json:"delta"`
	}
	if json.Unmarshal(data, &e) != nil {
		return
	}
	switch e.Type {
	case "response.output_text.delta":
		s.text.WriteString(e.Delta)
	case "response.created", "response.in_progress":
		if a := parseAnswer(e.Response); a.id != "" {
			s.a.id, s.a.model = a.id, a.model
		}
	case "response.completed", "response.failed", "response.incomplete":
		s.final = e.Response
		s.a = parseAnswer(e.Response)
		var r struct {
			Status string          `json:"status"`
			Error  json.RawMessage `json:"error"`
		}
		json.Unmarshal(e.Response, &r)
		s.status = r.Status
		if isSet(r.Error) {
			s.err = r.Error
		}
	case "error":
		s.err = data
	}
}

func (s *responsesStream) result() (answer, json.RawMessage) {
	if s.final != nil {
		return s.a, s.final
	}
	out := map[string]any{"id": s.a.id, "object": "response", "model": s.a.model,
		"status": "incomplete", "output_text": s.text.String()}
	if s.err != nil {
		out["error"] = s.err
	}
	return s.a, mustJSON(out)
}

// failure: a failed response or an error event, or an end before the
// final response. An incomplete response (max_output_tokens reached, say)
// is complete as a call, like a chat completion cut by its length.
func (s *responsesStream) failure() string {
	switch {
	case s.err != nil:
		return errorType(s.err, "code", "type")
	case s.status == "failed":
		return "failed"
	case s.final == nil:
		return errIncompleteStream
	}
	return ""
}

// mustJSON encodes values that always encode (maps, slices, strings and
// numbers).
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("proxy: couldn't encode an assembled answer: " + err.Error())
	}
	return b
}
