package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/sse"
)

// provider is what differs between the providers: where they are mounted,
// which calls they answer, how the key goes upstream and how a streamed
// answer is put together.
type provider struct {
	name  string // gen_ai.provider.name, and the flag prefix
	title string // for messages
	// mount is the path prefix below which the rest of the path is
	// appended to the upstream URL.
	mount string
	// ops are the calls answered, by path below mount.
	ops        []operation
	setKey     func(h http.Header, key string)
	apiVersion func(h http.Header) string
	// newStream returns the assembler of a streamed answer to op.
	newStream func(op *operation) assembler
}

// operation is one kind of call a proxy answers.
type operation struct {
	method string
	// path below the provider's mount; a trailing "/" matches one or more
	// path segments, such as a model id ("meta-llama/Llama-3.1-8B" on
	// servers that name models after Hugging Face repositories).
	path      string
	name      string // gen_ai.operation.name
	action    string
	eventType string
	body      bool // the call carries a JSON body
}

// route returns the operation answering method and path, and the path
// below the mount. Errors are *apierr.Error; for a 405, allow lists the
// methods the path takes, for the Allow header.
func (p *provider) route(method, path string) (op *operation, rest, allow string, err error) {
	rest, ok := strings.CutPrefix(path, p.mount)
	if !ok || !strings.HasPrefix(rest, "/") {
		return nil, "", "", p.notFound()
	}
	var allowed []string
	for i := range p.ops {
		op := &p.ops[i]
		if !op.matches(rest) {
			continue
		}
		if op.method == method || (method == http.MethodHead && op.method == http.MethodGet) {
			return op, rest, "", nil
		}
		allowed = append(allowed, op.method)
	}
	if len(allowed) == 0 {
		return nil, "", "", p.notFound()
	}
	slices.Sort(allowed)
	allow = strings.Join(slices.Compact(allowed), ", ")
	return nil, "", allow, apierr.New(http.StatusMethodNotAllowed, "method_not_allowed",
		method+" is not allowed on this path; use "+allow)
}

func (op *operation) matches(rest string) bool {
	if prefix, ok := strings.CutSuffix(op.path, "/"); ok {
		segs, ok := strings.CutPrefix(rest, prefix+"/")
		return ok && !slices.ContainsFunc(strings.Split(segs, "/"), func(seg string) bool {
			return seg == "" || seg == "." || seg == ".."
		})
	}
	return rest == op.path
}

func (p *provider) notFound() error {
	var paths []string
	for _, op := range p.ops {
		paths = append(paths, op.method+" "+p.mount+op.path)
	}
	return apierr.New(http.StatusNotFound, "not_found",
		"the "+p.title+" proxy does not support this endpoint; it supports "+strings.Join(paths, ", "))
}

// requestFields are the fields of a request body that go into the record,
// from any of the supported APIs.
type requestFields struct {
	Model               string   `json:"model"`
	Stream              bool     `json:"stream"`
	User                string   `json:"user"`
	Temperature         *float64 `json:"temperature"`
	TopP                *float64 `json:"top_p"`
	TopK                *float64 `json:"top_k"`
	Seed                *float64 `json:"seed"`
	MaxTokens           *float64 `json:"max_tokens"`
	MaxCompletionTokens *float64 `json:"max_completion_tokens"`
	MaxOutputTokens     *float64 `json:"max_output_tokens"`
	// Metadata holds Anthropic's metadata.user_id (OpenAI's metadata is a
	// map of strings, which this reads just as well).
	Metadata struct {
		UserID string `json:"user_id"`
	} `json:"metadata"`
}

// parse reads the request body, which must be a JSON object whose known
// fields have their documented types, with names matched exactly and none
// repeated: a body that a provider could read differently from the record
// is refused. Errors are *apierr.Error.
func (f *requestFields) parse(body []byte) error {
	err := jsonv2.Unmarshal(body, f)
	if err == nil && jsontext.Value(body).Kind() != '{' { // null decodes into a struct without error
		return apierr.New(http.StatusBadRequest, "invalid_request", "the body is not a JSON object")
	}
	if err != nil {
		msg := "the body is not valid JSON"
		var se *jsonv2.SemanticError
		switch {
		case errors.Is(err, jsontext.ErrDuplicateName):
			msg = "the body names a field twice"
		case errors.As(err, &se):
			msg = "the body is not a JSON object with the expected field types"
			if p := se.JSONPointer; p != "" {
				msg = "field " + strings.ReplaceAll(strings.TrimPrefix(string(p), "/"), "/", ".") + " has the wrong type"
			}
		}
		return apierr.New(http.StatusBadRequest, "invalid_request", msg)
	}
	return nil
}

// user is the end user the body names.
func (f *requestFields) user() string {
	return firstNonEmpty(f.User, f.Metadata.UserID)
}

