package ledger

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/merkle"
)

// recover loads the ledger from disk. See Open for what it promises. If it
// started from a start-up snapshot, it returns the records below it, for
// checkBelow.
func (l *Ledger) recover() (*belowSnapshot, error) {
	cp, err := l.readCheckpoint()
	if err != nil {
		return nil, err
	}
	firsts, err := listSegments(filepath.Join(l.dir, segDir))
	if err != nil {
		return nil, fmt.Errorf("couldn't list segments: %w", err)
	}
	if len(firsts) == 0 {
		if cp.Size > 0 {
			return nil, fmt.Errorf("%w: no segment files, but the signed checkpoint covers %d records", ErrTampered, cp.Size)
		}
		seg, f, err := l.createSegment(0)
		if err != nil {
			return nil, fmt.Errorf("couldn't create the first segment: %w", err)
		}
		l.segs = []*segment{seg}
		l.active, l.activeSize = f, segHeaderSize
		l.builder = merkle.NewBuilder()
		return nil, l.publishRecovered(cp)
	}

	// Read every record once: framing, checksums and contiguity, and
	// rebuild the whole tree from them. Tiles below the durable watermark
	// must match what the records give; tiles above it were written lazily
	// and are written again.
	durable, err := readWatermarkFile(l.dir)
	if err != nil {
		return nil, err
	}
	if durable > 0 && cp.Size == 0 {
		return nil, fmt.Errorf("%w: the signed checkpoint is missing although tiles were made durable for %d records", ErrTampered, durable)
	}
	if unpackedTiles(l.dir) {
		// Written before full tiles were packed: they are all written
		// again, into packs, and the old files removed once the packs are
		// durable. The watermark goes to 0 first, so that a start
		// interrupted before then does the same again.
		l.log.Info("moving the log's full tiles into packs: rebuilding them from the segments")
		if err := writeFileAtomic(filepath.Join(l.dir, watermarkFile), []byte("0\n"), 0o600, true); err != nil {
			return nil, fmt.Errorf("couldn't reset the tile watermark: %w", err)
		}
		durable = 0
	} else if durable, err = durableTiles(l.dir, durable, cp.Size); err != nil {
		return nil, err
	}
	// The packs as found, before the tiles past the watermark are cut off
	// to be written again: their tiles are of records that were durable,
	// so the log must still hold them.
	packs, err := statPacks(l.dir)
	if err != nil {
		return nil, err
	}
	if err := l.cutPacks(durable); err != nil {
		return nil, err
	}
	snap := l.startSnapshot(firsts, durable)
	// Partial tile files of trees before the durable one, left by a crash
	// or by the sync of an earlier run, go at the next sync; full ones of
	// the old layout once the packs are durable.
	files := listTileFiles(l.dir)
	l.partialFiles = files.partial
	l.builder = merkle.NewBuilder()
	if snap != nil {
		l.builder, l.seen = snap.tree, snap.filter
	}
	var root merkle.Hash
	// atSize checks the tree at the watermark's size and keeps its root at
	// the checkpoint's.
	atSize := func() error {
		size := l.builder.Size()
		if size == durable {
			for _, t := range l.builder.Partial() {
				if err := l.compareTile(t.ID, t.Data); err != nil {
					return err
				}
			}
		}
		if size == cp.Size {
			var err error
			if root, err = l.builder.Root(); err != nil {
				return err
			}
		}
		return nil
	}
	started, lastReport, from := time.Now(), time.Now(), l.builder.Size()
	// apply takes one record, hashed and with its key read (in parallel,
	// by the batch below), into the tree and the key memory, in log order.
	apply := func(r *recoveredRecord) error {
		idx := r.idx
		if idx%4096 == 0 && time.Since(lastReport) > 5*time.Second {
			l.log.Info("recovering the log: re-hashing every record", "records", idx,
				"per_second", int(float64(idx-from)/time.Since(started).Seconds()))
			lastReport = time.Now()
		}
		if r.keyErr != nil {
			return fmt.Errorf("%w: record %d: %v", ErrTampered, idx, r.keyErr)
		}
		if r.key != "" {
			l.seen.Add(r.hash)
			if idx >= l.opts.RecentFrom {
				l.recent[r.hash] = idx
				l.recentQ = append(l.recentQ, keyAt{r.hash, idx})
			}
		}
		full, err := l.builder.Append(r.leaf)
		if err != nil {
			return err
		}
		for _, t := range full {
			if end := uint64(tileRecord(t.ID, merkle.TileWidth)); end <= durable {
				// A complete pack of such tiles was sealed by cutPacks.
				if err := l.compareTile(t.ID, t.Data); err != nil {
					return err
				}
				continue
			}
			if err := l.writeTile(t); err != nil {
				return fmt.Errorf("couldn't write tile %s: %w", t.ID.Path(), err)
			}
		}
		return atSize()
	}
	batch := &orderedBatch[recoveredRecord]{apply: apply, prep: func(r *recoveredRecord) {
		r.leaf = merkle.LeafHash(r.rec)
		if l.opts.KeyOf != nil {
			if r.key, r.keyErr = l.opts.KeyOf(r.rec); r.key != "" {
				r.hash = l.hasher.hash(r.key)
			}
		}
	}}
	// Whatever ends the start, nothing may go on applying records after.
	defer batch.wait()
	// A frame's record is valid only during the visit.
	visit := func(idx uint64, rec []byte) error {
		return batch.add(recoveredRecord{idx: idx, rec: batch.arena.copy(rec)}, len(rec))
	}
	// The last segment is the active one: lift its append-only (or, had a
	// crash come right after it was sealed, immutable) attribute so that an
	// unfinished tail can be cut off; it is set again below.
	lastPath := filepath.Join(l.dir, segDir, segmentName(firsts[len(firsts)-1]))
	if err := l.seal.unlock(lastPath); err != nil {
		return nil, fmt.Errorf("couldn't lift the append-only attribute of the active segment %s: %w", filepath.Base(lastPath), err)
	}
	if snap != nil {
		if err := atSize(); err != nil {
			return nil, err
		}
	}
	var n uint64
	for i, first := range firsts {
		last := i == len(firsts)-1
		if first != n {
			return nil, fmt.Errorf("%w: segment %s starts at record %d, but the previous segments end at record %d",
				ErrTampered, segmentName(first), first, n)
		}
		var seg *segment
		var err error
		switch {
		case snap != nil && i < len(snap.segs)-1:
			// Complete below the snapshot: not read.
			next := snap.segs[i+1].first
			seg, err = l.openComplete(first, snap.segs[i].end, next-first, snap.bundlesIn(first, next))
		case snap != nil && i == len(snap.segs)-1:
			seg, err = l.scanSegment(first, last, max(cp.Size, durable),
				&resumePoint{snap.segs[i].end, snap.size, snap.bundlesIn(first, snap.size)}, visit)
		default:
			seg, err = l.scanSegment(first, last, max(cp.Size, durable), nil, visit)
		}
		if err != nil {
			// The batch in the background, done, may name an earlier
			// record at fault.
			if berr := batch.wait(); berr != nil {
				return nil, berr
			}
			return nil, err
		}
		l.segs = append(l.segs, seg)
		n += seg.count.Load()
		if !last {
			// Sealed when it was completed, unless sealing was off then or
			// the process stopped before it could.
			if err := l.seal.seal(seg.path); err != nil {
				l.log.Warn("couldn't seal a complete segment", "err", err)
			}
		}
	}
	if err := batch.flush(); err != nil {
		return nil, err
	}
	if n < cp.Size {
		return nil, fmt.Errorf("%w: the log holds %d records but the last signed checkpoint covers %d: records %d to %d are missing",
			ErrTampered, n, cp.Size, n, cp.Size-1)
	}
	if durable > n {
		return nil, fmt.Errorf("%w: tiles were made durable for %d records, but the log holds only %d", ErrTampered, durable, n)
	}
	// The same when the watermark file is gone too: the packs held tiles
	// only of records that were durable.
	for _, p := range packs {
		if err := checkPackSize(p.rel, p.size, p.level, p.k, n); err != nil {
			return nil, fmt.Errorf("%w: %v: records were removed; restore the data directory from a backup", ErrTampered, err)
		}
	}
	if cp.Size > 0 && root != cp.Hash {
		hint := ""
		if snap != nil {
			hint = fmt.Sprintf(" (the start took the first %d from the start-up snapshot: remove %s to have every record read)", snap.size, snapshotFile)
		}
		return nil, fmt.Errorf("%w: the first %d records do not match the last signed checkpoint%s; run `aitrail verify --data` for details",
			ErrTampered, cp.Size, hint)
	}
	last := l.segs[len(l.segs)-1]
	f, err := os.OpenFile(last.path, os.O_RDWR|l.appendFlag(), 0)
	if err != nil {
		return nil, fmt.Errorf("couldn't open active segment: %w", err)
	}
	l.seal.appendOnly(last.path)
	l.active, l.activeSize = f, last.size.Load()
	if err := l.publishRecovered(cp); err != nil {
		return nil, err
	}
	l.removeOldTiles(files)
	if snap == nil {
		return nil, nil
	}
	l.snapSize.Store(snap.size)
	l.log.Info("started from the start-up snapshot", "records", snap.size, "read", n-snap.size,
		"seconds", time.Since(started).Seconds())
	return &belowSnapshot{snap.size, snap.builder}, nil
}

