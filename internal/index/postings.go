package index

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	mathbits "math/bits"
	"slices"
	"strings"
)

// Block postings
//
// The equality filters of Query (tenant, type, actor, model name and
// version, outcome, resource) are not answered from an SQLite index per
// column: each such index costs every record one more B-tree insert, and
// with six of them they took three quarters of the indexing work
// (BenchmarkApply: 35,000 records/s with them, 140,000 without). Instead the
// log is cut into blocks of blockSize consecutive log indexes, and for each
// value that occurs in a block the postings table has one row: the value's
// key (a field tag and the value), the block, and which of the block's
// records carry it. A block of records from one tenant, of a few types and
// models, costs a handful of rows instead of six per record. The blocks
// table keeps the range of event times in each block, for From and To.
//
// A query walks, for each filter, the blocks its key (or keys, for a list or
// a type prefix) occurs in, in log order, and leapfrogs them: the next block
// every filter has is the only one worth opening. Within it the bitmaps,
// intersected, name the candidate records, whose rows are then read by log
// index and checked against every condition in SQL, so the postings only
// ever narrow the search and never decide a match on their own. A filter on
// a rare value visits only the blocks that value is in.
//
// Postings are derived from the rows of records and nothing else: the
// postings of a block can always be rebuilt from its rows, which is how
// Apply continues a block a previous Apply (or an earlier run) began.
//
// The postings of the open block, the one Apply is filling, are kept in
// memory and served to queries from there (Index.served); they are written to
// the table once, when the block is complete (and at Close, and before a
// scrub). Each value's row sits among that value's rows of earlier blocks,
// so writing a block's postings touches a page of the table for almost
// every value in it: with a thousand actors, writing the open block's
// postings a few times a second made seven in ten of the pages the index
// wrote, and about a tenth of the server's CPU under batched ingest.

// Blocks are large so that a value that recurs, such as the actor of a
// busy user, costs one posting row for many records: with blocks of 1,024
// records, the postings of 1,000 users took a third of the indexing work,
// and 65,536 rather than 16,384 spares a table write of a page per value
// for each 49,152 records.
const (
	blockBits = 16
	blockSize = 1 << blockBits
	blockMask = blockSize - 1
)

// The range of event times is kept for each chunk of chunkSize records,
// in the chunks table: a time range (from, to) then narrows a scan to the
// chunks it overlaps, not to whole blocks, whose records span much more
// time.
const (
	chunkBits      = 10
	chunkSize      = 1 << chunkBits
	chunksPerBlock = blockSize / chunkSize
)

// The fields with postings, and the tag byte each key starts with.
const (
	fieldTenant = iota
	fieldType
	fieldActor
	fieldModel
	fieldVersion
	fieldOutcome
	fieldResource
	numFields
)

var fieldTags = [numFields]byte{'n', 'y', 'a', 'm', 'v', 'o', 'r'}

// postingKey returns the key of value in field: its tag, then the value.
// Keys are stored as BLOBs, which compare bytewise, so a field's keys sort
// by value and a prefix of values is a range of keys.
func postingKey(field int, value string) []byte {
	k := make([]byte, 1+len(value))
	k[0] = fieldTags[field]
	copy(k[1:], value)
	return k
}

// values calls f with each field of r that has a value.
func (r *row) values(f func(field int, value string)) {
	f(fieldTenant, r.tenant)
	f(fieldType, r.typ)
	for _, fv := range [...]struct {
		field int
		v     string
	}{
		{fieldActor, r.actorID},
		{fieldModel, r.modelName},
		{fieldVersion, r.modelVersion},
		{fieldOutcome, r.outcome},
		{fieldResource, r.resourceID},
	} {
		if fv.v != "" {
			f(fv.field, fv.v)
		}
	}
}

// bitmap is a set of the records of one block, by their place in it.
type bitmap [blockSize / 64]uint64

func (b *bitmap) set(i int) { b[i>>6] |= 1 << (i & 63) }

func (b *bitmap) and(o *bitmap) {
	for i := range b {
		b[i] &= o[i]
	}
}

func (b *bitmap) or(o *bitmap) {
	for i := range b {
		b[i] |= o[i]
	}
}

