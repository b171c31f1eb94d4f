package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/aitrail/aitrail/internal/merkle"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Verifier is the log's public key. Required.
	Verifier note.Verifier
	// CheckEntry, if set, is called for every record with its blob, to check
	// what only the record's format knows (such as the content digest).
	CheckEntry func(index uint64, record, blob []byte) error
	// Progress, if set, is called now and then with the records checked.
	Progress func(done uint64)
}

// VerifyReport summarises a successful verification.
type VerifyReport struct {
	Records        uint64
	Checkpoint     merkle.Checkpoint
	TilesChecked   int
	PartialChecked int
}

// VerifyError reports the first damage Verify found. It wraps ErrTampered.
type VerifyError struct {
	// Index is the first record affected, or -1 when the damage is not
	// tied to one record (the checkpoint, say).
	Index int64
	// What says what is wrong.
	What string
}

func (e *VerifyError) Error() string {
	if e.Index < 0 {
		return e.What
	}
	return fmt.Sprintf("record %d: %s", e.Index, e.What)
}

func (e *VerifyError) Unwrap() error { return ErrTampered }

// Verify checks a ledger directory offline and completely: every segment's
// framing and checksums, every record's leaf hash against the stored tiles,
// every full and partial tile file, the checkpoint's signature and that its
// root matches the tree recomputed from the records. It needs no process to
// be running but must not run while one writes to dir. It returns a
// *VerifyError for damage and other errors for I/O problems.
func Verify(dir string, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	if opts.Verifier == nil {
		return rep, errors.New("verify: a verifier key is required")
	}
	bad := func(idx int64, format string, args ...any) (VerifyReport, error) {
		return rep, &VerifyError{Index: idx, What: fmt.Sprintf(format, args...)}
	}

	cpData, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	var cp merkle.Checkpoint
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A log that never synced: nothing is signed yet.
	case err != nil:
		return rep, err
	default:
		cp, err = merkle.OpenCheckpoint(cpData, opts.Verifier)
		if err != nil {
			return bad(-1, "checkpoint: %v", err)
		}
	}
	rep.Checkpoint = cp
	l := &Ledger{dir: dir}
	durable, err := readWatermarkFile(dir)
	if err != nil {
		return rep, err
	}
	// A log written before full tiles were packed, and not yet opened by
	// a server that packs them, has them one to a file.
	readTile, name := readPackedTile, tileName
	if unpackedTiles(dir) {
		readTile, name = readTileFile, merkle.TileID.Path
	} else if durable, err = durableTiles(dir, durable, cp.Size); err != nil {
		return rep, err
	}

	firsts, err := listSegments(filepath.Join(dir, segDir))
	if err != nil {
		return rep, fmt.Errorf("couldn't list segments: %w", err)
	}
	b := merkle.NewBuilder()
	// n counts the records applied, read the records read: reading runs
	// ahead of applying by up to a batch, and n may be read only after a
	// flush.
	var n, read uint64
	// A root that disagrees with the checkpoint is reported only if no
	// damage naming a record turns up: that is the more useful report.
	var rootErr error
	checkRoot := func() error {
		if cp.Size == 0 || b.Size() != cp.Size {
			return nil
		}
		root, err := b.Root()
		if err != nil {
			return err
		}
		if root != cp.Hash {
			return &VerifyError{Index: -1, What: fmt.Sprintf("checkpoint: the tree of the first %d records has root %x, the signed checkpoint says %x", cp.Size, root[:], cp.Hash[:])}
		}
		return nil
	}
	// unstored are the full tiles a crash left unwritten (beyond the
	// durable watermark), as the records give them: the partial tiles
	// of the durable tree below must be their prefixes.
	unstored := map[merkle.TileID][]byte{}
	// Records are checked a batch at a time: their leaf hashes and the
	// caller's checks on every core, then the tree and the tiles in order.
	apply := func(r *verifyRecord) error {
		if r.err != nil {
			return &VerifyError{Index: int64(n), What: r.err.Error()}
		}
		full, err := b.Append(r.leaf)
		if err != nil {
			return err
		}
		n++
		for _, t := range full {
			stored, err := checkTile(dir, t, durable, readTile, name)
			if err != nil {
				return err
			}
			if !stored {
				unstored[t.ID] = bytes.Clone(t.Data)
			}
			rep.TilesChecked++
		}
		if err := checkRoot(); err != nil && rootErr == nil {
			rootErr = err
		}
		if opts.Progress != nil && n%100_000 == 0 {
			opts.Progress(n)
		}
		return nil
	}
	batch := &orderedBatch[verifyRecord]{apply: apply, prep: func(r *verifyRecord) {
		r.leaf = merkle.LeafHash(r.rec)
		if opts.CheckEntry != nil {
			r.err = opts.CheckEntry(r.idx, r.rec, r.blob)
		}
	}}
	flush := batch.flush
	for i, first := range firsts {
		// Each segment starts with the records before it checked, so
		// that n counts them all.
		if err := flush(); err != nil {
			return rep, err
		}
		if first != n {
			return bad(int64(n), "segment %s starts at record %d; the records before it end at %d", segmentName(first), first, n)
		}
		path := filepath.Join(dir, segDir, segmentName(first))
		f, size, err := openSegmentFile(path)
		if err != nil {
			return rep, err
		}
		if size < segHeaderSize && i == len(firsts)-1 && first >= cp.Size {
			// A crash while the segment was being created: nothing in it
			// was acknowledged, and the server starts it again.
			f.Close()
			break
		}
		if err := checkSegHeader(f, first); err != nil {
			f.Close()
			return bad(int64(n), "segment %s: %v", segmentName(first), err)
		}
		sc := newFrameScanner(f, size, segHeaderSize).readingAhead(f, true)
		// Zeros ahead of the records are the end of the active segment
		// only (prealloc.go).
		sc.zeroTail = i == len(firsts)-1
		for {
			fr, err := sc.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				// The records before the damage are checked first: an
				// earlier one at fault is the better report.
				if ferr := flush(); ferr != nil {
					f.Close()
					return rep, ferr
				}
				what := fmt.Sprintf("segment %s offset %d: %v", segmentName(first), sc.off, err)
				if i == len(firsts)-1 && n >= cp.Size {
					// Only the last commit can be torn (see commitEndsAfter).
					if ends, cerr := commitEndsAfter(f, size, sc.off, 2); cerr == nil && ends < 2 {
						what += " (if the server stopped uncleanly, this can be a commit that never finished and was never acknowledged: the server cuts it off at start)"
					} else if cerr == nil {
						what += ", and complete commits follow it: those records were acknowledged"
					}
				}
				f.Close()
				return bad(int64(n), "%s", what)
			}
			// A frame is valid only until the next; the batch holds copies.
			r := verifyRecord{idx: read, rec: batch.arena.copy(fr.record), blob: batch.arena.copy(fr.blob)}
			read++
			if err := batch.add(r, len(fr.record)+len(fr.blob)); err != nil {
				f.Close()
				return rep, err
			}
		}
		f.Close()
	}
	if err := flush(); err != nil {
		return rep, err
	}
	rep.Records = n
	if cp.Size == 0 && n > 0 {
		return bad(-1, "checkpoint: missing, but the log holds %d records (a server that crashed before its first sync signs one when started)", n)
	}
	if cp.Size > n {
		return bad(int64(n), "missing: the signed checkpoint covers %d records but the log holds %d", cp.Size, n)
	}
	if durable > n {
		return bad(int64(n), "missing: tiles were made durable for %d records (%s), but the log holds %d", durable, watermarkFile, n)
	}
	// Partial tile files are the durable tree at the watermark: each must be
	// a prefix of the tile the records produce.
	partial := b.Partial()
	err = filepath.WalkDir(filepath.Join(dir, "tile"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".tmp") {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if level, k, ok := parsePackPath(rel); ok {
			// The tiles within the tree were checked above (one cut short
			// is missing: damage below the durable watermark; above it, a
			// crash can leave one so, which the server cuts off at
			// start). A pack must hold nothing past the tree's full tiles.
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := checkPackSize(rel, fi.Size(), level, k, n); err != nil {
				return &VerifyError{Index: -1, What: err.Error()}
			}
			return nil
		}
		id, perr := merkle.ParseTilePath(filepath.ToSlash(rel))
		if perr != nil {
			return &VerifyError{Index: -1, What: fmt.Sprintf("unexpected file %s in the tile directory", rel)}
		}
		if id.W == merkle.TileWidth {
			// A full tile file of the old layout: checked above if the
			// log still has that layout; otherwise one the server could
			// not remove when it moved the tiles into packs, which
			// nothing reads any more.
			if id.N >= n>>uint(merkle.TileHeight*id.Level)/merkle.TileWidth {
				return &VerifyError{Index: -1, What: fmt.Sprintf("tile %s lies beyond the %d records of the log", rel, n)}
			}
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		want, err := l.tileReader(n, partial)(id)
		if full := (merkle.TileID{Level: id.Level, N: id.N, W: merkle.TileWidth}); err != nil && unstored[full] != nil {
			want, err = unstored[full][:id.W*merkle.HashSize], nil
		}
		if err != nil {
			return &VerifyError{Index: -1, What: fmt.Sprintf("partial tile %s lies beyond the %d records of the log", rel, n)}
		}
		if k := firstDiff(data, want); k >= 0 {
			return &VerifyError{Index: tileRecord(id, k), What: fmt.Sprintf("partial tile %s differs from the tree recomputed from the records", rel)}
		}
		rep.PartialChecked++
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err == nil {
		err = rootErr
	}
	return rep, err
}

// verifyRecord is one record Verify reads, with what the work that can be
// done in parallel (orderedBatch.prep) made of it.
type verifyRecord struct {
	idx       uint64
	rec, blob []byte
	leaf      merkle.Hash
	err       error // from VerifyOptions.CheckEntry
}

// checkTile compares a full tile recomputed from the records with the one
// stored, which read reads and name names (from its pack, or its file in
// the old layout), and reports whether it is stored. Tiles past the durable
// watermark may be missing after a crash; the server writes them again at
// start.
func checkTile(dir string, t merkle.Tile, durable uint64, read func(string, merkle.TileID) ([]byte, error), name func(merkle.TileID) string) (stored bool, err error) {
	data, err := read(dir, t.ID)
	end := uint64(tileRecord(t.ID, merkle.TileWidth))
	if errors.Is(err, fs.ErrNotExist) && end > durable {
		return false, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, &VerifyError{Index: tileRecord(t.ID, 0), What: fmt.Sprintf("tile %s is missing", name(t.ID))}
	}
	if err != nil {
		return false, err
	}
	if k := firstDiff(data, t.Data); k >= 0 {
		return true, &VerifyError{Index: tileRecord(t.ID, k), What: fmt.Sprintf("tile %s hash %d differs from the tree recomputed from the records", name(t.ID), k)}
	}
	return true, nil
}

// firstDiff returns the index of the first hash where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for k := 0; ; k++ {
		lo, hi := k*merkle.HashSize, (k+1)*merkle.HashSize
		if hi > len(a) || hi > len(b) || !bytes.Equal(a[lo:hi], b[lo:hi]) {
			return k
		}
	}
}

// tileRecord is the first record covered by hash k of tile id.
func tileRecord(id merkle.TileID, k int) int64 {
	return int64((id.N*merkle.TileWidth + uint64(k)) << uint(merkle.TileHeight*id.Level))
}
