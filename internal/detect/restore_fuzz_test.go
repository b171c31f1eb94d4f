package detect

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// FuzzRestore: the detector state is read back from a file at every start
// (alerting keeps going with empty windows when Restore refuses it). No
// state Restore accepts may make the engine panic afterwards.
func FuzzRestore(f *testing.F) {
	rules := mustLoad(f, anomalyRule+`
  - id: burst
    kind: threshold
    types: [ai.*]
    group_by: [actor.id]
    window: 10m
    threshold: 5
  - id: seen
    kind: new_value
    value: [actor.id]
    throttle: 1h
  - id: quiet
    kind: absence
    group_by: [actor.id]
    after: 30m
`)
	steps := slices.Concat(dailyTraffic("u", 2, map[int]bool{30: true}, 3), repeat(20, time.Minute, 49*time.Hour, "ai.inference", "w", nil))
	for _, cut := range []int{len(steps) / 4, len(steps) / 2, len(steps) - 5} {
		e := NewEngine(rules)
		run(e, steps[:cut], 0)
		snap, err := e.Snapshot()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(snap)
	}
	for _, r := range rules {
		if r.ID == "burst" { // a damaged or edited state file: a null group
			f.Add([]byte(fmt.Sprintf(`{"version":1,"rules":{"burst":{"hash":%q,"state":{"groups":{"u":null}}}}}`, r.Hash)))
		}
	}
	after := slices.Concat(repeat(30, time.Minute, 50*time.Hour, "ai.inference", "u", nil), []step{adv(60 * time.Hour), adv(80 * time.Hour)})
	f.Fuzz(func(t *testing.T, snap []byte) {
		e := NewEngine(rules)
		if err := e.Restore(snap); err != nil {
			return
		}
		run(e, after, 1000)
		if _, err := e.Snapshot(); err != nil {
			t.Fatalf("Snapshot after a restored state: %v", err)
		}
	})
}
