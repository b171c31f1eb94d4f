package detect

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/aitrail/aitrail/internal/event"
)

// TestFile is a rules unit-test file, as `aitrail rules test` runs it:
// rule files, and cases that feed events and list the alert transitions
// they must cause. docs/rules.md describes the format.
type TestFile struct {
	// RuleFiles are loaded over the built-in pack, relative to the test
	// file.
	RuleFiles []string `yaml:"rule_files"`
	// Builtin includes the built-in pack (default true).
	Builtin *bool      `yaml:"builtin"`
	Tests   []TestCase `yaml:"tests"`
}

// TestCase is one scenario.
type TestCase struct {
	Name string `yaml:"name"`
	// Start is the time offsets count from (default 2026-01-05T00:00:00Z,
	// a Monday).
	Start time.Time `yaml:"start"`
	// EvalInterval is how often the clock is advanced between events, as
	// a detector does (default 1m).
	EvalInterval Duration    `yaml:"eval_interval"`
	Events       []TestEvent `yaml:"events"`
	// Until is how long after Start the case runs (default: the last
	// event plus EvalInterval).
	Until Duration `yaml:"until"`
	// Expect lists every transition the case must cause, in any order;
	// any other transition is a failure.
	Expect []Expected `yaml:"expect"`
}

// TestEvent is an event fed at offset At from the case's start, Repeat
// times (default 1) Every apart.
type TestEvent struct {
	At     Duration       `yaml:"at"`
	Repeat int            `yaml:"repeat"`
	Every  Duration       `yaml:"every"`
	Event  map[string]any `yaml:"event"`
}

// Expected is a transition a case must cause. Group lists labels that must
// be equal (others are not compared); At, when set, must be equal too.
type Expected struct {
	Rule  string            `yaml:"rule"`
	State State             `yaml:"state"`
	Group map[string]string `yaml:"group"`
	At    *Duration         `yaml:"at"`
}

// MaxTestSteps bounds the events a test case feeds and the times it
// advances the clock, so that a typo (eval_interval: 1ns) is an error
// rather than a run without end.
const MaxTestSteps = 1_000_000

// DefaultTestStart is a Monday, so change-window rules see a working week.
var DefaultTestStart = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)

// ParseTestFile decodes a rules unit-test file strictly.
func ParseTestFile(name string, data []byte) (*TestFile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var tf TestFile
	if err := dec.Decode(&tf); err != nil {
		line, msg := yamlErrorLine(err)
		return nil, Problems{{File: name, Line: line, Msg: msg}}
	}
	return &tf, nil
}

// UsesBuiltin tells whether the file's cases run with the built-in pack.
func (tf *TestFile) UsesBuiltin() bool { return tf.Builtin == nil || *tf.Builtin }

// Run runs one case over rules and returns a line per difference between
// the transitions it caused and those it expected, or nil when they agree.
func (tc *TestCase) Run(rules []*Rule) ([]string, error) {
	start := tc.Start
	if start.IsZero() {
		start = DefaultTestStart
	}
	step := time.Duration(tc.EvalInterval)
	if step <= 0 {
		step = time.Minute
	}
	type timed struct {
		at  time.Duration
		rec event.Record
	}
	total := 0
	for _, te := range tc.Events {
		total += max(1, min(te.Repeat, MaxTestSteps+1))
		if total > MaxTestSteps {
			return nil, fmt.Errorf("the case feeds more than %d events (repeat)", MaxTestSteps)
		}
	}
	var evs []timed
	for i, te := range tc.Events {
		for n := range max(1, te.Repeat) {
			at := time.Duration(te.At) + time.Duration(n)*time.Duration(te.Every)
			b, err := json.Marshal(te.Event)
			if err != nil {
				return nil, fmt.Errorf("couldn't encode event %d: %w", i+1, err)
			}
			var r event.Record
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("event %d is not a record: %w", i+1, err)
			}
			if r.ID == "" {
				r.ID = fmt.Sprintf("e%d-%d", i+1, n+1)
			}
			if r.Tenant == "" {
				r.Tenant = "default"
			}
			r.Time = start.Add(at)
			evs = append(evs, timed{at, r})
		}
	}
	slices.SortStableFunc(evs, func(a, b timed) int { return int(a.at - b.at) })
	until := time.Duration(tc.Until)
	if until == 0 && len(evs) > 0 {
		until = evs[len(evs)-1].at + step
	}
	if until/step > MaxTestSteps {
		return nil, fmt.Errorf("the case runs until %v in steps of eval_interval %v, more than %d steps: raise eval_interval",
			until, step, MaxTestSteps)
	}
	e := NewEngine(rules)
	var got []Transition
	next := 0
	for t := time.Duration(0); ; t += step {
		t = min(t, until)
		for next < len(evs) && evs[next].at <= t {
			got = append(got, e.Observe(uint64(next), &evs[next].rec)...)
			next++
		}
		got = append(got, e.Advance(start.Add(t))...)
		if t >= until {
			break
		}
	}
	return diffTransitions(tc.Expect, got, start), nil
}

func diffTransitions(want []Expected, got []Transition, start time.Time) []string {
	used := make([]bool, len(got))
	var diff []string
	for _, w := range want {
		i := -1
		for j, g := range got {
			if !used[j] && w.Rule == g.Rule && w.State == g.State && labelsMatch(w.Group, g.Group) &&
				(w.At == nil || start.Add(time.Duration(*w.At)).Equal(g.At)) {
				i = j
				break
			}
		}
		if i < 0 {
			diff = append(diff, "- missing:    "+formatExpected(w))
			continue
		}
		used[i] = true
	}
	for j, g := range got {
		if !used[j] {
			diff = append(diff, "+ unexpected: "+formatTransition(g, start))
		}
	}
	return diff
}

func labelsMatch(want, got map[string]string) bool {
	for k, v := range want {
		if gv, ok := got[k]; !ok || gv != v {
			return false
		}
	}
	return true
}

func formatLabels(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func formatExpected(w Expected) string {
	s := fmt.Sprintf("%s %s %s", w.State, w.Rule, formatLabels(w.Group))
	if w.At != nil {
		s += " at " + time.Duration(*w.At).String()
	}
	return s
}

func formatTransition(g Transition, start time.Time) string {
	return fmt.Sprintf("%s %s %s at %s", g.State, g.Rule, formatLabels(g.Group), g.At.Sub(start))
}
