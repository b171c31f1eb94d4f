package detect

import (
	"os"
	"strings"
	"testing"
)

// TestBuiltinPack runs testdata/builtin_test.yaml: every built-in rule
// fires on the case it names and stays quiet on ordinary traffic.
func TestBuiltinPack(t *testing.T) {
	data, err := os.ReadFile("testdata/builtin_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tf, err := ParseTestFile("builtin_test.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	fired := map[string]bool{}
	for _, tc := range tf.Tests {
		t.Run(tc.Name, func(t *testing.T) {
			diff, err := tc.Run(Builtin())
			if err != nil {
				t.Fatal(err)
			}
			if len(diff) > 0 {
				t.Errorf("transitions differ:\n%s", strings.Join(diff, "\n"))
			}
		})
		for _, x := range tc.Expect {
			fired[x.Rule] = true
		}
	}
	for _, r := range Builtin() {
		if !fired[r.ID] {
			t.Errorf("built-in rule %s has no case that makes it fire", r.ID)
		}
	}
}

// TestBuiltinRulesDocumented keeps docs/rules.md in step with the pack:
// every built-in rule has a row saying why it matters.
func TestBuiltinRulesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Builtin() {
		if !strings.Contains(string(doc), "| `"+r.ID+"` | "+string(r.Kind)+" |") {
			t.Errorf("docs/rules.md has no row for built-in rule %s (kind %s)", r.ID, r.Kind)
		}
	}
}
