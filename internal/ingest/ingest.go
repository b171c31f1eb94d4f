// Package ingest is the one path every event takes into the log, whichever
// door it came through (the events API, the recording proxies, OTLP, the
// SDK): validate and normalise, check the caller may write the tenant,
// complete records from the model registry, encrypt content, encode
// canonically, append atomically, and tell the registry what was stored. A
// nil error from Append means every event is durable.
//
// It never logs and never keeps event content.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// Ledger is what ingest needs of the log: an atomic, durable, idempotent
// append (see ledger.Ledger.Append), and whether it takes appends at all
// (ledger.Ledger.Err).
type Ledger interface {
	Append(ctx context.Context, items []ledger.Item) (ledger.Receipt, error)
	Err() error
}

// Sealer encrypts event content under a data key of scope.
type Sealer interface {
	Seal(ctx context.Context, scope string, plaintext, aad []byte) (blob []byte, keyID string, err error)
}

// Registry checks, completes and learns from records on their way into the
// log (package registry implements it). Its methods must be safe for
// concurrent use and must not fail: a registry that cannot decide leaves a
// record as it is.
type Registry interface {
	// Check returns the problems that make rec unacceptable, with Field
	// relative to the event (".model.version"); Append refuses the whole
	// batch with them as invalid input.
	Check(rec *event.Record) []event.Problem
	// Resolve completes rec in place (model version, markers) before it is
	// encoded, from what the registry knows of records acknowledged so far.
	Resolve(rec *event.Record)
	// Committed is called for each newly stored record once it is durable
	// at index, before Append returns.
	Committed(index uint64, rec *event.Record)
}

// Pipeline appends events. Fill in Ledger, Sealer and Limits before use; it
// is safe for concurrent use.
type Pipeline struct {
	Ledger Ledger
	// Sealer seals content when Subjects is nil; with Subjects, each
	// subject seals its own.
	Sealer Sealer
	Limits event.Limits
	// Registry, if set, checks and completes records and learns from them
	// (see Registry); nil means records are stored as normalised.
	Registry Registry
	// Subjects, if set, pseudonymises personal identifiers and seals each
	// event's content under its subject's key (see protect); nil stores
	// them as sent and seals content with Sealer under the tenant.
	Subjects Subjects
	// ScanContent, if set, looks at each event's content before it is
	// encrypted and returns the names of the suspicious patterns it found
	// (comma-separated, "" for none); they are stored in the record's
	// attribute ContentMarkersAttr, the only trace of the content the rules
	// can see.
	ScanContent func(tenant string, content []byte) string
	// Now is the clock that stamps received_at (time.Now if nil).
	Now func() time.Time
	// Admit, if set, is asked before every append but the server's own
	// (SystemTokenID) and those with an Admitted context; an error refuses
	// the append. LagLimit.Admit keeps a follower from falling too far
	// behind; SpaceReserve.Admit keeps the disk from filling up.
	Admit func(ctx context.Context) error
	// Rate, if set, bounds the events each token may append, but for
	// those with an Admitted context (the outcome of a call whose request
	// was taken), which it does not count.
	Rate *TokenRate
}

type admittedKey struct{}

// Admitted returns ctx marking the appends made with it as the sequel of
// one Admit (and Rate) already let through, which neither is asked about
// again: the outcome of a proxied call whose request event was recorded is
// recorded too, from the reserve if the disk has meanwhile run short of
// space, and whatever the token's rate.
func Admitted(ctx context.Context) context.Context {
	return context.WithValue(ctx, admittedKey{}, true)
}

// ContentMarkersAttr is the attribute that names the suspicious patterns
// found in an event's content.
const ContentMarkersAttr = "aitrail.content.markers"

// Subjects gives the pseudonymiser of a (tenant, subject): the keyring.
type Subjects interface {
	Subject(ctx context.Context, tenant, subject string) (*crypto.Subject, error)
	// PrepareSubjects creates the keys of a batch's new subjects together
	// (crypto.Keyring.PrepareSubjects).
	PrepareSubjects(ctx context.Context, uses []crypto.SubjectUse) error
}

// Result is the outcome of one appended event.
type Result struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
	// Duplicate is true when an event with the same tenant and id was
	// already in the log: nothing new was stored and Index is the original's.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Receipt acknowledges an Append: one result per event, in order, and a
// signed checkpoint covering all of them.
type Receipt struct {
	Results    []Result
	Checkpoint []byte
}

