// Package fakeprovider is a fake model provider for tests and benchmarks of
// everything that records model calls (the recording proxies, the SDK's
// OpenAI middleware): an HTTP server on the loopback interface that speaks
// the wire formats of OpenAI's chat completions, Responses, embeddings and
// models APIs and of Anthropic's Messages API, in JSON and as server-sent
// events, and remembers what it was sent. It stands in for the providers,
// which cannot be reached from tests.
//
// The requested model chooses the behaviour: ModelFail400 and ModelFail500
// answer with the provider's error body, ModelHang sends nothing until the
// caller gives up, ModelHangMidStream sends the first event of a stream and
// then nothing, ModelFailMidStream streams the first piece of Reply and
// then the provider's error as that API sends one in a stream, and
// ModelEndMidStream streams the first piece and ends there; any other model
// answers Reply. A request carrying
// HeaderDelay is answered that long after it arrives, as a model takes time
// to think.
package fakeprovider

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// Behaviours chosen by the requested model, and the answer text.
const (
	ModelFail400       = "fail-400"
	ModelFail500       = "fail-500"
	ModelHang          = "hang"
	ModelHangMidStream = "hang-mid-stream"
	ModelFailMidStream = "fail-mid-stream"
	ModelEndMidStream  = "end-mid-stream"
	// StreamErrorType is the error type ModelFailMidStream's error names:
	// OpenAI's type (chat) or code (Responses), Anthropic's type.
	StreamErrorType = "overloaded_error"
	// Reply is the text every successful answer carries, in the pieces
	// ReplyPieces when streamed.
	Reply = "Hello from upstream"
	// RequestID is the provider request id on every answer.
	RequestID = "req_fake_123"
	// ChatID is the id of every chat completion, whole or streamed.
	ChatID = "chatcmpl-fake"
	// InputTokens and OutputTokens are the usage every chat, Responses and
	// Messages answer reports.
	InputTokens, OutputTokens = 7, 4
	// HeaderDelay holds how long to wait before answering, as a Go
	// duration ("20ms"). The recording proxies pass it on like any header
	// not their own.
	HeaderDelay = "X-Fake-Delay"
)

// ResponseModel is the model an answer names when requested was asked for.
func ResponseModel(requested string) string { return requested + "-2025-01-01" }

// ReplyPieces is Reply as it is streamed.
var ReplyPieces = []string{"Hello", " from", " upstream"}

// Request is a request the fake received.
type Request struct {
	Method, Path string
	EscapedPath  string // Path as sent
	Header       http.Header
	Body         []byte
}

// Upstream is a running fake provider. Its URL serves OpenAI's API under
// /v1 and Anthropic's /v1/messages.
type Upstream struct {
	*httptest.Server
	pause    <-chan struct{}
	mu       sync.Mutex
	requests []Request
	record   bool
	answers  sync.Map // answerKey → *rendered
}

// answerKey is what an answer depends on.
type answerKey struct {
	method, path, model string
	includeUsage        bool
}

// rendered is an answer encoded once: whole as a JSON body, and as the
// events of a stream. A provider runs elsewhere; rendering each answer anew
// would make the fake compete for the CPU with what is measured against it.
type rendered struct {
	whole  []byte
	events []sse
}

// New starts a fake provider that remembers every request; Close stops it.
func New() *Upstream { return start(true, nil) }

// NewQuiet starts a fake provider that remembers nothing, for benchmarks.
func NewQuiet() *Upstream { return start(false, nil) }

// NewPaused is New with every stream held after its first piece of Reply
// until pause is closed (or the caller gives up), so that a test can check
// that the piece reached the client before the stream ended.
func NewPaused(pause <-chan struct{}) *Upstream { return start(true, pause) }

func start(record bool, pause <-chan struct{}) *Upstream {
	u := &Upstream{record: record, pause: pause}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	return u
}

