package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpbody"
)

type tokenRequest struct {
	Name    string   `json:"name"`
	Roles   []string `json:"roles"`
	Tenants []string `json:"tenants"`
	// The token's own limit on the events it may append (authz.Limit).
	EventsPerSecond float64 `json:"events_per_second"`
	BurstEvents     int     `json:"burst_events"`
}

type tokenJSON struct {
	ID              string    `json:"id"`
	Token           string    `json:"token,omitempty"`
	Name            string    `json:"name"`
	Roles           []string  `json:"roles"`
	Tenants         []string  `json:"tenants"`
	CreatedAt       time.Time `json:"created_at"`
	Root            bool      `json:"root,omitempty"`
	EventsPerSecond float64   `json:"events_per_second,omitempty"`
	BurstEvents     int       `json:"burst_events,omitempty"`
}

func tokenView(t authz.Token) tokenJSON {
	roles := make([]string, len(t.Roles))
	for i, r := range t.Roles {
		roles[i] = string(r)
	}
	return tokenJSON{ID: t.ID, Name: t.Name, Roles: roles, Tenants: t.Tenants, CreatedAt: t.CreatedAt, Root: t.Root,
		EventsPerSecond: t.Limit.EventsPerSecond, BurstEvents: t.Limit.BurstEvents}
}

// maxTokenBody bounds a token request.
const maxTokenBody = 64 << 10

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	body, _, err := httpbody.Read(w, r, maxTokenBody, "application/json")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req tokenRequest
	if err := decodeStrict(body, &req, `{"name":…,"roles":[…],"tenants":[…],"events_per_second":…,"burst_events":…}`); err != nil {
		s.writeError(w, r, err)
		return
	}
	roles := make([]authz.Role, 0, len(req.Roles))
	for _, name := range req.Roles {
		role, err := authz.ParseRole(name)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		roles = append(roles, role)
	}
	tok, secret, err := s.Auth.MintLimited(r.Context(), p, req.Name, roles, req.Tenants,
		authz.Limit{EventsPerSecond: req.EventsPerSecond, BurstEvents: req.BurstEvents})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// A token is power: none is handed out that the log does not record.
	if err := s.recordTokenChange(r.Context(), p, "token.create", tok); err != nil {
		if rerr := s.Auth.Revoke(context.WithoutCancel(r.Context()), p, tok.ID); rerr != nil {
			s.log.Error("couldn't take back a token whose creation was not recorded", "id", tok.ID, "err", rerr)
		}
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token created", "id", tok.ID, "by", p.TokenID)
	v := tokenView(tok)
	v.Token = secret
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := s.Auth.List(r.Context(), principalFrom(r.Context()))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]tokenJSON, len(toks))
	for i, t := range toks {
		out[i] = tokenView(t)
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	id := r.PathValue("id")
	if err := s.Auth.Revoke(r.Context(), p, id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token revoked", "id", id, "by", p.TokenID)
	// The token is revoked either way; if the record of it cannot be
	// written, the caller is told so (not to try again: the token is gone).
	if err := s.recordTokenChange(context.WithoutCancel(r.Context()), p, "token.revoke", authz.Token{ID: id}); err != nil {
		s.log.Error("a token was revoked, but the record of it could not be written", "id", id, "by", p.TokenID, "err", err)
		s.writeError(w, r, errorf(http.StatusInternalServerError, "revoked_unrecorded",
			"the token was revoked, but the record of the revocation could not be written to the log"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// recordTokenChange appends an admin.change record of a token minted or
// revoked by p, in tenant default (like the detector's record of rule
// changes): who did it, which token, and for a new one what it may do.
// The built-in rule privilege-change alerts on it.
func (s *Server) recordTokenChange(ctx context.Context, p authz.Principal, action string, t authz.Token) error {
	attrs := map[string]any{"aitrail.token_id": p.TokenID}
	if action == "token.create" {
		roles := make([]string, len(t.Roles))
		for i, r := range t.Roles {
			roles[i] = string(r)
		}
		attrs["token.roles"], attrs["token.tenants"] = strings.Join(roles, ","), strings.Join(t.Tenants, ",")
		if l := t.Limit; l.EventsPerSecond > 0 {
			attrs["token.events_per_second"] = l.EventsPerSecond
			if l.BurstEvents > 0 {
				attrs["token.burst_events"] = l.BurstEvents
			}
		}
	}
	ev := event.Event{Type: "admin.change", Tenant: event.DefaultTenant, Action: action, Outcome: "success",
		Actor:      &event.Actor{ID: p.TokenID, Type: "service"},
		Resource:   &event.Resource{Type: "token", ID: t.ID, Name: t.Name},
		Attributes: attrs}
	if _, err := s.Ingest.Append(ctx, system, []event.Event{ev}); err != nil {
		return fmt.Errorf("couldn't record the token change: %w", err)
	}
	return nil
}
