package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodRules = `rules:
  - id: export-by-contractor
    description: A contractor exported data.
    kind: match
    types: [data.export]
    condition: actor.type == "service" && action == "export"
    group_by: [actor.id]
  - id: access-denied-burst
    kind: threshold
    types: [access.attempt]
    condition: outcome == "denied"
    group_by: [actor.id]
    window: 1m
    threshold: 3
  - id: integrity-failure
    disabled: true
`

func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", goodRules)
	bad := writeFile(t, dir, "bad.yaml", "rules:\n  - id: x\n    kind: match\n    condition: actor.name == 1\n  - id: y\n    kind: threshold\n    threshold: 2\n    windw: 5m\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStdout bool
	}{
		{"good file", []string{"rules", "check", good}, 0, []string{"OK: 2 rule(s) in 1 file(s), 1 of them replacing built-in rules"}, nil, false},
		{"bad file names every line", []string{"rules", "check", good, bad}, 1, nil,
			[]string{bad + ":4: rule x: condition:", bad + ":8: rule y: unknown field \"windw\"", "2 problem(s) found"}, true},
		{"same id in two files", []string{"rules", "check", good, good}, 1, nil, []string{"duplicate id"}, true},
		{"missing file", []string{"rules", "check", filepath.Join(dir, "nope.yaml")}, 1, nil, []string{"couldn't read rule file"}, true},
		{"no file", []string{"rules", "check"}, 2, nil, []string{"needs at least one rule file"}, true},
		{"unknown subcommand", []string{"rules", "lint", good}, 2, nil, []string{`unknown rules command "lint"`}, true},
		{"builtin pack", []string{"rules", "builtin"}, 0, []string{"id: access-denied-burst", "id: integrity-failure"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout %q lacks %q", out, w)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
			if tc.noStdout && out != "" {
				t.Errorf("unexpected stdout %q", out)
			}
		})
	}
}

func TestRulesTest(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "rules.yaml", goodRules)
	pass := writeFile(t, dir, "pass_test.yaml", `rule_files: [rules.yaml]
builtin: false
tests:
  - name: three denials in a minute
    events:
      - {at: 0s, repeat: 3, every: 10s, event: {type: access.attempt, actor: {id: u1}, outcome: denied}}
    until: 5m
    expect:
      - {rule: access-denied-burst, state: firing, group: {actor.id: u1}, at: 20s}
      - {rule: access-denied-burst, state: resolved, group: {actor.id: u1}}
`)
	fail := writeFile(t, dir, "fail_test.yaml", `rule_files: [rules.yaml]
tests:
  - name: wrong expectation
    events:
      - {at: 1m, event: {type: data.export, action: export, actor: {id: svc, type: service}}}
    expect:
      - {rule: export-by-contractor, state: firing, group: {actor.id: someone-else}}
`)
	code, out, errOut := runCLI("rules", "test", pass)
	if code != 0 || !strings.Contains(out, "PASS "+pass+": three denials in a minute") {
		t.Fatalf("passing test: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("rules", "test", pass, fail)
	for _, w := range []string{
		"FAIL " + fail + ": wrong expectation",
		`- missing:    firing export-by-contractor {actor.id="someone-else"}`,
		`+ unexpected: firing export-by-contractor {actor.id="svc"} at 1m0s`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if code != 1 || !strings.Contains(errOut, "1 test(s) failed") {
		t.Errorf("failing test: exit %d, stderr %q; want 1 and a count", code, errOut)
	}
	badTest := writeFile(t, dir, "bad_test.yaml", "tests:\n  - name: x\n    evnts: []\n")
	if code, _, errOut := runCLI("rules", "test", badTest); code != 1 || !strings.Contains(errOut, badTest+":3:") {
		t.Errorf("bad test file: exit %d, stderr %q; want 1 and the line", code, errOut)
	}
}

// TestRulesBuiltinRoundTrip checks that the printed built-in pack is a
// valid rule file a user can start from: every rule in it replaces its
// built-in twin.
func TestRulesBuiltinRoundTrip(t *testing.T) {
	code, out, errOut := runCLI("rules", "builtin")
	if code != 0 {
		t.Fatalf("rules builtin: exit %d: %s", code, errOut)
	}
	f := writeFile(t, t.TempDir(), "pack.yaml", out)
	code, out, errOut = runCLI("rules", "check", f)
	if code != 0 || !strings.Contains(out, "OK: 13 rule(s) in 1 file(s), 13 of them replacing built-in rules; 13 rules in force") {
		t.Errorf("rules check of the printed pack: exit %d\n%s%s", code, out, errOut)
	}
}
