package proxy

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

var anthropic = &provider{
	name:  "anthropic",
	title: "Anthropic",
	mount: "/anthropic",
	ops: []operation{
		{method: http.MethodPost, path: "/v1/messages", name: "chat", action: "messages.create", eventType: "ai.inference", body: true},
	},
	// The caller's anthropic-version and anthropic-beta headers go
	// upstream as they are.
	setKey:     func(h http.Header, key string) { h.Set("X-Api-Key", key) },
	apiVersion: func(h http.Header) string { return clip(h.Get("Anthropic-Version"), 64) },
	newStream:  func(*operation) assembler { return &messageStream{} },
}

// messageStream assembles a streamed Anthropic message (message_start,
// content_block_start/delta/stop, message_delta, message_stop) into the
// message object the same call would have answered unstreamed.
type messageStream struct {
	a       answer
	message map[string]any
	blocks  []*messageBlock
	stop    map[string]any // stop_reason and stop_sequence
	stopped bool           // message_stop came
	err     json.RawMessage
}

type messageBlock struct {
	index int
	block map[string]any
	text  map[string]*strings.Builder // text, thinking, signature, partial_json
}

func (s *messageStream) event(name string, data []byte) {
	var e struct {
		Type         string          `json:"type"`
		Index        int             `json:"index"`
		Message      json.RawMessage `json:"message"`
		ContentBlock map[string]any  `json:"content_block"`
		Delta        map[string]any  `json:"delta"`
		Usage        *usage          `json:"usage"`
		Error        json.RawMessage `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil {
		return
	}
	switch e.Type {
	case "message_start":
		s.a = parseAnswer(e.Message)
		json.Unmarshal(e.Message, &s.message)
	case "content_block_start":
		s.blocks = append(s.blocks, &messageBlock{index: e.Index, block: e.ContentBlock, text: map[string]*strings.Builder{}})
	case "content_block_delta":
		b := s.block(e.Index)
		if b == nil {
			return
		}
		for _, k := range []string{"text", "thinking", "signature", "partial_json"} {
			if v, ok := e.Delta[k].(string); ok {
				if b.text[k] == nil {
					b.text[k] = &strings.Builder{}
				}
				b.text[k].WriteString(v)
			}
		}
	case "message_delta":
		s.stop = e.Delta
		if r, ok := e.Delta["stop_reason"].(string); ok {
			s.a.finishReasons = []string{r}
		}
		if e.Usage != nil {
			s.a.usage.merge(*e.Usage)
		}
	case "message_stop":
		s.stopped = true
	case "error":
		s.err = e.Error
	}
}

func (s *messageStream) block(i int) *messageBlock {
	for _, b := range s.blocks {
		if b.index == i {
			return b
		}
	}
	return nil
}

func (s *messageStream) result() (answer, json.RawMessage) {
	m := s.message
	if m == nil {
		m = map[string]any{"type": "message"}
	}
	slices.SortFunc(s.blocks, func(a, b *messageBlock) int { return a.index - b.index })
	content := make([]map[string]any, 0, len(s.blocks))
	for _, b := range s.blocks {
		out := b.block
		if out == nil {
			out = map[string]any{}
		}
		for k, t := range b.text {
			if k != "partial_json" {
				prev, _ := out[k].(string)
				out[k] = prev + t.String()
				continue
			}
			// A tool's input arrives as pieces of JSON text.
			var input any
			if json.Unmarshal([]byte(t.String()), &input) == nil {
				out["input"] = input
			} else {
				out["partial_input"] = t.String()
			}
		}
		content = append(content, out)
	}
	m["content"] = content
	for k, v := range s.stop {
		m[k] = v
	}
	if u := s.a.usage; u != (usage{}) {
		m["usage"] = u
	}
	if s.err != nil {
		m["error"] = s.err
	}
	return s.a, mustJSON(m)
}

// failure: an error event (overloaded_error, say, sent after the 200), or
// an end before message_stop with no stop reason known.
func (s *messageStream) failure() string {
	if isSet(s.err) {
		return errorType(s.err, "type")
	}
	if r, _ := s.stop["stop_reason"].(string); !s.stopped && r == "" {
		return errIncompleteStream
	}
	return ""
}
