package authz_test

import (
	"context"
	"errors"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/authz/authztest"
)

const operatorToken = "my-ci-admin-token-0123456789"

// setup returns an Authenticator bootstrapped with the operator's root token
// and the root principal.
func setup(t testing.TB) (*authz.Authenticator, *authztest.MemTokenStore, authz.Principal) {
	t.Helper()
	ctx := context.Background()
	store := new(authztest.MemTokenStore)
	a := authz.NewAuthenticator(store)
	if _, _, err := a.Bootstrap(ctx, operatorToken); err != nil {
		t.Fatal(err)
	}
	root, err := a.Authenticate(ctx, operatorToken)
	if err != nil {
		t.Fatal(err)
	}
	return a, store, root
}

func mint(t testing.TB, a *authz.Authenticator, by authz.Principal, roles []authz.Role, tenants ...string) string {
	t.Helper()
	_, secret, err := a.Mint(context.Background(), by, "test", roles, tenants)
	if err != nil {
		t.Fatalf("Mint(%v, %v): %v", roles, tenants, err)
	}
	return secret
}

var tokenRE = regexp.MustCompile(`^atr_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$`)

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	a, _, root := setup(t)
	valid := mint(t, a, root, []authz.Role{authz.RoleIngest}, "acme")
	// The uppercase case needs an id with a letter; one in about 1,800
	// is all digits.
	for !strings.ContainsAny(valid[4:20], "abcdef") {
		valid = mint(t, a, root, []authz.Role{authz.RoleIngest}, "acme")
	}
	revoked := mint(t, a, root, []authz.Role{authz.RoleRead}, "acme")
	if err := a.Revoke(ctx, root, revoked[4:20]); err != nil {
		t.Fatal(err)
	}
	if !tokenRE.MatchString(valid) {
		t.Fatalf("minted token %q does not have the atr_<16 hex>_<43 base64url> form", valid)
	}
	wrongSecret := valid[:len(valid)-1] + "A"
	if strings.HasSuffix(valid, "A") {
		wrongSecret = valid[:len(valid)-1] + "B"
	}

	tests := []struct {
		name     string
		bearer   string
		wantID   string
		wantRoot bool
	}{
		{"minted", valid, valid[4:20], false},
		{"root operator string", operatorToken, "root", true},
		{"revoked", revoked, "", false},
		{"wrong secret", wrongSecret, "", false},
		{"unknown id", "atr_0000000000000000" + valid[20:], "", false},
		{"empty", "", "", false},
		{"with Bearer prefix", "Bearer " + valid, "", false},
		{"truncated", valid[:len(valid)-1], "", false},
		{"uppercase id", "atr_" + strings.ToUpper(valid[4:20]) + valid[20:], "", false},
		{"bad secret alphabet", valid[:len(valid)-1] + "=", "", false},
		{"secret alone", valid[21:], "", false},
		{"root with a suffix", operatorToken + "x", "", false},
		{"root prefix", operatorToken[:len(operatorToken)-1], "", false},
		{"huge", strings.Repeat("a", 1<<20), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Authenticate(ctx, tt.bearer)
			if tt.wantID == "" {
				if !errors.Is(err, authz.ErrUnauthenticated) {
					t.Fatalf("Authenticate = %+v, %v; want ErrUnauthenticated", p, err)
				}
				if tt.bearer != "" && strings.Contains(err.Error(), tt.bearer[min(len(tt.bearer), 4):min(len(tt.bearer), 30)]) {
					t.Errorf("error %q repeats the token", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if p.TokenID != tt.wantID || p.Root != tt.wantRoot {
				t.Errorf("principal = %+v, want token %s root %v", p, tt.wantID, tt.wantRoot)
			}
		})
	}
}

func TestAuthenticateIsCachedAndRevocationImmediate(t *testing.T) {
	ctx := context.Background()
	a, store, root := setup(t)
	tok := mint(t, a, root, []authz.Role{authz.RoleIngest}, "acme")
	if _, err := a.Authenticate(ctx, tok); err != nil {
		t.Fatal(err)
	}
	gets := store.GetCount()
	for range 100 {
		if _, err := a.Authenticate(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(ctx, operatorToken); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.GetCount() - gets; n != 0 {
		t.Errorf("200 authentications of known tokens read the store %d times, want 0", n)
	}
	if err := a.Revoke(ctx, root, tok[4:20]); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, tok); !errors.Is(err, authz.ErrUnauthenticated) {
		t.Errorf("Authenticate right after Revoke: err = %v, want ErrUnauthenticated", err)
	}
}

// A token revoked while other goroutines authenticate it must not come
// back from the cache once Revoke has returned.
func TestRevokeRacesAuthenticate(t *testing.T) {
	ctx := context.Background()
	for range 50 {
		a, _, root := setup(t)
		tok := mint(t, a, root, []authz.Role{authz.RoleIngest}, "acme")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
						a.Authenticate(ctx, tok)
					}
				}
			})
		}
		if err := a.Revoke(ctx, root, tok[4:20]); err != nil {
			t.Fatal(err)
		}
		p, err := a.Authenticate(ctx, tok)
		close(stop)
		wg.Wait()
		if err == nil {
			t.Fatalf("revoked token still authenticates as %+v", p)
		}
		if _, err := a.Authenticate(ctx, tok); err == nil {
			t.Fatalf("revoked token authenticates after the race")
		}
	}
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	t.Run("random", func(t *testing.T) {
		store := new(authztest.MemTokenStore)
		a := authz.NewAuthenticator(store)
		tok, created, err := a.Bootstrap(ctx, "")
		if err != nil || !created || !tokenRE.MatchString(tok) {
			t.Fatalf("Bootstrap(\"\") = %q, %v, %v; want a new atr_ token", tok, created, err)
		}
		p, err := a.Authenticate(ctx, tok)
		if err != nil || !p.Root || !p.Has(authz.RoleErase) || !p.AllTenants() || p.TokenID != authz.RootTokenID {
			t.Fatalf("the bootstrap token authenticates as %+v, %v; want root", p, err)
		}
		gets := store.GetCount()
		for range 10 {
			a.Authenticate(ctx, tok)
		}
		if n := store.GetCount() - gets; n != 0 {
			t.Errorf("10 authentications with the random root token read the store %d times, want 0", n)
		}
		if again, created, err := a.Bootstrap(ctx, ""); again != "" || created || err != nil {
			t.Errorf("second Bootstrap = %q, %v, %v; want nothing done", again, created, err)
		}
		if _, err := a.Authenticate(ctx, tok); err != nil {
			t.Errorf("the first root token stopped working after a second Bootstrap: %v", err)
		}
	})
	t.Run("operator string", func(t *testing.T) {
		a, _, root := setup(t)
		if !root.Root || root.TokenID != authz.RootTokenID || !slices.Equal(root.Tenants, []string{"*"}) || len(root.Roles) != 6 {
			t.Errorf("operator root token authenticates as %+v", root)
		}
		if tok, created, _ := a.Bootstrap(ctx, "another-token"); created || tok != "" {
			t.Errorf("Bootstrap with tokens present created %q", tok)
		}
		if _, err := a.Authenticate(ctx, "another-token"); err == nil {
			t.Errorf("a later AITRAIL_ADMIN_TOKEN replaced the root token")
		}
	})
	t.Run("existing tokens", func(t *testing.T) {
		store := new(authztest.MemTokenStore)
		store.CreateToken(ctx, authz.Token{ID: "0123456789abcdef", Name: "x", Roles: []authz.Role{authz.RoleRead}, Tenants: []string{"acme"}, Hash: make([]byte, 32)})
		if tok, created, err := authz.NewAuthenticator(store).Bootstrap(ctx, ""); created || tok != "" || err != nil {
			t.Errorf("Bootstrap over existing tokens = %q, %v, %v; want nothing done", tok, created, err)
		}
	})
	t.Run("invalid operator string", func(t *testing.T) {
		for _, s := range []string{"has space", "tab\there", "newline\n", strings.Repeat("a", 513)} {
			a := authz.NewAuthenticator(new(authztest.MemTokenStore))
			if _, _, err := a.Bootstrap(ctx, s); !errors.Is(err, authz.ErrInvalid) {
				t.Errorf("Bootstrap(%q) err = %v, want ErrInvalid", s, err)
			}
		}
	})
}

