package ledger

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// FuzzOpenDamaged: segment files are read at every start. Whatever bytes
// a crash, a disk or a person leaves in a segment of a closed log (one
// overwrite, a truncation or appended bytes), Open either refuses, or opens
// a log that still holds every record its checkpoint covers, adds none
// the ledger did not write, and verifies.
func FuzzOpenDamaged(f *testing.F) {
	k := newKeys(f)
	opts := k.opts()
	opts.SegmentSize = 4096
	opts.Preallocate = -1
	opts.PageCacheBytes = -1
	opts.SnapshotEvery = -1
	opts.Logger = slog.New(slog.DiscardHandler)
	tmpl := f.TempDir()
	l := open(f, tmpl, opts)
	for i := 0; i < 300; i += 50 {
		var items []Item
		for j := i; j < i+50; j++ {
			items = append(items, rec(j))
		}
		if _, err := l.Append(context.Background(), items); err != nil {
			f.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		f.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(tmpl, segDir, "*.seg"))
	sort.Strings(segs)
	if len(segs) < 2 {
		f.Fatalf("segments %v", segs)
	}
	f.Add(uint8(255), uint32(100), []byte("x"), uint8(0))
	f.Add(uint8(255), uint32(0), []byte{}, uint8(1))
	f.Add(uint8(255), uint32(0), []byte("\x00\x00\x00\x10garbage"), uint8(2))
	f.Add(uint8(0), uint32(40), []byte{1}, uint8(0))
	f.Fuzz(func(t *testing.T, which uint8, off uint32, data []byte, mode uint8) {
		dir := filepath.Join(t.TempDir(), "log")
		if err := os.CopyFS(dir, os.DirFS(tmpl)); err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(tmpl, segs[int(which)%len(segs)])
		seg := filepath.Join(dir, rel)
		fi, err := os.Stat(seg)
		if err != nil {
			t.Fatal(err)
		}
		at := int64(off) % (fi.Size() + 1)
		f, err := os.OpenFile(seg, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		switch mode % 3 {
		case 0:
			if len(data) == 0 {
				f.Close()
				return
			}
			f.WriteAt(data, at)
		case 1:
			f.Truncate(at)
		case 2:
			f.Seek(0, io.SeekEnd)
			f.Write(data)
		}
		f.Close()
		o := opts
		l, err := Open(dir, o)
		if err != nil {
			return
		}
		size := l.Size()
		if err := l.Close(); err != nil {
			return
		}
		if size != 300 {
			t.Fatalf("opened with %d records after damage (mode %d at %d of %s), want 300", size, mode%3, at, rel)
		}
		rep, err := Verify(dir, VerifyOptions{Verifier: k.verifier})
		if err != nil || rep.Records != 300 {
			t.Fatalf("Open took damage (mode %d at %d of %s) that Verify then finds: %+v, %v", mode%3, at, rel, rep, err)
		}
	})
}
