package detect

import (
	"strings"
	"testing"
)

// TestLoadRejects checks that every kind of mistake in a rule file is
// reported with the file, the line and the rule it is in.
func TestLoadRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want string
	}{
		{"yaml syntax", "rules:\n  - id: a\n    kind: match\n    condition: [unclosed\n", "r.yaml:3: did not find expected"},
		{"unknown field", "rules:\n  - id: a\n    kind: match\n    conditon: type == 'x'\n", `r.yaml:4: rule a: unknown field "conditon"`},
		{"key given twice", "rules:\n  - id: a\n    kind: match\n    condition: type == 'x'\n    condition: type == 'y'\n", `r.yaml:5: rule a: mapping key "condition" already defined at line 4`},
		{"unknown top-level field", "rule:\n  - id: a\n", `r.yaml:1: unknown field "rule"`},
		{"condition not bool", "rules:\n  - id: a\n    kind: match\n    condition: tenant\n", "r.yaml:4: rule a: condition: must be a bool, not string"},
		{"undefined variable", "rules:\n  - id: a\n    kind: match\n    condition: user == 'x'\n", "r.yaml:4: rule a: condition: undeclared reference to 'user'"},
		{"error on second line of a block", "rules:\n  - id: a\n    kind: match\n    condition: |\n      type == 'x' &&\n      nope\n", "r.yaml:6: rule a: condition: undeclared reference to 'nope'"},
		{"wrong operand types", "rules:\n  - id: a\n    kind: match\n    condition: tenant > 3\n", "r.yaml:4: rule a: condition: found no matching overload"},
		{"runaway cost", "rules:\n  - id: a\n    kind: match\n    condition: attributes.all(x, attributes.all(y, attributes.all(z, x + y + z != '')))\n", "r.yaml:4: rule a: condition: may cost up to"},
		{"sum not a number", "rules:\n  - id: a\n    kind: threshold\n    threshold: 3\n    sum: tenant\n", "r.yaml:5: rule a: sum: must be a number, not string"},
		{"bad group_by item", "rules:\n  - id: a\n    kind: threshold\n    threshold: 3\n    group_by:\n      - tenant\n      - actor.nope(\n", "r.yaml:7: rule a: group_by:"},
		{"unknown kind", "rules:\n  - id: a\n    kind: rate\n", `r.yaml:3: rule a: kind must be one of`},
		{"field of another kind", "rules:\n  - id: a\n    kind: match\n    window: 5m\n", "r.yaml:4: rule a: window does not apply to kind match"},
		{"threshold without bound", "rules:\n  - id: a\n    kind: threshold\n", "r.yaml:3: rule a: a threshold rule needs threshold:"},
		{"bad duration", "rules:\n  - id: a\n    kind: threshold\n    threshold: 1\n    window: soon\n", `r.yaml:5: rule a: invalid duration "soon"`},
		{"wrong YAML type", "rules:\n  - id: a\n    kind: threshold\n    threshold: many\n", "r.yaml:4: rule a: cannot unmarshal"},
		{"bad exception field", "rules:\n  - id: a\n    kind: match\n    exceptions:\n      - {actor.name: [x]}\n", `r.yaml:5: rule a: exceptions: unknown field "actor.name"`},
		{"duplicate id", "rules:\n  - id: a\n    kind: match\n  - id: a\n    kind: match\n", "r.yaml:4: rule a: duplicate id (first at line 2)"},
		{"bad id", "rules:\n  - id: A b\n    kind: match\n", "r.yaml:2: rule A b: id must be"},
		{"bad severity", "rules:\n  - id: a\n    kind: match\n    severity: urgent\n", "r.yaml:4: rule a: severity must be one of"},
		{"bad type pattern", "rules:\n  - id: a\n    kind: match\n    types: [AI]\n", `r.yaml:4: rule a: type "AI" is not an event type`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("r.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n%s\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestLoadReportsEveryProblem checks that one run lists all mistakes, not
// only the first.
func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load("r.yaml", []byte("rules:\n  - id: a\n    kind: match\n    condition: nope\n  - id: b\n    kind: match\n    colour: red\n"))
	ps, ok := err.(Problems)
	if !ok || len(ps) != 2 || ps[0].Line != 4 || ps[1].Line != 7 {
		t.Fatalf("got %v, want problems on lines 4 and 7", err)
	}
}

func TestHashIgnoresLayout(t *testing.T) {
	a, err := Load("a.yaml", []byte("rules:\n  - id: a\n    kind: match\n    condition: type == 'x'\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load("b.yaml", []byte("# comment\nrules:\n- kind: match   # k\n  condition: \"type == 'x'\"\n  id: a\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load("c.yaml", []byte("rules:\n  - id: a\n    kind: match\n    condition: type == 'y'\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a[0].Hash != b[0].Hash || a[0].Hash == c[0].Hash || !strings.HasPrefix(a[0].Hash, "sha256:") {
		t.Errorf("hashes %s %s %s: want equal for the same rule, different for a changed one", a[0].Hash, b[0].Hash, c[0].Hash)
	}
}

func TestLoadFilesOverridesBuiltin(t *testing.T) {
	user := File{"mine.yaml", []byte(`rules:
  - id: integrity-failure
    disabled: true
  - id: access-denied-burst
    kind: threshold
    types: [access.attempt]
    condition: outcome == "denied"
    threshold: 3
  - id: my-rule
    kind: match
`)}
	rules, err := LoadFiles(true, user)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]*Rule{}
	for _, r := range rules {
		ids[r.ID] = r
	}
	if _, ok := ids["integrity-failure"]; ok {
		t.Error("disabled built-in rule is still loaded")
	}
	if r := ids["access-denied-burst"]; r == nil || *r.Threshold != 3 {
		t.Error("built-in rule not replaced by the user's")
	}
	if ids["my-rule"] == nil || len(rules) != len(Builtin())+0 {
		t.Errorf("got %d rules, want the %d built-in ones minus one plus one", len(rules), len(Builtin()))
	}
}

// FuzzLoad checks that no rule file makes the decoder panic, and that a
// rejected file always says where.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{"", "rules: []", "rules:\n  - id: a\n    kind: match\n", "rules: {", "- 1", "rules:\n  - id: x\n    kind: anomaly\n    window: 1d\n    interval: 1h\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Load("f.yaml", data)
		if err == nil {
			return
		}
		ps, ok := err.(Problems)
		if !ok || len(ps) == 0 {
			t.Fatalf("error %v is not a list of problems", err)
		}
		for _, p := range ps {
			if !strings.HasPrefix(p.String(), "f.yaml:") {
				t.Fatalf("problem %q does not name the file", p)
			}
		}
	})
}
