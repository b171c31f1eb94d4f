// Package index is aitrail's query index: a derived, rebuildable index of the
// log's records in SQLite (modernc.org/sqlite, pure Go), kept up to date by a
// ledger follower and serving GET /v1/events and GET /v1/events/{id}.
//
// The log is the source of truth; the index is not. Everything in it can be
// thrown away (Reset, or deleting the file) and rebuilt by following the log
// from index 0. The index must therefore never be the only place anything is
// kept, and it never alters or interprets a record's bytes: a Hit carries the
// record exactly as the log stores it.
//
// Each record is one row keyed by its log index, with the fields the filters
// of Query use in columns of their own and where the record is in the log
// (ledger.Entry.Offset), but not the record itself: the records of a result
// are read back from the log (Log), which checks each against its Merkle
// leaf. Copying them into SQLite had cost a fifth of the indexing work and
// made the index larger than the log. The follower's cursor lives in the
// same database and moves in the same transaction as the rows, so delivery
// is effectively exactly once; SQLite runs in WAL mode with synchronous=NORMAL
// because a transaction lost in a power cut is simply delivered again.
//
// Text search (Query.Text) has two forms, chosen by Options.FullText. With
// it, an SQLite FTS5 index covers the record's string values (ids, type,
// action, outcome, actor, resource, model, dataset, API and prompt names and
// versions, trace ids and string attributes) but never digests, key ids or
// content (content is encrypted outside the record and is never indexed);
// words match whole tokens. Without it, the default, Query.Text is a
// case-insensitive substring match over the record's JSON, tested on the
// records read back from the log: nothing to maintain, but every query reads
// the records its other filters leave. FTS5 cuts the rate at which records
// can be indexed to a third or a quarter, which is why it is off unless
// asked for.
//
// Indexing is CPU-bound: Apply writes to SQLite on the caller's goroutine
// while others decode the next records. A record costs one row and one entry
// in the index by id; the other filters are answered from block postings
// (postings.go), which cost a few rows per block of 16,384 records instead
// of an index entry per record and filter. BenchmarkApply measures the
// rate, with and without full text.
//
// Visibility is enforced here, not only by callers: every read takes the
// tenants the caller may see, and a record of any other tenant is reported as
// absent.
package index

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"

	json "github.com/go-json-experiment/json"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound reports that a record does not exist in the index or belongs
// to a tenant the caller may not see. The two are deliberately not told
// apart; HTTP maps it to 404.
var ErrNotFound = errors.New("event not found")

// ErrInvalidQuery is wrapped by every error caused by the query itself (a
// malformed or tampered cursor, a limit out of range, an unknown order),
// with a message that says what is wrong and may be shown to the client.
// HTTP maps it to 400.
var ErrInvalidQuery = errors.New("invalid query")

// schemaVersion is stored in PRAGMA user_version. An index file written with
// another version is emptied and rebuilt from the log rather than migrated:
// the index is derived data.
const schemaVersion = 7

// SQLite settings.
const (
	// busyTimeout is how long a statement waits for another connection's
	// write lock before failing with SQLITE_BUSY.
	busyTimeout = 10 * time.Second
	// writerCache is the page cache of the connection Apply writes with,
	// and readerCache that of each connection queries read with, in bytes.
	// Indexing touches many pages of every B-tree; a query few.
	writerCache = 32 << 20
	readerCache = 8 << 20
	// pageSize is the database page size, in bytes.
	pageSize = 16 << 10
	// walCheckpoint is the size, in bytes, the write-ahead log grows to
	// before it is copied into the database.
	walCheckpoint = 128 << 20
)

// Options tune Open. The zero value is usable.
type Options struct {
	// FullText keeps an FTS5 index for Query.Text, at a third to a quarter
	// of the indexing rate (see the package documentation). Turning it on for an
	// existing index empties the index (its cursor goes back to 0) so that
	// the follower rebuilds it with text; turning it off keeps the records
	// and drops only the text index.
	FullText bool
	// Logger receives what the index does in the background (building
	// id filters, lookup.go); default slog.Default().
	Logger *slog.Logger
}

// Log reads records back from the log the index follows, by where they are
// (ledger.Entry.Offset): the index keeps their locations, not copies.
// *ledger.Ledger implements it.
type Log interface {
	// ReadRecords returns the records at locs, in the same order, and
	// fails with a *ledger.RecordError if any is not there as the log
	// committed it (Query and Get then return a *TamperedError). keep, if not nil,
	// is asked about each record first; those it does not keep are nil and
	// need not be checked.
	ReadRecords(locs []ledger.Loc, keep func(record []byte) bool) ([][]byte, error)
}

// maxConns bounds the pooled connections, so the page caches, of one
// Index: those queries (and Reset and ScrubActor) use. Apply has its own
// connection besides (sqlconn.go).
const maxConns = 8

