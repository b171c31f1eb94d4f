package index

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// fixture is a small log with one record per feature the filters look at.
func fixture() []*event.Record {
	return []*event.Record{
		0: rec("acme", "e1", "ai.inference", func(r *event.Record) {
			r.Actor = &event.Actor{ID: "alice", Type: "user", IP: "10.1.2.3"}
			r.Action = "chat.completions.create"
			r.Outcome = "success"
			r.Resource = &event.Resource{Type: "deployment", ID: "dep-1", Name: "customer support assistant"}
			r.Model = &event.Model{Provider: "openai", Name: "gpt-4o", Version: "2024-08-06", Digest: "sha256:abcdef0123456789"}
			r.Attributes = map[string]any{"ticket": "SUP-00042", "gen_ai.usage.input_tokens": 1200}
			r.Content = &event.ContentRef{Digest: "sha256:feedface", KeyID: "dk-secretkeyid", Size: 10}
		}),
		1: rec("acme", "e2", "ai.tool_call", func(r *event.Record) {
			r.Time = t0.Add(time.Hour)
			r.Actor = &event.Actor{ID: "bob"}
			r.Action = "tool.search"
			r.Outcome = "failure"
			r.Resource = &event.Resource{Type: "tool", ID: "search"}
			r.Model = &event.Model{Name: "gpt-4o", Version: "2024-11-20"}
		}),
		2: rec("globex", "e3", "api.call", func(r *event.Record) {
			r.Time = t0.Add(2 * time.Hour)
			r.Actor = &event.Actor{ID: "alice"}
			r.Action = "get_object"
			r.Outcome = "denied"
			r.Resource = &event.Resource{Type: "bucket", ID: "arn:aws:s3:::reports"}
		}),
		3: rec("globex", "e1", "model.deploy", func(r *event.Record) {
			r.Time = t0.Add(3 * time.Hour)
			r.Actor = &event.Actor{ID: "carol"}
			r.Action = "deploy"
			r.Outcome = "success"
			r.Resource = &event.Resource{Type: "deployment", ID: "dep-1"}
			r.Model = &event.Model{Name: "o3", Version: "v1"}
		}),
		4: rec("initech", "e4", "ai.inference", func(r *event.Record) {
			r.Time = t0.Add(4 * time.Hour)
			r.Actor = &event.Actor{ID: "alice"}
			r.Action = "chat.completions.create"
			r.Outcome = "success"
			r.Model = &event.Model{Name: "gpt-4o", Version: "2024-08-06"}
			r.Attributes = map[string]any{"project": "skunkworks"}
		}),
		5: rec("acme", "e5", "aix.custom", func(r *event.Record) {
			r.Time = t0.Add(-time.Hour) // event time need not follow log order
			r.Actor = &event.Actor{ID: "dave"}
			r.Model = &event.Model{Name: "hf@org/model", Version: "r1"} // a name holding @
		}),
	}
}

func fixtureIndex(t testing.TB, opts Options) (*Index, []ledger.Entry) {
	t.Helper()
	ix, e := openTemp(t, opts)
	es := e.add(t, fixture()...)
	apply(t, ix, es)
	return ix, es
}

func indexes(p Page) []uint64 {
	out := []uint64{}
	for _, h := range p.Hits {
		out = append(out, h.Index)
	}
	return out
}

