package httpapi

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/privacy"
)

// Subjects is what the API needs of the key catalog for pseudonyms and
// erasure (the keyring).
type Subjects interface {
	LookupSubject(ctx context.Context, tenant, subject string) (*crypto.Subject, bool, error)
	// EraseSubject destroys the subject's keys and keeps the erasure as
	// pending, in one step.
	EraseSubject(ctx context.Context, tenant, subject, requester, tokenID string) (crypto.Erasure, error)
	// PendingErasures returns the erasures whose records may not be in the
	// log yet; ErasureRecorded notes one whose record is.
	PendingErasures(ctx context.Context) ([]crypto.Erasure, error)
	ErasureRecorded(ctx context.Context, id string) error
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
	e, err := s.Subjects.EraseSubject(r.Context(), tenant, subject, p.Name, p.TokenID)
	if err != nil {
		// The keys may be destroyed (and the erasure kept) even so, when
		// only what follows the commit failed: Run looks.
		s.erasuresPending.Store(true)
		s.writeError(w, r, err)
		return
	}
	scrubbed, receipt, err := s.recordErasure(r.Context(), e)
	if err != nil {
		// Erasing again would change nothing: the answer says so.
		s.log.Warn("subject erased, its record not yet in the log", "tenant", tenant, "token", p.TokenID, "err", err)
		s.writeError(w, r, errorf(http.StatusServiceUnavailable, "unavailable", "the subject's keys were destroyed, but the erasure is not recorded yet ("+
			err.Error()+"); the server records it as soon as the log takes writes, with nothing more to do"))
		return
	}
	s.log.Info("subject erased", "tenant", tenant, "token", p.TokenID, "keys_destroyed", e.KeysDestroyed,
		"index_rows_scrubbed", scrubbed, "record", receipt.Results[0].Index)
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant": tenant, "pseudonym": e.Pseudonym, "keys_destroyed": e.KeysDestroyed,
		"index_rows_scrubbed": scrubbed, "event": receipt.Results[0], "checkpoint": string(receipt.Checkpoint),
	})
}

// recordErasure scrubs the erased pseudonym from the query index, records
// the erasure in the log and notes it recorded. The record has the
// erasure's id, so an erasure recorded again (after a crash between the two
// steps) is still one record. Until it is noted, the erasure stays pending
// and Run tries it again.
func (s *Server) recordErasure(ctx context.Context, e crypto.Erasure) (int64, ingest.Receipt, error) {
	var scrubbed int64
	if e.Pseudonym != "" {
		var err error
		if scrubbed, err = s.Scrubber.ScrubActor(ctx, e.Tenant, e.Pseudonym); err != nil {
			s.erasuresPending.Store(true)
			return 0, ingest.Receipt{}, err
		}
	}
	// The record names the subject only by its pseudonym, which nothing
	// can link to it any more.
	ev := event.Event{
		ID: e.ID, Type: privacy.TypeErasure, Tenant: e.Tenant, Time: e.At.UTC().Format(time.RFC3339Nano),
		Action: "erase", Outcome: "success",
		Actor:    &event.Actor{ID: e.Requester, Type: "service"},
		Resource: &event.Resource{Type: "subject", ID: e.Pseudonym},
		Attributes: map[string]any{
			"privacy.keys_destroyed":      e.KeysDestroyed,
			"privacy.index_rows_scrubbed": scrubbed,
			"aitrail.token_id":            e.TokenID,
		},
	}
	// The keys destroyed, so that a key catalog restored from a backup
	// older than the erasure forgets them again (privacy.Guard).
	maps.Copy(ev.Attributes, privacy.KeyIDAttributes(e.KeyIDs))
	receipt, err := s.Ingest.Append(ctx, system, []event.Event{ev})
	if err != nil {
		s.erasuresPending.Store(true)
		return 0, ingest.Receipt{}, err
	}
	if err := s.Subjects.ErasureRecorded(ctx, e.ID); err != nil {
		// The record is in the log; recording it again finds it there.
		s.erasuresPending.Store(true)
		s.log.Warn("couldn't note an erasure as recorded; it is tried again", "record", receipt.Results[0].Index, "err", err)
	}
	return scrubbed, receipt, nil
}

// RecordErasures records the erasures whose keys are destroyed but whose
// records may not be in the log: one the process stopped before recording,
// or whose record the log refused. The server calls it when it starts; Run
// calls it again while any are left. It returns the first error.
func (s *Server) RecordErasures(ctx context.Context) error {
	if s.Subjects == nil {
		return nil
	}
	s.erasuresPending.Store(false)
	pending, err := s.Subjects.PendingErasures(ctx)
	if err != nil {
		s.erasuresPending.Store(true)
		return err
	}
	for _, e := range pending {
		_, receipt, err := s.recordErasure(ctx, e)
		if err != nil {
			return fmt.Errorf("couldn't record the erasure %s of %s: %w", e.ID, e.At.UTC().Format(time.RFC3339), err)
		}
		s.log.Info("pending erasure recorded", "tenant", e.Tenant, "token", e.TokenID, "erased_at", e.At, "record", receipt.Results[0].Index)
	}
	return nil
}
