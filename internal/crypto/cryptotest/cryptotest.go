// Package cryptotest provides an in-memory crypto.KeyStore for tests and a
// conformance suite, TestKeyStore, that every KeyStore backend must pass.
package cryptotest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/crypto"
)

// MemKeyStore is a crypto.KeyStore held in memory. It is "durable" for the
// life of the value. The zero value is ready to use.
type MemKeyStore struct {
	mu       sync.Mutex
	keys     []crypto.WrappedKey // in insertion order
	check    []byte
	versions []crypto.KEKVersion
	erased   map[string]bool // ids EraseScopes destroyed
	pending  []crypto.Erasure
	// cursor is the erasure cursor, if hasCursor.
	cursor    uint64
	hasCursor bool
}

var _ crypto.KeyStore = (*MemKeyStore)(nil)

// PutKey implements crypto.KeyStore.
func (m *MemKeyStore) PutKey(ctx context.Context, k crypto.WrappedKey) error {
	return m.PutKeys(ctx, []crypto.WrappedKey{k})
}

// PutKeys implements crypto.KeyStore.
func (m *MemKeyStore) PutKeys(_ context.Context, keys []crypto.WrappedKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := map[string]bool{}
	for _, e := range m.keys {
		ids[e.ID] = true
	}
	for _, k := range keys {
		if ids[k.ID] {
			return fmt.Errorf("key %q: %w", k.ID, crypto.ErrExists)
		}
		ids[k.ID] = true
	}
	for _, k := range keys {
		k.Wrapped = bytes.Clone(k.Wrapped)
		m.keys = append(m.keys, k)
	}
	return nil
}

// GetKey implements crypto.KeyStore.
func (m *MemKeyStore) GetKey(_ context.Context, id string) (crypto.WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.keys {
		if e.ID == id {
			e.Wrapped = bytes.Clone(e.Wrapped)
			return e, nil
		}
	}
	if m.erased[id] {
		return crypto.WrappedKey{}, fmt.Errorf("key %q: %w", id, crypto.ErrErased)
	}
	return crypto.WrappedKey{}, fmt.Errorf("key %q: %w", id, crypto.ErrNotFound)
}

// CurrentKey implements crypto.KeyStore.
func (m *MemKeyStore) CurrentKey(_ context.Context, scope string) (crypto.WrappedKey, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range slices.Backward(m.keys) {
		if e.Scope == scope {
			e.Wrapped = bytes.Clone(e.Wrapped)
			return e, true, nil
		}
	}
	return crypto.WrappedKey{}, false, nil
}

// GetCheck implements crypto.KeyStore.
func (m *MemKeyStore) GetCheck(context.Context) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.check), m.check != nil, nil
}

// PutCheck implements crypto.KeyStore.
func (m *MemKeyStore) PutCheck(_ context.Context, check []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.check != nil {
		return fmt.Errorf("check value: %w", crypto.ErrExists)
	}
	m.check = bytes.Clone(check)
	return nil
}

// AllKeys implements crypto.KeyStore.
func (m *MemKeyStore) AllKeys(context.Context) ([]crypto.WrappedKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.keys)
	for i := range out {
		out[i].Wrapped = bytes.Clone(out[i].Wrapped)
	}
	return out, nil
}

// KEKVersions implements crypto.KeyStore.
func (m *MemKeyStore) KEKVersions(context.Context) ([]crypto.KEKVersion, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.versions), nil
}

// EraseScopes implements crypto.KeyStore.
func (m *MemKeyStore) EraseScopes(_ context.Context, scopes []string, e crypto.Erasure) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.ContainsFunc(m.pending, func(p crypto.Erasure) bool { return p.ID == e.ID }) {
		return nil, fmt.Errorf("erasure %q: %w", e.ID, crypto.ErrExists)
	}
	ids := m.destroy(func(k crypto.WrappedKey) bool { return slices.Contains(scopes, k.Scope) }, nil)
	e.KeysDestroyed, e.KeyIDs = len(ids), ids
	m.pending = append(m.pending, e)
	return ids, nil
}

// DeleteKeys implements crypto.KeyStore.
func (m *MemKeyStore) DeleteKeys(_ context.Context, ids []string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.destroy(func(k crypto.WrappedKey) bool { return slices.Contains(ids, k.ID) }, ids), nil
}

