package authz

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Token is a bearer token as the store keeps it. The secret itself is never
// stored: Hash is SHA-256 of the secret part of an atr_ token, or of the
// whole string for the root token. Both are high-entropy or chosen by the
// operator, so a fast hash is enough.
type Token struct {
	ID        string
	Name      string
	Roles     []Role
	Tenants   []string
	Hash      []byte
	CreatedAt time.Time
	// Root marks the bootstrap token: every role on every tenant, and it
	// cannot be revoked through the API.
	Root bool
	// Limit is the token's own bound on the events it may append.
	Limit Limit
}

// Limit bounds the events a token may append (ingest.TokenRate). The zero
// Limit leaves the server's limits.token_events_per_second in force.
type Limit struct {
	// EventsPerSecond is the average rate; BurstEvents how many may be
	// appended at once, 0 for the server's default burst at that rate.
	EventsPerSecond float64
	BurstEvents     int
}

// MaxEventsPerSecond is the highest rate a Limit may give.
const MaxEventsPerSecond = 1e9

func (l Limit) validate() error {
	switch r := l.EventsPerSecond; {
	case !(r >= 0 && r <= MaxEventsPerSecond):
		return fmt.Errorf("%w: events_per_second must be a number from 0 (the server's limit) to %g", ErrInvalid, float64(MaxEventsPerSecond))
	case l.BurstEvents < 0:
		return fmt.Errorf("%w: burst_events must be 0 (the server's default) or more", ErrInvalid)
	case l.BurstEvents > 0 && r == 0:
		return fmt.Errorf("%w: burst_events needs events_per_second", ErrInvalid)
	}
	return nil
}

// TokenStore keeps tokens durably. Implementations must be safe for
// concurrent use. Every method that changes the store has made the change
// durable when it returns nil.
type TokenStore interface {
	// CreateToken stores t; it returns an error wrapping ErrExists if a
	// token with t.ID exists.
	CreateToken(ctx context.Context, t Token) error
	// GetToken returns the token with id, or an error wrapping ErrNotFound.
	GetToken(ctx context.Context, id string) (Token, error)
	// ListTokens returns every token, oldest first.
	ListTokens(ctx context.Context) ([]Token, error)
	// DeleteToken removes the token with id, or returns an error wrapping
	// ErrNotFound.
	DeleteToken(ctx context.Context, id string) error
	// CountTokens returns the number of tokens.
	CountTokens(ctx context.Context) (int, error)
}

// RootTokenID is the id under which the bootstrap (root) token is stored.
const RootTokenID = "root"

// Token format: "atr_" + 16 lowercase hex (id) + "_" + 43 base64url (secret,
// 32 random bytes). The secret alphabet contains '_', so the token is split
// by position, never by separator.
const (
	tokenPrefix = "atr_"
	idLen       = 16
	secretLen   = 43
	tokenLen    = len(tokenPrefix) + idLen + 1 + secretLen
	// maxBearerLen bounds what Authenticate hashes and what an operator may
	// choose as the root token.
	maxBearerLen = 512
)

// cacheTTL bounds how long a token read from the store is trusted without
// reading it again. Create and delete through the Authenticator take effect
// at once; the TTL only matters for changes made by another process sharing
// the store.
const cacheTTL = time.Minute

// Authenticator turns bearer tokens into principals and manages tokens. It
// caches tokens in memory, so authenticating a known token does no I/O. It
// is safe for concurrent use.
type Authenticator struct {
	store TokenStore

	// fullMu serialises revocations of full tokens, so that two full
	// tokens revoking each other at once cannot leave none.
	fullMu sync.Mutex

	mu    sync.RWMutex
	cache map[string]cached
	// gen counts invalidations; a lookup that read the store before one
	// happened must not put its (possibly stale) token in the cache.
	gen uint64
}

type cached struct {
	tok     Token
	expires time.Time
}

// NewAuthenticator returns an Authenticator over store.
func NewAuthenticator(store TokenStore) *Authenticator {
	return &Authenticator{store: store, cache: make(map[string]cached)}
}

var errBadToken = fmt.Errorf("%w: missing or invalid bearer token", ErrUnauthenticated)

