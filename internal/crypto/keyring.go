package crypto

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Errors a caller acts on. They are wrapped with context; test with errors.Is.
var (
	// ErrNotFound means a data key is not in the catalog. For Open it also
	// wraps ErrDecrypt: content whose key is gone cannot be read.
	ErrNotFound = errors.New("crypto: not found")
	// ErrErased means a data key was destroyed by an erasure (EraseScopes):
	// unlike a key that is merely not in the catalog (one restored from a
	// backup older than the key), its content is gone on purpose. It wraps
	// ErrNotFound.
	ErrErased = fmt.Errorf("%w: erased", ErrNotFound)
	// ErrExists means a KeyStore already holds the id (or check value).
	ErrExists = errors.New("crypto: already exists")
	// ErrDecrypt means a blob did not authenticate: wrong key, wrong
	// associated data, or modified bytes. It never says which.
	ErrDecrypt = errors.New("crypto: cannot decrypt")
	// ErrWrongMasterKey means the configured master key is not the one the
	// key catalog was created with. The process must not start.
	ErrWrongMasterKey = errors.New("crypto: wrong master key")
)

// DataKeySize is the size in bytes of a data key (AES-256).
const DataKeySize = 32

// maxScope bounds a scope name; scopes are tenants (and subjects), not data.
const maxScope = 1024

// WrappedKey is a data key as the catalog stores it: wrapped by a KEK, never
// in the clear.
type WrappedKey struct {
	// ID names the key; content references carry it.
	ID string
	// Scope is what the key encrypts for, e.g. a tenant.
	Scope string
	// KEKID is the ID of the master key that wrapped it.
	KEKID string
	// Wrapped is the output of KEK.Wrap.
	Wrapped []byte
	// CreatedAt is when the key was made.
	CreatedAt time.Time
}

// KeyStore is the durable catalog of wrapped data keys. It is mutable and not
// part of the tree. Implementations must be safe for concurrent use.
type KeyStore interface {
	// PutKey stores k durably before returning; it returns an error wrapping
	// ErrExists if a key with k.ID exists. After a failed PutKey the key
	// may or may not have been stored; it is never used until PutKey
	// succeeds, but a later CurrentKey may return it.
	PutKey(ctx context.Context, k WrappedKey) error
	// PutKeys stores keys durably in one step (one transaction, one sync),
	// in their order, before returning. It returns an error wrapping
	// ErrExists, and stores none of them, if a key with the ID of one of
	// them exists or two of them share an ID. After another failure they
	// may or may not have been stored, as with PutKey.
	PutKeys(ctx context.Context, keys []WrappedKey) error
	// GetKey returns the key with id, or an error wrapping ErrErased for a
	// key EraseScopes destroyed, or ErrNotFound for one never stored.
	GetKey(ctx context.Context, id string) (WrappedKey, error)
	// CurrentKey returns the key for scope that was stored last, ok=false if
	// the scope has none.
	CurrentKey(ctx context.Context, scope string) (k WrappedKey, ok bool, err error)
	// GetCheck returns the check value: a small record proving which master
	// key the catalog was created with. ok=false if none was stored.
	GetCheck(ctx context.Context) (check []byte, ok bool, err error)
	// PutCheck stores the check value durably before returning. It is set
	// once: if one exists it returns an error wrapping ErrExists.
	PutCheck(ctx context.Context, check []byte) error
	// AllKeys returns every data key, in the order they were stored.
	AllKeys(ctx context.Context) ([]WrappedKey, error)
	// KEKVersions returns the master key history, oldest first; empty for a
	// catalog whose master key was never rotated.
	KEKVersions(ctx context.Context) ([]KEKVersion, error)
	// EraseScopes destroys every key of the scopes, durably and so that
	// the wrapped bytes do not linger in the store's files, keeps their ids
	// as erased, and keeps e, with KeysDestroyed and KeyIDs set to the
	// number and ids of the keys destroyed, among the pending erasures, all
	// in one step: on error nothing has changed. It returns the ids destroyed. Scopes with no
	// keys are not an error.
	EraseScopes(ctx context.Context, scopes []string, e Erasure) (ids []string, err error)
	// PendingErasures returns the erasures EraseScopes kept that
	// ErasureRecorded has not removed, oldest first.
	PendingErasures(ctx context.Context) ([]Erasure, error)
	// ErasureRecorded removes the pending erasure whose record has the id;
	// one that is not pending is not an error.
	ErasureRecorded(ctx context.Context, id string) error
	// DeleteKeys destroys the keys with the ids that it holds, as
	// EraseScopes does, keeps every id as erased, and returns the ids it
	// destroyed, in one step.
	DeleteKeys(ctx context.Context, ids []string) ([]string, error)
	// ErasureCursor returns the cursor SetErasureCursor stored, ok=false
	// if none was.
	ErasureCursor(ctx context.Context) (cursor uint64, ok bool, err error)
	SetErasureCursor(ctx context.Context, cursor uint64) error
	// Rotate applies a master key rotation atomically and durably: every
	// key in r.Rewrapped replaces the stored key of the same ID, the keys
	// in r.Added are stored after all others (becoming their scopes'
	// current keys), the check value becomes r.Check, and r.Version (and
	// r.Previous, if the history is empty) are appended to the history.
	// On error nothing has changed.
	Rotate(ctx context.Context, r Rotation) error
}

