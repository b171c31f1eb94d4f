package ledger

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/merkle"
)

// TestPackRecoveryWritesTilesAgain: after a crash, the tiles a pack holds
// past the durable watermark (here garbled, with half a tile after them, as
// a write cut short leaves them) are cut off and written again, while the
// tiles below it are kept.
func TestPackRecoveryWritesTilesAgain(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	// Tiles 0-3 of level 0, durable; the partial tile of the tree of 512
	// records is kept from the first run.
	fill(t, dir, k.opts(), 2*merkle.TileWidth)
	partial := filepath.Join(dir, "tile", "1", "000.p", "2")
	partialData, err := os.ReadFile(partial)
	if err != nil {
		t.Fatal(err)
	}
	l := open(t, dir, k.opts())
	appendRecords(t, l, 2*merkle.TileWidth, 4*merkle.TileWidth)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := packPath(dir, 0, 0)
	want, err := os.ReadFile(path)
	if err != nil || len(want) != 4*tileBytes {
		t.Fatalf("pack holds %d bytes (%v), want 4 tiles", len(want), err)
	}
	// The watermark of an earlier sync: tiles 2 and 3 were never durable.
	if err := os.WriteFile(filepath.Join(dir, watermarkFile), []byte("512\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(partial, partialData, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xee}, 100), 3*tileBytes+64)
	f.Close()

	l = open(t, dir, k.opts())
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Fatalf("pack after recovery holds %d bytes, differing from the tiles the records give", len(got))
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyTilesMoveIntoPacks: a log written when every full tile was a
// file of its own (sealed) is moved into packs when the ledger opens it:
// the same tiles, served and verified, and the old files removed. So is
// one whose move a crash interrupted: the watermark reset to 0, some tiles
// in a pack, the old files still there.
func TestLegacyTilesMoveIntoPacks(t *testing.T) {
	t.Run("first start", func(t *testing.T) { testLegacyTiles(t, false) })
	t.Run("interrupted", func(t *testing.T) { testLegacyTiles(t, true) })
}

func testLegacyTiles(t *testing.T, interrupted bool) {
	k := newKeys(t)
	dir := sealedDir(t)
	opts := k.opts()
	opts.Seal = SealImmutable
	const n = 70_000 // 273 full tiles of level 0, one of level 1
	fill(t, dir, opts, n)
	var ids []merkle.TileID
	for N := range uint64(n / merkle.TileWidth) {
		ids = append(ids, merkle.TileID{Level: 0, N: N, W: merkle.TileWidth})
	}
	ids = append(ids, merkle.TileID{Level: 1, N: 0, W: merkle.TileWidth})
	want := map[merkle.TileID][]byte{}
	s := newSealer(SealImmutable, false)
	for _, id := range ids {
		data, err := readPackedTile(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = data
		p := filepath.Join(dir, filepath.FromSlash(id.Path()))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.seal(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, level := range []string{"0", "1"} {
		packs := filepath.Join(dir, "tile", level, packDir)
		if err := LiftSeals(packs); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(packs); err != nil {
			t.Fatal(err)
		}
	}
	if !interrupted {
		// verify reads the old layout as it is.
		if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
			t.Fatalf("verify of the old layout: %v", err)
		}
		p := filepath.Join(dir, "tile", "0", "005")
		data, _ := os.ReadFile(p)
		rewrite := func() {
			if err := s.unlock(p); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		data[3*merkle.HashSize] ^= 1
		rewrite()
		if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err == nil || !strings.Contains(err.Error(), "record 1283: tile tile/0/005 hash 3 differs") {
			t.Fatalf("verify of the old layout with a tile changed: %v", err)
		}
		data[3*merkle.HashSize] ^= 1
		rewrite()
	}
	if interrupted {
		if err := os.WriteFile(filepath.Join(dir, watermarkFile), []byte("0\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(packPath(dir, 0, 0)), 0o700)
		if err := os.WriteFile(packPath(dir, 0, 0), bytes.Repeat(want[ids[0]], 3)[:2*tileBytes+100], 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if rep, err := InspectSeals(dir); err != nil || rep.OldTileFiles != len(ids) {
		t.Fatalf("InspectSeals %+v, %v; want %d full tile files of the old layout", rep, err, len(ids))
	}
	l := open(t, dir, opts)
	for _, id := range ids {
		if got, err := l.Tile(id); err != nil || !bytes.Equal(got, want[id]) {
			t.Fatalf("tile %s after the move: %v, or not the tile the log had", id.Path(), err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(id.Path()))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("old tile file %s is still there (%v)", id.Path(), err)
		}
		if got, err := readPackedTile(dir, id); err != nil || !bytes.Equal(got, want[id]) {
			t.Fatalf("tile %s in its pack: %v, or not the tile the log had", id.Path(), err)
		}
	}
	if partial, _ := filepath.Glob(filepath.Join(dir, "tile", "0", "*.p", "*")); len(partial) != 1 {
		t.Fatalf("partial tiles of level 0: %v; want the one of the durable tree", partial)
	}
	rep, err := InspectSeals(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.CompletePacks != 1 || rep.ReadOnlyPacks != 1 || rep.OpenPacks != 2 || rep.OldTileFiles != 0 {
		t.Fatalf("InspectSeals %+v; want one complete pack, sealed, and two being filled", rep)
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Fatal(err)
	}
}

// TestRemovedRecordsStopTheStart: records removed from the end of the log
// together with the checkpoint and the watermark that would have told are
// still found, by the tile packs holding tiles of them; a watermark beyond
// the log is reported by verify as by the start.
func TestRemovedRecordsStopTheStart(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	fill(t, dir, k.opts(), 3*merkle.TileWidth+10) // three tiles packed
	seg := onlySegment(t, dir)
	data, _ := os.ReadFile(seg)
	at := bytes.Index(data, []byte("k300|")) - frameHeaderSize // a commit starts with record 300
	if err := os.WriteFile(seg, data[:at], 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, checkpointFile))
	os.Remove(filepath.Join(dir, watermarkFile))
	os.Remove(filepath.Join(dir, snapshotFile))
	l, err := Open(dir, k.opts())
	if err == nil {
		size := l.Size()
		l.Close()
		t.Fatalf("Open of a log cut to %d records succeeded", size)
	}
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "tile pack tile/0/pack/00000000") || !strings.Contains(err.Error(), "records were removed") {
		t.Fatalf("Open = %v, want ErrTampered naming the pack", err)
	}
	dir = t.TempDir()
	fill(t, dir, k.opts(), 300)
	os.WriteFile(filepath.Join(dir, watermarkFile), []byte("700\n"), 0o600)
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "tiles were made durable for 700 records") {
		t.Fatalf("Verify = %v, want the watermark beyond the log named", err)
	}
}

// TestVerifyChecksCompletePacks: a complete pack with a tile more appended
// is damage, though the log has that many tiles (in the next pack).
func TestVerifyChecksCompletePacks(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	fill(t, dir, k.opts(), (packTiles+2)*merkle.TileWidth+10)
	f, err := os.OpenFile(packPath(dir, 0, 0), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, tileBytes))
	f.Close()
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); !errors.Is(err, ErrTampered) ||
		!strings.Contains(err.Error(), "tile pack tile/0/pack/00000000 holds 2105344 bytes: more than the 256 tiles of a pack") {
		t.Fatalf("Verify = %v, want the overfull pack named", err)
	}
}

// TestVerifyChecksPacks: tile packs holding more than the log's tiles, or
// part of a tile below the durable watermark, are reported; a tile cut
// short above it, as a crash leaves one, is not.
func TestVerifyChecksPacks(t *testing.T) {
	k := newKeys(t)
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"half a tile after the last", func(t *testing.T, dir string) {
			f, err := os.OpenFile(packPath(dir, 0, 0), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(make([]byte, tileBytes/2))
			f.Close()
		}, "tile pack tile/0/pack/00000000 holds 28672 bytes: more than the 3 full tiles of level 0"},
		{"a tile past the log", func(t *testing.T, dir string) {
			f, err := os.OpenFile(packPath(dir, 0, 0), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(make([]byte, tileBytes))
			f.Close()
		}, "tile pack tile/0/pack/00000000 holds 32768 bytes: more than the 3 full tiles of level 0"},
		{"a pack past the log", func(t *testing.T, dir string) {
			os.WriteFile(packPath(dir, 0, 7), make([]byte, tileBytes), 0o600)
		}, "tile pack tile/0/pack/00000007 holds 8192 bytes"},
		{"part of a tile below the watermark", func(t *testing.T, dir string) {
			os.Truncate(packPath(dir, 0, 0), 2*tileBytes+100)
		}, "tile tile/0/002 (tile/0/pack/00000000, bytes 16384-24575) is missing"},
		{"a tile cut short above the watermark", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, watermarkFile), []byte("512\n"), 0o600)
			os.Truncate(packPath(dir, 0, 0), 2*tileBytes+100)
		}, ""},
		{"not a pack", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "tile", "0", packDir, "7"), nil, 0o600)
		}, "unexpected file tile/0/pack/7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fill(t, dir, k.opts(), 3*merkle.TileWidth+10)
			if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, dir)
			_, err := Verify(dir, VerifyOptions{Verifier: k.verifier})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Verify = %v, want no error", err)
				}
				return
			}
			if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify = %v, want ErrTampered mentioning %q", err, tc.want)
			}
		})
	}
}

// TestOldPartialTilesRemoved: the partial tile files of a tree an earlier
// run made durable are removed once a later tree is durable; only those of
// the durable tree stay.
func TestOldPartialTilesRemoved(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	fill(t, dir, k.opts(), 300)
	l := open(t, dir, k.opts())
	appendRecords(t, l, 300, 600)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := listTileFiles(dir).partial
	for i, p := range got {
		got[i], _ = filepath.Rel(dir, p)
	}
	want := []string{"tile/0/002.p/88", "tile/1/000.p/2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("partial tile files %v; want %v", got, want)
	}
}
