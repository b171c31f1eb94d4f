package detect

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"

	"github.com/aitrail/aitrail/internal/event"
)

// CostLimit bounds the cost of one expression, both as estimated when a
// rule is loaded (a rule whose worst case exceeds it is rejected) and as
// measured when it runs (an evaluation that exceeds it is abandoned).
const CostLimit = DefaultCostLimit

// runtimeTrackingAbove is the estimated cost above which an expression's
// cost is also measured as it runs.
const runtimeTrackingAbove = 1000

// Size bounds the cost estimator assumes for values whose size CEL cannot
// know: an attribute map and its strings fit in one record, and the
// record's other strings are at most 1024 bytes (the ingest limit).
const (
	maxAttributes        = 256
	maxAttributeKeyBytes = 256
	maxAttributeBytes    = event.MaxRecordSize // more than the 4 KiB limit on a value, to be safe
	maxFieldStringBytes  = 1024
)

// The record's nested objects are exposed as maps of strings with every key
// present (empty when absent), so "actor.id" never fails on a record
// without an actor.
var stringMap = cel.MapType(cel.StringType, cel.StringType)

var (
	envOnce sync.Once
	env     *cel.Env
	envErr  error
)

// celEnv returns the environment every rule expression is checked in.
func celEnv() (*cel.Env, error) {
	envOnce.Do(func() {
		env, envErr = cel.NewEnv(
			cel.Variable("id", cel.StringType),
			cel.Variable("type", cel.StringType),
			cel.Variable("tenant", cel.StringType),
			cel.Variable("action", cel.StringType),
			cel.Variable("outcome", cel.StringType),
			cel.Variable("time", cel.TimestampType),
			cel.Variable("received_at", cel.TimestampType),
			cel.Variable("actor", stringMap),
			cel.Variable("resource", stringMap),
			cel.Variable("model", stringMap),
			cel.Variable("dataset", stringMap),
			cel.Variable("api", stringMap),
			cel.Variable("prompt", stringMap),
			cel.Variable("attributes", cel.MapType(cel.StringType, cel.DynType)),
			cel.Variable("content_size", cel.IntType),
			cel.OptionalTypes(),
			cel.CrossTypeNumericComparisons(true),
		)
	})
	return env, envErr
}

// celError is a compile error with the line, within the expression, of its
// first issue.
type celError struct {
	line int
	msg  string
}

func (e *celError) Error() string { return e.msg }

// compileCEL parses, type-checks and plans expr. want, when not nil, is
// the type the expression must have; a numeric want accepts int, uint,
// double or dyn.
func compileCEL(expr string, want *cel.Type) (*program, error) {
	e, err := celEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := e.Compile(expr)
	if iss.Err() != nil {
		first := iss.Errors()[0]
		var msgs []string
		for _, ce := range iss.Errors() {
			loc := ce.Location
			msgs = append(msgs, fmt.Sprintf("%s (line %d, column %d of the expression)", ce.Message, loc.Line(), loc.Column()+1))
		}
		return nil, &celError{line: first.Location.Line(), msg: strings.Join(msgs, "; ")}
	}
	out := ast.OutputType()
	switch {
	case want == nil:
	case want == cel.DoubleType:
		if !out.IsExactType(cel.DoubleType) && !out.IsExactType(cel.IntType) && !out.IsExactType(cel.UintType) && !out.IsExactType(cel.DynType) {
			return nil, &celError{line: 1, msg: fmt.Sprintf("must be a number, not %s", out)}
		}
	case !out.IsExactType(want) && !out.IsExactType(cel.DynType):
		return nil, &celError{line: 1, msg: fmt.Sprintf("must be a %s, not %s", want, out)}
	}
	est, err := e.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return nil, fmt.Errorf("couldn't estimate the cost: %w", err)
	}
	if est.Max > CostLimit {
		return nil, &celError{line: 1, msg: fmt.Sprintf("may cost up to %d, more than the limit of %d: avoid nested loops over attributes and large regular expressions", est.Max, CostLimit)}
	}
	// The estimate assumes the sizes the log enforces, so it bounds the
	// cost of every evaluation over a record from the log. Tracking the
	// cost as it runs as well, which slows evaluation by a third, is kept
	// for expressions whose bound is not small (comprehensions, regular
	// expressions), in case a record does not respect those sizes.
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if est.Max > runtimeTrackingAbove {
		opts = append(opts, cel.CostLimit(CostLimit))
	}
	p, err := e.Program(ast, opts...)
	if err != nil {
		return nil, fmt.Errorf("couldn't plan: %w", err)
	}
	return newProgram(p, ast), nil
}

// sizeEstimator gives the cost estimator the bounds a record imposes.
type sizeEstimator struct{}

func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	p := n.Path()
	inAttributes := len(p) > 0 && p[0] == "attributes"
	switch {
	case n.Type().Kind() == types.MapKind || n.Type().Kind() == types.ListKind:
		return &checker.SizeEstimate{Min: 0, Max: maxAttributes}
	case inAttributes && len(p) > 1 && p[1] == "@keys":
		return &checker.SizeEstimate{Min: 1, Max: maxAttributeKeyBytes}
	case inAttributes:
		return &checker.SizeEstimate{Min: 0, Max: maxAttributeBytes}
	case n.Type().IsExactType(cel.StringType):
		return &checker.SizeEstimate{Min: 0, Max: maxFieldStringBytes}
	}
	return nil
}

