package index

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

func stats(t *testing.T, ix *Index) Stats {
	t.Helper()
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestApplyIdempotent(t *testing.T) {
	for _, opts := range modes {
		ix, e := openTemp(t, opts)
		es := e.add(t, fixture()...)
		ctx := context.Background()

		apply(t, ix, es)
		apply(t, ix, es)      // the follower's at-least-once redelivery
		apply(t, ix, es[2:4]) // a redelivered part
		apply(t, ix, es[4:])  // the tail again
		if got := stats(t, ix); got != (Stats{Records: 6, Cursor: 6}) {
			t.Errorf("after re-applying: %+v, want 6 records, cursor 6", got)
		}
		p, err := ix.Query(ctx, Query{Text: "completions"})
		if err != nil {
			t.Fatal(err)
		}
		if got := indexes(p); !slices.Equal(got, []uint64{0, 4}) {
			t.Errorf("text search after re-applying: %v, want [0 4]", got)
		}

		// The same event sequenced twice: the index shows what the log
		// holds, and finds the first by id.
		dup := e.add(t, rec("acme", "e1", "ai.inference"), rec("acme", "e6", "ai.inference"))
		apply(t, ix, dup)
		if got := stats(t, ix); got != (Stats{Records: 8, Cursor: 8}) {
			t.Errorf("after a duplicate id: %+v, want 8 records, cursor 8", got)
		}
		if idx, ok, err := ix.LookupID(ctx, "acme", "e1"); err != nil || !ok || idx != 0 {
			t.Errorf("LookupID(acme, e1) = %d, %v, %v; want 0", idx, ok, err)
		}
		if h, err := ix.Get(ctx, nil, "acme", "e1"); err != nil || h.Index != 0 {
			t.Errorf("Get(acme, e1) = index %d, %v; want 0", h.Index, err)
		}
	}
}

func TestApplyRejects(t *testing.T) {
	ctx := context.Background()
	_, e := openTemp(t, Options{})
	good := e.add(t, fixture()...)
	shifted := slices.Clone(good)
	for i := range shifted {
		shifted[i].Index++
	}
	bad := func(i int, data string) []ledger.Entry {
		es := slices.Clone(good)
		es[i] = ledger.Entry{Index: es[i].Index, Data: []byte(data)}
		return es
	}
	tests := []struct {
		name    string
		entries []ledger.Entry
	}{
		{"not json", bad(3, "{not json")},
		{"not a record", bad(3, `{"id":5}`)},
		{"no id", bad(3, `{"type":"x","tenant":"acme","time":"2025-01-01T00:00:00Z","received_at":"2025-01-01T00:00:00Z"}`)},
		{"gap before", shifted},
		{"gap inside", append(slices.Clone(good[:2]), good[3:]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix, _ := openTemp(t, Options{})
			if err := ix.Apply(ctx, tt.entries); err == nil {
				t.Fatal("Apply succeeded")
			}
			// Nothing of the batch is indexed, so the retry starts clean.
			if got := stats(t, ix); got != (Stats{}) {
				t.Errorf("after failed Apply: %+v, want empty", got)
			}
		})
	}
}

func TestCursorPersists(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	if c, err := ix.Cursor(ctx); err != nil || c != 0 {
		t.Fatalf("new index: cursor %d, %v; want 0", c, err)
	}
	apply(t, ix, e.add(t, fixture()...))
	p, err := ix.Query(ctx, Query{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}

	ix = e.open(t, Options{})
	if c, err := ix.Cursor(ctx); err != nil || c != 6 {
		t.Errorf("reopened: cursor %d, %v; want 6", c, err)
	}
	if got := stats(t, ix); got.Records != 6 {
		t.Errorf("reopened: %d records, want 6", got.Records)
	}
	// Clients paging through results are not disturbed by a restart.
	p, err = ix.Query(ctx, Query{Limit: 2, Cursor: p.NextCursor})
	if err != nil {
		t.Fatalf("cursor from before reopening: %v", err)
	}
	if got := indexes(p); !slices.Equal(got, []uint64{2, 3}) {
		t.Errorf("second page after reopening: %v, want [2 3]", got)
	}
}

func TestReset(t *testing.T) {
	for _, opts := range modes {
		ctx := context.Background()
		ix, e := openTemp(t, opts)
		es := e.add(t, fixture()...)
		apply(t, ix, es)
		if err := ix.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		if got := stats(t, ix); got != (Stats{}) {
			t.Errorf("after Reset: %+v, want empty", got)
		}
		for _, q := range []Query{{}, {Text: "completions"}} {
			if p, err := ix.Query(ctx, q); err != nil || len(p.Hits) != 0 {
				t.Errorf("query %+v after Reset: %v, %v", q, indexes(p), err)
			}
		}
		if _, ok, _ := ix.LookupID(ctx, "acme", "e1"); ok {
			t.Error("LookupID finds a record after Reset")
		}

		// Rebuilding gives the same answers as before.
		apply(t, ix, es)
		p, err := ix.Query(ctx, Query{Text: "completions"})
		if err != nil || !slices.Equal(indexes(p), []uint64{0, 4}) {
			t.Errorf("text search after rebuild: %v, %v", indexes(p), err)
		}
	}
}

func TestSwitchFullText(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	es := e.add(t, fixture()...)
	apply(t, ix, es)
	ix.Close()

	reopen := func(opts Options) {
		t.Helper()
		ix = e.open(t, opts)
	}
	// Turning full text on: the records have no text entries, so the
	// index starts again and the follower rebuilds it.
	reopen(Options{FullText: true})
	if got := stats(t, ix); got != (Stats{}) {
		t.Errorf("after turning full text on: %+v, want empty", got)
	}
	apply(t, ix, es)
	ix.Close()

	// Turning it off keeps the records; text search falls back.
	reopen(Options{})
	if got := stats(t, ix); got != (Stats{Records: 6, Cursor: 6}) {
		t.Errorf("after turning full text off: %+v, want the records kept", got)
	}
	p, err := ix.Query(ctx, Query{Text: "completions"})
	if err != nil || !slices.Equal(indexes(p), []uint64{0, 4}) {
		t.Errorf("text search without FTS: %v, %v", indexes(p), err)
	}
}

// TestFollow runs the index behind the real follower while it is queried.
func TestFollow(t *testing.T) {
	ix, e := openTemp(t, Options{FullText: true})
	var recs []*event.Record
	for i := range 5000 {
		recs = append(recs, realistic(i))
	}
	e.add(t, recs...)
	src := e.log
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	followed := make(chan error)
	go func() {
		followed <- ledger.Follow(ctx, src, ix, ledger.FollowOptions{
			Name:      "index",
			BatchSize: 500,
			OnApply: func(c uint64) {
				if c == src.Size() {
					cancel()
				}
			},
		})
	}()

	// Readers never wait for the writer, never fail because of it, and
	// never see a batch half applied.
	var seen uint64
	for ctx.Err() == nil {
		st, err := ix.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Records != st.Cursor || st.Records%500 != 0 || st.Records < seen {
			t.Fatalf("read %+v after %d records", st, seen)
		}
		seen = st.Records
		if _, err := ix.Query(context.Background(), Query{Text: "completions", Order: OrderDesc}); err != nil {
			t.Fatal(err)
		}
		// A filter finds every record applied, the open block's (held in
		// memory, which the writer goes on filling) included: one in five
		// of realistic's records is denied.
		v := ix.Visible()
		p, err := ix.Query(context.Background(), Query{Outcome: "denied", Limit: MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Hits) < int(v/5) {
			t.Fatalf("a filter found %d records with %d applied; want at least %d", len(p.Hits), v, v/5)
		}
	}
	<-followed
	if got := stats(t, ix); got != (Stats{Records: 5000, Cursor: 5000}) {
		t.Errorf("after following: %+v", got)
	}
}

// TestTenantsActorsAndScrub covers what erasure and pseudonym search need:
// the tenants with records, a search among several actor ids, and removing
// an actor id from the index rows that carry it.
func TestTenantsActorsAndScrub(t *testing.T) {
	ix, e := openTemp(t, Options{})
	apply(t, ix, e.add(t,
		rec("acme", "a1", "ai.inference", withActor("p-alice")),
		rec("acme", "a2", "ai.inference", withActor("p-bob")),
		rec("globex", "g1", "ai.inference", withActor("p-alice-globex")),
	))
	ctx := context.Background()
	if ts, err := ix.Tenants(ctx); err != nil || len(ts) != 2 || ts[0] != "acme" || ts[1] != "globex" {
		t.Fatalf("Tenants = %v, %v", ts, err)
	}
	count := func(q Query) int {
		page, err := ix.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Hits)
	}
	if n := count(Query{Actors: []string{"p-alice", "p-alice-globex"}}); n != 2 {
		t.Fatalf("Actors search found %d; want 2", n)
	}
	if n := count(Query{Actors: []string{}}); n != 0 {
		t.Fatalf("an empty Actors list found %d; want none", n)
	}
	if n, err := ix.ScrubActor(ctx, "acme", "p-alice"); err != nil || n != 1 {
		t.Fatalf("ScrubActor = %d, %v", n, err)
	}
	if n := count(Query{Actor: "p-alice"}); n != 0 {
		t.Fatalf("scrubbed actor still found %d times", n)
	}
	if n := count(Query{Actor: "p-bob"}) + count(Query{Actor: "p-alice-globex"}); n != 2 {
		t.Fatalf("scrubbing touched other actors: %d found; want 2", n)
	}
}

// TestOlderSchemaIsRebuilt: an index file written by another version of
// aitrail (here one that kept copies of the records, schema 3) is emptied
// on opening, so that the follower rebuilds it from the log, and then
// answers as a new one would.
func TestOlderSchemaIsRebuilt(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	es := e.add(t, fixture()...)
	apply(t, ix, es)
	if _, err := ix.db.ExecContext(ctx, "ALTER TABLE records ADD COLUMN record BLOB"); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.db.ExecContext(ctx, "PRAGMA user_version = 3"); err != nil {
		t.Fatal(err)
	}
	ix.Close()

	ix = e.open(t, Options{})
	if got := stats(t, ix); got != (Stats{}) {
		t.Fatalf("an index of schema 3 opened with %+v, want it emptied", got)
	}
	apply(t, ix, es)
	p, err := ix.Query(ctx, Query{Text: "completions"})
	if err != nil || !slices.Equal(indexes(p), []uint64{0, 4}) {
		t.Errorf("after rebuilding: %v, %v", indexes(p), err)
	}
	var cols int
	if err := ix.db.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('records') WHERE name = 'record'").Scan(&cols); err != nil || cols != 0 {
		t.Errorf("the rebuilt index still has the old record column (%d, %v)", cols, err)
	}
}

// TestIndexHoldsNoRecords: the index file holds the columns the filters use
// and where each record is, not the records: a field no filter uses (the
// user agent) is found only in the log.
func TestIndexHoldsNoRecords(t *testing.T) {
	ix, e := openTemp(t, Options{})
	var recs []*event.Record
	for i := range 500 {
		recs = append(recs, realistic(i))
	}
	apply(t, ix, e.add(t, recs...))
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(e.path + "*") // with any -wal and -shm
	if err != nil || len(files) == 0 {
		t.Fatalf("index files: %v, %v", files, err)
	}
	var stored []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, b...)
	}
	if !bytes.Contains(stored, []byte(recs[7].Actor.ID)) {
		t.Fatal("an actor id, an indexed column, is not in the index files: the check below would prove nothing")
	}
	if ua := recs[7].Actor.UserAgent; bytes.Contains(stored, []byte(ua)) {
		t.Errorf("the index files hold %q, which only a copy of the record carries", ua)
	}
}

