package ledger

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/merkle"
)

// crashCopy copies the ledger directory dir as a crash at this moment would
// leave it: files as they are, the ledger still open.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// appendRecords appends records from to to-1 in batches of 50.
func appendRecords(t *testing.T, l *Ledger, from, to int) {
	t.Helper()
	for i := from; i < to; i += 50 {
		var items []Item
		for j := i; j < min(i+50, to); j++ {
			items = append(items, rec(j))
		}
		if _, err := l.Append(context.Background(), items); err != nil {
			t.Fatal(err)
		}
	}
}

// zeroedLedger opens a ledger that fills 64 KiB ahead, appends n records
// and waits until zeros are written ahead of them and a checkpoint covers
// them. It returns the ledger (closed when the test ends), its options, the
// active segment's path and where its records end.
func zeroedLedger(t *testing.T, k testKeys, n int) (*Ledger, Options, string, int64) {
	t.Helper()
	opts := k.opts()
	opts.Preallocate = 64 << 10
	l := open(t, t.TempDir(), opts)
	t.Cleanup(func() { l.Close() })
	appendRecords(t, l, 0, n)
	l.mu.RLock()
	seg := l.segs[len(l.segs)-1]
	l.mu.RUnlock()
	end := seg.size.Load()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		durable, _ := readWatermarkFile(l.dir)
		if fi, err := os.Stat(seg.path); err == nil && fi.Size() > end && durable == uint64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no zeros written ahead of the records ending at %d, or no checkpoint synced", end)
		}
	}
	return l, opts, seg.path, end
}

// scanFrames counts a segment's frames without allowing a tail of zeros.
func scanFrames(t *testing.T, path string) int {
	t.Helper()
	f, size, err := openSegmentFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := newFrameScanner(f, size, segHeaderSize)
	n := 0
	for {
		_, err := sc.next()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("%s: frame %d: %v", filepath.Base(path), n, err)
		}
		n++
	}
}

// logTo returns options whose logger writes to buf.
func logTo(opts Options, buf *bytes.Buffer) Options {
	opts.Logger = slog.New(slog.NewTextHandler(buf, nil))
	return opts
}

// TestZeroTailAfterCrash: a crash leaves zeros after the active segment's
// records. They are not damage: verify passes, the server starts quietly
// with every record and goes on appending, and a clean stop leaves a
// segment of records only.
func TestZeroTailAfterCrash(t *testing.T) {
	k := newKeys(t)
	l, opts, _, _ := zeroedLedger(t, k, 300)
	crashed := crashCopy(t, l.dir)

	rep, err := Verify(crashed, VerifyOptions{Verifier: k.verifier})
	if err != nil || rep.Records != 300 {
		t.Fatalf("verify of the crashed log: %+v, %v", rep, err)
	}
	var logged bytes.Buffer
	l2 := open(t, crashed, logTo(opts, &logged))
	if l2.Size() != 300 {
		t.Fatalf("size %d after the crash, want 300", l2.Size())
	}
	if strings.Contains(logged.String(), "WARN") {
		t.Errorf("start after a crash warned about the zeros:\n%s", logged.String())
	}
	appendRecords(t, l2, 300, 400)
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if n := scanFrames(t, onlySegment(t, crashed)); n != 400 {
		t.Fatalf("%d frames after a clean stop, want 400", n)
	}
	if _, err := Verify(crashed, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Fatal(err)
	}
}

