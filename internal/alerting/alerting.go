// Package alerting runs the detector: it follows the log, evaluates the
// detection rules on every committed record, records each alert transition
// in the log itself as an alert.fired or alert.resolved event, and hands the
// alert to delivery.
//
// Alerts are evidence, so they go through the same append path as every
// other event. Restarts neither lose nor repeat one: the rule engine's state
// is saved with the log index it has reached, and every alert record has an
// id derived from the rule, the group and the time it fired, so a
// transition computed again after a crash is the same record, which the
// log stores once.
package alerting

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/detect"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
	"github.com/aitrail/aitrail/internal/notify"
)

// Appender appends events durably: the ingest pipeline.
type Appender interface {
	Append(ctx context.Context, p authz.Principal, events []event.Event) (ingest.Receipt, error)
}

// Sender hands an alert to delivery; it must not block.
type Sender interface {
	Send(a notify.Alert) error
}

// StateStore keeps the detector's state. Save must be durable when it
// returns; Load returns nil, nil when nothing was saved yet.
type StateStore interface {
	Load() ([]byte, error)
	Save(state []byte) error
}

// Detector is a ledger.Handler that evaluates rules. Create it with New.
type Detector struct {
	appender Appender
	sender   Sender
	store    StateStore
	log      *slog.Logger
	idKey    []byte // see New

	mu       sync.Mutex // guards engine, state and saved
	engine   *detect.Engine
	state    state
	resolves map[string]bool // rule id → its alerts resolve (not match or new_value)
	saved    time.Time       // when the state was last saved
	stats    Stats

	// OnRecorded, if set, is called for each alert fired by a record with
	// the time from the record's receipt to the alert being recorded.
	OnRecorded func(latency time.Duration)
}

// Stats count what the detector did since it started.
type Stats struct {
	// Records is how many records the rules were evaluated on, and
	// EvaluationSeconds how long that took.
	Records           uint64
	EvaluationSeconds float64
	// Fired and Resolved count the alert transitions recorded.
	Fired, Resolved uint64
	// Groups is how many groups (and new_value values) the rules keep now,
	// and GroupsEvicted how many they forgot for the bound (SetMaxGroups)
	// since the state began.
	Groups        int
	GroupsEvicted uint64
}

// Stats returns the detector's counters.
func (d *Detector) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	for _, rs := range d.engine.Stats() {
		s.Groups += rs.Groups
		s.GroupsEvicted += rs.Evicted
	}
	return s
}

// SetMaxGroups bounds the groups each rule keeps (detect.Engine.SetMaxGroups).
func (d *Detector) SetMaxGroups(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.engine.SetMaxGroups(n)
}

// saveEvery bounds how often the state is saved. Saving it less often than
// every batch costs nothing in correctness: after a crash the records since
// the last save are observed again and give the same alerts, with the same
// ids, which the log stores once. Saving encodes the whole state (a few
// MB with thousands of actors), which every second cost about a third of
// the detector's CPU under batched ingest; every 5 s, a restart replays at
// most 5 s of records.
const saveEvery = 5 * time.Second

// state is what the detector saves besides the engine's own state.
type state struct {
	// Start is the log size when the detector first ran: it does not alert
	// on history older than itself.
	Start uint64 `json:"start"`
	// Firing maps a firing alert's rule and group to its id and start.
	Firing map[string]firing `json:"firing"`
	// Engine is detect.Engine's snapshot.
	Engine json.RawMessage `json:"engine"`
	// Rules maps each rule in force to its hash, to notice changes.
	Rules map[string]string `json:"rules"`
	// RuleChanges counts the changes of the rule set recorded: the n-th
	// change's record has an id of its own, even when the set returns to
	// one it had before (A, B, A, B).
	RuleChanges uint64 `json:"rule_changes,omitempty"`
}

type firing struct {
	ID     string    `json:"id"`
	Tenant string    `json:"tenant"`
	Since  time.Time `json:"since"`
}

// system is the principal alerts are recorded as.
var system = authz.Principal{TokenID: ingest.SystemTokenID, Name: "aitrail-detector", Root: true}

