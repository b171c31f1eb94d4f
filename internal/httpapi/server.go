// Package httpapi serves aitrail's public HTTP API (see docs/api.md): event
// ingest and query, the model deployment registry, the C2SP log under /log/,
// proofs, tokens, health and metrics. It authenticates every /v1 request, enforces roles and tenants,
// and maps domain errors to the JSON error body in one place. It never logs
// event content or secrets.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
	"github.com/aitrail/aitrail/internal/merkle"
)

// Ledger is what the API needs of the log.
type Ledger interface {
	Append(ctx context.Context, items []ledger.Item) (ledger.Receipt, error)
	Size() uint64
	Checkpoint() []byte
	Tile(id merkle.TileID) ([]byte, error)
	Bundle(n uint64, w int) ([]byte, error)
	Blob(index uint64) ([]byte, error)
	InclusionProof(index, size uint64) ([]merkle.Hash, error)
	ConsistencyProof(from, to uint64) ([]merkle.Hash, error)
	LeafHash(index uint64) (merkle.Hash, error)
}

// Index is what the API needs of the query index.
type Index interface {
	Query(ctx context.Context, q index.Query) (index.Page, error)
	Get(ctx context.Context, tenants []string, tenant, id string) (index.Hit, error)
}

// Opener decrypts event content.
type Opener interface {
	Open(ctx context.Context, keyID string, blob, aad []byte) ([]byte, error)
}

// Server is the HTTP API. Fill in every field, then call Handler.
type Server struct {
	Ledger Ledger
	Index  Index
	Opener Opener
	// Subjects and Scrubber serve pseudonym searches and erasure; with
	// Subjects nil, actor filters match stored ids and erasure is off.
	Subjects Subjects
	Scrubber Scrubber
	// AccessWindow is how often counted accesses (refused requests, entry
	// bundle downloads) are recorded; see Run. Default DefaultAccessWindow.
	AccessWindow time.Duration
	Ingest       *ingest.Pipeline
	// Models, if set, serves GET /v1/models from the deployment registry.
	Models    Models
	Auth      *authz.Authenticator
	PublicKey string // the log's note verifier key
	// Capture handlers, mounted when set: OpenAI under /openai/, Anthropic
	// under /anthropic/, OTLP under /otlp/. Each receives only requests
	// already authenticated with the ingest role, the principal in the
	// context (authz.PrincipalFrom), and with r.URL.Path unchanged.
	OpenAI, Anthropic, OTLP http.Handler
	// MaxBodyBytes bounds a request body after decompression.
	MaxBodyBytes int64
	// BodyBudget, if set, bounds the memory of the bodies of ingest and
	// capture requests, and of the answers holding records or content,
	// being handled at once (httpbody.Budget).
	BodyBudget *httpbody.Budget
	// AnswerWriteTime is how long each write of an answer may take to be
	// taken by the client (answerDeadlines). Zero values take a minute and
	// a second.
	AnswerWriteTime WriteTimes
	// Ready reports whether writes can be accepted, with details.
	Ready    func() (bool, map[string]any)
	Registry *prometheus.Registry
	Logger   *slog.Logger
	Now      func() time.Time

	log     *slog.Logger
	metrics *metrics
	access  accessCounts
	// reported holds the integrity failures already recorded, by check and
	// record index: each is recorded once per run, however often it is read.
	reported sync.Map
	// erasuresPending is set when an erasure's record may be missing from
	// the log (RecordErasures).
	erasuresPending atomic.Bool
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	s.log = s.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Registry == nil {
		s.Registry = prometheus.NewRegistry()
	}
	if s.AnswerWriteTime.Base == 0 {
		s.AnswerWriteTime.Base = time.Minute
	}
	if s.AnswerWriteTime.PerMiB == 0 {
		s.AnswerWriteTime.PerMiB = time.Second
	}
	s.metrics = newMetrics(s.Registry)

	mux := http.NewServeMux()
	handle := func(pattern, route string, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(route, h))
	}
	handle("GET /healthz", "/healthz", s.healthz)
	handle("GET /readyz", "/readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))

	// Requests that may carry large bodies, or answer with large content,
	// have them charged to the budget, once authenticated.
	budgeted := func(h http.HandlerFunc) http.HandlerFunc {
		if s.BodyBudget == nil {
			return h
		}
		return s.BodyBudget.Wrap(h).ServeHTTP
	}

	handle("GET /log/key", "/log/key", s.logKey)
	handle("GET /log/checkpoint", "/log/checkpoint", s.logCheckpoint)
	handle("GET /log/tile/", "/log/tile", budgeted(s.logTile)) // entry bundles
	handle("POST /v1/events", "/v1/events", s.authed(authz.RoleIngest, budgeted(s.ingest)))
	handle("GET /v1/events", "/v1/events", s.authed(authz.RoleRead, budgeted(s.query)))
	handle("GET /v1/events/{id}", "/v1/events/{id}", s.authed(authz.RoleRead, budgeted(s.getEvent)))
	handle("GET /v1/proof/inclusion", "/v1/proof/inclusion", s.authed("", s.inclusionProof))
	handle("GET /v1/proof/consistency", "/v1/proof/consistency", s.authed("", s.consistencyProof))
	if s.Models != nil {
		handle("GET /v1/models", "/v1/models", s.authed(authz.RoleRead, s.listModels))
		handle("GET /v1/models/{name...}", "/v1/models/{name}", s.authed(authz.RoleRead, s.listModels))
	}
	if s.Subjects != nil {
		handle("POST /v1/subjects/{tenant}/{subject}/erase", "/v1/subjects/{tenant}/{subject}/erase", s.authed(authz.RoleErase, s.eraseSubject))
	}
	handle("GET /v1/alerts", "/v1/alerts", s.authed(authz.RoleRead, s.listAlerts))
	handle("POST /v1/alerts/{id}/ack", "/v1/alerts/{id}/ack", s.authed("", s.ackAlert))
	handle("POST /v1/tokens", "/v1/tokens", s.authed(authz.RoleAdmin, s.createToken))
	handle("GET /v1/tokens", "/v1/tokens", s.authed(authz.RoleAdmin, s.listTokens))
	handle("DELETE /v1/tokens/{id}", "/v1/tokens/{id}", s.authed(authz.RoleAdmin, s.deleteToken))

	for prefix, h := range map[string]http.Handler{"/openai/": s.OpenAI, "/anthropic/": s.Anthropic, "/otlp/": s.OTLP} {
		if h != nil {
			handle(prefix, prefix, s.authed(authz.RoleIngest, budgeted(h.ServeHTTP)))
		}
	}

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "no such endpoint"))
	})
	return s.answerDeadlines(securityHeaders(s.canonicalPaths(mux)))
}

