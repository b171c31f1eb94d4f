package openairecord

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/aitrail/aitrail/internal/sse"
)

// maxStreamIndex bounds the choice and tool call indexes assembled, so a
// malformed stream cannot make the middleware allocate without bound.
const maxStreamIndex = 128

// streamState assembles a streamed response from its server-sent events as
// the application reads them, into the shape of the response that would
// have come whole.
type streamState struct {
	parser sse.Parser
	legacy bool // a legacy completion: its choices hold text
	done   bool // "data: [DONE]" was seen
	ended  bool // the body was read to its end

	id, model string
	usage     json.RawMessage
	choices   []*choice
	final     json.RawMessage // the Responses API's response.completed
	// errType is the error type of an error the provider sent in the
	// stream, after its 200.
	errType string
}

type choice struct {
	Index        int
	Role         string
	Content      strings.Builder
	Refusal      strings.Builder
	ToolCalls    []*toolCall
	FinishReason string
}

type toolCall struct {
	ID        string
	Type      string
	Name      string
	Arguments strings.Builder
}

// write takes in bytes of the stream.
func (s *streamState) write(p []byte) {
	if s.parser.Emit == nil {
		s.parser.Emit = func(_ string, data []byte) { s.dispatch(data) }
	}
	s.parser.Write(p)
}

// chunk is one streamed event: a chat completion chunk, or an event of the
// Responses API.
type chunk struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role      string `json:"role"`
			Content   string `json:"content"`
			Refusal   string `json:"refusal"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		Text         string  `json:"text"` // legacy completions
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage    json.RawMessage `json:"usage"`
	Type     string          `json:"type"`
	Response json.RawMessage `json:"response"`
	Code     string          `json:"code"`  // of an error event
	Error    *streamError    `json:"error"` // sent in a chat stream
}

// streamError is an error object a provider sends in a stream.
type streamError struct {
	Type string `json:"type"`
	Code any    `json:"code"`
}

// kind is the error's error.type: the provider's type or code, else
// provider_error.
func (e *streamError) kind() string {
	if e.Type != "" {
		return e.Type
	}
	if c, ok := e.Code.(string); ok && c != "" {
		return c
	}
	return "provider_error"
}

func (s *streamState) dispatch(data []byte) {
	if bytes.Equal(data, []byte("[DONE]")) {
		s.done = true
		return
	}
	var c chunk
	if json.Unmarshal(data, &c) != nil {
		return
	}
	switch {
	case c.Type == "response.completed" || c.Type == "response.incomplete" || c.Type == "response.failed":
		s.final = c.Response
		s.done = true
		if c.Type == "response.failed" && s.errType == "" {
			var r struct {
				Error *streamError `json:"error"`
			}
			json.Unmarshal(c.Response, &r)
			s.errType = "failed"
			if r.Error != nil {
				s.errType = r.Error.kind()
			}
		}
		return
	case c.Type == "error":
		s.errType = (&streamError{Code: c.Code}).kind()
		return
	case c.Error != nil && s.errType == "":
		s.errType = c.Error.kind()
	}
	if c.ID != "" {
		s.id = c.ID
	}
	if c.Model != "" {
		s.model = c.Model
	}
	if len(c.Usage) > 0 && !bytes.Equal(c.Usage, []byte("null")) {
		s.usage = c.Usage
	}
	for _, d := range c.Choices {
		if d.Index < 0 || d.Index >= maxStreamIndex {
			continue
		}
		for len(s.choices) <= d.Index {
			s.choices = append(s.choices, &choice{Index: len(s.choices)})
		}
		ch := s.choices[d.Index]
		if d.Delta.Role != "" {
			ch.Role = d.Delta.Role
		}
		ch.Content.WriteString(d.Delta.Content)
		ch.Content.WriteString(d.Text)
		ch.Refusal.WriteString(d.Delta.Refusal)
		for _, tc := range d.Delta.ToolCalls {
			if tc.Index < 0 || tc.Index >= maxStreamIndex {
				continue
			}
			for len(ch.ToolCalls) <= tc.Index {
				ch.ToolCalls = append(ch.ToolCalls, &toolCall{})
			}
			t := ch.ToolCalls[tc.Index]
			if tc.ID != "" {
				t.ID = tc.ID
			}
			if tc.Type != "" {
				t.Type = tc.Type
			}
			if tc.Function.Name != "" {
				t.Name = tc.Function.Name
			}
			t.Arguments.WriteString(tc.Function.Arguments)
		}
		if d.FinishReason != nil {
			ch.FinishReason = *d.FinishReason
		}
	}
}

// failure returns the error.type of a stream that did not complete: the
// provider's for an error it sent in the stream, stream_incomplete for one
// closed before its end (data: [DONE], the final response, or a body read
// to its end with every choice finished); "" for a complete stream.
func (s *streamState) failure() string {
	finished := len(s.choices) > 0
	for _, c := range s.choices {
		finished = finished && c.FinishReason != ""
	}
	switch {
	case s.errType != "":
		return s.errType
	case !s.done && !(s.ended && finished):
		return "stream_incomplete"
	}
	return ""
}

// assemble returns the response the stream amounted to, as JSON in the
// shape of a whole (not streamed) response.
func (s *streamState) assemble() json.RawMessage {
	if s.final != nil {
		return s.final
	}
	type fn struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	type tc struct {
		ID       string `json:"id,omitempty"`
		Type     string `json:"type,omitempty"`
		Function fn     `json:"function"`
	}
	type message struct {
		Role      string `json:"role,omitempty"`
		Content   string `json:"content"`
		Refusal   string `json:"refusal,omitempty"`
		ToolCalls []tc   `json:"tool_calls,omitempty"`
	}
	type outChoice struct {
		Index        int     `json:"index"`
		Message      message `json:"message"`
		FinishReason string  `json:"finish_reason,omitempty"`
	}
	type textChoice struct {
		Index        int    `json:"index"`
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason,omitempty"`
	}
	out := struct {
		ID      string          `json:"id,omitempty"`
		Model   string          `json:"model,omitempty"`
		Choices []any           `json:"choices"`
		Usage   json.RawMessage `json:"usage,omitempty"`
	}{ID: s.id, Model: s.model, Choices: []any{}, Usage: s.usage}
	for _, ch := range s.choices {
		if s.legacy {
			out.Choices = append(out.Choices, textChoice{Index: ch.Index, Text: ch.Content.String(), FinishReason: ch.FinishReason})
			continue
		}
		m := message{Role: ch.Role, Content: ch.Content.String(), Refusal: ch.Refusal.String()}
		for _, t := range ch.ToolCalls {
			m.ToolCalls = append(m.ToolCalls, tc{ID: t.ID, Type: t.Type, Function: fn{Name: t.Name, Arguments: t.Arguments.String()}})
		}
		out.Choices = append(out.Choices, outChoice{Index: ch.Index, Message: m, FinishReason: ch.FinishReason})
	}
	b, _ := json.Marshal(out)
	return b
}