// startSnapshot returns the start-up snapshot if there is one the start can
// use with the log on disk, or nil, with a warning saying why not.
func (l *Ledger) startSnapshot(firsts []uint64, durable uint64) *startSnapshot {
	if l.opts.SnapshotEvery < 0 {
		return nil
	}
	snap, err := l.readSnapshot()
	if err == nil && snap != nil {
		err = snap.fits(l.dir, firsts, durable)
	}
	if err != nil {
		l.log.Warn("not using the start-up snapshot: reading every record", "file", snapshotFile, "reason", err)
		return nil
	}
	return snap
}

// resumePoint is where a start from a snapshot begins to read a segment:
// the offset and index of the snapshot's first record beyond it, and the
// offsets of the entry bundles in the segment before it.
type resumePoint struct {
	off     int64
	idx     uint64
	bundles []int64
}

// openComplete opens a complete segment below the start's snapshot, of
// size bytes and count records, without reading its records.
func (l *Ledger) openComplete(first uint64, size int64, count uint64, bundles []int64) (*segment, error) {
	path := filepath.Join(l.dir, segDir, segmentName(first))
	f, _, err := openSegmentFile(path)
	if err != nil {
		return nil, err
	}
	if err := checkSegHeader(f, first); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: segment %s: %v", ErrTampered, segmentName(first), err)
	}
	seg := &segment{first: first, path: path, f: f}
	seg.count.Store(count)
	seg.size.Store(size)
	for _, off := range bundles {
		l.bundles = append(l.bundles, bundleLoc{seg, off})
	}
	return seg, nil
}

