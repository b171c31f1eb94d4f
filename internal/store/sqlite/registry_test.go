package sqlitestore_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/registry"
	sqlitestore "github.com/aitrail/aitrail/internal/store/sqlite"
)

func openRegistry(t *testing.T, path string) *sqlitestore.RegistryStore {
	t.Helper()
	s, err := sqlitestore.OpenRegistry(path)
	if err != nil {
		t.Fatalf("OpenRegistry: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRegistryStore saves facts and the cursor, reopens the file and finds
// them again: a fact stored twice is kept once, and the cursor never moves
// back.
func TestRegistryStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openRegistry(t, path)
	if facts, cursor, err := s.Load(ctx); err != nil || len(facts) != 0 || cursor != 0 {
		t.Fatalf("new store: %v %d %v", facts, cursor, err)
	}
	d1 := registry.Deployment{Index: 3, EventID: "e3", Action: registry.ActionDeploy, Tenant: "acme", Name: "m", Version: "v1",
		Environment: "prod", Resource: &event.Resource{Type: "endpoint", ID: "ep"}, Actor: "alice", Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	d2 := registry.Deployment{Index: 9, EventID: "e9", Action: registry.ActionRetire, Tenant: "acme", Name: "m", Version: "v1",
		Time: time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)}
	if err := s.Save(ctx, []registry.Deployment{d1}, 5); err != nil {
		t.Fatal(err)
	}
	changed := d1
	changed.Version = "other"
	if err := s.Save(ctx, []registry.Deployment{changed, d2}, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, nil, 7); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openRegistry(t, path)
	facts, cursor, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []registry.Deployment{d1, d2}; !reflect.DeepEqual(facts, want) || cursor != 10 {
		t.Fatalf("reopened: %+v cursor %d; want %+v cursor 10", facts, cursor, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("registry file mode: %v %v", fi, err)
	}
}

// TestRegistryStoreOtherVersionIsEmptied opens a registry file of another
// schema version: being derived, it is emptied rather than migrated.
func TestRegistryStoreOtherVersionIsEmptied(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openRegistry(t, path)
	if err := s.Save(ctx, []registry.Deployment{{Index: 1, Action: registry.ActionDeploy, Name: "m", Version: "v"}}, 2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = openRegistry(t, path)
	if facts, cursor, err := s.Load(ctx); err != nil || len(facts) != 0 || cursor != 0 {
		t.Fatalf("after a version change: %v %d %v; want an empty registry", facts, cursor, err)
	}
}