// Index is the query index. It implements ledger.Handler for the follower
// that feeds it and serves queries concurrently with it.
//
// All methods are safe for concurrent use. Reads see the index as of the
// last committed Apply; SQLite's WAL mode lets them run while Apply writes.
type Index struct {
	db       *sql.DB
	log      Log
	fullText bool
	macKey   []byte // authenticates query cursors (cursor.go)
	logger   *slog.Logger

	applyMu sync.Mutex
	writer  *conn // Apply's own connection, with the larger cache (sqlconn.go)
	// open is the postings of the block the last Apply ended in, for the
	// next Apply to continue; nil when unknown (they are then rebuilt).
	// They are written to the table once the block is complete; until
	// then queries read them from served, which is open (or, until a
	// failed Apply is retried, the postings open was before it) once the
	// Apply that made them has committed. When served is nil the table
	// has them all. Apply adds to served's postings under servedMu;
	// queries read them under it.
	open     *blockPostings
	servedMu sync.RWMutex
	served   *blockPostings
	closed   bool   // Close was called (guarded by applyMu)
	gen      uint64 // bumped by Reset (guarded by applyMu)
	// openIDs is the id filter of the part the last Apply ended in, for
	// the next Apply to continue (nil: rebuilt from the rows), and ids
	// those of the complete parts, which lookups use (lookup.go).
	openIDs *partIDs
	ids     idFilters
	// openGroup is the id filter of the group the last Apply ended in, for
	// the next Apply to continue (nil: unknown, and the group's filter
	// left to buildGroups).
	openGroup *groupIDs
	// groupKick wakes buildGroups; stopGroups ends it, and groupsDone is
	// closed when it has.
	groupKick  chan struct{}
	stopGroups context.CancelFunc
	groupsDone chan struct{}
	// visible is the log index before which queries see every applied
	// record (Visible).
	visible atomic.Uint64
	// checked counts the candidate rows scans have checked, which tells
	// how much of the index a query had to look at.
	checked atomic.Int64
}

var _ ledger.Handler = (*Index)(nil)

