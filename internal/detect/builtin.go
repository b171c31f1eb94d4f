package detect

import (
	_ "embed"
	"fmt"
	"slices"
	"sync"
)

// builtinYAML is the built-in rule pack, documented in docs/rules.md.
//
//go:embed builtin.yaml
var builtinYAML []byte

// BuiltinName is the file name problems in the built-in pack are reported
// under.
const BuiltinName = "builtin.yaml"

var builtinRules = sync.OnceValues(func() ([]*Rule, error) { return Load(BuiltinName, builtinYAML) })

// Builtin returns the rules of the built-in pack.
func Builtin() []*Rule {
	rules, err := builtinRules()
	if err != nil {
		panic(fmt.Sprintf("the built-in rule pack is broken: %v", err)) // a test loads it
	}
	return rules
}

// BuiltinYAML returns the text of the built-in pack, for users to copy.
func BuiltinYAML() []byte { return slices.Clone(builtinYAML) }

// File is a rule file's name and contents.
type File struct {
	Name string
	Data []byte
}

// LoadFiles loads rule files over the built-in pack (when builtin is
// true). A rule with the id of a built-in rule replaces it; one with
// disabled: true removes it. It returns every problem of every file.
func LoadFiles(builtin bool, files ...File) ([]*Rule, error) {
	var rules []*Rule
	if builtin {
		rules = slices.Clone(Builtin())
	}
	var ps Problems
	where := map[string]string{} // id → file:line, across user files
	for _, f := range files {
		rs, disabled, err := load(f.Name, f.Data)
		if err != nil {
			if fps, ok := err.(Problems); ok {
				ps = append(ps, fps...)
				continue
			}
			return nil, err
		}
		for _, r := range rs {
			if prev, ok := where[r.ID]; ok {
				ps = append(ps, Problem{File: f.Name, Line: r.Line, Rule: r.ID, Msg: "duplicate id (also at " + prev + ")"})
				continue
			}
			where[r.ID] = fmt.Sprintf("%s:%d", r.File, r.Line)
			if i := slices.IndexFunc(rules, func(b *Rule) bool { return b.ID == r.ID }); i >= 0 {
				rules[i] = r
			} else {
				rules = append(rules, r)
			}
		}
		for _, id := range disabled {
			rules = slices.DeleteFunc(rules, func(b *Rule) bool { return b.ID == id })
		}
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return rules, nil
}
