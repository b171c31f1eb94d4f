package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/aitrail/aitrail/internal/merkle"
)

// Entries implements Source: up to max committed records from index from.
// The newest records (Options.TailEntries) come from memory, with the
// Item.Value they were appended with; older ones are read from the segment
// files, with a nil Value; those share memory in chunks of 256 KiB, so a
// caller that keeps one record for long should copy it. Callers must not
// modify the entries' Data.
func (l *Ledger) Entries(ctx context.Context, from uint64, max int) ([]Entry, error) {
	size := l.Size()
	if from >= size || max <= 0 {
		return nil, nil
	}
	count := min(uint64(max), size-from)
	l.mu.RLock()
	out, ok := l.tail.get(from, count)
	l.mu.RUnlock()
	if ok {
		return out, nil
	}
	out = make([]Entry, 0, min(count, 1<<16))
	held := 0 // bytes of records in out
	// Records are copied into shared chunks rather than one allocation
	// each: a follower takes tens of thousands at once.
	var copies arena
	err := l.scan(from, count, true, func(idx uint64, fr frame) error {
		if len(out) > 0 && held+len(fr.record) > maxEntriesBytes {
			return errEnough
		}
		held += len(fr.record)
		out = append(out, Entry{Index: idx, Data: copies.copy(fr.record), Offset: fr.off})
		return ctx.Err()
	})
	if err == errEnough {
		err = nil
	}
	return out, err
}

// Recent returns the committed records from index from on, with the
// Item.Value they were appended with, if the ledger still holds all of them
// in memory (Options.TailEntries); ok is false otherwise. It never reads a
// file: the query index uses it to find records it has not applied yet.
func (l *Ledger) Recent(from uint64) (entries []Entry, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	switch {
	case len(l.tail.ring) == 0:
		return nil, false
	case from >= l.tail.next: // the newest record held is the newest committed
		return nil, true
	}
	return l.tail.get(from, l.tail.next-from)
}

// maxEntriesBytes bounds the records one call of Entries copies from the
// segment files (at least one is returned), so that a follower far behind
// may ask for many small records at once without holding as many large
// ones. A variable for tests.
var maxEntriesBytes = 32 << 20

// errEnough stops Entries' scan once it holds maxEntriesBytes.
var errEnough = errors.New("enough records")

// Wait implements Source: it returns when the log holds more than n records.
func (l *Ledger) Wait(ctx context.Context, n uint64) error {
	for {
		l.mu.RLock()
		ch := l.sizeCh
		l.mu.RUnlock()
		if l.Size() > n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.stop:
			return ErrClosed
		}
	}
}

// readChunk is how much ReadRecords reads at a time: a few records, so that
// records near each other (a page of a query) take one read.
const readChunk = 64 << 10

// RecordError reports a record that ReadRecords could not give back intact:
// the bytes at its location do not hash to its leaf, or are not a record.
// Either the segment file was altered or the location (from a query index)
// is wrong. It wraps ErrTampered.
type RecordError struct {
	Index   uint64
	Offset  int64
	Problem string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("%v: record %d at offset %d %s", ErrTampered, e.Index, e.Offset, e.Problem)
}

func (e *RecordError) Unwrap() error { return ErrTampered }

