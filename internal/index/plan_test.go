package index

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
)

// TestFiltersVisitOnlyTheirBlocks: on a large log a query for a rare value
// must not read every record, which is what a user would notice. Each
// filter here matches one record among several blocks of others, and the
// query may check at most one block's worth of rows.
func TestFiltersVisitOnlyTheirBlocks(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	const n, rare = 3*blockSize + 100, blockSize + 517
	recs := make([]*event.Record, n)
	for i := range recs {
		recs[i] = rec("acme", fmt.Sprintf("e-%d", i), "api.call", func(r *event.Record) {
			r.Time = t0.Add(time.Duration(i) * time.Millisecond)
			r.Actor = &event.Actor{ID: fmt.Sprintf("user-%d", i%7), Type: "user"}
			r.Model = &event.Model{Name: "gpt-4o", Version: "2024-08-06"}
			r.Resource = &event.Resource{Type: "deployment", ID: "dep-1"}
			r.Outcome = "success"
		})
	}
	recs[rare] = rec("globex", "the-one", "model.deploy", func(r *event.Record) {
		r.Time = t0.Add(1000 * time.Hour)
		r.Actor = &event.Actor{ID: "rare-actor", Type: "user"}
		r.Model = &event.Model{Name: "rare-model", Version: "v9"}
		r.Resource = &event.Resource{Type: "deployment", ID: "dep-rare"}
		r.Outcome = "denied"
	})
	for i := 0; i < n; i += 700 {
		apply(t, ix, e.add(t, recs[i:min(i+700, n)]...))
	}
	for _, q := range []Query{
		{Actor: "rare-actor"},
		{Actors: []string{"nobody", "rare-actor"}},
		{Model: "rare-model"},
		{Model: "rare-model@v9"},
		{Resource: "dep-rare"},
		{Resource: "deployment:dep-rare"},
		{Type: "model.deploy"},
		{Type: "model.*"},
		{Outcome: "denied"},
		{Tenants: []string{"globex"}},
		{Tenant: "globex"},
		{From: t0.Add(999 * time.Hour), To: t0.Add(1001 * time.Hour)},
		{Tenants: []string{"acme", "globex"}, Actor: "rare-actor", Order: OrderDesc},
	} {
		before := ix.checked.Load()
		p, err := ix.Query(ctx, q)
		if err != nil || len(p.Hits) != 1 || p.Hits[0].Index != rare {
			t.Errorf("%+v: %d hits, %v; want record %d alone", q, len(p.Hits), err, rare)
			continue
		}
		if c := ix.checked.Load() - before; c > blockSize {
			t.Errorf("%+v checked %d rows of %d; want at most one block (%d)", q, c, n, blockSize)
		}
	}

	// A version few records have narrows a scan of a name many have.
	for _, q := range []Query{{Model: "gpt-4o@v9"}, {Model: "rare-model@2024-08-06"}} {
		before := ix.checked.Load()
		p, err := ix.Query(ctx, q)
		if err != nil || len(p.Hits) != 0 {
			t.Errorf("%+v: %d hits, %v; want none", q, len(p.Hits), err)
		}
		if c := ix.checked.Load() - before; c > blockSize {
			t.Errorf("%+v checked %d rows of %d; want at most one block (%d)", q, c, n, blockSize)
		}
	}

	// A time range narrows a scan to the chunks of records it overlaps,
	// not to whole blocks: records 70,000-70,099, in one chunk, and the
	// chunk of the rare record, whose times span up to 1,000 hours.
	for _, q := range []Query{
		{From: t0.Add(70_000 * time.Millisecond), To: t0.Add(70_100 * time.Millisecond), Limit: 1000},
		{From: t0.Add(70_000 * time.Millisecond), To: t0.Add(70_100 * time.Millisecond), Limit: 1000, Order: OrderDesc, Type: "api.call"},
	} {
		before := ix.checked.Load()
		p, err := ix.Query(ctx, q)
		if err != nil || len(p.Hits) != 100 || p.Hits[0].Index != 70_000 && p.Hits[0].Index != 70_099 {
			t.Errorf("%+v: %d hits, %v; want records 70,000-70,099", q, len(p.Hits), err)
		}
		if c := ix.checked.Load() - before; c > 2*chunkSize {
			t.Errorf("%+v checked %d rows; want at most two chunks (%d)", q, c, 2*chunkSize)
		}
	}
}

