package crypto

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Pseudonyms and crypto-shredding.
//
// Personal identifiers enter the tree only as keyed pseudonyms,
// "hmac-sha256:<hex>", under a secret salt of the (tenant, subject) they
// belong to; the subject's content is sealed under a data key of its own.
// Both live in the key catalog, outside the tree. Erasing a subject
// destroys them: its pseudonyms can no longer be linked to anyone, its
// content no longer decrypts, and every proof still holds.
//
// The catalog must not name subjects in the clear either, so each subject is
// filed under a reference: HMAC of the subject under a per-tenant secret
// (the tenant's subject key, itself a wrapped key in the catalog).

// PseudonymPrefix starts every pseudonym.
const PseudonymPrefix = "hmac-sha256:"

// Scope kinds in the key catalog. A scope is kind|tenant|reference.
const (
	scopeSubjects = "subjects" // per tenant: the key that makes subject references
	scopeSalt     = "salt"     // per subject: the pseudonym key
	scopeContent  = "content"  // per subject: the content data key
)

// anonymous is the reference of events without an actor id: their
// identifiers are pseudonymised under a tenant-wide salt, and their content
// sealed under the tenant's key, as before subjects existed.
const anonymous = "-"

func scopeOf(kind, tenant, ref string) string { return kind + "|" + tenant + "|" + ref }

// macScope reports whether keys of scope are used as HMAC keys, so their raw
// bytes must be kept after unwrapping.
func macScope(scope string) bool {
	return strings.HasPrefix(scope, scopeSalt+"|") || strings.HasPrefix(scope, scopeSubjects+"|")
}

// Subject pseudonymises the identifiers of one (tenant, subject) and names
// the scope its content is sealed under. It is safe for concurrent use.
type Subject struct {
	tenant, ref  string
	salt         []byte
	contentScope string

	keyring *Keyring
	content atomic.Pointer[dataKey] // contentScope's current key, once Seal has looked it up

	mu   sync.Mutex
	seen map[string]string // value → pseudonym, for the few values a subject has
	// last is the last pseudonym made or found, read without the lock: a
	// subject is nearly always one value (its actor id), and the lock and
	// map lookup for every event were 2 % of encrypted ingest.
	last atomic.Pointer[pseudonymOf]
}

// pseudonymOf is a value and its pseudonym.
type pseudonymOf struct{ value, pseudonym string }

// maxSeen bounds the pseudonyms a Subject remembers.
const maxSeen = 16

// Pseudonym returns the keyed pseudonym of value: equal values of one
// subject give equal pseudonyms, so searches still work; without the salt
// nobody can tell whose they are.
func (s *Subject) Pseudonym(value string) string {
	if last := s.last.Load(); last != nil && last.value == value {
		return last.pseudonym
	}
	s.mu.Lock()
	p, ok := s.seen[value]
	s.mu.Unlock()
	if ok {
		s.last.Store(&pseudonymOf{value, p})
		return p
	}
	m := hmac.New(sha256.New, s.salt)
	m.Write([]byte(value))
	p = PseudonymPrefix + hex.EncodeToString(m.Sum(nil))
	s.mu.Lock()
	if s.seen == nil {
		s.seen = map[string]string{}
	}
	if len(s.seen) < maxSeen {
		s.seen[value] = p
	}
	s.mu.Unlock()
	s.last.Store(&pseudonymOf{value, p})
	return p
}

// ContentScope is the scope to seal the subject's content under.
func (s *Subject) ContentScope() string { return s.contentScope }

// Seal is Keyring.Seal under the subject's content scope. The scope's key
// is looked up once per Subject, not once per call.
func (s *Subject) Seal(ctx context.Context, plaintext, aad []byte) (blob []byte, keyID string, err error) {
	dk := s.content.Load()
	if dk == nil {
		if dk, err = s.keyring.currentKey(ctx, s.contentScope); err != nil {
			return nil, "", err
		}
		s.content.Store(dk)
	}
	return dk.seal(plaintext, aad)
}