// TestTornCommitInZeros: a commit that a crash cut short over the zeros
// (its first bytes, or only later ones, on disk) was never acknowledged
// and is cut off at start, with a warning; verify names it.
func TestTornCommitInZeros(t *testing.T) {
	k := newKeys(t)
	l, opts, path, end := zeroedLedger(t, k, 300)
	frames := appendFrame(appendFrame(nil, []byte("k900|unacknowledged"), nil), []byte("k901|unacknowledged"), nil)
	markCommitEnd(frames, len(frames)/2)
	for _, tc := range []struct {
		name string
		at   int64
		data []byte
	}{
		{"first bytes written", end, frames[:len(frames)-5]},
		{"only a later page written", end + 8192, frames},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crashed := crashCopy(t, l.dir)
			f, err := os.OpenFile(filepath.Join(crashed, segDir, filepath.Base(path)), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(tc.data, tc.at); err != nil {
				t.Fatal(err)
			}
			f.Close()
			_, err = Verify(crashed, VerifyOptions{Verifier: k.verifier})
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Index < 300 || !strings.Contains(ve.What, "never acknowledged") {
				t.Fatalf("verify: %v; want damage from record 300 on, possibly a commit never acknowledged", err)
			}
			var logged bytes.Buffer
			l2 := open(t, crashed, logTo(opts, &logged))
			defer l2.Close()
			if l2.Size() != 300 {
				t.Fatalf("size %d, want 300: an unfinished commit was kept", l2.Size())
			}
			if !strings.Contains(logged.String(), "cutting off an incomplete commit") {
				t.Errorf("no warning about the cut:\n%s", logged.String())
			}
			appendRecords(t, l2, 300, 350)
		})
	}
}

// TestDamageBeforeLaterCommitsStopsOpen: only the last commit can be torn
// by a crash (each is written once the one before is durable), so damage
// with complete commits after it is in records that were acknowledged,
// even beyond the checkpoint file (written lazily): the start refuses,
// naming the record, instead of cutting them off as a torn commit; verify
// says so too.
func TestDamageBeforeLaterCommitsStopsOpen(t *testing.T) {
	k := newKeys(t)
	opts := k.opts()
	opts.SyncInterval = time.Hour // the checkpoint file stays behind the commits
	l := open(t, t.TempDir(), opts)
	t.Cleanup(func() { l.Close() })
	appendRecords(t, l, 0, 300) // six commits of 50
	l.mu.RLock()
	path := l.segs[len(l.segs)-1].path
	l.mu.RUnlock()
	for _, tc := range []struct {
		name   string
		damage func(data []byte, at int)
	}{
		{"a byte of a record", func(data []byte, at int) { data[at+3] ^= 1 }},
		{"a frame's length", func(data []byte, at int) { data[at-frameHeaderSize+1] ^= 0x40 }},
		{"a hole of zeros", func(data []byte, at int) { clear(data[at-frameHeaderSize : at+200]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crashed := crashCopy(t, l.dir)
			seg := filepath.Join(crashed, segDir, filepath.Base(path))
			data, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(data, bytes.Index(data, []byte("k123|")))
			os.WriteFile(seg, data, 0o600)
			if cp, err := (&Ledger{dir: crashed, opts: opts}).readCheckpoint(); err != nil || cp.Size > 123 {
				t.Fatalf("the checkpoint file covers %d records (%v): the damage is under it", cp.Size, err)
			}
			_, err = Verify(crashed, VerifyOptions{Verifier: k.verifier})
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Index != 123 || !strings.Contains(ve.What, "complete commits follow") {
				t.Errorf("verify: %v; want record 123, with complete commits after it", err)
			}
			l2, err := Open(crashed, opts)
			if err == nil {
				size := l2.Size()
				l2.Close()
				t.Fatalf("Open succeeded with %d of 300 acknowledged records", size)
			}
			if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "record 123") || !strings.Contains(err.Error(), "acknowledged") {
				t.Fatalf("Open = %v, want ErrTampered naming record 123", err)
			}
		})
	}
}