// TestQueriesMatchFiltering checks the index against the obvious filter
// over a log of several blocks: random records, with duplicate ids and
// event times out of order, indexed in batches of random size across
// reopenings (so that blocks are continued and rebuilt), then random
// queries paged through in both orders.
func TestQueriesMatchFiltering(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(ss ...string) string { return ss[rng.IntN(len(ss))] }
	ix, e := openTemp(t, Options{})
	const n = 2*blockSize + 333
	var recs []*event.Record
	for i := range n {
		id := fmt.Sprintf("e-%d", i)
		if i > 0 && rng.IntN(50) == 0 {
			id = recs[rng.IntN(i)].ID // sequenced twice: both indexed
		}
		r := rec(pick("acme", "globex", "initech"), id, pick("ai.inference", "ai.tool_call", "api.call", "model.deploy"), func(r *event.Record) {
			r.Time = t0.Add(time.Duration(i+rng.IntN(3000)-1500) * time.Millisecond)
			if rng.IntN(4) > 0 {
				r.Actor = &event.Actor{ID: fmt.Sprintf("user-%d", rng.IntN(40)), Type: "user"}
			}
			if rng.IntN(3) > 0 {
				r.Model = &event.Model{Name: pick("gpt-4o", "o3"), Version: pick("v1", "v2", "")}
			}
			if rng.IntN(3) > 0 {
				r.Resource = &event.Resource{Type: pick("deployment", "dataset"), ID: fmt.Sprintf("r-%d", rng.IntN(12))}
			}
			r.Outcome = pick("success", "failure", "")
		})
		recs = append(recs, r)
	}
	ix = applyReopening(t, ix, e, recs, rng, 900)
	randomQuery := func() Query {
		var q Query
		for range 1 + rng.IntN(3) {
			switch rng.IntN(10) {
			case 0:
				q.Tenants = []string{pick("acme", "globex"), pick("initech", "nobody")}
			case 1:
				q.Tenant = pick("acme", "globex", "initech")
			case 2:
				q.Type = pick("ai.inference", "ai.*", "api.call", "model.deploy", "a*")
			case 3:
				q.Actor = fmt.Sprintf("user-%d", rng.IntN(40))
			case 4:
				q.Actors = []string{fmt.Sprintf("user-%d", rng.IntN(40)), fmt.Sprintf("user-%d", rng.IntN(40))}
			case 5:
				q.Model = pick("gpt-4o", "o3", "gpt-4o@v1", "o3@v2", "o3@")
			case 6:
				q.Outcome = pick("success", "failure")
			case 7:
				q.Resource = pick("r-3", "deployment:r-5", "dataset:r-1")
			case 8:
				from := t0.Add(time.Duration(rng.IntN(n)) * time.Millisecond)
				q.From, q.To = from, from.Add(time.Duration(1+rng.IntN(n/2))*time.Millisecond)
			case 9:
				after := uint64(rng.IntN(n))
				q.After = &after
			}
		}
		q.Limit = 1 + rng.IntN(300)
		if rng.IntN(2) == 0 {
			q.Order = OrderDesc
		}
		return q
	}
	for range 150 {
		q := randomQuery()
		var want []uint64
		for i := range n {
			if matchesQuery(q, recs[i]) && (q.After == nil || uint64(i) > *q.After) {
				want = append(want, uint64(i))
			}
		}
		if q.Order == OrderDesc {
			slices.Reverse(want)
		}
		// Up to 12 pages; then the pages so far must be the start.
		var got []uint64
		more := false
		for page := 0; page < 12; page++ {
			p, err := ix.Query(ctx, q)
			if err != nil {
				t.Fatalf("%+v: %v", q, err)
			}
			for _, h := range p.Hits {
				got = append(got, h.Index)
			}
			if more = p.NextCursor != ""; !more {
				break
			}
			q.Cursor = p.NextCursor
		}
		if more && len(got) < len(want) {
			want = want[:len(got)]
		}
		q.Cursor = ""
		if !slices.Equal(got, want) {
			t.Fatalf("%+v: got %d records %v, want %d %v", q, len(got), head(got), len(want), head(want))
		}
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 10)] }