func TestQueryFilters(t *testing.T) {
	forModes(t, func(t *testing.T, opts Options) {
		ix, es := fixtureIndex(t, opts)
		tests := []struct {
			name string
			q    Query
			want []uint64
		}{
			{"no filter", Query{}, []uint64{0, 1, 2, 3, 4, 5}},
			{"tenant", Query{Tenant: "acme"}, []uint64{0, 1, 5}},
			{"unknown tenant", Query{Tenant: "nobody"}, []uint64{}},
			{"type exact", Query{Type: "ai.inference"}, []uint64{0, 4}},
			{"type exact is not a prefix", Query{Type: "ai"}, []uint64{}},
			{"type prefix", Query{Type: "ai.*"}, []uint64{0, 1, 4}},
			{"type prefix without dot", Query{Type: "ai*"}, []uint64{0, 1, 4, 5}},
			{"type star", Query{Type: "*"}, []uint64{0, 1, 2, 3, 4, 5}},
			{"actor", Query{Actor: "alice"}, []uint64{0, 2, 4}},
			{"actor is exact", Query{Actor: "ali"}, []uint64{}},
			{"model name", Query{Model: "gpt-4o"}, []uint64{0, 1, 4}},
			{"model name@version", Query{Model: "gpt-4o@2024-08-06"}, []uint64{0, 4}},
			{"model unknown version", Query{Model: "gpt-4o@nope"}, []uint64{}},
			{"model name holding @", Query{Model: "hf@org/model"}, []uint64{5}},
			{"model name holding @, and version", Query{Model: "hf@org/model@r1"}, []uint64{5}},
			{"model name holding @, another version", Query{Model: "hf@org/model@r2"}, []uint64{}},
			{"model name cut at its own @", Query{Model: "hf@org"}, []uint64{}},
			{"outcome", Query{Outcome: "success"}, []uint64{0, 3, 4}},
			{"resource id", Query{Resource: "dep-1"}, []uint64{0, 3}},
			{"resource type:id", Query{Resource: "deployment:dep-1"}, []uint64{0, 3}},
			{"resource wrong type", Query{Resource: "tool:dep-1"}, []uint64{}},
			{"resource id with colons", Query{Resource: "arn:aws:s3:::reports"}, []uint64{2}},
			{"resource type:id with colons", Query{Resource: "bucket:arn:aws:s3:::reports"}, []uint64{2}},
			{"from", Query{From: t0.Add(time.Hour)}, []uint64{1, 2, 3, 4}},
			{"to", Query{To: t0.Add(time.Hour)}, []uint64{0, 5}},
			{"from and to", Query{From: t0, To: t0.Add(3 * time.Hour)}, []uint64{0, 1, 2}},
			{"from in another zone", Query{From: t0.Add(4 * time.Hour).In(time.FixedZone("X", 3600))}, []uint64{4}},
			{"text", Query{Text: "completions"}, []uint64{0, 4}},
			{"tenant and actor", Query{Tenant: "acme", Actor: "alice"}, []uint64{0}},
			{"type prefix, outcome and from", Query{Type: "ai.*", Outcome: "success", From: t0.Add(time.Hour)}, []uint64{4}},
			{"actor, model and tenant", Query{Actor: "alice", Model: "gpt-4o", Tenant: "globex"}, []uint64{}},
			{"resource and outcome", Query{Resource: "deployment:dep-1", Outcome: "success", Type: "model.deploy"}, []uint64{3}},
			{"text and tenant", Query{Text: "completions", Tenant: "initech"}, []uint64{4}},
			// A word's tokens in sequence within one value, not across two
			// (type ai.inference, then tenant acme).
			{"text across two values", Query{Text: "inference.acme"}, []uint64{}},
			{"text in two values", Query{Text: "inference acme"}, []uint64{0}},
			{"text in one value", Query{Text: "chat.completions"}, []uint64{0, 4}},
			{"after", Query{After: new(uint64(2))}, []uint64{3, 4, 5}},
			{"after 0", Query{After: new(uint64(0))}, []uint64{1, 2, 3, 4, 5}},
			{"after the largest index", Query{After: new(uint64(math.MaxUint64))}, []uint64{}},
			{"after and text", Query{After: new(uint64(0)), Text: "completions"}, []uint64{4}},
			{"desc", Query{Actor: "alice", Order: OrderDesc}, []uint64{4, 2, 0}},
			{"limit", Query{Limit: 2}, []uint64{0, 1}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p, err := ix.Query(context.Background(), tt.q)
				if err != nil {
					t.Fatal(err)
				}
				if got := indexes(p); !slices.Equal(got, tt.want) {
					t.Errorf("got %v, want %v", got, tt.want)
				}
				for _, h := range p.Hits {
					if !bytes.Equal(h.Record, es[h.Index].Data) {
						t.Errorf("hit %d: record is not the stored bytes", h.Index)
					}
				}
			})
		}
	})
}

