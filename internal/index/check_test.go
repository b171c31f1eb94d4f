package index

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCheck: an intact index passes; one missing rows, ahead of the log or
// with damaged pages is reported damaged; a missing file and one of another
// version are said to be so (the server builds them). Check writes nothing.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	build := func(t *testing.T) (string, uint64) {
		ix, e := openTemp(t, Options{})
		var recs = fixture()
		for i := 0; i < 300; i++ {
			recs = append(recs, realistic(i))
		}
		apply(t, ix, e.add(t, recs...))
		if err := ix.Close(); err != nil {
			t.Fatal(err)
		}
		return e.path, e.log.Size()
	}
	edit := func(t *testing.T, path, stmt string) {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}

	path, size := build(t)
	before, _ := os.ReadFile(path)
	rep, err := Check(ctx, path, size)
	if err != nil || rep.Records != size || rep.Cursor != size || rep.Missing || rep.Stale {
		t.Fatalf("intact index: %+v, %v; want %d records", rep, err, size)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("Check changed the index file")
	}
	if rep, err := Check(ctx, path, size-1); !errors.Is(err, ErrDamaged) {
		t.Errorf("an index ahead of the log: %+v, %v; want ErrDamaged", rep, err)
	}
	if rep, err := Check(ctx, filepath.Join(t.TempDir(), "none.db"), size); err != nil || !rep.Missing {
		t.Errorf("no index file: %+v, %v; want Missing", rep, err)
	}

	path, size = build(t)
	edit(t, path, "DELETE FROM records WHERE idx = 7")
	if _, err := Check(ctx, path, size); !errors.Is(err, ErrDamaged) {
		t.Errorf("an index missing a row: %v; want ErrDamaged", err)
	}

	path, size = build(t)
	edit(t, path, "PRAGMA user_version = 3")
	if rep, err := Check(ctx, path, size); err != nil || !rep.Stale {
		t.Errorf("an index of another version: %+v, %v; want Stale", rep, err)
	}

	path, size = build(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	junk := make([]byte, 3*pageSize)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	f.WriteAt(junk, fi.Size()/2/pageSize*pageSize) // pages in the middle
	f.Close()
	if _, err := Check(ctx, path, size); !errors.Is(err, ErrDamaged) {
		t.Errorf("an index with damaged pages: %v; want ErrDamaged", err)
	}
}
