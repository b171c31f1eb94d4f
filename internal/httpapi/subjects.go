package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/index"
)

// Subjects is what the API needs of the key catalog for pseudonyms and
// erasure (the keyring).
type Subjects interface {
	LookupSubject(ctx context.Context, tenant, subject string) (*crypto.Subject, bool, error)
	EraseSubject(ctx context.Context, tenant, subject string) (crypto.Erasure, error)
}

// Scrubber removes an erased subject's pseudonym from the query index.
type Scrubber interface {
	Tenants(ctx context.Context) ([]string, error)
	ScrubActor(ctx context.Context, tenant, actorID string) (int64, error)
}

// actorPseudonyms turns the actor filter, a plaintext actor id, into the
// pseudonyms it has in the tenants the query may reach, and the id itself
// (service and system actors are stored as sent). A filter that is already
// a pseudonym is kept. A person who is unknown, or erased, has no pseudonym,
// and the query then finds nothing. It returns the pseudonym of each tenant
// that has one: the record of the read in a tenant names only that
// tenant's, which would otherwise link them.
func (s *Server) actorPseudonyms(ctx context.Context, q *index.Query) (map[string]string, error) {
	if q.Actor == "" || s.Subjects == nil || strings.HasPrefix(q.Actor, crypto.PseudonymPrefix) {
		return nil, nil
	}
	tenants := []string{q.Tenant}
	if q.Tenant == "" {
		tenants = q.Tenants
		if tenants == nil {
			var err error
			if tenants, err = s.Scrubber.Tenants(ctx); err != nil {
				return nil, err
			}
		}
	}
	q.Actors = []string{q.Actor}
	byTenant := map[string]string{}
	for _, t := range tenants {
		sub, ok, err := s.Subjects.LookupSubject(ctx, t, q.Actor)
		if err != nil {
			return nil, err
		}
		if ok {
			byTenant[t] = sub.Pseudonym(q.Actor)
			q.Actors = append(q.Actors, byTenant[t])
		}
	}
	q.Actor = ""
	return byTenant, nil
}

// eraseSubject handles POST /v1/subjects/{tenant}/{subject}/erase: destroy
// the subject's salt and content keys, scrub its pseudonym from the query
// index, and record the erasure in the log.
func (s *Server) eraseSubject(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	tenant, subject := r.PathValue("tenant"), r.PathValue("subject")
	if !event.IsTenant(tenant) {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_request", "the tenant "+notATenant))
		return
	}
	if !p.CanSeeTenant(tenant) {
		s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "not found"))
		return
	}
	if subject == "" || len(subject) > 1024 {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_request", "the subject must be 1 to 1024 bytes"))
		return
	}
	e, err := s.Subjects.EraseSubject(r.Context(), tenant, subject)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var scrubbed int64
	if e.Pseudonym != "" {
		if scrubbed, err = s.Scrubber.ScrubActor(r.Context(), tenant, e.Pseudonym); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	// The record names the subject only by its pseudonym, which nothing
	// can link to it any more.
	ev := event.Event{
		Type: "privacy.erasure", Tenant: tenant, Action: "erase", Outcome: "success",
		Actor:    &event.Actor{ID: p.Name, Type: "service"},
		Resource: &event.Resource{Type: "subject", ID: e.Pseudonym},
		Attributes: map[string]any{
			"privacy.keys_destroyed":      e.KeysDestroyed,
			"privacy.index_rows_scrubbed": scrubbed,
			"aitrail.token_id":            p.TokenID,
		},
	}
	receipt, err := s.Ingest.Append(r.Context(), system, []event.Event{ev})
	if err != nil {
		s.writeError(w, r, fmt.Errorf("the subject's keys were destroyed, but the erasure could not be recorded: %w", err))
		return
	}
	s.log.Info("subject erased", "tenant", tenant, "token", p.TokenID, "keys_destroyed", e.KeysDestroyed,
		"index_rows_scrubbed", scrubbed, "record", receipt.Results[0].Index)
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant": tenant, "pseudonym": e.Pseudonym, "keys_destroyed": e.KeysDestroyed,
		"index_rows_scrubbed": scrubbed, "event": receipt.Results[0], "checkpoint": string(receipt.Checkpoint),
	})
}