// Keyring seals and opens content with per-scope data keys wrapped by a KEK.
// Unwrapped data keys are cached in memory for the life of the Keyring, so
// after the first use of a scope Seal and Open do no I/O. A Keyring is safe
// for concurrent use.
//
// Nonces are random (96 bits), so a data key should seal fewer than 2^32
// blobs; RotateMasterKey gives every scope a fresh data key.
type Keyring struct {
	kek   KEK
	store KeyStore

	current sync.Map // scope → *dataKey, the key Seal uses
	byID    sync.Map // key id → *dataKey, every key seen
	// cached counts the keys put in current and byID since they were last
	// emptied, and clears how often they were (see remember).
	cached, clears atomic.Int64
	// erasures counts the erasures EraseSubject made, each bumped after
	// the store's EraseScopes and before the keys leave memory, so
	// that remember can tell a key read before an erasure from one read
	// after.
	erasures atomic.Int64

	// creating gathers the scopes that need their key looked up or made,
	// so that concurrent first uses of a scope make exactly one key and
	// the keys of concurrent callers are stored together.
	creating keyWrites

	subjectsMu  sync.RWMutex // read for every event with a subject
	subjects    map[subjectKey]*Subject
	subjectsGen uint64 // bumped by every erasure
}

type dataKey struct {
	id    string
	scope string
	aead  cipher.AEAD
	mac   []byte // the raw key, kept only for HMAC scopes (salts)
}

// NewKeyring returns a Keyring over kek and store. Call CheckKEK before the
// first Seal so that a wrong master key stops the process at start.
func NewKeyring(kek KEK, store KeyStore) *Keyring {
	return &Keyring{kek: kek, store: store}
}

// Check value: a known plaintext wrapped by the master key, stored as
// kekID ‖ 0x00 ‖ wrapped so that a mismatch can name both keys.
var (
	checkPlaintext = []byte("aitrail master key check v1")
	checkAAD       = []byte("aitrail kek check")
)

// CheckKEK verifies that the Keyring's master key is the one the catalog was
// created with. On first start (no check value) it stores one. It returns an
// error wrapping ErrWrongMasterKey when the master key does not match.
func (k *Keyring) CheckKEK(ctx context.Context) error {
	check, ok, err := k.store.GetCheck(ctx)
	if err != nil {
		return fmt.Errorf("crypto: couldn't read master key check value: %w", err)
	}
	if !ok {
		if check, err = checkValue(k.kek); err != nil {
			return err
		}
		err = k.store.PutCheck(ctx, check)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrExists) {
			return fmt.Errorf("crypto: couldn't store master key check value: %w", err)
		}
		// Another process stored one first: verify against it.
		if check, _, err = k.store.GetCheck(ctx); err != nil {
			return fmt.Errorf("crypto: couldn't read master key check value: %w", err)
		}
	}
	id, _, found := bytes.Cut(check, []byte{0})
	if !found {
		return errors.New("crypto: master key check value in the key catalog is corrupt")
	}
	ok, err = matchesCheck(k.kek, check)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: the configured master key (%s) is not this data directory's master key (%s); "+
			"start aitrail with that key (AITRAIL_MASTER_KEY or the master key file) — after `aitrail keys rotate`, the new one",
			ErrWrongMasterKey, k.kek.ID(), id)
	}
	return nil
}

