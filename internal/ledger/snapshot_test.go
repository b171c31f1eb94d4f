package ledger

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/aitrail/aitrail/internal/merkle"
)

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// indexedKeys stands in for the query index: Options.Lookup finding the
// records appended so far by key, and RecentFrom its cursor.
func indexedKeys(t *testing.T, l *Ledger, n int) func(context.Context, []string) (map[string]Loc, error) {
	t.Helper()
	where := map[string]Loc{}
	entries, err := l.Entries(context.Background(), 0, n)
	if err != nil || len(entries) != n {
		t.Fatalf("Entries: %d of %d, %v", len(entries), n, err)
	}
	for _, e := range entries {
		key, _, _ := strings.Cut(string(e.Data), "|")
		where[key] = Loc{e.Index, e.Offset}
	}
	return func(_ context.Context, keys []string) (map[string]Loc, error) {
		out := map[string]Loc{}
		for _, k := range keys {
			if loc, ok := where[k]; ok {
				out[k] = loc
			}
		}
		return out, nil
	}
}

// TestStartFromSnapshot: a clean stop writes a start-up snapshot, and the
// next start takes the log from it without reading a record: the same
// checkpoint, every record readable where the snapshot says it is, proofs
// that verify, resent events answered as duplicates (the key filter came
// back with it), and the check of the records below it passes.
func TestStartFromSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k := newKeys(t)
	opts := k.opts()
	opts.SegmentSize = 64 << 10 // several segments
	const n = 5000
	l := open(t, dir, opts)
	appendRecords(t, l, 0, n)
	lookup := indexedKeys(t, l, n)
	cp := l.Checkpoint()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, snapshotFile)); err != nil {
		t.Fatalf("no start-up snapshot after Close: %v", err)
	}

	var logged lockedBuffer
	opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	opts.Lookup, opts.RecentFrom, opts.TailEntries = lookup, n, -1
	l = open(t, dir, opts)
	defer l.Close()
	if !strings.Contains(logged.String(), fmt.Sprintf(`msg="started from the start-up snapshot" records=%d read=0 `, n)) {
		t.Fatalf("the start did not take the log from the snapshot:\n%s", logged.String())
	}
	if l.Size() != n || !bytes.Equal(l.Checkpoint(), cp) {
		t.Fatalf("reopened at %d records with checkpoint %q, want %d and %q", l.Size(), l.Checkpoint(), n, cp)
	}
	entries, err := l.Entries(ctx, 0, n)
	if err != nil || len(entries) != n {
		t.Fatalf("Entries: %d records, %v", len(entries), err)
	}
	for i, e := range entries {
		if string(e.Data) != string(rec(i).Record) {
			t.Fatalf("record %d reads %q", i, e.Data)
		}
	}
	root := l.pub.Load().root
	for _, i := range []uint64{0, 255, 256, 1234, n - 1} {
		proof, err := l.InclusionProof(i, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(proof, n, root, int64(i), merkle.LeafHash(rec(int(i)).Record)); err != nil {
			t.Fatalf("proof of record %d: %v", i, err)
		}
	}
	for _, i := range []int{0, 1234, n - 1} {
		r, err := l.Append(ctx, []Item{rec(i)})
		if err != nil || !r.Results[0].Duplicate || r.Results[0].Index != uint64(i) {
			t.Fatalf("record %d resent: %+v, %v; want a duplicate of index %d", i, r, err, i)
		}
	}
	if r, err := l.Append(ctx, []Item{rec(n)}); err != nil || r.Results[0].Duplicate || r.Results[0].Index != n {
		t.Fatalf("a new record: %+v, %v; want index %d", r, err, n)
	}
	if err := l.WaitChecked(ctx); err != nil {
		t.Fatalf("check of the records below the snapshot: %v", err)
	}
	if !strings.Contains(logged.String(), fmt.Sprintf(`msg="checked the records below the start-up snapshot" records=%d `, n)) {
		t.Fatalf("no check of the records below the snapshot:\n%s", logged.String())
	}
}

