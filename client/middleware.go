package client

import (
	"bufio"
	"bytes"
	"context"
	"maps"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aitrail/aitrail/client/internal/text"
)

// DefaultSyncTimeout bounds how long HTTPMiddleware in Sync mode tries to
// record one request before it answers 503.
const DefaultSyncTimeout = 5 * time.Second

// HTTPOptions configure HTTPMiddleware. The zero value records every request
// asynchronously in the tenant "default" with the client's address and user
// agent as the actor.
type HTTPOptions struct {
	// Tenant is the tenant of the events; empty means the server's default.
	Tenant string
	// Principal, if set, says who made the request (typically from an
	// authenticated session or token the handler chain has verified). It is
	// called after the handler with the request HTTPMiddleware received;
	// middleware inside that passes on a new request (r.WithContext) says
	// who acted with SetActor instead, which wins. The middleware fills in
	// IP and UserAgent when they are left empty.
	Principal func(*http.Request) Actor
	// API, if set, names the API and its version in every event.
	API *API
	// SkipPaths are request paths not to record, such as "/healthz". An
	// entry ending in "/" skips every path under it.
	SkipPaths []string
	// Skip, if set, is asked about every request; true means do not record.
	Skip func(*http.Request) bool
	// Sync records each request with RecordSync before the response is
	// sent, and answers 503 instead of the handler's response when that
	// fails: a caller never gets an answer that is not in the log (fail
	// closed). The response is held in memory until then, so streaming
	// handlers (server-sent events, large downloads) should be skipped or
	// served without Sync. By default events go through Record: the
	// response is not delayed, and a full queue delays only the end of the
	// handler (until the request's context ends).
	Sync bool
	// SyncTimeout bounds the attempt to record in Sync mode; zero means
	// DefaultSyncTimeout.
	SyncTimeout time.Duration
}

// HTTPMiddleware returns net/http middleware that records an "api.call"
// event for every request it serves: method and route as the action, the
// status code, latency, response size, the client's address and user agent,
// and a W3C traceparent if the request carries one. It never reads request
// or response bodies. Events that cannot be recorded are reported to the
// Recorder's OnError.
func HTTPMiddleware(rec *Recorder, opts HTTPOptions) func(http.Handler) http.Handler {
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if opts.skip(r) {
				next.ServeHTTP(w, r)
				return
			}
			notes := new(requestNotes)
			r = r.WithContext(context.WithValue(r.Context(), notesKey{}, notes))
			sw := &statusWriter{ResponseWriter: w}
			if opts.Sync {
				sw.held = &bytes.Buffer{}
			}
			start := time.Now()
			defer func() {
				p := recover()
				if p != nil && sw.status == 0 {
					sw.status = http.StatusInternalServerError
				}
				if sw.status == 0 {
					sw.status = http.StatusOK // what net/http sends for a handler that wrote nothing
				}
				e := opts.event(r, sw, notes, start)
				if p != nil {
					// The connection is about to be dropped, whatever was
					// written: the call failed. Record what happened and
					// let net/http handle the panic.
					e.Outcome, e.Attributes["error.type"] = "failure", "panic"
					if p == http.ErrAbortHandler {
						e.Attributes["error.type"] = "aborted"
					}
					rec.Record(context.WithoutCancel(r.Context()), e)
					panic(p)
				}
				if !opts.Sync {
					rec.Record(r.Context(), e)
					return
				}
				ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), opts.SyncTimeout)
				defer cancel()
				if _, err := rec.RecordSync(ctx, e); err != nil {
					rec.reportFailure([]string{e.ID}, err)
					if sw.hijacked {
						return
					}
					h := w.Header()
					clear(h)
					h.Set("Content-Type", "application/json")
					h.Set("Retry-After", "1")
					w.WriteHeader(http.StatusServiceUnavailable)
					w.Write([]byte(`{"error":{"code":"audit_unavailable","message":"the request could not be recorded in the audit log"}}` + "\n"))
					return
				}
				sw.release()
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// notesKey is the context key of a request's requestNotes.
type notesKey struct{}

// requestNotes is what handlers inside HTTPMiddleware say about the
// request through SetActor; it is shared by every request derived from
// the one the middleware passes on.
type requestNotes struct {
	actor *Actor
}

// SetActor says who made the request whose context ctx is (or derives
// from), for HTTPMiddleware's event; it wins over HTTPOptions.Principal.
// Middleware inside HTTPMiddleware that authenticates and passes on a new
// request (r.WithContext) calls it, since Principal sees only the request
// HTTPMiddleware received. Outside HTTPMiddleware it does nothing.
func SetActor(ctx context.Context, a Actor) {
	if n, ok := ctx.Value(notesKey{}).(*requestNotes); ok {
		n.actor = &a
	}
}

func (o *HTTPOptions) skip(r *http.Request) bool {
	for _, p := range o.SkipPaths {
		if r.URL.Path == p || strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p) {
			return true
		}
	}
	return o.Skip != nil && o.Skip(r)
}