// matchesQuery is the plain reading of Query's filters (but After and
// Text) for one record.
func matchesQuery(q Query, r *event.Record) bool {
	var actor, model, version, rtype, rid string
	if r.Actor != nil {
		actor = r.Actor.ID
	}
	if r.Model != nil {
		model, version = r.Model.Name, r.Model.Version
	}
	if r.Resource != nil {
		rtype, rid = r.Resource.Type, r.Resource.ID
	}
	switch {
	case q.Tenants != nil && !slices.Contains(q.Tenants, "*") && !slices.Contains(q.Tenants, r.Tenant),
		q.Tenant != "" && q.Tenant != r.Tenant,
		strings.HasSuffix(q.Type, "*") && !strings.HasPrefix(r.Type, strings.TrimSuffix(q.Type, "*")),
		q.Type != "" && !strings.HasSuffix(q.Type, "*") && q.Type != r.Type,
		q.Actor != "" && q.Actor != actor,
		q.Actors != nil && (actor == "" || !slices.Contains(q.Actors, actor)),
		q.Outcome != "" && q.Outcome != r.Outcome,
		!q.From.IsZero() && r.Time.Before(q.From),
		!q.To.IsZero() && !r.Time.Before(q.To):
		return false
	}
	if q.Model != "" {
		// An empty version is stored as none, which "name@" does not
		// match.
		name, v, ok := strings.Cut(q.Model, "@")
		if name != model || ok && (v == "" || v != version) {
			return false
		}
	}
	if q.Resource != "" {
		// Empty values are stored as none, which nothing matches.
		typ, id, ok := strings.Cut(q.Resource, ":")
		if q.Resource != rid && !(ok && typ != "" && id != "" && typ == rtype && id == rid) {
			return false
		}
	}
	return true
}

// FuzzFilterValues: whatever values a client puts in the filters (they
// become posting keys and key ranges), a query either answers exactly the
// records that match or, for a malformed query, says so.
func FuzzFilterValues(f *testing.F) {
	f.Add("acme", "ai.*", "", "gpt-4o@", "", "deployment:dep-1")
	f.Add("", "\xff*", "hmac-sha256:u1", "", "success", "")
	f.Add("*", "*", "", "@", "", ":")
	f.Add("", "a\x00*", "", "gpt-4o", "", "dep-1")
	ix, _ := fixtureIndex(f, Options{})
	recs := fixture()
	f.Fuzz(func(t *testing.T, tenant, typ, actor, model, outcome, resource string) {
		q := Query{Tenants: []string{tenant, "globex"}, Type: typ, Actor: actor, Model: model, Outcome: outcome, Resource: resource, Limit: MaxLimit}
		p, err := ix.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		var want []uint64
		for i, r := range recs {
			if matchesQuery(q, r) {
				want = append(want, uint64(i))
			}
		}
		if got := indexes(p); !slices.Equal(got, want) && len(got)+len(want) > 0 {
			t.Fatalf("%+v: got %v, want %v", q, got, want)
		}
	})
}

// TestWidePrefix: a type prefix with more values than are walked one by
// one is checked on the rows of every block, in both orders, and the scan
// ends with the log.
func TestWidePrefix(t *testing.T) {
	ix, e := openTemp(t, Options{})
	var recs []*event.Record
	for i := range maxPrefixKeys + 6 {
		recs = append(recs, rec("acme", fmt.Sprintf("e-%d", i), fmt.Sprintf("t.x%03d", i)))
	}
	recs = append(recs, rec("acme", "other", "api.call"))
	apply(t, ix, e.add(t, recs...))
	for _, order := range []string{OrderAsc, OrderDesc} {
		p, err := ix.Query(context.Background(), Query{Type: "t.*", Order: order, Limit: MaxLimit})
		if err != nil || len(p.Hits) != maxPrefixKeys+6 || p.NextCursor != "" {
			t.Errorf("order %s: %d hits, cursor %q, %v; want %d", order, len(p.Hits), p.NextCursor, err, maxPrefixKeys+6)
		}
	}
}