func TestTenantVisibility(t *testing.T) {
	forModes(t, func(t *testing.T, opts Options) {
		ix, _ := fixtureIndex(t, opts)
		ctx := context.Background()
		visible := []string{"acme", "globex"} // not initech (record 4, id e4)

		queries := []Query{
			{},
			{Tenant: "initech"},
			{Actor: "alice"},
			{Type: "ai.inference"},
			{Text: "skunkworks"},
			{Model: "gpt-4o@2024-08-06"},
		}
		for _, q := range queries {
			q.Tenants = visible
			p, err := ix.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(indexes(p), 4) {
				t.Errorf("%+v: hidden tenant's record returned", q)
			}
		}
		for _, tenants := range [][]string{{"acme"}, {}, {"initech-other"}} {
			p, err := ix.Query(ctx, Query{Tenants: tenants})
			if err != nil {
				t.Fatal(err)
			}
			want := []uint64{}
			if slices.Equal(tenants, []string{"acme"}) {
				want = []uint64{0, 1, 5}
			}
			if got := indexes(p); !slices.Equal(got, want) {
				t.Errorf("tenants %q: got %v, want %v", tenants, got, want)
			}
		}
		for _, tenants := range [][]string{nil, {"*"}, {"acme", "*"}} {
			p, err := ix.Query(ctx, Query{Tenants: tenants, Tenant: "initech"})
			if err != nil {
				t.Fatal(err)
			}
			if got := indexes(p); !slices.Equal(got, []uint64{4}) {
				t.Errorf("tenants %q: got %v, want [4]", tenants, got)
			}
		}

		if _, err := ix.Get(ctx, visible, "", "e4"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get of hidden record: err = %v, want ErrNotFound", err)
		}
		if _, err := ix.Get(ctx, visible, "initech", "e4"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get of hidden record naming its tenant: err = %v, want ErrNotFound", err)
		}
		if _, err := ix.Get(ctx, []string{}, "", "e1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get with no visible tenant: err = %v, want ErrNotFound", err)
		}
		if _, ok, err := ix.LookupID(ctx, "acme", "e4"); err != nil || ok {
			t.Errorf("LookupID(acme, e4) = %v, %v; want not found", ok, err)
		}
		if idx, ok, err := ix.LookupID(ctx, "initech", "e4"); err != nil || !ok || idx != 4 {
			t.Errorf("LookupID(initech, e4) = %d, %v, %v; want 4", idx, ok, err)
		}
	})
}

func TestGet(t *testing.T) {
	ix, es := fixtureIndex(t, Options{})
	ctx := context.Background()
	tests := []struct {
		name    string
		tenants []string
		tenant  string
		id      string
		want    uint64 // ignored when notFound
		missing bool
	}{
		{"unique id", nil, "", "e3", 2, false},
		{"id in two tenants: lowest index", nil, "", "e1", 0, false},
		{"id in two tenants: named tenant", nil, "globex", "e1", 3, false},
		{"id in two tenants: only one visible", []string{"globex"}, "", "e1", 3, false},
		{"star sees all", []string{"*"}, "", "e4", 4, false},
		{"named tenant not visible", []string{"acme"}, "globex", "e1", 0, true},
		{"wrong tenant", nil, "acme", "e3", 0, true},
		{"unknown id", nil, "", "nope", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ix.Get(ctx, tt.tenants, tt.tenant, tt.id)
			if tt.missing {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("err = %v, want ErrNotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Index != tt.want || !bytes.Equal(h.Record, es[tt.want].Data) {
				t.Errorf("got index %d, want %d with its stored bytes", h.Index, tt.want)
			}
		})
	}
}

// walk pages through q with q.Limit and returns every index seen.
func walk(t *testing.T, ix *Index, q Query) []uint64 {
	t.Helper()
	var all []uint64
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		p, err := ix.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Hits) > q.Limit {
			t.Fatalf("page of %d hits, limit %d", len(p.Hits), q.Limit)
		}
		if len(p.Hits) == 0 && pages > 0 {
			t.Errorf("empty page after a next cursor")
		}
		all = append(all, indexes(p)...)
		if p.NextCursor == "" {
			return all
		}
		if len(p.Hits) != q.Limit {
			t.Errorf("short page (%d of %d) with a next cursor", len(p.Hits), q.Limit)
		}
		q.Cursor = p.NextCursor
	}
}

func TestPagination(t *testing.T) {
	forModes(t, func(t *testing.T, opts Options) {
		ix, e := openTemp(t, opts)
		var recs []*event.Record
		for i := range 50 {
			recs = append(recs, realistic(i))
		}
		apply(t, ix, e.add(t, recs...))

		queries := map[string]Query{
			"all":            {},
			"tenant":         {Tenant: "acme"},
			"type prefix":    {Type: "ai.*"},
			"visible":        {Tenants: []string{"globex", "initech"}},
			"text":           {Text: "completions"},
			"outcome & time": {Outcome: "success", From: t0.Add(10 * time.Millisecond)},
		}
		for name, q := range queries {
			for _, order := range []string{"", OrderAsc, OrderDesc} {
				full := q
				full.Order, full.Limit = order, MaxLimit
				p, err := ix.Query(context.Background(), full)
				if err != nil {
					t.Fatal(err)
				}
				want := indexes(p)
				if len(want) < 5 {
					t.Fatalf("%s: only %d results; the fixture is too small", name, len(want))
				}
				if !slices.IsSortedFunc(want, func(a, b uint64) int {
					if order == OrderDesc {
						a, b = b, a
					}
					return int(a) - int(b)
				}) {
					t.Errorf("%s %s: results out of order: %v", name, order, want)
				}
				for _, limit := range []int{1, 2, 3, 7, len(want), len(want) + 1} {
					q := q
					q.Order, q.Limit = order, limit
					if got := walk(t, ix, q); !slices.Equal(got, want) {
						t.Errorf("%s, order %q, limit %d: walked %v, want %v", name, order, limit, got, want)
					}
				}
			}
		}
	})
}

