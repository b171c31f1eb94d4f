// Package proxy records model calls by standing between an application and
// its model provider: an OpenAI-compatible proxy and an Anthropic Messages
// proxy that forward each call to the real provider and write two events
// through the one ingest path, the request before it is forwarded and the
// outcome once the provider has answered.
//
// It fails closed: a call whose request event cannot be made durable is
// refused and never reaches the provider. It passes the provider's answers
// through unchanged, streams chunk by chunk without buffering, and replaces
// the caller's aitrail token with the provider key.
//
// It never logs content or keys, and it never imports the HTTP API or the
// wiring: errors go back through the WriteError function it is given.
package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/ingest"
)

// recordTimeout bounds the append of the outcome event, which runs after
// the caller may have gone away.
const recordTimeout = 30 * time.Second

// Headers the proxy reads or sets.
const (
	// HeaderUser names the end user when the request body does not.
	HeaderUser = "X-Aitrail-User"
	// HeaderSession names the conversation.
	HeaderSession = "X-Aitrail-Session"
	// HeaderTenant names the tenant to record the call under.
	HeaderTenant = "X-Aitrail-Tenant"
	// HeaderEventID, on every forwarded answer, carries the id of the
	// request event.
	HeaderEventID = "X-Aitrail-Event-Id"
)

// Appender is the one append path (ingest.Pipeline.Append): validate,
// check the tenant, encrypt content and append atomically. A nil error
// means every event is durable; on error nothing was stored. It must be
// safe for concurrent use.
type Appender interface {
	Append(ctx context.Context, p authz.Principal, events []event.Event) (ingest.Receipt, error)
}

// Config configures one provider's proxy.
type Config struct {
	// Upstream is the provider's base URL (http or https). Nil means not
	// configured: every call is answered 404 not_configured.
	Upstream *url.URL
	// APIKey is the provider key sent upstream in place of the caller's
	// token. Empty sends no key (for providers that need none).
	APIKey string
	// Timeout is the longest wait for the provider to send anything: the
	// response headers, or the next piece of the body. It must be positive.
	Timeout time.Duration
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	// Ingest appends the events.
	Ingest Appender
	// WriteError answers a request with an error: an *apierr.Error as
	// given, and the ingest path's errors mapped to their statuses.
	WriteError func(http.ResponseWriter, *http.Request, error)
	// Transport carries calls upstream; a clone of http.DefaultTransport
	// if nil.
	Transport http.RoundTripper
	// Logger receives operational messages, never content or keys.
	Logger *slog.Logger
}

// OpenAI returns the OpenAI-compatible proxy, to be mounted at /openai/.
// It answers /openai/v1/chat/completions, /openai/v1/responses,
// /openai/v1/embeddings and /openai/v1/models[/{id}]; the path below
// /openai/v1 is appended to the upstream URL, which therefore ends in /v1
// like OpenAI's own base URL.
func OpenAI(c Config) (*Proxy, error) { return newProxy(c, openAI) }

// Anthropic returns the Anthropic Messages proxy, to be mounted at
// /anthropic/. It answers /anthropic/v1/messages; the path below /anthropic
// is appended to the upstream URL, which is a base URL without /v1 like
// Anthropic's own.
func Anthropic(c Config) (*Proxy, error) { return newProxy(c, anthropic) }

// Proxy is one provider's recording proxy. It is safe for concurrent use.
type Proxy struct{ h *handler }

// ServeHTTP proxies and records one call. The request event is durable
// before the call is forwarded; the outcome event is appended once the
// answer has been passed on, after ServeHTTP returns.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.h.ServeHTTP(w, r) }

// Wait returns once every outcome event of the calls served so far has been
// appended (or has failed to be). Call it after the HTTP server has shut
// down and before the log is closed.
func (p *Proxy) Wait() { p.h.outcomes.Wait() }

func newProxy(c Config, p *provider) (*Proxy, error) {
	h, err := newHandler(c, p)
	if err != nil {
		return nil, err
	}
	return &Proxy{h}, nil
}

