package detect

import (
	"fmt"
	"testing"
	"time"
)

// TestRestoreNullGroup: a detector state holding a null group is either
// refused by Restore or survives the next Advance.
func TestRestoreNullGroup(t *testing.T) {
	rules := mustLoad(t, `rules:
  - id: burst
    kind: threshold
    types: [ai.*]
    group_by: [actor.id]
    window: 10m
    threshold: 5
`)
	snap := fmt.Sprintf(`{"version":1,"rules":{"burst":{"hash":%q,"state":{"groups":{"u":null}}}}}`, rules[0].Hash)
	e := NewEngine(rules)
	if err := e.Restore([]byte(snap)); err != nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Advance after restoring %s: panic %v", snap, r)
		}
	}()
	run(e, []step{adv(3 * time.Hour)}, 0)
}
