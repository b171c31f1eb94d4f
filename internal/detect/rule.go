// Package detect evaluates detection rules over the records of an aitrail
// log and reports alert transitions: a rule starting to fire for a group, or
// stopping.
//
// The package is pure: it performs no file, network or database I/O and
// never reads the wall clock. Time comes from the records themselves and
// from the caller through Engine.Advance, so the same records always give
// the same transitions. The caller (a ledger follower) feeds committed
// records in log order, appends each Transition to the log as an
// alert.fired or alert.resolved event, and persists Engine.Snapshot with its
// cursor so that a restart neither loses nor repeats an alert.
package detect

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"gopkg.in/yaml.v3"
)

// Kind is what a rule looks for.
type Kind string

// The rule kinds.
const (
	// KindMatch fires for every record that satisfies the condition.
	KindMatch Kind = "match"
	// KindThreshold fires while the count (or sum) of matching records
	// over a sliding window, per group, is at or above a bound.
	KindThreshold Kind = "threshold"
	// KindNewValue fires the first time a value (or tuple) is seen for a
	// group within a history window.
	KindNewValue Kind = "new_value"
	// KindAnomaly fires while a group's rate is far above its own robust
	// baseline (median and MAD of past intervals).
	KindAnomaly Kind = "anomaly"
	// KindAbsence fires when a group that used to send records stops.
	KindAbsence Kind = "absence"
)

// Severities, from least to most urgent.
var severities = []string{"info", "low", "medium", "high", "critical"}

// Defaults for rule fields left out.
const (
	DefaultSeverity       = "medium"
	DefaultWindow         = 5 * time.Minute
	DefaultHistory        = 7 * 24 * time.Hour
	DefaultInterval       = time.Hour
	DefaultZ              = 3.5
	DefaultAbsenceAfter   = 15 * time.Minute
	DefaultCostLimit      = 1_000_000
	thresholdBuckets      = 60
	anomalySubBuckets     = 10
	maxAnomalyHistorySize = 10_000
)

// MaxTriggers is how many triggering event ids a Transition carries at most.
const MaxTriggers = 10

// Duration is a time.Duration written in YAML as "90s", "15m", "24h" or
// "7d".
type Duration time.Duration

// UnmarshalYAML reads a duration, accepting a "d" suffix for days.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := parseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as time.Duration prints it.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return v, nil
}

// Spec is one rule as written in a rule file. docs/rules.md is the
// reference for every field.
type Spec struct {
	ID          string                `yaml:"id"`
	Description string                `yaml:"description,omitempty"`
	Severity    string                `yaml:"severity,omitempty"`
	Kind        Kind                  `yaml:"kind"`
	Disabled    bool                  `yaml:"disabled,omitempty"`
	Types       []string              `yaml:"types,omitempty"`
	Condition   string                `yaml:"condition,omitempty"`
	GroupBy     []string              `yaml:"group_by,omitempty"`
	Value       []string              `yaml:"value,omitempty"`
	Sum         string                `yaml:"sum,omitempty"`
	Threshold   *float64              `yaml:"threshold,omitempty"`
	Window      Duration              `yaml:"window,omitempty"`
	Interval    Duration              `yaml:"interval,omitempty"`
	Warmup      Duration              `yaml:"warmup,omitempty"`
	MinVolume   float64               `yaml:"min_volume,omitempty"`
	For         Duration              `yaml:"for,omitempty"`
	Season      Duration              `yaml:"season,omitempty"`
	After       Duration              `yaml:"after,omitempty"`
	Exceptions  []map[string][]string `yaml:"exceptions,omitempty"`
	Throttle    Duration              `yaml:"throttle,omitempty"`
	Summary     string                `yaml:"summary,omitempty"`
}

// Rule is a loaded rule: its Spec with defaults filled in and its
// expressions compiled and type-checked.
type Rule struct {
	Spec
	// Hash is "sha256:" and the hex SHA-256 of the rule's canonical YAML
	// text, so an alert names exactly the rule text that raised it.
	Hash string
	// File and Line say where the rule starts.
	File string
	Line int

	cond       *program
	groupBy    []*program
	values     []*program
	sum        *program
	exceptions []exception
	exact      []string // event types
	prefixes   []string // type prefixes, "" for all
}

// Problem is one thing wrong with a rule file.
type Problem struct {
	File string
	Line int
	Rule string // rule id, when known
	Msg  string
}

// String formats the problem as "file:line: rule ID: message".
func (p Problem) String() string {
	s := fmt.Sprintf("%s:%d: ", p.File, p.Line)
	if p.Rule != "" {
		s += "rule " + p.Rule + ": "
	}
	return s + p.Msg
}

// Problems is every problem found in rule files, in file order.
type Problems []Problem

// Error lists the problems, one a line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// fieldNames returns the YAML keys of a struct type, for strict decoding
// with line numbers.
func fieldNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		names = append(names, name)
	}
	return names
}