// handler is one provider's proxy.
type handler struct {
	Config
	p        *provider
	errLog   *log.Logger // for the reverse proxy's own messages
	outcomes *background // appends outcome events
}

func newHandler(c Config, p *provider) (*handler, error) {
	h := &handler{Config: c, p: p, outcomes: newBackground()}
	switch {
	case c.Ingest == nil || c.WriteError == nil:
		return nil, errors.New("proxy: Ingest and WriteError are required")
	case c.Timeout <= 0 || c.MaxBodyBytes <= 0:
		return nil, errors.New("proxy: Timeout and MaxBodyBytes must be positive")
	}
	if h.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 256
		h.Transport = t
	}
	if h.Logger == nil {
		h.Logger = slog.Default()
	}
	h.errLog = slog.NewLogLogger(h.Logger.Handler(), slog.LevelDebug)
	return h, nil
}

// call is the state of one proxied call, shared by the forwarding hooks
// and the outcome record.
type call struct {
	op        *operation
	principal authz.Principal
	request   event.Event // the request event, as appended

	start time.Time
	ctx   context.Context // the upstream request's context
	timer *time.Timer     // cancels ctx when the provider stays silent

	mu         sync.Mutex
	status     int           // upstream status, 0 if none
	upstreamID string        // the provider's request id header
	firstByte  time.Duration // time to the first body byte, 0 if none
	done       bool          // the body was read to its end
	err        error         // why the call failed, if it did
	out        *output       // assembles the answer
}

// errTimeout is the cause of an upstream request cancelled for silence.
var errTimeout = errors.New("upstream timed out")

// ServeHTTP proxies one call.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, rest, allow, err := h.p.route(r.Method, r.URL.Path)
	if err != nil {
		if allow != "" {
			w.Header().Set("Allow", allow)
		}
		h.WriteError(w, r, err)
		return
	}
	if h.Upstream == nil {
		h.WriteError(w, r, apierr.New(http.StatusNotFound, "not_configured",
			"the "+h.p.title+" proxy is not configured on this server (see --"+h.p.name+"-upstream)"))
		return
	}
	var body []byte
	var req requestFields
	if op.body {
		if body, err = readBody(w, r, h.MaxBodyBytes); err == nil {
			err = req.parse(body)
		}
		if err != nil {
			h.WriteError(w, r, err)
			return
		}
	}
	principal, _ := authz.PrincipalFrom(r.Context())
	c := &call{op: op, principal: principal}
	if c.request, err = h.requestEvent(r, op, principal, &req, body); err != nil {
		h.WriteError(w, r, err)
		return
	}
	// Fail closed: nothing goes upstream unless the request is on record.
	if _, err := h.Ingest.Append(r.Context(), principal, []event.Event{c.request}); err != nil {
		h.WriteError(w, r, err)
		return
	}
	w.Header().Set(HeaderEventID, c.request.ID)

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	c.ctx, c.start = ctx, time.Now()
	c.timer = time.AfterFunc(h.Timeout, func() { cancel(errTimeout) })
	defer c.timer.Stop()
	// Recorded even if the reverse proxy aborts the response with a panic
	// (as it does when the caller goes away mid-stream).
	defer h.recordOutcome(r, c)

	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { h.rewrite(pr, ctx, rest, body) },
		Transport: h.Transport,
		ModifyResponse: func(resp *http.Response) error {
			// The provider's headers replace those the server sets on
			// every answer (Cache-Control: no-store ...) instead of
			// joining them.
			if err := h.capture(resp, c); err != nil {
				return err // answered by failed, with the server's headers
			}
			for k := range resp.Header {
				delete(w.Header(), k)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { h.failed(w, r, c, err) },
		ErrorLog:     h.errLog,
		BufferPool:   copyBuffers,
	}
	rp.ServeHTTP(w, r)
	// Deliver the whole answer before the outcome is appended.
	_ = http.NewResponseController(w).Flush()
}

