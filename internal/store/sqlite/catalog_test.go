package sqlitestore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/authz/authztest"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
	sqlitestore "github.com/aitrail/aitrail/internal/store/sqlite"
)

func open(t *testing.T, path string) *sqlitestore.Catalog {
	t.Helper()
	c, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newCatalog(t *testing.T) *sqlitestore.Catalog {
	return open(t, filepath.Join(t.TempDir(), "catalog.db"))
}

func TestKeyStoreConformance(t *testing.T) {
	cryptotest.TestKeyStore(t, func(t *testing.T) crypto.KeyStore { return newCatalog(t) })
}

func TestTokenStoreConformance(t *testing.T) {
	authztest.TestTokenStore(t, func(t *testing.T) authz.TokenStore { return newCatalog(t) })
}

func kek(t *testing.T, b byte) crypto.KEK {
	t.Helper()
	k, err := crypto.NewLocalKEK("", bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyringSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	aad := []byte("acme\x00rec-1")

	c, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	kr := crypto.NewKeyring(kek(t, 1), c)
	if err := kr.CheckKEK(ctx); err != nil {
		t.Fatalf("CheckKEK on a new catalog: %v", err)
	}
	blob, keyID, err := kr.Seal(ctx, "acme", []byte("the completion"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c = open(t, path)
	kr = crypto.NewKeyring(kek(t, 1), c)
	if err := kr.CheckKEK(ctx); err != nil {
		t.Fatalf("CheckKEK after restart with the same master key: %v", err)
	}
	got, err := kr.Open(ctx, keyID, blob, aad)
	if err != nil || string(got) != "the completion" {
		t.Fatalf("Open after restart = %q, %v", got, err)
	}
	if _, k2, err := kr.Seal(ctx, "acme", []byte("x"), aad); err != nil || k2 != keyID {
		t.Errorf("Seal after restart used key %s (%v), want the stored %s", k2, err, keyID)
	}

	wrong := crypto.NewKeyring(kek(t, 2), c)
	err = wrong.CheckKEK(ctx)
	if !errors.Is(err, crypto.ErrWrongMasterKey) || !strings.Contains(err.Error(), "is not this data directory's master key") {
		t.Fatalf("CheckKEK with another master key: err = %v, want ErrWrongMasterKey with a clear message", err)
	}
	if _, err := wrong.Open(ctx, keyID, blob, aad); err == nil {
		t.Errorf("another master key opened old content")
	}
}

func countKeys(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM data_keys`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConcurrentSealMakesOneKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	kr := crypto.NewKeyring(kek(t, 1), open(t, path))
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, _, err := kr.Seal(ctx, "new-tenant", []byte("x"), []byte("new-tenant\x00r")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := countKeys(t, path); n != 1 {
		t.Errorf("32 concurrent Seals on a new scope stored %d keys, want 1", n)
	}
}

func TestTokensSurviveRestartAndSecretsAreNotStored(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "catalog.db")
	const operator = "operator-chosen-admin-token-7f3a9c"

	c, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := authz.NewAuthenticator(c)
	if _, created, err := a.Bootstrap(ctx, operator); err != nil || !created {
		t.Fatalf("Bootstrap = %v, %v", created, err)
	}
	root, err := a.Authenticate(ctx, operator)
	if err != nil {
		t.Fatal(err)
	}
	_, kept, err := a.Mint(ctx, root, "ingester", []authz.Role{authz.RoleIngest}, []string{"acme"})
	if err != nil {
		t.Fatal(err)
	}
	_, revoked, err := a.Mint(ctx, root, "temp", []authz.Role{authz.RoleRead}, []string{"acme"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, root, revoked[4:20]); err != nil {
		t.Fatal(err)
	}

	// Look at every file SQLite wrote (database, WAL, shared memory) before
	// and after a checkpoint.
	grep := func(when string) {
		files, _ := filepath.Glob(path + "*")
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{operator, kept, kept[21:], revoked[21:]} {
				if bytes.Contains(b, []byte(secret)) {
					t.Errorf("%s: %s contains a token secret in the clear", when, filepath.Base(f))
				}
			}
		}
	}
	grep("while open")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	grep("after close")

	a = authz.NewAuthenticator(open(t, path))
	if _, created, _ := a.Bootstrap(ctx, "another"); created {
		t.Errorf("Bootstrap after restart created a second root token")
	}
	for _, tc := range []struct {
		tok  string
		want bool
	}{{operator, true}, {kept, true}, {revoked, false}} {
		if _, err := a.Authenticate(ctx, tc.tok); (err == nil) != tc.want {
			t.Errorf("after restart, token authenticates = %v, want %v", err == nil, tc.want)
		}
	}
}

func TestFileMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	c := open(t, path)
	if err := c.PutCheck(ctx, []byte("x")); err != nil { // make SQLite create its WAL
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	if len(files) < 2 {
		t.Fatalf("expected the database and its WAL, found %v", files)
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", filepath.Base(f), fi.Mode().Perm())
		}
	}

	loose := filepath.Join(t.TempDir(), "loose.db")
	if err := os.WriteFile(loose, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o644)
	open(t, loose)
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o600 {
		t.Errorf("an existing catalog with mode 0644 was left at %04o, want 0600", fi.Mode().Perm())
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	newer := filepath.Join(dir, "newer.db")
	db, err := sql.Open("sqlite", newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := sqlitestore.Open(newer); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open of a catalog from a newer version: err = %v, want a refusal", err)
	}
	for _, p := range []string{"", filepath.Join(dir, "a?b.db"), "file:x.db", ":memory:", filepath.Join(dir, "missing", "c.db")} {
		if c, err := sqlitestore.Open(p); err == nil {
			c.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}