// destroy removes the keys that match, keeps their ids and those of also as
// erased, and returns the ids removed. The caller holds m.mu.
func (m *MemKeyStore) destroy(match func(crypto.WrappedKey) bool, also []string) []string {
	var ids []string
	m.keys = slices.DeleteFunc(m.keys, func(k crypto.WrappedKey) bool {
		if match(k) {
			ids = append(ids, k.ID)
			return true
		}
		return false
	})
	if m.erased == nil {
		m.erased = map[string]bool{}
	}
	for _, id := range slices.Concat(ids, also) {
		m.erased[id] = true
	}
	return ids
}

// ErasureCursor implements crypto.KeyStore.
func (m *MemKeyStore) ErasureCursor(context.Context) (uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cursor, m.hasCursor, nil
}

// SetErasureCursor implements crypto.KeyStore.
func (m *MemKeyStore) SetErasureCursor(_ context.Context, cursor uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cursor, m.hasCursor = cursor, true
	return nil
}

// PendingErasures implements crypto.KeyStore.
func (m *MemKeyStore) PendingErasures(context.Context) ([]crypto.Erasure, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.pending), nil
}

// ErasureRecorded implements crypto.KeyStore.
func (m *MemKeyStore) ErasureRecorded(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = slices.DeleteFunc(m.pending, func(p crypto.Erasure) bool { return p.ID == id })
	return nil
}

// Rotate implements crypto.KeyStore.
func (m *MemKeyStore) Rotate(_ context.Context, r crypto.Rotation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := slices.Clone(m.keys)
	for _, k := range r.Rewrapped {
		i := slices.IndexFunc(keys, func(e crypto.WrappedKey) bool { return e.ID == k.ID })
		if i < 0 {
			return fmt.Errorf("key %q: %w", k.ID, crypto.ErrNotFound)
		}
		keys[i].KEKID, keys[i].Wrapped = k.KEKID, bytes.Clone(k.Wrapped)
	}
	for _, k := range r.Added {
		if slices.ContainsFunc(keys, func(e crypto.WrappedKey) bool { return e.ID == k.ID }) {
			return fmt.Errorf("key %q: %w", k.ID, crypto.ErrExists)
		}
		k.Wrapped = bytes.Clone(k.Wrapped)
		keys = append(keys, k)
	}
	if len(m.versions) == 0 {
		m.versions = append(m.versions, r.Previous)
	}
	m.keys, m.check, m.versions = keys, bytes.Clone(r.Check), append(m.versions, r.Version)
	return nil
}

