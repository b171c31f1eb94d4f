package merkle

import (
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// memTiles stores the tiles a Builder produces, as a log's tile storage would.
type memTiles map[TileID][]byte

func (m memTiles) read(id TileID) ([]byte, error) {
	if d, ok := m[id]; ok {
		return d, nil
	}
	if d, ok := m[TileID{Level: id.Level, N: id.N, W: TileWidth}]; ok {
		return d[:id.W*HashSize], nil
	}
	return nil, fmt.Errorf("no tile %s", id.Path())
}

func leaf(i int) []byte { return []byte(fmt.Sprintf("record %d", i)) }

// TestBuilderMatchesTlog grows a tree leaf by leaf and checks every root and
// every tile against x/mod's tlog computed from all stored hashes.
func TestBuilderMatchesTlog(t *testing.T) {
	const n = 70000 // crosses level-1 tile boundaries
	var stored []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	b := NewBuilder()
	tiles := memTiles{}
	for i := 0; i < n; i++ {
		hs, err := tlog.StoredHashes(int64(i), leaf(i), hr)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		full, err := b.Append(LeafHash(leaf(i)))
		if err != nil {
			t.Fatal(err)
		}
		for _, ft := range full {
			tiles[ft.ID] = ft.Data
		}
		size := int64(i + 1)
		if size < 600 || size%997 == 0 || size == n {
			want, err := tlog.TreeHash(size, hr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Root()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("size %d: root %v, want %v", size, got, want)
			}
		}
	}
	for _, pt := range b.Partial() {
		tiles[pt.ID] = pt.Data
	}
	for _, tt := range tlog.NewTiles(TileHeight, 0, n) {
		want, err := tlog.ReadTileData(tt, hr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := memTiles(tiles).read(TileID{Level: tt.L, N: uint64(tt.N), W: tt.W})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("tile %v differs", tt.Path())
		}
	}
}

func TestTilePathRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id   TileID
		path string
	}{
		{TileID{0, 0, 256}, "tile/0/000"},
		{TileID{1, 1234, 256}, "tile/1/x001/234"},
		{TileID{0, 1234067, 7}, "tile/0/x001/x234/067.p/7"},
		{TileID{EntriesLevel, 5, 17}, "tile/entries/005.p/17"},
	} {
		if got := tc.id.Path(); got != tc.path {
			t.Errorf("%+v.Path() = %q, want %q", tc.id, got, tc.path)
		}
		got, err := ParseTilePath(tc.path)
		if err != nil || got != tc.id {
			t.Errorf("ParseTilePath(%q) = %+v, %v", tc.path, got, err)
		}
	}
	for _, bad := range []string{"tile/0/1", "tile/0/0001", "tile/0/x000/001", "tile/0/001.p/0", "tile/0/001.p/256",
		"tile/-1/000", "tile/00/000", "tile/0/../000", "tile/entries/00a", "tile/0/001.p/07", "tile/0", "x/0/000"} {
		if _, err := ParseTilePath(bad); err == nil {
			t.Errorf("ParseTilePath(%q) succeeded", bad)
		}
	}
}

// TestBuilderStateRoundTrip stops a Builder at sizes on and around tile
// boundaries, restores its state into a new one, and grows both further:
// they must give the same roots, full tiles and partial tiles. Any other
// length of state is refused.
func TestBuilderStateRoundTrip(t *testing.T) {
	const more = 600
	for _, stop := range []int{0, 1, 2, 255, 256, 257, 511, 65535, 65536, 65537, 70000} {
		b := NewBuilder()
		for i := range stop {
			if _, err := b.Append(LeafHash(leaf(i))); err != nil {
				t.Fatal(err)
			}
		}
		state, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var r Builder
		if err := r.UnmarshalBinary(state); err != nil {
			t.Fatalf("size %d: %v", stop, err)
		}
		for i := stop; i < stop+more; i++ {
			want, _ := b.Append(LeafHash(leaf(i)))
			got, err := r.Append(LeafHash(leaf(i)))
			if err != nil {
				t.Fatalf("size %d, leaf %d: %v", stop, i, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("size %d, leaf %d: full tiles differ", stop, i)
			}
			wr, _ := b.Root()
			gr, err := r.Root()
			if err != nil || gr != wr {
				t.Fatalf("size %d, leaf %d: root %v (%v), want %v", stop, i, gr, err, wr)
			}
		}
		if fmt.Sprint(r.Partial()) != fmt.Sprint(b.Partial()) {
			t.Fatalf("size %d: partial tiles differ", stop)
		}
		for _, bad := range [][]byte{state[:len(state)-1], append(state, 0), state[:7]} {
			if err := new(Builder).UnmarshalBinary(bad); err == nil {
				t.Errorf("size %d: a state of %d bytes (of %d) was accepted", stop, len(bad), len(state))
			}
		}
	}
}