// attributes adds the request parameters under their OpenTelemetry GenAI
// names.
func (f *requestFields) attributes(attrs map[string]any) {
	if f.Model != "" {
		attrs["gen_ai.request.model"] = f.Model
	}
	for k, v := range map[string]*float64{
		"gen_ai.request.temperature": f.Temperature,
		"gen_ai.request.top_p":       f.TopP,
		"gen_ai.request.top_k":       f.TopK,
		"gen_ai.request.seed":        f.Seed,
		"gen_ai.request.max_tokens":  firstSet(f.MaxTokens, f.MaxCompletionTokens, f.MaxOutputTokens),
	} {
		if v != nil {
			attrs[k] = *v
		}
	}
}

func firstSet(vs ...*float64) *float64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

// answer is what the record keeps of a provider's answer besides its
// content.
type answer struct {
	id, model     string
	finishReasons []string
	usage         usage
}

// usage counts tokens, as any of the supported APIs reports them.
type usage struct {
	PromptTokens             *float64 `json:"prompt_tokens,omitempty"`
	CompletionTokens         *float64 `json:"completion_tokens,omitempty"`
	InputTokens              *float64 `json:"input_tokens,omitempty"`
	OutputTokens             *float64 `json:"output_tokens,omitempty"`
	CacheCreationInputTokens *float64 `json:"cache_creation_input_tokens,omitempty"`
	CacheReadInputTokens     *float64 `json:"cache_read_input_tokens,omitempty"`
}

// merge takes the counts u2 reports over those already known.
func (u *usage) merge(u2 usage) {
	for _, f := range [][2]**float64{
		{&u.PromptTokens, &u2.PromptTokens}, {&u.CompletionTokens, &u2.CompletionTokens},
		{&u.InputTokens, &u2.InputTokens}, {&u.OutputTokens, &u2.OutputTokens},
		{&u.CacheCreationInputTokens, &u2.CacheCreationInputTokens}, {&u.CacheReadInputTokens, &u2.CacheReadInputTokens},
	} {
		if *f[1] != nil {
			*f[0] = *f[1]
		}
	}
}

// parseAnswer reads an answer from a whole JSON response of any of the
// supported APIs: a chat completion, a response (Responses API), an
// embedding list, a model list or an Anthropic message.
func parseAnswer(body []byte) answer {
	a, _ := decodeAnswer(body)
	return a
}

// decodeAnswer is parseAnswer with the decoding error: a
// *jsontext.SyntacticError if body is not JSON.
func decodeAnswer(body []byte) (answer, error) {
	var r struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Status            string `json:"status"`      // Responses API
		StopReason        string `json:"stop_reason"` // Anthropic
		IncompleteDetails struct {
			Reason string `json:"reason"`
		} `json:"incomplete_details"`
		Usage usage `json:"usage"`
	}
	if err := jsonv2.Unmarshal(body, &r); err != nil {
		return answer{}, err
	}
	a := answer{id: r.ID, model: r.Model, usage: r.Usage}
	for _, c := range r.Choices {
		a.finishReasons = append(a.finishReasons, c.FinishReason)
	}
	if s := firstNonEmpty(r.StopReason, r.IncompleteDetails.Reason, r.Status); s != "" {
		a.finishReasons = append(a.finishReasons, s)
	}
	return a, nil
}

// attributes adds the answer under its OpenTelemetry GenAI names. Finish
// reasons are joined with commas: attribute values cannot be lists.
// Input tokens include cached ones, as the conventions ask (OpenAI counts
// them in already; Anthropic reports them apart).
func (a answer) attributes(attrs map[string]any) {
	if a.id != "" {
		attrs["gen_ai.response.id"] = clip(a.id, 1024)
	}
	if a.model != "" {
		attrs["gen_ai.response.model"] = clip(a.model, 1024)
	}
	if len(a.finishReasons) > 0 && slices.ContainsFunc(a.finishReasons, func(s string) bool { return s != "" }) {
		attrs["gen_ai.response.finish_reasons"] = clip(strings.Join(a.finishReasons, ","), 4096)
	}
	u := a.usage
	if in := firstSet(u.InputTokens, u.PromptTokens); in != nil {
		n := *in
		for _, c := range []struct {
			key string
			v   *float64
		}{{"gen_ai.usage.cache_creation.input_tokens", u.CacheCreationInputTokens}, {"gen_ai.usage.cache_read.input_tokens", u.CacheReadInputTokens}} {
			if c.v != nil {
				attrs[c.key] = *c.v
				n += *c.v
			}
		}
		attrs["gen_ai.usage.input_tokens"] = n
	}
	if out := firstSet(u.OutputTokens, u.CompletionTokens); out != nil {
		attrs["gen_ai.usage.output_tokens"] = *out
	}
}