// Authenticate returns the principal that bearer (the token, without the
// "Bearer " prefix) authenticates. It returns an error wrapping
// ErrUnauthenticated for anything wrong with the token, and never says
// what; any other error means the store failed.
func (a *Authenticator) Authenticate(ctx context.Context, bearer string) (Principal, error) {
	if bearer == "" || len(bearer) > maxBearerLen {
		return Principal{}, errBadToken
	}
	// The root token first: it may be any string, atr_-shaped included, and
	// its atr_ id (if any) is not in the store, so looking it up by id would
	// cost a store read on every request.
	root, err := a.lookup(ctx, RootTokenID)
	switch {
	case err == nil:
		h := sha256.Sum256([]byte(bearer))
		if root.Root && subtle.ConstantTimeCompare(h[:], root.Hash) == 1 {
			return principal(root), nil
		}
	case !errors.Is(err, ErrNotFound):
		return Principal{}, fmt.Errorf("authz: couldn't read token: %w", err)
	}
	if id, secret, ok := parseToken(bearer); ok {
		tok, err := a.lookup(ctx, id)
		switch {
		case err == nil:
			h := sha256.Sum256([]byte(secret))
			if !tok.Root && subtle.ConstantTimeCompare(h[:], tok.Hash) == 1 {
				return principal(tok), nil
			}
		case !errors.Is(err, ErrNotFound):
			return Principal{}, fmt.Errorf("authz: couldn't read token: %w", err)
		}
	}
	return Principal{}, errBadToken
}

// The root principal's roles and tenants, shared by every request of the
// root token: nothing writes into a Principal's slices, and these have no
// spare capacity for an append to write into.
var rootRoles, rootTenants = slices.Clip(AllRoles()), []string{AllTenantsWildcard}

func principal(t Token) Principal {
	if t.Root {
		return Principal{TokenID: t.ID, Name: t.Name, Roles: rootRoles, Tenants: rootTenants, Root: true, Limit: t.Limit}
	}
	return Principal{TokenID: t.ID, Name: t.Name, Roles: slices.Clone(t.Roles), Tenants: slices.Clone(t.Tenants), Limit: t.Limit}
}

// parseToken splits an atr_ token into its id and secret.
func parseToken(s string) (id, secret string, ok bool) {
	if len(s) != tokenLen || s[:len(tokenPrefix)] != tokenPrefix || s[len(tokenPrefix)+idLen] != '_' {
		return "", "", false
	}
	id, secret = s[len(tokenPrefix):len(tokenPrefix)+idLen], s[len(tokenPrefix)+idLen+1:]
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", "", false
		}
	}
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return "", "", false
		}
	}
	return id, secret, true
}

func (a *Authenticator) lookup(ctx context.Context, id string) (Token, error) {
	now := time.Now()
	a.mu.RLock()
	c, ok := a.cache[id]
	gen := a.gen
	a.mu.RUnlock()
	if ok && now.Before(c.expires) {
		return c.tok, nil
	}
	tok, err := a.store.GetToken(ctx, id)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gen != gen {
		return tok, err
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			delete(a.cache, id)
		}
		return Token{}, err
	}
	a.cache[id] = cached{tok: tok, expires: now.Add(cacheTTL)}
	return tok, nil
}

// invalidate drops id from the cache after a change in the store.
func (a *Authenticator) invalidate(id string) {
	a.mu.Lock()
	delete(a.cache, id)
	a.gen++
	a.mu.Unlock()
}

// Bootstrap creates the root token if the store holds no token at all. The
// root token is rootToken if that is non-empty (an operator's string, e.g.
// from AITRAIL_ADMIN_TOKEN), else a random atr_-shaped token. It returns the
// token and created=true if it made one; the caller shows it once. If tokens
// exist it does nothing and returns created=false.
func (a *Authenticator) Bootstrap(ctx context.Context, rootToken string) (token string, created bool, err error) {
	n, err := a.store.CountTokens(ctx)
	if err != nil {
		return "", false, fmt.Errorf("authz: couldn't count tokens: %w", err)
	}
	if n > 0 {
		return "", false, nil
	}
	if rootToken == "" {
		id, secret, err := newSecret()
		if err != nil {
			return "", false, err
		}
		rootToken = tokenPrefix + id + "_" + secret
	} else if err := validateRootToken(rootToken); err != nil {
		return "", false, err
	}
	h := sha256.Sum256([]byte(rootToken))
	tok := Token{
		ID:        RootTokenID,
		Name:      "root",
		Roles:     AllRoles(),
		Tenants:   []string{AllTenantsWildcard},
		Hash:      h[:],
		CreatedAt: time.Now().UTC().Round(0),
		Root:      true,
	}
	err = a.store.CreateToken(ctx, tok)
	a.invalidate(RootTokenID)
	if errors.Is(err, ErrExists) {
		return "", false, nil // another process bootstrapped first
	}
	if err != nil {
		return "", false, fmt.Errorf("authz: couldn't store root token: %w", err)
	}
	return rootToken, true, nil
}