// ReadRecords returns the records at locs, in the same order, each from
// memory if it is among the newest (Options.TailEntries) or else read from
// its segment at its offset. keep, if not nil, is asked about each record
// before it is checked: a record it does not keep
// is left nil, so that a search reading many records to return a few checks
// only those. A record read from a file and kept is checked against the
// tree: one that does not hash to its leaf, because the file was altered or
// the location is not this log's, is reported as a *RecordError. An index
// beyond the log is ErrNotFound. Callers must not modify the records.
func (l *Ledger) ReadRecords(locs []Loc, keep func(record []byte) bool) ([][]byte, error) {
	out := make([][]byte, len(locs))
	// Leaf hashes are not remembered in l.hashes: that cache is for the
	// proofs' interior hashes, and one query could flood it with leaves.
	p := l.pub.Load()
	size, hr := p.size, merkle.TileHashReader(p.size, l.tileReader(p.size, p.partial), nil)
	var fromFiles []int // positions in locs of the records read from files
	l.mu.RLock()
	segs := l.segs
	for i, loc := range locs {
		if loc.Index >= size {
			l.mu.RUnlock()
			return nil, fmt.Errorf("%w: record %d", ErrNotFound, loc.Index)
		}
		if rec, ok := l.tail.record(loc.Index); ok {
			out[i] = rec
		} else {
			fromFiles = append(fromFiles, i)
		}
	}
	l.mu.RUnlock()
	if keep != nil { // not under l.mu, which commits wait for
		for i, rec := range out {
			if rec != nil && !keep(rec) {
				out[i] = nil
			}
		}
	}
	if len(fromFiles) == 0 {
		return out, nil
	}

	scanners := map[*segment]*frameScanner{}
	var check []int // positions in locs of the records read from files and kept
	for _, i := range fromFiles {
		loc := locs[i]
		si := sort.Search(len(segs), func(k int) bool { return segs[k].first > loc.Index }) - 1
		if si < 0 || loc.Offset < segHeaderSize {
			return nil, &RecordError{Index: loc.Index, Offset: loc.Offset, Problem: "is not there"}
		}
		seg := segs[si]
		sc := scanners[seg]
		if sc == nil {
			sc = newFrameScanner(seg.f, seg.size.Load(), loc.Offset)
			sc.chunk, sc.skipBlobs = readChunk, true
			scanners[seg] = sc
		}
		sc.off = loc.Offset
		fr, err := sc.next()
		if err != nil {
			return nil, &RecordError{Index: loc.Index, Offset: loc.Offset, Problem: fmt.Sprintf("of segment %s: %v", segmentName(seg.first), err)}
		}
		if keep == nil || keep(fr.record) {
			out[i] = append([]byte(nil), fr.record...)
			check = append(check, i)
		}
	}
	hashIdx := make([]int64, len(check))
	for j, i := range check {
		hashIdx[j] = tlog.StoredHashIndex(0, int64(locs[i].Index))
	}
	leaves, err := hr.ReadHashes(hashIdx)
	if err != nil {
		return nil, fmt.Errorf("couldn't read leaf hashes: %w", err)
	}
	for j, i := range check {
		if merkle.LeafHash(out[i]) != leaves[j] {
			return nil, &RecordError{Index: locs[i].Index, Offset: locs[i].Offset, Problem: "does not match its leaf hash"}
		}
	}
	return out, nil
}

// Blob returns the blob stored beside record index (nil if it has none).
func (l *Ledger) Blob(index uint64) ([]byte, error) {
	if index >= l.Size() {
		return nil, fmt.Errorf("%w: record %d", ErrNotFound, index)
	}
	var blob []byte
	err := l.scan(index, 1, false, func(_ uint64, fr frame) error {
		blob = append([]byte(nil), fr.blob...)
		return nil
	})
	return blob, err
}

// scanAheadRecords is the least count for which scan has the kernel read
// ahead: for a blob or an entry bundle it would read far more than needed.
const scanAheadRecords = 4096

// scan calls fn for count records from index from, reading the segments
// sequentially. With skipBlobs, blobs are neither read nor checksummed.
// The frame passed to fn is valid only during the call.
func (l *Ledger) scan(from, count uint64, skipBlobs bool, fn func(uint64, frame) error) error {
	if count == 0 {
		return nil
	}
	l.mu.RLock()
	segs := l.segs
	var start bundleLoc
	if b := from / merkle.TileWidth; b < uint64(len(l.bundles)) {
		start = l.bundles[b]
	}
	l.mu.RUnlock()

	si := sort.Search(len(segs), func(i int) bool { return segs[i].first > from }) - 1
	if si < 0 {
		return fmt.Errorf("%w: record %d", ErrNotFound, from)
	}
	seg := segs[si]
	off, idx := int64(segHeaderSize), seg.first
	if start.seg == seg {
		off, idx = start.off, from-from%merkle.TileWidth
	}
	end := from + count
	for {
		sc := newFrameScanner(seg.f, seg.size.Load(), off)
		if count >= scanAheadRecords {
			sc.readingAhead(seg.f, true)
		}
		sc.skipBlobs = skipBlobs
		for idx < end {
			// Skipped frames before from need no checksum.
			sc.skipBlobs = skipBlobs || idx < from
			fr, err := sc.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("%w: record %d (segment %s): %v", ErrTampered, idx, segmentName(seg.first), err)
			}
			if idx >= from {
				if err := fn(idx, fr); err != nil {
					return err
				}
			}
			idx++
		}
		if idx >= end {
			return nil
		}
		si++
		if si >= len(segs) {
			return fmt.Errorf("%w: record %d", ErrNotFound, idx)
		}
		seg, off = segs[si], segHeaderSize
		if seg.first != idx {
			return fmt.Errorf("%w: segment %s starts at %d, expected %d", ErrTampered, segmentName(seg.first), seg.first, idx)
		}
	}
}

// Tile returns a C2SP hash tile of the published tree: a full tile, or a
// prefix of the tile at the tree's right edge. Tiles beyond the tree are
// ErrNotFound.
func (l *Ledger) Tile(id merkle.TileID) ([]byte, error) {
	p := l.pub.Load()
	return l.tileReader(p.size, p.partial)(id)
}