// Len returns the number of keys stored.
func (m *MemKeyStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

// TestKeyStore runs the KeyStore contract against stores made by newStore,
// which must return a new, empty store on each call.
func TestKeyStore(t *testing.T, newStore func(t *testing.T) crypto.KeyStore) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	key := func(id, scope string, age time.Duration) crypto.WrappedKey {
		return crypto.WrappedKey{ID: id, Scope: scope, KEKID: "mk1-test", Wrapped: []byte("wrapped " + id), CreatedAt: now.Add(-age)}
	}

	t.Run("PutGet", func(t *testing.T) {
		s := newStore(t)
		want := key("dk-1", "acme", 0)
		if err := s.PutKey(ctx, want); err != nil {
			t.Fatalf("PutKey: %v", err)
		}
		got, err := s.GetKey(ctx, "dk-1")
		if err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		if got.ID != want.ID || got.Scope != want.Scope || got.KEKID != want.KEKID ||
			!bytes.Equal(got.Wrapped, want.Wrapped) || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("GetKey = %+v, want %+v", got, want)
		}
	})

	t.Run("PutExisting", func(t *testing.T) {
		s := newStore(t)
		if err := s.PutKey(ctx, key("dk-1", "acme", 0)); err != nil {
			t.Fatalf("PutKey: %v", err)
		}
		other := key("dk-1", "globex", 0)
		other.Wrapped = []byte("other")
		if err := s.PutKey(ctx, other); !errors.Is(err, crypto.ErrExists) {
			t.Fatalf("second PutKey with the same id: err = %v, want ErrExists", err)
		}
		got, err := s.GetKey(ctx, "dk-1")
		if err != nil || got.Scope != "acme" || string(got.Wrapped) != "wrapped dk-1" {
			t.Errorf("after refused PutKey, GetKey = %+v, %v; want the first key unchanged", got, err)
		}
	})

	t.Run("PutKeys", func(t *testing.T) {
		s := newStore(t)
		keys := []crypto.WrappedKey{key("dk-1", "acme", 0), key("dk-2", "globex", 0), key("dk-3", "acme", 0)}
		if err := s.PutKeys(ctx, keys); err != nil {
			t.Fatalf("PutKeys: %v", err)
		}
		for _, want := range keys {
			if got, err := s.GetKey(ctx, want.ID); err != nil || got.Scope != want.Scope || !bytes.Equal(got.Wrapped, want.Wrapped) {
				t.Errorf("GetKey(%s) = %+v, %v; want %+v", want.ID, got, err, want)
			}
		}
		// The last of a scope's keys in the batch is its current key.
		if cur, ok, err := s.CurrentKey(ctx, "acme"); err != nil || !ok || cur.ID != "dk-3" {
			t.Errorf("CurrentKey(acme) = %s, %v, %v; want dk-3", cur.ID, ok, err)
		}
		all, err := s.AllKeys(ctx)
		if err != nil || len(all) != 3 || all[0].ID != "dk-1" || all[2].ID != "dk-3" {
			t.Errorf("AllKeys = %v, %v; want dk-1, dk-2, dk-3 in that order", all, err)
		}
	})

	t.Run("PutKeysAllOrNone", func(t *testing.T) {
		s := newStore(t)
		if err := s.PutKey(ctx, key("dk-1", "acme", 0)); err != nil {
			t.Fatalf("PutKey: %v", err)
		}
		for _, batch := range [][]crypto.WrappedKey{
			{key("dk-2", "acme", 0), key("dk-1", "globex", 0)}, // one exists
			{key("dk-3", "acme", 0), key("dk-3", "globex", 0)}, // twice in the batch
		} {
			if err := s.PutKeys(ctx, batch); !errors.Is(err, crypto.ErrExists) {
				t.Errorf("PutKeys(%s, %s): err = %v, want ErrExists", batch[0].ID, batch[1].ID, err)
			}
		}
		all, err := s.AllKeys(ctx)
		if err != nil || len(all) != 1 || all[0].ID != "dk-1" {
			t.Errorf("after refused PutKeys, AllKeys = %v, %v; want only dk-1", all, err)
		}
		if cur, ok, err := s.CurrentKey(ctx, "acme"); err != nil || !ok || cur.ID != "dk-1" {
			t.Errorf("after refused PutKeys, CurrentKey(acme) = %s, %v, %v; want dk-1", cur.ID, ok, err)
		}
	})

	t.Run("GetMissing", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.GetKey(ctx, "dk-nope"); !errors.Is(err, crypto.ErrNotFound) {
			t.Errorf("GetKey(missing) err = %v, want ErrNotFound", err)
		}
	})

	t.Run("CurrentKey", func(t *testing.T) {
		s := newStore(t)
		if _, ok, err := s.CurrentKey(ctx, "acme"); ok || err != nil {
			t.Fatalf("CurrentKey on empty store = ok %v, err %v; want false, nil", ok, err)
		}
		// "Newest" means stored last, whatever the timestamps say.
		for _, k := range []crypto.WrappedKey{key("dk-a1", "acme", 0), key("dk-g1", "globex", 0), key("dk-a2", "acme", time.Hour)} {
			if err := s.PutKey(ctx, k); err != nil {
				t.Fatalf("PutKey(%s): %v", k.ID, err)
			}
		}
		for scope, want := range map[string]string{"acme": "dk-a2", "globex": "dk-g1"} {
			got, ok, err := s.CurrentKey(ctx, scope)
			if err != nil || !ok || got.ID != want {
				t.Errorf("CurrentKey(%q) = %q, %v, %v; want %q", scope, got.ID, ok, err, want)
			}
		}
		if _, ok, err := s.CurrentKey(ctx, "initech"); ok || err != nil {
			t.Errorf("CurrentKey(unknown scope) = ok %v, err %v; want false, nil", ok, err)
		}
	})

	t.Run("Check", func(t *testing.T) {
		s := newStore(t)
		if _, ok, err := s.GetCheck(ctx); ok || err != nil {
			t.Fatalf("GetCheck on empty store = ok %v, err %v; want false, nil", ok, err)
		}
		if err := s.PutCheck(ctx, []byte("check-1")); err != nil {
			t.Fatalf("PutCheck: %v", err)
		}
		if err := s.PutCheck(ctx, []byte("check-2")); !errors.Is(err, crypto.ErrExists) {
			t.Errorf("second PutCheck err = %v, want ErrExists", err)
		}
		got, ok, err := s.GetCheck(ctx)
		if err != nil || !ok || string(got) != "check-1" {
			t.Errorf("GetCheck = %q, %v, %v; want the first check value", got, ok, err)
		}
	})

	t.Run("Rotate", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []crypto.WrappedKey{key("dk-a1", "acme", 0), key("dk-g1", "globex", 0)} {
			if err := s.PutKey(ctx, k); err != nil {
				t.Fatalf("PutKey(%s): %v", k.ID, err)
			}
		}
		if err := s.PutCheck(ctx, []byte("check-1")); err != nil {
			t.Fatal(err)
		}
		if vs, err := s.KEKVersions(ctx); err != nil || len(vs) != 0 {
			t.Fatalf("KEKVersions before any rotation = %v, %v; want none", vs, err)
		}
		re := func(k crypto.WrappedKey) crypto.WrappedKey {
			k.KEKID, k.Wrapped = "mk1-new", []byte("rewrapped "+k.ID)
			return k
		}
		added := key("dk-a2", "acme", 0)
		added.KEKID = "mk1-new"
		r := crypto.Rotation{
			Rewrapped: []crypto.WrappedKey{re(key("dk-a1", "acme", 0)), re(key("dk-g1", "globex", 0))},
			Added:     []crypto.WrappedKey{added},
			Check:     []byte("check-2"),
			Previous:  crypto.KEKVersion{Version: 1, KEKID: "mk1-test", CreatedAt: now},
			Version:   crypto.KEKVersion{Version: 2, KEKID: "mk1-new", CreatedAt: now},
		}
		if err := s.Rotate(ctx, r); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		all, err := s.AllKeys(ctx)
		if err != nil || len(all) != 3 {
			t.Fatalf("AllKeys = %v, %v; want 3 keys", all, err)
		}
		for _, k := range all {
			if k.KEKID != "mk1-new" {
				t.Errorf("key %s still wrapped by %s after Rotate", k.ID, k.KEKID)
			}
		}
		if got, _ := s.GetKey(ctx, "dk-g1"); string(got.Wrapped) != "rewrapped dk-g1" || got.Scope != "globex" {
			t.Errorf("GetKey after Rotate = %+v", got)
		}
		if cur, _, _ := s.CurrentKey(ctx, "acme"); cur.ID != "dk-a2" {
			t.Errorf("CurrentKey(acme) after Rotate = %s; want the added key", cur.ID)
		}
		if check, _, _ := s.GetCheck(ctx); string(check) != "check-2" {
			t.Errorf("check value after Rotate = %q", check)
		}
		vs, err := s.KEKVersions(ctx)
		if err != nil || len(vs) != 2 || vs[0].KEKID != "mk1-test" || vs[1].Version != 2 || vs[1].KEKID != "mk1-new" {
			t.Errorf("KEKVersions after Rotate = %+v, %v", vs, err)
		}
		// A rotation that cannot apply changes nothing.
		bad := crypto.Rotation{Rewrapped: []crypto.WrappedKey{re(key("dk-nope", "acme", 0))}, Check: []byte("check-3"),
			Version: crypto.KEKVersion{Version: 3, KEKID: "mk1-third", CreatedAt: now}}
		if err := s.Rotate(ctx, bad); err == nil {
			t.Fatal("Rotate of an unknown key succeeded")
		}
		if check, _, _ := s.GetCheck(ctx); string(check) != "check-2" {
			t.Errorf("a failed Rotate changed the check value to %q", check)
		}
		if vs, _ := s.KEKVersions(ctx); len(vs) != 2 {
			t.Errorf("a failed Rotate changed the history: %+v", vs)
		}
	})

	t.Run("EraseScopes", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []crypto.WrappedKey{key("dk-a1", "acme", 0), key("dk-g1", "globex", 0), key("dk-a2", "acme", 0),
			key("dk-i1", "initech", 0)} {
			if err := s.PutKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		at := time.Unix(1700000000, 5).UTC()
		first := crypto.Erasure{ID: "e-1", Tenant: "acme", Pseudonym: "hmac-sha256:aa", Requester: "dpo", TokenID: "tok-1", At: at}
		ids, err := s.EraseScopes(ctx, []string{"acme", "initech"}, first)
		slices.Sort(ids)
		if err != nil || !slices.Equal(ids, []string{"dk-a1", "dk-a2", "dk-i1"}) {
			t.Fatalf("EraseScopes = %v, %v", ids, err)
		}
		if _, err := s.GetKey(ctx, "dk-a1"); !errors.Is(err, crypto.ErrErased) {
			t.Errorf("deleted key: %v; want ErrErased", err)
		}
		if _, err := s.GetKey(ctx, "dk-never"); !errors.Is(err, crypto.ErrNotFound) || errors.Is(err, crypto.ErrErased) {
			t.Errorf("a key never stored: %v; want ErrNotFound, not ErrErased", err)
		}
		if _, ok, _ := s.CurrentKey(ctx, "acme"); ok {
			t.Error("deleted scope still has a current key")
		}
		if _, err := s.GetKey(ctx, "dk-g1"); err != nil {
			t.Errorf("another scope's key is gone: %v", err)
		}
		second := crypto.Erasure{ID: "e-2", Tenant: "acme", At: at.Add(time.Second)}
		if ids, err := s.EraseScopes(ctx, []string{"acme"}, second); err != nil || len(ids) != 0 {
			t.Errorf("second EraseScopes = %v, %v; want nothing, no error", ids, err)
		}
		// Both are pending, oldest first, as kept, with the keys counted.
		first.KeysDestroyed, first.KeyIDs = 3, []string{"dk-a1", "dk-a2", "dk-i1"}
		if p, err := s.PendingErasures(ctx); err != nil || !samePending(p, []crypto.Erasure{first, second}) {
			t.Fatalf("PendingErasures = %+v, %v; want %+v", p, err, []crypto.Erasure{first, second})
		}
		// An erasure that cannot be kept destroys nothing.
		if _, err := s.EraseScopes(ctx, []string{"globex"}, first); !errors.Is(err, crypto.ErrExists) {
			t.Errorf("EraseScopes with an id already pending: %v; want ErrExists", err)
		}
		if _, err := s.GetKey(ctx, "dk-g1"); err != nil {
			t.Errorf("a failed EraseScopes destroyed a key: %v", err)
		}
		if err := s.ErasureRecorded(ctx, "e-1"); err != nil {
			t.Fatal(err)
		}
		if err := s.ErasureRecorded(ctx, "e-never"); err != nil {
			t.Errorf("ErasureRecorded of an id not pending: %v", err)
		}
		if p, err := s.PendingErasures(ctx); err != nil || !samePending(p, []crypto.Erasure{second}) {
			t.Errorf("PendingErasures after one was recorded = %+v, %v", p, err)
		}
	})

	t.Run("DeleteKeys", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []crypto.WrappedKey{key("dk-a1", "acme", 0), key("dk-a2", "acme", 0), key("dk-g1", "globex", 0)} {
			if err := s.PutKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		// dk-old was destroyed before the catalog's copy was made.
		destroyed, err := s.DeleteKeys(ctx, []string{"dk-a2", "dk-old", "dk-g1"})
		slices.Sort(destroyed)
		if err != nil || !slices.Equal(destroyed, []string{"dk-a2", "dk-g1"}) {
			t.Fatalf("DeleteKeys = %v, %v; want the two it held", destroyed, err)
		}
		for _, id := range []string{"dk-a2", "dk-old", "dk-g1"} {
			if _, err := s.GetKey(ctx, id); !errors.Is(err, crypto.ErrErased) {
				t.Errorf("%s after DeleteKeys: %v; want ErrErased", id, err)
			}
		}
		if _, err := s.GetKey(ctx, "dk-a1"); err != nil {
			t.Errorf("a key not named is gone: %v", err)
		}
		if again, err := s.DeleteKeys(ctx, []string{"dk-a2"}); err != nil || len(again) != 0 {
			t.Errorf("DeleteKeys again = %v, %v; want nothing", again, err)
		}
	})

	t.Run("ErasureCursor", func(t *testing.T) {
		s := newStore(t)
		if c, ok, err := s.ErasureCursor(ctx); err != nil || ok || c != 0 {
			t.Fatalf("ErasureCursor of a new store = %d, %v, %v; want none", c, ok, err)
		}
		for _, c := range []uint64{5, 1 << 40} {
			if err := s.SetErasureCursor(ctx, c); err != nil {
				t.Fatal(err)
			}
			if got, ok, err := s.ErasureCursor(ctx); err != nil || !ok || got != c {
				t.Errorf("ErasureCursor = %d, %v, %v; want %d", got, ok, err, c)
			}
		}
	})

	t.Run("ConcurrentPut", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make([]error, 16)
		for i := range errs {
			wg.Go(func() { errs[i] = s.PutKey(ctx, key(fmt.Sprintf("dk-%d", i), "acme", 0)) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("PutKey(dk-%d): %v", i, err)
			}
			if _, err := s.GetKey(ctx, fmt.Sprintf("dk-%d", i)); err != nil {
				t.Errorf("GetKey(dk-%d): %v", i, err)
			}
		}
	})
}

// samePending compares pending erasures, their key ids in any order.
func samePending(a, b []crypto.Erasure) bool {
	norm := func(es []crypto.Erasure) []crypto.Erasure {
		out := slices.Clone(es)
		for i := range out {
			out[i].KeyIDs = slices.Sorted(slices.Values(out[i].KeyIDs))
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