func TestInvalidQuery(t *testing.T) {
	ix, _ := fixtureIndex(t, Options{})
	other, _ := fixtureIndex(t, Options{})
	ctx := context.Background()
	q := Query{Limit: 2, Tenant: "acme"}
	p, err := ix.Query(ctx, q)
	if err != nil || p.NextCursor == "" {
		t.Fatalf("first page: %v, cursor %q", err, p.NextCursor)
	}
	good := p.NextCursor
	raw, err := base64.RawURLEncoding.DecodeString(good)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := slices.Clone(raw)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	// The same bytes spelled differently: the last character carries two
	// bits beyond the cursor's 26 bytes.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	respelled := good[:len(good)-1] + string(alphabet[strings.IndexByte(alphabet, good[len(good)-1])^1])
	otherCursor, err := other.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		q    Query
	}{
		{"negative limit", Query{Limit: -1}},
		{"limit too large", Query{Limit: MaxLimit + 1}},
		{"unknown order", Query{Order: "up"}},
		{"from not before to", Query{From: t0, To: t0}},
		{"cursor not base64", Query{Cursor: "!!!"}},
		{"cursor garbage", Query{Tenant: "acme", Cursor: "aGVsbG8gd29ybGQ"}},
		{"cursor truncated", Query{Tenant: "acme", Cursor: good[:len(good)-2]}},
		{"cursor index edited", Query{Tenant: "acme", Cursor: flip(9)}},
		{"cursor mac edited", Query{Tenant: "acme", Cursor: flip(len(raw) - 1)}},
		{"cursor version edited", Query{Tenant: "acme", Cursor: flip(0)}},
		{"cursor respelled", Query{Tenant: "acme", Cursor: respelled}},
		{"cursor with other order", Query{Tenant: "acme", Order: OrderDesc, Cursor: good}},
		{"cursor with other filter", Query{Tenant: "globex", Cursor: good}},
		{"cursor with an added filter", Query{Tenant: "acme", Actor: "alice", Cursor: good}},
		{"cursor with after", Query{Tenant: "acme", After: new(uint64(0)), Cursor: good}},
		{"cursor from another index", Query{Tenant: "acme", Cursor: otherCursor.NextCursor}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ix.Query(ctx, tt.q); !errors.Is(err, ErrInvalidQuery) {
				t.Errorf("err = %v, want ErrInvalidQuery", err)
			}
		})
	}

	// What may change between pages: the limit, the visible tenants, and
	// how the same filter is spelled (explicit default order).
	for _, q := range []Query{
		{Tenant: "acme", Cursor: good},
		{Tenant: "acme", Cursor: good, Limit: 1, Order: OrderAsc},
		{Tenant: "acme", Cursor: good, Tenants: []string{"acme"}},
	} {
		p, err := ix.Query(ctx, q)
		if err != nil {
			t.Errorf("%+v: %v", q, err)
		} else if got := indexes(p); len(got) == 0 || got[0] != 5 {
			t.Errorf("%+v: got %v, want to continue at 5", q, got)
		}
	}
}