// rememberKeys remembers the keys of the records from the query index's
// cursor to to-1, which the start took from its snapshot, as it remembers
// those it reads: the index has not indexed them yet. Those the tail holds
// (loadTail read and checked them) are taken from it; the others are read
// back and checked against their leaf hashes first.
func (l *Ledger) rememberKeys(to uint64) error {
	from := l.opts.RecentFrom
	if l.opts.KeyOf == nil || from >= to {
		return nil
	}
	var q []keyAt
	add := func(entries []Entry) error {
		for _, e := range entries {
			key, err := l.opts.KeyOf(e.Data)
			if err != nil {
				return fmt.Errorf("%w: record %d: %v", ErrTampered, e.Index, err)
			}
			if key == "" {
				continue
			}
			h := l.hasher.hash(key)
			if _, ok := l.recent[h]; !ok {
				l.recent[h] = e.Index
			}
			q = append(q, keyAt{h, e.Index})
		}
		return nil
	}
	tailFrom := max(from, min(to, l.tail.first))
	err := l.readChecked(from, tailFrom, add)
	if tailFrom < to && err == nil {
		entries, ok := l.tail.get(tailFrom, to-tailFrom)
		if !ok {
			return fmt.Errorf("records %d to %d are not in memory", tailFrom, to-1)
		}
		err = add(entries)
	}
	if err != nil {
		return fmt.Errorf("couldn't read the keys of records %d to %d: %w", from, to-1, err)
	}
	l.recentQ = append(q, l.recentQ...)
	return nil
}

// recoveredRecord is one record read at start, with what the work that can
// be done in parallel (orderedBatch.prep) made of it.
type recoveredRecord struct {
	idx    uint64
	rec    []byte
	leaf   merkle.Hash
	key    string
	hash   keyHash // of key
	keyErr error
}

// publishRecovered publishes the recovered tree, signing a checkpoint for it
// unless the stored one already covers it, and makes the tiles it wrote
// durable.
func (l *Ledger) publishRecovered(cp merkle.Checkpoint) error {
	pub, err := l.sign()
	if err != nil {
		return err
	}
	l.pub.Store(pub)
	if cp.Size != pub.size || l.unsynced.Load() > 0 {
		if err := l.syncTiles(); err != nil {
			return fmt.Errorf("couldn't make the recovered tiles durable: %w", err)
		}
	}
	return nil
}

