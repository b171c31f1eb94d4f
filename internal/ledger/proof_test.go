package ledger

import (
	"bytes"
	"context"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/aitrail/aitrail/internal/merkle"
)

// TestProofsAgainstIndependentImplementation checks every inclusion proof of
// every index in every tree size up to 600, every consistency proof between
// those sizes, and every served tile, with transparency-dev/merkle — not the
// x/mod tlog code the ledger builds with.
func TestProofsAgainstIndependentImplementation(t *testing.T) {
	const n = 600
	ctx := context.Background()
	k := newKeys(t)
	l := open(t, t.TempDir(), k.opts())
	defer l.Close()
	for i := 0; i < n; i += 7 {
		var items []Item
		for j := i; j < i+7 && j < n; j++ {
			items = append(items, rec(j))
		}
		if _, err := l.Append(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	es, err := l.Entries(ctx, 0, n)
	if err != nil || len(es) != n {
		t.Fatalf("entries: %d, %v", len(es), err)
	}
	h := rfc6962.DefaultHasher
	leaves := make([][]byte, n)
	roots := make([][]byte, n+1)
	rf := compact.RangeFactory{Hash: h.HashChildren}
	cr := rf.NewEmptyRange(0)
	roots[0] = h.EmptyRoot()
	for i, e := range es {
		leaves[i] = h.HashLeaf(e.Data)
		if err := cr.Append(leaves[i], nil); err != nil {
			t.Fatal(err)
		}
		if roots[i+1], err = cr.GetRootHash(nil); err != nil {
			t.Fatal(err)
		}
	}
	cp, err := merkle.OpenCheckpoint(l.Checkpoint(), k.verifier)
	if err != nil || cp.Size != n || !bytes.Equal(cp.Hash[:], roots[n]) {
		t.Fatalf("checkpoint %+v does not match the independent root (%v)", cp, err)
	}

	for size := uint64(1); size <= n; size++ {
		for idx := uint64(0); idx < size; idx++ {
			p, err := l.InclusionProof(idx, size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", idx, size, err)
			}
			if err := proof.VerifyInclusion(h, idx, size, leaves[idx], hashes(p), roots[size]); err != nil {
				t.Fatalf("inclusion %d in %d: %v", idx, size, err)
			}
		}
		for from := uint64(1); from <= size; from++ {
			p, err := l.ConsistencyProof(from, size)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", from, size, err)
			}
			if err := proof.VerifyConsistency(h, from, size, hashes(p), roots[from], roots[size]); err != nil {
				t.Fatalf("consistency %d→%d: %v", from, size, err)
			}
		}
	}

	// Level-0 tiles are the leaf hashes, full and partial.
	for _, id := range []merkle.TileID{{Level: 0, N: 0, W: 256}, {Level: 0, N: 1, W: 256}, {Level: 0, N: 2, W: 88}, {Level: 0, N: 2, W: 3}} {
		data, err := l.Tile(id)
		if err != nil {
			t.Fatalf("Tile(%s): %v", id.Path(), err)
		}
		for j := 0; j < id.W; j++ {
			if !bytes.Equal(data[j*32:(j+1)*32], leaves[int(id.N)*256+j]) {
				t.Fatalf("tile %s hash %d differs from the leaf hash", id.Path(), j)
			}
		}
	}
	// Level 1 holds the roots of the full level-0 tiles.
	data, err := l.Tile(merkle.TileID{Level: 1, N: 0, W: 2})
	if err != nil {
		t.Fatal(err)
	}
	for j := 0; j < 2; j++ {
		r := rf.NewEmptyRange(0)
		for _, lh := range leaves[j*256 : (j+1)*256] {
			r.Append(lh, nil)
		}
		want, _ := r.GetRootHash(nil)
		if !bytes.Equal(data[j*32:(j+1)*32], want) {
			t.Fatalf("level-1 tile hash %d differs", j)
		}
	}
	if _, err := l.Tile(merkle.TileID{Level: 0, N: 2, W: 89}); err == nil {
		t.Fatal("a tile wider than the tree was served")
	}
	if _, err := l.InclusionProof(600, 600); err == nil {
		t.Fatal("proof for an index outside the tree")
	}
}

func hashes(p []merkle.Hash) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}
