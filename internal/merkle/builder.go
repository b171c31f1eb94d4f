package merkle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// maxLevels bounds the tree height (2^63 leaves).
const maxLevels = 64

// ErrNotOnEdge reports a hash a Builder does not hold in memory: only the
// right edge of the tree is kept; the rest lives in tiles.
var ErrNotOnEdge = errors.New("hash is not on the tree's right edge")

// Builder grows a tree one leaf at a time and cuts it into tiles. It keeps
// only the tree's right edge in memory — the newest hash at every level and
// the partial tile of every tile level — so its memory does not grow with
// the log. Full tiles are handed to the caller as they complete.
//
// A Builder is not safe for concurrent use.
type Builder struct {
	size uint64
	// edge[i] is the most recently completed node at tree level i, at
	// position edgePos[i]-1 (0 means none yet).
	edge    [maxLevels]Hash
	edgePos [maxLevels]uint64
	// rows[L] holds the hashes of the partial tile at tile level L.
	rows [][]byte
}

// NewBuilder returns a Builder for the empty tree.
func NewBuilder() *Builder { return &Builder{} }

// TileReader returns the data of a tile: exactly W hashes. For a tile that
// is full in the tree, a reader may be asked for a prefix of it (W < 256).
type TileReader func(t TileID) ([]byte, error)

// Size returns the number of leaves.
func (b *Builder) Size() uint64 { return b.size }

// Append adds a leaf and returns the tiles it completed (the full tile at
// level 0 every 256 leaves, and above it every 256 tiles of the level below).
// The returned data is owned by the caller.
func (b *Builder) Append(leaf Hash) ([]Tile, error) {
	n := b.size
	hashes, err := tlog.StoredHashesForRecordHash(int64(n), leaf, b)
	if err != nil {
		return nil, err
	}
	var full []Tile
	for j, h := range hashes {
		b.edge[j] = h
		b.edgePos[j] = n>>uint(j) + 1
		if j%TileHeight != 0 {
			continue
		}
		l := j / TileHeight
		for len(b.rows) <= l {
			b.rows = append(b.rows, make([]byte, 0, TileWidth*HashSize))
		}
		b.rows[l] = append(b.rows[l], h[:]...)
		if len(b.rows[l]) == TileWidth*HashSize {
			full = append(full, Tile{
				ID:   TileID{Level: l, N: (n >> uint(j)) / TileWidth, W: TileWidth},
				Data: b.rows[l],
			})
			b.rows[l] = make([]byte, 0, TileWidth*HashSize)
		}
	}
	b.size++
	return full, nil
}

// Tile is a tile's identity and its hashes.
type Tile struct {
	ID   TileID
	Data []byte
}

// Partial returns copies of the partial tiles of the current tree, lowest
// level first; levels whose tiles are all full are omitted.
func (b *Builder) Partial() []Tile {
	var out []Tile
	for l, row := range b.rows {
		if len(row) == 0 {
			continue
		}
		count := b.size >> uint(TileHeight*l)
		out = append(out, Tile{
			ID:   TileID{Level: l, N: count / TileWidth, W: len(row) / HashSize},
			Data: append([]byte(nil), row...),
		})
	}
	return out
}

// PartialRow returns the partial tile at level l without copying, valid
// until the next Append, and its index. ok is false if level l has no
// partial tile.
func (b *Builder) PartialRow(l int) (n uint64, data []byte, ok bool) {
	if l >= len(b.rows) || len(b.rows[l]) == 0 {
		return 0, nil, false
	}
	return (b.size >> uint(TileHeight*l)) / TileWidth, b.rows[l], true
}

// Root returns the root hash of the current tree.
func (b *Builder) Root() (Hash, error) {
	if b.size == 0 {
		return tlog.TreeHash(0, b)
	}
	return tlog.TreeHash(int64(b.size), b)
}

// ReadHashes implements tlog.HashReader for hashes on the right edge.
func (b *Builder) ReadHashes(indexes []int64) ([]Hash, error) {
	out := make([]Hash, len(indexes))
	for i, x := range indexes {
		level, n := tlog.SplitStoredHashIndex(x)
		if level >= maxLevels || b.edgePos[level] != uint64(n)+1 {
			return nil, fmt.Errorf("%w: level %d index %d", ErrNotOnEdge, level, n)
		}
		out[i] = b.edge[level]
	}
	return out, nil
}