// Open opens the index at path, creating the file and schema if needed, over
// log, which it follows and reads records back from. An index written by an
// incompatible version of aitrail is emptied, so that its follower rebuilds
// it from index 0; so is one that had full text off when opts turns it on.
// Close the Index when done.
func Open(path string, log Log, opts Options) (*Index, error) {
	if path == "" {
		return nil, errors.New("couldn't open index: empty path")
	}
	if log == nil {
		return nil, errors.New("couldn't open index: no log to read records from")
	}
	params := url.Values{}
	params.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	params.Add("_pragma", fmt.Sprintf("cache_size(%d)", -readerCache/1024))
	// Records of about 1 KiB fill 4 KiB pages badly and make many small
	// writes; 16 KiB pages index about a quarter faster. The page size only
	// takes effect when the file is created, so it must come before
	// journal_mode, which the driver applies after all _pragma values.
	params.Add("_pragma", fmt.Sprintf("page_size(%d)", pageSize))
	params.Add("_pragma", "temp_store(MEMORY)")
	params.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walCheckpoint/pageSize))
	params.Set("_journal_mode", "WAL")
	params.Set("_synchronous", "NORMAL")
	// Apply's transaction takes the write lock up front, so that two
	// writers wait on each other (busy_timeout) instead of one failing when
	// it tries to upgrade a read lock.
	params.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + params.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("couldn't open index %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxConns)
	ix := &Index{db: db, log: log, fullText: opts.FullText, logger: opts.Logger}
	if ix.logger == nil {
		ix.logger = slog.Default()
	}
	if err := ix.init(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("couldn't open index %s: %w", path, err)
	}
	if err := ix.loadIDFilters(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("couldn't open index %s: %w", path, err)
	}
	ix.writer, err = openConn(path, int(busyTimeout.Milliseconds()),
		fmt.Sprintf("PRAGMA cache_size = %d", -writerCache/1024),
		"PRAGMA temp_store = MEMORY",
		"PRAGMA synchronous = NORMAL",
		fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walCheckpoint/pageSize))
	if err == nil {
		// A previous run may have stopped with the open block's postings
		// unwritten: they are rebuilt from its rows and written.
		ix.applyMu.Lock()
		err = ix.writeOpenBlock(context.Background())
		ix.applyMu.Unlock()
	}
	if err != nil {
		if ix.writer != nil {
			ix.writer.close()
		}
		db.Close()
		return nil, fmt.Errorf("couldn't open index %s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ix.groupKick, ix.stopGroups, ix.groupsDone = make(chan struct{}, 1), cancel, make(chan struct{})
	go func() {
		defer close(ix.groupsDone)
		ix.buildGroups(ctx, ix.groupKick)
	}()
	ix.kickGroups()
	return ix, nil
}

// kickGroups has buildGroups look for complete groups without a filter.
func (ix *Index) kickGroups() {
	select {
	case ix.groupKick <- struct{}{}:
	default:
	}
}

// schema creates everything but the FTS table.
//
// records has one row per record and a single index, records_id, for
// lookups by event id (see idPart). The other filters of Query are answered
// from postings and blocks (postings.go), not from an index per column: six
// such indexes had taken three quarters of the indexing work.
//
// The columns have no NOT NULL constraints on purpose: a constraint that can
// fail forces SQLite to keep a statement journal, which slows every insert,
// and parseOne already guarantees the values.
const schema = `
CREATE TABLE IF NOT EXISTS records (
	idx           INTEGER PRIMARY KEY, -- log index
	tenant        TEXT,
	id            TEXT,
	type          TEXT,
	time          INTEGER,             -- event time, Unix nanoseconds
	actor_id      TEXT,
	model_name    TEXT,
	model_version TEXT,
	outcome       TEXT,
	resource_type TEXT,
	resource_id   TEXT,
	pos           INTEGER              -- ledger.Entry.Offset: where the record is in the log
);
CREATE INDEX IF NOT EXISTS records_id ON records (` + idPart + `, id, tenant);
CREATE TABLE IF NOT EXISTS postings (
	key   BLOB,                        -- field tag and value (postingKey)
	block INTEGER,                     -- log index >> blockBits
	bits  BLOB,                        -- which of the block's records have it (encodePlaces)
	PRIMARY KEY (key, block)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_filters (
	part INTEGER PRIMARY KEY,          -- log index >> partBits, of a complete part
	bits BLOB                          -- Bloom filter of its ids (lookup.go)
);
CREATE TABLE IF NOT EXISTS id_group_filters (
	grp  INTEGER PRIMARY KEY,          -- part / groupParts, of a complete group
	bits BLOB                          -- Bloom filter of its ids (lookup.go)
);
CREATE TABLE IF NOT EXISTS chunks (
	chunk    INTEGER PRIMARY KEY,      -- log index >> chunkBits
	min_time INTEGER,                  -- event times of the chunk's records
	max_time INTEGER
);
CREATE TABLE IF NOT EXISTS tenants (
	name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
	one       INTEGER PRIMARY KEY CHECK (one = 1),
	cursor    INTEGER NOT NULL,    -- next log index needed
	full_text INTEGER NOT NULL,    -- whether records_fts is maintained
	mac_key   BLOB    NOT NULL     -- cursor authentication key
);
`

// ftsSchema is a contentless FTS5 table whose rowid is the log index: only
// the inverted index is kept, since matches are read back from records.
const ftsSchema = `
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(
	text, content='', contentless_delete=1
);
`

const dropAll = `
DROP TABLE IF EXISTS records;
DROP TABLE IF EXISTS postings;
DROP TABLE IF EXISTS blocks;
DROP TABLE IF EXISTS chunks;
DROP TABLE IF EXISTS id_filters;
DROP TABLE IF EXISTS id_group_filters;
DROP TABLE IF EXISTS records_fts;
DROP TABLE IF EXISTS state;
`

func (ix *Index) init(ctx context.Context) error {
	var version int
	if err := ix.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if version != 0 && version != schemaVersion {
		if _, err := ix.db.ExecContext(ctx, dropAll); err != nil {
			return fmt.Errorf("couldn't drop index schema version %d: %w", version, err)
		}
	}
	tx, err := ix.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("couldn't create schema: %w", err)
	}
	var fullText bool
	err = tx.QueryRowContext(ctx, "SELECT full_text, mac_key FROM state").Scan(&fullText, &ix.macKey)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		ix.macKey = make([]byte, 32)
		rand.Read(ix.macKey)
		if _, err := tx.ExecContext(ctx, "INSERT INTO state (one, cursor, full_text, mac_key) VALUES (1, 0, ?, ?)", ix.fullText, ix.macKey); err != nil {
			return err
		}
	case err != nil:
		return err
	case ix.fullText && !fullText:
		// The rows have no text entries; start again rather than serve
		// text matches from part of the log.
		if err := reset(ctx, tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE state SET full_text = ?", ix.fullText); err != nil {
		return err
	}
	if ix.fullText {
		if _, err := tx.ExecContext(ctx, ftsSchema); err != nil {
			return fmt.Errorf("couldn't create full-text index: %w", err)
		}
	} else if _, err := tx.ExecContext(ctx, "DROP TABLE IF EXISTS records_fts"); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)); err != nil {
		return err
	}
	return tx.Commit()
}

// Close writes the open block's postings and closes the database; it
// waits for an Apply in progress. Nothing is lost by stopping without
// Close: postings are rebuilt from the rows at Open, and an Apply either
// committed or will be delivered again.
func (ix *Index) Close() error {
	ix.stopGroups()
	<-ix.groupsDone
	ix.applyMu.Lock()
	if !ix.closed && ix.open != nil && ix.open.changed() {
		ix.writeOpenBlock(context.Background()) // on failure, Open rebuilds them
	}
	ix.closed = true
	ix.writer.close() // under applyMu: nothing else may use it meanwhile
	ix.applyMu.Unlock()
	return ix.db.Close()
}

