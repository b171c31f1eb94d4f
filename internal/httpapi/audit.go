package httpapi

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ingest"
)

// Reads are recorded in the log itself, so that who looked at what is as
// tamper-evident as what happened:
//
//   - every query and every read of an event appends a log.access record
//     before the answer is sent (fail closed: a read that cannot be
//     recorded is refused with 503);
//   - entry bundle downloads (verification, export) are counted per token
//     and recorded once per window;
//   - refused requests (401, 403) are counted per source address and
//     recorded as one access.attempt record per source and window, so a
//     flood of bad tokens cannot flood the log.

// DefaultAccessWindow is how often counted accesses are written out.
const DefaultAccessWindow = 10 * time.Second

// maxSources bounds the sources counted in one window; the rest are
// counted together under "other".
const maxSources = 10_000

// system is the principal the server records its own events as.
var system = authz.Principal{TokenID: ingest.SystemTokenID, Name: "aitrail", Root: true}

// readTenant is the tenant a read is recorded in when it names none of
// its own: reads across every tenant, and refused requests.
const readTenant = event.DefaultTenant

type attemptKey struct {
	source string // host of the remote address, or "other"
	status int
}

type attemptCount struct {
	n           int
	first, last time.Time
	routes      map[string]bool
}

type bundleCount struct {
	n               int
	first, last     uint64 // record range covered
	firstAt, lastAt time.Time
}

type throttleCount struct {
	requests, events int
	first, last      time.Time
}

// accessCounts holds the counted accesses of the current window.
type accessCounts struct {
	mu        sync.Mutex
	attempts  map[attemptKey]*attemptCount
	bundles   map[string]*bundleCount   // by token id
	throttled map[string]*throttleCount // by token id
}

// TokenIDHeader names, on the answer to a recorded read, the token id its
// log.access records name (aitrail.token_id): how a client that follows
// the log, such as aitrail tail, tells the records of its own reads.
const TokenIDHeader = "Aitrail-Token-Id"

// recordRead appends one log.access record per tenant whose records the
// read returned (or one in tenant, when it returned none), with the
// attributes attrs gives for that tenant, and names the token they name on
// the answer w (TokenIDHeader).
func (s *Server) recordRead(ctx context.Context, w http.ResponseWriter, p authz.Principal, action, tenant string, perTenant map[string]int, attrs func(tenant string) map[string]any) error {
	if len(perTenant) == 0 {
		perTenant = map[string]int{tenant: 0}
	}
	var evs []event.Event
	for _, t := range slices.Sorted(maps.Keys(perTenant)) {
		a := map[string]any{"log.access.records": perTenant[t], "aitrail.token_id": p.TokenID}
		maps.Copy(a, attrs(t))
		evs = append(evs, event.Event{
			Type: "log.access", Tenant: t, Action: action, Outcome: "success",
			Actor: &event.Actor{ID: p.TokenID, Type: "service"}, Attributes: a,
		})
	}
	if _, err := s.Ingest.Append(ctx, system, evs); err != nil {
		return fmt.Errorf("couldn't record the read in the log, so it is refused: %w", err)
	}
	w.Header().Set(TokenIDHeader, p.TokenID)
	return nil
}

// sameAttrs gives recordRead the same attributes for every tenant.
func sameAttrs(a map[string]any) func(string) map[string]any {
	return func(string) map[string]any { return a }
}

// recordedFilter is a query's filter as a log.access record keeps it: an
// actor filter as the pseudonyms searched for, free text withheld (it may
// name a person), no cursor.
func recordedFilter(v url.Values, actors []string) string {
	f := url.Values{}
	for k, vs := range v {
		switch k {
		case "cursor":
		case "q":
			f.Set(k, "[withheld]")
		case "actor":
			// Only pseudonyms: the id as typed may name a person.
			var ps []string
			for _, a := range actors {
				if strings.HasPrefix(a, crypto.PseudonymPrefix) {
					ps = append(ps, a)
				}
			}
			if len(ps) == 0 {
				ps = []string{"[no known subject]"}
			}
			f.Set(k, strings.Join(ps, ","))
		default:
			f[k] = vs
		}
	}
	s := f.Encode()
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}

// countRefused counts a refused request (401 or 403) of r's source.
func (s *Server) countRefused(r *http.Request, status int) {
	src, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		src = r.RemoteAddr
	}
	route := r.Method + " " + r.URL.Path
	if r.Pattern != "" {
		route = r.Pattern
	}
	now := s.Now()
	c := &s.access
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.attempts == nil {
		c.attempts = map[attemptKey]*attemptCount{}
	}
	k := attemptKey{src, status}
	a := c.attempts[k]
	if a == nil {
		if len(c.attempts) >= maxSources {
			k.source = "other"
			a = c.attempts[k]
		}
		if a == nil {
			a = &attemptCount{first: now, routes: map[string]bool{}}
			c.attempts[k] = a
		}
	}
	a.n++
	a.last = now
	if len(a.routes) < 8 {
		a.routes[route] = true
	}
}