// Requests returns the requests received so far.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Request(nil), u.requests...)
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if u.record {
		u.mu.Lock()
		u.requests = append(u.requests, Request{Method: r.Method, Path: r.URL.Path, EscapedPath: r.URL.EscapedPath(), Header: r.Header.Clone(), Body: body})
		u.mu.Unlock()
	}
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	json.Unmarshal(body, &req)
	w.Header().Set("X-Request-Id", RequestID)
	w.Header().Set("Request-Id", RequestID)
	anthropic := r.URL.Path == "/v1/messages"
	switch req.Model {
	case ModelFail400, ModelFail500:
		status := http.StatusBadRequest
		if req.Model == ModelFail500 {
			status = http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if anthropic {
			fmt.Fprintf(w, `{"type":"error","error":{"type":"invalid_request_error","message":"fake failure %d"}}`, status)
		} else {
			fmt.Fprintf(w, `{"error":{"message":"fake failure %d","type":"invalid_request_error","param":null,"code":"fake"}}`, status)
		}
		return
	case ModelHang:
		<-r.Context().Done()
		return
	}
	if d, err := time.ParseDuration(r.Header.Get(HeaderDelay)); err == nil && d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	key := answerKey{r.Method, r.URL.Path, ResponseModel(req.Model), req.StreamOptions.IncludeUsage}
	a, ok := u.answers.Load(key)
	if !ok {
		if a, ok = render(key, anthropic); !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"message":"no such path","type":"invalid_request_error"}}`)
			return
		}
		a, _ = u.answers.LoadOrStore(key, a)
	}
	events := a.(*rendered).events
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		w.Write(a.(*rendered).whole)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher := http.NewResponseController(w)
	paused := false
	for i, e := range events {
		if e.name != "" {
			fmt.Fprintf(w, "event: %s\n", e.name)
		}
		fmt.Fprintf(w, "data: %s\n\n", e.data)
		flusher.Flush()
		if i == 0 && req.Model == ModelHangMidStream {
			<-r.Context().Done()
			return
		}
		if e.piece && (req.Model == ModelFailMidStream || req.Model == ModelEndMidStream) {
			if req.Model == ModelFailMidStream {
				fmt.Fprint(w, streamError(r.URL.Path))
			}
			return
		}
		if e.piece && !paused && u.pause != nil {
			paused = true
			select {
			case <-u.pause:
			case <-r.Context().Done():
				return
			}
		}
	}
}

// streamError is the error event a provider sends in a stream it cannot
// finish, after its 200, on the API of path.
func streamError(path string) string {
	switch path {
	case "/v1/responses":
		return "event: response.failed\ndata: " + js(map[string]any{"type": "response.failed", "response": map[string]any{
			"id": "resp_fake", "object": "response", "status": "failed",
			"error": map[string]any{"code": StreamErrorType, "message": "fake failure mid-stream"}}}) + "\n\n"
	case "/v1/messages":
		return "event: error\ndata: " + js(map[string]any{"type": "error",
			"error": map[string]any{"type": StreamErrorType, "message": "fake failure mid-stream"}}) + "\n\n"
	}
	return "data: " + js(map[string]any{"error": map[string]any{"message": "fake failure mid-stream",
		"type": StreamErrorType, "param": nil, "code": nil}}) + "\n\n"
}

// render encodes the answer to a call, or reports that the path is not
// one the fake answers.
func render(key answerKey, anthropic bool) (*rendered, bool) {
	var whole any
	var events []sse
	switch {
	case key.method == http.MethodGet && key.path == "/v1/models":
		whole = map[string]any{"object": "list", "data": []any{
			map[string]any{"id": "gpt-fake", "object": "model", "created": 1700000000, "owned_by": "fake"}}}
	case key.path == "/v1/chat/completions":
		whole, events = chat(key.model, key.includeUsage)
	case key.path == "/v1/responses":
		whole, events = responses(key.model)
	case key.path == "/v1/embeddings":
		whole = map[string]any{"object": "list", "model": key.model,
			"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.25, -0.5}}},
			"usage": map[string]any{"prompt_tokens": 3, "total_tokens": 3}}
	case anthropic:
		whole, events = messages(key.model)
	default:
		return nil, false
	}
	return &rendered{whole: []byte(js(whole) + "\n"), events: events}, true
}

type sse struct {
	name  string
	data  string
	piece bool // carries a piece of Reply
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func chat(model string, includeUsage bool) (any, []sse) {
	const id = ChatID
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	usage := map[string]any{"prompt_tokens": InputTokens, "completion_tokens": OutputTokens, "total_tokens": InputTokens + OutputTokens}
	whole := map[string]any{"id": id, "object": "chat.completion", "created": created, "model": model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "logprobs": nil,
			"message": map[string]any{"role": "assistant", "content": Reply, "refusal": nil}}},
		"usage": usage}
	chunk := func(delta map[string]any, finish any) sse {
		return sse{data: js(map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": nil}}})}
	}
	events := []sse{chunk(map[string]any{"role": "assistant", "content": ""}, nil)}
	for _, p := range ReplyPieces {
		e := chunk(map[string]any{"content": p}, nil)
		e.piece = true
		events = append(events, e)
	}
	events = append(events, chunk(map[string]any{}, "stop"))
	if includeUsage {
		events = append(events, sse{data: js(map[string]any{"id": id, "object": "chat.completion.chunk", "created": created,
			"model": model, "choices": []any{}, "usage": usage})})
	}
	return whole, append(events, sse{data: "[DONE]"})
}

func responses(model string) (any, []sse) {
	response := func(status string, output []any, usage any) map[string]any {
		return map[string]any{"id": "resp_fake", "object": "response", "created_at": 1735689600, "status": status,
			"model": model, "output": output, "usage": usage, "error": nil, "incomplete_details": nil}
	}
	message := []any{map[string]any{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
		"content": []any{map[string]any{"type": "output_text", "text": Reply, "annotations": []any{}}}}}
	usage := map[string]any{"input_tokens": InputTokens, "output_tokens": OutputTokens, "total_tokens": InputTokens + OutputTokens,
		"input_tokens_details": map[string]any{"cached_tokens": 0}, "output_tokens_details": map[string]any{"reasoning_tokens": 0}}
	whole := response("completed", message, usage)
	seq := 0
	ev := func(typ string, fields map[string]any) sse {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		return sse{name: typ, data: js(fields)}
	}
	events := []sse{ev("response.created", map[string]any{"response": response("in_progress", []any{}, nil)})}
	for _, p := range ReplyPieces {
		e := ev("response.output_text.delta", map[string]any{"item_id": "msg_fake", "output_index": 0,
			"content_index": 0, "delta": p})
		e.piece = true
		events = append(events, e)
	}
	events = append(events, ev("response.completed", map[string]any{"response": whole}))
	return whole, events
}

func messages(model string) (any, []sse) {
	whole := map[string]any{"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
		"content":     []any{map[string]any{"type": "text", "text": Reply}},
		"stop_reason": "end_turn", "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": InputTokens, "output_tokens": OutputTokens}}
	ev := func(typ string, fields map[string]any) sse {
		fields["type"] = typ
		return sse{name: typ, data: js(fields)}
	}
	events := []sse{
		ev("message_start", map[string]any{"message": map[string]any{"id": "msg_fake", "type": "message", "role": "assistant",
			"model": model, "content": []any{}, "stop_reason": nil, "stop_sequence": nil,
			"usage": map[string]any{"input_tokens": InputTokens, "output_tokens": 1}}}),
		ev("content_block_start", map[string]any{"index": 0, "content_block": map[string]any{"type": "text", "text": ""}}),
		ev("ping", map[string]any{}),
	}
	for _, p := range ReplyPieces {
		e := ev("content_block_delta", map[string]any{"index": 0,
			"delta": map[string]any{"type": "text_delta", "text": p}})
		e.piece = true
		events = append(events, e)
	}
	return whole, append(events,
		ev("content_block_stop", map[string]any{"index": 0}),
		ev("message_delta", map[string]any{"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
			"usage": map[string]any{"output_tokens": OutputTokens}}),
		ev("message_stop", map[string]any{}),
	)
}
