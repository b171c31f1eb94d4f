package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/aitrail/aitrail/internal/ledger"
)

// The index finds events by id through records_id, which is partitioned:
// its entries are ordered first by the part of the log the record is in
// (idPart, parts of partSize records), then by id. A B-tree over the ids
// alone takes ids in no order (OTLP trace and span ids, UUIDv4s) anywhere
// in it, so that once it outgrows a transaction every new record dirtied a
// page of its own: 1.5 million records with UUIDv4 ids were indexed at
// 21,630 records/s, against 168,896 with time-ordered ids. Within a part,
// the pages a transaction dirties are those of one part, a few dozen,
// whatever the order of the ids.
//
// A lookup then has a part to probe for each part that may hold the id.
// Each complete part has a Bloom filter of its ids, kept in memory (and in
// id_filters, written in the transaction that indexes the first record
// after the part), so that a lookup probes the parts whose filter may hold
// the id (about 1 % of the others, falsely) and the open part, which has
// none yet: without the filters, an id not in the index cost a probe of
// every part, and the ledger asks about such ids (its own filter's false
// positives) a few times a second under ingest.
const (
	partBits = 14
	partSize = 1 << partBits
	// idPart is the expression of the part a row is in. Queries must use
	// the same text for SQLite to match it to the index.
	idPart = "(idx >> 14)"
	// filterBits and filterHashes size each part's filter: 10 bits and 7
	// hashes per id give 0.8 % false positives, in 20 KiB a part (1.25
	// bytes a record).
	filterBits   = partSize * 10
	filterHashes = 7
)

// idFilters holds the filters of the complete parts.
type idFilters struct {
	mu    sync.RWMutex
	parts []*bloom.BloomFilter // by part; nil where none is known (probed)
}

// set publishes the filters of complete parts.
func (fs *idFilters) set(parts []*partIDs) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, p := range parts {
		for int64(len(fs.parts)) <= p.part {
			fs.parts = append(fs.parts, nil)
		}
		fs.parts[p.part] = p.ids
	}
}

func (fs *idFilters) clear() {
	fs.mu.Lock()
	fs.parts = nil
	fs.mu.Unlock()
}

// candidates returns the parts from bottom to top that may hold the id
// whose bloom.Locations are locs, in ascending order.
func (fs *idFilters) candidates(bottom, top int64, locs []uint64) []int64 {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	var out []int64
	for p := bottom; p <= top; p++ {
		if p >= int64(len(fs.parts)) || fs.parts[p] == nil || fs.parts[p].TestLocations(locs) {
			out = append(out, p)
		}
	}
	return out
}

// bytes returns the memory the filters take.
func (fs *idFilters) bytes() int64 {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	var n int64
	for _, f := range fs.parts {
		if f != nil {
			n += int64(f.Cap() / 8)
		}
	}
	return n
}

// partIDs is the filter of the ids of one part as far as next (the log
// index after the last id added).
type partIDs struct {
	part int64
	next uint64
	ids  *bloom.BloomFilter
}

func newPartIDs(part int64) *partIDs {
	return &partIDs{part: part, next: uint64(part) << partBits, ids: bloom.New(filterBits, filterHashes)}
}

// openPartIDs returns the filter of the part that holds log index cursor,
// with the ids of the rows before cursor: last, the last Apply's, if it
// ended there, else rebuilt from the rows.
func openPartIDs(w *conn, last *partIDs, cursor uint64) (*partIDs, error) {
	part := int64(cursor >> partBits)
	if last != nil && last.part == part && last.next == cursor {
		return last, nil
	}
	p := newPartIDs(part)
	p.next = cursor
	if cursor&(partSize-1) == 0 {
		return p, nil
	}
	err := w.scanRange("SELECT id FROM records WHERE idx >= ? AND idx < ?", part<<partBits, int64(cursor), func(s *stmt) {
		p.ids.AddString(s.columnText(0))
	})
	if err != nil {
		return nil, fmt.Errorf("couldn't read the ids of part %d: %w", part, err)
	}
	return p, nil
}

// addIDs adds the ids of rows, which follow the rows p has, to p, and
// writes the filter of each part they complete. It returns the filter of
// the part the last row is in, and those of the parts completed, to be
// published once the transaction has committed.
func addIDs(w *conn, p *partIDs, rows []row) (*partIDs, []*partIDs, error) {
	var done []*partIDs
	for i := range rows {
		if part := rows[i].idx >> partBits; part != p.part {
			bits, err := p.ids.MarshalBinary()
			if err != nil {
				return nil, nil, err
			}
			s, err := w.prepare("INSERT OR REPLACE INTO id_filters (part, bits) VALUES (?, ?)")
			if err != nil {
				return nil, nil, err
			}
			s.bindInt(1, p.part)
			s.bindBlob(2, bits)
			if _, err := s.exec(); err != nil {
				return nil, nil, fmt.Errorf("couldn't write the id filter of part %d: %w", p.part, err)
			}
			done = append(done, p)
			p = newPartIDs(part)
		}
		p.ids.AddString(rows[i].id)
		p.next = uint64(rows[i].idx) + 1
	}
	return p, done, nil
}