// TestScrubKeepsOthers: scrubbing an actor in one tenant leaves the same
// actor id of another tenant findable, and records indexed afterwards in
// the same block (whose postings Apply then rebuilds from the rows) are
// found by it, while the scrubbed one stays hidden.
func TestScrubKeepsOthers(t *testing.T) {
	ix, e := openTemp(t, Options{})
	ctx := context.Background()
	apply(t, ix, e.add(t,
		rec("acme", "a1", "api.call", withActor("p-x")),
		rec("globex", "g1", "api.call", withActor("p-x")),
		rec("acme", "a2", "api.call", withActor("p-y")),
	))
	found := func(q Query, want ...uint64) {
		t.Helper()
		page, err := ix.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if got := indexes(page); !slices.Equal(got, want) {
			t.Errorf("%+v found %v; want %v", q, got, want)
		}
	}
	if n, err := ix.ScrubActor(ctx, "acme", "p-x"); err != nil || n != 1 {
		t.Fatalf("ScrubActor = %d, %v", n, err)
	}
	found(Query{Actor: "p-x"}, 1)
	found(Query{Actor: "p-y"}, 2)
	apply(t, ix, e.add(t, rec("acme", "a3", "api.call", withActor("p-x"))))
	found(Query{Actor: "p-x"}, 1, 3)
	found(Query{Actor: "p-x", Tenant: "acme"}, 3)
	found(Query{Tenant: "acme"}, 0, 2, 3)

	// A posting altered to name no record is passed over.
	toTable(t, ix)
	if _, err := ix.db.ExecContext(ctx, `UPDATE postings SET bits = zeroblob(?) WHERE key = ?`, bitmapBytes, postingKey(fieldActor, "p-y")); err != nil {
		t.Fatal(err)
	}
	if n, err := ix.ScrubActor(ctx, "acme", "p-y"); err != nil || n != 0 {
		t.Errorf("ScrubActor over an empty posting = %d, %v", n, err)
	}
}