// Visible returns the log index before which queries see every applied
// record: the cursor as of the last committed Apply.
func (ix *Index) Visible() uint64 { return ix.visible.Load() }

// IDFilterBytes returns the memory the filters of the ids of complete parts
// take (lookup.go): 20 KiB for each 16,384 records.
func (ix *Index) IDFilterBytes() int64 { return ix.ids.bytes() }

// writeOpenBlock writes the postings of the block the cursor is in, as far
// as they changed (all of them when they are rebuilt from the rows), so
// that the table has every posting. applyMu must be held.
func (ix *Index) writeOpenBlock(ctx context.Context) error {
	cursor, open, err := ix.begin(ctx)
	if err != nil {
		return err
	}
	defer ix.writer.rollback()
	bp, err := openBlock(ix.writer, open, cursor)
	if err != nil {
		return err
	}
	if bp.changed() {
		pw, err := prepareWriter(ix.writer)
		if err != nil {
			return err
		}
		if err := pw.flush(bp); err != nil {
			return err
		}
		if err := ix.writer.commit(); err != nil {
			return fmt.Errorf("couldn't write postings of block %d: %w", bp.block, err)
		}
	}
	ix.open = bp
	ix.serve(nil)
	ix.visible.Store(cursor)
	return nil
}

// begin starts a transaction on the writer connection and returns the
// index cursor and the open block's postings, which ix no longer holds:
// they change as rows are added, and unless the caller puts them back
// after committing, the next transaction rebuilds them. The caller must
// end the transaction (ix.writer.commit or rollback). applyMu must be held.
func (ix *Index) begin(ctx context.Context) (cursor uint64, open *blockPostings, err error) {
	open, ix.open = ix.open, nil
	if ix.closed {
		return 0, nil, errors.New("couldn't begin index transaction: the index is closed")
	}
	if err := ctx.Err(); err != nil {
		return 0, nil, fmt.Errorf("couldn't begin index transaction: %w", err)
	}
	if err := ix.writer.begin(); err != nil {
		return 0, nil, fmt.Errorf("couldn't begin index transaction: %w", err)
	}
	c, err := ix.writer.queryInt("SELECT cursor FROM state")
	if err != nil {
		ix.writer.rollback()
		return 0, nil, fmt.Errorf("couldn't read index cursor: %w", err)
	}
	return uint64(c), open, nil
}

// Cursor returns the log index of the next entry the index needs: every
// entry before it has been applied durably (see ledger.Handler).
func (ix *Index) Cursor(ctx context.Context) (uint64, error) {
	var c int64
	if err := ix.db.QueryRowContext(ctx, "SELECT cursor FROM state").Scan(&c); err != nil {
		return 0, fmt.Errorf("couldn't read index cursor: %w", err)
	}
	return uint64(c), nil
}

// LastRecord returns what the index holds of the last record it indexed:
// its log index, event key and place in the log; ok is false when it holds
// none. The server compares it with the log at start: an index that
// describes another log (a log restored from a copy, an index copied from
// another data directory) must be rebuilt, not served.
func (ix *Index) LastRecord(ctx context.Context) (index uint64, tenant, id string, pos int64, ok bool, err error) {
	var i int64
	err = ix.db.QueryRowContext(ctx, "SELECT idx, tenant, id, pos FROM records ORDER BY idx DESC LIMIT 1").Scan(&i, &tenant, &id, &pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", "", 0, false, nil
	}
	if err != nil {
		return 0, "", "", 0, false, fmt.Errorf("couldn't read the index's last record: %w", err)
	}
	return uint64(i), tenant, id, pos, true, nil
}

// row is a record reduced to the index's columns.
type row struct {
	idx        int64
	tenant, id string
	typ        string
	time       int64
	// The optional columns; "" when absent (NULL in the table).
	actorID      string
	modelName    string
	modelVersion string
	outcome      string
	resourceType string
	resourceID   string
	pos          int64  // ledger.Entry.Offset
	text         string // for FTS; empty when full text is off
}

// Apply indexes consecutive log entries and moves the cursor past the last
// one, all in one transaction: when Apply returns nil both are durable, and
// when it returns an error neither happened.
//
// Apply is idempotent. Entries before the cursor are already indexed and
// are skipped, so entries delivered again after a crash neither duplicate
// rows nor fail, and the cursor never moves backwards (only Reset does
// that). A record whose (tenant, id) is already indexed at another log index
// (the same event sequenced twice, which ingest does not let happen) is
// indexed too, as the log holds both; Get and LookupID report the first. A
// record that cannot be parsed fails the whole Apply; the follower retries,
// and finding corruption in the log is verify's job. Entries must be
// consecutive and must not start after the cursor, which would leave a gap.
//
// Apply parses records on GOMAXPROCS-1 (at least one) other goroutines
// while it writes.
//
// A privacy.erasure record among them scrubs its pseudonym from the rows
// before it (ScrubActor), once they are committed: rows of events indexed
// after the erasure answered, and every row of an index rebuilt from the
// log, lose it as the erasure did.
func (ix *Index) Apply(ctx context.Context, entries []ledger.Entry) error {
	if err := ix.apply(ctx, entries); err != nil {
		return err
	}
	return ix.scrubErased(ctx, entries)
}