// loadIDFilters reads the filters of the complete parts. One that cannot be
// read is left out: its part is probed.
func (ix *Index) loadIDFilters(ctx context.Context) error {
	rows, err := ix.db.QueryContext(ctx, "SELECT part, bits FROM id_filters ORDER BY part")
	if err != nil {
		return fmt.Errorf("couldn't read id filters: %w", err)
	}
	defer rows.Close()
	var parts []*partIDs
	for rows.Next() {
		var p partIDs
		var bits []byte
		if err := rows.Scan(&p.part, &bits); err != nil {
			return fmt.Errorf("couldn't read id filters: %w", err)
		}
		p.ids = new(bloom.BloomFilter)
		if p.ids.UnmarshalBinary(bits) != nil || p.ids.Cap() != filterBits || p.ids.K() != filterHashes || p.part < 0 {
			continue
		}
		parts = append(parts, &p)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("couldn't read id filters: %w", err)
	}
	ix.ids.set(parts)
	return nil
}

// Key names one event for LookupIDs: ids are unique per tenant.
type Key struct {
	Tenant, ID string
}

// lastPart returns the part of the newest record queries see (the one
// before Visible), and false when they see none. The ledger forgets the
// keys of records only once Apply has made them visible, so a lookup never
// misses a record for starting from here.
func (ix *Index) lastPart() (int64, bool) {
	v := ix.Visible()
	return int64(v-1) >> partBits, v > 0
}

// LookupIDs is LookupID for many events at once, and also says where each
// record is in the log: ingest checks a whole request with it, and reads
// back what it finds. Keys the index does not hold are absent from the
// result. As with LookupID, a miss is not proof of absence while the index
// lags the log.
//
// Ingest asks about keys that are likely to be in the log and, when they
// are, recent (a client sending a batch again): LookupIDs looks through the
// newest part first, then through twice as many parts at a time, each time
// for the keys not found yet, probing the parts that may hold them. Should
// the log hold a key twice, either may be returned.
func (ix *Index) LookupIDs(ctx context.Context, keys []Key) (map[Key]ledger.Loc, error) {
	out := make(map[Key]ledger.Loc)
	top, ok := ix.lastPart()
	if !ok {
		return out, nil
	}
	locs := make(map[string][]uint64, len(keys))
	for _, k := range keys {
		if locs[k.ID] == nil {
			locs[k.ID] = bloom.Locations([]byte(k.ID), filterHashes)
		}
	}
	left := keys
	for width := int64(1); top >= 0 && len(left) > 0; top, width = top-width, width*2 {
		bottom := max(0, top-width+1)
		var probes []probe
		for _, k := range left {
			for _, p := range ix.ids.candidates(bottom, top, locs[k.ID]) {
				probes = append(probes, probe{p, k})
			}
		}
		if err := ix.lookupParts(ctx, probes, out); err != nil {
			return nil, fmt.Errorf("couldn't look up event ids: %w", err)
		}
		var missing []Key
		for _, k := range left {
			if _, ok := out[k]; !ok {
				missing = append(missing, k)
			}
		}
		left = missing
	}
	return out, nil
}

// probe is a part to look for a key in.
type probe struct {
	part int64
	key  Key
}

// lookupChunk bounds the probes, or the parts, in one query (SQLite's
// bound-parameter limit is far above it). A variable for tests.
var lookupChunk = 500

// lookupParts adds to out where the probes find their keys, the lowest log
// index of each where a key is there more than once.
func (ix *Index) lookupParts(ctx context.Context, probes []probe, out map[Key]ledger.Loc) error {
	for chunk := range slices.Chunk(probes, lookupChunk) {
		want := make(map[Key]bool, len(chunk))
		args := make([]any, 0, 2*len(chunk))
		for _, p := range chunk {
			want[p.key] = true
			args = append(args, p.part, p.key.ID)
		}
		rows, err := ix.db.QueryContext(ctx, "WITH probe (part, id) AS (VALUES (?, ?)"+strings.Repeat(", (?, ?)", len(chunk)-1)+
			") SELECT records.tenant, records.id, idx, pos FROM probe CROSS JOIN records WHERE "+
			idPart+" = probe.part AND records.id = probe.id", args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var k Key
			var idx, pos int64
			if err := rows.Scan(&k.Tenant, &k.ID, &idx, &pos); err != nil {
				rows.Close()
				return err
			}
			if loc, ok := out[k]; want[k] && (!ok || uint64(idx) < loc.Index) {
				out[k] = ledger.Loc{Index: uint64(idx), Offset: pos}
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// byID calls find with w selecting the rows of records with this id in
// the parts that may hold it, 500 parts at a time from the oldest, until
// find reports a match or fails.
func (ix *Index) byID(ctx context.Context, id string, find func(w where) (bool, error)) error {
	top, ok := ix.lastPart()
	if !ok {
		return nil
	}
	parts := ix.ids.candidates(0, top, bloom.Locations([]byte(id), filterHashes))
	for chunk := range slices.Chunk(parts, lookupChunk) {
		var w where
		w.add(idPart+" IN "+inList(len(chunk)), anys(chunk)...)
		w.add("id = ?", id)
		if found, err := find(w); err != nil || found {
			return err
		}
	}
	return nil
}

// LookupID returns the log index of the record with this id in tenant, if
// the index holds one (the first, if it holds it twice). Remember that the
// index may lag the log, so a miss is not proof of absence.
func (ix *Index) LookupID(ctx context.Context, tenant, id string) (index uint64, ok bool, err error) {
	var idx int64
	err = ix.byID(ctx, id, func(w where) (bool, error) {
		w.add("tenant = ?", tenant)
		err := ix.db.QueryRowContext(ctx, "SELECT idx FROM records WHERE "+w.sql()+" ORDER BY idx LIMIT 1", w.args...).Scan(&idx)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		ok = err == nil
		return ok, err
	})
	if err != nil {
		return 0, false, fmt.Errorf("couldn't look up event %q: %w", id, err)
	}
	return uint64(idx), ok, nil
}
