package detect

import (
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
	// test, if set, is the whole boolean expression.
	test func(*event.Record) bool
	// must are conjuncts of a top-level && that each must hold for it to be
	// true; CEL decides the rest. A false conjunct makes && false whatever
	// errors the others have, so skipping CEL then changes nothing.
	must []func(*event.Record) bool
}

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
	if checked.OutputType().IsExactType(cel.BoolType) {
		if t, ok := testOf(root); ok {
			pr.test = t
		} else {
			for _, c := range conjuncts(root, nil) {
				if t, ok := testOf(c); ok {
					pr.must = append(pr.must, t)
				}
			}
		}
	}
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

// conjuncts appends the operands of the && tree rooted at e to out.
func conjuncts(e ast.Expr, out []ast.Expr) []ast.Expr {
	if e.Kind() == ast.CallKind && e.AsCall().FunctionName() == operators.LogicalAnd {
		for _, a := range e.AsCall().Args() {
			out = conjuncts(a, out)
		}
		return out
	}
	return append(out, e)
}

// testOf returns a Go function equal to the boolean expression e if e is
// made only of string fields compared with string literals (==, !=, in a
// list of literals, startsWith, endsWith, contains), a literal key tested
// against attributes, and &&, || and ! over those. None of these can fail
// in CEL, so the function's result is CEL's.
func testOf(e ast.Expr) (func(*event.Record) bool, bool) {
	if e.Kind() == ast.LiteralKind {
		if b, ok := e.AsLiteral().(types.Bool); ok {
			return func(*event.Record) bool { return bool(b) }, true
		}
		return nil, false
	}
	if e.Kind() != ast.CallKind {
		return nil, false
	}
	c := e.AsCall()
	args := c.Args()
	switch fn := c.FunctionName(); {
	case fn == operators.LogicalAnd || fn == operators.LogicalOr:
		var ts []func(*event.Record) bool
		for _, a := range args {
			t, ok := testOf(a)
			if !ok {
				return nil, false
			}
			ts = append(ts, t)
		}
		if fn == operators.LogicalAnd {
			return func(r *event.Record) bool {
				for _, t := range ts {
					if !t(r) {
						return false
					}
				}
				return true
			}, true
		}
		return func(r *event.Record) bool {
			for _, t := range ts {
				if t(r) {
					return true
				}
			}
			return false
		}, true
	case fn == operators.LogicalNot && len(args) == 1:
		t, ok := testOf(args[0])
		if !ok {
			return nil, false
		}
		return func(r *event.Record) bool { return !t(r) }, true
	case (fn == operators.Equals || fn == operators.NotEquals) && len(args) == 2:
		f, lit := fieldOf(args[0]), args[1]
		if f == nil {
			f, lit = fieldOf(args[1]), args[0]
		}
		s, ok := stringLiteral(lit)
		if f == nil || !ok {
			return nil, false
		}
		if fn == operators.Equals {
			return func(r *event.Record) bool { return f(r) == s }, true
		}
		return func(r *event.Record) bool { return f(r) != s }, true
	case fn == operators.In && len(args) == 2:
		if key, ok := stringLiteral(args[0]); ok && args[1].Kind() == ast.IdentKind && args[1].AsIdent() == "attributes" {
			return func(r *event.Record) bool { _, ok := r.Attributes[key]; return ok }, true
		}
		f := fieldOf(args[0])
		if f == nil || args[1].Kind() != ast.ListKind {
			return nil, false
		}
		var set []string
		for _, el := range args[1].AsList().Elements() {
			s, ok := stringLiteral(el)
			if !ok {
				return nil, false
			}
			set = append(set, s)
		}
		return func(r *event.Record) bool { return slices.Contains(set, f(r)) }, true
	case c.IsMemberFunction() && len(args) == 1:
		f := fieldOf(c.Target())
		s, ok := stringLiteral(args[0])
		if f == nil || !ok {
			return nil, false
		}
		switch fn {
		case overloads.StartsWith:
			return func(r *event.Record) bool { return strings.HasPrefix(f(r), s) }, true
		case overloads.EndsWith:
			return func(r *event.Record) bool { return strings.HasSuffix(f(r), s) }, true
		case overloads.Contains:
			return func(r *event.Record) bool { return strings.Contains(f(r), s) }, true
		}
	}
	return nil, false
}
