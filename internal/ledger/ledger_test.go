package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/aitrail/aitrail/internal/ledger/ledgertest"
	"github.com/aitrail/aitrail/internal/merkle"
)

type testKeys struct {
	signer   note.Signer
	verifier note.Verifier
}

func newKeys(t testing.TB) testKeys {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "test.example/log")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{s, v}
}

func (k testKeys) opts() Options {
	return Options{
		Origin:       "test.example/log",
		Signer:       k.signer,
		Verifier:     k.verifier,
		SyncInterval: 10 * time.Millisecond,
		KeyOf: func(rec []byte) (string, error) {
			key, _, _ := strings.Cut(string(rec), "|")
			return key, nil
		},
	}
}

func open(t testing.TB, dir string, opts Options) *Ledger {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func rec(i int) Item {
	key := fmt.Sprintf("k%d", i)
	return Item{Key: key, Record: []byte(fmt.Sprintf("%s|record number %d", key, i))}
}

func TestAppendReadReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k := newKeys(t)
	opts := k.opts()
	opts.SegmentSize = 4096 // many segments
	l := open(t, dir, opts)

	// Concurrent appenders; every acknowledged record must be readable
	// at its index.
	const writers, per = 8, 150
	got := make(map[uint64]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i += 3 {
				var items []Item
				for j := i; j < i+3 && j < per; j++ {
					it := rec(w*per + j)
					it.Blob = []byte(fmt.Sprintf("blob-%d", w*per+j))
					items = append(items, it)
				}
				r, err := l.Append(ctx, items)
				if err != nil {
					t.Error(err)
					return
				}
				cp, err := merkle.OpenCheckpoint(r.Checkpoint, k.verifier)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for j, res := range r.Results {
					if res.Index >= cp.Size {
						t.Errorf("checkpoint of size %d does not cover index %d", cp.Size, res.Index)
					}
					got[res.Index] = string(items[j].Record)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if l.Size() != writers*per {
		t.Fatalf("size %d, want %d", l.Size(), writers*per)
	}
	check := func(l *Ledger) {
		t.Helper()
		es, err := l.Entries(ctx, 0, writers*per+10)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != writers*per {
			t.Fatalf("Entries returned %d", len(es))
		}
		for _, e := range es {
			if string(e.Data) != got[e.Index] {
				t.Fatalf("record %d = %q, want %q", e.Index, e.Data, got[e.Index])
			}
		}
		// Reads starting mid-bundle and mid-segment.
		for _, from := range []uint64{1, 255, 256, 257, 700, writers*per - 1} {
			es, err := l.Entries(ctx, from, 3)
			if err != nil || len(es) == 0 || es[0].Index != from || string(es[0].Data) != got[from] {
				t.Fatalf("Entries(%d) = %v, %v", from, es, err)
			}
		}
		b, err := l.Blob(700)
		if err != nil || !strings.HasPrefix(string(b), "blob-") {
			t.Fatalf("Blob(700) = %q, %v", b, err)
		}
	}
	check(l)
	cp1 := l.Checkpoint()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	l = open(t, dir, opts)
	defer l.Close()
	check(l)
	if !bytes.Equal(l.Checkpoint(), cp1) {
		c0, _ := merkle.OpenCheckpoint(cp1, k.verifier)
		c1, _ := merkle.OpenCheckpoint(l.Checkpoint(), k.verifier)
		if c0 != c1 {
			t.Fatalf("checkpoint changed across reopen: %+v vs %+v", c0, c1)
		}
	}
	// Idempotency survives the restart.
	r, err := l.Append(ctx, []Item{rec(5), rec(100000)})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Results[0].Duplicate || got[r.Results[0].Index] != string(rec(5).Record) {
		t.Fatalf("re-sent key: %+v", r.Results[0])
	}
	if r.Results[1].Duplicate || r.Results[1].Index != writers*per {
		t.Fatalf("new key: %+v", r.Results[1])
	}
}

func TestDuplicateWithinBatchAndAcrossForget(t *testing.T) {
	ctx := context.Background()
	k := newKeys(t)
	opts := k.opts()
	index := map[string]Loc{} // stands in for the query index
	var mu sync.Mutex
	opts.Lookup = func(_ context.Context, keys []string) (map[string]Loc, error) {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]Loc{}
		for _, k := range keys {
			if i, ok := index[k]; ok {
				out[k] = i
			}
		}
		return out, nil
	}
	l := open(t, t.TempDir(), opts)
	defer l.Close()
	r, err := l.Append(ctx, []Item{rec(1), rec(1), rec(2)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Results[0].Index != 0 || !r.Results[1].Duplicate || r.Results[1].Index != 0 || r.Results[2].Index != 1 {
		t.Fatalf("results %+v", r.Results)
	}
	// Hand the keys to the "index" and let the ledger forget them.
	for i := 3; i < defaultForgetInterval+10; i += 1000 {
		var items []Item
		for j := i; j < i+1000; j++ {
			items = append(items, rec(j))
		}
		if _, err := l.Append(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	es, _ := l.Entries(ctx, 0, int(l.Size()))
	mu.Lock()
	for _, e := range es {
		key, _, _ := strings.Cut(string(e.Data), "|")
		index[key] = Loc{Index: e.Index, Offset: e.Offset}
	}
	mu.Unlock()
	l.Forget(l.Size())
	l.Append(ctx, []Item{rec(-1)}) // a commit lets the sequencer forget
	l.Append(ctx, []Item{rec(-2)})
	if l.epoch.Load() == 0 {
		t.Fatal("ledger did not forget keys")
	}
	r, err = l.Append(ctx, []Item{rec(2)})
	if err != nil || !r.Results[0].Duplicate || r.Results[0].Index != 1 {
		t.Fatalf("forgotten key re-sent: %+v %v", r, err)
	}

	// A lookup that finds a key at another record's place (an altered
	// query index) must not get the append answered as a duplicate of it:
	// the event would be acknowledged and lost.
	mu.Lock()
	index[rec(3).Key] = index[rec(4).Key]
	mu.Unlock()
	size := l.Size()
	r, err = l.Append(ctx, []Item{rec(3)})
	var re *RecordError
	if !errors.Is(err, ErrTampered) || !errors.As(err, &re) || re.Index != index[rec(4).Key].Index {
		t.Fatalf("key found at another record's place: %+v, %v; want a RecordError for that record", r, err)
	}
	mu.Lock()
	index[rec(3).Key] = Loc{Index: l.Size() + 5, Offset: 1 << 40}
	mu.Unlock()
	if _, err := l.Append(ctx, []Item{rec(3)}); !errors.Is(err, ErrTampered) {
		t.Fatalf("key found beyond the log: %v; want ErrTampered", err)
	}
	if l.Size() != size {
		t.Fatalf("refused appends stored %d records", l.Size()-size)
	}
}

func TestPushback(t *testing.T) {
	k := newKeys(t)
	opts := k.opts()
	opts.MaxPending = 10
	l := open(t, t.TempDir(), opts)
	defer l.Close()
	var items []Item
	for i := 0; i < 11; i++ {
		items = append(items, rec(i))
	}
	// A single oversized request is still accepted (it can never fit
	// otherwise); pushback applies when others are already queued.
	if _, err := l.Append(context.Background(), items); err != nil {
		t.Fatalf("first append: %v", err)
	}
	l.pending.Add(int64(opts.MaxPending))
	_, err := l.Append(context.Background(), items[:1])
	l.pending.Add(-int64(opts.MaxPending))
	if !errors.Is(err, ErrPushback) {
		t.Fatalf("got %v, want ErrPushback", err)
	}
	if l.Size() != 11 {
		t.Fatalf("pushback stored something: size %d", l.Size())
	}
}

func fill(t *testing.T, dir string, opts Options, n int) {
	t.Helper()
	l := open(t, dir, opts)
	appendRecords(t, l, 0, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, segDir, "*.seg"))
	if len(m) != 1 {
		t.Fatalf("segments: %v", m)
	}
	return m[0]
}

func TestIncompleteTailIsCut(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	fill(t, dir, k.opts(), 300)
	seg := onlySegment(t, dir)
	fi, _ := os.Stat(seg)
	// A frame header promising more bytes than were written.
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(appendFrame(nil, []byte("never acknowledged"), nil)[:20])
	f.Close()
	l := open(t, dir, k.opts())
	defer l.Close()
	if l.Size() != 300 {
		t.Fatalf("size %d after tail cut", l.Size())
	}
	// The partial frame is gone; zeros may already be written after the
	// records again.
	data, _ := os.ReadFile(seg)
	if int64(len(data)) < fi.Size() || !isZero(data[fi.Size():]) {
		t.Fatalf("segment is %d bytes, want %d and zeros after", len(data), fi.Size())
	}
	if _, err := l.Append(context.Background(), []Item{rec(300)}); err != nil {
		t.Fatal(err)
	}
}

func TestDamageUnderCheckpointStopsOpen(t *testing.T) {
	k := newKeys(t)
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"flipped record byte", func(t *testing.T, dir string) {
			seg := onlySegment(t, dir)
			data, _ := os.ReadFile(seg)
			i := bytes.Index(data, []byte("record number 123"))
			data[i+3] ^= 1
			os.WriteFile(seg, data, 0o600)
		}, "record 123"},
		{"truncated segment", func(t *testing.T, dir string) {
			seg := onlySegment(t, dir)
			data, _ := os.ReadFile(seg)
			i := bytes.Index(data, []byte("k250|"))
			os.WriteFile(seg, data[:i], 0o600)
		}, "record 250"},
		{"forged checkpoint", func(t *testing.T, dir string) {
			p := filepath.Join(dir, checkpointFile)
			data, _ := os.ReadFile(p)
			data[len("test.example/log\n")] = '9'
			os.WriteFile(p, data, 0o600)
		}, "checkpoint"},
		{"tile differs", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "tile", "0", "001.p", "44")
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			data[0] ^= 1
			os.WriteFile(p, data, 0o600)
		}, "record 256: tile tile/0/001.p/44 differs"},
		{"full tile differs", func(t *testing.T, dir string) {
			f, err := os.OpenFile(packPath(dir, 0, 0), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte{0xff}, 5*merkle.HashSize+7)
			f.Close()
		}, "record 5: tile tile/0/000 (tile/0/pack/00000000, bytes 0-8191) differs"},
		{"full tile missing", func(t *testing.T, dir string) {
			os.Truncate(packPath(dir, 0, 0), 100)
		}, "record 0: tile tile/0/000 (tile/0/pack/00000000, bytes 0-8191), made durable before, cannot be read"},
	} {
		// A start reading every record finds the damage before it opens;
		// one from the start-up snapshot, with the keys of every record
		// indexed, finds it then or in its check of the records below the
		// snapshot, which then stops appends.
		for _, mode := range []string{"every record", "snapshot"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				dir := t.TempDir()
				fill(t, dir, k.opts(), 300)
				tc.damage(t, dir)
				opts := k.opts()
				if mode == "snapshot" {
					// Nor are the newest records read back for the
					// followers (they too are checked at start).
					opts.RecentFrom, opts.TailEntries = 300, -1
				} else {
					opts.SnapshotEvery = -1
				}
				l, err := Open(dir, opts)
				if err == nil {
					if mode != "snapshot" {
						l.Close()
						t.Fatalf("Open reading every record succeeded")
					}
					err = l.WaitChecked(context.Background())
					if _, aerr := l.Append(context.Background(), []Item{rec(300)}); !errors.Is(aerr, ErrFailed) {
						t.Errorf("Append after the check found damage: %v, want ErrFailed", aerr)
					}
					l.Close()
				}
				if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Open or its check = %v, want ErrTampered mentioning %q", err, tc.want)
				}
			})
		}
	}
}