// TestSnapshotAfterCrash: the syncs write snapshots as the log grows; a
// crash after more commits leaves the newest of them, and the start reads
// only the records after it, remembers the keys of those before it that
// the index has not taken, and loses nothing.
func TestSnapshotAfterCrash(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	opts := k.opts()
	opts.SnapshotEvery = 500
	l := open(t, t.TempDir(), opts)
	defer l.Close()
	var snap uint64
	for i := 0; snap < 1000; i += 50 {
		if i > 20000 {
			t.Fatal("no snapshot of 1,000 records was written")
		}
		appendRecords(t, l, i, i+50)
		time.Sleep(2 * time.Millisecond)
		if s, err := l.readSnapshot(); err == nil && s != nil {
			snap = s.size
		}
	}
	n := int(l.Size()) + 300
	appendRecords(t, l, int(l.Size()), n)
	time.Sleep(100 * time.Millisecond) // the last sync, and no snapshot of all n
	// Reopened with the default tail, the keys below the snapshot come from
	// the records it holds; with a tail of 100, from the files.
	crashed := []string{crashCopy(t, l.dir), crashCopy(t, l.dir)}
	for i, tail := range []int{0, 100} {
		var logged lockedBuffer
		opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
		opts.TailEntries = tail
		l2 := open(t, crashed[i], opts)
		defer l2.Close()
		var from, read int
		at := strings.Index(logged.String(), "started from")
		if at < 0 {
			t.Fatalf("tail %d: no start from the snapshot:\n%s", tail, logged.String())
		}
		if _, err := fmt.Sscanf(logged.String()[at:], `started from the start-up snapshot" records=%d read=%d`, &from, &read); err != nil {
			t.Fatalf("tail %d: %v:\n%s", tail, err, logged.String())
		}
		if from < 1000 || from+read != n || read < 300 {
			t.Fatalf("started from a snapshot of %d records reading %d, want at least 1,000 and the rest of %d", from, read, n)
		}
		if l2.Size() != uint64(n) {
			t.Fatalf("size %d after the crash, want %d", l2.Size(), n)
		}
		// Without a query index (RecentFrom 0), every key is remembered,
		// those below the snapshot included.
		for _, i := range []int{0, from - 1, from, n - 1} {
			r, err := l2.Append(ctx, []Item{rec(i)})
			if err != nil || !r.Results[0].Duplicate || r.Results[0].Index != uint64(i) {
				t.Fatalf("tail %d: record %d resent: %+v, %v; want a duplicate of index %d", tail, i, r, err, i)
			}
		}
		if err := l2.WaitChecked(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSnapshotNotUsed: a snapshot that was changed, cut short or does not
// fit the log on disk is not used: a warning says why, the start reads
// every record, and the log is whole.
func TestSnapshotNotUsed(t *testing.T) {
	k := newKeys(t)
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"changed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, snapshotFile)
			data, _ := os.ReadFile(p)
			data[len(data)-100] ^= 1 // a bit of the key filter
			os.WriteFile(p, data, 0o600)
		}, "not authentic"},
		{"cut short", func(t *testing.T, dir string) {
			p := filepath.Join(dir, snapshotFile)
			data, _ := os.ReadFile(p)
			os.WriteFile(p, data[:len(data)/2], 0o600)
		}, "reason="},
		{"ahead of the log", func(t *testing.T, dir string) {
			// The snapshot of a longer history put beside an older copy of
			// the log, as a restore from two backups might.
			newer := t.TempDir()
			fill(t, newer, k.opts(), 900)
			data, _ := os.ReadFile(filepath.Join(newer, snapshotFile))
			os.WriteFile(filepath.Join(dir, snapshotFile), data, 0o600)
		}, "covers 900 records"},
		{"another log", func(t *testing.T, dir string) {
			other := t.TempDir()
			fill(t, other, newKeys(t).opts(), 600)
			data, _ := os.ReadFile(filepath.Join(other, snapshotFile))
			os.WriteFile(filepath.Join(dir, snapshotFile), data, 0o600)
		}, "not authentic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fill(t, dir, k.opts(), 600)
			tc.damage(t, dir)
			var logged lockedBuffer
			opts := k.opts()
			opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
			l := open(t, dir, opts)
			defer l.Close()
			if !strings.Contains(logged.String(), "not using the start-up snapshot") || !strings.Contains(logged.String(), tc.want) {
				t.Fatalf("no warning mentioning %q:\n%s", tc.want, logged.String())
			}
			if strings.Contains(logged.String(), "started from the start-up snapshot") {
				t.Fatalf("the start used the snapshot:\n%s", logged.String())
			}
			if l.Size() != 600 {
				t.Fatalf("size %d, want 600", l.Size())
			}
			if r, err := l.Append(context.Background(), []Item{rec(599)}); err != nil || !r.Results[0].Duplicate {
				t.Fatalf("record 599 resent: %+v, %v; want a duplicate", r, err)
			}
			if err := l.WaitChecked(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNoSnapshotWithoutKeys: a ledger that does not read keys (reindex)
// writes no snapshot, whose key filter would hold none.
func TestNoSnapshotWithoutKeys(t *testing.T) {
	dir := t.TempDir()
	opts := newKeys(t).opts()
	opts.KeyOf = nil
	fill(t, dir, opts, 300)
	if _, err := os.Stat(filepath.Join(dir, snapshotFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a snapshot without keys: %v", err)
	}
}

// FuzzStartSnapshot feeds arbitrary snapshot bodies, authenticated as the
// log's own (so that parsing reaches every check, not only the HMAC), to
// the start's reading and fitting of a snapshot against a log of several
// segments: it never panics, and a snapshot it accepts has a tree of the
// size it covers and entry bundles for every segment it lists.
func FuzzStartSnapshot(f *testing.F) {
	dir := f.TempDir()
	opts := newKeys(f).opts()
	opts.SegmentSize = 16 << 10
	opts.Logger = slog.New(slog.DiscardHandler)
	l := open(f, dir, opts)
	for i := 0; i < 2000; i += 100 {
		var items []Item
		for j := i; j < i+100; j++ {
			items = append(items, rec(j))
		}
		if _, err := l.Append(context.Background(), items); err != nil {
			f.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		f.Fatal(err)
	}
	valid, err := os.ReadFile(filepath.Join(dir, snapshotFile))
	if err != nil {
		f.Fatal(err)
	}
	body := valid[:len(valid)-sha256.Size]
	f.Add(body)
	f.Add(body[:len(body)/2])
	f.Add([]byte(snapMagic))
	firsts, err := listSegments(filepath.Join(dir, segDir))
	if err != nil || len(firsts) < 3 {
		f.Fatalf("segments %v, %v; want several", firsts, err)
	}
	durable, err := readWatermarkFile(dir)
	if err != nil {
		f.Fatal(err)
	}
	// The snapshots go elsewhere: the log's directory is only stat'ed.
	reader := &Ledger{dir: f.TempDir(), opts: opts, snapKey: l.snapKey}
	f.Fuzz(func(t *testing.T, body []byte) {
		mac := hmac.New(sha256.New, reader.snapKey)
		mac.Write(body)
		if err := os.WriteFile(filepath.Join(reader.dir, snapshotFile), mac.Sum(body), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := reader.readSnapshot()
		if err != nil || s == nil {
			return
		}
		if s.tree.Size() != s.size {
			t.Fatalf("a snapshot of %d records with a tree of %d", s.size, s.tree.Size())
		}
		if err := s.fits(dir, firsts, durable); err != nil {
			return
		}
		for i, sg := range s.segs {
			end := s.size
			if i+1 < len(s.segs) {
				end = s.segs[i+1].first
			}
			for _, off := range s.bundlesIn(sg.first, end) {
				if off < segHeaderSize || off >= sg.end {
					t.Fatalf("segment %d: entry bundle at %d, outside its records (to %d)", sg.first, off, sg.end)
				}
			}
		}
	})
}
