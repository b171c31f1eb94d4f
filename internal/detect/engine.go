package detect

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/event"
)

// State is whether a transition starts or ends an alert.
type State string

// The states of a Transition.
const (
	Firing   State = "firing"
	Resolved State = "resolved"
)

// Transition is an alert starting or stopping: what the detector appends
// to the log as an alert.fired or alert.resolved event. Rules of kind match
// and new_value only fire: each firing is one finding.
type Transition struct {
	// ID is derived from the rule's hash, the state, the group, the last
	// triggering record and the group's count of firings, so replaying
	// the same records after a restart derives the same ID: recorded as
	// the alert event's id, the log's idempotency drops the repeat.
	ID       string `json:"id"`
	Rule     string `json:"rule"`
	RuleHash string `json:"rule_hash"`
	// Tenant is the tenant of the most recent triggering record; the
	// alert is recorded there.
	Tenant string `json:"tenant"`
	State  State  `json:"state"`
	// Group is the value of each group_by (and, for new_value, each value)
	// expression, keyed by the expression's text.
	Group    map[string]string `json:"group,omitempty"`
	Severity string            `json:"severity"`
	Summary  string            `json:"summary"`
	// Value is what the rule measured: the count or sum for threshold, the
	// rate for anomaly, the seconds of silence for absence.
	Value float64 `json:"value,omitempty"`
	// Score is the modified z-score of an anomaly.
	Score float64 `json:"score,omitempty"`
	// Suppressed counts the firings of this rule and group that throttling
	// withheld since the last one reported.
	Suppressed uint64 `json:"suppressed,omitempty"`
	// TriggerIDs and TriggerIndexes name the most recent records (at most
	// MaxTriggers) that contributed, oldest first.
	TriggerIDs     []string  `json:"trigger_ids,omitempty"`
	TriggerIndexes []uint64  `json:"trigger_indexes,omitempty"`
	At             time.Time `json:"at"`
}

// tickEvery is how far the record clock must move before time-driven
// checks (windows emptying, silence) run for every group.
const tickEvery = time.Second

// Engine evaluates rules over records fed in log order. It is not safe for
// concurrent use; a detector owns one.
type Engine struct {
	rules  []*Rule
	states []*ruleState
	any    []int            // rules for every type
	byType map[string][]int // candidate rules per type, built on demand

	next     uint64 // index of the next record to apply
	now      int64  // the engine clock, unix nanoseconds
	lastTick int64

	maxGroups int // most groups (and new_value values) a rule keeps; 0: no bound
	idKey     []byte
}

// SetIDKey makes the ids of the transitions HMACs under key instead of
// plain hashes. The ids are the alert records' ids, and the log stores one
// record per id: with plain hashes of what a producer can learn (the rule
// pack, its own event, the public checkpoint) it could send an event with
// an alert's id first and keep the alert out of the log.
func (e *Engine) SetIDKey(key []byte) { e.idKey = key }

// SetMaxGroups bounds the groups each rule keeps, and the values a
// new_value rule remembers, to n (0: no bound), trimming what the engine
// holds now. A rule grouped by actor otherwise keeps a group for every
// actor seen within its window (an anomaly rule's, a week of hourly
// history, about a kilobyte), which grows without bound with the number of
// a service's end users.
func (e *Engine) SetMaxGroups(n int) {
	e.maxGroups = n
	for _, st := range e.states {
		e.trim(st, "", "")
	}
}

