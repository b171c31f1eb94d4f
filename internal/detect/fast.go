package detect

import (
	"reflect"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/overloads"
	"github.com/google/cel-go/common/types"

	"github.com/aitrail/aitrail/internal/event"
)

// program is a compiled rule expression. Most expressions in rules are
// simple tests of a record's string fields (outcome == "denied",
// model.name.startsWith("gpt-"), a group_by of tenant and actor.id); for
// those, program also holds Go functions that give exactly CEL's result
// without running the interpreter, which is most of the detector's cost.
// TestFastPathsAgreeWithCEL holds them to that.
type program struct {
	cel cel.Program
	// field, if set, reads the expression's value: it is a plain string
	// field such as tenant or actor.id.
	field func(*event.Record) string
	// test, if set, computes the boolean expression; when it cannot tell
	// (a value CEL would reject, say), CEL decides.
	test boolFunc
	// num, if set, computes the numeric expression, likewise.
	num numFunc
}

// boolFunc computes a boolean expression for a record; known is false when
// the result depends on something only CEL can tell (then CEL may also
// fail).
type boolFunc func(r *event.Record) (v, known bool)

// numFunc computes a numeric (double) expression for a record; known is
// false when CEL must decide.
type numFunc func(r *event.Record) (v float64, known bool)

// stringFields reads the string values the activation gives CEL for each
// plain field path: top-level strings, and the keys of the nested objects,
// empty when the object is absent.
var stringFields = map[string]func(*event.Record) string{
	"id":               func(r *event.Record) string { return r.ID },
	"type":             func(r *event.Record) string { return r.Type },
	"tenant":           func(r *event.Record) string { return r.Tenant },
	"action":           func(r *event.Record) string { return r.Action },
	"outcome":          func(r *event.Record) string { return r.Outcome },
	"actor.id":         func(r *event.Record) string { return part(r.Actor).ID },
	"actor.type":       func(r *event.Record) string { return part(r.Actor).Type },
	"actor.ip":         func(r *event.Record) string { return part(r.Actor).IP },
	"actor.user_agent": func(r *event.Record) string { return part(r.Actor).UserAgent },
	"actor.session_id": func(r *event.Record) string { return part(r.Actor).SessionID },
	"resource.type":    func(r *event.Record) string { return part(r.Resource).Type },
	"resource.id":      func(r *event.Record) string { return part(r.Resource).ID },
	"resource.name":    func(r *event.Record) string { return part(r.Resource).Name },
	"model.provider":   func(r *event.Record) string { return part(r.Model).Provider },
	"model.name":       func(r *event.Record) string { return part(r.Model).Name },
	"model.version":    func(r *event.Record) string { return part(r.Model).Version },
	"model.digest":     func(r *event.Record) string { return part(r.Model).Digest },
	"dataset.name":     func(r *event.Record) string { return part(r.Dataset).Name },
	"dataset.version":  func(r *event.Record) string { return part(r.Dataset).Version },
	"dataset.digest":   func(r *event.Record) string { return part(r.Dataset).Digest },
	"api.name":         func(r *event.Record) string { return part(r.API).Name },
	"api.version":      func(r *event.Record) string { return part(r.API).Version },
	"prompt.id":        func(r *event.Record) string { return part(r.Prompt).ID },
	"prompt.version":   func(r *event.Record) string { return part(r.Prompt).Version },
	"prompt.digest":    func(r *event.Record) string { return part(r.Prompt).Digest },
}

