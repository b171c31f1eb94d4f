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
//
// Testing every part's filter still cost an id the log does not hold a
// test of each part: 16.5 ms for 100 such ids on 16 million records (977
// parts), about 100 ms on 100 million, and the ledger asks about such ids
// for every false positive of its own key filter, which rise once that is
// full (at about 45 million records). So every complete group of
// groupParts parts (a million records) gets a filter of its own, of all
// its ids (12 bits and 8 hashes an id: about 0.3 % false positives, 1.5
// MiB a group, 1.5 bytes a record), built as Apply indexes the group and
// written with its last rows to id_group_filters; a group Apply did not
// index whole in one run (the index was reopened within it) gets its
// filter from its rows, in the background (buildGroups). A lookup tests a group's filter instead of its parts':
// only when it may hold the id are its parts' filters tested, read from
// id_filters when needed (the parts' filters of groupCacheGroups groups
// are kept): the filters of grouped parts leave memory.
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
	// groupFilterHashes and groupBitsPerID size a group's filter. Its
	// first filterHashes locations are a part filter's (bloom.Locations
	// gives the i-th location whatever the count), so an id's locations
	// are computed once for both.
	groupFilterHashes = 8
	groupBitsPerID    = 12
)

// groupParts is the parts in a group: a variable for tests.
var groupParts int64 = 64

func groupFilterBits() uint { return uint(groupParts * partSize * groupBitsPerID) }

// idFilters holds the filters of the complete parts and groups.
type idFilters struct {
	mu     sync.RWMutex
	parts  []*bloom.BloomFilter // by part; nil where none is known (probed) or its group has a filter
	groups []*bloom.BloomFilter // by group; nil where none is built yet
	// grouped holds the parts' filters of a few groups that have a filter
	// of their own, read back from id_filters for lookups the group's
	// filter did not rule out; a nil entry is a part without one (probed).
	grouped map[int64][]*bloom.BloomFilter
}

// groupCacheGroups is how many groups' part filters idFilters keeps read
// back (1.25 MiB each).
const groupCacheGroups = 8

// set publishes the filters of complete parts.
func (fs *idFilters) set(parts []*partIDs) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, p := range parts {
		if g := p.part / groupParts; g < int64(len(fs.groups)) && fs.groups[g] != nil {
			continue
		}
		for int64(len(fs.parts)) <= p.part {
			fs.parts = append(fs.parts, nil)
		}
		fs.parts[p.part] = p.ids
	}
}

// setGroup publishes the filter of a complete group, which stands for its
// parts' filters from then on.
func (fs *idFilters) setGroup(g int64, f *bloom.BloomFilter) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for int64(len(fs.groups)) <= g {
		fs.groups = append(fs.groups, nil)
	}
	fs.groups[g] = f
	for p := g * groupParts; p < (g+1)*groupParts && p < int64(len(fs.parts)); p++ {
		fs.parts[p] = nil
	}
}

// missingGroups returns the groups below complete that have no filter.
func (fs *idFilters) missingGroups(complete int64) []int64 {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	var out []int64
	for g := range complete {
		if g >= int64(len(fs.groups)) || fs.groups[g] == nil {
			out = append(out, g)
		}
	}
	return out
}

func (fs *idFilters) clear() {
	fs.mu.Lock()
	fs.parts, fs.groups, fs.grouped = nil, nil, nil
	fs.mu.Unlock()
}

// candidates returns the parts from bottom to top that may hold the id
// whose bloom.Locations (groupFilterHashes of them) are locs, in ascending
// order, and the groups whose filter may hold it but whose parts' filters
// it does not have (their parts in the range are for the caller to test).
func (fs *idFilters) candidates(bottom, top int64, locs []uint64) (parts, groups []int64) {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	for p := bottom; p <= top; {
		if g := p / groupParts; g < int64(len(fs.groups)) && fs.groups[g] != nil {
			end := min(top, (g+1)*groupParts-1)
			if fs.groups[g].TestLocations(locs) {
				if grouped, ok := fs.grouped[g]; !ok {
					groups = append(groups, g)
				} else {
					for ; p <= end; p++ {
						if f := grouped[p-g*groupParts]; f == nil || f.TestLocations(locs[:filterHashes]) {
							parts = append(parts, p)
						}
					}
				}
			}
			p = end + 1
			continue
		}
		if p >= int64(len(fs.parts)) || fs.parts[p] == nil || fs.parts[p].TestLocations(locs[:filterHashes]) {
			parts = append(parts, p)
		}
		p++
	}
	return parts, groups
}