// full is a bitmap of every record of a block.
var full = func() (b bitmap) {
	for i := range b {
		b[i] = math.MaxUint64
	}
	return b
}()

// bitmapBytes is the size of an encoded bitmap.
const bitmapBytes = blockSize / 8

// encodePlaces returns the posting of the records at places (ascending)
// as stored: the places as little-endian uint16s when that is shorter than
// a bitmap, else the bitmap's words little-endian.
func encodePlaces(places []uint16) []byte {
	if 2*len(places) < bitmapBytes {
		out := make([]byte, 0, 2*len(places))
		for _, i := range places {
			out = binary.LittleEndian.AppendUint16(out, i)
		}
		return out
	}
	var b bitmap
	for _, i := range places {
		b.set(int(i))
	}
	out := make([]byte, 0, bitmapBytes)
	for _, w := range b {
		out = binary.LittleEndian.AppendUint64(out, w)
	}
	return out
}

// errDamagedPostings wraps a posting that cannot be decoded: index.db was
// altered or damaged. The postings are derived, so rebuilding the index
// repairs them.
var errDamagedPostings = errors.New("the query index is damaged (aitrail reindex rebuilds it from the log)")

// decodeBitmap is the inverse of encodePlaces.
func decodeBitmap(p []byte) (bitmap, error) {
	var b bitmap
	switch {
	case len(p) == bitmapBytes:
		for i := range b {
			b[i] = binary.LittleEndian.Uint64(p[8*i:])
		}
	case len(p) > 0 && len(p)%2 == 0 && len(p) < bitmapBytes:
		// Places are written in ascending order (a block's records are
		// added in log order), and any uint16 is a place of a block.
		prev := -1
		for i := 0; i < len(p); i += 2 {
			v := int(binary.LittleEndian.Uint16(p[i:]))
			if v <= prev {
				return b, fmt.Errorf("%w: a posting names place %d after %d", errDamagedPostings, v, prev)
			}
			b.set(v)
			prev = v
		}
	default:
		return b, fmt.Errorf("%w: a posting of %d bytes", errDamagedPostings, len(p))
	}
	return b, nil
}

// blockPostings accumulates the postings of one block while Apply adds its
// rows.
type blockPostings struct {
	block int64
	// next is the log index after the last one the postings account for
	// (applied or skipped), to tell whether the next Apply continues them.
	next uint64
	// values holds each field's postings by value.
	values [numFields]map[string]*posting
	// dirty lists the postings changed since the last flush.
	dirty []dirtyPosting
	// times is the range of event times of each chunk of the block.
	times [chunksPerBlock]chunkTimes
}

type chunkTimes struct {
	min, max int64
	has      bool // some row of the chunk has been added
	dirty    bool // changed since last written
}

// posting is the places in the block of the records with one value, in
// ascending order (rows are added in log order): a list, not a bitmap,
// because most values of a busy field occur a few times a block.
type posting struct {
	places []uint16
	dirty  bool
}

type dirtyPosting struct {
	field int
	value string
	p     *posting
}

func newBlockPostings(block int64) *blockPostings {
	bp := &blockPostings{block: block, next: uint64(block) << blockBits}
	for f := range bp.values {
		bp.values[f] = make(map[string]*posting)
	}
	return bp
}

// add adds a row of the block.
func (bp *blockPostings) add(r *row) {
	at := int(r.idx & blockMask)
	r.values(func(field int, value string) {
		p := bp.values[field][value]
		if p == nil {
			p = &posting{}
			bp.values[field][value] = p
		}
		p.places = append(p.places, uint16(at))
		if !p.dirty {
			p.dirty = true
			bp.dirty = append(bp.dirty, dirtyPosting{field, value, p})
		}
	})
	c := &bp.times[at>>chunkBits]
	if !c.has || r.time < c.min {
		c.min = r.time
	}
	if !c.has || r.time > c.max {
		c.max = r.time
	}
	c.has, c.dirty = true, true
}

// changed reports whether bp has postings or times not yet written.
func (bp *blockPostings) changed() bool {
	return len(bp.dirty) > 0 || slices.ContainsFunc(bp.times[:], func(c chunkTimes) bool { return c.dirty })
}

