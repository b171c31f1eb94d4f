package index

import (
	"context"
	"fmt"
	"testing"

	"github.com/aitrail/aitrail/internal/event"
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