// Seal encrypts plaintext under scope's current data key, creating and
// durably storing the key first if the scope has none. aad must bind the
// blob to its place: callers pass ContentAAD(tenant, record id). It returns the
// blob (1 version byte, 12-byte nonce, ciphertext and tag) and the key's ID,
// which Open needs.
func (k *Keyring) Seal(ctx context.Context, scope string, plaintext, aad []byte) (blob []byte, keyID string, err error) {
	dk, err := k.currentKey(ctx, scope)
	if err != nil {
		return nil, "", err
	}
	return dk.seal(plaintext, aad)
}

// seal encrypts plaintext under dk and returns the blob with dk's id.
func (dk *dataKey) seal(plaintext, aad []byte) (blob []byte, keyID string, err error) {
	if blob, err = seal(dk.aead, plaintext, aad); err != nil {
		return nil, "", err
	}
	return blob, dk.id, nil
}

// Open decrypts a blob made by Seal with key keyID and the same aad. It
// returns an error wrapping ErrDecrypt if the blob does not authenticate,
// and one wrapping both ErrDecrypt and ErrNotFound if the key is not in the
// catalog.
func (k *Keyring) Open(ctx context.Context, keyID string, blob, aad []byte) ([]byte, error) {
	dk, err := k.keyByID(ctx, keyID)
	if err != nil {
		return nil, err
	}
	return open(dk.aead, blob, aad)
}

// ContentAAD returns the associated data that binds sealed content to its
// record: tenant ‖ 0x00 ‖ record id. Seal and Open callers must both use it.
func ContentAAD(tenant, recordID string) []byte {
	return []byte(tenant + "\x00" + recordID)
}

// Digest returns "sha256:<hex>" of a sealed blob: the content digest the tree
// commits to. It is computed over the stored ciphertext, so it reveals
// nothing about the plaintext.
func Digest(blob []byte) string {
	const prefix = "sha256:"
	sum := sha256.Sum256(blob)
	var b [len(prefix) + 2*sha256.Size]byte
	copy(b[:], prefix)
	hex.Encode(b[len(prefix):], sum[:])
	return string(b[:])
}

func (k *Keyring) currentKey(ctx context.Context, scope string) (*dataKey, error) {
	if v, ok := k.current.Load(scope); ok {
		return v.(*dataKey), nil
	}
	if scope == "" || len(scope) > maxScope {
		return nil, fmt.Errorf("crypto: invalid scope (empty or longer than %d bytes)", maxScope)
	}
	for {
		clears := k.clears.Load()
		if err := k.ensureKeys(ctx, []string{scope}); err != nil {
			return nil, err
		}
		if v, ok := k.current.Load(scope); ok {
			return v.(*dataKey), nil
		}
		if k.clears.Load() == clears {
			// Erased in the meantime.
			return nil, fmt.Errorf("crypto: the key of scope %q was destroyed while it was made", scope)
		}
		// The cache was emptied in the meantime (remember): the key is
		// in the store, and the next round reads it back.
	}
}

// keyWrites is a group commit for data keys: callers queue the scopes
// they need, and a writer goroutine (one at a time, started when keys are
// needed and none runs) looks up or makes the keys of everything queued
// and stores the new ones with one PutKeys, so that callers arriving
// during a write share the next one.
type keyWrites struct {
	mu    sync.Mutex
	queue []keyWait // since the last write began
	busy  bool      // a writer runs
}

// keyWait is one ensureKeys caller's scopes and where its result goes.
type keyWait struct {
	scopes []string
	done   chan error
}