// event describes the served request. Whatever the client sent (path,
// method, user agent, trace context) is cleaned to what the server
// accepts, so that no request can keep its own event out of the log.
func (o *HTTPOptions) event(r *http.Request, sw *statusWriter, notes *requestNotes, start time.Time) Event {
	var actor Actor
	if notes.actor != nil {
		actor = *notes.actor
	} else if o.Principal != nil {
		actor = o.Principal(r)
	}
	actor.IP = remoteIP(actor.IP)
	if actor.IP == "" {
		actor.IP = remoteIP(r.RemoteAddr)
	}
	if actor.UserAgent == "" {
		actor.UserAgent = r.UserAgent()
	}
	actor.ID, actor.UserAgent, actor.SessionID = text.Field(actor.ID), text.Field(actor.UserAgent), text.Field(actor.SessionID)
	path := r.URL.Path
	if text.Attribute(path) != path {
		path = r.URL.EscapedPath() // ASCII: %01 rather than a control character
	}
	size := sw.written
	if r.Method == http.MethodHead {
		size = 0 // net/http sends none of what a handler writes
	}
	attrs := Attributes{
		"http.request.method":          text.Attribute(r.Method),
		"url.path":                     text.Attribute(path),
		"http.response.status_code":    sw.status,
		"http.response.body.size":      size,
		"http.server.request.duration": time.Since(start).Seconds(),
	}
	// ServeMux sets Pattern on the request it routes, which is this one
	// unless an inner handler replaced it.
	route := text.Attribute(r.Pattern)
	if route != "" {
		attrs["http.route"] = route
	} else {
		route = path
	}
	// The action names the request's method: a pattern's own ("GET
	// /items/{id}", which also serves HEAD) gives way to it.
	if method, rest, ok := strings.Cut(route, " "); ok && !strings.Contains(method, "/") {
		route = strings.TrimLeft(rest, " ")
	}
	route = r.Method + " " + route
	if r.ContentLength > 0 {
		attrs["http.request.body.size"] = r.ContentLength
	}
	outcome := "success"
	switch {
	case sw.status == http.StatusUnauthorized || sw.status == http.StatusForbidden:
		outcome = "denied"
	case sw.status >= 400:
		outcome = "failure"
	}
	e := Event{
		ID:         NewID(),
		Type:       "api.call",
		Time:       start.UTC().Format(time.RFC3339Nano),
		Tenant:     o.Tenant,
		Actor:      &actor,
		Action:     text.Field(route),
		Outcome:    outcome,
		API:        o.API,
		Attributes: attrs,
	}
	e.TraceID, e.SpanID = traceParent(r.Header.Get("Traceparent"))
	return e
}

// remoteIP is the host part of a RemoteAddr (or an address alone), or ""
// if it is not an IP address (the server refuses anything else in
// actor.ip).
func remoteIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if net.ParseIP(host) == nil {
		return ""
	}
	return host
}

// traceParent returns the trace and parent span ids of a W3C traceparent
// header ("00-<32 hex>-<16 hex>-<2 hex>"), or empty strings when it is not
// one (ids of zeros are invalid, as W3C Trace Context says).
func traceParent(h string) (traceID, spanID string) {
	parts := strings.Split(h, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || len(parts[2]) != 16 || !isHex(parts[1]) || !isHex(parts[2]) ||
		strings.Trim(parts[1], "0") == "" || strings.Trim(parts[2], "0") == "" {
		return "", ""
	}
	return parts[1], parts[2]
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// statusWriter records the status code and size of a response. In Sync
// mode (held != nil) it holds the response back until release.
type statusWriter struct {
	http.ResponseWriter
	status   int
	written  int64
	hijacked bool
	held     *bytes.Buffer
	// header is, in Sync mode, the header as it was when the handler
	// wrote the status: what net/http would have sent.
	header http.Header
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status != 0 {
		return // net/http would log a superfluous call; the first one counts
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // informational, such as 103 Early Hints
		return
	}
	w.status = code
	if w.held == nil {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.header = w.ResponseWriter.Header().Clone()
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.held != nil {
		n, _ := w.held.Write(p)
		w.written += int64(n)
		return n, nil
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// Flush sends what was written so far, except in Sync mode, where nothing
// leaves before the event is recorded.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.held == nil {
		http.NewResponseController(w.ResponseWriter).Flush()
	}
}

// Hijack hands the connection to the handler (for WebSocket upgrades); the
// request is recorded with status 101.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
		w.held = nil
		if w.status == 0 {
			w.status = http.StatusSwitchingProtocols
		}
	}
	return conn, rw, err
}

// Unwrap lets http.ResponseController reach the underlying writer's other
// features (deadlines, full duplex).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// release sends a held response.
func (w *statusWriter) release() {
	if w.held == nil || w.hijacked {
		return
	}
	h := w.ResponseWriter.Header()
	trailers := http.Header{}
	if w.header != nil {
		// Headers set after WriteHeader are not sent, as without Sync;
		// trailers are, once the body is.
		for k, v := range h {
			if strings.HasPrefix(k, http.TrailerPrefix) || w.declaredTrailer(k) {
				trailers[k] = v
			}
		}
		clear(h)
		maps.Copy(h, w.header)
	}
	w.ResponseWriter.WriteHeader(w.status)
	w.ResponseWriter.Write(w.held.Bytes())
	maps.Copy(h, trailers)
}

// declaredTrailer reports whether the header sent names k in "Trailer".
func (w *statusWriter) declaredTrailer(k string) bool {
	for _, v := range w.header.Values("Trailer") {
		for name := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(name)) == k {
				return true
			}
		}
	}
	return false
}