func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// activation exposes one record to expressions, building each variable on
// first use so that rules that read only the type cost almost nothing.
type activation struct {
	r     *event.Record
	cache map[string]ref.Val
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) ResolveName(name string) (any, bool) {
	r := a.r
	switch name {
	case "id":
		return r.ID, true
	case "type":
		return r.Type, true
	case "tenant":
		return r.Tenant, true
	case "action":
		return r.Action, true
	case "outcome":
		return r.Outcome, true
	case "time":
		return r.Time, true
	case "received_at":
		return r.ReceivedAt, true
	case "content_size":
		if r.Content == nil {
			return int64(0), true
		}
		return r.Content.Size, true
	}
	if v, ok := a.cache[name]; ok {
		return v, true
	}
	var m any
	switch name {
	case "attributes":
		if r.Attributes == nil {
			m = map[string]any{}
		} else {
			m = r.Attributes
		}
	case "actor":
		m = fieldsOf(r.Actor, func(x event.Actor) map[string]string {
			return map[string]string{"id": x.ID, "type": x.Type, "ip": x.IP, "user_agent": x.UserAgent, "session_id": x.SessionID}
		})
	case "resource":
		m = fieldsOf(r.Resource, func(x event.Resource) map[string]string {
			return map[string]string{"type": x.Type, "id": x.ID, "name": x.Name}
		})
	case "model":
		m = fieldsOf(r.Model, func(x event.Model) map[string]string {
			return map[string]string{"provider": x.Provider, "name": x.Name, "version": x.Version, "digest": x.Digest}
		})
	case "dataset":
		m = fieldsOf(r.Dataset, func(x event.Dataset) map[string]string {
			return map[string]string{"name": x.Name, "version": x.Version, "digest": x.Digest}
		})
	case "api":
		m = fieldsOf(r.API, func(x event.API) map[string]string { return map[string]string{"name": x.Name, "version": x.Version} })
	case "prompt":
		m = fieldsOf(r.Prompt, func(x event.Prompt) map[string]string {
			return map[string]string{"id": x.ID, "version": x.Version, "digest": x.Digest}
		})
	default:
		return nil, false
	}
	// Converted once per record, not once per rule that reads it.
	v := types.DefaultTypeAdapter.NativeToValue(m)
	if a.cache == nil {
		a.cache = map[string]ref.Val{}
	}
	a.cache[name] = v
	return v, true
}

func (a *activation) Parent() interpreter.Activation { return nil }

// fieldsOf returns the fields of an optional part of a record, all empty
// when the part is absent.
func fieldsOf[T any](p *T, fields func(T) map[string]string) map[string]string {
	var x T
	if p != nil {
		x = *p
	}
	return fields(x)
}

// evalBool runs a condition; an error (a missing attribute, a cost
// overrun) counts as false.
func evalBool(p *program, a *activation) (bool, error) {
	if p.test != nil {
		if v, known := p.test(a.r); known {
			return v, nil
		}
	}
	v, _, err := p.cel.Eval(a)
	if err != nil {
		return false, err
	}
	b, ok := v.(types.Bool)
	return ok && bool(b), nil
}

// evalString runs a group or value expression; an error gives "".
func evalString(p *program, a *activation) string {
	if p.field != nil {
		return p.field(a.r)
	}
	v, _, err := p.cel.Eval(a)
	if err != nil {
		return ""
	}
	return valueString(v)
}

func valueString(v ref.Val) string {
	switch x := v.Value().(type) {
	case string:
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	default:
		return fmt.Sprint(x)
	}
}

// evalNumber runs a sum expression; an error or a non-number gives 0.
func evalNumber(p *program, a *activation) float64 {
	if p.num != nil {
		if v, known := p.num(a.r); known {
			return v
		}
	}
	v, _, err := p.cel.Eval(a)
	if err != nil {
		return 0
	}
	switch x := v.Value().(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	}
	return 0
}

// exception is one item of a rule's exceptions: a record matches it when
// every listed field has one of the listed values.
type exception []exceptionField

type exceptionField struct {
	name, key string // variable, and key within it ("actor", "id"); attributes by name
	values    map[string]bool
}

// exceptionFields are the fields an exception may name, besides
// attributes.NAME.
var exceptionFields = []string{"type", "tenant", "action", "outcome", "actor.id", "actor.type", "actor.ip",
	"model.name", "model.version", "resource.type", "resource.id", "resource.name"}

func newException(m map[string][]string) (exception, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("an exception needs at least one field")
	}
	var e exception
	for field, vals := range m {
		name, key, _ := strings.Cut(field, ".")
		if !slices.Contains(exceptionFields, field) && (name != "attributes" || key == "") {
			return nil, fmt.Errorf("unknown field %q (use %s or attributes.NAME)", field, strings.Join(exceptionFields, ", "))
		}
		set := map[string]bool{}
		for _, v := range vals {
			set[v] = true
		}
		e = append(e, exceptionField{name: name, key: key, values: set})
	}
	return e, nil
}

// matches reads the fields through the record's activation, so exceptions
// see exactly what expressions see.
func (e exception) matches(a *activation) bool {
	for _, f := range e {
		v, _ := a.ResolveName(f.name)
		if rv, ok := v.(ref.Val); ok {
			v = rv.Value()
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case map[string]string:
			s = x[f.key]
		case map[string]any:
			if av, ok := x[f.key]; ok {
				s = fmt.Sprint(av)
			}
		}
		if !f.values[s] {
			return false
		}
	}
	return true
}