func TestTextSearch(t *testing.T) {
	forModes(t, func(t *testing.T, opts Options) {
		ix, _ := fixtureIndex(t, opts)
		finds := []struct {
			text string
			want []uint64
		}{
			{"completions", []uint64{0, 4}},             // action
			{"COMPLETIONS", []uint64{0, 4}},             // case-insensitive
			{"support", []uint64{0}},                    // resource name
			{"SUP-00042", []uint64{0}},                  // string attribute
			{"skunkworks", []uint64{4}},                 // string attribute
			{"10.1.2.3", []uint64{0}},                   // actor ip
			{"compl*", []uint64{0, 4}},                  // prefix
			{"support completions", []uint64{0}},        // all words
			{"  completions\t\nalice ", []uint64{0, 4}}, // whitespace; actor id
			{"nonexistentword", []uint64{}},
		}
		for _, f := range finds {
			p, err := ix.Query(context.Background(), Query{Text: f.text})
			if err != nil {
				t.Fatalf("%q: %v", f.text, err)
			}
			if got := indexes(p); !slices.Equal(got, f.want) {
				t.Errorf("%q: got %v, want %v", f.text, got, f.want)
			}
		}
		if opts.FullText {
			// FTS matches whole words; the fallback matches substrings.
			if p, err := ix.Query(context.Background(), Query{Text: "deploy"}); err != nil || !slices.Equal(indexes(p), []uint64{3}) {
				t.Errorf("deploy: got %v, %v; want [3]", indexes(p), err)
			}
			// Digests and key ids are not metadata worth searching.
			for _, text := range []string{"abcdef0123456789", "feedface", "secretkeyid"} {
				p, err := ix.Query(context.Background(), Query{Text: text})
				if err != nil || len(p.Hits) != 0 {
					t.Errorf("%q: got %v, %v; want no hits", text, indexes(p), err)
				}
			}
		}
		// Search syntax in user input must be searched for, not obeyed,
		// and must never make the query fail.
		for _, text := range []string{
			`"`, `""`, `*`, `**`, `(`, `)`, `AND OR NOT`, `NOT completions`, `completions OR`,
			`NEAR(a b)`, `text:completions`, `^completions`, `-completions`, `a + b`, `'`, `\`,
			`%`, `_`, `{text}: x`, `"completions`, `completions"*`, "\x00", "comp\x00letions", "\xff\xfe", "compl\xffetions*", `'); DROP TABLE records; --`,
		} {
			p, err := ix.Query(context.Background(), Query{Text: text})
			if err != nil {
				t.Errorf("%q: %v", text, err)
			}
			if text == `NOT completions` && opts.FullText && !slices.Equal(indexes(p), []uint64{}) {
				t.Errorf("%q: got %v; NOT must be a word, not an operator", text, indexes(p))
			}
		}
		if st, err := ix.Stats(context.Background()); err != nil || st.Records != 6 {
			t.Errorf("stats after hostile text: %+v, %v", st, err)
		}
	})
}

// TestTextWithQuotesAndBackslashes: a word holding a quote or a backslash
// finds the records whose values hold it (stored escaped, as JSON strings
// are), and a word of JSON syntax still finds the records that hold it.
func TestTextWithQuotesAndBackslashes(t *testing.T) {
	ix, e := openTemp(t, Options{})
	apply(t, ix, e.add(t,
		rec("acme", "q1", "ai.inference", func(r *event.Record) { r.Action = `say "hello" to C:\temp` }),
		rec("acme", "q2", "ai.inference", func(r *event.Record) { r.Action = "say hello" }),
	))
	for text, want := range map[string][]uint64{
		`"hello"`:         {0},
		`C:\temp`:         {0},
		`hello`:           {0, 1},
		`"action":"say`:   {0, 1},
		`"HELLO" c:\TEMP`: {0},
	} {
		p, err := ix.Query(context.Background(), Query{Text: text})
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if got := indexes(p); !slices.Equal(got, want) {
			t.Errorf("%q: got %v, want %v", text, got, want)
		}
	}
}

// TestFullTextWithoutSpaces: with full text, text written without spaces
// between words (Japanese here) is one token per run of letters, so only
// a prefix search finds a part of it (api.md says so); the default
// substring match finds it as it is.
func TestFullTextWithoutSpaces(t *testing.T) {
	forModes(t, func(t *testing.T, opts Options) {
		ix, e := openTemp(t, opts)
		apply(t, ix, e.add(t, rec("acme", "j1", "ai.inference", func(r *event.Record) { r.Action = "東京タワー" }),
			rec("acme", "j2", "ai.inference", func(r *event.Record) { r.Action = "thanks 🙂" })))
		// An emoji the tokenizer keeps as a token is found by itself.
		want := map[string]int{"東京*": 1, "東京タワー": 1, "東京": 0, "🙂": 1, "thanks 🙂": 1}
		if !opts.FullText {
			want["東京"] = 1
		}
		for text, n := range want {
			p, err := ix.Query(context.Background(), Query{Text: text})
			if err != nil || len(p.Hits) != n {
				t.Errorf("%q: %d hits (%v), want %d", text, len(p.Hits), err, n)
			}
		}
	})
}