// postingWriter writes postings in one Apply's transaction.
type postingWriter struct {
	posting, block *stmt
}

func prepareWriter(w *conn) (*postingWriter, error) {
	p, err := w.prepare("INSERT OR REPLACE INTO postings (key, block, bits) VALUES (?, ?, ?)")
	if err != nil {
		return nil, fmt.Errorf("couldn't prepare postings: %w", err)
	}
	b, err := w.prepare("INSERT OR REPLACE INTO chunks (chunk, min_time, max_time) VALUES (?, ?, ?)")
	if err != nil {
		return nil, fmt.Errorf("couldn't prepare postings: %w", err)
	}
	return &postingWriter{p, b}, nil
}

// flush writes what changed in bp since its last flush.
func (w *postingWriter) flush(bp *blockPostings) error {
	if err := w.flushPostings(bp); err != nil {
		return err
	}
	return w.flushTimes(bp)
}

// flushPostings writes the postings that changed in bp since they were
// last written.
func (w *postingWriter) flushPostings(bp *blockPostings) error {
	for _, d := range bp.dirty {
		w.posting.bindBlob(1, postingKey(d.field, d.value))
		w.posting.bindInt(2, bp.block)
		w.posting.bindBlob(3, encodePlaces(d.p.places))
		if _, err := w.posting.exec(); err != nil {
			return fmt.Errorf("couldn't write postings of block %d: %w", bp.block, err)
		}
		d.p.dirty = false
	}
	bp.dirty = bp.dirty[:0]
	return nil
}

// flushTimes writes the ranges of bp's event times that changed.
func (w *postingWriter) flushTimes(bp *blockPostings) error {
	for i := range bp.times {
		c := &bp.times[i]
		if !c.dirty {
			continue
		}
		chunk := bp.block*chunksPerBlock + int64(i)
		w.block.bindInt(1, chunk)
		w.block.bindInt(2, c.min)
		w.block.bindInt(3, c.max)
		if _, err := w.block.exec(); err != nil {
			return fmt.Errorf("couldn't write the times of chunk %d: %w", chunk, err)
		}
		c.dirty = false
	}
	return nil
}

// openBlock returns the postings of the block that holds log index cursor,
// with the rows applied before cursor: last, the last Apply's, if it ended
// there, else rebuilt from the rows. Rebuilt postings count as changed:
// those stored may lag the rows (the open block's are written only once it
// is complete).
func openBlock(w *conn, last *blockPostings, cursor uint64) (*blockPostings, error) {
	block := int64(cursor >> blockBits)
	if last != nil && last.block == block && last.next == cursor {
		return last, nil
	}
	bp := newBlockPostings(block)
	if cursor&blockMask == 0 {
		return bp, nil
	}
	err := w.scanRange(`SELECT idx, tenant, type, time, actor_id, model_name, model_version, outcome, resource_id
		FROM records WHERE idx >= ? AND idx < ? ORDER BY idx`, block<<blockBits, int64(cursor), func(s *stmt) {
		r := row{idx: s.columnInt(0), tenant: s.columnText(1), typ: s.columnText(2), time: s.columnInt(3)}
		r.actorID, r.modelName, r.modelVersion = s.columnText(4), s.columnText(5), s.columnText(6)
		r.outcome, r.resourceID = s.columnText(7), s.columnText(8)
		bp.add(&r)
	})
	if err != nil {
		return nil, fmt.Errorf("couldn't read block %d: %w", block, err)
	}
	bp.next = cursor
	return bp, nil
}

// A stream yields, block by block in a scan's direction, the records of
// each block that may match one condition of a query.
type stream interface {
	// seek returns the first block at or after b in the scan's direction
	// (at or before b when descending) that has records, and which ones;
	// ok is false when there is none. The bitmap is valid until the next
	// seek.
	seek(ctx context.Context, b int64) (block int64, bits *bitmap, ok bool, err error)
}

// blockRow is one row a stream has fetched.
type blockRow struct {
	block int64
	bits  bitmap
}

// Streams fetch rows in growing batches: a first page needs few blocks, a
// long scan many. A row holds an 8 KiB bitmap, so a batch of maxFetch is
// 128 KiB, for up to a million records.
const (
	firstFetch = 2
	maxFetch   = 16
)

