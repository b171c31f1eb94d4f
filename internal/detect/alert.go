package detect

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/event"
)

// Alert event types and the attributes Transition.Event sets. Attributes
// are flat, so lists are comma-separated and the group is a JSON object.
const (
	TypeAlertFired    = "alert.fired"
	TypeAlertResolved = "alert.resolved"

	AttrRule           = "alert.rule"
	AttrRuleHash       = "alert.rule_hash"
	AttrSeverity       = "alert.severity"
	AttrSummary        = "alert.summary"
	AttrGroup          = "alert.group"
	AttrValue          = "alert.value"
	AttrScore          = "alert.score"
	AttrSuppressed     = "alert.suppressed"
	AttrTriggerIDs     = "alert.trigger_ids"
	AttrTriggerIndexes = "alert.trigger_indexes"
)

// DetectorActor is the actor of alert events.
var DetectorActor = event.Actor{ID: "aitrail-detector", Type: "system"}

// Event returns the event that records the transition in the log: an
// alert.fired or alert.resolved event with the transition's ID, in the
// tenant of the records that triggered it, acted by DetectorActor, about
// the alert alertID (resource type "alert", named by the rule). The caller
// gives a firing and its resolution the same alertID.
func (t Transition) Event(alertID string) event.Event {
	typ := TypeAlertFired
	if t.State == Resolved {
		typ = TypeAlertResolved
	}
	group, _ := json.Marshal(t.Group) // a map of strings always encodes, with sorted keys
	idx := make([]string, len(t.TriggerIndexes))
	for i, x := range t.TriggerIndexes {
		idx[i] = strconv.FormatUint(x, 10)
	}
	attrs := map[string]any{
		AttrRule: t.Rule, AttrRuleHash: t.RuleHash, AttrSeverity: t.Severity, AttrSummary: t.Summary,
		AttrGroup: string(group), AttrValue: t.Value,
	}
	if t.Score != 0 {
		attrs[AttrScore] = t.Score
	}
	if t.Suppressed != 0 {
		attrs[AttrSuppressed] = t.Suppressed
	}
	if len(t.TriggerIDs) > 0 {
		attrs[AttrTriggerIDs] = strings.Join(t.TriggerIDs, ",")
		attrs[AttrTriggerIndexes] = strings.Join(idx, ",")
	}
	actor := DetectorActor
	return event.Event{
		ID: t.ID, Type: typ, Time: t.At.UTC().Format(time.RFC3339Nano), Tenant: t.Tenant, Actor: &actor,
		Action: string(t.State), Outcome: "success", Resource: &event.Resource{Type: "alert", ID: alertID, Name: t.Rule},
		Attributes: attrs,
	}
}