// TestTimesOutsideTheNanosecondRange: event times may be any of the years
// 1–9999, but the index stores nanoseconds, exact only from 1678 to 2262.
// Bounds out there still select exactly the events within them.
func TestTimesOutsideTheNanosecondRange(t *testing.T) {
	forModes(t, func(t *testing.T, opts Options) {
		ix, e := openTemp(t, opts)
		at := func(s string) func(*event.Record) {
			return func(r *event.Record) { r.Time, _ = time.Parse(time.RFC3339, s) }
		}
		apply(t, ix, e.add(t,
			rec("acme", "t2280", "time.test", at("2280-01-01T00:00:00Z")),
			rec("acme", "t2500", "time.test", at("2500-01-01T00:00:00Z")),
			rec("acme", "t1500", "time.test", at("1500-01-01T00:00:00Z")),
			rec("acme", "t1600", "time.test", at("1600-06-01T00:00:00Z")),
			rec("acme", "t2000", "time.test", at("2000-01-01T00:00:00Z")),
			rec("acme", "t0001", "time.test", at("0001-01-01T00:00:00Z")), // the zero time.Time
		))
		day := func(s string) time.Time { t, _ := time.Parse(time.DateOnly, s); return t }
		for _, tc := range []struct {
			from, to string
			want     []uint64
		}{
			{"2270-01-01", "2300-01-01", []uint64{0}},
			{"2400-01-01", "", []uint64{1}},
			{"", "1550-01-01", []uint64{2, 5}},
			{"1550-01-01", "1700-01-01", []uint64{3}},
			{"1900-01-01", "2100-01-01", []uint64{4}},
			{"", "2300-01-01", []uint64{0, 2, 3, 4, 5}},
			{"1550-01-01", "", []uint64{0, 1, 3, 4}},
			{"2600-01-01", "", []uint64{}},
			// 0001-01-01T00:00:00Z is a bound like any other.
			{"", "0001-01-01", []uint64{}},
			{"0001-01-01", "", []uint64{0, 1, 2, 3, 4, 5}},
			{"0001-01-01", "1000-01-01", []uint64{5}},
		} {
			q := Query{Type: "time.test", Order: "asc"}
			if tc.from != "" {
				q.From, q.HasFrom = day(tc.from), true
			}
			if tc.to != "" {
				q.To, q.HasTo = day(tc.to), true
			}
			p, err := ix.Query(context.Background(), q)
			if err != nil {
				t.Fatalf("%s–%s: %v", tc.from, tc.to, err)
			}
			if got := indexes(p); !slices.Equal(got, tc.want) {
				t.Errorf("%s–%s: got %v, want %v", tc.from, tc.to, got, tc.want)
			}
		}
		// A from after a to of the zero time is refused, and a cursor of
		// a query bounded by it is not one of the query without it.
		if _, err := ix.Query(context.Background(), Query{From: day("2025-01-01"), HasFrom: true, HasTo: true}); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("from 2025 to 0001: %v", err)
		}
		bounded, open := Query{HasTo: true}, Query{}
		if slices.Equal(bounded.fingerprint(false), open.fingerprint(false)) {
			t.Error("a query to 0001-01-01T00:00:00Z has the fingerprint of one without to")
		}
	})
}

// TestSparseText pages through text matches that are rare among the rows
// the other filters leave, in both orders: without full text they are found
// by reading the records back from the log in growing batches, and every
// match must come exactly once, in order, across pages. It runs again with
// pages that may read only a few hundred rows: pages then come short of
// their limit, even empty, with a cursor to go on from.
func TestSparseText(t *testing.T) {
	for _, scan := range []int{textScanRows, 200} {
		t.Run(fmt.Sprintf("scan=%d", scan), func(t *testing.T) {
			textScanLimit = scan
			t.Cleanup(func() { textScanLimit = textScanRows })
			testSparseText(t, scan < textScanRows)
		})
	}
}

