// Package fakeopenai is a stand-in for the OpenAI API in tests: it speaks
// the chat completions (whole and streamed as server-sent events) and
// embeddings wire formats with fixed answers, so that recording can be
// tested with the official client and no network.
package fakeopenai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Fixed parts of the answers, for tests to compare with.
const (
	// ResponseModel is the model every answer names.
	ResponseModel = "gpt-4o-2024-08-06"
	// Completion is the assistant's answer, whole or streamed.
	Completion = "Hello! How can I help?"
	// MissingModel is a model name answered with 404 model_not_found.
	MissingModel = "no-such-model"
	// InputTokens and OutputTokens are the usage every chat answer reports.
	InputTokens, OutputTokens = 12, 7
)

// StreamChunks is how Completion is split into streamed deltas.
var StreamChunks = []string{"Hello", "! How can", " I help?"}

// Server answers OpenAI API requests under /v1/.
type Server struct {
	// AfterFirstChunk, if set, is waited on after the first content chunk
	// of a stream has been flushed, so a test can check that the client
	// sees it before the stream ends.
	AfterFirstChunk chan struct{}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "bad request")
		return
	}
	if req.Model == MissingModel {
		writeError(w, http.StatusNotFound, "model_not_found", "The model `"+MissingModel+"` does not exist")
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/chat/completions") && req.Stream:
		s.stream(w, req.StreamOptions.IncludeUsage)
	case strings.HasSuffix(r.URL.Path, "/chat/completions"):
		writeJSON(w, fmt.Sprintf(`{"id":"chatcmpl-fake1","object":"chat.completion","created":1764201600,"model":%q,`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":%q,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},`+
			`"service_tier":"default","system_fingerprint":"fp_fake"}`,
			ResponseModel, Completion, InputTokens, OutputTokens, InputTokens+OutputTokens))
	case strings.HasSuffix(r.URL.Path, "/embeddings"):
		writeJSON(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,0.015797347]}],`+
			`"model":"text-embedding-3-small","usage":{"prompt_tokens":3,"total_tokens":3}}`)
	default:
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	}
}

// stream answers a streamed chat completion the way the API does: one
// "data:" event per chunk, a final chunk with the finish reason, a usage
// chunk when asked for, then "data: [DONE]".
func (s *Server) stream(w http.ResponseWriter, includeUsage bool) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	head := fmt.Sprintf(`{"id":"chatcmpl-fake2","object":"chat.completion.chunk","created":1764201600,"model":%q,"service_tier":"default","system_fingerprint":"fp_fake",`, ResponseModel)
	// With include_usage every chunk has "usage":null and the usage comes
	// in a last chunk of its own.
	usage := "null"
	send := func(choices string, usageJSON string) {
		u := ""
		if includeUsage {
			u = `,"usage":` + usageJSON
		}
		fmt.Fprintf(w, "data: %s\"choices\":%s%s}\n\n", head, choices, u)
		w.(http.Flusher).Flush()
	}
	send(`[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`, usage)
	for i, c := range StreamChunks {
		send(fmt.Sprintf(`[{"index":0,"delta":{"content":%q},"logprobs":null,"finish_reason":null}]`, c), usage)
		if i == 0 && s.AfterFirstChunk != nil {
			<-s.AfterFirstChunk
		}
	}
	send(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, usage)
	if includeUsage {
		send(`[]`, fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, InputTokens, OutputTokens, InputTokens+OutputTokens))
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func writeJSON(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintln(w, body)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error","param":null,"code":%q}}`+"\n", message, code)
}