// scrubErased scrubs the pseudonyms that the privacy.erasure records among
// entries name from the index.
func (ix *Index) scrubErased(ctx context.Context, entries []ledger.Entry) error {
	for _, e := range entries {
		rec, err := event.RecordOfType(e.Value, e.Data, "privacy.erasure")
		if err != nil || rec == nil || rec.Resource == nil || rec.Resource.ID == "" {
			continue
		}
		if _, err := ix.ScrubActor(ctx, rec.Tenant, rec.Resource.ID); err != nil {
			return fmt.Errorf("couldn't apply the erasure at %d: %w", e.Index, err)
		}
	}
	return nil
}

func (ix *Index) apply(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].Index != entries[i-1].Index+1 {
			return fmt.Errorf("couldn't index entries: index %d follows %d", entries[i].Index, entries[i-1].Index)
		}
	}
	first, last := entries[0].Index, entries[len(entries)-1].Index
	if last >= math.MaxInt64 {
		return fmt.Errorf("couldn't index entry %d: index out of range", last)
	}

	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	openIDs, openGroup := ix.openIDs, ix.openGroup
	ix.openIDs, ix.openGroup = nil, nil // until this transaction commits
	cursor, open, err := ix.begin(ctx)
	if err != nil {
		return err
	}
	defer ix.writer.rollback()
	if first > cursor {
		return fmt.Errorf("couldn't index entries from %d: the cursor is %d, so entries in between would be missing", first, cursor)
	}
	if last < cursor {
		ix.open, ix.openIDs, ix.openGroup = open, openIDs, openGroup
		return nil // all indexed before
	}
	if openGroup != nil && openGroup.next != cursor {
		openGroup = nil
	}
	entries = entries[cursor-first:]

	bp, err := openBlock(ix.writer, open, cursor)
	if err != nil {
		return err
	}
	ids, err := openPartIDs(ix.writer, openIDs, cursor)
	if err != nil {
		return err
	}
	pw, err := prepareWriter(ix.writer)
	if err != nil {
		return err
	}
	rows, ready, stop := ix.parseAsync(entries)
	defer stop()
	if bp, err = ix.insert(ctx, pw, rows, ready, bp); err != nil {
		return err
	}
	ids, complete, err := addIDs(ix.writer, ids, rows)
	if err != nil {
		return err
	}
	group, groups, err := addGroupIDs(ix.writer, openGroup, rows)
	if err != nil {
		return err
	}
	if err := ix.writer.execInt("UPDATE state SET cursor = ?", int64(last)+1); err != nil {
		return fmt.Errorf("couldn't set index cursor: %w", err)
	}
	if err := ix.writer.commit(); err != nil {
		return fmt.Errorf("couldn't commit index entries %d-%d: %w", first, last, err)
	}
	bp.next = last + 1
	ix.open = bp
	ix.openIDs, ix.openGroup = ids, group
	ix.ids.set(complete)
	for _, g := range groups {
		if g.ids != nil {
			ix.ids.setGroup(g.group, g.ids)
		}
	}
	if bp != ix.served {
		ix.serve(bp)
	}
	ix.visible.Store(last + 1)
	if len(groups) > 0 {
		// For those without a filter; after Visible has moved past them,
		// which is how buildGroups knows they are complete.
		ix.kickGroups()
	}
	return nil
}

// serve makes bp the postings queries read for the open block (nil: the
// table has them all).
func (ix *Index) serve(bp *blockPostings) {
	ix.servedMu.Lock()
	ix.served = bp
	ix.servedMu.Unlock()
}

// insertRecord inserts one row; one already there (Apply skips entries
// before the cursor, so none should be) is left alone. One row per
// statement is faster than many: a statement that writes several rows
// needs a statement journal, which copies every page it touches.
const insertRecord = `INSERT INTO records
	(idx, tenant, id, type, time, actor_id, model_name, model_version, outcome, resource_type, resource_id, pos)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT DO NOTHING`

// insertText returns an INSERT of n rows into the FTS table. Rows skipped by
// insertRecord leave an orphan entry here, which no query can reach: text
// matches are only ever looked up from records.
func insertText(n int) string {
	return "INSERT INTO records_fts (rowid, text) VALUES " + strings.Repeat("(?, ?), ", n-1) + "(?, ?)"
}

