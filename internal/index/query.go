package index

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/fold"
	"github.com/aitrail/aitrail/internal/ledger"
)

// Page sizes for Query.
const (
	// DefaultLimit is the page size when Query.Limit is 0.
	DefaultLimit = 100
	// MaxLimit is the largest Query.Limit accepted.
	MaxLimit = 1000
)

// Orders for Query.Order.
const (
	OrderAsc  = "asc"  // oldest first by log index (the default)
	OrderDesc = "desc" // newest first by log index
)

// Hit is one record found by Get or Query.
type Hit struct {
	// Index is the record's position in the log.
	Index uint64
	// Tenant is the record's tenant.
	Tenant string
	// Record is the record's canonical bytes, exactly as the log stores
	// them (and as the Merkle leaf commits to).
	Record []byte
}

// Page is one page of a Query's results.
type Page struct {
	// Hits are the matching records in the requested order.
	Hits []Hit
	// NextCursor fetches the next page when passed as Query.Cursor with
	// the same filters and order; it is empty when there are no more.
	NextCursor string
}

// Query selects records. Empty fields do not filter; all set fields must
// match. String filters compare exactly (case-sensitively) unless said
// otherwise.
type Query struct {
	// Tenants are the tenants the caller may see: nil, or a list holding
	// "*", means all tenants; any other list, including an empty non-nil
	// one, means only those. Records of other tenants never match.
	Tenants []string
	// Tenant keeps only that tenant's records.
	Tenant string
	// Type is an event type, or a prefix of one when it ends in "*":
	// "ai.*" matches "ai.inference", "*" matches every type.
	Type string
	// Actor is an actor.id, as stored (a pseudonym when the server
	// pseudonymises).
	Actor string
	// Actors, if not nil, keeps records whose actor.id is one of them; an
	// empty non-nil list matches nothing.
	Actors []string
	// Model is "name" (any version) or "name@version", split at the
	// first "@".
	Model string
	// Outcome is an outcome ("success", "failure", "denied").
	Outcome string
	// Resource is a resource.id, or "type:id" (split at the first ":");
	// a record matches either reading.
	Resource string
	// From and To bound the event time: From inclusive, To exclusive. A
	// zero time leaves that side unbounded, unless HasFrom or HasTo says it
	// was given: 0001-01-01T00:00:00Z is a bound too.
	From, To       time.Time
	HasFrom, HasTo bool
	// Text keeps records that contain every word of Text (words are
	// separated by white space; a Text with none does not filter). With Options.FullText a word matches whole tokens of the
	// record's metadata, case-insensitively; a word ending in "*" matches
	// as a prefix; punctuation inside a word matches any punctuation
	// ("10.0.0.1" finds "10-0-0-1"); quotes, operators and other search
	// syntax have no special meaning; and words without letters or digits
	// are ignored, so a Text made only of them matches nothing. Without
	// full text each word, less a trailing "*", must occur in the record's
	// JSON (keys and digests included), ignoring ASCII case, as it is or,
	// holding a quote or a backslash, as a JSON string holds it.
	Text string
	// Limit is the most hits per page: 0 means DefaultLimit; more than
	// MaxLimit, or negative, is invalid.
	Limit int
	// Cursor continues from a previous Page.NextCursor. It is valid only
	// with the same filters and order it was issued for; Limit and Tenants
	// may change.
	Cursor string
	// Order is OrderAsc (the default when empty) or OrderDesc, by log index.
	Order string
	// After, if set, keeps only records with a log index above it: a
	// client following the log (aitrail tail) resumes from the last index
	// it printed.
	After *uint64
}