// Subject returns the pseudonymiser of (tenant, subject), creating and
// durably storing its salt on first use. An empty subject is the tenant's
// anonymous subject, whose content is sealed under the tenant's scope.
func (k *Keyring) Subject(ctx context.Context, tenant, subject string) (*Subject, error) {
	s, _, err := k.subject(ctx, tenant, subject, true)
	return s, err
}

// LookupSubject is Subject without creating anything: ok is false when the
// subject never had a salt, or was erased.
func (k *Keyring) LookupSubject(ctx context.Context, tenant, subject string) (s *Subject, ok bool, err error) {
	return k.subject(ctx, tenant, subject, false)
}

// subjectKey names a Subject among those a Keyring keeps.
type subjectKey struct{ tenant, subject string }

// maxSubjects bounds the subjects a Keyring keeps in memory (each holds
// its keys and the pseudonyms it made, a kilobyte or more); beyond it the
// cache starts again empty.
const maxSubjects = 20_000

func (k *Keyring) subject(ctx context.Context, tenant, subject string, create bool) (*Subject, bool, error) {
	key := subjectKey{tenant, subject}
	k.subjectsMu.RLock()
	s, ok := k.subjects[key]
	gen := k.subjectsGen
	k.subjectsMu.RUnlock()
	if ok {
		return s, true, nil
	}
	s, ok, err := k.loadSubject(ctx, tenant, subject, create)
	if err != nil || !ok {
		return s, ok, err
	}
	k.subjectsMu.Lock()
	// An erasure since the lookup began may have destroyed what it found:
	// such a Subject is used once, never remembered.
	if k.subjectsGen == gen {
		if k.subjects == nil || len(k.subjects) >= maxSubjects {
			k.subjects = map[subjectKey]*Subject{}
		}
		k.subjects[key] = s
	}
	k.subjectsMu.Unlock()
	return s, true, nil
}

func (k *Keyring) loadSubject(ctx context.Context, tenant, subject string, create bool) (*Subject, bool, error) {
	if tenant == "" || strings.Contains(tenant, "|") {
		return nil, false, fmt.Errorf("crypto: invalid tenant for a subject")
	}
	ref, ok, err := k.reference(ctx, tenant, subject, create)
	if err != nil || !ok {
		return nil, false, err
	}
	salt, ok, err := k.macKey(ctx, scopeOf(scopeSalt, tenant, ref), create)
	if err != nil || !ok {
		return nil, false, err
	}
	return &Subject{tenant: tenant, ref: ref, salt: salt, contentScope: contentScope(tenant, ref), keyring: k}, true, nil
}

// reference returns the reference under which (tenant, subject)'s keys
// are stored: a keyed hash of the subject, or anonymous for none.
func (k *Keyring) reference(ctx context.Context, tenant, subject string, create bool) (string, bool, error) {
	if subject == "" {
		return anonymous, true, nil
	}
	refKey, ok, err := k.macKey(ctx, scopeOf(scopeSubjects, tenant, ""), create)
	if err != nil || !ok {
		return "", false, err
	}
	m := hmac.New(sha256.New, refKey)
	m.Write([]byte(subject))
	return hex.EncodeToString(m.Sum(nil)[:16]), true, nil
}

// contentScope is the scope content of the subject with reference ref is
// sealed under: the tenant's for the anonymous subject.
func contentScope(tenant, ref string) string {
	if ref == anonymous {
		return tenant
	}
	return scopeOf(scopeContent, tenant, ref)
}

// SubjectUse names a subject an append is about to pseudonymise, and
// whether it seals content for it.
type SubjectUse struct {
	Tenant, Subject string
	Content         bool
}