// assembler puts a streamed answer together from its server-sent events.
type assembler interface {
	// event takes one event: its name (often empty) and data.
	event(name string, data []byte)
	// result returns the answer and the assembled content as JSON.
	result() (answer, json.RawMessage)
	// failure returns the error.type of a stream that did not complete
	// though its body ended cleanly: the provider's own for an error it
	// sent in the stream (after its 200), errIncompleteStream for one
	// that ended before its last event; "" for a complete stream.
	failure() string
}

// errIncompleteStream is the error.type of a stream that ended, without
// an error, before its last event.
const errIncompleteStream = "stream_incomplete"

// errorType is the error.type of a provider's error object: the first of
// fields it has as a string (the provider's own classification), else
// "provider_error".
func errorType(obj json.RawMessage, fields ...string) string {
	var m map[string]any
	json.Unmarshal(obj, &m)
	if inner, ok := m["error"].(map[string]any); ok { // {"type":"error","error":{…}}
		m = inner
	}
	for _, f := range fields {
		if s, ok := m[f].(string); ok && s != "" && s != "error" {
			return clip(s, 256)
		}
	}
	return "provider_error"
}

// isSet reports whether a JSON value was there and not null.
func isSet(v json.RawMessage) bool { return len(v) > 0 && string(v) != "null" }

// output collects an answer for the record: a whole body, or a stream's
// events.
type output struct {
	stream    assembler   // nil for a whole body
	sse       *sse.Parser // for a stream
	body      []byte      // a whole body
	seen      int         // bytes taken
	limit     int         // most bytes taken
	truncated bool        // more came than was taken

	// charge takes n more bytes of the server's memory for the answer
	// (httpbody.Charge), or reports that it cannot; nil takes anything.
	// Refused, the output takes no more: the caller still gets the whole
	// answer, the record its beginning.
	charge  func(n int) bool
	charged int  // bytes charged
	short   bool // the limit was lowered because memory was refused
}

// chargeStep is the least an output charges at once, so that a stream of
// small events does not charge each.
const chargeStep = 4 << 10

func newOutput(p *provider, op *operation, streamed bool, limit int, charge func(int) bool) *output {
	o := &output{limit: limit, charge: charge}
	if streamed {
		o.stream = p.newStream(op)
		o.sse = &sse.Parser{Emit: o.stream.event}
	}
	return o
}

// take takes the next piece of the body, up to limit bytes in all and as
// far as memory allows, and returns how many bytes of b it took: all of
// them, or fewer once the limit is reached or memory is refused, and then
// the output is truncated and takes no more.
func (o *output) take(b []byte) int {
	n := min(len(b), o.limit-o.seen)
	if o.sse != nil {
		if n > 0 && !o.reserve(max(o.seen+n, o.charged+chargeStep)) {
			n = 0
		}
	} else if need := len(o.body) + n; need > cap(o.body) {
		// Grown here, so that what is held is what is charged.
		c := min(max(2*cap(o.body), need, chargeStep), o.limit)
		if o.reserve(c) {
			o.body = append(make([]byte, 0, c), o.body...)
		} else {
			n = cap(o.body) - len(o.body)
		}
	}
	if n < len(b) {
		o.truncated = true
		if o.short {
			o.limit = o.seen + n
		}
	}
	o.seen += n
	if o.sse != nil {
		o.sse.Write(b[:n])
	} else {
		o.body = append(o.body, b[:n]...)
	}
	return n
}

// grow makes room for a whole body of n bytes, as announced, if memory
// allows.
func (o *output) grow(n int) {
	if n = min(n, o.limit); n > cap(o.body) && o.reserve(n) {
		o.body = append(make([]byte, 0, n), o.body...)
	}
}

// reserve charges memory for n bytes of answer in all, and reports whether
// it could; refused, the output is marked short.
func (o *output) reserve(n int) bool {
	if o.charge == nil || n <= o.charged {
		return true
	}
	if !o.charge(n - o.charged) {
		o.short = true
		return false
	}
	o.charged = n
	return true
}

// full reports that the output takes no more of the body.
func (o *output) full() bool { return o.seen >= o.limit }

// result returns the answer, its content for the record, and whether the
// content is incomplete because it was over the limit.
func (o *output) result() (answer, json.RawMessage, bool) {
	if o.stream != nil {
		a, content := o.stream.result()
		return a, content, o.truncated
	}
	if len(o.body) == 0 {
		return answer{}, nil, o.truncated
	}
	if !o.truncated {
		// Decoding checks the syntax of the whole body; only JSON of
		// another shape than an answer's needs checking apart.
		a, err := decodeAnswer(o.body)
		var se *jsontext.SyntacticError
		if err == nil || !errors.As(err, &se) && jsontext.Value(o.body).IsValid() {
			return a, o.body, false
		}
	}
	// Not JSON (an HTML error page from a gateway, say), or cut short:
	// keep it as a string.
	s, _ := json.Marshal(strings.ToValidUTF8(string(o.body), "\uFFFD"))
	return answer{}, s, o.truncated
}