// insert writes rows, each group of parseGroup rows as soon as ready
// reports that it has been parsed, and their postings, continuing bp (the
// postings of the block the first row is in). It returns the postings of
// the block the last row is in, whose times it writes but not its
// postings (see Index.served); those of the blocks before are written whole.
func (ix *Index) insert(ctx context.Context, pw *postingWriter, rows []row, ready []chan error, bp *blockPostings) (_ *blockPostings, err error) {
	w := ix.writer
	insert, err := w.prepare(insertRecord)
	if err != nil {
		return nil, fmt.Errorf("couldn't prepare insert: %w", err)
	}
	tenant, err := w.prepare("INSERT OR IGNORE INTO tenants (name) VALUES (?)")
	if err != nil {
		return nil, fmt.Errorf("couldn't prepare insert: %w", err)
	}
	seen := map[string]bool{}
	for g := range ready {
		if err := <-ready[g]; err != nil {
			return nil, err
		}
		for i := g * parseGroup; i < min((g+1)*parseGroup, len(rows)); i++ {
			if t := rows[i].tenant; !seen[t] {
				seen[t] = true
				tenant.bindText(1, t)
				if _, err := tenant.exec(); err != nil {
					return nil, fmt.Errorf("couldn't index tenant: %w", err)
				}
			}
		}
		// Cancellation is checked once a group: SQLite's calls do not
		// watch the context.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for i := g * parseGroup; i < min((g+1)*parseGroup, len(rows)); i++ {
			r := &rows[i]
			insert.bindInt(1, r.idx)
			insert.bindText(2, r.tenant)
			insert.bindText(3, r.id)
			insert.bindText(4, r.typ)
			insert.bindInt(5, r.time)
			insert.bindOptional(6, r.actorID)
			insert.bindOptional(7, r.modelName)
			insert.bindOptional(8, r.modelVersion)
			insert.bindOptional(9, r.outcome)
			insert.bindOptional(10, r.resourceType)
			insert.bindOptional(11, r.resourceID)
			insert.bindInt(12, r.pos)
			n, err := insert.exec()
			if err != nil {
				return nil, fmt.Errorf("couldn't index entry %d: %w", r.idx, err)
			}
			if n == 0 {
				continue // indexed before: no postings
			}
			if b := r.idx >> blockBits; b != bp.block {
				if err := pw.flush(bp); err != nil {
					return nil, err
				}
				bp = newBlockPostings(b)
			}
			ix.servedMu.Lock() // bp may be served (uncontended otherwise)
			bp.add(r)
			ix.servedMu.Unlock()
		}
	}
	// Before the text: see insertTexts.
	if err := pw.flushTimes(bp); err != nil {
		return nil, err
	}
	if ix.fullText {
		return bp, insertTexts(w, rows)
	}
	return bp, nil
}

// textRows is the most rows one INSERT into the FTS table writes.
const textRows = 4096

// insertTexts adds rows to the full-text index. It must be the last write
// to the FTS table in its transaction, and must not be done in many small
// statements: FTS5 flushes its in-memory index to disk at every statement
// savepoint once it is part of a transaction, and many small flushes make
// many small segments that then have to be merged, which slowed indexing
// several times over.
func insertTexts(w *conn, rows []row) error {
	for len(rows) > 0 {
		n := min(len(rows), textRows)
		if err := insertTextRows(w, rows[:n]); err != nil {
			return fmt.Errorf("couldn't index text of entries %d-%d: %w", rows[0].idx, rows[n-1].idx, err)
		}
		rows = rows[n:]
	}
	return nil
}

// insertTextRows inserts rows into the FTS table in one statement, kept
// prepared only when it has the most rows (other counts vary).
func insertTextRows(w *conn, rows []row) error {
	s, err := w.prepareMaybe(insertText(len(rows)), len(rows) == textRows)
	if err != nil {
		return err
	}
	if len(rows) != textRows {
		defer s.finalize()
	}
	for i := range rows {
		s.bindInt(2*i+1, rows[i].idx)
		s.bindText(2*i+2, rows[i].text)
	}
	_, err = s.exec()
	return err
}

var errStopped = errors.New("stopped")

// parseGroup is how many entries are parsed at a time: small enough that
// writing starts soon, large enough that handing over costs little.
const parseGroup = 64

// parseAsync parses entries into rows in the background, in groups of
// parseGroup taken in order, so that writing the first groups overlaps with
// parsing the next ones. Receiving from ready[g] waits for group g and
// reports its parse error. stop must be called when the rows are no longer
// needed; it returns once the background work has ended, so entries and
// rows are no longer in use.
func (ix *Index) parseAsync(entries []ledger.Entry) (rows []row, ready []chan error, stop func()) {
	rows = make([]row, len(entries))
	ready = make([]chan error, (len(entries)+parseGroup-1)/parseGroup)
	for g := range ready {
		ready[g] = make(chan error, 1)
	}
	var next atomic.Int64
	var stopped atomic.Bool
	var wg sync.WaitGroup
	// The caller's goroutine writes; the others parse.
	for range max(1, min(runtime.GOMAXPROCS(0)-1, len(ready))) {
		wg.Go(func() {
			for {
				g := int(next.Add(1) - 1)
				if g >= len(ready) {
					return
				}
				if stopped.Load() {
					ready[g] <- errStopped
					continue
				}
				var err error
				for i := g * parseGroup; i < min((g+1)*parseGroup, len(entries)) && err == nil; i++ {
					err = ix.parseOne(&rows[i], entries[i])
				}
				ready[g] <- err
			}
		})
	}
	return rows, ready, func() {
		stopped.Store(true)
		wg.Wait()
	}
}

