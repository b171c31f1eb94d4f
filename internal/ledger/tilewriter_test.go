package ledger

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/merkle"
)

// TestTilesServedBeforeWritten: the full tiles of a published tree are
// readable at once, whether or not the tile writer has written them yet,
// and are on disk once the ledger says they are durable.
func TestTilesServedBeforeWritten(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	l := open(t, dir, k.opts())
	defer l.Close()
	id := merkle.TileID{Level: 0, N: 0, W: merkle.TileWidth}
	for n := 0; n < 4*merkle.TileWidth; n += merkle.TileWidth {
		appendRecords(t, l, n, n+merkle.TileWidth)
		id.N = uint64(n / merkle.TileWidth)
		data, err := l.Tile(id)
		if err != nil || len(data) != merkle.TileWidth*merkle.HashSize {
			t.Fatalf("tile %s right after its records were acknowledged: %d bytes, %v", id.Path(), len(data), err)
		}
	}
	if err := l.syncTiles(); err != nil {
		t.Fatal(err)
	}
	want, _ := l.Tile(id)
	if got, err := readPackedTile(dir, id); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("tile %s after a sync: %d bytes on disk, %v", id.Path(), len(got), err)
	}
}

// TestTileWriteFailureStopsAppends: a full tile that cannot be written
// stops the ledger (later appends fail) while what was acknowledged stays:
// the tile is still served, and after a restart the log recovers it all.
func TestTileWriteFailureStopsAppends(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	l := open(t, dir, k.opts())
	// A file where the level-0 tile directory belongs.
	if err := os.MkdirAll(filepath.Join(dir, "tile"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tile", "0"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	appendRecords(t, l, 0, merkle.TileWidth)
	for deadline := time.Now().Add(10 * time.Second); l.Err() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the ledger goes on after a tile write failed")
		}
	}
	if _, err := l.Append(context.Background(), []Item{rec(1000)}); !errors.Is(err, ErrFailed) {
		t.Fatalf("append after the failure: %v, want ErrFailed", err)
	}
	if _, err := l.Tile(merkle.TileID{Level: 0, N: 0, W: merkle.TileWidth}); err != nil {
		t.Fatalf("the unwritten tile is not served: %v", err)
	}
	l.Close()

	os.Remove(filepath.Join(dir, "tile", "0"))
	l = open(t, dir, k.opts())
	defer l.Close()
	if l.Size() != merkle.TileWidth {
		t.Fatalf("size %d after restart, want %d", l.Size(), merkle.TileWidth)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir, VerifyOptions{Verifier: k.verifier}); err != nil {
		t.Fatal(err)
	}
}
