package privacy

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// TestKeyIDAttributes: the ids come back as listed, however many, each
// attribute value within the bound events have.
func TestKeyIDAttributes(t *testing.T) {
	for _, n := range []int{0, 1, 2, 146, 147, 1000} {
		var ids []string
		for i := range n {
			ids = append(ids, fmt.Sprintf("dk-%024x", i))
		}
		attrs := KeyIDAttributes(ids)
		for name, v := range attrs {
			if len(v.(string)) > maxValue {
				t.Errorf("%d ids: %s holds %d bytes", n, name, len(v.(string)))
			}
		}
		if got := KeyIDs(attrs); !slices.Equal(got, ids) {
			t.Errorf("%d ids: %d come back", n, len(got))
		}
	}
}

type fakeKeys struct {
	held   map[string]bool
	cursor uint64
	has    bool
	saves  int
}

func (k *fakeKeys) EraseKeys(_ context.Context, ids []string) ([]string, error) {
	var out []string
	for _, id := range ids {
		if k.held[id] {
			delete(k.held, id)
			out = append(out, id)
		}
	}
	return out, nil
}

func (k *fakeKeys) ErasureCursor(context.Context) (uint64, bool, error) { return k.cursor, k.has, nil }

func (k *fakeKeys) SetErasureCursor(_ context.Context, c uint64) error {
	k.cursor, k.has = c, true
	k.saves++
	return nil
}

// TestGuard: Guard destroys the keys erasure records list, whether the
// entries come decoded or only stored, starts where the catalog left off
// (or at Start), and stores its cursor after an erasure and otherwise only
// now and then.
func TestGuard(t *testing.T) {
	ctx := context.Background()
	keys := &fakeKeys{held: map[string]bool{"dk-1": true, "dk-2": true, "dk-3": true, "dk-other": true}}
	g := &Guard{Keys: keys, Start: 7, SaveEvery: time.Hour}
	if c, err := g.Cursor(ctx); err != nil || c != 7 || keys.cursor != 7 {
		t.Fatalf("Cursor of a catalog with none = %d, %v; want Start, stored", c, err)
	}
	entry := func(i uint64, r *event.Record, decoded bool) ledger.Entry {
		data, err := event.Canonical(r)
		if err != nil {
			t.Fatal(err)
		}
		e := ledger.Entry{Index: i, Data: data}
		if decoded {
			e.Value = r
		}
		return e
	}
	rec := func(typ string, ids ...string) *event.Record {
		return &event.Record{ID: typ, Type: typ, Tenant: "acme", Time: time.Unix(1, 0).UTC(), ReceivedAt: time.Unix(1, 0).UTC(),
			Attributes: map[string]any(KeyIDAttributes(ids))}
	}
	saves := keys.saves
	if err := g.Apply(ctx, []ledger.Entry{entry(7, rec("ai.inference", "dk-other"), false), entry(8, rec("ai.inference"), true)}); err != nil {
		t.Fatal(err)
	}
	if keys.saves != saves || !keys.held["dk-other"] {
		t.Fatalf("records that are not erasures: %d saves, dk-other held %v", keys.saves-saves, keys.held["dk-other"])
	}
	// When the server stops, the cursor goes past them, once.
	if err := g.Save(ctx); err != nil || keys.cursor != 9 {
		t.Fatalf("Save: cursor %d, %v; want 9", keys.cursor, err)
	}
	if g.Save(ctx); keys.saves != saves+1 {
		t.Errorf("Save with nothing new stored again (%d stores)", keys.saves-saves)
	}
	if err := g.Apply(ctx, []ledger.Entry{entry(9, rec(TypeErasure, "dk-1"), true), entry(10, rec(TypeErasure, "dk-2", "dk-3"), false)}); err != nil {
		t.Fatal(err)
	}
	if len(keys.held) != 1 || !keys.held["dk-other"] || keys.cursor != 11 {
		t.Errorf("after two erasure records: held %v, cursor %d; want dk-other only, cursor 11", keys.held, keys.cursor)
	}
	g2 := &Guard{Keys: keys, Start: 100}
	if c, _ := g2.Cursor(ctx); c != 11 {
		t.Errorf("a guard over the same catalog starts at %d; want 11", c)
	}
}
