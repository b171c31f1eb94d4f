package authz_test

import (
	"slices"
	"testing"

	"github.com/aitrail/aitrail/internal/authz"
)

func TestPrincipal(t *testing.T) {
	tests := []struct {
		name    string
		p       authz.Principal
		has     map[authz.Role]bool
		sees    map[string]bool
		all     bool
		visible []string
	}{
		{
			name: "root",
			p:    authz.Principal{TokenID: "root", Root: true},
			has:  map[authz.Role]bool{authz.RoleAdmin: true, authz.RoleErase: true, authz.RoleReadContent: true},
			sees: map[string]bool{"acme": true, "globex": true},
			all:  true,
		},
		{
			name: "wildcard reader",
			p:    authz.Principal{Roles: []authz.Role{authz.RoleRead}, Tenants: []string{"*"}},
			has:  map[authz.Role]bool{authz.RoleRead: true, authz.RoleReadContent: false, authz.RoleAdmin: false},
			sees: map[string]bool{"acme": true, "globex": true},
			all:  true,
		},
		{
			name:    "acme ingester",
			p:       authz.Principal{Roles: []authz.Role{authz.RoleIngest}, Tenants: []string{"acme"}},
			has:     map[authz.Role]bool{authz.RoleIngest: true, authz.RoleRead: false},
			sees:    map[string]bool{"acme": true, "globex": false, "*": false},
			visible: []string{"acme"},
		},
		{
			// Nil from VisibleTenants means "all"; no tenants must not.
			name:    "no tenants",
			p:       authz.Principal{Roles: []authz.Role{authz.RoleRead}},
			sees:    map[string]bool{"acme": false},
			visible: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for r, want := range tt.has {
				if got := tt.p.Has(r); got != want {
					t.Errorf("Has(%s) = %v, want %v", r, got, want)
				}
			}
			for tn, want := range tt.sees {
				if got := tt.p.CanSeeTenant(tn); got != want {
					t.Errorf("CanSeeTenant(%s) = %v, want %v", tn, got, want)
				}
			}
			if got := tt.p.AllTenants(); got != tt.all {
				t.Errorf("AllTenants() = %v, want %v", got, tt.all)
			}
			got := tt.p.VisibleTenants()
			if (got == nil) != (tt.visible == nil) || !slices.Equal(got, tt.visible) {
				t.Errorf("VisibleTenants() = %#v, want %#v", got, tt.visible)
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range authz.AllRoles() {
		if got, err := authz.ParseRole(string(r)); got != r || err != nil {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "Admin", "root", "read-content", "*"} {
		if _, err := authz.ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) succeeded", s)
		}
	}
	if len(authz.AllRoles()) != 6 {
		t.Errorf("AllRoles() = %v, want the 6 roles of the API", authz.AllRoles())
	}
}