// ensureKeys gives every scope in scopes a current key: the store's, or
// a new one, stored durably before it returns. Scopes currentKey would
// refuse are left to it. A caller that gives up (ctx) does not stop the
// write its scopes are in.
func (k *Keyring) ensureKeys(ctx context.Context, scopes []string) error {
	if len(scopes) == 0 {
		return nil
	}
	w := &k.creating
	done := make(chan error, 1)
	w.mu.Lock()
	w.queue = append(w.queue, keyWait{scopes, done})
	if !w.busy {
		w.busy = true
		go k.writeKeys()
	}
	w.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeKeys is the writer: it works on what is queued until nothing is.
func (k *Keyring) writeKeys() {
	w := &k.creating
	w.mu.Lock()
	for len(w.queue) > 0 {
		queue := w.queue
		w.queue = nil
		w.mu.Unlock()
		k.makeKeys(context.Background(), queue)
		w.mu.Lock()
	}
	w.busy = false
	w.mu.Unlock()
}

// makeKeys is the writer's work for ensureKeys: it loads the stored key
// of each scope queue names that has none in memory, makes one for each
// scope that has none stored, stores those with one PutKeys, and tells
// each caller the first failure among its scopes (a failed PutKeys fails
// every caller with a new key in it).
func (k *Keyring) makeKeys(ctx context.Context, queue []keyWait) {
	gen := k.erasures.Load()
	var fresh []WrappedKey
	var made []*dataKey
	failed := map[string]error{}
	listed := map[string]bool{}
	for _, q := range queue {
		for _, scope := range q.scopes {
			if _, ok := k.current.Load(scope); ok || listed[scope] || scope == "" || len(scope) > maxScope {
				continue
			}
			listed[scope] = true
			wk, ok, err := k.store.CurrentKey(ctx, scope)
			if err != nil {
				failed[scope] = fmt.Errorf("crypto: couldn't read data key for scope %q: %w", scope, err)
				continue
			}
			if ok {
				dk, err := k.unwrap(wk)
				if err == nil {
					err = k.remember(ctx, dk, true, gen)
				}
				if err != nil {
					failed[scope] = err
				}
				continue
			}
			wk, dk, err := k.newKey(scope)
			if err != nil {
				failed[scope] = err
				continue
			}
			fresh, made = append(fresh, wk), append(made, dk)
		}
	}
	// The keys must be durable before any content or pseudonym depends on
	// them.
	if len(fresh) > 0 {
		if err := k.store.PutKeys(ctx, fresh); err != nil {
			for _, wk := range fresh {
				failed[wk.Scope] = fmt.Errorf("crypto: couldn't store data key %s for scope %q: %w", wk.ID, wk.Scope, err)
			}
		} else {
			for _, dk := range made {
				if err := k.remember(ctx, dk, true, gen); err != nil {
					failed[dk.scope] = err
				}
			}
		}
	}
	for _, q := range queue {
		var err error
		for _, scope := range q.scopes {
			if err = failed[scope]; err != nil {
				break
			}
		}
		q.done <- err
	}
}

// newKey generates a data key for scope, wrapped by the Keyring's master
// key, without storing it.
func (k *Keyring) newKey(scope string) (WrappedKey, *dataKey, error) {
	var raw [DataKeySize]byte
	defer clear(raw[:])
	var idb [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return WrappedKey{}, nil, fmt.Errorf("crypto: couldn't generate data key: %w", err)
	}
	if _, err := rand.Read(idb[:]); err != nil {
		return WrappedKey{}, nil, fmt.Errorf("crypto: couldn't generate data key id: %w", err)
	}
	id := "dk-" + hex.EncodeToString(idb[:])
	wrapped, err := k.kek.Wrap(raw[:], keyAAD(id, scope))
	if err != nil {
		return WrappedKey{}, nil, fmt.Errorf("crypto: couldn't wrap data key %s: %w", id, err)
	}
	aead, err := newAEAD(raw[:])
	if err != nil {
		return WrappedKey{}, nil, err
	}
	wk := WrappedKey{ID: id, Scope: scope, KEKID: k.kek.ID(), Wrapped: wrapped, CreatedAt: time.Now().UTC()}
	return wk, newDataKey(id, scope, aead, raw[:]), nil
}

func (k *Keyring) keyByID(ctx context.Context, id string) (*dataKey, error) {
	if v, ok := k.byID.Load(id); ok {
		return v.(*dataKey), nil
	}
	gen := k.erasures.Load()
	wk, err := k.store.GetKey(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: data key %q: %w", ErrDecrypt, id, err)
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't read data key %q: %w", id, err)
	}
	if wk.ID != id {
		return nil, fmt.Errorf("crypto: key catalog returned key %q for %q", wk.ID, id)
	}
	// Two concurrent misses may both unwrap; the result is the same key.
	dk, err := k.unwrap(wk)
	if err != nil {
		return nil, err
	}
	if err := k.remember(ctx, dk, false, gen); err != nil {
		if errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w: %w", ErrDecrypt, err)
		}
		return nil, err
	}
	return dk, nil
}