// keyFields is the part of a record that the index's columns hold. Without
// full text, decoding only this takes half the time of decoding a whole
// event.Record.
//
// Records are decoded with github.com/go-json-experiment/json (the future
// encoding/json/v2), about twice as fast as encoding/json, and not with
// event.ParseRecord, which also re-encodes each record to check that it is
// canonical: the index needs only a few fields, and checking the log's
// records is verify's job.
type keyFields struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Time     time.Time       `json:"time"`
	Tenant   string          `json:"tenant"`
	Actor    *event.Actor    `json:"actor"`
	Outcome  string          `json:"outcome"`
	Resource *event.Resource `json:"resource"`
	Model    *event.Model    `json:"model"`
}

// parseOne reduces one entry to a row.
func (ix *Index) parseOne(r *row, e ledger.Entry) error {
	var k keyFields
	var text string
	var rec *event.Record
	var err error
	if e.Value != nil || ix.fullText {
		rec, err = event.RecordFrom(e.Value, e.Data)
	} else {
		err = json.Unmarshal(e.Data, &k) // decoding only these is faster
	}
	if err != nil {
		return fmt.Errorf("couldn't parse record %d: %w", e.Index, err)
	}
	if rec != nil {
		k = keyFields{ID: rec.ID, Type: rec.Type, Time: rec.Time, Tenant: rec.Tenant,
			Actor: rec.Actor, Outcome: rec.Outcome, Resource: rec.Resource, Model: rec.Model}
		if ix.fullText {
			text = searchText(rec)
		}
	}
	if k.ID == "" || k.Tenant == "" {
		return fmt.Errorf("couldn't index record %d: it has no id or tenant", e.Index)
	}
	*r = row{
		idx:     int64(e.Index),
		tenant:  k.Tenant,
		id:      k.ID,
		typ:     k.Type,
		time:    unixNano(k.Time),
		outcome: k.Outcome,
		pos:     e.Offset,
		text:    text,
	}
	if a := k.Actor; a != nil {
		r.actorID = a.ID
	}
	if m := k.Model; m != nil {
		r.modelName, r.modelVersion = m.Name, m.Version
	}
	if res := k.Resource; res != nil {
		r.resourceType, r.resourceID = res.Type, res.ID
	}
	return nil
}

// unixNano is t.UnixNano clamped to int64, so that a time outside the years
// 1678–2262 still sorts before or after every time inside them; a query
// with a bound out there checks the records' own times (timeRange).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	const limit = math.MaxInt64 / int64(time.Second)
	switch s := t.Unix(); {
	case s <= -limit:
		return math.MinInt64
	case s >= limit:
		return math.MaxInt64
	}
	return t.UnixNano()
}

// searchText gathers the record's searchable string values, one per line.
// Digests, key ids and content are left out: the first two are noise to a
// reader and the last is never in the record.
//
// Between values stands valueBreak, a token of its own (private use
// characters are token characters to FTS5's tokenizer) that no query holds
// (words splits at it): a word with punctuation is a phrase of its tokens,
// which would otherwise match the end of one value and the start of the
// next ("embedding.acme" in type ai.embedding and tenant acme).
func searchText(r *event.Record) string {
	var b strings.Builder
	add := func(ss ...string) {
		for _, s := range ss {
			if s != "" {
				b.WriteString(s)
				b.WriteString("\n" + string(valueBreak) + "\n")
			}
		}
	}
	add(r.ID, r.Type, r.Tenant, r.Action, r.Outcome, r.TraceID, r.SpanID)
	if a := r.Actor; a != nil {
		add(a.ID, a.Type, a.IP, a.UserAgent, a.SessionID)
	}
	if x := r.Resource; x != nil {
		add(x.Type, x.ID, x.Name)
	}
	if x := r.Model; x != nil {
		add(x.Provider, x.Name, x.Version)
	}
	if x := r.Dataset; x != nil {
		add(x.Name, x.Version)
	}
	if x := r.API; x != nil {
		add(x.Name, x.Version)
	}
	if x := r.Prompt; x != nil {
		add(x.ID, x.Version)
	}
	for _, v := range r.Attributes {
		if s, ok := v.(string); ok && !strings.HasPrefix(s, "sha256:") {
			add(s)
		}
	}
	return b.String()
}