// part returns *p, or the zero value when p is nil.
func part[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// newProgram wraps a checked expression with the fast paths its form
// allows.
func newProgram(p cel.Program, checked *cel.Ast) *program {
	pr := &program{cel: p}
	root := checked.NativeRep().Expr()
	pr.field = fieldOf(root)
	pr.test = testOf(root)
	pr.num = numOf(root)
	return pr
}

// fieldOf returns the reader of e if e is a plain string field path.
func fieldOf(e ast.Expr) func(*event.Record) string {
	switch e.Kind() {
	case ast.IdentKind:
		return stringFields[e.AsIdent()]
	case ast.SelectKind:
		s := e.AsSelect()
		if s.IsTestOnly() || s.Operand().Kind() != ast.IdentKind {
			return nil
		}
		return stringFields[s.Operand().AsIdent()+"."+s.FieldName()]
	}
	return nil
}

// stringLiteral returns the value of e if e is a string literal.
func stringLiteral(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}

// testOf returns a Go function for the boolean expression e, or nil. It
// takes string fields compared with string literals (==, !=, in a list of
// literals, startsWith, endsWith, contains), a literal key tested against
// attributes, numbers (see numOf) compared with numbers, and &&, || and !
// over any boolean expression: an operand it cannot compute is unknown, and
// && and || are decided without it when CEL would be (false && x is false
// and true || x is true in CEL, even when x fails).
func testOf(e ast.Expr) boolFunc {
	if e.Kind() == ast.LiteralKind {
		if b, ok := e.AsLiteral().(types.Bool); ok {
			return func(*event.Record) (bool, bool) { return bool(b), true }
		}
		return nil
	}
	if e.Kind() != ast.CallKind {
		return nil
	}
	c := e.AsCall()
	args := c.Args()
	switch fn := c.FunctionName(); {
	case fn == operators.LogicalAnd || fn == operators.LogicalOr:
		var ts []boolFunc
		for _, a := range args {
			if t := testOf(a); t != nil {
				ts = append(ts, t)
			}
		}
		if len(ts) == 0 {
			return nil
		}
		all := len(ts) == len(args)
		// decisive is the value that decides the operator on its own.
		decisive := fn == operators.LogicalOr
		return func(r *event.Record) (bool, bool) {
			known := all
			for _, t := range ts {
				v, k := t(r)
				if k && v == decisive {
					return decisive, true
				}
				known = known && k
			}
			return !decisive, known
		}
	case fn == operators.LogicalNot && len(args) == 1:
		t := testOf(args[0])
		if t == nil {
			return nil
		}
		return func(r *event.Record) (bool, bool) { v, known := t(r); return !v, known }
	case (fn == operators.Equals || fn == operators.NotEquals) && len(args) == 2:
		f, lit := fieldOf(args[0]), args[1]
		if f == nil {
			f, lit = fieldOf(args[1]), args[0]
		}
		if s, ok := stringLiteral(lit); f != nil && ok {
			if fn == operators.Equals {
				return func(r *event.Record) (bool, bool) { return f(r) == s, true }
			}
			return func(r *event.Record) (bool, bool) { return f(r) != s, true }
		}
		if t := optionalEquals(fn == operators.Equals, args); t != nil {
			return t
		}
		return compareOf(fn, args)
	case fn == operators.Less || fn == operators.LessEquals || fn == operators.Greater || fn == operators.GreaterEquals:
		return compareOf(fn, args)
	case fn == operators.In && len(args) == 2:
		if key, ok := stringLiteral(args[0]); ok && args[1].Kind() == ast.IdentKind && args[1].AsIdent() == "attributes" {
			return func(r *event.Record) (bool, bool) { _, ok := r.Attributes[key]; return ok, true }
		}
		f := fieldOf(args[0])
		if f == nil || args[1].Kind() != ast.ListKind {
			return nil
		}
		var set []string
		for _, el := range args[1].AsList().Elements() {
			s, ok := stringLiteral(el)
			if !ok {
				return nil
			}
			set = append(set, s)
		}
		return func(r *event.Record) (bool, bool) { return slices.Contains(set, f(r)), true }
	case c.IsMemberFunction() && len(args) == 1:
		f := fieldOf(c.Target())
		s, ok := stringLiteral(args[0])
		if f == nil || !ok {
			return nil
		}
		switch fn {
		case overloads.StartsWith:
			return func(r *event.Record) (bool, bool) { return strings.HasPrefix(f(r), s), true }
		case overloads.EndsWith:
			return func(r *event.Record) (bool, bool) { return strings.HasSuffix(f(r), s), true }
		case overloads.Contains:
			return func(r *event.Record) (bool, bool) { return strings.Contains(f(r), s), true }
		}
	}
	return nil
}

// optionalEquals returns a Go function for attributes[?"k"].orValue(d) == v
// (!= when not eq), d and v string or boolean literals of one type, or nil:
// rules test flags the pipeline sets this way. An attribute of another type
// is unknown, for CEL to compare.
func optionalEquals(eq bool, args []ast.Expr) boolFunc {
	for _, p := range [][2]ast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
		if p[0].Kind() != ast.CallKind {
			continue
		}
		c := p[0].AsCall()
		if c.FunctionName() != "orValue" || !c.IsMemberFunction() || len(c.Args()) != 1 {
			continue
		}
		key, ok1 := optionalAttribute(c.Target())
		def, ok2 := scalarLiteral(c.Args()[0])
		want, ok3 := scalarLiteral(p[1])
		if !ok1 || !ok2 || !ok3 || reflect.TypeOf(def) != reflect.TypeOf(want) {
			return nil
		}
		return func(r *event.Record) (bool, bool) {
			v, present := r.Attributes[key]
			if !present {
				return (def == want) == eq, true
			}
			if reflect.TypeOf(v) != reflect.TypeOf(want) {
				return false, false
			}
			return (v == want) == eq, true
		}
	}
	return nil
}

