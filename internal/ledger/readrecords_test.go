package ledger

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestReadRecords reads records back by location, as the query index does:
// from memory and from several segments, in any order, the same bytes as
// appended, and the same locations whether the entries came from memory or
// the files. A location that is wrong or a record altered on disk is
// reported, never served.
func TestReadRecords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := newKeys(t).opts()
	opts.TailEntries = 20
	opts.SegmentSize = 2048 // several segments
	l := open(t, dir, opts)
	const n = 300
	for i := 0; i < n; i += 3 {
		if _, err := l.Append(ctx, []Item{rec(i), rec(i + 1), rec(i + 2)}); err != nil {
			t.Fatal(err)
		}
	}
	memory, err := l.Entries(ctx, n-20, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open(t, dir, opts) // nothing in memory now
	defer l.Close()
	es, err := l.Entries(ctx, 0, n)
	if err != nil || len(es) != n {
		t.Fatalf("Entries: %d, %v", len(es), err)
	}
	for j, e := range memory {
		if f := es[n-20+j]; e.Offset != f.Offset {
			t.Fatalf("record %d: offset %d from memory, %d from the files", e.Index, e.Offset, f.Offset)
		}
	}
	if _, err := l.Append(ctx, []Item{rec(n)}); err != nil { // one in memory again
		t.Fatal(err)
	}
	more, err := l.Entries(ctx, n, 1)
	if err != nil || len(more) != 1 {
		t.Fatalf("Entries after reopening: %v, %v", more, err)
	}
	es = append(es, more...)

	locs := make([]Loc, len(es))
	for i, e := range es {
		locs[i] = Loc{e.Index, e.Offset}
	}
	rand.Shuffle(len(locs), func(i, j int) { locs[i], locs[j] = locs[j], locs[i] })
	got, err := l.ReadRecords(locs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, loc := range locs {
		if want := rec(int(loc.Index)).Record; !bytes.Equal(got[i], want) {
			t.Fatalf("record %d: got %q, want %q", loc.Index, got[i], want)
		}
	}

	for _, bad := range []Loc{
		{Index: 5, Offset: es[6].Offset},     // another record's frame
		{Index: 5, Offset: es[5].Offset + 1}, // inside the frame
		{Index: 5, Offset: 0},                // the segment header
		{Index: 5, Offset: 1 << 40},          // beyond the segment
	} {
		var re *RecordError
		if _, err := l.ReadRecords([]Loc{bad}, nil); !errors.Is(err, ErrTampered) || !errors.As(err, &re) || re.Index != 5 {
			t.Errorf("ReadRecords(%+v): %v, want a RecordError for record 5 (ErrTampered)", bad, err)
		}
	}
	if _, err := l.ReadRecords([]Loc{{Index: n + 1, Offset: es[0].Offset}}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("a record beyond the log: %v, want ErrNotFound", err)
	}

	// Alter one byte of record 7's data on disk.
	segs, err := listSegments(filepath.Join(dir, segDir))
	if err != nil {
		t.Fatal(err)
	}
	var first uint64
	for _, s := range segs {
		if s <= 7 {
			first = s
		}
	}
	path := filepath.Join(dir, segDir, segmentName(first))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[es[7].Offset+frameHeaderSize+3] ^= 0x20
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var re *RecordError
	if _, err := l.ReadRecords([]Loc{{7, es[7].Offset}}, nil); !errors.Is(err, ErrTampered) || !errors.As(err, &re) || re.Index != 7 || re.Offset != es[7].Offset {
		t.Errorf("an altered record: %v, want a RecordError for record 7 (ErrTampered)", err)
	}
	if got, err := l.ReadRecords([]Loc{{8, es[8].Offset}}, nil); err != nil || !bytes.Equal(got[0], rec(8).Record) {
		t.Errorf("its neighbour: %q, %v", got, err)
	}
	// A record the caller does not keep is not returned, nor checked.
	keep8 := func(r []byte) bool { return bytes.Equal(r, rec(8).Record) }
	got, err = l.ReadRecords([]Loc{{7, es[7].Offset}, {8, es[8].Offset}}, keep8)
	if err != nil || got[0] != nil || !bytes.Equal(got[1], rec(8).Record) {
		t.Errorf("keeping only record 8: %q, %v", got, err)
	}
	keep7 := func(r []byte) bool { return !bytes.Equal(r, rec(8).Record) } // the altered one
	if _, err := l.ReadRecords([]Loc{{7, es[7].Offset}, {8, es[8].Offset}}, keep7); !errors.Is(err, ErrTampered) {
		t.Errorf("keeping the altered record: %v, want ErrTampered", err)
	}
}