// trim forgets, once a rule holds more than maxGroups groups, the tenth of
// them seen least recently (never a firing group, nor the group being
// applied), and likewise for the values a new_value rule remembers (never
// the value being applied), counting them in st.Evicted. A forgotten group starts again as new: a threshold or
// anomaly rule loses its counts and baseline for it, a new_value rule may
// report a value again. Trimming a tenth at a time keeps the sorting to
// once per tenth of the bound new groups.
func (e *Engine) trim(st *ruleState, group, value string) {
	if e.maxGroups <= 0 {
		return
	}
	type aged struct {
		key  string
		seen int64
	}
	oldest := func(n int, all []aged) []aged {
		slices.SortFunc(all, func(a, b aged) int { return cmp.Compare(a.seen, b.seen) })
		return all[:min(n, len(all))]
	}
	if len(st.Groups) > e.maxGroups {
		var all []aged
		for k, g := range st.Groups {
			if !g.Firing && k != group {
				all = append(all, aged{k, g.LastSeen})
			}
		}
		for _, a := range oldest(len(st.Groups)-e.maxGroups*9/10, all) {
			delete(st.Groups, a.key)
			st.Evicted++
		}
	}
	if len(st.Seen) > e.maxGroups {
		all := make([]aged, 0, len(st.Seen))
		for k, t := range st.Seen {
			if k != value {
				all = append(all, aged{k, t})
			}
		}
		for _, a := range oldest(len(st.Seen)-e.maxGroups*9/10, all) {
			delete(st.Seen, a.key)
			st.Evicted++
		}
	}
}

// NewEngine returns an engine with no state that evaluates rules.
func NewEngine(rules []*Rule) *Engine {
	e := &Engine{rules: rules, byType: map[string][]int{}}
	for i, r := range rules {
		e.states = append(e.states, newRuleState())
		if slices.Contains(r.prefixes, "") {
			e.any = append(e.any, i)
		}
	}
	return e
}

// Rules returns the rules the engine evaluates.
func (e *Engine) Rules() []*Rule { return e.rules }

// Next returns the index of the next record the engine expects: records
// with smaller indexes have been applied and are ignored if fed again.
func (e *Engine) Next() uint64 { return e.next }

// Rewind makes the engine expect record n next if it expected a later one:
// the log it follows was replaced by a shorter copy, whose new records it
// must not skip. What it learned from the records past n stays.
func (e *Engine) Rewind(n uint64) { e.next = min(e.next, n) }

// RuleStats counts what a rule did that its alerts do not show.
type RuleStats struct {
	// Suppressed is how many firings throttling withheld.
	Suppressed uint64
	// Errors is how many evaluations failed (a missing attribute, a wrong
	// type, the cost limit), each counted as a non-match.
	Errors uint64
	// Groups is how many groups (and, for new_value, values) it keeps now,
	// and Evicted how many it forgot for the bound (SetMaxGroups).
	Groups  int
	Evicted uint64
}

// Stats returns, per rule id, its counters since the engine's state began
// (they are kept in snapshots), for metrics.
func (e *Engine) Stats() map[string]RuleStats {
	out := map[string]RuleStats{}
	for i, r := range e.rules {
		st := e.states[i]
		out[r.ID] = RuleStats{Suppressed: st.Suppressed, Errors: st.Errors, Groups: len(st.Groups) + len(st.Seen), Evicted: st.Evicted}
	}
	return out
}

// candidates returns the rules that may apply to records of type t.
func (e *Engine) candidates(t string) []int {
	if c, ok := e.byType[t]; ok {
		return c
	}
	var c []int
	for i, r := range e.rules {
		if slices.Contains(r.exact, t) || slices.ContainsFunc(r.prefixes, func(p string) bool { return strings.HasPrefix(t, p) }) {
			c = append(c, i)
		}
	}
	if len(e.byType) < 4096 { // types are open: bound the cache
		e.byType[t] = c
	}
	return c
}

// recordTime is the time the engine files a record under: when the server
// received it, or, for records built without one (tests, imports), its
// event time.
func recordTime(r *event.Record) int64 {
	if !r.ReceivedAt.IsZero() {
		return r.ReceivedAt.UnixNano()
	}
	return r.Time.UnixNano()
}