func TestMint(t *testing.T) {
	ctx := context.Background()
	a, _, root := setup(t)
	admin := func(roles []authz.Role, tenants ...string) authz.Principal {
		p, err := a.Authenticate(ctx, mint(t, a, root, roles, tenants...))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	acmeAdmin := admin([]authz.Role{authz.RoleAdmin, authz.RoleIngest, authz.RoleRead}, "acme", "acme-eu")
	globalAdmin := admin([]authz.Role{authz.RoleAdmin, authz.RoleRead}, "*")
	reader := admin([]authz.Role{authz.RoleRead}, "*")
	R := func(r ...authz.Role) []authz.Role { return r }
	T := func(t ...string) []string { return t }

	tests := []struct {
		name    string
		by      authz.Principal
		tname   string
		roles   []authz.Role
		tenants []string
		wantErr error
		wantMsg string
	}{
		{"root mints anything", root, "n", R(authz.RoleErase, authz.RoleReadContent), T("*"), nil, ""},
		{"subset of roles and tenants", acmeAdmin, "n", R(authz.RoleIngest), T("acme"), nil, ""},
		{"all held roles and tenants", acmeAdmin, "n", R(authz.RoleAdmin, authz.RoleIngest, authz.RoleRead), T("acme", "acme-eu"), nil, ""},
		{"global admin names a tenant", globalAdmin, "n", R(authz.RoleRead), T("globex"), nil, ""},
		{"not admin", reader, "n", R(authz.RoleRead), T("acme"), authz.ErrForbidden, "needs role admin"},
		{"role escalation", acmeAdmin, "n", R(authz.RoleReadContent), T("acme"), authz.ErrForbidden, "more than it holds"},
		{"role escalation among held", globalAdmin, "n", R(authz.RoleRead, authz.RoleErase), T("acme"), authz.ErrForbidden, `lacks role "erase"`},
		{"tenant escalation", acmeAdmin, "n", R(authz.RoleIngest), T("acme", "globex"), authz.ErrForbidden, `lacks tenant "globex"`},
		{"wildcard escalation", acmeAdmin, "n", R(authz.RoleIngest), T("*"), authz.ErrForbidden, "all tenants"},
		{"empty name", root, "", R(authz.RoleRead), T("acme"), authz.ErrInvalid, "name"},
		{"long name", root, strings.Repeat("n", 129), R(authz.RoleRead), T("acme"), authz.ErrInvalid, "name"},
		{"128-character name", root, strings.Repeat("é", 128), R(authz.RoleRead), T("acme"), nil, ""},
		{"control in name", root, "a\nb", R(authz.RoleRead), T("acme"), authz.ErrInvalid, "printable"},
		{"no roles", root, "n", nil, T("acme"), authz.ErrInvalid, "roles"},
		{"unknown role", root, "n", R("superuser"), T("acme"), authz.ErrInvalid, "unknown role"},
		{"duplicate role", root, "n", R(authz.RoleRead, authz.RoleRead), T("acme"), authz.ErrInvalid, "twice"},
		{"no tenants", root, "n", R(authz.RoleRead), nil, authz.ErrInvalid, "tenants"},
		{"bad tenant", root, "n", R(authz.RoleRead), T("Acme"), authz.ErrInvalid, "must match"},
		{"tenant too long", root, "n", R(authz.RoleRead), T(strings.Repeat("a", 64)), authz.ErrInvalid, "must match"},
		{"wildcard with others", root, "n", R(authz.RoleRead), T("*", "acme"), authz.ErrInvalid, "only tenant"},
		{"duplicate tenant", root, "n", R(authz.RoleRead), T("acme", "acme"), authz.ErrInvalid, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, secret, err := a.Mint(ctx, tt.by, tt.tname, tt.roles, tt.tenants)
			if tt.wantErr == nil && tok.Limit != (authz.Limit{}) {
				t.Errorf("Mint gave the token a limit: %+v", tok.Limit)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Mint err = %v, want %v mentioning %q", err, tt.wantErr, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if tok.Hash != nil {
				t.Errorf("Mint returned the stored hash")
			}
			p, err := a.Authenticate(ctx, secret)
			if err != nil {
				t.Fatalf("the minted token does not authenticate: %v", err)
			}
			if p.TokenID != tok.ID || p.Root || !slices.Equal(p.Roles, tt.roles) || !slices.Equal(p.Tenants, tt.tenants) {
				t.Errorf("minted token authenticates as %+v, want exactly roles %v tenants %v", p, tt.roles, tt.tenants)
			}
		})
	}
}