func testSparseText(t *testing.T, bounded bool) {
	forModes(t, func(t *testing.T, opts Options) {
		ix, e := openTemp(t, opts)
		const n = 3000
		var recs []*event.Record
		var want []uint64
		for i := range n {
			r := realistic(i)
			if i%97 == 5 || i == n-1 {
				r.Action = "Needle.Found"
				want = append(want, uint64(i))
			}
			recs = append(recs, r)
		}
		apply(t, ix, e.add(t, recs...))
		for _, order := range []string{OrderAsc, OrderDesc} {
			for _, limit := range []int{1, 3, 100} {
				q := Query{Text: "needle.found", Order: order, Limit: limit}
				var got []uint64
				short := 0 // pages with fewer hits than asked, yet a cursor
				for pages := 0; ; pages++ {
					if pages > n {
						t.Fatal("pagination does not end")
					}
					p, err := ix.Query(context.Background(), q)
					if err != nil {
						t.Fatal(err)
					}
					for _, h := range p.Hits {
						if !bytes.Contains(h.Record, []byte("Needle.Found")) {
							t.Fatalf("hit %d does not hold the text: %s", h.Index, h.Record)
						}
					}
					got = append(got, indexes(p)...)
					if p.NextCursor == "" {
						break
					}
					if len(p.Hits) < limit {
						short++
					}
					q.Cursor = p.NextCursor
				}
				if fullText := opts.FullText; bounded && !fullText && limit == 100 && short == 0 {
					t.Errorf("order %s: no page stopped short of reading every row", order)
				}
				w := slices.Clone(want)
				if order == OrderDesc {
					slices.Reverse(w)
				}
				if !slices.Equal(got, w) {
					t.Errorf("order %s, limit %d: got %v, want %v", order, limit, got, w)
				}
			}
		}
	})
}

