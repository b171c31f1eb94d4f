package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/aitrail/aitrail/internal/merkle"
)

// ErrInconsistent means the log's new checkpoint does not extend the one
// trusted before: the log was rewritten or forked.
var ErrInconsistent = errors.New("log is inconsistent with the trusted checkpoint")

// VerifyResult describes a successful remote verification.
type VerifyResult struct {
	// Checkpoint is the verified signed checkpoint, to trust next time.
	Checkpoint []byte
	Size       uint64
	// From is the size of the previously trusted checkpoint.
	From uint64
	// EntriesChecked counts entries fetched and re-hashed (zero without a
	// token holding the audit role).
	EntriesChecked uint64
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Trusted is the signed checkpoint verified last time, or nil.
	Trusted []byte
	// Entries makes Verify fetch every entry since Trusted and re-hash it
	// against the tiles; the client's token needs the audit role.
	Entries bool
	// Progress, if set, is called with the entries checked so far.
	Progress func(done, total uint64)
}

// Verify checks the remote log against its public key: the checkpoint's
// signature, its consistency with the trusted checkpoint, the hash tiles
// against the checkpoint (through x/mod's tlog, which authenticates every
// tile it reads), and, with Entries, the entries against the tiles.
func (c *Client) Verify(ctx context.Context, v note.Verifier, opts VerifyOptions) (VerifyResult, error) {
	var res VerifyResult
	signed, err := c.Checkpoint(ctx)
	if err != nil {
		return res, fmt.Errorf("couldn't fetch checkpoint: %w", err)
	}
	cp, err := merkle.OpenCheckpoint(signed, v)
	if err != nil {
		return res, err
	}
	res.Checkpoint, res.Size = signed, cp.Size
	var old merkle.Checkpoint
	if opts.Trusted != nil {
		if old, err = merkle.OpenCheckpoint(opts.Trusted, v); err != nil {
			return res, fmt.Errorf("trusted checkpoint: %w", err)
		}
		res.From = old.Size
	}
	if cp.Size < old.Size {
		return res, fmt.Errorf("%w: the log shrank from %d to %d records", ErrInconsistent, old.Size, cp.Size)
	}
	if cp.Size == 0 {
		return res, nil
	}
	tree := tlog.Tree{N: int64(cp.Size), Hash: cp.Hash}
	hr := tlog.TileHashReader(tree, &tileReader{ctx: ctx, c: c, saved: map[tlog.Tile][]byte{}})
	if old.Size > 0 {
		proof, err := tlog.ProveTree(tree.N, int64(old.Size), hr)
		if err != nil {
			return res, fmt.Errorf("couldn't build the consistency proof from tiles: %w", err)
		}
		if err := tlog.CheckTree(proof, tree.N, tree.Hash, int64(old.Size), old.Hash); err != nil {
			return res, fmt.Errorf("%w: %v", ErrInconsistent, err)
		}
	} else if _, err := tlog.TreeHash(tree.N, hr); err != nil {
		return res, fmt.Errorf("tiles do not match the checkpoint: %w", err)
	}
	if !opts.Entries {
		return res, nil
	}
	for first := old.Size - old.Size%merkle.TileWidth; first < cp.Size; first += merkle.TileWidth {
		n := first / merkle.TileWidth
		w := int(min(cp.Size-first, merkle.TileWidth))
		id := merkle.TileID{Level: merkle.EntriesLevel, N: n, W: w}
		// Each entry is at most 65,535 bytes after its two-byte length.
		bundle, err := c.fetchTile(ctx, id.Path(), int64(w)*(2+math.MaxUint16), true)
		if err != nil {
			return res, fmt.Errorf("couldn't fetch %s: %w", id.Path(), err)
		}
		idx := make([]int64, w)
		for i := range idx {
			idx[i] = tlog.StoredHashIndex(0, int64(first)+int64(i))
		}
		want, err := hr.ReadHashes(idx)
		if err != nil {
			return res, fmt.Errorf("couldn't read leaf hashes: %w", err)
		}
		for i := 0; i < w; i++ {
			if len(bundle) < 2 {
				return res, fmt.Errorf("entry %d: bundle %s is truncated", first+uint64(i), id.Path())
			}
			l := int(binary.BigEndian.Uint16(bundle))
			if len(bundle) < 2+l {
				return res, fmt.Errorf("entry %d: bundle %s is truncated", first+uint64(i), id.Path())
			}
			if tlog.RecordHash(bundle[2:2+l]) != want[i] {
				return res, fmt.Errorf("entry %d: its hash does not match the log's tree", first+uint64(i))
			}
			bundle = bundle[2+l:]
			if first+uint64(i) >= old.Size {
				res.EntriesChecked++
			}
		}
		if len(bundle) != 0 {
			return res, fmt.Errorf("bundle %s has trailing data", id.Path())
		}
		if opts.Progress != nil {
			opts.Progress(res.EntriesChecked, cp.Size-old.Size)
		}
	}
	return res, nil
}

// tileReader fetches C2SP hash tiles for x/mod's tlog, and keeps those
// tlog has authenticated (SaveTiles) to serve them again: re-hashing each
// entry bundle reads the same tiles above it.
type tileReader struct {
	ctx   context.Context
	c     *Client
	saved map[tlog.Tile][]byte
}

// maxSavedTiles bounds the tiles a tileReader keeps: 16 MiB of hashes.
const maxSavedTiles = 2048

func (r *tileReader) Height() int { return merkle.TileHeight }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if data, ok := r.saved[t]; ok {
			out[i] = data
			continue
		}
		id := merkle.TileID{Level: t.L, N: uint64(t.N), W: t.W}
		data, err := r.c.fetchTile(r.ctx, id.Path(), int64(t.W)*tlog.HashSize, false)
		if err != nil {
			return nil, fmt.Errorf("couldn't fetch %s: %w", id.Path(), err)
		}
		out[i] = data
	}
	return out, nil
}

func (r *tileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	if len(r.saved)+len(tiles) > maxSavedTiles {
		clear(r.saved)
	}
	for i, t := range tiles {
		r.saved[t] = data[i]
	}
}