// TestVerifyAfterCrashWithTilesBehind: a crash can leave the durable tree's
// partial tile on disk while the full tile that has since grown from it is
// not yet in its pack (it lies beyond the durable watermark). That is an
// intact log: verify checks the partial tile against the full tile the
// records give, and passes.
func TestVerifyAfterCrashWithTilesBehind(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	fill(t, dir, k.opts(), 300) // durable: the partial tile 001.p/44
	opts := k.opts()
	opts.SyncInterval = time.Hour // nothing more made durable
	l := open(t, dir, opts)
	t.Cleanup(func() { l.Close() })
	appendRecords(t, l, 300, 600) // tile 1 full, not yet packed
	crashed := crashCopy(t, dir)
	if _, err := os.Stat(filepath.Join(crashed, "tile", "0", "001.p", "44")); err != nil {
		t.Fatalf("no partial tile of the durable tree: %v", err)
	}
	// The crash came before the tile writer packed tile 1.
	if err := os.Truncate(packPath(crashed, 0, 0), merkle.TileWidth*merkle.HashSize); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(crashed, VerifyOptions{Verifier: k.verifier})
	if err != nil || rep.Records != 600 || rep.PartialChecked == 0 {
		t.Fatalf("verify of an intact log after a crash: %+v, %v", rep, err)
	}
	// A partial tile that is not a prefix of it is still damage.
	p := filepath.Join(crashed, "tile", "0", "001.p", "44")
	data, _ := os.ReadFile(p)
	data[40] ^= 1
	os.WriteFile(p, data, 0o600)
	var ve *VerifyError
	if _, err := Verify(crashed, VerifyOptions{Verifier: k.verifier}); !errors.As(err, &ve) || !strings.Contains(ve.What, "differs") {
		t.Fatalf("verify of a damaged partial tile: %v", err)
	}
}

// TestZerosNeverOverwriteRecords appends concurrently with small segments
// and a filler running just ahead: every segment holds exactly its records,
// and the log verifies.
func TestZerosNeverOverwriteRecords(t *testing.T) {
	k := newKeys(t)
	opts := k.opts()
	opts.Preallocate = 8 << 10
	opts.SegmentSize = 64 << 10
	dir := t.TempDir()
	l := open(t, dir, opts)
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := w * 2000; i < (w+1)*2000; i += 10 {
				var items []Item
				for j := i; j < i+10; j++ {
					items = append(items, rec(j))
				}
				if _, err := l.Append(context.Background(), items); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, segDir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("only %d segments", len(segs))
	}
	n := 0
	for _, s := range segs {
		n += scanFrames(t, s)
	}
	if n != 8000 {
		t.Fatalf("%d records in the segments, want 8000", n)
	}
	rep, err := Verify(dir, VerifyOptions{Verifier: k.verifier})
	if err != nil || rep.Records != 8000 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// FuzzScanZeroTail feeds arbitrary segment bodies to the frame scanner as
// recovery and verify use it on a last segment: it never panics, every
// frame it returns checks, and when it ends cleanly everything after the
// last frame is zeros.
func FuzzScanZeroTail(f *testing.F) {
	two := appendFrame(appendFrame(nil, []byte("k1|one"), []byte("blob")), []byte("k2|two"), nil)
	markCommitEnd(two, len(two)-frameHeaderSize-len("k2|two"))
	f.Add(two)
	f.Add(append(append([]byte{}, two...), make([]byte, 100)...))
	f.Add(append(append(append([]byte{}, two...), make([]byte, 50)...), 1))
	f.Add(make([]byte, 11))
	f.Add(two[:len(two)-3])
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(t.TempDir(), segmentName(0))
		if err := os.WriteFile(path, append(segHeader(0), body...), 0o600); err != nil {
			t.Fatal(err)
		}
		file, size, err := openSegmentFile(path)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		sc := newFrameScanner(file, size, segHeaderSize)
		sc.zeroTail = true
		end := int64(segHeaderSize)
		for {
			fr, err := sc.next()
			if err == io.EOF {
				if rest := body[end-segHeaderSize:]; !isZero(rest) || sc.zeros != int64(len(rest)) {
					t.Fatalf("clean end at %d, but %d bytes after it, not all zero (%d counted as zeros)", end, len(rest), sc.zeros)
				}
				return
			}
			if err != nil {
				return
			}
			if fr.off != end || len(fr.record) == 0 {
				t.Fatalf("frame at %d, want %d, record of %d bytes", fr.off, end, len(fr.record))
			}
			end = sc.off
		}
	})
}