func validateRootToken(s string) error {
	if len(s) > maxBearerLen {
		return fmt.Errorf("%w: the admin token must be at most %d bytes", ErrInvalid, maxBearerLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("%w: the admin token must be printable ASCII without spaces", ErrInvalid)
		}
	}
	return nil
}

// newSecret returns a random token id and secret.
func newSecret() (id, secret string, err error) {
	var b [8 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("authz: couldn't generate token: %w", err)
	}
	return hex.EncodeToString(b[:8]), base64.RawURLEncoding.EncodeToString(b[8:]), nil
}

var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Mint creates a token named name holding roles on tenants, on behalf of by,
// which must hold admin and everything it grants: a token cannot mint a
// token with more than it holds. It returns the stored token (with Hash
// cleared) and the bearer string, which is shown once and kept nowhere.
func (a *Authenticator) Mint(ctx context.Context, by Principal, name string, roles []Role, tenants []string) (Token, string, error) {
	return a.MintLimited(ctx, by, name, roles, tenants, Limit{})
}

// MintLimited is Mint of a token with a limit of its own on the events it
// may append. The limit is not a privilege: a token with a limit may mint
// one with another, or none.
func (a *Authenticator) MintLimited(ctx context.Context, by Principal, name string, roles []Role, tenants []string, limit Limit) (Token, string, error) {
	if !by.Has(RoleAdmin) {
		return Token{}, "", fmt.Errorf("%w: minting tokens needs role admin", ErrForbidden)
	}
	if err := validateToken(name, roles, tenants); err != nil {
		return Token{}, "", err
	}
	if err := limit.validate(); err != nil {
		return Token{}, "", err
	}
	for _, r := range roles {
		if !by.Has(r) {
			return Token{}, "", fmt.Errorf("%w: a token cannot mint a token with more than it holds: this token lacks role %q", ErrForbidden, r)
		}
	}
	for _, t := range tenants {
		if t == AllTenantsWildcard && !by.AllTenants() {
			return Token{}, "", fmt.Errorf("%w: a token cannot mint a token with more than it holds: this token cannot grant all tenants (\"*\")", ErrForbidden)
		}
		if !by.CanSeeTenant(t) {
			return Token{}, "", fmt.Errorf("%w: a token cannot mint a token with more than it holds: this token lacks tenant %q", ErrForbidden, t)
		}
	}
	id, secret, err := newSecret()
	if err != nil {
		return Token{}, "", err
	}
	h := sha256.Sum256([]byte(secret))
	tok := Token{
		ID:        id,
		Name:      name,
		Roles:     slices.Clone(roles),
		Tenants:   slices.Clone(tenants),
		Hash:      h[:],
		CreatedAt: time.Now().UTC().Round(0),
		Limit:     limit,
	}
	if err := a.store.CreateToken(ctx, tok); err != nil {
		return Token{}, "", fmt.Errorf("authz: couldn't store token: %w", err)
	}
	a.invalidate(id)
	tok.Hash = nil
	return tok, tokenPrefix + id + "_" + secret, nil
}