// Reset empties the index and sets its cursor to 0, in one transaction, so
// that its follower rebuilds it from the start of the log (aitrail reindex).
// Cursors handed out before remain valid.
func (ix *Index) Reset(ctx context.Context) error {
	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	ix.open, ix.openIDs, ix.openGroup = nil, nil, nil
	tx, err := ix.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("couldn't reset index: %w", err)
	}
	defer tx.Rollback()
	if err := reset(ctx, tx); err != nil {
		return fmt.Errorf("couldn't reset index: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("couldn't reset index: %w", err)
	}
	ix.ids.clear()
	ix.gen++
	ix.serve(nil)
	ix.visible.Store(0)
	return nil
}

func reset(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, "DELETE FROM records; DELETE FROM postings; DELETE FROM chunks; DELETE FROM id_filters; DELETE FROM id_group_filters; DELETE FROM tenants; UPDATE state SET cursor = 0"); err != nil {
		return err
	}
	// The FTS table may not exist (full text off, or not created yet).
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema WHERE name = 'records_fts'").Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		if _, err := tx.ExecContext(ctx, "INSERT INTO records_fts (records_fts) VALUES ('delete-all')"); err != nil {
			return err
		}
	}
	return nil
}

// Stats describes the index's size and progress.
type Stats struct {
	// Records is the number of records indexed.
	Records uint64
	// Cursor is the log index of the next entry the index needs; the
	// follower lag is the log size minus Cursor.
	Cursor uint64
}

// Tenants returns every tenant that has records in the index.
func (ix *Index) Tenants(ctx context.Context) ([]string, error) {
	rows, err := ix.db.QueryContext(ctx, "SELECT name FROM tenants ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("couldn't list tenants: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("couldn't list tenants: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// ScrubActor removes actor id from the index rows of tenant that carry it,
// and those rows from the actor's postings, so that no search by it finds
// them, and returns how many rows it changed. The records themselves keep
// it: it is part of what the tree commits to. Rebuilding the index brings
// it back.
func (ix *Index) ScrubActor(ctx context.Context, tenant, actorID string) (int64, error) {
	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	// The scrub finds the actor's records by the postings in the table,
	// which must include the open block's.
	if err := ix.writeOpenBlock(ctx); err != nil {
		return 0, fmt.Errorf("couldn't scrub the index: %w", err)
	}
	ix.open = nil // the open block's postings change
	n, err := ix.scrubActor(ctx, tenant, actorID)
	if err != nil {
		return 0, fmt.Errorf("couldn't scrub the index: %w", err)
	}
	return n, nil
}

func (ix *Index) scrubActor(ctx context.Context, tenant, actorID string) (int64, error) {
	tx, err := ix.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	key := postingKey(fieldActor, actorID)
	rows, err := tx.QueryContext(ctx, "SELECT block, bits FROM postings WHERE key = ? ORDER BY block", key)
	if err != nil {
		return 0, err
	}
	blocks, err := scanPostings(rows, nil)
	if err != nil {
		return 0, err
	}
	var scrubbed int64
	for _, b := range blocks {
		idxs, _ := idxRange{0, math.MaxInt64}.candidates(nil, b.block, &b.bits, false, 0, blockSize)
		if len(idxs) == 0 {
			continue // an altered posting naming no record
		}
		in, args := idxIn(idxs)
		res, err := tx.ExecContext(ctx, "UPDATE records SET actor_id = NULL WHERE "+in+" AND actor_id = ? AND tenant = ?", append(args, actorID, tenant)...)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		if n == 0 {
			continue
		}
		scrubbed += n
		// Other tenants' rows may carry the same actor id.
		var left []uint16
		rest, err := tx.QueryContext(ctx, "SELECT idx FROM records WHERE "+in+" AND actor_id = ? ORDER BY idx", append(args, actorID)...)
		if err != nil {
			return 0, err
		}
		for rest.Next() {
			var idx int64
			if err = rest.Scan(&idx); err != nil {
				break
			}
			left = append(left, uint16(idx&blockMask))
		}
		if err == nil {
			err = rest.Err()
		}
		rest.Close()
		if err != nil {
			return 0, err
		}
		if len(left) == 0 {
			_, err = tx.ExecContext(ctx, "DELETE FROM postings WHERE key = ? AND block = ?", key, b.block)
		} else {
			_, err = tx.ExecContext(ctx, "UPDATE postings SET bits = ? WHERE key = ? AND block = ?", encodePlaces(left), key, b.block)
		}
		if err != nil {
			return 0, err
		}
	}
	return scrubbed, tx.Commit()
}

// Stats returns the number of indexed records and the cursor, read
// consistently with each other. Counting takes time in proportion to the
// size of the index; use Cursor to follow progress often.
func (ix *Index) Stats(ctx context.Context) (Stats, error) {
	var n, c int64
	err := ix.db.QueryRowContext(ctx, "SELECT (SELECT count(*) FROM records), cursor FROM state").Scan(&n, &c)
	if err != nil {
		return Stats{}, fmt.Errorf("couldn't read index stats: %w", err)
	}
	return Stats{Records: uint64(n), Cursor: uint64(c)}, nil
}