// New returns a detector for rules, resuming from the state in store. A
// detector without saved state starts at logSize: it watches what happens
// from now on, not the past.
//
// idKey, a secret, makes the ids of the records the detector writes (alerts,
// rule changes) unpredictable: the log stores one record per id, and a
// producer that could predict one could send an event with it first and
// keep the record out of the log. The same key must be given in every run,
// so that a record written again after a crash keeps its id.
func New(rules []*detect.Rule, logSize uint64, appender Appender, sender Sender, store StateStore, idKey []byte, log *slog.Logger) (*Detector, error) {
	if log == nil {
		log = slog.Default()
	}
	d := &Detector{appender: appender, sender: sender, store: store, log: log, engine: detect.NewEngine(rules),
		resolves: map[string]bool{}, idKey: idKey}
	d.engine.SetIDKey(idKey)
	for _, r := range rules {
		d.resolves[r.ID] = r.Kind != detect.KindMatch && r.Kind != detect.KindNewValue
	}
	saved, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("couldn't read the detector state: %w", err)
	}
	if saved == nil {
		d.state = state{Start: logSize, Firing: map[string]firing{}}
		return d, nil
	}
	if err := json.Unmarshal(saved, &d.state); err != nil {
		return nil, fmt.Errorf("couldn't decode the detector state: %w", err)
	}
	if d.state.Firing == nil {
		d.state.Firing = map[string]firing{}
	}
	if err := d.engine.Restore(d.state.Engine); err != nil {
		// The rules' windows start again empty; alerts already recorded
		// stay recorded.
		log.Warn("detector state not restored; rule windows start empty", "err", err)
	}
	return d, nil
}

// RecordRules appends an admin.change record when the rules in force differ
// from those of the last run: which rules were added, removed or changed,
// so the log says which rules judged which records. On the first run it
// only remembers them (a new log starts empty). It saves the state, so the
// same change is recorded once.
func (d *Detector) RecordRules(ctx context.Context, rules []*detect.Rule) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := map[string]string{}
	for _, r := range rules {
		now[r.ID] = r.Hash
	}
	var added, removed, changed []string
	for id, h := range now {
		switch old, ok := d.state.Rules[id]; {
		case !ok:
			added = append(added, id)
		case old != h:
			changed = append(changed, id)
		}
	}
	for id := range d.state.Rules {
		if _, ok := now[id]; !ok {
			removed = append(removed, id)
		}
	}
	if len(added)+len(removed)+len(changed) == 0 {
		return nil
	}
	if d.state.Rules == nil {
		d.state.Rules = now
		return d.save()
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	sum := sha256.New()
	for _, id := range slices.Sorted(maps.Keys(now)) {
		sum.Write([]byte(id + "\x00" + now[id] + "\x00"))
	}
	setHash := hex.EncodeToString(sum.Sum(nil))
	// The record's id (see New): the same for the same change recorded
	// again after a crash, another for every change.
	n := d.state.RuleChanges + 1
	mac := hmac.New(sha256.New, d.idKey)
	fmt.Fprintf(mac, "%d\x00%s", n, setHash)
	ev := event.Event{
		ID: "rules-" + hex.EncodeToString(mac.Sum(nil))[:24], Type: "admin.change", Tenant: event.DefaultTenant, Action: "rules.change", Outcome: "success",
		Actor:    &event.Actor{ID: "aitrail-detector", Type: "system"},
		Resource: &event.Resource{Type: "rules", ID: "sha256:" + setHash},
		Attributes: map[string]any{"rules.added": strings.Join(added, ","), "rules.removed": strings.Join(removed, ","),
			"rules.changed": strings.Join(changed, ","), "rules.count": len(now)},
	}
	if _, err := d.appender.Append(ctx, system, []event.Event{ev}); err != nil {
		return fmt.Errorf("couldn't record the rule change: %w", err)
	}
	d.state.Rules, d.state.RuleChanges = now, n
	return d.save()
}

// Rewind makes the detector go on from record n if it has seen more: the
// log was restored from a copy that ends there, and the records appended
// after it must be watched, not skipped as seen.
func (d *Detector) Rewind(n uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.engine.Rewind(n)
	d.state.Start = min(d.state.Start, n)
}

// Cursor implements ledger.Handler.
func (d *Detector) Cursor(context.Context) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return max(d.engine.Next(), d.state.Start), nil
}

// Apply implements ledger.Handler: it evaluates the rules on entries,
// records the transitions, and saves the state.
func (d *Detector) Apply(ctx context.Context, entries []ledger.Entry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var evs []event.Event
	var alerts []notify.Alert
	start := time.Now()
	for _, e := range entries {
		if e.Index < d.state.Start {
			continue
		}
		d.stats.Records++
		rec, err := event.RecordFrom(e.Value, e.Data)
		if err != nil {
			d.log.Warn("detector skipped a record it could not read", "index", e.Index, "err", err)
			continue
		}
		ts := d.engine.Observe(e.Index, rec)
		for _, t := range ts {
			ev, a := d.transition(t)
			evs, alerts = append(evs, ev), append(alerts, a)
		}
	}
	d.stats.EvaluationSeconds += time.Since(start).Seconds()
	return d.commit(ctx, evs, alerts)
}

