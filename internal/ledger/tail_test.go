package ledger

import (
	"bytes"
	"context"
	"testing"
)

// TestEntriesFromMemory checks the tail of recent records: followers get
// the newest records with the values they were appended with, older ones
// from the files without, the same bytes either way, and after a restart
// (when nothing is in memory) everything from the files.
func TestEntriesFromMemory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := newKeys(t).opts()
	opts.TailEntries = 10
	l := open(t, dir, opts)
	const n = 25
	for i := range n {
		it := rec(i)
		it.Value = i
		if _, err := l.Append(ctx, []Item{it, rec(i)}); err != nil { // the second is a duplicate
			t.Fatal(err)
		}
	}
	check := func(l *Ledger, fromMemory func(i uint64) bool) {
		t.Helper()
		for from := uint64(0); from < n; from++ {
			es, err := l.Entries(ctx, from, 7)
			if err != nil {
				t.Fatal(err)
			}
			if want := min(7, n-from); uint64(len(es)) != want {
				t.Fatalf("Entries(%d, 7) gave %d entries, want %d", from, len(es), want)
			}
			memory := fromMemory(from) && fromMemory(from+uint64(len(es))-1)
			for j, e := range es {
				i := from + uint64(j)
				if e.Index != i || !bytes.Equal(e.Data, rec(int(i)).Record) {
					t.Fatalf("entry %d: index %d, data %q", i, e.Index, e.Data)
				}
				switch {
				case memory && e.Value != int(i):
					t.Fatalf("entry %d from memory has value %v, want %d", i, e.Value, i)
				case !memory && e.Value != nil:
					t.Fatalf("entry %d read from the files has value %v", i, e.Value)
				}
			}
		}
	}
	check(l, func(i uint64) bool { return i >= n-10 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, dir, opts)
	defer l.Close()
	check(l, func(uint64) bool { return false })
	if _, err := l.Append(ctx, []Item{{Key: "new", Record: []byte("new"), Value: "v"}}); err != nil {
		t.Fatal(err)
	}
	if es, err := l.Entries(ctx, n, 5); err != nil || len(es) != 1 || es[0].Value != "v" {
		t.Fatalf("after reopening, the new record: %v, %v", es, err)
	}
}