func TestTilesSurviveLostWatermark(t *testing.T) {
	// Tiles and checkpoints are lazy: removing everything but the segments
	// (as a crash before any sync would) rebuilds the same tree.
	dir := t.TempDir()
	k := newKeys(t)
	fill(t, dir, k.opts(), 70000)
	before, err := readPackedTile(dir, merkle.TileID{Level: 1, N: 0, W: 256})
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "tile"))
	os.Remove(filepath.Join(dir, watermarkFile))
	l := open(t, dir, k.opts())
	defer l.Close()
	after, err := l.Tile(merkle.TileID{Level: 1, N: 0, W: 256})
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("rebuilt tile differs (%v)", err)
	}
}

// TestWatermarkDeletedAloneKeepsTheTileCheck: deleting log/tiles-durable
// (but not the tiles) does not turn the check of the durable tiles off: a
// changed tile is still refused at start and by Verify, as the checkpoint
// file says its tiles were durable; it is not cut and rebuilt.
func TestWatermarkDeletedAloneKeepsTheTileCheck(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	fill(t, dir, k.opts(), 3*merkle.TileWidth+10)
	pack := packPath(dir, 0, 0)
	f, err := os.OpenFile(pack, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xee}, tileBytes+5)
	f.Close()
	if err := os.Remove(filepath.Join(dir, watermarkFile)); err != nil {
		t.Fatal(err)
	}
	want := "tile/0/001"
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), want) {
		t.Errorf("Verify = %v; want the changed tile reported", err)
	}
	if l, err := Open(dir, k.opts()); err == nil {
		l.Close()
		t.Fatal("the ledger opened with a changed tile and no watermark")
	} else if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), want) && !strings.Contains(err.Error(), "record 256 ") {
		t.Errorf("Open = %v; want the changed tile (records 256 to 511) reported", err)
	}
}