// copyBuffers are the buffers the reverse proxy copies answers through,
// kept between calls instead of allocated (32 KiB) for each.
var copyBuffers = &bufferPool{sync.Pool{New: func() any { return new([32 << 10]byte) }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return p.pool.Get().(*[32 << 10]byte)[:] }

// Put keeps b only if it is one of the pool's: the reverse proxy hands back
// what Get gave it, but a conversion of anything else would panic.
func (p *bufferPool) Put(b []byte) {
	if len(b) == 32<<10 {
		p.pool.Put((*[32 << 10]byte)(b))
	}
}

// rewrite prepares the upstream request: the provider's URL, the provider
// key instead of the caller's token, none of aitrail's own headers, and
// body, the request body read whole. The reverse proxy has already removed
// hop-by-hop and forwarding headers.
func (h *handler) rewrite(pr *httputil.ProxyRequest, ctx context.Context, rest string, body []byte) {
	out := pr.Out.WithContext(ctx)
	// The body goes upstream from memory, as it was read and recorded (the
	// caller's has been read to its end). The reverse proxy would wrap a
	// body in a reader the transport cannot see into, and the transport
	// then sends the headers on their own ahead of it: two writes and two
	// packets per call. A reader of the bytes goes out with the headers.
	out.Body, out.ContentLength, out.GetBody = nil, 0, nil
	if len(body) > 0 {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	u := *h.Upstream
	base := strings.TrimSuffix(u.EscapedPath(), "/")
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/")+rest, ""
	// As the caller encoded it: a model id's %2F stays one.
	if raw, ok := strings.CutPrefix(pr.In.URL.EscapedPath(), h.p.mount); ok {
		u.RawPath = base + raw
	}
	u.RawQuery = pr.In.URL.RawQuery
	out.URL, out.Host = &u, ""
	out.TransferEncoding = nil
	for _, k := range []string{"Authorization", "X-Api-Key", "Cookie", "Accept-Encoding"} {
		out.Header.Del(k) // Accept-Encoding: let the transport decompress, so the answer can be read
	}
	for k := range out.Header {
		// Proxy-*: meant for a proxy, as Proxy-Authorization (which the
		// reverse proxy removes) is.
		if strings.HasPrefix(k, "X-Aitrail-") || strings.HasPrefix(k, "Proxy-") {
			delete(out.Header, k)
		}
	}
	if h.APIKey != "" {
		h.p.setKey(out.Header, h.APIKey)
	}
	pr.Out = out
}

// capture notes the provider's answer and routes its body through the
// output assembler. A non-streamed answer is read whole here (up to the
// body limit, and as far as the memory bound for bodies allows), so that a
// provider falling silent mid-body still gets the caller a clean 504, and
// so that the caller has the whole answer before the outcome is appended;
// the caller is answered from the bytes kept for the record.
func (h *handler) capture(resp *http.Response, c *call) error {
	c.mu.Lock()
	c.status = resp.StatusCode
	c.upstreamID = firstNonEmpty(resp.Header.Get("X-Request-Id"), resp.Header.Get("Request-Id"))
	resp.Header.Del(HeaderEventID) // only aitrail's own
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	streamed := mt == "text/event-stream"
	charge := func(n int) bool { return httpbody.Charge(c.ctx, int64(n)) == nil }
	c.out = newOutput(h.p, c.op, streamed, h.contentLimit(), charge)
	if resp.Request.Method == http.MethodHead {
		// No body; its Content-Length is the GET's, passed on as sent.
		c.done = true
		c.mu.Unlock()
		return nil
	}
	if n := resp.ContentLength; !streamed && n > 0 {
		c.out.grow(int(min(n, math.MaxInt32)))
	}
	c.mu.Unlock()
	body := &tap{c: c, r: resp.Body, timeout: h.Timeout, collect: streamed}
	if streamed {
		resp.Body = body
		return nil
	}
	buf := copyBuffers.Get()
	defer copyBuffers.Put(buf)
	for {
		n, err := body.Read(buf)
		c.mu.Lock()
		rest := buf[c.out.take(buf[:n]):n]
		head, full := c.out.body, c.out.full()
		c.mu.Unlock()
		switch {
		case err != nil && !errors.Is(err, io.EOF):
			resp.Body.Close()
			return err
		case full:
			// Over the limit, or out of memory for bodies: the rest goes
			// to the caller as it comes, and only its beginning on record.
			body.collect = true // to note that more came
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head), bytes.NewReader(bytes.Clone(rest)), body), body}
			return nil
		case err == nil:
			continue
		}
		resp.Body.Close()
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(head)), int64(len(head))
		resp.Header.Set("Content-Length", fmt.Sprint(len(head)))
		return nil
	}
}