// scalarLiteral returns the value of e as a Go string or bool, as
// attributes hold them, if e is a string or boolean literal.
func scalarLiteral(e ast.Expr) (any, bool) {
	if e.Kind() != ast.LiteralKind {
		return nil, false
	}
	switch v := e.AsLiteral().(type) {
	case types.String:
		return string(v), true
	case types.Bool:
		return bool(v), true
	}
	return nil, false
}

// compareOf returns a Go function for a comparison of two numeric
// expressions (see numOf), or nil.
func compareOf(fn string, args []ast.Expr) boolFunc {
	if len(args) != 2 {
		return nil
	}
	a, b := numOf(args[0]), numOf(args[1])
	if a == nil || b == nil {
		return nil
	}
	cmp := map[string]func(x, y float64) bool{
		operators.Equals:        func(x, y float64) bool { return x == y },
		operators.NotEquals:     func(x, y float64) bool { return x != y },
		operators.Less:          func(x, y float64) bool { return x < y },
		operators.LessEquals:    func(x, y float64) bool { return x <= y },
		operators.Greater:       func(x, y float64) bool { return x > y },
		operators.GreaterEquals: func(x, y float64) bool { return x >= y },
	}[fn]
	return func(r *event.Record) (bool, bool) {
		x, ok1 := a(r)
		y, ok2 := b(r)
		if !ok1 || !ok2 {
			return false, false
		}
		return cmp(x, y), true
	}
}

// numOf returns a Go function for the numeric expression e, or nil. It
// takes number literals, double() of a number, an attribute read with a
// number for default (attributes[?"k"].orValue(0)), and sums and
// differences of doubles. An attribute that holds anything but a number is
// unknown: CEL decides (double("1.5") parses, double(true) fails). Sums are
// taken only of double() operands, where CEL adds doubles; it does not add
// a double to an int.
func numOf(e ast.Expr) numFunc {
	switch e.Kind() {
	case ast.LiteralKind:
		var v float64
		switch x := e.AsLiteral().(type) {
		case types.Double:
			v = float64(x)
		case types.Int:
			v = float64(x)
		case types.Uint:
			v = float64(x)
		default:
			return nil
		}
		return func(*event.Record) (float64, bool) { return v, true }
	case ast.CallKind:
	default:
		return nil
	}
	c := e.AsCall()
	args := c.Args()
	switch fn := c.FunctionName(); {
	case fn == overloads.TypeConvertDouble && !c.IsMemberFunction() && len(args) == 1:
		return numOf(args[0])
	case (fn == operators.Add || fn == operators.Subtract) && len(args) == 2:
		if !isDouble(args[0]) || !isDouble(args[1]) {
			return nil
		}
		a, b := numOf(args[0]), numOf(args[1])
		if a == nil || b == nil {
			return nil
		}
		sign := 1.0
		if fn == operators.Subtract {
			sign = -1
		}
		return func(r *event.Record) (float64, bool) {
			x, ok1 := a(r)
			y, ok2 := b(r)
			return x + sign*y, ok1 && ok2
		}
	case fn == "orValue" && c.IsMemberFunction() && len(args) == 1:
		def := numOf(args[0])
		key, ok := optionalAttribute(c.Target())
		if def == nil || !ok || args[0].Kind() != ast.LiteralKind {
			return nil
		}
		d, _ := def(nil)
		return func(r *event.Record) (float64, bool) {
			v, present := r.Attributes[key]
			if !present {
				return d, true
			}
			f, ok := v.(float64)
			return f, ok
		}
	}
	return nil
}

// isDouble reports whether e is a double() conversion or a double literal
// (or a sum of them): what CEL adds as doubles.
func isDouble(e ast.Expr) bool {
	switch e.Kind() {
	case ast.LiteralKind:
		_, ok := e.AsLiteral().(types.Double)
		return ok
	case ast.CallKind:
		c := e.AsCall()
		switch c.FunctionName() {
		case overloads.TypeConvertDouble:
			return !c.IsMemberFunction()
		case operators.Add, operators.Subtract:
			return len(c.Args()) == 2 && isDouble(c.Args()[0]) && isDouble(c.Args()[1])
		}
	}
	return false
}

// optionalAttribute returns k if e is attributes[?"k"] or attributes.?k.
func optionalAttribute(e ast.Expr) (string, bool) {
	if e.Kind() != ast.CallKind {
		return "", false
	}
	c := e.AsCall()
	args := c.Args()
	if (c.FunctionName() != operators.OptIndex && c.FunctionName() != operators.OptSelect) || len(args) != 2 ||
		args[0].Kind() != ast.IdentKind || args[0].AsIdent() != "attributes" {
		return "", false
	}
	return stringLiteral(args[1])
}