// Get returns the record with this id among the tenants the caller may see
// (as in Query.Tenants). Ids are unique only within a tenant: tenant, when
// not empty, picks one (the ?tenant= of GET /v1/events/{id}); otherwise the
// visible record with this id and the lowest log index is returned. Get
// returns ErrNotFound when there is no such record or it is not visible.
//
// An event acknowledged but not yet applied to the index is found too, so
// that a client can read back what it has just written: when the index has
// no match, Get looks through the records past what queries see (Visible)
// if the log still holds them in memory.
func (ix *Index) Get(ctx context.Context, tenants []string, tenant, id string) (Hit, error) {
	h, err := ix.getIndexed(ctx, tenants, tenant, id)
	if !errors.Is(err, ErrNotFound) {
		return h, err
	}
	if h, err := ix.getUnindexed(ix.Visible(), tenants, tenant, id); !errors.Is(err, ErrNotFound) {
		return h, err
	}
	// Made visible between the first look and Visible's read: indexed
	// now, and in the parts getIndexed looks through.
	return ix.getIndexed(ctx, tenants, tenant, id)
}

// getIndexed is Get of the records the index has applied.
func (ix *Index) getIndexed(ctx context.Context, tenants []string, tenant, id string) (Hit, error) {
	var hits []Hit
	err := ix.byID(ctx, id, func(w where) (bool, error) {
		w.tenants(tenants)
		if tenant != "" {
			w.add("tenant = ?", tenant)
		}
		rows, err := ix.db.QueryContext(ctx, "SELECT idx, tenant, pos FROM records WHERE "+w.sql()+" ORDER BY idx LIMIT 1", w.args...)
		if err != nil {
			return false, err
		}
		hits, err = ix.hits(rows, 1, nil)
		return len(hits) > 0, err
	})
	switch {
	case err != nil:
		return Hit{}, fmt.Errorf("couldn't get event %q: %w", id, err)
	case len(hits) == 0:
		return Hit{}, ErrNotFound
	}
	h := hits[0]
	if _, recID, _ := event.RecordKey(h.Record); recID != id {
		return Hit{}, &TamperedError{Tenant: h.Tenant, Index: h.Index, Check: CheckRecordKey,
			Err: fmt.Errorf("%w: the query index has event %q at index %d, which holds another event", ledger.ErrTampered, id, h.Index)}
	}
	return h, nil
}

// recentLog is a Log that can also hand out its newest records from
// memory, as *ledger.Ledger does; Get uses it to find records not yet
// indexed.
type recentLog interface {
	// Recent returns the records from index from on if all of them are
	// still in memory.
	Recent(from uint64) ([]ledger.Entry, bool)
}

// getUnindexed looks for the event among the records from cursor on, which
// the index has not applied yet, and returns the first visible one. It
// looks only if the log still holds all of them in memory (the newest
// 16,384 records): under a heavier backlog an event is found once indexed,
// and a read never makes the server go through its files for a miss.
func (ix *Index) getUnindexed(cursor uint64, tenants []string, tenant, id string) (Hit, error) {
	rl, ok := ix.log.(recentLog)
	if !ok {
		return Hit{}, ErrNotFound
	}
	entries, ok := rl.Recent(cursor)
	if !ok {
		return Hit{}, ErrNotFound
	}
	for _, e := range entries {
		var recTenant, recID string
		if r, ok := e.Value.(*event.Record); ok {
			recTenant, recID = r.Tenant, r.ID
		} else {
			var err error
			if recTenant, recID, err = event.RecordKey(e.Data); err != nil {
				continue
			}
		}
		if recID == id && (tenant == "" || recTenant == tenant) && visible(tenants, recTenant) {
			return Hit{Index: e.Index, Tenant: recTenant, Record: e.Data}, nil
		}
	}
	return Hit{}, ErrNotFound
}

// visible reports whether a caller who may see tenants (as in
// Query.Tenants) may see tenant.
func visible(tenants []string, tenant string) bool {
	return tenants == nil || slices.Contains(tenants, "*") || slices.Contains(tenants, tenant)
}

