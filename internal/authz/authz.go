// Package authz decides who a request comes from and what it may do:
// principals, roles, tenants and the bearer tokens that carry them.
//
// Token secrets are never stored, logged or put into errors: the token store
// holds only their SHA-256. Authentication errors never say which part of a
// token was wrong.
package authz

import (
	"errors"
	"fmt"
	"slices"
)

// Errors a caller acts on; the HTTP layer maps them to statuses. They are
// wrapped with a message meant for the client; test with errors.Is.
var (
	// ErrUnauthenticated: no token, or not a valid one (401).
	ErrUnauthenticated = errors.New("authentication required")
	// ErrForbidden: the principal lacks a role or tenant (403).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no such token, or one the caller may not see (404).
	ErrNotFound = errors.New("not found")
	// ErrExists: a token with the id exists (409).
	ErrExists = errors.New("already exists")
	// ErrConflict: the request conflicts with the state, e.g. deleting the
	// root token (409).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: malformed input (400).
	ErrInvalid = errors.New("invalid")
)

// Role is a permission a token holds.
type Role string

// The roles, as the API names them.
const (
	RoleIngest      Role = "ingest"       // append events
	RoleRead        Role = "read"         // read records and proofs
	RoleReadContent Role = "read_content" // see decrypted event content
	RoleAudit       Role = "audit"        // read the log's entry bundles
	RoleAdmin       Role = "admin"        // manage tokens and settings
	RoleErase       Role = "erase"        // erase personal data (destroy keys)
)

var allRoles = []Role{RoleIngest, RoleRead, RoleReadContent, RoleAudit, RoleAdmin, RoleErase}

// AllRoles returns every role, in a stable order. The slice is the caller's.
func AllRoles() []Role { return slices.Clone(allRoles) }

// ParseRole returns the role named s, or an error wrapping ErrInvalid.
func ParseRole(s string) (Role, error) {
	if r := Role(s); slices.Contains(allRoles, r) {
		return r, nil
	}
	return "", fmt.Errorf("%w: unknown role %q (known roles: ingest, read, read_content, audit, admin, erase)", ErrInvalid, s)
}

// AllTenantsWildcard in a token's tenant list means every tenant.
const AllTenantsWildcard = "*"

// Principal is the authenticated caller of a request. Its slices belong to
// the Principal; Authenticate returns fresh ones each time.
type Principal struct {
	// TokenID is the id of the token the caller presented ("root" for the
	// bootstrap token).
	TokenID string
	// Name is the token's human name.
	Name string
	// Roles are the roles the token holds.
	Roles []Role
	// Tenants are the tenants the token may act on; "*" means all.
	Tenants []string
	// Root marks the bootstrap token, which holds every role on every tenant.
	Root bool
	// Limit is the token's own bound on the events it may append, if any.
	Limit Limit
}

// Has reports whether p holds role r. A root principal holds every role;
// read_content and audit include read.
func (p Principal) Has(r Role) bool {
	if p.Root || slices.Contains(p.Roles, r) {
		return true
	}
	return r == RoleRead && (slices.Contains(p.Roles, RoleReadContent) || slices.Contains(p.Roles, RoleAudit))
}

// AllTenants reports whether p may act on every tenant.
func (p Principal) AllTenants() bool {
	return p.Root || slices.Contains(p.Tenants, AllTenantsWildcard)
}

// CanSeeTenant reports whether p may act on tenant t.
func (p Principal) CanSeeTenant(t string) bool {
	return p.AllTenants() || slices.Contains(p.Tenants, t)
}

// VisibleTenants returns the tenants p may act on, or nil if p may act on
// all of them. Queries filter on it.
func (p Principal) VisibleTenants() []string {
	if p.AllTenants() {
		return nil
	}
	// Never nil here: nil would mean every tenant.
	return append([]string{}, p.Tenants...)
}
