// Package openairecord records the calls an application makes with the
// official OpenAI Go client (github.com/openai/openai-go/v3) in aitrail, for
// applications that call the provider directly rather than through aitrail's
// recording proxy:
//
//	rec := client.NewRecorder(client.New(aitrailURL, token), client.RecorderOptions{})
//	defer rec.Close(context.Background())
//	oai := openai.NewClient(option.WithMiddleware(openairecord.Middleware(rec, openairecord.Options{Tenant: "acme"})))
//
// Each chat completion, completion, response or embedding request becomes
// one event ("ai.inference", or "ai.embedding" for embeddings) carrying the
// model, the OpenTelemetry GenAI attributes, the outcome and latency, and
// the prompt and completion as content, which the server encrypts at rest.
// Streamed responses reach the application unchanged, as they arrive; the
// event is recorded when the application has read the stream to its end or
// closed it. Other requests (files, models, …) pass through unrecorded.
//
// The package lives apart from package client so that client does not
// depend on the OpenAI library.
package openairecord

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/openai/openai-go/v3/option"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/client/internal/text"
)

// DefaultMaxResponseBytes bounds how much of a response that is not
// streamed is kept to be parsed and recorded.
const DefaultMaxResponseBytes = 16 << 20

// Options configure Middleware.
type Options struct {
	// Tenant is the tenant of the events; empty means the server's default.
	Tenant string
	// Actor, if set, says on whose behalf a call is made. Without it the
	// actor is the one stored in the request's context by WithActor, else
	// the request's "user" field as a user id.
	Actor func(*http.Request) client.Actor
	// OmitContent leaves the prompt and the completion out of the events.
	OmitContent bool
	// MaxResponseBytes bounds the part of a response that is not streamed
	// kept for recording; a larger response is passed on whole but
	// recorded without its body's details. Zero means
	// DefaultMaxResponseBytes.
	MaxResponseBytes int
	// MaxContentBytes is the largest content an event carries, as the
	// server's limits.max_content_bytes allows; a call whose request and
	// response together are larger is recorded without content, marked
	// "aitrail.content_omitted". Zero means DefaultMaxContentBytes.
	MaxContentBytes int
}

// DefaultMaxContentBytes is the server's default limits.max_content_bytes.
const DefaultMaxContentBytes = 16 << 20

type actorKey struct{}

// WithActor returns a context that makes Middleware record calls made with
// it as made on behalf of a. Pass it to the OpenAI client's methods.
func WithActor(ctx context.Context, a client.Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// operation is a kind of request that is recorded.
type operation struct {
	suffix string // of the URL path
	name   string // gen_ai.operation.name
	typ    string // event type
	action string
}

var operations = []operation{
	{"/chat/completions", "chat", "ai.inference", "chat.completions.create"},
	{"/completions", "text_completion", "ai.inference", "completions.create"},
	{"/responses", "chat", "ai.inference", "responses.create"},
	{"/embeddings", "embeddings", "ai.embedding", "embeddings.create"},
}

// Middleware returns an OpenAI client middleware that records every
// inference and embedding request through rec (asynchronously: the call is
// not delayed by aitrail, and the Recorder's queue bounds the memory used).
// Each attempt the OpenAI client makes, retries included, is recorded as
// its own event. Events that cannot be recorded are reported to the
// Recorder's OnError.
func Middleware(rec *client.Recorder, opts Options) option.Middleware {
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if opts.MaxContentBytes <= 0 {
		opts.MaxContentBytes = DefaultMaxContentBytes
	}
	return func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		op, ok := recorded(req)
		if !ok {
			return next(req)
		}
		body, err := requestBody(req)
		if err != nil {
			return nil, err
		}
		c := &call{rec: rec, opts: &opts, op: op, req: req, start: time.Now()}
		c.parseRequest(body)
		resp, err := next(req)
		if err != nil {
			c.errType = "transport"
			c.record()
			return resp, err
		}
		c.status = resp.StatusCode
		if mt := resp.Header.Get("Content-Type"); strings.HasPrefix(mt, "text/event-stream") {
			c.stream = &streamState{legacy: op.name == "text_completion"}
		}
		resp.Body = &recordingBody{rc: resp.Body, c: c}
		return resp, nil
	}
}

// recorded returns the operation req performs, if it is one to record.
func recorded(req *http.Request) (operation, bool) {
	if req.Method != http.MethodPost {
		return operation{}, false
	}
	for _, op := range operations {
		if strings.HasSuffix(req.URL.Path, op.suffix) {
			return op, true
		}
	}
	return operation{}, false
}