// TestAlteredLog: the index serves records from the log, so a record
// altered there after it was indexed is reported by the queries that reach
// it, never served.
func TestAlteredLog(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	var recs []*event.Record
	for i := range 200 {
		recs = append(recs, realistic(i))
	}
	apply(t, ix, e.add(t, recs...))
	// Record 50 is no longer among those the log keeps in memory; alter
	// it in its segment file.
	segs, err := filepath.Glob(filepath.Join(filepath.Dir(e.path), "log", "segments", "*"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v, %v", segs, err)
	}
	altered := false
	for _, seg := range segs {
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(data, []byte(recs[50].ID)); i >= 0 {
			data[i] ^= 1
			if err := os.WriteFile(seg, data, 0o600); err != nil {
				t.Fatal(err)
			}
			altered = true
		}
	}
	if !altered {
		t.Fatal("record 50 not found in the segments")
	}

	// Both name the record and its tenant, for the integrity report.
	want := func(what string, err error) {
		t.Helper()
		var te *TamperedError
		if !errors.Is(err, ledger.ErrTampered) || !errors.As(err, &te) || te.Index != 50 || te.Tenant != recs[50].Tenant || te.Check != CheckRecordHash {
			t.Errorf("%s: %v, want a TamperedError for record 50 of tenant %s (ErrTampered)", what, err, recs[50].Tenant)
		}
	}
	_, err = ix.Get(ctx, nil, "", recs[50].ID)
	want("Get of the altered record", err)
	_, err = ix.Query(ctx, Query{Limit: MaxLimit})
	want("a query reaching it", err)
	if p, err := ix.Query(ctx, Query{Limit: 50}); err != nil || len(p.Hits) != 50 {
		t.Errorf("a page before it: %d hits, %v", len(p.Hits), err)
	}
}

// TestAlteredIndex: the log is intact but the index was altered to show one
// tenant's records to another, or another event under an id. Reads report
// the record (in its own tenant) instead of serving it.
func TestAlteredIndex(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	apply(t, ix, e.add(t, rec("acme", "a-1", "api.call"), rec("globex", "g-1", "api.call"), rec("globex", "g-2", "api.call")))
	toTable(t, ix)
	want := func(what string, err error, index uint64, tenant string) {
		t.Helper()
		var te *TamperedError
		if !errors.Is(err, ledger.ErrTampered) || !errors.As(err, &te) || te.Index != index || te.Tenant != tenant || te.Check != CheckRecordKey {
			t.Errorf("%s: %v, want a TamperedError (record_key) for record %d of tenant %s", what, err, index, tenant)
		}
	}
	alter := func(sql string) {
		t.Helper()
		if _, err := ix.db.ExecContext(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}

	// globex's g-1 moved into acme, in its row and in acme's postings.
	alter(`UPDATE records SET tenant = 'acme' WHERE id = 'g-1'`)
	if _, err := ix.db.ExecContext(ctx, `UPDATE postings SET bits = ? WHERE key = ?`, encodePlaces([]uint16{0, 1, 2}), postingKey(fieldTenant, "acme")); err != nil {
		t.Fatal(err)
	}
	_, err := ix.Query(ctx, Query{Tenants: []string{"acme"}, Limit: 10})
	want("a query of acme", err, 1, "globex")
	_, err = ix.Get(ctx, []string{"acme"}, "", "g-1")
	want("Get of g-1 by acme", err, 1, "globex")
	if p, err := ix.Query(ctx, Query{Tenants: []string{"globex"}, Limit: 10}); err != nil || len(p.Hits) != 1 || p.Hits[0].Index != 2 {
		t.Errorf("a query of globex: %+v, %v", p.Hits, err)
	}
	alter(`UPDATE records SET tenant = 'globex' WHERE id = 'g-1'`)

	// g-2's row names g-1's record: Get("g-2") would serve g-1.
	alter(`UPDATE records SET id = 'old-g-2' WHERE id = 'g-2'`)
	alter(`UPDATE records SET id = 'g-2' WHERE id = 'g-1'`)
	_, err = ix.Get(ctx, []string{"globex"}, "", "g-2")
	want("Get of g-2", err, 1, "globex")
	if h, err := ix.Get(ctx, []string{"acme"}, "", "a-1"); err != nil || h.Index != 0 {
		t.Errorf("Get of a-1: %+v, %v", h, err)
	}
}

// TestGetUnindexed: an event the log holds but the index has not applied
// yet is found by Get (read back what was just written), with the same
// visibility as an indexed one, while the log still holds the backlog in
// memory.
func TestGetUnindexed(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	apply(t, ix, e.add(t, rec("acme", "indexed", "a.b")))
	var recs []*event.Record
	for i := range 60 { // the test log keeps 100 records in memory
		recs = append(recs, rec([]string{"acme", "globex"}[i%2], fmt.Sprintf("new-%d", i), "a.b"))
	}
	e.add(t, recs...) // not applied
	for _, tc := range []struct {
		tenants      []string
		tenant, id   string
		found        bool
		index        uint64
		recordTenant string
	}{
		{nil, "", "new-0", true, 1, "acme"},
		{nil, "", "new-59", true, 60, "globex"},
		{[]string{"acme"}, "", "new-58", true, 59, "acme"},
		{[]string{"acme"}, "", "new-59", false, 0, ""},
		{[]string{"*"}, "globex", "new-59", true, 60, "globex"},
		{nil, "acme", "new-59", false, 0, ""},
		{nil, "", "never-sent", false, 0, ""},
		{nil, "", "indexed", true, 0, "acme"},
	} {
		h, err := ix.Get(ctx, tc.tenants, tc.tenant, tc.id)
		switch {
		case !tc.found && !errors.Is(err, ErrNotFound):
			t.Errorf("Get(%v, %q, %q) = %+v, %v; want ErrNotFound", tc.tenants, tc.tenant, tc.id, h.Index, err)
		case tc.found && (err != nil || h.Index != tc.index || h.Tenant != tc.recordTenant || !bytes.Contains(h.Record, []byte(`"id":"`+tc.id+`"`))):
			t.Errorf("Get(%v, %q, %q) = %d %s %s, %v; want index %d of %s", tc.tenants, tc.tenant, tc.id, h.Index, h.Tenant, h.Record, err, tc.index, tc.recordTenant)
		}
	}

	// A backlog larger than the log keeps in memory is not looked through.
	var more []*event.Record
	for i := range 100 {
		more = append(more, rec("acme", fmt.Sprintf("more-%d", i), "a.b"))
	}
	e.add(t, more...)
	if _, err := ix.Get(ctx, nil, "", "more-99"); !errors.Is(err, ErrNotFound) {
		t.Errorf("160 records behind, 100 in memory: %v, want ErrNotFound", err)
	}
}

// TestDamagedPostings: a posting row that cannot be read fails the query
// with an error that says the index is damaged and how to rebuild it, not
// with a wrong answer; rebuilding it answers again.
func TestDamagedPostings(t *testing.T) {
	ctx := context.Background()
	ix, es := fixtureIndex(t, Options{})
	toTable(t, ix)
	want, err := ix.Query(ctx, Query{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bits := range [][]byte{{1}, {2, 0, 1, 0}, {1, 0, 1, 0}} {
		if _, err := ix.db.ExecContext(ctx, `UPDATE postings SET bits = ? WHERE key = ?`, bits, postingKey(fieldTenant, "acme")); err != nil {
			t.Fatal(err)
		}
		_, err := ix.Query(ctx, Query{Tenant: "acme"})
		if !errors.Is(err, errDamagedPostings) || !strings.Contains(err.Error(), "aitrail reindex") {
			t.Errorf("posting %x: %v, want an error naming the damage and aitrail reindex", bits, err)
		}
	}
	if err := ix.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	apply(t, ix, es)
	if got, err := ix.Query(ctx, Query{Tenant: "acme"}); err != nil || !slices.Equal(indexes(got), indexes(want)) {
		t.Errorf("after rebuilding: %v, %v; want %v", indexes(got), err, indexes(want))
	}
}