// fetchStream is a stream over rows fetched from SQL in batches.
type fetchStream struct {
	desc bool
	// fetch returns up to n rows from block from on in the scan's
	// direction, and whether there may be more after them.
	fetch func(ctx context.Context, from int64, n int) ([]blockRow, bool, error)
	buf   []blockRow
	done  bool // no rows past buf
	n     int
}

func (s *fetchStream) seek(ctx context.Context, b int64) (int64, *bitmap, bool, error) {
	for {
		for len(s.buf) > 0 && before(s.buf[0].block, b, s.desc) {
			s.buf = s.buf[1:]
		}
		if len(s.buf) > 0 {
			return s.buf[0].block, &s.buf[0].bits, true, nil
		}
		if s.done {
			return 0, nil, false, nil
		}
		s.n = min(max(2*s.n, firstFetch), maxFetch)
		rows, more, err := s.fetch(ctx, b, s.n)
		if err != nil {
			return 0, nil, false, err
		}
		s.buf, s.done = rows, !more
	}
}

// before reports whether block a comes before b in the scan's direction.
func before(a, b int64, desc bool) bool {
	if desc {
		return a > b
	}
	return a < b
}

// keyStream returns the stream of key's postings: those in the table and,
// from memory, the open block's.
func (ix *Index) keyStream(key []byte, desc bool) stream {
	q := "SELECT block, bits FROM postings WHERE key = ? AND block >= ? ORDER BY block LIMIT ?"
	if desc {
		q = "SELECT block, bits FROM postings WHERE key = ? AND block <= ? ORDER BY block DESC LIMIT ?"
	}
	table := &fetchStream{desc: desc, fetch: func(ctx context.Context, from int64, n int) ([]blockRow, bool, error) {
		rows, err := ix.db.QueryContext(ctx, q, key, from, n)
		if err != nil {
			return nil, false, fmt.Errorf("couldn't read postings: %w", err)
		}
		out, err := scanPostings(rows, make([]blockRow, 0, n))
		return out, len(out) == n, err
	}}
	open, ok := ix.servedBits(key, desc)
	if !ok {
		return table
	}
	// The table may hold an older copy of the open block's row (written at
	// Open, Close or a scrub): the union of the two is the one in memory.
	return &unionStream{desc: desc, parts: []stream{table, open}}
}

// servedBits returns the open block's postings of key, as a stream, if
// queries are served them from memory (Index.served) and it has any.
func (ix *Index) servedBits(key []byte, desc bool) (*oneBlock, bool) {
	field := slices.Index(fieldTags[:], key[0])
	if field < 0 {
		return nil, false
	}
	ix.servedMu.RLock()
	defer ix.servedMu.RUnlock()
	bp := ix.served
	if bp == nil {
		return nil, false
	}
	p := bp.values[field][string(key[1:])]
	if p == nil {
		return nil, false
	}
	o := &oneBlock{block: bp.block, desc: desc}
	for _, i := range p.places {
		o.bits.set(int(i))
	}
	return o, true
}

// oneBlock is a stream of one block: the open block's postings of a key.
type oneBlock struct {
	block int64
	bits  bitmap
	desc  bool
}

func (o *oneBlock) seek(_ context.Context, b int64) (int64, *bitmap, bool, error) {
	if before(o.block, b, o.desc) {
		return 0, nil, false, nil
	}
	return o.block, &o.bits, true, nil
}