// Observe applies the record at log index index and returns the
// transitions it causes. A record with an index below Next has already
// been applied (before a snapshot was taken) and is ignored, so a follower
// may re-feed records from its persisted cursor after a restart.
func (e *Engine) Observe(index uint64, r *event.Record) []Transition {
	if index < e.next {
		return nil
	}
	e.next = index + 1
	t := recordTime(r)
	var out []Transition
	if t > e.now {
		e.now = t
		if e.now-e.lastTick >= int64(tickEvery) {
			out = e.tick()
		}
	}
	a := &activation{r: r}
	for _, i := range e.candidates(r.Type) {
		out = e.apply(out, i, index, t, a)
	}
	return out
}

// Advance moves the engine clock to now, if it is later, and returns the
// transitions that time alone causes: windows emptying (threshold and
// anomaly resolve) and producers falling silent (absence fires). A
// detector calls it periodically from its clock.
func (e *Engine) Advance(now time.Time) []Transition {
	if n := now.UnixNano(); n > e.now {
		e.now = n
	}
	return e.tick()
}

func (e *Engine) tick() []Transition {
	e.lastTick = e.now
	var out []Transition
	for i, r := range e.rules {
		st := e.states[i]
		if r.Kind == KindMatch || r.Kind == KindNewValue {
			// Time alone never makes these fire: only forget idle groups,
			// in any order.
			maps.DeleteFunc(st.Groups, func(_ string, g *group) bool { return e.forget(r, g) })
			if r.Kind == KindNewValue {
				st.pruneSeen(e.now - int64(r.Window))
			}
			continue
		}
		// Sorted, so that transitions come out in the same order every run.
		for _, k := range slices.Sorted(maps.Keys(st.Groups)) {
			g := st.Groups[k]
			switch r.Kind {
			case KindThreshold:
				out = e.evalThreshold(out, r, st, g, e.now)
			case KindAnomaly:
				g.roll(r, e.now)
				out = e.evalAnomaly(out, r, st, g, e.now)
			case KindAbsence:
				out = e.evalAbsence(out, r, st, g, e.now)
			}
			if e.forget(r, g) {
				delete(st.Groups, k)
			}
		}
	}
	return out
}

// forget tells whether a group has been idle long enough to drop.
func (e *Engine) forget(r *Rule, g *group) bool {
	if g.Firing {
		return false
	}
	idle := e.now - g.LastSeen
	switch r.Kind {
	case KindMatch:
		return idle > int64(r.Throttle)
	case KindNewValue:
		return idle > int64(max(r.Window, r.Throttle))
	case KindThreshold:
		return idle > int64(max(r.Window, r.Throttle)) && g.Value == 0
	case KindAnomaly, KindAbsence:
		return idle > int64(r.Window)
	}
	return false
}

// apply evaluates rule i on one record.
func (e *Engine) apply(out []Transition, i int, index uint64, t int64, a *activation) []Transition {
	r, st := e.rules[i], e.states[i]
	if r.cond != nil {
		ok, err := evalBool(r.cond, a)
		if err != nil {
			st.Errors++
		}
		if !ok {
			return out
		}
	}
	for _, ex := range r.exceptions {
		if ex.matches(a) {
			return out
		}
	}
	// The group's labels and key (the labels joined by NUL), built on the
	// stack: only a new group allocates.
	var lb [8]string
	var buf [128]byte
	labels, kb := lb[:0], buf[:0]
	for j, p := range r.groupBy {
		if j > 0 {
			kb = append(kb, 0)
		}
		labels = append(labels, evalString(p, a))
		kb = append(kb, labels[j]...)
	}
	g := st.Groups[string(kb)]
	if g == nil {
		g = &group{Labels: slices.Clone(labels), FirstSeen: t}
		st.Groups[string(kb)] = g
		if len(st.Groups) > e.maxGroups && e.maxGroups > 0 {
			e.trim(st, string(kb), "")
		}
	}
	g.LastSeen = max(g.LastSeen, t)
	g.addTrigger(a.r.ID, index, a.r.Tenant)
	switch r.Kind {
	case KindMatch:
		return e.fire(out, r, st, g, 0, 0, t, nil)
	case KindThreshold:
		v := 1.0
		if r.sum != nil {
			v = evalNumber(r.sum, a)
		}
		g.addBucket(r, t, v)
		return e.evalThreshold(out, r, st, g, e.now)
	case KindNewValue:
		vals := make([]string, len(r.values))
		for j, p := range r.values {
			vals[j] = evalString(p, a)
		}
		if st.FirstSeen == 0 {
			st.FirstSeen = t
		}
		vk := string(kb) + "\x01" + strings.Join(vals, "\x00")
		_, known := st.Seen[vk]
		st.Seen[vk] = max(st.Seen[vk], t)
		if !known && len(st.Seen) > e.maxGroups && e.maxGroups > 0 {
			e.trim(st, string(kb), vk)
		}
		if known || t-st.FirstSeen < int64(r.Warmup) {
			return out
		}
		extra := map[string]string{}
		for j, v := range r.Value {
			extra[v] = vals[j]
		}
		return e.fire(out, r, st, g, 0, 0, t, extra)
	case KindAnomaly:
		v := 1.0
		if r.sum != nil {
			v = evalNumber(r.sum, a)
		}
		// Rates are filed under the engine clock, which never goes back,
		// so a late record counts in the current interval.
		g.roll(r, e.now)
		g.Subs[subIndex(r, e.now)%anomalySubBuckets].Value += v
		return e.evalAnomaly(out, r, st, g, e.now)
	case KindAbsence:
		g.Count++
		if g.Firing {
			return e.resolve(out, r, st, g, 0, 0, t)
		}
	}
	return out
}

