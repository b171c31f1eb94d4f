package authz_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/authz/authztest"
)

// FuzzAuthenticate: bearer tokens come from request headers. Only the exact
// root token and the minted token authenticate; everything else is
// ErrUnauthenticated.
func FuzzAuthenticate(f *testing.F) {
	ctx := context.Background()
	store := &authztest.MemTokenStore{}
	a := authz.NewAuthenticator(store)
	if _, _, err := a.Bootstrap(ctx, "root-secret"); err != nil {
		f.Fatal(err)
	}
	root, err := a.Authenticate(ctx, "root-secret")
	if err != nil {
		f.Fatal(err)
	}
	_, minted, err := a.Mint(ctx, root, "fuzz", []authz.Role{authz.RoleRead}, []string{"acme"})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"root-secret", minted, minted[:len(minted)-1], "atr_", "atr__", "atr_0123456789abcdef_", "", "root-secret\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, bearer string) {
		p, err := a.Authenticate(ctx, bearer)
		switch {
		case bearer == "root-secret" || bearer == minted:
			if err != nil {
				t.Fatalf("valid token %q refused: %v", bearer, err)
			}
		case err == nil:
			t.Fatalf("%q authenticated as %+v", bearer, p)
		case !errors.Is(err, authz.ErrUnauthenticated):
			t.Fatalf("%q: error %v is not ErrUnauthenticated", bearer, err)
		}
	})
}
