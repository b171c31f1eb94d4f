package ledger

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
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
// durable full tiles cannot be changed or deleted through the file system
// (read-only, and immutable where the attribute can be set), the active
// segment can only be appended to when commits append (it is written over
// zeros otherwise, see prealloc.go), the status says which of these hold,
// and the ledger still recovers an unfinished tail under the seals.
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
	opts.SegmentSize = 4096 // several segments from a few hundred records
	if appending {
		opts.Preallocate = -1
	}
	l := open(t, dir, opts)
	appendRecords(t, l, 0, 600)
	// Wait until the sync loop has made the full tiles durable.
	tile := filepath.Join(dir, "tile", "0", "000")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if fi, err := os.Stat(tile); err == nil && fi.Mode().Perm() == sealedPerm {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("full tile %s never sealed; status %+v", tile, l.SealStatus())
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
	for _, path := range append(segs[:len(segs)-1:len(segs)-1], tile) {
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
	l = open(t, dir, opts)
	defer l.Close()
	if l.Size() != 600 {
		t.Fatalf("size %d after recovery, want 600", l.Size())
	}
	if _, err := l.Append(context.Background(), []Item{rec(600)}); err != nil {
		t.Fatal(err)
	}
	segs, _ = filepath.Glob(filepath.Join(dir, segDir, "*.seg"))
	if fs, _ := InspectSeal(segs[len(segs)-1]); fs.AppendOnly != appendOnly {
		t.Errorf("active segment after recovery %+v; want append-only %v", fs, appendOnly)
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