// PrepareSubjects makes sure that every subject uses names has its salt,
// and its content key if it seals content, creating those missing
// together: their keys are stored with one durable write, where Subject
// and Seal store each with one of its own (a batch naming a thousand new
// users would wait for a thousand writes). Subject and Seal then find
// them in memory. Uses with an invalid tenant are left for Subject to
// refuse.
func (k *Keyring) PrepareSubjects(ctx context.Context, uses []SubjectUse) error {
	// Scopes already in memory are left out, so that a request whose
	// subjects are all known queues nothing; repeats are left to makeKeys.
	var scopes []string
	need := func(scope string) {
		if _, ok := k.current.Load(scope); !ok {
			scopes = append(scopes, scope)
		}
	}
	for _, u := range uses {
		k.subjectsMu.RLock()
		s, ok := k.subjects[subjectKey{u.Tenant, u.Subject}]
		k.subjectsMu.RUnlock()
		switch {
		case ok:
			if u.Content && s.content.Load() == nil {
				need(s.contentScope)
			}
			continue
		case u.Tenant == "" || strings.Contains(u.Tenant, "|"):
			continue
		}
		ref, _, err := k.reference(ctx, u.Tenant, u.Subject, true)
		if err != nil {
			return err
		}
		need(scopeOf(scopeSalt, u.Tenant, ref))
		if u.Content {
			need(contentScope(u.Tenant, ref))
		}
	}
	return k.ensureKeys(ctx, scopes)
}

// macKey returns the HMAC key of scope, creating it if create is set.
func (k *Keyring) macKey(ctx context.Context, scope string, create bool) ([]byte, bool, error) {
	if !create {
		if _, ok := k.current.Load(scope); !ok {
			gen := k.erasures.Load()
			wk, found, err := k.store.CurrentKey(ctx, scope)
			if err != nil {
				return nil, false, fmt.Errorf("crypto: couldn't read key for a subject: %w", err)
			}
			if !found {
				return nil, false, nil
			}
			dk, err := k.unwrap(wk)
			if err != nil {
				return nil, false, err
			}
			if err := k.remember(ctx, dk, true, gen); errors.Is(err, ErrNotFound) {
				return nil, false, nil // erased in the meantime
			} else if err != nil {
				return nil, false, err
			}
		}
	}
	dk, err := k.currentKey(ctx, scope)
	if err != nil {
		return nil, false, err
	}
	return dk.mac, true, nil
}

// forgetSubject drops (tenant, subject) from memory and makes lookups in
// flight forget what they found.
func (k *Keyring) forgetSubject(tenant, subject string) {
	k.subjectsMu.Lock()
	delete(k.subjects, subjectKey{tenant, subject})
	k.subjectsGen++
	k.subjectsMu.Unlock()
}

// Erasure is an erasure of a subject's keys: what EraseSubject destroyed,
// and what the erasure's record in the log says. The key store keeps it
// among the pending erasures, in the same step as it destroys the keys,
// until the record is in the log (ErasureRecorded): an erasure is never
// left without a record, whatever stops the process in between.
type Erasure struct {
	// ID is the id of the erasure's record in the log.
	ID     string
	Tenant string
	// Pseudonym is the subject's pseudonym of its own id, computed before
	// the salt was destroyed: the records and index rows that name the
	// subject carry it. Empty when the subject had no salt.
	Pseudonym string
	// KeysDestroyed counts the salt and content data keys destroyed, and
	// KeyIDs names them: the record lists them, so that a key catalog
	// restored from a backup older than the erasure can be made to forget
	// them again (EraseKeys).
	KeysDestroyed int
	KeyIDs        []string
	// Requester names who asked for the erasure (a token's name), TokenID
	// the token.
	Requester, TokenID string
	// At is when the keys were destroyed.
	At time.Time
}