// TestMissingPartialTileIsWrittenAgain: a partial tile of the durable tree
// is derived from records the checkpoint covers; one that is gone is
// written again at start, and Verify agrees the log is whole.
func TestMissingPartialTileIsWrittenAgain(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	fill(t, dir, k.opts(), merkle.TileWidth+10)
	partial := filepath.Join(dir, "tile", "0", "001.p", "10")
	if err := os.Remove(partial); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Errorf("Verify = %v", err)
	}
	l := open(t, dir, k.opts())
	l.Append(context.Background(), []Item{rec(100_000)})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Errorf("Verify after a start = %v", err)
	}
}

// TestSegmentCreatedEmptyByACrash: a crash between creating the next
// segment and writing its header leaves an empty file past the checkpoint;
// the server starts it again, and Verify accepts it too.
func TestSegmentCreatedEmptyByACrash(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	fill(t, dir, k.opts(), 300)
	if err := os.WriteFile(filepath.Join(dir, segDir, segmentName(300)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Errorf("Verify = %v", err)
	}
	l := open(t, dir, k.opts())
	if l.Size() != 300 {
		t.Errorf("size %d, want 300", l.Size())
	}
	l.Close()
}

func TestUnfinishedCommitIsCutWhole(t *testing.T) {
	dir := t.TempDir()
	k := newKeys(t)
	fill(t, dir, k.opts(), 300)
	seg := onlySegment(t, dir)
	// Two complete frames of a commit whose end marker never reached the
	// disk: the crash came before its fsync, so neither was acknowledged.
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(appendFrame(appendFrame(nil, []byte("k900|unacknowledged"), nil), []byte("k901|unacknowledged"), nil))
	f.Close()
	l := open(t, dir, k.opts())
	defer l.Close()
	if l.Size() != 300 {
		t.Fatalf("size %d, want 300: an unfinished commit was kept", l.Size())
	}
}

// TestRecoverManyBatches reopens a log of several recovery batches over
// many segments: the tree, the keys and every record come back, and a
// record whose key cannot be read stops the start naming that record,
// whichever batch it is in.
func TestRecoverManyBatches(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := newKeys(t).opts()
	opts.SegmentSize = 64 << 10
	l := open(t, dir, opts)
	const n = 3*batchItems + 123
	for i := 0; i < n; i += 500 {
		var items []Item
		for j := i; j < min(i+500, n); j++ {
			items = append(items, rec(j))
		}
		if _, err := l.Append(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	root := l.pub.Load().checkpoint
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = open(t, dir, opts)
	if got := l.pub.Load().checkpoint; l.Size() != n || !bytes.Equal(got, root) {
		t.Fatalf("reopened: size %d, checkpoint %q; want %d, %q", l.Size(), got, n, root)
	}
	for _, i := range []int{0, batchItems - 1, batchItems, 2*batchItems + 7, n - 1} {
		r, err := l.Append(ctx, []Item{rec(i)})
		if err != nil || !r.Results[0].Duplicate || r.Results[0].Index != uint64(i) {
			t.Fatalf("record %d resent after reopening: %+v, %v; want a duplicate of index %d", i, r, err, i)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	bad := 2*batchItems + 7
	broken := opts
	broken.KeyOf = func(rec []byte) (string, error) {
		key, _, _ := strings.Cut(string(rec), "|")
		if key == fmt.Sprintf("k%d", bad) {
			return "", errors.New("no key")
		}
		return key, nil
	}
	if _, err := Open(dir, broken); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), fmt.Sprintf("record %d:", bad)) {
		t.Fatalf("Open with record %d's key unreadable: %v; want ErrTampered naming it", bad, err)
	}
}

// TestVerifyNamesFirstDamage: Verify checks records a batch at a time on
// every core, but reports the first damaged record in log order, whichever
// batch it is in and whatever kind of damage it is.
func TestVerifyNamesFirstDamage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	k := newKeys(t)
	opts := k.opts()
	l := open(t, dir, opts)
	const n = 3*batchItems + 50
	for i := 0; i < n; i += 500 {
		var items []Item
		for j := i; j < min(i+500, n); j++ {
			it := rec(j)
			if j%7 == 0 {
				it.Blob = []byte(fmt.Sprintf("blob-%d", j))
			}
			items = append(items, it)
		}
		if _, err := l.Append(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	failAt := func(bad ...uint64) func(uint64, []byte, []byte) error {
		return func(i uint64, rec, blob []byte) error {
			if !bytes.HasPrefix(rec, []byte(fmt.Sprintf("k%d|", i))) || (i%7 == 0) != (len(blob) > 0) {
				return fmt.Errorf("record %d handed with the wrong bytes", i)
			}
			if slices.Contains(bad, i) {
				return fmt.Errorf("bad content")
			}
			return nil
		}
	}
	rep, err := Verify(dir, VerifyOptions{Verifier: k.verifier, CheckEntry: failAt()})
	if err != nil || rep.Records != n {
		t.Fatalf("intact log: %+v, %v", rep, err)
	}
	want := func(what string, err error, index int64) {
		t.Helper()
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Index != index {
			t.Fatalf("%s: %v; want a VerifyError for record %d", what, err, index)
		}
	}
	_, err = Verify(dir, VerifyOptions{Verifier: k.verifier, CheckEntry: failAt(2*batchItems+9, batchItems+3)})
	want("two records failing the entry check", err, batchItems+3)

	// Damage a frame in the last batch: its CRC fails there, but an entry
	// check failing earlier is the one reported.
	segs, _ := filepath.Glob(filepath.Join(dir, segDir, "*"))
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	last := fmt.Sprintf("k%d|", 3*batchItems+20)
	i := bytes.Index(data, []byte(last))
	data[i+len(last)] ^= 1
	if err := os.WriteFile(segs[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(dir, VerifyOptions{Verifier: k.verifier, CheckEntry: failAt()})
	want("a damaged frame", err, 3*batchItems+20)
	_, err = Verify(dir, VerifyOptions{Verifier: k.verifier, CheckEntry: failAt(batchItems + 100)})
	want("a damaged frame after a record failing the entry check", err, batchItems+100)
}

// TestDurablePagesLeaveThePageCache writes 24 MiB to one segment and looks
// at which of its pages the kernel still caches (mincore): with a 1 MiB
// window, the first 8 MiB are dropped once durable and the newest pages
// stay; with -1, nothing is dropped.
func TestDurablePagesLeaveThePageCache(t *testing.T) {
	for _, window := range []int64{1 << 20, -1} {
		dir := ledgertest.DroppableDir(t)
		opts := newKeys(t).opts()
		opts.PageCacheBytes = window
		l := open(t, dir, opts)
		blob := appendMiBs(t, l, 24)
		segs, err := filepath.Glob(filepath.Join(dir, segDir, "*"))
		if err != nil || len(segs) != 1 {
			t.Fatalf("segments %v, %v; want one", segs, err)
		}
		early, late := ledgertest.CachedShare(t, segs[0], 0, 8<<20), ledgertest.CachedShare(t, segs[0], 23<<20, 24<<20)
		// What left the cache is read from disk.
		if b, err := l.Blob(0); err != nil || !bytes.Equal(b, blob) {
			t.Errorf("window %d: the first blob read back as %d bytes, %v", window, len(b), err)
		}
		l.Close()
		switch {
		case window > 0 && early > 0:
			t.Errorf("window %d: %.0f%% of the first 8 MiB still cached, want none", window, 100*early)
		case window > 0 && late < 0.5:
			t.Errorf("window %d: %.0f%% of the newest MiB cached, want it kept", window, 100*late)
		case window < 0 && early < 0.5:
			t.Errorf("window %d: %.0f%% of the first 8 MiB cached, want it left to the kernel", window, 100*early)
		}
	}
}

// appendMiBs appends n records, each with a blob of 1 MiB, which it returns.
func appendMiBs(t *testing.T, l *Ledger, n int) []byte {
	t.Helper()
	blob := bytes.Repeat([]byte{'b'}, 1<<20)
	for i := range n {
		it := rec(i)
		it.Blob = blob
		if _, err := l.Append(context.Background(), []Item{it}); err != nil {
			t.Fatal(err)
		}
	}
	return blob
}

// TestVerifyDropsWhatItRead checks that a whole-segment scan leaves the
// pages it has read behind it out of the page cache: a log left cached by
// its writer is mostly uncached after Verify.
func TestVerifyDropsWhatItRead(t *testing.T) {
	dir := ledgertest.DroppableDir(t)
	k := newKeys(t)
	opts := k.opts()
	opts.PageCacheBytes = -1
	l := open(t, dir, opts)
	appendMiBs(t, l, 48)
	l.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, segDir, "*"))
	if len(segs) != 1 {
		t.Fatalf("segments %v; want one", segs)
	}
	if c := ledgertest.CachedShare(t, segs[0], 0, 16<<20); c < 0.5 {
		t.Fatalf("only %.0f%% of the first 16 MiB cached after writing; the test needs them cached", 100*c)
	}
	rep, err := Verify(dir, VerifyOptions{Verifier: k.verifier})
	if err != nil || rep.Records != 48 {
		t.Fatalf("Verify: %+v, %v", rep, err)
	}
	if c := ledgertest.CachedShare(t, segs[0], 0, 16<<20); c > 0 {
		t.Errorf("%.0f%% of the first 16 MiB still cached after Verify read them, want none", 100*c)
	}
}

// TestCrashBetweenCheckpointAndWatermark: the sync writes the checkpoint
// file before the tile watermark, so a crash (here: a failure) between the
// two writes of a log's first sync leaves a log that starts, with every
// record. The other way round it left a watermark without a checkpoint,
// which recovery must refuse as a removed checkpoint.
func TestCrashBetweenCheckpointAndWatermark(t *testing.T) {
	for _, blocked := range []string{checkpointFile, watermarkFile} {
		t.Run(blocked, func(t *testing.T) {
			k := newKeys(t)
			dir := t.TempDir()
			// A directory where the file's temporary copy goes: writing it fails.
			if err := os.MkdirAll(filepath.Join(dir, blocked+".tmp"), 0o700); err != nil {
				t.Fatal(err)
			}
			l := open(t, dir, k.opts())
			appendRecords(t, l, 0, 300)
			if err := l.syncTiles(); err == nil {
				t.Fatalf("sync succeeded with %s blocked", blocked)
			}
			l.Close()
			if err := os.Remove(filepath.Join(dir, blocked+".tmp")); err != nil {
				t.Fatal(err)
			}
			l = open(t, dir, k.opts())
			defer l.Close()
			if l.Size() != 300 {
				t.Fatalf("size %d after the failed sync, want 300", l.Size())
			}
		})
	}
}

// TestSecretsAreTheLogs: Secret gives the same bytes for a purpose in every
// run of a log (the detector's record ids must not change across a crash),
// other bytes for another purpose, and other bytes for another log's key.
func TestSecretsAreTheLogs(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	l := open(t, dir, k.opts())
	a, b := l.Secret("purpose a"), l.Secret("purpose b")
	l.Close()
	l = open(t, dir, k.opts())
	again := l.Secret("purpose a")
	l.Close()
	other := open(t, t.TempDir(), newKeys(t).opts())
	defer other.Close()
	if len(a) != 32 || !bytes.Equal(a, again) || bytes.Equal(a, b) || bytes.Equal(a, other.Secret("purpose a")) {
		t.Fatalf("secrets: %x, again %x, other purpose %x, other log %x", a, again, b, other.Secret("purpose a"))
	}
}

// TestAppendsWaitForADurableCheckpoint: while the tiles and checkpoint
// file cannot be made durable (here the checkpoint's temporary file cannot
// be created), appends go on for SyncGrace, are then refused with
// ErrUnsynced, and are taken again once the checkpoint is written; the
// status says so, and everything acknowledged stays.
func TestAppendsWaitForADurableCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := newKeys(t).opts()
	opts.SyncGrace = 200 * time.Millisecond
	l := open(t, dir, opts)
	defer l.Close()
	if _, err := l.Append(ctx, []Item{rec(0)}); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(dir, checkpointFile+".tmp")
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	n := 1
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for ; time.Now().Before(deadline); n++ {
		if _, err = l.Append(ctx, []Item{rec(n)}); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(err, ErrUnsynced) {
		t.Fatalf("appends while the checkpoint cannot be written: %v; want ErrUnsynced after the grace", err)
	}
	if failures, since, serr, refusing := l.SyncStatus(); failures == 0 || since.IsZero() || serr == nil || !refusing {
		t.Errorf("status while refusing: %d failures since %v (%v), refusing %v", failures, since, serr, refusing)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = l.Append(ctx, []Item{rec(n)}); err == nil {
			break
		}
		if !errors.Is(err, ErrUnsynced) || time.Now().After(deadline) {
			t.Fatalf("appends once the checkpoint can be written: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, since, _, refusing := l.SyncStatus(); !since.IsZero() || refusing {
		t.Errorf("status once durable again: failing since %v, refusing %v", since, refusing)
	}
	entries, err := l.Entries(ctx, 0, n+1)
	if err != nil || len(entries) != n+1 {
		t.Fatalf("%d entries, %v; want the %d acknowledged", len(entries), err, n+1)
	}
	for i, e := range entries {
		if !strings.HasPrefix(string(e.Data), fmt.Sprintf("k%d|", i)) {
			t.Fatalf("record %d: %q", i, e.Data)
		}
	}
}