// countBundle counts an entry bundle p downloaded.
func (s *Server) countBundle(p authz.Principal, first, last uint64) {
	now := s.Now()
	c := &s.access
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bundles == nil {
		c.bundles = map[string]*bundleCount{}
	}
	b := c.bundles[p.TokenID]
	if b == nil {
		b = &bundleCount{first: first, last: last, firstAt: now}
		c.bundles[p.TokenID] = b
	}
	b.n++
	b.first, b.last, b.lastAt = min(b.first, first), max(b.last, last), now
}

// CountRateLimited counts a request of the token refused for its rate
// (ingest.TokenRate) with the events it held: recorded once per window
// and token, as an access.attempt record.
func (s *Server) CountRateLimited(tokenID string, events int) {
	now := s.Now()
	c := &s.access
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.throttled == nil {
		c.throttled = map[string]*throttleCount{}
	}
	t := c.throttled[tokenID]
	if t == nil {
		t = &throttleCount{first: now}
		c.throttled[tokenID] = t
	}
	t.requests++
	t.events += events
	t.last = now
}

// flushAccess writes out the counted accesses of the window that ends now.
func (s *Server) flushAccess(ctx context.Context) {
	c := &s.access
	c.mu.Lock()
	attempts, bundles, throttled := c.attempts, c.bundles, c.throttled
	c.attempts, c.bundles, c.throttled = nil, nil, nil
	c.mu.Unlock()
	var evs []event.Event
	for k, a := range attempts {
		action := "authenticate"
		if k.status == http.StatusForbidden {
			action = "authorize"
		}
		ev := event.Event{
			Type: "access.attempt", Tenant: readTenant, Action: action, Outcome: "denied",
			Time: a.first.UTC().Format(time.RFC3339Nano),
			Attributes: map[string]any{
				"access.attempts": a.n, "access.first_seen": a.first.UTC().Format(time.RFC3339Nano),
				"access.last_seen": a.last.UTC().Format(time.RFC3339Nano), "http.response.status_code": k.status,
				"access.routes": strings.Join(slices.Sorted(maps.Keys(a.routes)), ", "),
			},
		}
		if k.source != "other" {
			// A client address is personal data: the pipeline stores it
			// as a pseudonym.
			ev.Actor = &event.Actor{IP: k.source, Type: "user"}
		}
		evs = append(evs, ev)
	}
	for tok, t := range throttled {
		evs = append(evs, event.Event{
			Type: "access.attempt", Tenant: readTenant, Action: "rate_limit", Outcome: "denied",
			Time:  t.first.UTC().Format(time.RFC3339Nano),
			Actor: &event.Actor{ID: tok, Type: "service"},
			Attributes: map[string]any{
				"access.attempts": t.requests, "access.events_refused": t.events,
				"access.first_seen": t.first.UTC().Format(time.RFC3339Nano), "access.last_seen": t.last.UTC().Format(time.RFC3339Nano),
				"http.response.status_code": http.StatusTooManyRequests, "aitrail.token_id": tok,
			},
		})
	}
	for tok, b := range bundles {
		evs = append(evs, event.Event{
			Type: "log.access", Tenant: readTenant, Action: "log.entries", Outcome: "success",
			Time:  b.firstAt.UTC().Format(time.RFC3339Nano),
			Actor: &event.Actor{ID: tok, Type: "service"},
			Attributes: map[string]any{
				"log.access.bundles": b.n, "log.access.first_record": b.first, "log.access.last_record": b.last,
				"log.access.last_seen": b.lastAt.UTC().Format(time.RFC3339Nano), "aitrail.token_id": tok,
			},
		})
	}
	if len(evs) == 0 {
		return
	}
	if _, err := s.Ingest.Append(ctx, system, evs); err != nil {
		s.log.Warn("couldn't record counted accesses; they are lost", "records", len(evs), "err", err)
	}
}

// Run writes out counted accesses every AccessWindow until ctx ends, then
// once more, and at the same pace records erasures left pending
// (RecordErasures). The server runs it beside the HTTP listener.
func (s *Server) Run(ctx context.Context) {
	w := s.AccessWindow
	if w <= 0 {
		w = DefaultAccessWindow
	}
	t := time.NewTicker(w)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushAccess(context.WithoutCancel(ctx))
			return
		case <-t.C:
			s.flushAccess(ctx)
			if s.erasuresPending.Load() {
				if err := s.RecordErasures(ctx); err != nil {
					s.log.Warn("erasures are still not recorded", "err", err)
				}
			}
		}
	}
}