// TestOpenBlockFromMemory: the postings of the block Apply is filling are
// not written to the table but served from memory, so a filter finds every
// record as soon as its Apply commits; they reach the table when the block
// is complete, before a scrub, and at Close, and an index whose process
// stopped before that rebuilds them when it is opened.
func TestOpenBlockFromMemory(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	var recs []*event.Record
	for i := range 600 {
		recs = append(recs, rec("acme", fmt.Sprintf("e%d", i), "ai.inference", withActor(fmt.Sprintf("user-%d", i))))
	}
	finds := func(ix *Index, q Query) int {
		t.Helper()
		p, err := ix.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return len(p.Hits)
	}
	stored := func(ix *Index) int {
		t.Helper()
		var n int
		if err := ix.db.QueryRowContext(ctx, "SELECT count(*) FROM postings WHERE block = 0").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	fromOpen := stored(ix) // written by Open: none yet

	apply(t, ix, e.add(t, recs[:10]...))
	apply(t, ix, e.add(t, recs[10:]...))
	if v := ix.Visible(); v != 600 {
		t.Fatalf("Visible %d after Apply of 600, want 600", v)
	}
	if n := stored(ix); n != fromOpen {
		t.Errorf("the open block has %d posting rows in the table, want %d: they are written once it is complete", n, fromOpen)
	}
	if finds(ix, Query{Actor: "user-599"}) != 1 || finds(ix, Query{Actor: "user-0"}) != 1 {
		t.Error("a filter does not find records of the open block")
	}
	if n := finds(ix, Query{Type: "ai.*", Limit: 1000}); n != 600 {
		t.Errorf("a type prefix found %d records of the open block, want 600", n)
	}
	// The process stops now: a copy of the files as they are.
	stopped := copyIndex(t, e.path)

	// A scrub finds the actor's records in the open block.
	var again []*event.Record
	for i := range 300 {
		again = append(again, rec("acme", fmt.Sprintf("f%d", i), "ai.inference", withActor(fmt.Sprintf("user-%d", i))))
	}
	apply(t, ix, e.add(t, again...))
	if n, err := ix.ScrubActor(ctx, "acme", "user-299"); err != nil || n != 2 {
		t.Fatalf("ScrubActor of an actor of the open block: %d, %v; want 2 records", n, err)
	}
	if finds(ix, Query{Actor: "user-299"}) != 0 {
		t.Error("the scrubbed actor is still found")
	}
	apply(t, ix, e.add(t, rec("acme", "g0", "ai.inference", withActor("user-298"))))
	if n := finds(ix, Query{Actor: "user-298"}); n != 3 {
		t.Errorf("after a scrub and another Apply, user-298 found %d times, want 3", n)
	}

	reopened, err := Open(stopped, e.log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if v := reopened.Visible(); v != 600 || finds(reopened, Query{Actor: "user-599"}) != 1 || finds(reopened, Query{Actor: "user-0"}) != 1 {
		t.Errorf("opened after stopping with the open block's postings in memory: Visible %d, want 600 and both actors found", v)
	}
	if n := stored(reopened); n < 600 {
		t.Errorf("Open wrote %d posting rows of the open block, want every value's", n)
	}
}

// copyIndex copies the index file at path and its write-ahead log, between
// transactions, as a process stopping then would leave them, and returns
// the copy's path.
func copyIndex(t *testing.T, path string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "index.db")
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestApplyScrubsErasedPseudonyms: applying a privacy.erasure record
// scrubs its pseudonym from the rows indexed before it, whether the record
// comes decoded from memory (as under load) or only as stored (as when the
// index is rebuilt from the files).
func TestApplyScrubsErasedPseudonyms(t *testing.T) {
	for _, decoded := range []bool{true, false} {
		ix, e := openTemp(t, Options{})
		apply(t, ix, e.add(t,
			rec("acme", "a1", "ai.inference", withActor("p-alice")),
			rec("acme", "a2", "ai.inference", withActor("p-bob")),
		))
		erasure := rec("acme", "x1", "privacy.erasure", func(r *event.Record) {
			r.Resource = &event.Resource{Type: "subject", ID: "p-alice"}
		})
		es := e.add(t, erasure)
		if decoded {
			es[0].Value = erasure
		}
		apply(t, ix, es)
		for actor, want := range map[string]int{"p-alice": 0, "p-bob": 1} {
			page, err := ix.Query(context.Background(), Query{Actor: actor})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Hits) != want {
				t.Errorf("decoded %v: %d events of %s after the erasure; want %d", decoded, len(page.Hits), actor, want)
			}
		}
	}
}