// Query returns one page of the records q selects, ordered by log index.
// Errors caused by q itself wrap ErrInvalidQuery.
func (ix *Index) Query(ctx context.Context, q Query) (Page, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return Page{}, fmt.Errorf("%w: limit %d is not between 1 and %d", ErrInvalidQuery, q.Limit, MaxLimit)
	}
	desc := false
	switch q.Order {
	case "", OrderAsc:
	case OrderDesc:
		desc = true
	default:
		return Page{}, fmt.Errorf("%w: order %q is not %q or %q", ErrInvalidQuery, q.Order, OrderAsc, OrderDesc)
	}
	if q.hasFrom() && q.hasTo() && !q.From.Before(q.To) {
		return Page{}, fmt.Errorf("%w: from %s is not before to %s", ErrInvalidQuery,
			q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano))
	}
	fp := q.fingerprint(desc)
	st, err := ix.statement(q, desc, fp, nil)
	if err != nil || st.none() {
		return Page{}, err
	}
	var p Page
	if !st.filtered() {
		// One row more than asked tells whether there is a next page; its
		// record is not needed.
		if p.Hits, err = ix.run(ctx, st, limit+1, limit); err != nil {
			return Page{}, err
		}
	} else {
		var resume *uint64
		if p.Hits, resume, err = ix.scanText(ctx, q, desc, fp, st, limit+1); err != nil {
			return Page{}, err
		}
		if resume != nil {
			p.NextCursor = ix.makeCursor(*resume, desc, fp)
			return p, nil
		}
	}
	if len(p.Hits) > limit {
		p.Hits = p.Hits[:limit]
		p.NextCursor = ix.makeCursor(p.Hits[limit-1].Index, desc, fp)
	}
	return p, nil
}

// Text without full text is matched here, on the records read back from the
// log, a batch of rows at a time: the first batch is one page, each next
// one textGrowth times larger, up to textBatch rows. One page reads at most
// about textScanRows rows (under a second on the benchmark machine): a
// search for words few records hold would otherwise read the whole log for
// one request, minutes of a core on a large one.
const (
	textGrowth   = 4
	textBatch    = 4096
	textScanRows = 1 << 18
)

// textScanLimit is textScanRows; tests lower it.
var textScanLimit = textScanRows

// scanText returns the first want rows of st (a statement of q, desc and fp)
// whose records hold all of st.words (and are within st.times), reading further batches until it has
// them or the rows run out. Once it has read textScanLimit rows without
// finding them all, it returns those it has and the index of the last row
// it read, where the next page starts.
func (ix *Index) scanText(ctx context.Context, q Query, desc bool, fp []byte, st selectStmt, want int) ([]Hit, *uint64, error) {
	var out []Hit
	read := 0
	for batch := want; ; batch = min(batch*textGrowth, textBatch) {
		hits, err := ix.run(ctx, st, batch, batch)
		if err != nil {
			return nil, nil, err
		}
		for _, h := range hits {
			if h.Record != nil {
				out = append(out, h)
				if len(out) == want {
					return out, nil, nil
				}
			}
		}
		if len(hits) < batch {
			return out, nil, nil
		}
		last := hits[len(hits)-1].Index
		if read += len(hits); read >= textScanLimit {
			return out, &last, nil
		}
		if st, err = ix.statement(q, desc, fp, &last); err != nil {
			return nil, nil, err
		}
	}
}

// containsWords reports whether record holds every word, ignoring ASCII
// case (words are in lower case), as SQL's LIKE '%word%' would: as it is
// (JSON syntax included), or as a JSON string holds it.
func containsWords(record []byte, words []textWord) bool {
	for _, w := range words {
		if !fold.Contains(record, w.raw) && (w.escaped == "" || !fold.Contains(record, w.escaped)) {
			return false
		}
	}
	return true
}

// textWord is a word of Query.Text, in lower case, and, if it holds a
// quote or a backslash, as a stored record's strings hold it: escaped, as
// canonical JSON (RFC 8785) escapes only those and control characters
// (which words do not hold). So "say \"hi\"" and C:\temp find the records
// whose values hold them.
type textWord struct{ raw, escaped string }

func newTextWord(word string) textWord {
	w := textWord{raw: fold.LowerASCII(word)}
	if e := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(w.raw); e != w.raw {
		w.escaped = e
	}
	return w
}

// hasFrom and hasTo report whether q bounds the event time on that side.
func (q *Query) hasFrom() bool { return q.HasFrom || !q.From.IsZero() }
func (q *Query) hasTo() bool   { return q.HasTo || !q.To.IsZero() }