// Append validates events (with the registry's checks), checks p may write
// every tenant they name, completes them from the registry, encrypts their
// content and appends them as one atomic batch. Errors: an
// *event.Error naming each invalid event, an *apierr.Error (403) for a tenant
// p may not write, or the ledger's (ErrPushback, ErrClosed, …). Nothing is
// stored unless the error is nil.
//
// The events' attribute maps become the stored records' (see
// event.Normalize) and are changed in place: numbers made float64, legacy
// names renamed, personal values pseudonymised. The caller must not change
// them after Append, even when it fails, except to append them again.
func (pl *Pipeline) Append(ctx context.Context, p authz.Principal, events []event.Event) (Receipt, error) {
	// A log that takes no appends refuses them before anything is done for
	// them: pseudonyms and content keys would be stored for nothing, or fail
	// on the same full disk with a less telling error.
	if err := pl.Ledger.Err(); err != nil {
		return Receipt{}, err
	}
	now := time.Now
	if pl.Now != nil {
		now = pl.Now
	}
	if p.TokenID != SystemTokenID && ctx.Value(admittedKey{}) == nil {
		if err := pl.Rate.take(p, len(events), now()); err != nil {
			return Receipt{}, err
		}
		if pl.Admit != nil {
			if err := pl.Admit(ctx); err != nil {
				return Receipt{}, err
			}
		}
	}
	records, contents, err := event.NormalizeAll(events, now(), pl.Limits)
	if err != nil {
		return Receipt{}, err
	}
	if err := pl.check(p, records); err != nil {
		return Receipt{}, err
	}
	var denied []any
	for i, rec := range records {
		if !p.CanSeeTenant(rec.Tenant) {
			denied = append(denied, map[string]any{"index": i, "field": fmt.Sprintf("events[%d].tenant", i),
				"message": "this token may not write to that tenant"})
		}
	}
	if len(denied) > 0 {
		return Receipt{}, apierr.New(http.StatusForbidden, "forbidden", "the token may not write to every tenant in the request", denied...)
	}
	if err := pl.prepare(ctx, records, contents); err != nil {
		return Receipt{}, err
	}
	items := make([]ledger.Item, len(records))
	var tooLarge []event.Problem
	for i := range records {
		rec := &records[i]
		subject, err := pl.protect(ctx, rec)
		if err != nil {
			return Receipt{}, err
		}
		if pl.Registry != nil {
			pl.Registry.Resolve(rec)
		}
		var blob []byte
		if contents[i] != nil && pl.ScanContent != nil {
			if m := pl.ScanContent(rec.Tenant, contents[i]); m != "" {
				if rec.Attributes == nil {
					rec.Attributes = map[string]any{}
				}
				rec.Attributes[ContentMarkersAttr] = m
			}
		}
		if contents[i] != nil {
			var keyID string
			aad := crypto.ContentAAD(rec.Tenant, rec.ID)
			if subject != nil {
				blob, keyID, err = subject.Seal(ctx, contents[i], aad)
			} else {
				blob, keyID, err = pl.Sealer.Seal(ctx, rec.Tenant, contents[i], aad)
			}
			if err != nil {
				return Receipt{}, fmt.Errorf("couldn't encrypt content: %w", err)
			}
			rec.Content = &event.ContentRef{Digest: crypto.Digest(blob), KeyID: keyID, Size: int64(len(contents[i]))}
			rec.NotePlain(rec.Content.Digest) // "sha256:" and hex digits
		}
		data, err := event.Canonical(rec)
		var ee *event.Error
		if errors.As(err, &ee) {
			// Normalize left room for pseudonyms and the content's
			// reference: what the registry or the content scan added
			// took it past the limit.
			for _, pr := range ee.Problems {
				pr.Index, pr.Field = i, fmt.Sprintf("events[%d]", i)
				pr.Message += ", with what the server adds (the model version from the registry, content markers)"
				tooLarge = append(tooLarge, pr)
			}
			continue
		} else if err != nil {
			return Receipt{}, err
		}
		// Followers close to the head get rec itself (ledger.Entry.Value,
		// event.RecordFrom): decoding data gives exactly rec
		// (FuzzValueIsTheRecord).
		items[i] = ledger.Item{Key: Key(rec.Tenant, rec.ID), Record: data, Blob: blob, Value: rec}
	}
	if len(tooLarge) > 0 {
		return Receipt{}, &event.Error{Code: "too_large", Problems: tooLarge}
	}
	lr, err := pl.Ledger.Append(ctx, items)
	if err != nil {
		return Receipt{}, err
	}
	out := Receipt{Results: make([]Result, len(records)), Checkpoint: lr.Checkpoint}
	for i, res := range lr.Results {
		out.Results[i] = Result{ID: records[i].ID, Index: res.Index, Duplicate: res.Duplicate}
		if pl.Registry != nil && !res.Duplicate {
			pl.Registry.Committed(res.Index, &records[i])
		}
	}
	return out, nil
}