func TestRevokeAndList(t *testing.T) {
	ctx := context.Background()
	a, _, root := setup(t)
	acmeAdminTok := mint(t, a, root, []authz.Role{authz.RoleAdmin, authz.RoleRead}, "acme")
	acmeAdmin, _ := a.Authenticate(ctx, acmeAdminTok)
	globexTok := mint(t, a, root, []authz.Role{authz.RoleRead}, "globex")
	acmeTok := mint(t, a, root, []authz.Role{authz.RoleIngest}, "acme")
	reader, _ := a.Authenticate(ctx, mint(t, a, root, []authz.Role{authz.RoleRead}, "*"))
	allAdmin, _ := a.Authenticate(ctx, mint(t, a, root, []authz.Role{authz.RoleAdmin, authz.RoleRead}, "*"))

	list, err := a.List(ctx, acmeAdmin)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tk := range list {
		ids = append(ids, tk.ID)
		if tk.Hash != nil {
			t.Errorf("List returned the hash of %s", tk.ID)
		}
	}
	if want := []string{acmeAdminTok[4:20], acmeTok[4:20]}; !slices.Equal(ids, want) {
		t.Errorf("an acme admin lists %v, want only acme tokens %v", ids, want)
	}
	if all, _ := a.List(ctx, root); len(all) != 6 || all[0].ID != authz.RootTokenID {
		t.Errorf("root lists %d tokens (first %q), want all 6, root first", len(all), all[0].ID)
	}
	if _, err := a.List(ctx, reader); !errors.Is(err, authz.ErrForbidden) {
		t.Errorf("List by a reader: err = %v, want ErrForbidden", err)
	}

	tests := []struct {
		name    string
		by      authz.Principal
		id      string
		wantErr error
		wantMsg string
	}{
		{"root token by itself", root, authz.RootTokenID, authz.ErrConflict, "only by a successor"},
		{"root token by an admin of all tenants with fewer roles", allAdmin, authz.RootTokenID, authz.ErrConflict, "only by a successor"},
		{"root token by tenant admin", acmeAdmin, authz.RootTokenID, authz.ErrNotFound, ""},
		{"other tenant's token", acmeAdmin, globexTok[4:20], authz.ErrNotFound, ""},
		{"not admin", reader, acmeTok[4:20], authz.ErrForbidden, "needs role admin"},
		{"unknown", root, "ffffffffffffffff", authz.ErrNotFound, ""},
		{"own tenant's token", acmeAdmin, acmeTok[4:20], nil, ""},
		{"twice", acmeAdmin, acmeTok[4:20], authz.ErrNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.Revoke(ctx, tt.by, tt.id)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Revoke: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Revoke err = %v, want %v mentioning %q", err, tt.wantErr, tt.wantMsg)
			}
		})
	}
	if _, err := a.Authenticate(ctx, operatorToken); err != nil {
		t.Errorf("root token stopped working: %v", err)
	}
	if _, err := a.Authenticate(ctx, globexTok); err != nil {
		t.Errorf("a token an acme admin failed to revoke stopped working: %v", err)
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	ctx := context.Background()
	a, _, root := setup(b)
	tok := mint(b, a, root, []authz.Role{authz.RoleIngest}, "acme")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateParallel(b *testing.B) {
	ctx := context.Background()
	a, _, root := setup(b)
	tok := mint(b, a, root, []authz.Role{authz.RoleIngest}, "acme")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Authenticate(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRetireRoot retires the bootstrap token the documented way: root mints
// a successor holding every role on all tenants, and the successor revokes
// root.
func TestRetireRoot(t *testing.T) {
	ctx := context.Background()
	a, _, root := setup(t)
	succTok := mint(t, a, root, authz.AllRoles(), "*")
	succ, err := a.Authenticate(ctx, succTok)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, succ, authz.RootTokenID); err != nil {
		t.Fatalf("the successor could not retire root: %v", err)
	}
	if _, err := a.Authenticate(ctx, operatorToken); !errors.Is(err, authz.ErrUnauthenticated) {
		t.Fatalf("the retired root token still authenticates: %v", err)
	}
	// The successor keeps every power: it can still mint any token.
	if tok := mint(t, a, succ, []authz.Role{authz.RoleErase}, "acme"); tok == "" {
		t.Fatal("the successor could not mint")
	}
	// It is now the last full token: neither a lesser admin of all
	// tenants nor the successor itself can revoke it, or nobody could
	// grant erase again. Another full token can.
	adminTok := mint(t, a, succ, []authz.Role{authz.RoleAdmin}, "*")
	admin, err := a.Authenticate(ctx, adminTok)
	if err != nil {
		t.Fatal(err)
	}
	for name, by := range map[string]authz.Principal{"an admin of all tenants": admin, "itself": succ} {
		if err := a.Revoke(ctx, by, succ.TokenID); !errors.Is(err, authz.ErrConflict) {
			t.Errorf("the last full token revoked by %s: %v, want a conflict", name, err)
		}
	}
	secondTok := mint(t, a, succ, authz.AllRoles(), "*")
	second, err := a.Authenticate(ctx, secondTok)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, second, succ.TokenID); err != nil {
		t.Fatalf("a full token could not revoke another: %v", err)
	}
	// Two full tokens revoking each other at once: the request of the one
	// revoked first, authenticated before, must not take the other too.
	if err := a.Revoke(ctx, succ, second.TokenID); !errors.Is(err, authz.ErrConflict) {
		t.Fatalf("a revoked full token revoked the last one: %v", err)
	}
	third, err := a.Authenticate(ctx, mint(t, a, second, authz.AllRoles(), "*"))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- a.Revoke(ctx, second, third.TokenID) }()
	go func() { errs <- a.Revoke(ctx, third, second.TokenID) }()
	if e1, e2 := <-errs, <-errs; e1 == nil && e2 == nil {
		t.Fatal("two full tokens revoked each other at once, leaving none")
	}
}