// readCheckpoint reads and verifies the stored checkpoint. A missing file is
// an empty checkpoint (a new log, or a crash before the first sync).
func (l *Ledger) readCheckpoint() (merkle.Checkpoint, error) {
	data, err := os.ReadFile(filepath.Join(l.dir, checkpointFile))
	if errors.Is(err, os.ErrNotExist) {
		return merkle.Checkpoint{Origin: l.opts.Origin}, nil
	}
	if err != nil {
		return merkle.Checkpoint{}, fmt.Errorf("couldn't read checkpoint: %w", err)
	}
	cp, err := merkle.OpenCheckpoint(data, l.opts.Verifier)
	if err != nil {
		return merkle.Checkpoint{}, fmt.Errorf("%w: the stored checkpoint does not verify with the log's key: %v", ErrTampered, err)
	}
	return cp, nil
}

// readWatermarkFile reads the number of records whose tiles are durable in
// the ledger directory dir (0 when the file is missing).
// durableTiles returns the size below which tiles are durable: the
// watermark read, or, when the watermark file is missing but tile packs
// are there, the checkpoint file's size. The checkpoint file is written
// only after the tiles of its tree were synced (syncTiles), so a watermark
// deleted alone does not turn the check of the tiles off, nor let the
// server cut and rebuild them. Without packs either (log/tile deleted with
// the watermark, to have every tile rebuilt), it is 0.
func durableTiles(dir string, watermark, checkpoint uint64) (uint64, error) {
	_, err := os.Stat(filepath.Join(dir, watermarkFile))
	switch {
	case err == nil:
		return watermark, nil
	case !errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("couldn't read tile watermark: %w", err)
	}
	packs, err := statPacks(dir)
	if err != nil || len(packs) == 0 {
		return 0, err
	}
	return checkpoint, nil
}

func readWatermarkFile(dir string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(dir, watermarkFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("couldn't read tile watermark: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: bad tile watermark file: %q", ErrTampered, data)
	}
	return n, nil
}

// scanSegment reads one segment's frames, checking each checksum, and
// records where every 256th record starts. In the last segment, damage at
// or after the checkpoint's size is an incomplete tail that was never
// acknowledged: it is cut off. Any other damage is an error naming the
// record.
// From a resume point, it reads only the frames from there on.
func (l *Ledger) scanSegment(first uint64, last bool, cpSize uint64, from *resumePoint, visit func(uint64, []byte) error) (*segment, error) {
	path := filepath.Join(l.dir, segDir, segmentName(first))
	f, size, err := openSegmentFile(path)
	if err != nil {
		return nil, err
	}
	seg := &segment{first: first, path: path, f: f}
	start, idx := int64(segHeaderSize), first
	if from != nil {
		start, idx = from.off, from.idx
		for _, off := range from.bundles {
			l.bundles = append(l.bundles, bundleLoc{seg, off})
		}
	}
	if size < segHeaderSize && last && first >= cpSize {
		// Crashed while creating the segment: start it again.
		f.Close()
		if err := os.Remove(path); err != nil {
			return nil, err
		}
		seg, w, err := l.createSegment(first)
		if err != nil {
			return nil, err
		}
		w.Close()
		return seg, nil
	}
	if err := checkSegHeader(f, first); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: segment %s: %v", ErrTampered, segmentName(first), err)
	}
	if last {
		// Find where the last complete group commit ends: everything after
		// it belongs to a commit whose fsync never finished, so it was never
		// acknowledged, and is cut off whole. Damage before that point, or
		// covered by the signed checkpoint, is an error.
		// Zeros after it were written ahead of the commits (prealloc.go):
		// they are cut off too, quietly.
		end, dataEnd, endIdx, bad, reason, err := completeCommits(f, size, start, idx)
		if err != nil {
			f.Close()
			return nil, err
		}
		if end < dataEnd {
			if endIdx < cpSize {
				f.Close()
				return nil, fmt.Errorf("%w: record %d (segment %s): %v; the signed checkpoint covers %d records",
					ErrTampered, bad, segmentName(first), reason, cpSize)
			}
			// Commits are written one after another, each only once the
			// one before is durable: only the last can be torn. Damage
			// with two commit ends after it is in records that were
			// acknowledged, whatever the checkpoint file (written lazily)
			// covers.
			n, err := commitEndsAfter(f, size, end, 2)
			if err != nil {
				f.Close()
				return nil, err
			}
			if n >= 2 {
				f.Close()
				return nil, fmt.Errorf("%w: record %d (segment %s): %v, and complete commits follow it: those records were acknowledged; restore the data directory from a backup",
					ErrTampered, bad, segmentName(first), reason)
			}
			l.log.Warn("cutting off an incomplete commit that was never acknowledged",
				"segment", segmentName(first), "first_record", endIdx, "bytes", dataEnd-end, "reason", reason)
		}
		if end < size {
			if err := cutTail(path, end); err != nil {
				f.Close()
				return nil, fmt.Errorf("couldn't cut off incomplete tail: %w", err)
			}
			size = end
		}
	}
	sc := newFrameScanner(f, size, start).readingAhead(f, true)
	for {
		fr, err := sc.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: record %d (segment %s, offset %d): %v", ErrTampered, idx, segmentName(first), sc.off, err)
		}
		if idx%merkle.TileWidth == 0 {
			l.bundles = append(l.bundles, bundleLoc{seg, fr.off})
		}
		if err := visit(idx, fr.record); err != nil {
			f.Close()
			return nil, err
		}
		idx++
	}
	seg.count.Store(idx - first)
	seg.size.Store(size)
	return seg, nil
}