// fire reports a rule starting to fire for g, unless throttled.
func (e *Engine) fire(out []Transition, r *Rule, st *ruleState, g *group, value, score float64, t int64, extra map[string]string) []Transition {
	if r.Kind != KindMatch && r.Kind != KindNewValue {
		g.Firing = true
	}
	g.Episode++
	if r.Throttle > 0 && g.LastFired != 0 && t-g.LastFired < int64(r.Throttle) {
		g.Emitted = false
		g.Suppressed++
		st.Suppressed++
		return out
	}
	g.Emitted = true
	g.LastFired = t
	tr := e.transition(r, g, Firing, value, score, t)
	maps.Copy(tr.Group, extra)
	tr.ID = transitionID(e.idKey, &tr, g.Episode)
	tr.Suppressed, g.Suppressed = g.Suppressed, 0
	return append(out, tr)
}

// resolve reports a rule no longer firing for g, if its firing was
// reported.
func (e *Engine) resolve(out []Transition, r *Rule, st *ruleState, g *group, value, score float64, t int64) []Transition {
	g.Firing = false
	if !g.Emitted {
		return out
	}
	g.Emitted = false
	tr := e.transition(r, g, Resolved, value, score, t)
	tr.ID = transitionID(e.idKey, &tr, g.Episode)
	return append(out, tr)
}

func (e *Engine) transition(r *Rule, g *group, s State, value, score float64, t int64) Transition {
	tr := Transition{Rule: r.ID, RuleHash: r.Hash, State: s, Group: map[string]string{}, Severity: r.Severity,
		Value: value, Score: score, At: time.Unix(0, t).UTC()}
	for j, expr := range r.GroupBy {
		tr.Group[expr] = g.Labels[j]
	}
	tr.Summary = r.Summary
	if tr.Summary == "" {
		tr.Summary = r.Description
	}
	if tr.Summary == "" {
		tr.Summary = r.ID
	}
	if n := len(g.Triggers); n > 0 {
		tr.Tenant = g.Triggers[n-1].Tenant
	}
	for _, tg := range g.Triggers {
		tr.TriggerIDs = append(tr.TriggerIDs, tg.ID)
		tr.TriggerIndexes = append(tr.TriggerIndexes, tg.Index)
	}
	if s == Firing && (r.Kind == KindMatch || r.Kind == KindNewValue) {
		last := g.Triggers[len(g.Triggers)-1]
		tr.TriggerIDs, tr.TriggerIndexes = []string{last.ID}, []uint64{last.Index}
	}
	return tr
}