// failed answers a call the provider did not answer (unreachable, timed
// out, or the answer could not be read).
func (h *handler) failed(w http.ResponseWriter, r *http.Request, c *call, err error) {
	c.mu.Lock()
	c.status = 0 // the caller never sees the provider's status
	c.err = c.classify(r, err)
	reason := c.err
	c.mu.Unlock()
	switch {
	case errors.Is(reason, errTimeout):
		h.WriteError(w, r, apierr.New(http.StatusGatewayTimeout, "upstream_timeout",
			fmt.Sprintf("the %s upstream sent nothing for %s", h.p.title, h.Timeout)))
	case errors.Is(reason, errClientGone):
		// Nobody is left to answer.
	default:
		h.WriteError(w, r, apierr.New(http.StatusBadGateway, "upstream_unavailable",
			"couldn't get an answer from the "+h.p.title+" upstream"))
	}
}

// Why a call ended early, besides errTimeout.
var (
	errClientGone = errors.New("client disconnected")
	errUpstream   = errors.New("upstream failed")
)

// classify says why a call ended early: silence, the caller, or the
// provider. It must be called with c.mu held.
func (c *call) classify(r *http.Request, err error) error {
	switch {
	case isClassified(err):
		return err
	case errors.Is(context.Cause(c.ctx), errTimeout):
		return errTimeout
	case r.Context().Err() != nil:
		return errClientGone
	case err == nil:
		// The body was not read to its end without a read error: the
		// reverse proxy stopped because writing to the caller failed.
		return errClientGone
	}
	return fmt.Errorf("%w: %w", errUpstream, err)
}

// tap reads the provider's body for the caller, feeding the output
// assembler and running the silence timer while it waits for each piece.
type tap struct {
	c       *call
	r       io.ReadCloser
	timeout time.Duration
	collect bool // hand what is read to the output (capture reads a whole answer's beginning itself)
}

