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
	choices []*chatChoice
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      chatMessage `json:"message"`
	FinishReason *string     `json:"finish_reason"`
	content      strings.Builder
	refusal      strings.Builder
}

type chatMessage struct {
	Role      string          `json:"role"`
	Content   *string         `json:"content"`
	Refusal   *string         `json:"refusal,omitempty"`
	ToolCalls []*chatToolCall `json:"tool_calls,omitempty"`
}

type chatToolCall struct {
	Index    int    `json:"-"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

func (s *chatStream) event(_ string, data []byte) {
	var c struct {
		ID      string  `json:"id"`
		Model   string  `json:"model"`
		Created float64 `json:"created"`
		Choices []struct {
			Index int `json:"index"`
			Delta struct {
				Role      string         `json:"role"`
				Content   string         `json:"content"`
				Refusal   string         `json:"refusal"`
				ToolCalls []chatToolCall `json:"tool_calls"`
			} `json:"delta"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usage `json:"usage"`
	}
	if json.Unmarshal(data, &c) != nil { // [DONE], or not a chunk
		return
	}
	s.a.id, s.a.model = firstNonEmpty(s.a.id, c.ID), firstNonEmpty(s.a.model, c.Model)
	s.created = max(s.created, c.Created)
	if c.Usage != nil {
		s.a.usage.merge(*c.Usage)
	}
	for _, d := range c.Choices {
		ch := s.choice(d.Index)
		ch.Message.Role = firstNonEmpty(ch.Message.Role, d.Delta.Role)
		ch.content.WriteString(d.Delta.Content)
		ch.refusal.WriteString(d.Delta.Refusal)
		if d.FinishReason != "" {
			ch.FinishReason = &d.FinishReason
		}
		for _, tc := range d.Delta.ToolCalls {
			i := slices.IndexFunc(ch.Message.ToolCalls, func(t *chatToolCall) bool { return t.Index == tc.Index })
			if i < 0 {
				ch.Message.ToolCalls = append(ch.Message.ToolCalls, &chatToolCall{Index: tc.Index})
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
		content, refusal := c.content.String(), c.refusal.String()
		c.Message.Content = &content
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
	if u := s.a.usage; u != (usage{}) {
		out["usage"] = u
	}
	return a, mustJSON(out)
}

// responsesStream assembles a streamed Responses API answer: the final
// response object its closing event carries, or, if the stream ended
// before one, the text streamed so far.
type responsesStream struct {
	a     answer
	final json.RawMessage
	text  strings.Builder
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
	}
}

func (s *responsesStream) result() (answer, json.RawMessage) {
	if s.final != nil {
		return s.a, s.final
	}
	return s.a, mustJSON(map[string]any{"id": s.a.id, "object": "response", "model": s.a.model,
		"status": "incomplete", "output_text": s.text.String()})
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