// transitionID derives a transition's ID from what identifies it whenever
// it is derived: not its time, which for time-driven transitions depends on
// when the detector's clock ticked.
func transitionID(key []byte, tr *Transition, episode uint64) string {
	h := sha256.New()
	if key != nil {
		h = hmac.New(sha256.New, key)
	}
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", tr.RuleHash, tr.State, episode)
	for _, k := range slices.Sorted(maps.Keys(tr.Group)) {
		fmt.Fprintf(h, "%s\x00%s\x00", k, tr.Group[k])
	}
	if n := len(tr.TriggerIndexes); n > 0 {
		fmt.Fprintf(h, "%d", tr.TriggerIndexes[n-1])
	}
	return "alert-" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (e *Engine) evalThreshold(out []Transition, r *Rule, st *ruleState, g *group, now int64) []Transition {
	g.Value = g.windowSum(r, now)
	switch {
	case !g.Firing && g.Value >= *r.Threshold:
		return e.fire(out, r, st, g, g.Value, 0, now, nil)
	case g.Firing && g.Value < *r.Threshold:
		return e.resolve(out, r, st, g, g.Value, 0, now)
	}
	return out
}

func (e *Engine) evalAbsence(out []Transition, r *Rule, st *ruleState, g *group, now int64) []Transition {
	silent := now - g.LastSeen
	if !g.Firing && silent >= int64(r.After) && g.Count >= max(1, r.MinVolume) {
		return e.fire(out, r, st, g, time.Duration(silent).Seconds(), 0, now, nil)
	}
	if g.Firing && silent > int64(r.Window) {
		// Silent for the whole window: no longer a producer that
		// normally sends. The group is forgotten.
		return e.resolve(out, r, st, g, time.Duration(silent).Seconds(), 0, now)
	}
	return out
}

func (e *Engine) evalAnomaly(out []Transition, r *Rule, st *ruleState, g *group, now int64) []Transition {
	x := g.trailing(r, now)
	warm := g.warm(r)
	z := 0.0
	if warm {
		z = modifiedZ(x, g.Median, g.MAD, g.MeanAD)
	}
	high := warm && z >= *r.Threshold && x >= r.MinVolume
	if high == g.Firing {
		g.Since = 0
		return out
	}
	if g.Since == 0 {
		g.Since = now
	}
	if now-g.Since < int64(r.For) {
		return out
	}
	g.Since = 0
	if high {
		return e.fire(out, r, st, g, x, clampScore(z), now, nil)
	}
	return e.resolve(out, r, st, g, x, clampScore(z), now)
}

func clampScore(z float64) float64 {
	if math.IsInf(z, 1) {
		return math.MaxFloat32
	}
	return math.Round(z*100) / 100
}

// modifiedZ is Iglewicz and Hoaglin's modified z-score of x against a
// baseline: 0.6745·(x − median)/MAD. The MAD is at least that of Poisson
// counts with the baseline's median (0.6745·√median), so that a few
// unusually regular days do not make ordinary noise look unusual. When
// more than half the baseline is equal (MAD 0) it falls back to the mean
// absolute deviation, scaled to match; when that is 0 too, any rise is
// infinitely unusual.
func modifiedZ(x, median, mad, meanAD float64) float64 {
	mad = max(mad, 0.6745*math.Sqrt(median))
	switch {
	case mad > 0:
		return 0.6745 * (x - median) / mad
	case meanAD > 0:
		return (x - median) / (1.253314 * meanAD)
	case x > median:
		return math.Inf(1)
	}
	return 0
}

// baseline returns the median, the median absolute deviation and the
// mean absolute deviation from the median of xs.
func baseline(xs []float64) (median, mad, meanAD float64) {
	s := slices.Clone(xs)
	median = medianOf(s)
	var sum float64
	for i, x := range xs {
		s[i] = math.Abs(x - median)
		sum += s[i]
	}
	return median, medianOf(s), sum / float64(len(xs))
}

func medianOf(s []float64) float64 {
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