// answerDeadlines gives writing every answer a deadline: each write must be
// taken by the client within AnswerWriteTime.Base, and a second more
// (PerMiB) for each MiB it holds, or the connection is closed. Without it a
// client that stops reading its answers - sending request after request on
// one connection without reading what comes back, or leaving a stream
// unread - holds that connection, one of limits.max_connections, for as
// long as it likes. The deadline runs only while the answer is written: a
// handler may take as long as it needs between writes (a model thinking).
func (s *Server) answerDeadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &deadlineWriter{ResponseWriter: w, times: &s.AnswerWriteTime}
		next.ServeHTTP(dw, r)
		dw.extend(0) // for what the server writes once the handler returns
	})
}

// WriteTimes bound how long a write of an answer may take: Base, and PerMiB
// more for each MiB it holds.
type WriteTimes struct{ Base, PerMiB time.Duration }

// deadlineWriter moves the connection's write deadline ahead of each write.
type deadlineWriter struct {
	http.ResponseWriter
	times *WriteTimes
	until time.Time // the deadline last set
}

// extend makes sure a write of n bytes has its time: the deadline is moved
// when it would move by more than half of Base, or the write is large (it
// has a second more per MiB), so that an ordinary answer, written at once,
// sets it once.
func (w *deadlineWriter) extend(n int) {
	due := time.Now().Add(w.times.Base + time.Duration(n>>20)*w.times.PerMiB)
	if d := due.Sub(w.until); d > w.times.Base/2 || n >= 1<<20 && d > 0 {
		w.until = due
		http.NewResponseController(w.ResponseWriter).SetWriteDeadline(due)
	}
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.extend(len(b))
	return w.ResponseWriter.Write(b)
}

func (w *deadlineWriter) Flush() {
	w.extend(0)
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// canonicalPaths answers a path that is not in canonical form (an empty,
// "." or ".." segment, as in //v1/events) 404, as any unknown path, instead
// of letting the mux redirect it: a redirect has clients send the method,
// the body and the token again, to a path they did not ask for.
func (s *Server) canonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As written: a percent-encoded slash or dot is part of a segment
		// (an event id such as https://example.com/1), as the mux reads it.
		p := r.URL.EscapedPath()
		if trimmed := strings.TrimSuffix(p, "/"); p != "/" && path.Clean(p) != trimmed {
			s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "no such endpoint: the path is not in canonical form"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// securityHeaders sets headers every response should carry, and answers a
// method the route does not allow with the JSON error body.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"], h["Cache-Control"] = nosniff, noStore
		next.ServeHTTP(w, r)
	})
}

// Header values every response carries, shared rather than made for each
// (Header.Set allocates them). Sharing is safe: Header.Set and Del replace a
// response's slice and Add extends it into a new array (these have no spare
// capacity); nothing writes into one.
var (
	nosniff  = []string{"nosniff"}
	noStore  = []string{"no-store"}
	jsonType = []string{"application/json"}
)

// authed wraps h with bearer authentication and, if role is set, a role
// check. The principal is in the request context.
func (s *Server) authed(role authz.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if role != "" && !p.Has(role) {
			s.writeError(w, r, errorf(http.StatusForbidden, "forbidden", "this token lacks the "+string(role)+" role"))
			return
		}
		h(w, r.WithContext(authz.WithPrincipal(r.Context(), p)))
	}
}

// authenticate reads the bearer token; Anthropic's clients send their key in
// X-Api-Key instead, so the Anthropic proxy accepts that too.
func (s *Server) authenticate(r *http.Request) (authz.Principal, error) {
	h := r.Header.Get("Authorization")
	if k := r.Header.Get("X-Api-Key"); h == "" && k != "" && strings.HasPrefix(r.URL.Path, "/anthropic/") {
		return s.Auth.Authenticate(r.Context(), strings.TrimSpace(k))
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return authz.Principal{}, authz.ErrUnauthenticated
	}
	return s.Auth.Authenticate(r.Context(), strings.TrimSpace(tok))
}

func principalFrom(ctx context.Context) authz.Principal {
	p, _ := authz.PrincipalFrom(ctx)
	return p
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ok, details := true, map[string]any{}
	if s.Ready != nil {
		ok, details = s.Ready()
	}
	// Erasures whose keys are destroyed but whose records the log has not
	// taken yet (RecordErasures).
	if s.Subjects != nil {
		if pending, err := s.Subjects.PendingErasures(r.Context()); err == nil && len(pending) > 0 {
			if details == nil {
				details = map[string]any{}
			}
			details["erasures_pending"] = len(pending)
		}
	}
	status, word := http.StatusOK, "ready"
	if !ok {
		status, word = http.StatusServiceUnavailable, "not_ready"
	}
	writeJSON(w, status, map[string]any{"status": word, "details": details})
}