// Advance runs the rules that time alone moves (absence, windows emptying)
// up to now, records what changed and saves the state.
func (d *Detector) Advance(ctx context.Context, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var evs []event.Event
	var alerts []notify.Alert
	for _, t := range d.engine.Advance(now) {
		ev, a := d.transition(t)
		evs, alerts = append(evs, ev), append(alerts, a)
	}
	if len(evs) == 0 {
		return nil
	}
	return d.commit(ctx, evs, alerts)
}

// Run calls Advance every interval until ctx ends.
func (d *Detector) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := d.Advance(ctx, now); err != nil && ctx.Err() == nil {
				d.log.Error("detector couldn't record alerts; retrying", "err", err)
			}
		}
	}
}

// commit appends the alert records, then saves the state (at most every
// saveEvery), then delivers. Should the process stop between the append
// and the save, the same transitions are computed again and their records
// are not stored twice.
func (d *Detector) commit(ctx context.Context, evs []event.Event, alerts []notify.Alert) error {
	if len(evs) > 0 {
		if _, err := d.appender.Append(ctx, system, evs); err != nil {
			return fmt.Errorf("couldn't record alerts: %w", err)
		}
		now := time.Now()
		for i, ev := range evs {
			if ev.Type == "alert.resolved" {
				d.stats.Resolved++
				continue
			}
			d.stats.Fired++
			if d.OnRecorded != nil && !alerts[i].StartsAt.IsZero() {
				d.OnRecorded(now.Sub(alerts[i].StartsAt))
			}
		}
	}
	if time.Since(d.saved) >= saveEvery {
		if err := d.save(); err != nil {
			return err
		}
	}
	for _, a := range alerts {
		if err := d.sender.Send(a); err != nil {
			d.log.Warn("an alert could not be handed to delivery", "rule", a.Labels["alertname"], "err", err)
		}
	}
	return nil
}

// Save saves the state now; the server calls it when it stops.
func (d *Detector) Save() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.save()
}

func (d *Detector) save() error {
	snap, err := d.engine.Snapshot()
	if err != nil {
		return err
	}
	d.state.Engine = snap
	data, err := json.Marshal(d.state)
	if err != nil {
		return err
	}
	if err := d.store.Save(data); err != nil {
		return fmt.Errorf("couldn't save the detector state: %w", err)
	}
	d.saved = time.Now()
	return nil
}

// transition turns an engine transition into its alert record and the
// alert for delivery, in the tenant of the records that caused it (a group
// naming a tenant wins; the default tenant when neither says).
func (d *Detector) transition(t detect.Transition) (event.Event, notify.Alert) {
	key := t.Rule + "\x00" + groupKey(t.Group)
	tenant := t.Tenant
	if g := t.Group["tenant"]; g != "" {
		tenant = g
	}
	f, wasFiring := d.state.Firing[key]
	if t.State == detect.Firing || !wasFiring {
		f = firing{ID: alertID(t.Rule, t.Group, t.At), Tenant: tenant, Since: t.At}
		if f.Tenant == "" {
			f.Tenant = event.DefaultTenant
		}
	}
	if t.State == detect.Firing {
		// match and new_value findings do not resolve; remembering them
		// would only grow the state.
		if d.resolves[t.Rule] {
			d.state.Firing[key] = f
		}
	} else {
		delete(d.state.Firing, key)
	}
	ev := t.Event(f.ID)
	ev.Tenant = f.Tenant
	a := notify.Alert{
		Labels:      map[string]string{"alertname": t.Rule, "severity": t.Severity, "tenant": f.Tenant},
		Annotations: map[string]string{"summary": t.Summary, "alert_id": f.ID, "rule_hash": t.RuleHash},
		StartsAt:    f.Since,
	}
	for k, v := range t.Group {
		a.Labels[labelName(k)] = v
	}
	if t.State != detect.Firing {
		a.EndsAt = t.At
	}
	return ev, a
}

// groupKey renders a group's labels in a stable order.
func groupKey(g map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(g)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + g[k])
	}
	return b.String()
}

// alertID names an alert by its rule, group and start.
func alertID(rule string, group map[string]string, at time.Time) string {
	h := sha256.Sum256([]byte(rule + "\x00" + groupKey(group) + "\x00" + at.UTC().Format(time.RFC3339Nano)))
	return "al-" + hex.EncodeToString(h[:12])
}

// labelName turns a group expression such as actor.id into an Alertmanager
// label name ([a-zA-Z_][a-zA-Z0-9_]*).
func labelName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= '0' && c <= '9' && i > 0) {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "group"
	}
	return string(b)
}