// requestBody returns a copy of req's body, leaving req able to send it.
func requestBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	if req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	req.Body = io.NopCloser(bytes.NewReader(b))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return b, nil
}

// call is one recorded request, from its start to the end of its response.
type call struct {
	rec   *client.Recorder
	opts  *Options
	op    operation
	req   *http.Request
	start time.Time

	request   json.RawMessage // the request body, if it is JSON
	reqModel  string
	user      string
	reqParams client.Attributes

	status  int
	errType string
	stream  *streamState // non-nil for a server-sent event stream
	body    bytes.Buffer // a response that is not streamed
	tooBig  bool         // the response outgrew MaxResponseBytes
	once    sync.Once
}

func (c *call) parseRequest(body []byte) {
	var r struct {
		Model               string   `json:"model"`
		User                string   `json:"user"`
		Temperature         *float64 `json:"temperature"`
		TopP                *float64 `json:"top_p"`
		Seed                *int64   `json:"seed"`
		MaxTokens           *int64   `json:"max_tokens"`
		MaxCompletionTokens *int64   `json:"max_completion_tokens"`
		MaxOutputTokens     *int64   `json:"max_output_tokens"`
	}
	if json.Unmarshal(body, &r) != nil {
		return
	}
	c.request = body
	c.reqModel, c.user = r.Model, r.User
	c.reqParams = client.Attributes{}
	set := func(k string, v any, ok bool) {
		if ok {
			c.reqParams[k] = v
		}
	}
	set("gen_ai.request.temperature", deref(r.Temperature), r.Temperature != nil)
	set("gen_ai.request.top_p", deref(r.TopP), r.TopP != nil)
	set("gen_ai.request.seed", exact(r.Seed), r.Seed != nil)
	for _, m := range []*int64{r.MaxTokens, r.MaxCompletionTokens, r.MaxOutputTokens} {
		set("gen_ai.request.max_tokens", exact(m), m != nil)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// exact returns *p as an attribute keeps it exactly: a number within
// ±2^53 (the server stores numbers as float64), else its decimal string.
func exact(p *int64) any {
	if p == nil {
		return nil
	}
	if v := *p; v > 1<<53 || v < -(1<<53) {
		return strconv.FormatInt(v, 10)
	}
	return *p
}

// recordingBody passes a response body through unchanged and records the
// call once it has been read to its end or closed.
type recordingBody struct {
	rc io.ReadCloser
	c  *call
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.c.observe(p[:n])
	if err == io.EOF {
		b.c.complete()
		b.c.record()
	} else if err != nil {
		b.c.errType = "read_error"
		b.c.record()
	}
	return n, err
}

func (b *recordingBody) Close() error {
	err := b.rc.Close()
	b.c.record()
	return err
}

// observe takes in a piece of the response as the application reads it.
func (c *call) observe(p []byte) {
	if c.stream != nil {
		c.stream.write(p)
		return
	}
	if c.tooBig || len(p) == 0 {
		return
	}
	if c.body.Len()+len(p) > c.opts.MaxResponseBytes {
		c.tooBig = true
		c.body = bytes.Buffer{}
		return
	}
	c.body.Write(p)
}

// complete notes that the whole response was read.
func (c *call) complete() {
	if c.stream != nil {
		c.stream.ended = true
	}
}

// record queues the call's event, once. When the Recorder's queue is full
// and it blocks, this waits at most as long as the call's context allows.
func (c *call) record() {
	c.once.Do(func() {
		c.rec.Record(c.req.Context(), c.event())
	})
}

// response is what a call's event takes from the response, whether it
// came whole or as a stream.
type response struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Status string `json:"status"` // the Responses API's
	Usage  *struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		InputTokens      *int64 `json:"input_tokens"`
		OutputTokens     *int64 `json:"output_tokens"`
	} `json:"usage"`
}