// HashCache remembers hashes computed from tiles. Every stored hash names a
// complete subtree, which never changes, so entries never go stale. It is
// safe for concurrent use and bounded in size.
type HashCache struct {
	mu sync.Mutex
	m  map[int64]Hash
}

// hashCacheSize bounds a HashCache (about 50 bytes an entry).
const hashCacheSize = 1 << 18

func (c *HashCache) get(x int64) (Hash, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[x]
	return h, ok
}

func (c *HashCache) put(x int64, h Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= hashCacheSize {
		c.m = map[int64]Hash{}
	}
	c.m[x] = h
}

// TileHashReader returns a tlog.HashReader for the tree of size n whose
// tiles read returns, remembering computed hashes in hc (which may be nil).
// It asks read only for tiles (or tile prefixes) inside the tree of size n.
func TileHashReader(n uint64, read TileReader, hc *HashCache) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]Hash, error) {
		out := make([]Hash, len(indexes))
		cache := map[TileID][]byte{}
		for i, x := range indexes {
			if hc != nil {
				if h, ok := hc.get(x); ok {
					out[i] = h
					continue
				}
			}
			t := tlog.TileForIndex(TileHeight, x)
			id := TileID{Level: t.L, N: uint64(t.N), W: t.W}
			// Prefer the widest tile the tree has, so neighbouring
			// hashes share one read.
			if avail := n >> uint(TileHeight*t.L); avail >= (id.N+1)*TileWidth {
				id.W = TileWidth
			} else if w := int(avail - id.N*TileWidth); w >= id.W {
				id.W = w
			} else {
				return nil, fmt.Errorf("hash %d is not in the tree of size %d", x, n)
			}
			data, ok := cache[id]
			if !ok {
				var err error
				data, err = read(id)
				if err != nil {
					return nil, err
				}
				if len(data) != id.W*HashSize {
					return nil, fmt.Errorf("tile %s has %d bytes, want %d", id.Path(), len(data), id.W*HashSize)
				}
				cache[id] = data
			}
			t.W = id.W
			h, err := tlog.HashFromTile(t, data, x)
			if err != nil {
				return nil, err
			}
			if hc != nil {
				hc.put(x, h)
			}
			out[i] = h
		}
		return out, nil
	})
}

// MarshalBinary encodes the Builder's state: its size, the newest hash at
// every level and the partial tile of every tile level. A Builder restored
// from it with UnmarshalBinary grows exactly as this one would.
func (b *Builder) MarshalBinary() ([]byte, error) {
	out := binary.BigEndian.AppendUint64(nil, b.size)
	for j := range bits.Len64(b.size) {
		out = append(out, b.edge[j][:]...)
	}
	for l := range b.rows {
		out = append(out, b.rows[l]...)
	}
	return out, nil
}

// UnmarshalBinary restores a state encoded by MarshalBinary. Everything
// but the size is determined by it: which levels hold a newest hash and how
// many hashes every partial tile has; data of any other length is refused.
// The hashes themselves cannot be checked here: a tree grown from a wrong
// state has roots that no longer match its signed checkpoints.
func (b *Builder) UnmarshalBinary(data []byte) error {
	if len(data) < 8 {
		return errors.New("merkle: builder state too short")
	}
	size := binary.BigEndian.Uint64(data)
	if size >= 1<<63 {
		return fmt.Errorf("merkle: builder state of impossible size %d", size)
	}
	levels := bits.Len64(size)
	want := 8 + levels*HashSize
	var rowLens []int
	for l := 0; l*TileHeight < levels; l++ {
		n := int(size>>uint(TileHeight*l)) % TileWidth * HashSize
		rowLens = append(rowLens, n)
		want += n
	}
	if len(data) != want {
		return fmt.Errorf("merkle: builder state of %d bytes, want %d for a tree of %d leaves", len(data), want, size)
	}
	*b = Builder{size: size}
	p := data[8:]
	for j := range levels {
		b.edge[j] = Hash(p[:HashSize])
		b.edgePos[j] = size >> uint(j)
		p = p[HashSize:]
	}
	for _, n := range rowLens {
		row := make([]byte, n, TileWidth*HashSize)
		copy(row, p)
		b.rows = append(b.rows, row)
		p = p[n:]
	}
	return nil
}
