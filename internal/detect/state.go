package detect

import "time"

// ruleState is everything the engine remembers for one rule. It is
// exported to JSON by Snapshot, so its fields are the snapshot format.
type ruleState struct {
	Groups     map[string]*group `json:"groups,omitempty"`
	Seen       map[string]int64  `json:"seen,omitempty"` // new_value: value key → last seen
	FirstSeen  int64             `json:"first_seen,omitempty"`
	Suppressed uint64            `json:"suppressed,omitempty"`
	Errors     uint64            `json:"errors,omitempty"`  // evaluations that failed
	Evicted    uint64            `json:"evicted,omitempty"` // groups and values forgotten for the bound
}

func newRuleState() *ruleState {
	return &ruleState{Groups: map[string]*group{}, Seen: map[string]int64{}}
}

func (st *ruleState) pruneSeen(before int64) {
	for k, t := range st.Seen {
		if t < before {
			delete(st.Seen, k)
		}
	}
}

// group is the state of one rule for one group of records. Times are unix
// nanoseconds of the engine clock.
type group struct {
	Labels     []string  `json:"labels"`
	FirstSeen  int64     `json:"first_seen"`
	LastSeen   int64     `json:"last_seen"`
	Firing     bool      `json:"firing,omitempty"`
	Emitted    bool      `json:"emitted,omitempty"` // the current firing was reported
	LastFired  int64     `json:"last_fired,omitempty"`
	Episode    uint64    `json:"episode,omitempty"` // firings so far, reported or not
	Suppressed uint64    `json:"suppressed,omitempty"`
	Triggers   []trigger `json:"triggers,omitempty"`
	Value      float64   `json:"value,omitempty"`

	// threshold: sliding window in buckets of window/thresholdBuckets.
	Buckets []bucket `json:"buckets,omitempty"`

	// absence: records seen.
	Count float64 `json:"count,omitempty"`

	// anomaly: sub-buckets of the trailing interval, completed intervals
	// (oldest first) and their cached baseline.
	Subs     []bucket  `json:"subs,omitempty"`
	Interval int64     `json:"interval,omitempty"` // index of the current interval
	History  []float64 `json:"history,omitempty"`
	Median   float64   `json:"median,omitempty"`
	MAD      float64   `json:"mad,omitempty"`
	MeanAD   float64   `json:"mean_ad,omitempty"`
	Since    int64     `json:"since,omitempty"` // when the condition started to differ from Firing
}

type trigger struct {
	ID     string `json:"id"`
	Index  uint64 `json:"index"`
	Tenant string `json:"tenant"`
}

// bucket holds the sum of values in one time slot; Slot is the slot's
// number since the epoch.
type bucket struct {
	Slot  int64   `json:"slot"`
	Value float64 `json:"value"`
}

func (g *group) addTrigger(id string, index uint64, tenant string) {
	if len(g.Triggers) == MaxTriggers {
		copy(g.Triggers, g.Triggers[1:])
		g.Triggers = g.Triggers[:MaxTriggers-1]
	}
	g.Triggers = append(g.Triggers, trigger{id, index, tenant})
}

func bucketWidth(r *Rule) int64 { return int64(r.Window) / thresholdBuckets }

func (g *group) addBucket(r *Rule, t int64, v float64) {
	slot := t / bucketWidth(r)
	for i := len(g.Buckets) - 1; i >= 0; i-- {
		if g.Buckets[i].Slot == slot {
			g.Buckets[i].Value += v
			return
		}
		if g.Buckets[i].Slot < slot {
			g.Buckets = append(g.Buckets[:i+1], append([]bucket{{slot, v}}, g.Buckets[i+1:]...)...)
			return
		}
	}
	g.Buckets = append([]bucket{{slot, v}}, g.Buckets...)
}

// windowSum drops the buckets that have left the window ending at now and
// returns the sum of the rest.
func (g *group) windowSum(r *Rule, now int64) float64 {
	first := now/bucketWidth(r) - thresholdBuckets + 1
	i := 0
	for i < len(g.Buckets) && g.Buckets[i].Slot < first {
		i++
	}
	g.Buckets = g.Buckets[i:]
	var s float64
	for _, b := range g.Buckets {
		s += b.Value
	}
	return s
}

func subIndex(r *Rule, t int64) int64 { return t / (int64(r.Interval) / anomalySubBuckets) }

// roll moves an anomaly group's clock to t: intervals that ended are
// added to the history, and the baseline recomputed.
func (g *group) roll(r *Rule, t int64) {
	if g.Subs == nil {
		g.Subs = make([]bucket, anomalySubBuckets)
		for i := range g.Subs {
			g.Subs[i].Slot = -1
		}
		g.Interval = subIndex(r, t) / anomalySubBuckets
	}
	sub := subIndex(r, t)
	k := sub / anomalySubBuckets
	if k > g.Interval {
		size := int(time.Duration(r.Window) / time.Duration(r.Interval))
		for iv := max(g.Interval, k-int64(size)); iv < k; iv++ {
			var v float64
			for _, b := range g.Subs {
				if b.Slot/anomalySubBuckets == iv {
					v += b.Value
				}
			}
			g.History = append(g.History, v)
		}
		if over := len(g.History) - size; over > 0 {
			g.History = append(g.History[:0], g.History[over:]...)
		}
		g.Interval = k
		g.Median, g.MAD, g.MeanAD = baseline(g.baselineSamples(r))
	}
	if s := &g.Subs[sub%anomalySubBuckets]; s.Slot != sub {
		*s = bucket{Slot: sub}
	}
}

// baselineSamples returns the past intervals the current one is compared
// with: all of them, or with a season, those at the same point of the
// season (the same hour of the day for season 24h) and the one before it,
// since the trailing interval that is measured overlaps both.
func (g *group) baselineSamples(r *Rule) []float64 {
	if r.Season == 0 {
		return g.History
	}
	period := int64(r.Season / r.Interval)
	first := g.Interval - int64(len(g.History)) // interval of History[0]
	var xs []float64
	for i, v := range g.History {
		if d := (g.Interval - first - int64(i)) % period; d == 0 || d == 1 {
			xs = append(xs, v)
		}
	}
	return xs
}

// warm tells whether the group has enough history to judge its rate.
func (g *group) warm(r *Rule) bool {
	if time.Duration(len(g.History))*time.Duration(r.Interval) < time.Duration(r.Warmup) {
		return false
	}
	if r.Season == 0 {
		return len(g.History) >= 3
	}
	return int64(len(g.History)) >= 3*int64(r.Season/r.Interval)
}

// trailing returns the value over the interval ending at now.
func (g *group) trailing(r *Rule, now int64) float64 {
	sub := subIndex(r, now)
	var v float64
	for _, b := range g.Subs {
		if b.Slot > sub-anomalySubBuckets && b.Slot <= sub {
			v += b.Value
		}
	}
	return v
}