// scanPostings appends the rows of (block, bits) to out, decoded, and
// closes them.
func scanPostings(rows *sql.Rows, out []blockRow) ([]blockRow, error) {
	defer rows.Close()
	for rows.Next() {
		var r blockRow
		var enc []byte
		if err := rows.Scan(&r.block, &enc); err != nil {
			return nil, fmt.Errorf("couldn't read postings: %w", err)
		}
		var err error
		if r.bits, err = decodeBitmap(enc); err != nil {
			return nil, fmt.Errorf("couldn't read postings of block %d: %w", r.block, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("couldn't read postings: %w", err)
	}
	return out, nil
}

// timeStream returns the stream of the blocks whose event times overlap
// [from, to) ([from, to] if toInclusive), a bound applying only if set
// (neither: every block with records). The candidates of such a block are the records of its chunks
// that overlap it.
func (ix *Index) timeStream(from, to int64, fromSet, toSet, toInclusive, desc bool) stream {
	var w where
	if fromSet {
		w.add("max_time >= ?", from)
	}
	if toSet && toInclusive {
		w.add("min_time <= ?", to)
	} else if toSet {
		w.add("min_time < ?", to)
	}
	q := "SELECT chunk FROM chunks WHERE " + w.sql() + " AND chunk >= ? ORDER BY chunk LIMIT ?"
	if desc {
		q = "SELECT chunk FROM chunks WHERE " + w.sql() + " AND chunk <= ? ORDER BY chunk DESC LIMIT ?"
	}
	return &fetchStream{desc: desc, fetch: func(ctx context.Context, b int64, n int) ([]blockRow, bool, error) {
		from := b * chunksPerBlock
		if desc {
			from += chunksPerBlock - 1
		}
		limit := n * chunksPerBlock
		rows, err := ix.db.QueryContext(ctx, q, append(w.args[:len(w.args):len(w.args)], from, limit)...)
		if err != nil {
			return nil, false, fmt.Errorf("couldn't read chunks: %w", err)
		}
		defer rows.Close()
		out := make([]blockRow, 0, n)
		read := 0
		for rows.Next() {
			var chunk int64
			if err := rows.Scan(&chunk); err != nil {
				return nil, false, fmt.Errorf("couldn't read chunks: %w", err)
			}
			read++
			if blk := chunk / chunksPerBlock; len(out) == 0 || out[len(out)-1].block != blk {
				out = append(out, blockRow{block: blk})
			}
			bits := &out[len(out)-1].bits
			first := int(chunk%chunksPerBlock) * (chunkSize / 64)
			for i := first; i < first+chunkSize/64; i++ {
				bits[i] = math.MaxUint64
			}
		}
		if err := rows.Err(); err != nil {
			return nil, false, fmt.Errorf("couldn't read chunks: %w", err)
		}
		if read < limit {
			return out, false, nil
		}
		// The last block's chunks may go on past the limit: it is fetched
		// again, whole, by the next call. (It is not the only one: a block
		// has fewer chunks than the limit.)
		return out[:len(out)-1], true, nil
	}}
}

// unionStream yields the blocks any of its streams has, with the union of
// their records.
type unionStream struct {
	desc  bool
	parts []stream
	bits  bitmap
}

func (u *unionStream) seek(ctx context.Context, b int64) (int64, *bitmap, bool, error) {
	var first int64
	found := false
	for _, s := range u.parts {
		blk, _, ok, err := s.seek(ctx, b)
		if err != nil {
			return 0, nil, false, err
		}
		if ok && (!found || before(blk, first, u.desc)) {
			first, found = blk, true
		}
	}
	if !found {
		return 0, nil, false, nil
	}
	u.bits = bitmap{}
	for _, s := range u.parts {
		// Seeking again to where a stream already is reads nothing.
		if blk, bits, ok, _ := s.seek(ctx, b); ok && blk == first {
			u.bits.or(bits)
		}
	}
	return first, &u.bits, true, nil
}

// intersectStream yields the blocks all of its streams have records in
// together, with those records.
type intersectStream struct {
	desc  bool
	parts []stream
	bits  bitmap
}

func (x *intersectStream) seek(ctx context.Context, b int64) (int64, *bitmap, bool, error) {
	for {
		agreed := true
		for i, s := range x.parts {
			blk, bits, ok, err := s.seek(ctx, b)
			if err != nil || !ok {
				return 0, nil, false, err
			}
			if blk != b {
				b, agreed = blk, false // on to where this one goes on
				break
			}
			if i == 0 {
				x.bits = *bits
			} else {
				x.bits.and(bits)
			}
		}
		if !agreed {
			continue
		}
		if x.bits != (bitmap{}) {
			return b, &x.bits, true, nil
		}
		if x.desc {
			if b == 0 {
				return 0, nil, false, nil
			}
			b--
		} else {
			b++
		}
	}
}

// maxPrefixKeys is the most values a type prefix ("ai.*") is expanded to;
// past it the prefix is checked on the rows only.
const maxPrefixKeys = 64

// prefixStream is the union of the streams of every key that starts with
// prefix, found when first sought. When the prefix has too many values to
// walk, every block with records is a candidate instead.
type prefixStream struct {
	ix     *Index
	prefix []byte
	desc   bool
	s      stream
}

func (p *prefixStream) seek(ctx context.Context, b int64) (int64, *bitmap, bool, error) {
	if p.s == nil {
		keys, err := p.ix.keysWithPrefix(ctx, p.prefix, maxPrefixKeys+1)
		if err != nil {
			return 0, nil, false, err
		}
		if len(keys) > maxPrefixKeys {
			p.s = p.ix.timeStream(0, 0, false, false, false, p.desc) // every block
		} else {
			u := &unionStream{desc: p.desc}
			for _, k := range keys {
				u.parts = append(u.parts, p.ix.keyStream(k, p.desc))
			}
			p.s = u
		}
	}
	return p.s.seek(ctx, b)
}

// keysWithPrefix returns up to n distinct keys that start with prefix, one
// index seek each.
func (ix *Index) keysWithPrefix(ctx context.Context, prefix []byte, n int) ([][]byte, error) {
	var keys [][]byte
	end, bounded := prefixEnd(string(prefix))
	q, arg := "SELECT key FROM postings WHERE key >= ?", any(prefix)
	for len(keys) < n {
		var k []byte
		var err error
		if bounded {
			err = ix.db.QueryRowContext(ctx, q+" AND key < ? ORDER BY key LIMIT 1", arg, []byte(end)).Scan(&k)
		} else {
			err = ix.db.QueryRowContext(ctx, q+" ORDER BY key LIMIT 1", arg).Scan(&k)
		}
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("couldn't read postings: %w", err)
		}
		keys = append(keys, k)
		q, arg = "SELECT key FROM postings WHERE key > ?", k
	}
	// And the open block's values, which the table may not have yet.
	if len(keys) < n {
		more := ix.servedKeys(prefix)
		more = slices.DeleteFunc(more, func(k []byte) bool {
			return slices.ContainsFunc(keys, func(t []byte) bool { return bytes.Equal(t, k) })
		})
		slices.SortFunc(more, bytes.Compare)
		keys = append(keys, more[:min(len(more), n-len(keys))]...)
	}
	return keys, nil
}

// servedKeys returns the keys that start with prefix (a field tag and the
// start of a value) among the open block's postings served from memory.
func (ix *Index) servedKeys(prefix []byte) [][]byte {
	field := slices.Index(fieldTags[:], prefix[0])
	if field < 0 {
		return nil
	}
	ix.servedMu.RLock()
	defer ix.servedMu.RUnlock()
	if ix.served == nil {
		return nil
	}
	var keys [][]byte
	for value := range ix.served.values[field] {
		if strings.HasPrefix(value, string(prefix[1:])) {
			keys = append(keys, append([]byte{prefix[0]}, value...))
		}
	}
	return keys
}

// idxRange is the range of log indexes a scan may return, both ends
// included.
type idxRange struct{ lo, hi int64 }

// candidates appends to out up to n log indexes of bits in block that lie
// in r, in the scan's direction, from place from on (from included), and
// returns the place to go on from: -1 or blockSize once past the block's
// end. A block holds tens of thousands of candidates for a common value; a
// page needs a few of them.
func (r idxRange) candidates(out []int64, block int64, bits *bitmap, desc bool, from, n int) ([]int64, int) {
	base := block << blockBits
	for found := 0; from >= 0 && from < blockSize; {
		wi := from >> 6
		w := bits[wi]
		if desc {
			w &= math.MaxUint64 >> (63 - from&63) // places up to from
		} else {
			w &= math.MaxUint64 << (from & 63) // places from from on
		}
		if w == 0 {
			if desc {
				from = wi<<6 - 1
			} else {
				from = (wi + 1) << 6
			}
			continue
		}
		var i int
		if desc {
			i = wi<<6 + 63 - mathbits.LeadingZeros64(w)
			from = i - 1
		} else {
			i = wi<<6 + mathbits.TrailingZeros64(w)
			from = i + 1
		}
		if idx := base + int64(i); idx >= r.lo && idx <= r.hi {
			out = append(out, idx)
			if found++; found == n {
				break
			}
		}
	}
	return out, from
}

// scanBlocks returns up to limit rows of (idx, tenant, pos) that st
// selects, from the blocks all of st.streams have, checking the candidates
// against st's conditions in SQL.
func (ix *Index) scanBlocks(ctx context.Context, st selectStmt, limit int) ([]Hit, []int64, error) {
	var hits []Hit
	var pos []int64
	b := st.bounds.lo >> blockBits
	if st.desc {
		b = st.bounds.hi >> blockBits
	}
	var cands []int64
	for {
		var bits bitmap
		agreed := true
		for i, s := range st.streams {
			blk, sb, ok, err := s.seek(ctx, b)
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				return hits, pos, nil
			}
			if blk != b {
				b, agreed = blk, false
				break
			}
			if i == 0 {
				bits = *sb
			} else {
				bits.and(sb)
			}
		}
		if !agreed {
			continue
		}
		if bits == full {
			// Every record of the block is a candidate (a time range
			// alone, or a value every record of the block has): read its
			// rows in one range.
			var err error
			if hits, pos, err = ix.checkRange(ctx, st, b, limit-len(hits), hits, pos); err != nil {
				return nil, nil, err
			}
			if len(hits) >= limit {
				return hits, pos, nil
			}
		} else {
			from := 0
			if st.desc {
				from = blockSize - 1
			}
			for from >= 0 && from < blockSize {
				cands, from = st.bounds.candidates(cands[:0], b, &bits, st.desc, from, max(limit-len(hits), 32))
				if len(cands) == 0 {
					break
				}
				var err error
				if hits, pos, err = ix.checkRows(ctx, st, cands, hits, pos); err != nil {
					return nil, nil, err
				}
				if len(hits) >= limit {
					return hits[:limit], pos[:limit], nil
				}
			}
		}
		if st.desc {
			if b == 0 {
				return hits, pos, nil
			}
			b--
		} else {
			b++
		}
	}
}