// unknownKeys reports every key of the mapping n that is not in known.
func unknownKeys(n *yaml.Node, known []string, report func(line int, msg string)) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(known, k.Value) {
			report(k.Line, fmt.Sprintf("unknown field %q", k.Value))
		}
	}
}

// valueLine returns the line of key's value in the mapping n, or n's line.
func valueLine(n *yaml.Node, key string) int {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := n.Content[i+1]
			if v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
				return v.Line + 1 // the text starts below the indicator
			}
			return v.Line
		}
	}
	return n.Line
}

// itemLine returns the line of the i-th item of the sequence under key.
func itemLine(n *yaml.Node, key string, i int) int {
	for j := 0; j+1 < len(n.Content); j += 2 {
		if n.Content[j].Value == key && n.Content[j+1].Kind == yaml.SequenceNode && i < len(n.Content[j+1].Content) {
			return n.Content[j+1].Content[i].Line
		}
	}
	return valueLine(n, key)
}

// Load decodes and checks the rule file data, named name in problems. It
// returns the enabled rules, or Problems listing everything wrong, each
// naming the line and the rule.
func Load(name string, data []byte) ([]*Rule, error) {
	rules, _, err := load(name, data)
	return rules, err
}

// load is Load that also returns the ids of disabled rules.
func load(name string, data []byte) ([]*Rule, []string, error) {
	var ps Problems
	report := func(line int, rule, msg string) {
		ps = append(ps, Problem{File: name, Line: line, Rule: rule, Msg: msg})
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := yamlErrorLine(err)
		report(line, "", msg)
		return nil, nil, ps
	}
	if len(doc.Content) == 0 {
		return nil, nil, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		report(root.Line, "", "a rule file is a mapping with a rules: list")
		return nil, nil, ps
	}
	unknownKeys(root, []string{"rules"}, func(l int, m string) { report(l, "", m) })
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "rules" {
			list = root.Content[i+1]
		}
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		if list != nil || len(ps) == 0 {
			report(root.Line, "", "rules: must be a list of rules")
		}
		return nil, nil, ps
	}
	known := fieldNames(reflect.TypeFor[Spec]())
	var rules []*Rule
	var disabled []string
	seen := map[string]int{}
	for _, n := range list.Content {
		id := ruleID(n)
		bad := len(ps)
		unknownKeys(n, known, func(l int, m string) { report(l, id, m) })
		var s Spec
		if err := n.Decode(&s); err != nil {
			line, msg := yamlErrorLine(err)
			if line == 0 {
				line = n.Line
			}
			report(line, id, msg)
			continue
		}
		if len(ps) > bad {
			continue
		}
		if prev, ok := seen[s.ID]; ok && s.ID != "" {
			report(n.Line, id, fmt.Sprintf("duplicate id (first at line %d)", prev))
			continue
		}
		seen[s.ID] = n.Line
		if s.Disabled {
			// A disabled rule needs only its id: it switches off a
			// rule of the same id, such as a built-in one.
			disabled = append(disabled, s.ID)
			continue
		}
		r, rps := compile(s, n, name)
		ps = append(ps, rps...)
		if len(rps) == 0 {
			rules = append(rules, r)
		}
	}
	if len(ps) > 0 {
		return nil, nil, ps
	}
	return rules, disabled, nil
}

// ruleID returns the id written in a rule's mapping, if any.
func ruleID(n *yaml.Node) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "id" {
			return n.Content[i+1].Value
		}
	}
	return ""
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// yamlErrorLine extracts the first line number from a yaml.v3 error and
// returns the message without the "yaml: " prefix and line.
func yamlErrorLine(err error) (int, string) {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
		line, _ = strconv.Atoi(msg[m[2]:m[3]])
		msg = msg[:m[0]] + msg[m[1]:]
	}
	return line, msg
}