// keepGrouped keeps the parts' filters of group g, read back.
func (fs *idFilters) keepGrouped(g int64, filters []*bloom.BloomFilter) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.grouped == nil || len(fs.grouped) >= groupCacheGroups {
		fs.grouped = map[int64][]*bloom.BloomFilter{}
	}
	fs.grouped[g] = filters
}

// candidates returns the parts from bottom to top that may hold the id
// whose locations are locs, in ascending order, reading back the parts'
// filters of groups whose own filter does not rule it out.
func (ix *Index) candidates(ctx context.Context, bottom, top int64, locs []uint64) ([]int64, error) {
	parts, groups := ix.ids.candidates(bottom, top, locs)
	if len(groups) == 0 {
		return parts, nil
	}
	for _, g := range groups {
		if err := ix.readGrouped(ctx, g); err != nil {
			return nil, err
		}
	}
	parts, groups = ix.ids.candidates(bottom, top, locs)
	for _, g := range groups { // read back, and dropped again meanwhile: probe them
		for p := max(bottom, g*groupParts); p <= min(top, (g+1)*groupParts-1); p++ {
			parts = append(parts, p)
		}
	}
	slices.Sort(parts)
	return parts, nil
}

// readGrouped reads the parts' filters of group g back from id_filters.
func (ix *Index) readGrouped(ctx context.Context, g int64) error {
	filters := make([]*bloom.BloomFilter, groupParts)
	rows, err := ix.db.QueryContext(ctx, "SELECT part, bits FROM id_filters WHERE part >= ? AND part < ?", g*groupParts, (g+1)*groupParts)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var part int64
		var bits []byte
		if err := rows.Scan(&part, &bits); err != nil {
			return err
		}
		if f, ok := partFilter(bits); ok && part >= g*groupParts && part < (g+1)*groupParts {
			filters[part-g*groupParts] = f
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	ix.ids.keepGrouped(g, filters)
	return nil
}

// partFilter decodes a part's filter as id_filters holds it.
func partFilter(bits []byte) (*bloom.BloomFilter, bool) {
	f := new(bloom.BloomFilter)
	if f.UnmarshalBinary(bits) != nil || f.Cap() != filterBits || f.K() != filterHashes {
		return nil, false
	}
	return f, true
}

// bytes returns the memory the filters take, those read back included.
func (fs *idFilters) bytes() int64 {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	lists := [][]*bloom.BloomFilter{fs.parts, fs.groups}
	for _, fl := range fs.grouped {
		lists = append(lists, fl)
	}
	var n int64
	for _, fl := range lists {
		for _, f := range fl {
			if f != nil {
				n += int64(f.Cap() / 8)
			}
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
			if err := writeFilter(w, "INSERT OR REPLACE INTO id_filters (part, bits) VALUES (?, ?)", p.part, p.ids); err != nil {
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

// groupIDs is the filter of the ids of one group's rows as far as next,
// kept only when it holds them from the group's first row on (ids nil
// otherwise).
type groupIDs struct {
	group int64
	next  uint64
	ids   *bloom.BloomFilter
}

// addGroupIDs adds the ids of rows, which follow those g has (nil:
// unknown), to the filter of their group, and writes the filter of each
// group they move past that it holds whole. It returns the group of the
// last row, and the groups moved past, to be published once the
// transaction has committed (those without a whole filter are for
// buildGroups).
func addGroupIDs(w *conn, g *groupIDs, rows []row) (*groupIDs, []*groupIDs, error) {
	var done []*groupIDs
	for i := range rows {
		idx := uint64(rows[i].idx)
		if grp := int64(idx>>partBits) / groupParts; g == nil || g.group != grp {
			if g != nil {
				if g.ids != nil {
					if err := writeFilter(w, "INSERT OR REPLACE INTO id_group_filters (grp, bits) VALUES (?, ?)", g.group, g.ids); err != nil {
						return nil, nil, fmt.Errorf("couldn't write the id filter of group %d: %w", g.group, err)
					}
				}
				done = append(done, g)
			}
			g = &groupIDs{group: grp}
			if idx == uint64(grp*groupParts)<<partBits {
				g.ids = bloom.New(groupFilterBits(), groupFilterHashes)
			}
		}
		if g.ids != nil {
			g.ids.AddString(rows[i].id)
		}
		g.next = idx + 1
	}
	return g, done, nil
}

// writeFilter stores filter f under key with insert, a statement taking
// the key and the filter's bits.
func writeFilter(w *conn, insert string, key int64, f *bloom.BloomFilter) error {
	bits, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	s, err := w.prepare(insert)
	if err != nil {
		return err
	}
	s.bindInt(1, key)
	s.bindBlob(2, bits)
	_, err = s.exec()
	return err
}

// loadIDFilters reads the filters of the complete parts and groups.
func (ix *Index) loadIDFilters(ctx context.Context) error {
	if err := ix.loadPartFilters(ctx); err != nil {
		return err
	}
	return ix.loadGroupFilters(ctx)
}

// loadPartFilters reads the filters of the complete parts. One that cannot
// be read is left out: its part is probed.
func (ix *Index) loadPartFilters(ctx context.Context) error {
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
		var ok bool
		if p.ids, ok = partFilter(bits); !ok || p.part < 0 {
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

// loadGroupFilters reads the filters of the complete groups. One that
// cannot be read is left out: buildGroups builds it again.
func (ix *Index) loadGroupFilters(ctx context.Context) error {
	rows, err := ix.db.QueryContext(ctx, "SELECT grp, bits FROM id_group_filters ORDER BY grp")
	if err != nil {
		return fmt.Errorf("couldn't read id group filters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g int64
		var bits []byte
		if err := rows.Scan(&g, &bits); err != nil {
			return fmt.Errorf("couldn't read id group filters: %w", err)
		}
		f := new(bloom.BloomFilter)
		if f.UnmarshalBinary(bits) != nil || f.Cap() != groupFilterBits() || f.K() != groupFilterHashes || g < 0 {
			continue
		}
		ix.ids.setGroup(g, f)
	}
	return rows.Err()
}

// buildGroups builds the filters of complete groups that have none, from
// their rows, whenever kicked (by Apply moving past a group, and at Open),
// until ctx ends. Lookups test the parts' filters of a group until its
// filter is built.
func (ix *Index) buildGroups(ctx context.Context, kick <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		complete := int64(ix.Visible()>>partBits) / groupParts
		for _, g := range ix.ids.missingGroups(complete) {
			if err := ix.buildGroup(ctx, g); err != nil {
				if ctx.Err() == nil {
					ix.logger.Warn("couldn't build the id filter of a group of records; lookups test its parts' filters",
						"first", g*groupParts*partSize, "records", groupParts*partSize, "err", err)
				}
				break
			}
		}
	}
}

// buildGroup builds, stores and publishes the filter of group g's ids.
func (ix *Index) buildGroup(ctx context.Context, g int64) error {
	ix.applyMu.Lock()
	gen := ix.gen
	ix.applyMu.Unlock()
	f := bloom.New(groupFilterBits(), groupFilterHashes)
	lo := g * groupParts * partSize
	rows, err := ix.db.QueryContext(ctx, "SELECT id FROM records WHERE idx >= ? AND idx < ?", lo, lo+groupParts*partSize)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id sql.RawBytes
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		f.Add(id)
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	rows.Close()
	bits, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	// Under applyMu, so that no Reset came between reading the rows and
	// publishing what they gave.
	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	if ix.closed || ix.gen != gen {
		return nil
	}
	if _, err := ix.db.ExecContext(ctx, "INSERT OR REPLACE INTO id_group_filters (grp, bits) VALUES (?, ?)", g, bits); err != nil {
		return err
	}
	ix.ids.setGroup(g, f)
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
			locs[k.ID] = bloom.Locations([]byte(k.ID), groupFilterHashes)
		}
	}
	left := keys
	for width := int64(1); top >= 0 && len(left) > 0; top, width = top-width, width*2 {
		bottom := max(0, top-width+1)
		var probes []probe
		for _, k := range left {
			parts, err := ix.candidates(ctx, bottom, top, locs[k.ID])
			if err != nil {
				return nil, fmt.Errorf("couldn't look up event ids: %w", err)
			}
			for _, p := range parts {
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
	parts, err := ix.candidates(ctx, 0, top, bloom.Locations([]byte(id), groupFilterHashes))
	if err != nil {
		return err
	}
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