// checkRows appends to hits and pos the rows of the log indexes idxs (in
// the scan's order) that meet st's conditions.
func (ix *Index) checkRows(ctx context.Context, st selectStmt, idxs []int64, hits []Hit, pos []int64) ([]Hit, []int64, error) {
	ix.checked.Add(int64(len(idxs)))
	in, args := idxIn(idxs)
	q := "SELECT idx, tenant, pos FROM records WHERE " + in + " AND " + st.conds + " ORDER BY idx"
	if st.desc {
		q += " DESC"
	}
	return ix.collect(ctx, q, append(args, st.args...), hits, pos)
}

// checkRange appends to hits and pos up to n rows of block, within
// st.bounds and in the scan's order, that meet st's conditions.
func (ix *Index) checkRange(ctx context.Context, st selectStmt, block int64, n int, hits []Hit, pos []int64) ([]Hit, []int64, error) {
	lo, hi := max(block<<blockBits, st.bounds.lo), min(block<<blockBits|blockMask, st.bounds.hi)
	ix.checked.Add(hi - lo + 1)
	q := "SELECT idx, tenant, pos FROM records WHERE idx BETWEEN ? AND ? AND " + st.conds + " ORDER BY idx"
	if st.desc {
		q += " DESC"
	}
	return ix.collect(ctx, q+" LIMIT ?", append(append([]any{lo, hi}, st.args...), n), hits, pos)
}

// collect appends to hits and pos the rows (idx, tenant, pos) of query q.
func (ix *Index) collect(ctx context.Context, q string, args []any, hits []Hit, pos []int64) ([]Hit, []int64, error) {
	rows, err := ix.db.QueryContext(ctx, q, args...)
	if err == nil {
		hits, pos, err = scanRefs(rows, hits, pos)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("couldn't query events: %w", err)
	}
	return hits, pos, nil
}

// idxIn returns the condition "idx IN (…)" for idxs and its arguments.
func idxIn(idxs []int64) (string, []any) {
	return "idx IN " + inList(len(idxs)), anys(idxs)
}
