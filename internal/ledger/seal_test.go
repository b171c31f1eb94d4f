package ledger

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/merkle"
)

// sealedDir returns a temporary directory whose seals are lifted before it
// is removed.
func sealedDir(t *testing.T) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := LiftSeals(dir); err != nil {
			t.Errorf("LiftSeals: %v", err)
		}
	})
	return dir
}

// TestSealing checks what an operator relies on: complete segments and
// complete durable tile packs cannot be changed or deleted through the file
// system (read-only, and immutable where the attribute can be set), the
// active segment can only be appended to when commits append (it is
// written over zeros otherwise, see prealloc.go), the tile packs being
// filled can only be appended to, the status and InspectSeals say which of
// these hold, and the ledger still recovers an unfinished tail under the
// seals.
func TestSealing(t *testing.T) {
	for _, appending := range []bool{true, false} {
		name := "over zeros"
		if appending {
			name = "appending"
		}
		t.Run(name, func(t *testing.T) { testSealing(t, appending) })
	}
}

func testSealing(t *testing.T, appending bool) {
	dir := sealedDir(t)
	k := newKeys(t)
	opts := k.opts()
	opts.Seal = SealImmutable
	opts.SegmentSize = 256 << 10 // several segments
	if appending {
		opts.Preallocate = -1
	}
	l := open(t, dir, opts)
	// Level 0: pack 0 complete (256 tiles), pack 1 being filled; level 1:
	// pack 0 being filled.
	const n = packTiles*merkle.TileWidth + 2*merkle.TileWidth
	for i := 0; i < n; i += 1000 {
		var items []Item
		for j := i; j < min(i+1000, n); j++ {
			items = append(items, rec(j))
		}
		if _, err := l.Append(context.Background(), items); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the sync loop has made the full tiles durable.
	complete := packPath(dir, 0, 0)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if fi, err := os.Stat(complete); err == nil && fi.Mode().Perm() == sealedPerm {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("complete tile pack %s never sealed; status %+v", complete, l.SealStatus())
		}
	}
	st := l.SealStatus()
	if st.Mode != "immutable" || st.Failures != 0 || st.SealedFiles < 3 {
		t.Fatalf("status %+v", st)
	}
	if !st.Attributes && st.Reason == "" {
		t.Fatalf("attributes not set and no reason given: %+v", st)
	}
	appendOnly := st.Attributes && appending
	if st.ActiveAppendOnly != appendOnly {
		t.Fatalf("status %+v; want the active segment append-only %v", st, appendOnly)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, segDir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("only %d segments", len(segs))
	}
	active := segs[len(segs)-1]
	for _, path := range append(segs[:len(segs)-1:len(segs)-1], complete) {
		fs, err := InspectSeal(path)
		if err != nil {
			t.Fatal(err)
		}
		if !fs.ReadOnly || fs.Immutable != st.Attributes {
			t.Errorf("%s: %+v; want read-only, immutable %v", path, fs, st.Attributes)
		}
		if st.Attributes {
			if err := os.Remove(path); err == nil {
				t.Fatalf("removed sealed %s", path)
			}
			if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
				f.Close()
				t.Fatalf("opened sealed %s for writing", path)
			}
		}
	}
	if fs, _ := InspectSeal(active); fs.ReadOnly || fs.AppendOnly != appendOnly {
		t.Errorf("active segment %+v; want writable, append-only %v", fs, appendOnly)
	}
	if appendOnly {
		if f, err := os.OpenFile(active, os.O_WRONLY, 0); err == nil {
			f.Close()
			t.Fatal("opened the append-only active segment for overwriting")
		}
	}
	filling := []string{packPath(dir, 0, 1), packPath(dir, 1, 0)}
	for _, path := range filling {
		fs, err := InspectSeal(path)
		if err != nil {
			t.Fatal(err)
		}
		if fs.ReadOnly || fs.AppendOnly != st.Attributes {
			t.Errorf("tile pack being filled %s: %+v; want writable, append-only %v", path, fs, st.Attributes)
		}
		if st.Attributes {
			if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
				f.Close()
				t.Fatalf("opened the append-only tile pack %s for overwriting", path)
			}
		}
	}
	rep, err := InspectSeals(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.CompletePacks != 1 || rep.ReadOnlyPacks != 1 || rep.ImmutablePacks != b2i(st.Attributes) ||
		rep.OpenPacks != 2 || rep.AppendOnlyPacks != 2*b2i(st.Attributes) {
		t.Errorf("InspectSeals %+v; want 1 complete tile pack, sealed, and 2 open ones, append-only %v", rep, st.Attributes)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// A crash in the middle of a commit leaves a partial frame at the end
	// of the (append-only) segment; recovery must still cut it off.
	f, err := os.OpenFile(active, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(appendFrame(nil, []byte("never acknowledged"), nil)[:20])
	f.Close()
	// Files completed while sealing was off, or that the process stopped
	// before sealing, are sealed at the next start, also those below the
	// start-up snapshot it starts from (Close wrote one).
	if err := LiftSeals(dir); err != nil {
		t.Fatal(err)
	}
	if fs, _ := InspectSeal(complete); fs.ReadOnly || fs.Immutable {
		t.Fatalf("LiftSeals left %s sealed: %+v", complete, fs)
	}
	l = open(t, dir, opts)
	defer l.Close()
	if l.Size() != n {
		t.Fatalf("size %d after recovery, want %d", l.Size(), n)
	}
	for _, path := range append(segs[:len(segs)-1:len(segs)-1], complete) {
		if fs, _ := InspectSeal(path); !fs.ReadOnly || fs.Immutable != st.Attributes {
			t.Errorf("%s after a start: %+v; want read-only, immutable %v", path, fs, st.Attributes)
		}
	}
	if _, err := l.Append(context.Background(), []Item{rec(n)}); err != nil {
		t.Fatal(err)
	}
	segs, _ = filepath.Glob(filepath.Join(dir, segDir, "*.seg"))
	if fs, _ := InspectSeal(segs[len(segs)-1]); fs.AppendOnly != appendOnly {
		t.Errorf("active segment after recovery %+v; want append-only %v", fs, appendOnly)
	}
	for _, path := range filling {
		if fs, _ := InspectSeal(path); fs.AppendOnly != st.Attributes {
			t.Errorf("tile pack being filled %s after recovery: %+v; want append-only %v", path, fs, st.Attributes)
		}
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

func TestParseSealMode(t *testing.T) {
	for _, m := range []SealMode{SealOff, SealReadOnly, SealImmutable} {
		got, err := ParseSealMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseSealMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseSealMode("forever"); err == nil {
		t.Error("ParseSealMode accepted an unknown mode")
	}
}