// compile checks a decoded rule, fills in defaults and compiles its
// expressions.
func compile(s Spec, n *yaml.Node, file string) (*Rule, Problems) {
	var ps Problems
	bad := func(key, format string, args ...any) {
		ps = append(ps, Problem{File: file, Line: valueLine(n, key), Rule: s.ID, Msg: fmt.Sprintf(format, args...)})
	}
	if !idPattern.MatchString(s.ID) {
		bad("id", "id must be lowercase letters, digits, '.', '_' or '-' (got %q)", s.ID)
	}
	if s.Severity == "" {
		s.Severity = DefaultSeverity
	} else if !slices.Contains(severities, s.Severity) {
		bad("severity", "severity must be one of %s (got %q)", strings.Join(severities, ", "), s.Severity)
	}
	// Which fields each kind takes; a field a kind ignores is an error, so
	// that a rule never silently means less than it says.
	allowed := map[Kind][]string{
		KindMatch:     {},
		KindThreshold: {"sum", "threshold", "window"},
		KindNewValue:  {"value", "window", "warmup"},
		KindAnomaly:   {"sum", "threshold", "window", "interval", "warmup", "min_volume", "for", "season"},
		KindAbsence:   {"window", "after", "min_volume"},
	}
	kindFields, ok := allowed[s.Kind]
	if !ok {
		bad("kind", "kind must be one of match, threshold, new_value, anomaly, absence (got %q)", s.Kind)
	} else {
		set := map[string]bool{"sum": s.Sum != "", "threshold": s.Threshold != nil, "window": s.Window != 0,
			"interval": s.Interval != 0, "warmup": s.Warmup != 0, "min_volume": s.MinVolume != 0, "for": s.For != 0,
			"after": s.After != 0, "value": len(s.Value) > 0, "season": s.Season != 0}
		for _, f := range slices.Sorted(maps.Keys(set)) {
			if set[f] && !slices.Contains(kindFields, f) {
				bad(f, "%s does not apply to kind %s", f, s.Kind)
			}
		}
	}
	switch s.Kind {
	case KindThreshold:
		if s.Threshold == nil {
			bad("kind", "a threshold rule needs threshold:")
		}
		if s.Window == 0 {
			s.Window = Duration(DefaultWindow)
		}
	case KindNewValue:
		if len(s.Value) == 0 {
			bad("kind", "a new_value rule needs value: (one or more expressions)")
		}
		if s.Window == 0 {
			s.Window = Duration(DefaultHistory)
		}
	case KindAnomaly:
		if s.Threshold == nil {
			z := DefaultZ
			s.Threshold = &z
		}
		if s.Interval == 0 {
			s.Interval = Duration(DefaultInterval)
		}
		if s.Window == 0 {
			s.Window = Duration(DefaultHistory)
		}
		if s.Interval < Duration(anomalySubBuckets*time.Millisecond) {
			bad("interval", "interval must be at least %v", anomalySubBuckets*time.Millisecond)
		} else if s.Window < 3*s.Interval || s.Window/s.Interval > maxAnomalyHistorySize {
			bad("window", "window must hold between 3 and %d intervals", maxAnomalyHistorySize)
		}
		if s.Warmup > s.Window {
			bad("warmup", "warmup must not be longer than window")
		}
		if s.Season != 0 && (s.Season%s.Interval != 0 || s.Window < 3*s.Season) {
			bad("season", "season must be a multiple of interval, and window at least three seasons")
		}
	case KindAbsence:
		if s.After == 0 {
			s.After = Duration(DefaultAbsenceAfter)
		}
		if s.Window == 0 {
			s.Window = Duration(DefaultHistory)
		}
		if s.Window <= s.After {
			bad("window", "window (how long a silent producer is remembered) must be longer than after")
		}
	}
	if s.Kind == KindThreshold && s.Window < Duration(thresholdBuckets*time.Millisecond) {
		bad("window", "window must be at least %v", thresholdBuckets*time.Millisecond)
	}
	for _, t := range s.Types {
		if t != "*" && !typePattern.MatchString(t) {
			bad("types", "type %q is not an event type or a prefix such as ai.*", t)
		}
	}
	r := &Rule{Spec: s, File: file, Line: n.Line}
	for _, t := range s.Types {
		switch {
		case t == "*":
			r.prefixes = append(r.prefixes, "")
		case strings.HasSuffix(t, ".*"):
			r.prefixes = append(r.prefixes, strings.TrimSuffix(t, "*"))
		default:
			r.exact = append(r.exact, t)
		}
	}
	if len(s.Types) == 0 {
		r.prefixes = []string{""}
	}
	compileExpr := func(key, expr string, line int, want *cel.Type) *program {
		p, err := compileCEL(expr, want)
		if err != nil {
			var ce *celError
			if errors.As(err, &ce) {
				line += ce.line - 1
			}
			ps = append(ps, Problem{File: file, Line: line, Rule: s.ID, Msg: key + ": " + err.Error()})
		}
		return p
	}
	if s.Condition != "" {
		r.cond = compileExpr("condition", s.Condition, valueLine(n, "condition"), cel.BoolType)
	}
	for i, g := range s.GroupBy {
		r.groupBy = append(r.groupBy, compileExpr("group_by", g, itemLine(n, "group_by", i), nil))
	}
	for i, v := range s.Value {
		r.values = append(r.values, compileExpr("value", v, itemLine(n, "value", i), nil))
	}
	if s.Sum != "" {
		r.sum = compileExpr("sum", s.Sum, valueLine(n, "sum"), cel.DoubleType)
	}
	for i, ex := range s.Exceptions {
		e, err := newException(ex)
		if err != nil {
			ps = append(ps, Problem{File: file, Line: itemLine(n, "exceptions", i), Rule: s.ID, Msg: "exceptions: " + err.Error()})
		}
		r.exceptions = append(r.exceptions, e)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	r.Hash = hashSpec(s)
	return r, nil
}

var typePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$`)

// hashSpec returns the hash of a rule's canonical YAML text: the rule as
// this package re-encodes it, so comments and layout do not change it.
func hashSpec(s Spec) string {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(s); err != nil {
		panic(fmt.Sprintf("couldn't encode a decoded rule: %v", err)) // a Spec always encodes
	}
	sum := sha256.Sum256(b.Bytes())
	return "sha256:" + hex.EncodeToString(sum[:])
}