func (t *tap) Read(p []byte) (int, error) {
	c := t.c
	// The silence timer runs only while the provider is waited for, not
	// while what it sent is written to a caller that reads slowly.
	c.timer.Reset(t.timeout)
	n, err := t.r.Read(p)
	c.timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > 0 {
		if c.firstByte == 0 {
			c.firstByte = max(time.Since(c.start), time.Nanosecond)
		}
		if t.collect {
			c.out.take(p[:n])
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		c.done = true
	case err != nil && c.err == nil:
		c.err = err
	}
	return n, err
}

func (t *tap) Close() error { return t.r.Close() }

// recordOutcome appends the outcome event. It runs once the answer has
// been passed on, in the background, so that recording adds nothing to the
// caller's wait and frees the connection for its next request; Wait waits
// for it. Its context survives the caller going away.
func (h *handler) recordOutcome(r *http.Request, c *call) {
	c.timer.Stop()
	c.mu.Lock()
	if !c.done {
		c.err = c.classify(r, c.err)
	}
	e := h.outcomeEvent(c)
	c.mu.Unlock()
	// Admitted: the request event was; its outcome is not refused for the
	// log's load or its disk space since.
	ctx := ingest.Admitted(context.WithoutCancel(r.Context()))
	// The answer's memory stays charged until its record is appended.
	release := httpbody.Keep(r.Context())
	h.outcomes.Go(func() {
		defer release()
		ctx, cancel := context.WithTimeout(ctx, recordTimeout)
		defer cancel()
		_, err := h.Ingest.Append(ctx, c.principal, []event.Event{e})
		var ee *event.Error
		if errors.As(err, &ee) && e.Content != nil {
			// The answer does not fit an event: keep the outcome without it.
			e.Content = nil
			e.Attributes["aitrail.proxy.content_omitted"] = true
			_, err = h.Ingest.Append(ctx, c.principal, []event.Event{e})
		}
		if err != nil {
			h.Logger.Error("couldn't record the outcome of a proxied call", "provider", h.p.name,
				"request_event", c.request.ID, "tenant", c.request.Tenant, "err", err)
		}
	})
}

func isClassified(err error) bool {
	return errors.Is(err, errTimeout) || errors.Is(err, errClientGone) || errors.Is(err, errUpstream)
}

// contentLimit is the most answer bytes assembled for the record.
func (h *handler) contentLimit() int {
	return int(min(h.MaxBodyBytes, 1<<30))
}

// requestEvent builds the event recorded before forwarding.
func (h *handler) requestEvent(r *http.Request, op *operation, p authz.Principal, req *requestFields, body []byte) (event.Event, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return event.Event{}, fmt.Errorf("couldn't make an event id: %w", err)
	}
	traceID, spanID, err := traceIDs(r.Header.Get("Traceparent"))
	if err != nil {
		return event.Event{}, err
	}
	actor := &event.Actor{Type: "user", IP: remoteIP(r), UserAgent: clip(r.UserAgent(), 1024),
		SessionID: r.Header.Get(HeaderSession)}
	switch {
	case req.user() != "":
		actor.ID = req.user()
	case r.Header.Get(HeaderUser) != "":
		actor.ID = r.Header.Get(HeaderUser)
	default:
		actor.ID, actor.Type = p.Name, "service"
	}
	attrs := map[string]any{
		"aitrail.proxy.phase":   "request",
		"aitrail.token.id":      p.TokenID,
		"gen_ai.operation.name": op.name,
		"gen_ai.provider.name":  h.p.name,
		"http.request.method":   r.Method,
		"url.path":              r.URL.Path,
		"server.address":        h.Upstream.Host,
	}
	if op.body {
		attrs["aitrail.proxy.stream"] = req.Stream
	}
	if s := actor.SessionID; s != "" {
		attrs["gen_ai.conversation.id"] = s
	}
	req.attributes(attrs)
	e := event.Event{
		ID:         id.String(),
		Type:       op.eventType,
		Tenant:     tenantOf(r, p),
		Actor:      actor,
		Action:     op.action,
		API:        &event.API{Name: h.p.name, Version: h.p.apiVersion(r.Header)},
		Attributes: attrs,
		TraceID:    traceID,
		SpanID:     spanID,
	}
	if req.Model != "" {
		e.Model = &event.Model{Provider: h.p.name, Name: req.Model}
	}
	if len(body) > 0 {
		e.Content = json.RawMessage(body)
	}
	return e, nil
}

