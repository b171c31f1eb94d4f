package index

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

func TestLookupIDs(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	var recs []*event.Record
	for i := 0; i < 1200; i++ {
		tenant := "a"
		if i%2 == 1 {
			tenant = "b"
		}
		recs = append(recs, &event.Record{ID: fmt.Sprintf("id-%d", i/2), Type: "t.x", Tenant: tenant})
	}
	apply(t, ix, e.add(t, recs...))
	var keys []Key
	for i := 0; i < 700; i++ {
		keys = append(keys, Key{"a", fmt.Sprintf("id-%d", i)})
	}
	keys = append(keys, Key{"c", "id-1"}, Key{"b", "nope"})
	got, err := ix.LookupIDs(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 600 {
		t.Fatalf("found %d keys, want 600 (tenant a holds id-0..id-599)", len(got))
	}
	for i := 0; i < 600; i++ {
		if loc, ok := got[Key{"a", fmt.Sprintf("id-%d", i)}]; !ok || loc.Index != uint64(2*i) || loc.Offset == 0 {
			t.Fatalf("id-%d in tenant a: %+v %v, want index %d and its offset", i, loc, ok, 2*i)
		}
	}
	if _, ok := got[Key{"c", "id-1"}]; ok {
		t.Fatal("an id was found in a tenant that does not hold it")
	}
}

// TestLookupAcrossParts looks events up by id in a log of several parts of
// records_id, with ids in no order, an id in two tenants and one sequenced
// twice in different parts; with groups of 64 parts, none complete, and
// groups of two, two complete, whose filters stand for their parts'.
func TestLookupAcrossParts(t *testing.T) {
	for _, parts := range []int64{64, 2} {
		t.Run(fmt.Sprintf("groups of %d parts", parts), func(t *testing.T) {
			setGroupParts(t, parts)
			testLookupAcrossParts(t)
		})
	}
}

// setGroupParts sets groupParts for the test, and back once the indexes it
// opens after are closed (cleanups run last first), so that no group
// builder reads it meanwhile.
func setGroupParts(t *testing.T, n int64) {
	old := groupParts
	groupParts = n
	t.Cleanup(func() { groupParts = old })
}

// waitGroups waits until the index has built the filters of its complete
// groups.
func waitGroups(t testing.TB, ix *Index) {
	t.Helper()
	for start := time.Now(); len(ix.ids.missingGroups(int64(ix.Visible()>>partBits)/groupParts)) > 0; {
		if time.Since(start) > 20*time.Second {
			t.Fatal("the filters of complete groups were not built")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLookupAcrossParts(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	const n = 5*partSize + 100
	id := func(i int) string { return fmt.Sprintf("%08x", uint32(i)*2654435761) } // a permutation
	var recs []*event.Record
	for i := range n {
		recs = append(recs, rec("acme", id(i), "ai.inference"))
	}
	recs[3*partSize+7] = rec("globex", id(5), "ai.inference") // id-5 in another tenant
	recs[4*partSize+9] = rec("acme", id(partSize+1), "ai.inference")
	// Batches of random size, reopening now and then, so that id filters
	// are continued, rebuilt from the rows of their part and reloaded.
	ix = applyReopening(t, ix, e, recs, rand.New(rand.NewPCG(3, 4)), 5000)
	waitGroups(t, ix)

	// Every record is found where it is.
	all := make([]Key, n)
	for i, r := range recs {
		all[i] = Key{r.Tenant, r.ID}
	}
	found, err := ix.LookupIDs(ctx, all)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range all {
		if loc, ok := found[k]; !ok || (loc.Index != uint64(i) && k.ID != id(partSize+1)) {
			t.Fatalf("LookupIDs: record %d (%v) at %+v (found %v)", i, k, loc, ok)
		}
	}
	// The five complete parts' filters, or those of the two complete
	// groups of two and of the fifth part, and the filters of the groups'
	// four parts, which the lookups above read back.
	want := int64(5 * filterBits / 8)
	if groupParts == 2 {
		want = int64(2*groupFilterBits()/8 + filterBits/8 + 4*filterBits/8)
	}
	if got := ix.IDFilterBytes(); got != want {
		t.Errorf("IDFilterBytes = %d, want %d", got, want)
	}
	// An id the index does not hold is probed for in the open part only,
	// but for the filters' rare false positives.
	probes := 0
	for i := range 10000 {
		parts, err := ix.candidates(ctx, 0, n>>partBits, bloom.Locations([]byte(fmt.Sprintf("absent-%d", i)), groupFilterHashes))
		if err != nil {
			t.Fatal(err)
		}
		probes += len(parts)
	}
	if probes > 10000*11/10 {
		t.Errorf("10,000 absent ids would probe %d parts, want at most 11,000 (the open part, and 1 %% of the 5 others)", probes)
	}

	var keys []Key
	for _, i := range []int{0, 1, 5, partSize - 1, partSize, partSize + 1, 2*partSize + 17, n - 1} {
		keys = append(keys, Key{"acme", id(i)})
	}
	keys = append(keys, Key{"globex", id(5)}, Key{"acme", "absent"}, Key{"initech", id(0)})
	got, err := ix.LookupIDs(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	wantAt := map[Key]uint64{
		{"acme", id(0)}: 0, {"acme", id(1)}: 1, {"acme", id(5)}: 5,
		{"acme", id(partSize - 1)}: partSize - 1, {"acme", id(partSize)}: partSize,
		{"acme", id(2*partSize + 17)}: 2*partSize + 17, {"acme", id(n - 1)}: n - 1,
		{"globex", id(5)}: 3*partSize + 7,
	}
	for k, idx := range wantAt {
		if loc, ok := got[k]; !ok || loc.Index != idx {
			t.Errorf("LookupIDs: %v at %+v (found %v), want index %d", k, loc, ok, idx)
		}
	}
	// Sequenced twice: either will do for ingest, which reads it back.
	if loc := got[Key{"acme", id(partSize + 1)}]; loc.Index != partSize+1 && loc.Index != 4*partSize+9 {
		t.Errorf("LookupIDs: id sequenced twice at %d, want %d or %d", loc.Index, partSize+1, 4*partSize+9)
	}
	if len(got) != len(wantAt)+1 {
		t.Errorf("LookupIDs found %d keys, want %d: %v", len(got), len(wantAt)+1, got)
	}

	// check looks events up one at a time.
	check := func() {
		t.Helper()
		for _, c := range []struct {
			tenant, id string
			want       uint64
			ok         bool
		}{
			{"acme", id(0), 0, true},
			{"acme", id(n - 1), n - 1, true},
			{"globex", id(5), 3*partSize + 7, true},
			{"acme", id(partSize + 1), partSize + 1, true}, // the first of the two
			{"globex", id(0), 0, false},
			{"acme", "absent", 0, false},
		} {
			idx, ok, err := ix.LookupID(ctx, c.tenant, c.id)
			if err != nil || ok != c.ok || idx != c.want {
				t.Errorf("LookupID(%s, %s) = %d, %v, %v; want %d, %v", c.tenant, c.id, idx, ok, err, c.want, c.ok)
			}
			h, err := ix.Get(ctx, nil, c.tenant, c.id)
			switch {
			case c.ok && (err != nil || h.Index != c.want):
				t.Errorf("Get(%s, %s) = index %d, %v; want %d", c.tenant, c.id, h.Index, err, c.want)
			case !c.ok && !errors.Is(err, ErrNotFound):
				t.Errorf("Get(%s, %s): %v, want ErrNotFound", c.tenant, c.id, err)
			}
		}
		// Without a tenant, Get returns the visible record with the lowest index.
		if h, err := ix.Get(ctx, []string{"globex"}, "", id(5)); err != nil || h.Index != 3*partSize+7 {
			t.Errorf("Get of globex's %s = index %d, %v; want %d", id(5), h.Index, err, 3*partSize+7)
		}
		if h, err := ix.Get(ctx, nil, "", id(5)); err != nil || h.Index != 5 {
			t.Errorf("Get of %s in any tenant = index %d, %v; want 5", id(5), h.Index, err)
		}
	}
	check()

	// The group filters are kept: a reopened index has them at once.
	if groupParts == 2 {
		ix.Close()
		ix = e.open(t, Options{})
		if missing := ix.ids.missingGroups(2); len(missing) > 0 {
			t.Errorf("groups %v have no filter after reopening", missing)
		}
		check()
	}

	// The same with no filters (every part probed) and two probes or parts
	// a query.
	defer func(n int) { lookupChunk = n }(lookupChunk)
	lookupChunk = 2
	ix.ids.clear()
	check()
	if found, err := ix.LookupIDs(ctx, keys); err != nil || !maps.Equal(found, got) {
		t.Errorf("LookupIDs without filters, two probes a query: %v, %v; want %v", found, err, got)
	}
}

// TestLookupsProbeRecordsID checks that lookups by id search records_id
// one part at a time rather than scanning records.
func TestLookupsProbeRecordsID(t *testing.T) {
	ix, _ := openTemp(t, Options{})
	for _, q := range []string{
		"WITH probe (part, id) AS (VALUES (?, ?), (?, ?)) SELECT records.tenant, records.id, idx, pos FROM probe CROSS JOIN records WHERE " +
			idPart + " = probe.part AND records.id = probe.id",
		"SELECT idx, tenant, pos FROM records WHERE " + idPart + " IN (?, ?) AND id = ? AND tenant IN (?, ?) ORDER BY idx LIMIT 1",
	} {
		rows, err := ix.db.Query("EXPLAIN QUERY PLAN "+q, 3, "a", 0, "b", "c")
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		joined := strings.Join(plan, "; ")
		if !strings.Contains(joined, "SEARCH records USING INDEX records_id (<expr>=? AND id=?") {
			t.Errorf("plan of %q:\n%s\nwant a search of records_id by part and id", q, joined)
		}
	}
}

// TestLookupWhileApplying looks up ids already applied while more parts
// are completed and their filters published: a lookup never misses an
// applied record, whatever the moment.
func TestLookupWhileApplying(t *testing.T) {
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	const n = 3*partSize + 500
	id := func(i int) string { return fmt.Sprintf("w-%08x", uint32(i)*2654435761) }
	var es [][]ledger.Entry
	for i := 0; i < n; i += 2000 {
		var recs []*event.Record
		for j := i; j < min(i+2000, n); j++ {
			recs = append(recs, rec("acme", id(j), "ai.inference"))
		}
		es = append(es, e.add(t, recs...))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, batch := range es {
			if err := ix.Apply(ctx, batch); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	rng := rand.New(rand.NewPCG(5, 6))
	for lookups := 0; ; lookups++ {
		select {
		case <-done:
			if ix.Visible() != n || lookups == 0 {
				t.Fatalf("applied %d of %d records, %d lookups", ix.Visible(), n, lookups)
			}
			return
		default:
		}
		v := int(ix.Visible())
		if v == 0 {
			continue
		}
		i := rng.IntN(v)
		if idx, ok, err := ix.LookupID(ctx, "acme", id(i)); err != nil || !ok || idx != uint64(i) {
			t.Fatalf("LookupID of record %d with %d applied: %d, %v, %v", i, v, idx, ok, err)
		}
		found, err := ix.LookupIDs(ctx, []Key{{"acme", id(i)}, {"acme", id(v - 1)}})
		if want := 1 + min(1, v-1-i); err != nil || len(found) != want { // one key when i is v-1
			t.Fatalf("LookupIDs of records %d and %d with %d applied: %v, %v", i, v-1, v, found, err)
		}
	}
}

// TestGroupFilterBuiltAsIndexed: a group indexed whole by one open index
// has its filter as soon as the Apply that moves past it commits, and the
// filter holds every id of the group; a group the index was reopened
// within gets its filter from its rows, in the background.
func TestGroupFilterBuiltAsIndexed(t *testing.T) {
	setGroupParts(t, 2)
	ctx := context.Background()
	ix, e := openTemp(t, Options{})
	const group = 2 * partSize
	id := func(i int) string { return fmt.Sprintf("%08x", uint32(i)*2654435761) }
	var recs []*event.Record
	for i := range group + 10 {
		recs = append(recs, rec("acme", id(i), "ai.inference"))
	}
	for i := 0; i < len(recs); i += 4000 {
		apply(t, ix, e.add(t, recs[i:min(i+4000, len(recs))]...))
	}
	if missing := ix.ids.missingGroups(1); len(missing) > 0 {
		t.Fatal("group 0 has no filter right after the Apply that moved past it")
	}
	all := make([]Key, len(recs))
	for i, r := range recs {
		all[i] = Key{r.Tenant, r.ID}
	}
	if found, err := ix.LookupIDs(ctx, all); err != nil || len(found) != len(recs) {
		t.Fatalf("LookupIDs found %d of %d: %v", len(found), len(recs), err)
	}

	// Reopened within group 1: its filter comes from its rows.
	ix.Close()
	ix = e.open(t, Options{})
	recs = recs[:0]
	for i := group + 10; i < 2*group+10; i++ {
		recs = append(recs, rec("acme", id(i), "ai.inference"))
	}
	apply(t, ix, e.add(t, recs...))
	waitGroups(t, ix)
	for i := 0; i < 2*group+10; i += 7 {
		if _, ok, err := ix.LookupID(ctx, "acme", id(i)); err != nil || !ok {
			t.Fatalf("LookupID of record %d: %v, %v", i, ok, err)
		}
	}
}
