// Package authztest provides an in-memory authz.TokenStore for tests and a
// conformance suite, TestTokenStore, that every TokenStore backend must pass.
package authztest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
)

// MemTokenStore is an authz.TokenStore held in memory. The zero value is
// ready to use.
type MemTokenStore struct {
	mu     sync.Mutex
	tokens []authz.Token // in creation order
	gets   int
}

var _ authz.TokenStore = (*MemTokenStore)(nil)

func clone(t authz.Token) authz.Token {
	t.Roles, t.Tenants, t.Hash = slices.Clone(t.Roles), slices.Clone(t.Tenants), bytes.Clone(t.Hash)
	return t
}

// CreateToken implements authz.TokenStore.
func (m *MemTokenStore) CreateToken(_ context.Context, t authz.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.ContainsFunc(m.tokens, func(e authz.Token) bool { return e.ID == t.ID }) {
		return fmt.Errorf("token %q: %w", t.ID, authz.ErrExists)
	}
	m.tokens = append(m.tokens, clone(t))
	return nil
}

// GetToken implements authz.TokenStore.
func (m *MemTokenStore) GetToken(_ context.Context, id string) (authz.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gets++
	if i := slices.IndexFunc(m.tokens, func(e authz.Token) bool { return e.ID == id }); i >= 0 {
		return clone(m.tokens[i]), nil
	}
	return authz.Token{}, fmt.Errorf("token %q: %w", id, authz.ErrNotFound)
}

// ListTokens implements authz.TokenStore.
func (m *MemTokenStore) ListTokens(context.Context) ([]authz.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]authz.Token, len(m.tokens))
	for i, t := range m.tokens {
		out[i] = clone(t)
	}
	return out, nil
}

// DeleteToken implements authz.TokenStore.
func (m *MemTokenStore) DeleteToken(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.tokens, func(e authz.Token) bool { return e.ID == id })
	if i < 0 {
		return fmt.Errorf("token %q: %w", id, authz.ErrNotFound)
	}
	m.tokens = slices.Delete(m.tokens, i, i+1)
	return nil
}

// CountTokens implements authz.TokenStore.
func (m *MemTokenStore) CountTokens(context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tokens), nil
}

// GetCount returns how many times GetToken was called, so tests can tell
// that a lookup was served from a cache.
func (m *MemTokenStore) GetCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gets
}

// TestTokenStore runs the TokenStore contract against stores made by
// newStore, which must return a new, empty store on each call.
func TestTokenStore(t *testing.T, newStore func(t *testing.T) authz.TokenStore) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	tok := func(id string, age time.Duration) authz.Token {
		return authz.Token{
			ID: id, Name: "token " + id,
			Roles:   []authz.Role{authz.RoleIngest, authz.RoleRead},
			Tenants: []string{"acme", "globex"},
			Hash:    bytes.Repeat([]byte{id[0]}, 32), CreatedAt: now.Add(-age),
		}
	}
	same := func(a, b authz.Token) bool {
		return a.ID == b.ID && a.Name == b.Name && slices.Equal(a.Roles, b.Roles) && slices.Equal(a.Tenants, b.Tenants) &&
			bytes.Equal(a.Hash, b.Hash) && a.CreatedAt.Equal(b.CreatedAt) && a.Root == b.Root && a.Limit == b.Limit
	}

	t.Run("CreateGet", func(t *testing.T) {
		s := newStore(t)
		root := authz.Token{ID: authz.RootTokenID, Name: "root", Roles: authz.AllRoles(), Tenants: []string{"*"},
			Hash: bytes.Repeat([]byte{9}, 32), CreatedAt: now, Root: true}
		limited := tok("fedcba9876543210", 0)
		limited.Limit = authz.Limit{EventsPerSecond: 12.5, BurstEvents: 20000}
		for _, want := range []authz.Token{tok("0123456789abcdef", 0), root, limited} {
			if err := s.CreateToken(ctx, want); err != nil {
				t.Fatalf("CreateToken(%s): %v", want.ID, err)
			}
			got, err := s.GetToken(ctx, want.ID)
			if err != nil || !same(got, want) {
				t.Errorf("GetToken(%s) = %+v, %v; want %+v", want.ID, got, err, want)
			}
		}
	})

	t.Run("CreateExisting", func(t *testing.T) {
		s := newStore(t)
		first := tok("0123456789abcdef", 0)
		if err := s.CreateToken(ctx, first); err != nil {
			t.Fatal(err)
		}
		second := first
		second.Name, second.Hash = "impostor", bytes.Repeat([]byte{1}, 32)
		if err := s.CreateToken(ctx, second); !errors.Is(err, authz.ErrExists) {
			t.Errorf("CreateToken with an existing id: err = %v, want ErrExists", err)
		}
		if got, _ := s.GetToken(ctx, first.ID); !same(got, first) {
			t.Errorf("a refused CreateToken changed the token: %+v", got)
		}
	})

	t.Run("Missing", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.GetToken(ctx, "nope"); !errors.Is(err, authz.ErrNotFound) {
			t.Errorf("GetToken(missing) err = %v, want ErrNotFound", err)
		}
		if err := s.DeleteToken(ctx, "nope"); !errors.Is(err, authz.ErrNotFound) {
			t.Errorf("DeleteToken(missing) err = %v, want ErrNotFound", err)
		}
	})

	t.Run("ListCountDelete", func(t *testing.T) {
		s := newStore(t)
		if n, err := s.CountTokens(ctx); n != 0 || err != nil {
			t.Fatalf("CountTokens on an empty store = %d, %v", n, err)
		}
		if l, err := s.ListTokens(ctx); len(l) != 0 || err != nil {
			t.Fatalf("ListTokens on an empty store = %v, %v", l, err)
		}
		want := []authz.Token{tok("aaaaaaaaaaaaaaaa", 2*time.Hour), tok("bbbbbbbbbbbbbbbb", time.Hour), tok("cccccccccccccccc", 0)}
		for _, w := range want {
			if err := s.CreateToken(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteToken(ctx, want[1].ID); err != nil {
			t.Fatalf("DeleteToken: %v", err)
		}
		want = slices.Delete(want, 1, 2)
		got, err := s.ListTokens(ctx)
		if err != nil || len(got) != len(want) {
			t.Fatalf("ListTokens = %d tokens, %v; want %d", len(got), err, len(want))
		}
		for i := range want {
			if !same(got[i], want[i]) {
				t.Errorf("ListTokens[%d] = %+v, want %+v (oldest first)", i, got[i], want[i])
			}
		}
		if n, err := s.CountTokens(ctx); n != 2 || err != nil {
			t.Errorf("CountTokens = %d, %v; want 2", n, err)
		}
		if _, err := s.GetToken(ctx, "bbbbbbbbbbbbbbbb"); !errors.Is(err, authz.ErrNotFound) {
			t.Errorf("GetToken after DeleteToken: err = %v, want ErrNotFound", err)
		}
	})
}