// outcomeEvent builds the event recorded once the call is over. It must be
// called with c.mu held.
func (h *handler) outcomeEvent(c *call) event.Event {
	req := c.request
	id, err := uuid.NewV7()
	if err != nil {
		// Derived, still unique per tenant: the request id is.
		id = uuid.NewSHA1(uuid.NameSpaceURL, []byte("aitrail:outcome:"+req.ID))
	}
	attrs := map[string]any{
		"aitrail.proxy.phase":            "response",
		"aitrail.proxy.request_event_id": req.ID,
		"aitrail.proxy.latency_ms":       msSince(c.start),
	}
	for _, k := range []string{"aitrail.token.id", "gen_ai.operation.name", "gen_ai.provider.name",
		"gen_ai.request.model", "gen_ai.conversation.id", "aitrail.proxy.stream", "server.address"} {
		if v, ok := req.Attributes[k]; ok {
			attrs[k] = v
		}
	}
	if c.firstByte > 0 {
		attrs["aitrail.proxy.time_to_first_chunk_ms"] = float64(c.firstByte.Microseconds()) / 1000
	}
	if c.status != 0 {
		attrs["http.response.status_code"] = c.status
	}
	if c.upstreamID != "" {
		attrs["aitrail.proxy.upstream_request_id"] = clip(c.upstreamID, 256)
	}
	outcome := "success"
	switch {
	case errors.Is(c.err, errTimeout):
		outcome, attrs["error.type"] = "failure", "timeout"
	case errors.Is(c.err, errClientGone):
		outcome, attrs["error.type"] = "failure", "client_disconnected"
	case c.err != nil:
		outcome, attrs["error.type"] = "failure", "upstream_error"
	case c.status >= 400:
		outcome, attrs["error.type"] = "failure", fmt.Sprint(c.status)
	}
	e := event.Event{
		ID: id.String(), Type: req.Type, Tenant: req.Tenant, Actor: req.Actor, Action: req.Action,
		API: req.API, Attributes: attrs, TraceID: req.TraceID, SpanID: req.SpanID,
	}
	model := ""
	if req.Model != nil {
		model = req.Model.Name
	}
	if c.out != nil {
		a, content, truncated := c.out.result()
		a.attributes(attrs)
		if a.model != "" {
			model = a.model
		}
		e.Content = content
		if truncated {
			attrs["aitrail.proxy.content_truncated"] = true
			if c.out.short {
				attrs["aitrail.proxy.content_truncated_for"] = "memory"
			}
		}
		// A stream is answered 200 before it is over: it may still fail,
		// or end early. (Cut short for the record, its end was not seen.)
		if outcome == "success" && c.out.stream != nil {
			if f := c.out.stream.failure(); f != "" && (!truncated || f != errIncompleteStream) {
				outcome, attrs["error.type"] = "failure", f
			}
		}
	}
	e.Outcome = outcome
	if model != "" {
		e.Model = &event.Model{Provider: h.p.name, Name: model}
	}
	return e
}

// readBody reads a bounded JSON request body. Errors are *apierr.Error.
// It is forwarded as sent, so it must not be compressed, which
// httpbody.Read would undo.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil, apierr.New(http.StatusUnsupportedMediaType, "unsupported_encoding", "Content-Encoding must be identity")
	}
	// Bounded, and charged to the server's budget for bodies. The body is
	// forwarded, so it is never given back to httpbody's pool.
	body, _, err := httpbody.Read(w, r, limit, "application/json")
	return body, err
}

// tenantOf is the tenant a call is recorded under: the X-Aitrail-Tenant
// header, else the token's only tenant, else the default tenant. The
// ingest path refuses a tenant the token may not write.
func tenantOf(r *http.Request, p authz.Principal) string {
	if t := r.Header.Get(HeaderTenant); t != "" {
		return t
	}
	if len(p.Tenants) == 1 && p.Tenants[0] != authz.AllTenantsWildcard {
		return p.Tenants[0]
	}
	return event.DefaultTenant
}

// traceIDs returns the trace id of a W3C traceparent header, or a new one,
// and a new span id for the proxied call.
func traceIDs(traceparent string) (traceID, spanID string, err error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("couldn't make a trace id: %w", err)
	}
	traceID, spanID = hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	if parts := strings.Split(traceparent, "-"); len(parts) >= 4 && len(parts[1]) == 32 && parts[1] != strings.Repeat("0", 32) {
		if _, err := hex.DecodeString(parts[1]); err == nil {
			traceID = strings.ToLower(parts[1])
		}
	}
	return traceID, spanID, nil
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || net.ParseIP(host) == nil {
		return ""
	}
	return host
}

// clip shortens s to at most n bytes, on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
