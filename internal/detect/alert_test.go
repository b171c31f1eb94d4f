package detect

import (
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
)

// TestTransitionEvent checks that an alert is an event the log accepts,
// in the tenant of the records that raised it, and that an alert event
// observed by the detector raises nothing further in the built-in pack.
func TestTransitionEvent(t *testing.T) {
	rules := mustLoad(t, "rules:\n  - id: th\n    kind: threshold\n    group_by: ['attributes[\"k\"]', actor.id]\n    window: 1m\n    threshold: 2\n")
	e := NewEngine(rules)
	attrs := map[string]any{"k": "v"}
	ts := run(e, append(repeat(2, time.Second, 0, "x", "u", attrs), adv(10*time.Minute)), 0)
	if len(ts) != 2 {
		t.Fatalf("got %v, want firing and resolved", brief(ts))
	}
	for i, want := range []string{TypeAlertFired, TypeAlertResolved} {
		ev := ts[i].Event("al-1")
		rec, _, err := event.Normalize(&ev, t0, event.DefaultLimits())
		if err != nil {
			t.Fatalf("%s event refused by the log: %v", want, err)
		}
		a := rec.Attributes
		if rec.ID != ts[i].ID || rec.Resource.ID != "al-1" || rec.Type != want || rec.Tenant != "t" || a[AttrRule] != "th" || a[AttrRuleHash] != rules[0].Hash ||
			a[AttrTriggerIDs] != "u-0,u-1" || a[AttrTriggerIndexes] != "0,1" || a[AttrGroup] != `{"actor.id":"u","attributes[\"k\"]":"v"}` {
			t.Errorf("%s record %+v lacks the rule, its hash, the tenant, the group or the triggers", want, rec)
		}
		if got := NewEngine(Builtin()).Observe(0, &rec); len(got) != 0 {
			t.Errorf("an alert record raised alerts itself: %v", brief(got))
		}
	}
}