// prepare has the keys of the subjects records name, and of their content,
// created together before protect and Seal need them one by one.
func (pl *Pipeline) prepare(ctx context.Context, records []event.Record, contents [][]byte) error {
	if pl.Subjects == nil {
		return nil
	}
	uses := make([]crypto.SubjectUse, len(records))
	for i := range records {
		uses[i] = crypto.SubjectUse{Tenant: records[i].Tenant, Content: contents[i] != nil}
		if a := records[i].Actor; a != nil {
			uses[i].Subject = a.ID
		}
	}
	if err := pl.Subjects.PrepareSubjects(ctx, uses); err != nil {
		return fmt.Errorf("couldn't pseudonymise: %w", err)
	}
	return nil
}

// protect replaces rec's personal identifiers — the actor's id, IP, user
// agent and session, and event.PersonalAttributes — by pseudonyms of the
// subject the actor id names, and returns that subject, which seals its
// content (nil without Subjects). Values that already are pseudonyms are
// kept. The id, address and user agent of a service or system actor name
// no person and are kept, so that the log says which machine acted.
func (pl *Pipeline) protect(ctx context.Context, rec *event.Record) (*crypto.Subject, error) {
	if pl.Subjects == nil {
		return nil, nil
	}
	subject := ""
	if rec.Actor != nil {
		subject = rec.Actor.ID
	}
	s, err := pl.Subjects.Subject(ctx, rec.Tenant, subject)
	if err != nil {
		return nil, fmt.Errorf("couldn't pseudonymise: %w", err)
	}
	hide := func(v string) string {
		if v == "" || strings.HasPrefix(v, crypto.PseudonymPrefix) {
			return v
		}
		p := s.Pseudonym(v) // its prefix and hex digits: nothing to escape
		rec.NotePlain(p)
		return p
	}
	if a := rec.Actor; a != nil {
		if a.Type != "service" && a.Type != "system" {
			a.ID, a.IP, a.UserAgent = hide(a.ID), hide(a.IP), hide(a.UserAgent)
		}
		// A session is a conversation, perhaps a person's, whoever acts.
		a.SessionID = hide(a.SessionID)
	}
	if len(rec.Attributes) < len(event.PersonalAttributes) {
		for k, v := range rec.Attributes {
			if v, ok := v.(string); ok && personal[k] {
				rec.Attributes[k] = hide(v)
			}
		}
	} else {
		for _, k := range event.PersonalAttributes {
			if v, ok := rec.Attributes[k].(string); ok {
				rec.Attributes[k] = hide(v)
			}
		}
	}
	return s, nil
}

// personal is event.PersonalAttributes as a set.
var personal = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range event.PersonalAttributes {
		m[k] = true
	}
	return m
}()

// ServerTypes are the event types only the server itself records (as the
// principal whose TokenID is SystemTokenID): a producer sending one could
// forge evidence of a read, an erasure or an alert.
var ServerTypes = []string{"log.access", "privacy.erasure", "alert.fired", "alert.resolved", "alert.acknowledged", "integrity.failure"}

// SystemTokenID is the TokenID of the principal the server records its own
// events as. No token can have it: token ids are hexadecimal.
const SystemTokenID = "system"

// check refuses server-only types from anyone else and runs the registry's
// checks on every record; it returns an *event.Error naming each problem's
// event, or nil.
func (pl *Pipeline) check(p authz.Principal, records []event.Record) error {
	var problems []event.Problem
	for i := range records {
		if p.TokenID != SystemTokenID && slices.Contains(ServerTypes, records[i].Type) {
			problems = append(problems, event.Problem{Index: i, Field: fmt.Sprintf("events[%d].type", i),
				Message: "this type is recorded only by the server itself"})
		}
		if _, ok := records[i].Attributes[ContentMarkersAttr]; ok {
			problems = append(problems, event.Problem{Index: i, Field: fmt.Sprintf("events[%d].attributes", i),
				Message: "attribute " + ContentMarkersAttr + " is set only by the server"})
		}
		if pl.Registry == nil {
			continue
		}
		for _, pr := range pl.Registry.Check(&records[i]) {
			pr.Index, pr.Field = i, fmt.Sprintf("events[%d]%s", i, pr.Field)
			problems = append(problems, pr)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return &event.Error{Code: event.CodeInvalid, Problems: problems}
}

// Key is the ledger's idempotency key of an event: ids are unique per tenant.
func Key(tenant, id string) string { return tenant + "\x00" + id }