// timeRange is a Query's From and To, and whether each was given.
type timeRange struct {
	from, to       time.Time
	hasFrom, hasTo bool
}

// holds reports whether the time of record is within r.
func (r *timeRange) holds(record []byte) bool {
	var rec struct {
		Time string `json:"time"`
	}
	t, ok := time.Time{}, json.Unmarshal(record, &rec) == nil
	if ok {
		t, ok = event.ParseTime(rec.Time)
	}
	return ok && (!r.hasFrom || !t.Before(r.from)) && (!r.hasTo || t.Before(r.to))
}

// clamped reports whether unixNano clamps t: it is outside the years
// 1678–2262 (or at their very edge).
func clamped(t time.Time) bool {
	n := unixNano(t)
	return n == math.MinInt64 || n == math.MaxInt64
}

// filtered reports whether the records of st's rows are filtered outside
// SQL, so that a page may need more rows than it shows.
func (st *selectStmt) filtered() bool { return len(st.words) > 0 || st.times != nil }

// run returns the hits of up to limit rows of st, with the records of the
// first read; with st.words or st.times, records that do not hold them are
// nil.
func (ix *Index) run(ctx context.Context, st selectStmt, limit, read int) ([]Hit, error) {
	var keep func(record []byte) bool
	if st.filtered() {
		keep = func(rec []byte) bool {
			return containsWords(rec, st.words) && (st.times == nil || st.times.holds(rec))
		}
	}
	var hits []Hit
	var err error
	if st.streams != nil {
		var pos []int64
		if hits, pos, err = ix.scanBlocks(ctx, st, limit); err == nil {
			hits, err = ix.withRecords(hits, pos, read, keep)
		}
	} else {
		var rows *sql.Rows
		if rows, err = ix.db.QueryContext(ctx, st.sql, append(slices.Clip(st.args), limit)...); err == nil {
			hits, err = ix.hits(rows, read, keep)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("couldn't query events: %w", err)
	}
	return hits, nil
}

// TamperedError reports a record that the index points to but that is not
// what the index says: either the log did not give it back intact (a
// *ledger.RecordError; the log's files, or the index's idea of where the
// record is, were altered), or the intact record belongs to another tenant
// or is another event than the index has at its place (the index was
// altered). Tenant is the record's tenant: as the record has it if the
// record is intact, else as the index has it. It wraps ledger.ErrTampered.
type TamperedError struct {
	Tenant string
	Index  uint64
	Check  string // CheckRecordHash or CheckRecordKey
	Err    error
}

// The checks a TamperedError reports, as integrity.failure records name
// them.
const (
	// CheckRecordHash: the record read back does not match its leaf.
	CheckRecordHash = "record_hash"
	// CheckRecordKey: the record is intact but its tenant or id is not the
	// index's.
	CheckRecordKey = "record_key"
)

func (e *TamperedError) Error() string { return fmt.Sprintf("tenant %s: %v", e.Tenant, e.Err) }

func (e *TamperedError) Unwrap() error { return e.Err }

// hits reads rows of (idx, tenant, pos), closes them and returns them with
// the records of the first read rows (see withRecords).
func (ix *Index) hits(rows *sql.Rows, read int, keep func(record []byte) bool) ([]Hit, error) {
	hits, pos, err := scanRefs(rows, nil, nil)
	if err != nil {
		return nil, err
	}
	return ix.withRecords(hits, pos, read, keep)
}

// scanRefs appends the rows of (idx, tenant, pos) to hits and pos, and
// closes them.
func scanRefs(rows *sql.Rows, hits []Hit, pos []int64) ([]Hit, []int64, error) {
	defer rows.Close()
	for rows.Next() {
		var h Hit
		var idx, p int64
		if err := rows.Scan(&idx, &h.Tenant, &p); err != nil {
			return nil, nil, err
		}
		h.Index = uint64(idx)
		hits, pos = append(hits, h), append(pos, p)
	}
	return hits, pos, rows.Err()
}

// withRecords returns hits, whose records are at pos in the log, with the
// records of the first read of them read back from the log, except those
// keep (if not nil) does not keep.
func (ix *Index) withRecords(hits []Hit, pos []int64, read int, keep func(record []byte) bool) ([]Hit, error) {
	locs := make([]ledger.Loc, min(read, len(hits)))
	for i := range locs {
		locs[i] = ledger.Loc{Index: hits[i].Index, Offset: pos[i]}
	}
	if len(locs) == 0 {
		return hits, nil
	}
	recs, err := ix.log.ReadRecords(locs, keep)
	var re *ledger.RecordError
	if errors.As(err, &re) {
		for _, h := range hits {
			if h.Index == re.Index {
				return nil, &TamperedError{Tenant: h.Tenant, Index: h.Index, Check: CheckRecordHash, Err: err}
			}
		}
	}
	if err != nil {
		return nil, err
	}
	for i, rec := range recs {
		if rec == nil {
			continue // not kept
		}
		// The record is the log's, but the index chose it for its tenant:
		// an index altered to point one tenant's rows at another's records
		// must not show them.
		if tenant, _, err := event.RecordKey(rec); err != nil || tenant != hits[i].Tenant {
			return nil, &TamperedError{Tenant: cmp.Or(tenant, hits[i].Tenant), Index: hits[i].Index, Check: CheckRecordKey,
				Err: fmt.Errorf("%w: the query index has record %d in tenant %q, the record says %q", ledger.ErrTampered, hits[i].Index, hits[i].Tenant, tenant)}
		}
		hits[i].Record = rec
	}
	return hits, nil
}

// selectStmt selects rows of (idx, tenant, pos) in one of two ways. With
// streams, from the blocks all of them have (scanBlocks): the candidates
// within bounds are checked against conds, whose arguments are args. Without,
// with sql, a SELECT ending in "LIMIT ?", whose limit is bound after args.
type selectStmt struct {
	sql  string
	args []any
	// words, when not empty, are the words of Query.Text (in lower case)
	// that the records of the rows must hold: without full text, text is
	// matched outside SQL.
	words []textWord
	// times, if set, are bounds the records' own times must be within:
	// a bound outside the times the index stores exactly.
	times *timeRange

	streams []stream
	conds   string
	bounds  idxRange
	desc    bool
}

// none reports whether st selects nothing.
func (st selectStmt) none() bool { return st.sql == "" && st.streams == nil }

// statement returns how to select the rows q selects in order desc, or a
// statement with neither SQL nor streams when nothing can match. fp is q's
// fingerprint, which binds its cursor. resume, if not nil, continues a scan
// after that log index (before it when desc).
//
// Each equality filter and the time range also yield a stream of the blocks
// that may hold matches (postings.go); every condition is still checked on
// the rows. Without any (no filter, or only text), rows are read from
// records in log order. Full text drives the scan itself.
func (ix *Index) statement(q Query, desc bool, fp []byte, resume *uint64) (selectStmt, error) {
	st := selectStmt{desc: desc, bounds: idxRange{lo: 0, hi: math.MaxInt64}}
	var w where
	keys := func(field int, values ...string) {
		parts := make([]stream, len(values))
		for i, v := range values {
			parts[i] = ix.keyStream(postingKey(field, v), desc)
		}
		if len(parts) == 1 {
			st.streams = append(st.streams, parts[0])
		} else if len(parts) > 1 {
			st.streams = append(st.streams, &unionStream{desc: desc, parts: parts})
		}
	}
	if !w.tenants(q.Tenants) && len(q.Tenants) > 0 {
		keys(fieldTenant, q.Tenants...)
	}
	if q.Tenant != "" {
		w.add("tenant = ?", q.Tenant)
		keys(fieldTenant, q.Tenant)
	}
	if t, ok := strings.CutSuffix(q.Type, "*"); ok {
		if t != "" {
			w.add("type >= ?", t)
			if end, ok := prefixEnd(t); ok {
				w.add("type < ?", end)
			}
			st.streams = append(st.streams, &prefixStream{ix: ix, prefix: postingKey(fieldType, t), desc: desc})
		}
	} else if q.Type != "" {
		w.add("type = ?", q.Type)
		keys(fieldType, q.Type)
	}
	if q.Actor != "" {
		w.add("actor_id = ?", q.Actor)
		keys(fieldActor, q.Actor)
	}
	if q.Actors != nil {
		if len(q.Actors) == 0 {
			w.none()
		} else {
			w.add("actor_id IN "+inList(len(q.Actors)), anys(q.Actors)...)
			keys(fieldActor, q.Actors...)
		}
	}
	if q.Model != "" {
		// NAME@VERSION, or a name that holds @ itself (Vertex AI's
		// claude-3-5-sonnet-v2@20241022): a record matches any reading.
		conds := []string{"model_name = ?"}
		args := []any{q.Model}
		readings := []stream{ix.keyStream(postingKey(fieldModel, q.Model), desc)}
		for i, c := range q.Model {
			if c == '@' {
				name, version := q.Model[:i], q.Model[i+1:]
				conds = append(conds, "(model_name = ? AND model_version = ?)")
				args = append(args, name, version)
				readings = append(readings, &intersectStream{desc: desc, parts: []stream{
					ix.keyStream(postingKey(fieldModel, name), desc), ix.keyStream(postingKey(fieldVersion, version), desc)}})
			}
		}
		if len(conds) == 1 {
			w.add("model_name = ?", q.Model)
			st.streams = append(st.streams, readings[0])
		} else {
			w.add("("+strings.Join(conds, " OR ")+")", args...)
			st.streams = append(st.streams, &unionStream{desc: desc, parts: readings})
		}
	}
	if q.Outcome != "" {
		w.add("outcome = ?", q.Outcome)
		keys(fieldOutcome, q.Outcome)
	}
	if q.Resource != "" {
		if typ, id, ok := strings.Cut(q.Resource, ":"); ok {
			w.add("(resource_id = ? OR (resource_type = ? AND resource_id = ?))", q.Resource, typ, id)
			keys(fieldResource, q.Resource, id)
		} else {
			w.add("resource_id = ?", q.Resource)
			keys(fieldResource, q.Resource)
		}
	}
	// Times outside the years 1678–2262 are stored clamped (unixNano),
	// so all of those past 2262 compare equal, and all before 1678. A
	// bound out there selects every row its clamped value allows (to
	// becomes inclusive), and the records' own times decide (st.times).
	clampedTo := q.hasTo() && clamped(q.To)
	if (q.hasFrom() && clamped(q.From)) || clampedTo {
		st.times = &timeRange{from: q.From, to: q.To, hasFrom: q.hasFrom(), hasTo: q.hasTo()}
	}
	if q.hasFrom() {
		w.add("time >= ?", unixNano(q.From))
	}
	if q.hasTo() && clampedTo {
		w.add("time <= ?", unixNano(q.To))
	} else if q.hasTo() {
		w.add("time < ?", unixNano(q.To))
	}
	if q.hasFrom() || q.hasTo() {
		st.streams = append(st.streams, ix.timeStream(unixNano(q.From), unixNano(q.To), q.hasFrom(), q.hasTo(), clampedTo, desc))
	}
	if q.After != nil {
		if *q.After >= math.MaxInt64 {
			w.none() // no log index is that large
		} else {
			w.add("idx > ?", int64(*q.After))
			st.bounds.lo = max(st.bounds.lo, int64(*q.After)+1)
		}
	}
	// Full text drives the scan: the FTS index yields matches in rowid (log
	// index) order and takes the cursor bound itself, so a page stops early
	// instead of first collecting every match.
	from, order := "records", "idx"
	if ws := words(q.Text); len(ws) > 0 {
		if ix.fullText {
			m := ftsQuery(ws)
			if m == "" {
				w.none()
			}
			from, order = "records_fts JOIN records ON idx = records_fts.rowid", "records_fts.rowid"
			w.add("records_fts MATCH ?", m)
			st.streams = nil
		} else {
			for _, word := range ws {
				st.words = append(st.words, newTextWord(strings.TrimSuffix(word, "*")))
			}
		}
	}
	bound := func(after uint64) {
		if desc {
			w.add(order+" < ?", int64(after))
			st.bounds.hi = min(st.bounds.hi, int64(after)-1)
		} else {
			w.add(order+" > ?", int64(after))
			st.bounds.lo = max(st.bounds.lo, int64(after)+1)
		}
	}
	// One bound on the scan order, the further of the page's cursor and
	// resume (which is past it): SQLite seeks by one of two bounds on the
	// same column and tests the other row by row, so with both every
	// batch of a text scan read the page again from its cursor.
	if q.Cursor != "" {
		after, err := ix.parseCursor(q.Cursor, desc, fp)
		if err != nil {
			return selectStmt{}, err
		}
		if resume == nil {
			resume = &after
		}
	}
	if resume != nil {
		bound(*resume)
	}
	if w.empty || st.bounds.lo > st.bounds.hi {
		return selectStmt{}, nil
	}
	st.args = w.args
	if st.streams != nil {
		st.conds = w.sql()
		return st, nil
	}
	st.sql = "SELECT idx, records.tenant, pos FROM " + from + " WHERE " + w.sql() + " ORDER BY " + order
	if desc {
		st.sql += " DESC"
	}
	st.sql += " LIMIT ?"
	return st, nil
}

// where accumulates the conditions of a statement. Only fixed SQL text
// enters it; every value from the caller is a bound argument.
type where struct {
	conds []string
	args  []any
	empty bool // some condition can never hold
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) none() {
	w.empty = true
	w.add("0")
}

// tenants restricts w to the visible tenants (see Query.Tenants). It
// reports whether they are all tenants.
func (w *where) tenants(visible []string) (all bool) {
	if visible == nil || slices.Contains(visible, "*") {
		return true
	}
	if len(visible) == 0 {
		w.none()
		return false
	}
	w.add("tenant IN "+inList(len(visible)), anys(visible)...)
	return false
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return "1"
	}
	return strings.Join(w.conds, " AND ")
}