// EraseSubject destroys the salt and every content data key of (tenant,
// subject) in the catalog and in memory, and keeps the erasure among the
// pending ones in the same step (see Erasure). Afterwards the subject's
// pseudonyms cannot be linked to it and its content cannot be decrypted.
// Erasing a subject that has nothing (or was erased before) destroys
// nothing and is not an error; it is kept as pending too, to be recorded.
func (k *Keyring) EraseSubject(ctx context.Context, tenant, subject, requester, tokenID string) (Erasure, error) {
	if subject == "" {
		return Erasure{}, errors.New("crypto: erasure needs a subject")
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Erasure{}, fmt.Errorf("crypto: couldn't make the erasure's id: %w", err)
	}
	e := Erasure{ID: id.String(), Tenant: tenant, Requester: requester, TokenID: tokenID, At: time.Now().UTC()}
	k.forgetSubject(tenant, subject)
	defer k.forgetSubject(tenant, subject)
	s, ok, err := k.LookupSubject(ctx, tenant, subject)
	if err != nil {
		return Erasure{}, err
	}
	var scopes []string
	if ok {
		e.Pseudonym = s.Pseudonym(subject)
	} else {
		// The salt is gone; content keys may remain if an erasure by an
		// older aitrail (which destroyed them one scope at a time) stopped
		// half way, and are found by reference.
		refKey, found, err := k.macKey(ctx, scopeOf(scopeSubjects, tenant, ""), false)
		if err != nil {
			return Erasure{}, err
		}
		if found {
			m := hmac.New(sha256.New, refKey)
			m.Write([]byte(subject))
			s = &Subject{tenant: tenant, ref: hex.EncodeToString(m.Sum(nil)[:16])}
		}
	}
	if s != nil {
		scopes = []string{scopeOf(scopeContent, tenant, s.ref), scopeOf(scopeSalt, tenant, s.ref)}
	}
	ids, err := k.store.EraseScopes(ctx, scopes, e)
	if err != nil {
		return Erasure{}, fmt.Errorf("crypto: couldn't destroy the keys of a subject: %w", err)
	}
	e.KeysDestroyed, e.KeyIDs = len(ids), ids
	k.erasures.Add(1)
	for _, scope := range scopes {
		k.current.Delete(scope)
	}
	for _, id := range ids {
		k.byID.Delete(id)
	}
	return e, nil
}

// EraseKeys destroys the data keys with the ids that the catalog still
// holds, and keeps every id as erased: an erasure recorded in the log is
// put in force again in a key catalog restored from a backup older than
// it. It returns the ids it destroyed.
func (k *Keyring) EraseKeys(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	destroyed, err := k.store.DeleteKeys(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't destroy erased keys: %w", err)
	}
	if len(destroyed) == 0 {
		return nil, nil
	}
	k.erasures.Add(1)
	gone := map[string]bool{}
	for _, id := range destroyed {
		gone[id] = true
		k.byID.Delete(id)
	}
	k.current.Range(func(scope, v any) bool {
		if gone[v.(*dataKey).id] {
			k.current.Delete(scope)
		}
		return true
	})
	k.subjectsMu.Lock()
	clear(k.subjects)
	k.subjectsGen++
	k.subjectsMu.Unlock()
	return destroyed, nil
}

// ErasureCursor returns the log index of the next record whose erasure
// EraseKeys should be checked for, ok=false when none was stored.
func (k *Keyring) ErasureCursor(ctx context.Context) (uint64, bool, error) {
	return k.store.ErasureCursor(ctx)
}

// SetErasureCursor stores the erasure cursor.
func (k *Keyring) SetErasureCursor(ctx context.Context, cursor uint64) error {
	return k.store.SetErasureCursor(ctx, cursor)
}

// PendingErasures returns the erasures whose records may not be in the log
// yet, oldest first.
func (k *Keyring) PendingErasures(ctx context.Context) ([]Erasure, error) {
	return k.store.PendingErasures(ctx)
}

// ErasureRecorded notes that the record of the erasure with the id is in
// the log.
func (k *Keyring) ErasureRecorded(ctx context.Context, id string) error {
	return k.store.ErasureRecorded(ctx, id)
}
