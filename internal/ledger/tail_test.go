package ledger

import (
	"bytes"
	"context"
	"fmt"
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

// TestEntriesBoundedBytes: read from the files, Entries returns records up
// to maxEntriesBytes (at least one, even a larger one), in order, so that a
// follower far behind holds a bounded amount of memory; Follow still
// delivers every record.
func TestEntriesBoundedBytes(t *testing.T) {
	ctx := context.Background()
	opts := newKeys(t).opts()
	opts.TailEntries = -1 // nothing in memory
	l := open(t, t.TempDir(), opts)
	defer l.Close()
	const n = 40
	for i := range n {
		if _, err := l.Append(ctx, []Item{rec(i)}); err != nil {
			t.Fatal(err)
		}
	}
	size := len(rec(10).Record)
	defer func(old int) { maxEntriesBytes = old }(maxEntriesBytes)
	maxEntriesBytes = 5*size + size/2
	es, err := l.Entries(ctx, 10, n)
	if err != nil || len(es) != 5 || es[0].Index != 10 || es[4].Index != 14 {
		t.Fatalf("Entries(10, %d) with room for 5.5 records: %d entries from %v, %v; want 10-14", n, len(es), es[0].Index, err)
	}
	maxEntriesBytes = 1
	if es, err := l.Entries(ctx, 10, n); err != nil || len(es) != 1 || es[0].Index != 10 {
		t.Fatalf("Entries with room for less than one record: %d entries, %v; want record 10 alone", len(es), err)
	}

	maxEntriesBytes = 3 * size
	h := &countingHandler{}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Follow(fctx, l, h, FollowOptions{BatchSize: n, OnApply: func(c uint64) {
			if c == n {
				cancel()
			}
		}})
	}()
	<-done
	if h.next != n || h.batches < n/3 {
		t.Fatalf("Follow applied up to %d in %d batches; want all %d records in at least %d", h.next, h.batches, n, n/3)
	}
}

// countingHandler applies entries in memory, checking they come in order.
type countingHandler struct {
	next, batches uint64
}

func (h *countingHandler) Cursor(context.Context) (uint64, error) { return h.next, nil }

func (h *countingHandler) Apply(_ context.Context, es []Entry) error {
	for _, e := range es {
		if e.Index != h.next {
			return fmt.Errorf("entry %d, want %d", e.Index, h.next)
		}
		h.next++
	}
	h.batches++
	return nil
}

// TestRecent checks that Recent hands out the records from an index on
// only when memory holds all of them, and never reads a file; after a
// restart, memory holds the newest records again (without the values
// their appenders gave them).
func TestRecent(t *testing.T) {
	ctx := context.Background()
	opts := newKeys(t).opts()
	opts.TailEntries = 10
	dir := t.TempDir()
	l := open(t, dir, opts)
	defer func() { l.Close() }()
	for i := range 25 {
		it := rec(i)
		it.Value = i
		if _, err := l.Append(ctx, []Item{it}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		from uint64
		n    int
		ok   bool
	}{{15, 10, true}, {24, 1, true}, {25, 0, true}, {30, 0, true}, {14, 0, false}, {0, 0, false}} {
		es, ok := l.Recent(tc.from)
		if ok != tc.ok || len(es) != tc.n {
			t.Errorf("Recent(%d) = %d entries, %v; want %d, %v", tc.from, len(es), ok, tc.n, tc.ok)
			continue
		}
		for j, e := range es {
			if i := int(tc.from) + j; e.Index != uint64(i) || e.Value != i || !bytes.Equal(e.Data, rec(i).Record) {
				t.Errorf("Recent(%d)[%d] = %d %v %q", tc.from, j, e.Index, e.Value, e.Data)
			}
		}
	}
	l.Close()
	l = open(t, dir, opts)
	if es, ok := l.Recent(15); !ok || len(es) != 10 || es[0].Index != 15 || !bytes.Equal(es[9].Data, rec(24).Record) || es[0].Value != nil {
		t.Errorf("after a restart: Recent(15) = %d entries, %v; want records 15-24 without values", len(es), ok)
	}
	if _, ok := l.Recent(14); ok {
		t.Error("after a restart: Recent(14) ok; memory holds 10 records")
	}
	if _, err := l.Append(ctx, []Item{rec(25)}); err != nil {
		t.Fatal(err)
	}
	if es, ok := l.Recent(16); !ok || len(es) != 10 || !bytes.Equal(es[9].Data, rec(25).Record) {
		t.Errorf("after a restart and an append: Recent(16) = %d entries, %v", len(es), ok)
	}

	opts.TailEntries = -1
	none := open(t, t.TempDir(), opts)
	defer none.Close()
	none.Append(ctx, []Item{rec(1)})
	if es, ok := none.Recent(0); ok || es != nil {
		t.Errorf("without a tail: Recent(0) = %d entries, %v; want none, false", len(es), ok)
	}
}