// inList returns "(?, ?, ...)" for n values, for an IN condition.
func inList(n int) string {
	return "(?" + strings.Repeat(", ?", n-1) + ")"
}

// anys returns vs as arguments of a query.
func anys[T any](vs []T) []any {
	a := make([]any, len(vs))
	for i, v := range vs {
		a[i] = v
	}
	return a
}

// prefixEnd returns the smallest string greater than every string with
// prefix p, or false if there is none (p is all 0xff bytes).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// ftsQuery turns the words of user text into an FTS5 query that is always
// well formed: every word becomes a quoted string (a phrase of the tokens in
// it), so FTS5 operators, parentheses, column filters and quotes in the text
// are searched for, not obeyed. A trailing "*" is kept as a prefix match.
// Words without a token character would be empty phrases and are dropped;
// ftsQuery returns "" if none is left. FuzzText checks that FTS5 accepts
// whatever it returns.
func ftsQuery(words []string) string {
	var b strings.Builder
	for _, word := range words {
		prefix := false
		for strings.HasSuffix(word, "*") {
			word, prefix = word[:len(word)-1], true
		}
		if !strings.ContainsFunc(word, isTokenChar) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		b.WriteString(strings.ReplaceAll(word, `"`, `""`))
		b.WriteByte('"')
		if prefix {
			b.WriteByte('*')
		}
	}
	return b.String()
}

// words splits text at white space and control characters. FTS5 reads a
// query only up to a NUL, so a NUL must never reach it inside a word; nor
// may valueBreak, which stands between values in the index.
func words(text string) []string {
	return strings.FieldsFunc(text, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == valueBreak })
}

// valueBreak separates the values of a record in the full-text index
// (searchText): U+E000, the first private use character.
const valueBreak = '\uE000'

// isTokenChar reports whether FTS5's unicode61 tokenizer may keep r in a
// token: its default categories (letters, numbers and private use), and,
// beyond the Basic Multilingual Plane, whatever its own tables say (it
// keeps some emoji, such as 🙂, and not others). A word of characters it
// does not keep is an empty phrase to FTS5, which matches nothing alone
// and is ignored beside other words.
func isTokenChar(r rune) bool {
	return r > 0xFFFF || unicode.In(r, unicode.L, unicode.N, unicode.Co)
}