// completeCommits scans a segment from offset start, where record first
// starts (a commit's first record), for the end of its last complete group
// commit: the offset after the last frame marked as ending a commit, the
// offset where the data ends (before a rest of zeros, if any), the index
// of the record at end, the index of the first record that is damaged or
// incomplete, and why the data after end (if any) is not a complete commit.
func completeCommits(f *os.File, size, start int64, first uint64) (end, dataEnd int64, endIdx, bad uint64, reason string, err error) {
	// The scan of the segment that follows reads the same bytes: they stay
	// cached for it, and it drops them.
	sc := newFrameScanner(f, size, start).readingAhead(f, false)
	sc.zeroTail = true
	end, endIdx, idx := start, first, first
	for {
		fr, err := sc.next()
		if err == io.EOF {
			if end < sc.size {
				return end, sc.size, endIdx, endIdx, "the last commit has no end marker", nil
			}
			return end, sc.size, endIdx, idx, "", nil
		}
		if err != nil {
			if errors.Is(err, errTruncated) || errors.Is(err, errChecksum) || errors.Is(err, errFrameSize) {
				return end, size, endIdx, idx, err.Error(), nil
			}
			return 0, 0, 0, 0, "", fmt.Errorf("couldn't read segment: %w", err)
		}
		idx++
		if fr.commitEnd {
			end, endIdx = sc.off, idx
		}
	}
}

// commitEndsAfter counts, up to limit, the ends of commits among the
// frames that check out between offset from and size, past damage: after
// a frame that does not, it looks byte by byte for the next one that does
// (a frame header of plausible lengths whose checksum holds; zeros are
// skipped whole). A commit torn by a crash leaves at most one commit end
// after the last complete commit: the pages of its one write that reached
// the disk may hold its last frame, with a hole of zeros before it.
func commitEndsAfter(f *os.File, size, from int64, limit int) (int, error) {
	sc := newFrameScanner(f, size, from)
	ends := 0
	for off := from; off < size && ends < limit; {
		h, err := sc.window(off, frameHeaderSize)
		if errors.Is(err, errTruncated) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("couldn't read segment: %w", err)
		}
		if isZero(h) {
			off += frameHeaderSize
			continue
		}
		sc.off = off
		fr, err := sc.next()
		switch {
		case err == nil:
			if fr.commitEnd {
				ends++
			}
			off = sc.off
		case errors.Is(err, errTruncated) || errors.Is(err, errChecksum) || errors.Is(err, errFrameSize) || err == io.EOF:
			off++
		default:
			return 0, fmt.Errorf("couldn't read segment: %w", err)
		}
	}
	return ends, nil
}

func cutTail(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// compareTile checks a stored tile against the tile the records give.
func (l *Ledger) compareTile(id merkle.TileID, want []byte) error {
	read := readPackedTile
	if id.W < merkle.TileWidth {
		read = readTileFile
	}
	data, err := read(l.dir, id)
	if errors.Is(err, fs.ErrNotExist) && id.W < merkle.TileWidth {
		// A partial tile is derived from the records, which are checked
		// against the checkpoint: one that is gone is written again at
		// the next sync (verify --data does not miss it either).
		l.log.Warn("a partial tile of the durable tree is missing; it is written again", "tile", id.Path())
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: record %d: tile %s, made durable before, cannot be read: %v", ErrTampered, tileRecord(id, 0), storedName(id), err)
	}
	if k := firstDiff(data, want); k >= 0 {
		return fmt.Errorf("%w: record %d: tile %s differs from the tree the records give", ErrTampered, tileRecord(id, k), storedName(id))
	}
	return nil
}

// storedName names a tile and, for a full one, where in its pack it is.
func storedName(id merkle.TileID) string {
	if id.W == merkle.TileWidth {
		return tileName(id)
	}
	return id.Path()
}