func (c *call) event() client.Event {
	ok := c.status >= 200 && c.status < 300 && c.errType == ""
	attrs := client.Attributes{
		"gen_ai.operation.name":            c.op.name,
		"gen_ai.provider.name":             "openai",
		"server.address":                   c.req.URL.Host,
		"gen_ai.client.operation.duration": time.Since(c.start).Seconds(),
	}
	for k, v := range c.reqParams {
		attrs[k] = v
	}
	if c.reqModel != "" {
		attrs["gen_ai.request.model"] = text.Attribute(c.reqModel)
	}
	if c.status != 0 {
		attrs["http.response.status_code"] = c.status
	}

	var resp response
	var respJSON json.RawMessage // what goes into content
	switch {
	case c.stream != nil:
		respJSON = c.stream.assemble()
		if f := c.stream.failure(); f != "" {
			ok = false
			if c.errType == "" { // a read error says more
				c.errType = f
			}
		}
	case !c.tooBig && json.Valid(c.body.Bytes()):
		respJSON = c.body.Bytes()
	}
	if respJSON != nil {
		json.Unmarshal(respJSON, &resp)
	}
	if c.errType == "" && !ok {
		c.errType = strconv.Itoa(c.status)
	}
	if c.errType != "" {
		attrs["error.type"] = c.errType
	}
	// What the provider answered is cleaned to what the server accepts.
	resp.ID, resp.Model = text.Attribute(resp.ID), text.Field(resp.Model)
	if resp.ID != "" {
		attrs["gen_ai.response.id"] = resp.ID
	}
	if resp.Model != "" {
		attrs["gen_ai.response.model"] = resp.Model
	}
	var reasons []string
	for _, ch := range resp.Choices {
		if ch.FinishReason != "" {
			reasons = append(reasons, ch.FinishReason)
		}
	}
	if resp.Status != "" {
		reasons = append(reasons, resp.Status)
	}
	if len(reasons) > 0 {
		// Attributes are flat, so the list is comma-separated.
		attrs["gen_ai.response.finish_reasons"] = text.Attribute(strings.Join(reasons, ","))
	}
	if u := resp.Usage; u != nil {
		for k, v := range map[string]*int64{
			"gen_ai.usage.input_tokens":  firstSet(u.InputTokens, u.PromptTokens),
			"gen_ai.usage.output_tokens": firstSet(u.OutputTokens, u.CompletionTokens),
		} {
			if v != nil {
				attrs[k] = *v
			}
		}
	}

	e := client.Event{
		Type:       c.op.typ,
		Time:       c.start.UTC().Format(time.RFC3339Nano),
		Tenant:     c.opts.Tenant,
		Action:     c.op.action,
		Outcome:    "success",
		Attributes: attrs,
	}
	if !ok {
		e.Outcome = "failure"
	}
	if c.reqModel != "" || resp.Model != "" {
		e.Model = &client.Model{Provider: "openai", Name: text.Field(c.reqModel)}
		if e.Model.Name == "" {
			e.Model.Name = resp.Model
		} else if resp.Model != "" && resp.Model != c.reqModel {
			e.Model.Version = resp.Model
		}
	}
	e.Actor = c.actor()
	if !c.opts.OmitContent && c.request != nil {
		content := map[string]json.RawMessage{"request": acceptable(c.request)}
		// Embedding vectors are derived data, not what anyone said.
		if respJSON != nil && c.op.typ != "ai.embedding" {
			content["response"] = acceptable(respJSON)
		}
		e.Content, _ = json.Marshal(content)
		if len(e.Content) > c.opts.MaxContentBytes {
			// Refused whole, the call would leave no record at all.
			e.Content = nil
			attrs["aitrail.content_omitted"] = true
		}
	}
	return e
}

// acceptable returns JSON text as the server accepts it in content: text
// holding invalid UTF-8 or a \uD800–\uDFFF escape (an unpaired surrogate,
// as when a provider cuts an emoji in two) is decoded and encoded again,
// which makes what is not a character U+FFFD.
func acceptable(raw json.RawMessage) json.RawMessage {
	if utf8.Valid(raw) && !hasSurrogateEscape(raw) {
		return raw
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // numbers as written
	var v any
	if d.Decode(&v) != nil {
		return raw
	}
	out, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return out
}

// hasSurrogateEscape reports whether raw holds an escape \uD800 to \uDFFF.
func hasSurrogateEscape(raw []byte) bool {
	for i := 0; ; {
		j := bytes.Index(raw[i:], []byte(`\u`))
		if j < 0 || i+j+3 >= len(raw) {
			return false
		}
		i += j + 2
		if (raw[i] == 'd' || raw[i] == 'D') && strings.IndexByte("89abcdefABCDEF", raw[i+1]) >= 0 {
			return true
		}
	}
}

func firstSet(ps ...*int64) *int64 {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

func (c *call) actor() *client.Actor {
	var a client.Actor
	if c.opts.Actor != nil {
		a = c.opts.Actor(c.req)
	} else if ca, ok := c.req.Context().Value(actorKey{}).(client.Actor); ok {
		a = ca
	} else if c.user != "" {
		a = client.Actor{ID: text.Field(c.user), Type: "user"}
	}
	if a == (client.Actor{}) {
		return nil
	}
	return &a
}