func validateToken(name string, roles []Role, tenants []string) error {
	if n := utf8.RuneCountInString(name); n < 1 || n > 128 || !utf8.ValidString(name) {
		return fmt.Errorf("%w: name must be 1 to 128 characters", ErrInvalid)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: name must be printable (found %U)", ErrInvalid, r)
		}
	}
	if len(roles) == 0 {
		return fmt.Errorf("%w: roles must not be empty", ErrInvalid)
	}
	for i, r := range roles {
		if _, err := ParseRole(string(r)); err != nil {
			return err
		}
		if slices.Contains(roles[:i], r) {
			return fmt.Errorf("%w: role %q is listed twice", ErrInvalid, r)
		}
	}
	if len(tenants) == 0 {
		return fmt.Errorf("%w: tenants must not be empty (use [\"*\"] for all tenants)", ErrInvalid)
	}
	for i, t := range tenants {
		if t == AllTenantsWildcard {
			if len(tenants) > 1 {
				return fmt.Errorf("%w: \"*\" (all tenants) must be the only tenant", ErrInvalid)
			}
			continue
		}
		if !tenantRE.MatchString(t) {
			return fmt.Errorf("%w: tenant %q must match %s", ErrInvalid, t, tenantRE)
		}
		if slices.Contains(tenants[:i], t) {
			return fmt.Errorf("%w: tenant %q is listed twice", ErrInvalid, t)
		}
	}
	return nil
}

// canManage reports whether by may see and revoke t: an admin limited to
// some tenants manages only tokens limited to tenants it can see.
func canManage(by Principal, t Token) bool {
	if by.AllTenants() {
		return true
	}
	if t.Root || len(t.Tenants) == 0 {
		return false
	}
	for _, tn := range t.Tenants {
		if tn == AllTenantsWildcard || !by.CanSeeTenant(tn) {
			return false
		}
	}
	return true
}

// List returns the tokens by may manage, oldest first, with Hash cleared.
// It needs role admin.
func (a *Authenticator) List(ctx context.Context, by Principal) ([]Token, error) {
	if !by.Has(RoleAdmin) {
		return nil, fmt.Errorf("%w: listing tokens needs role admin", ErrForbidden)
	}
	all, err := a.store.ListTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("authz: couldn't list tokens: %w", err)
	}
	out := all[:0]
	for _, t := range all {
		if canManage(by, t) {
			t.Hash = nil
			out = append(out, t)
		}
	}
	return out, nil
}

// successor reports whether p may retire the root token: p is another
// token holding every role on all tenants.
func successor(p Principal) bool {
	if p.Root || !p.AllTenants() {
		return false
	}
	for _, r := range allRoles {
		if !p.Has(r) {
			return false
		}
	}
	return true
}

// full reports whether t holds every role on all tenants.
func full(t Token) bool {
	if t.Root {
		return true
	}
	if !slices.Contains(t.Tenants, AllTenantsWildcard) {
		return false
	}
	for _, r := range allRoles {
		if !slices.Contains(t.Roles, r) {
			return false
		}
	}
	return true
}

// Revoke deletes token id on behalf of by, which needs role admin and must be
// able to see the token's tenants (otherwise the token is not found). The
// token stops authenticating when Revoke returns.
//
// A full token (root, or any token holding every role on all tenants) can
// be revoked only by another full token, so that one always remains: a role
// nobody holds could never be granted again. The root token is retired by a
// successor (a full token it minted for the purpose); a full token revoking
// itself, or a lesser token revoking a full one, returns an error wrapping
// ErrConflict.
func (a *Authenticator) Revoke(ctx context.Context, by Principal, id string) error {
	if !by.Has(RoleAdmin) {
		return fmt.Errorf("%w: revoking tokens needs role admin", ErrForbidden)
	}
	t, err := a.store.GetToken(ctx, id)
	if errors.Is(err, ErrNotFound) || err == nil && !canManage(by, t) {
		return fmt.Errorf("%w: token %q", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("authz: couldn't read token: %w", err)
	}
	if t.Root && !successor(by) {
		return fmt.Errorf("%w: the root token can be revoked only by a successor holding every role on all tenants; mint one with the root token, then revoke root with it", ErrConflict)
	}
	if full(t) {
		if by.TokenID == t.ID || !by.Root && !successor(by) {
			return fmt.Errorf("%w: a token holding every role on all tenants can be revoked only by another such token, so that one always remains", ErrConflict)
		}
		// The revoker must still exist when the token goes: it may have
		// been revoked meanwhile, by the very token it revokes.
		a.fullMu.Lock()
		defer a.fullMu.Unlock()
		if _, err := a.store.GetToken(ctx, by.TokenID); err != nil {
			return fmt.Errorf("%w: the revoking token itself was revoked meanwhile", ErrConflict)
		}
	}
	err = a.store.DeleteToken(ctx, id)
	a.invalidate(id)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: token %q", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("authz: couldn't delete token: %w", err)
	}
	return nil
}