// TestMintLimited: a token's own limit is kept and comes with every request
// of it; a limit that is not one is refused, and no token made.
func TestMintLimited(t *testing.T) {
	ctx := context.Background()
	a, _, root := setup(t)
	lim := authz.Limit{EventsPerSecond: 2.5, BurstEvents: 40}
	tok, secret, err := a.MintLimited(ctx, root, "n", []authz.Role{authz.RoleIngest}, []string{"acme"}, lim)
	if err != nil || tok.Limit != lim {
		t.Fatalf("MintLimited = %+v, %v", tok, err)
	}
	if p, err := a.Authenticate(ctx, secret); err != nil || p.Limit != lim {
		t.Fatalf("the limited token authenticates as %+v, %v; want its limit", p, err)
	}
	before, _ := a.List(ctx, root)
	for _, bad := range []authz.Limit{
		{EventsPerSecond: -1},
		{EventsPerSecond: math.NaN()},
		{EventsPerSecond: math.Inf(1)},
		{EventsPerSecond: 2e9},
		{EventsPerSecond: 1, BurstEvents: -1},
		{BurstEvents: 5},
	} {
		if _, _, err := a.MintLimited(ctx, root, "n", []authz.Role{authz.RoleIngest}, []string{"acme"}, bad); !errors.Is(err, authz.ErrInvalid) {
			t.Errorf("limit %+v: %v; want ErrInvalid", bad, err)
		}
	}
	if after, _ := a.List(ctx, root); len(after) != len(before) {
		t.Errorf("refused limits made %d tokens", len(after)-len(before))
	}
}