// maxCachedKeys bounds the data keys a Keyring keeps in memory, about a
// kilobyte each with its cipher: every pseudonymised subject has keys of
// its own, so without a bound the cache grew with every end user a
// service ever had (150,000 subjects took 160 MB). Past it, the cache
// starts again empty, and keys are read back from the store as they are
// used.
var maxCachedKeys int64 = 50_000 // tests lower it

// remember caches dk by its id and, if current, as its scope's current
// key, emptying the cache first if it holds maxCachedKeys.
//
// gen is k.erasures as it was before dk was read from, or written to, the
// store. If an erasure has run since, dk may be a key it destroyed after
// it was read and before it was cached, and an erased subject's key must
// not outlive the erasure in memory: remember asks the store again, and
// if dk is gone takes it out of the cache and returns an error wrapping
// ErrNotFound.
func (k *Keyring) remember(ctx context.Context, dk *dataKey, current bool, gen int64) error {
	if k.cached.Add(1) > maxCachedKeys {
		k.clears.Add(1)
		k.current.Clear()
		k.byID.Clear()
		k.cached.Store(1)
	}
	k.byID.Store(dk.id, dk)
	if current {
		k.current.Store(dk.scope, dk)
	}
	if k.erasures.Load() == gen {
		// No erasure has finished destroying keys since dk was read; one
		// that does from now takes dk out of memory itself.
		return nil
	}
	_, err := k.store.GetKey(ctx, dk.id)
	if err == nil {
		return nil
	}
	k.byID.CompareAndDelete(dk.id, dk)
	k.current.CompareAndDelete(dk.scope, dk)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("crypto: data key %s of scope %q was destroyed while it was read: %w", dk.id, dk.scope, err)
	}
	return fmt.Errorf("crypto: couldn't read data key %s back after an erasure: %w", dk.id, err)
}

func (k *Keyring) unwrap(wk WrappedKey) (*dataKey, error) {
	if wk.KEKID != k.kek.ID() {
		return nil, fmt.Errorf("%w: data key %s was wrapped by master key %s, but the configured master key is %s",
			ErrWrongMasterKey, wk.ID, wk.KEKID, k.kek.ID())
	}
	raw, err := k.kek.Unwrap(wk.Wrapped, keyAAD(wk.ID, wk.Scope))
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't unwrap data key %s: %w", wk.ID, err)
	}
	defer clear(raw)
	if len(raw) != DataKeySize {
		return nil, fmt.Errorf("crypto: data key %s has the wrong size", wk.ID)
	}
	aead, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	return newDataKey(wk.ID, wk.Scope, aead, raw), nil
}

func newDataKey(id, scope string, aead cipher.AEAD, raw []byte) *dataKey {
	dk := &dataKey{id: id, scope: scope, aead: aead}
	if macScope(scope) {
		dk.mac = bytes.Clone(raw)
	}
	return dk
}

// keyAAD binds a wrapped data key to its id and scope, so a catalog row
// moved to another id or scope does not unwrap. The id never contains NUL,
// so the encoding is unambiguous.
func keyAAD(id, scope string) []byte {
	return []byte("aitrail data key v1\x00" + id + "\x00" + scope)
}