// tileReader reads tiles of the tree of size n whose partial tiles are
// partial.
func (l *Ledger) tileReader(n uint64, partial []merkle.Tile) merkle.TileReader {
	return func(id merkle.TileID) ([]byte, error) {
		if id.Level < 0 || id.Level > 63 || id.W < 1 || id.W > merkle.TileWidth {
			return nil, fmt.Errorf("%w: tile %s", ErrNotFound, id.Path())
		}
		avail := n >> uint(merkle.TileHeight*id.Level)
		switch {
		case id.N >= avail/merkle.TileWidth+1:
			// Beyond the tree (also where (N+1)·256 would overflow).
		case (id.N+1)*merkle.TileWidth <= avail:
			full := id
			full.W = merkle.TileWidth
			data, err := l.readFullTile(full)
			if err != nil {
				return nil, fmt.Errorf("couldn't read tile %s: %w", full.Path(), err)
			}
			if len(data) != merkle.TileWidth*merkle.HashSize {
				return nil, fmt.Errorf("%w: tile %s has %d bytes", ErrTampered, full.Path(), len(data))
			}
			return data[:id.W*merkle.HashSize], nil
		case id.N == avail/merkle.TileWidth && uint64(id.W) <= avail%merkle.TileWidth:
			for _, t := range partial {
				if t.ID.Level == id.Level && t.ID.N == id.N {
					return t.Data[:id.W*merkle.HashSize], nil
				}
			}
			return nil, fmt.Errorf("partial tile %s missing", id.Path())
		}
		return nil, fmt.Errorf("%w: tile %s", ErrNotFound, id.Path())
	}
}

// Bundle returns a C2SP entry bundle: each record of the bundle prefixed by
// its length as a big-endian uint16.
func (l *Ledger) Bundle(n uint64, w int) ([]byte, error) {
	size := l.Size()
	first := n * merkle.TileWidth
	if w < 1 || w > merkle.TileWidth || first+uint64(w) > size || n > size {
		return nil, fmt.Errorf("%w: entry bundle %d.p/%d", ErrNotFound, n, w)
	}
	var out []byte
	err := l.scan(first, uint64(w), true, func(_ uint64, fr frame) error {
		out = binary.BigEndian.AppendUint16(out, uint16(len(fr.record)))
		out = append(out, fr.record...)
		return nil
	})
	return out, err
}

// hashReader reads hashes of the published tree.
func (l *Ledger) hashReader() (uint64, tlog.HashReader) {
	p := l.pub.Load()
	return p.size, merkle.TileHashReader(p.size, l.tileReader(p.size, p.partial), &l.hashes)
}

// InclusionProof proves record index is in the tree of the given size.
func (l *Ledger) InclusionProof(index, size uint64) ([]merkle.Hash, error) {
	n, hr := l.hashReader()
	if size > n || index >= size {
		return nil, fmt.Errorf("%w: no record %d in a tree of size %d (log size %d)", ErrNotFound, index, size, n)
	}
	return tlog.ProveRecord(int64(size), int64(index), hr)
}

// ConsistencyProof proves the tree of size from is a prefix of the tree of
// size to.
func (l *Ledger) ConsistencyProof(from, to uint64) ([]merkle.Hash, error) {
	n, hr := l.hashReader()
	if to > n || from > to {
		return nil, fmt.Errorf("%w: no consistency proof from %d to %d (log size %d)", ErrNotFound, from, to, n)
	}
	if from == 0 || from == to {
		return []merkle.Hash{}, nil
	}
	return tlog.ProveTree(int64(to), int64(from), hr)
}

// LeafHash returns the leaf hash of record index.
func (l *Ledger) LeafHash(index uint64) (merkle.Hash, error) {
	n, hr := l.hashReader()
	if index >= n {
		return merkle.Hash{}, fmt.Errorf("%w: record %d", ErrNotFound, index)
	}
	h, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, int64(index))})
	if err != nil {
		return merkle.Hash{}, err
	}
	return h[0], nil
}

// tileCacheSize bounds the full tiles kept in memory (8 KiB each, 8 MiB in all).
const tileCacheSize = 1024

// readFullTile reads a full tile, through a cache: full tiles never change.
func (l *Ledger) readFullTile(id merkle.TileID) ([]byte, error) {
	if l.tiles != nil {
		if data, ok := l.tiles.get(id); ok {
			return data, nil
		}
	}
	l.cacheMu.Lock()
	data, ok := l.tileCache[id]
	l.cacheMu.Unlock()
	if ok {
		return data, nil
	}
	data, err := readPackedTile(l.dir, id)
	if err != nil || len(data) != merkle.TileWidth*merkle.HashSize {
		return data, err
	}
	l.cacheMu.Lock()
	if l.tileCache == nil || len(l.tileCache) >= tileCacheSize {
		l.tileCache = map[merkle.TileID][]byte{}
	}
	l.tileCache[id] = data
	l.cacheMu.Unlock()
	return data, nil
}
