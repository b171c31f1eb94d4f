package detect

import (
	"strings"
	"testing"
)

// TestTestCasesAreBounded: a case that would advance the clock or feed
// events without practical end (a typo such as eval_interval: 1ns) is an
// error naming what to change, not a run that never ends.
func TestTestCasesAreBounded(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"tests:\n  - name: a\n    eval_interval: 1ns\n    until: 100h\n", "raise eval_interval"},
		{"tests:\n  - name: a\n    events:\n      - at: 100000h\n        event: {type: api.call}\n", "raise eval_interval"},
		{"tests:\n  - name: a\n    events:\n      - repeat: 4611686018427387904\n        event: {type: api.call}\n", "more than 1000000 events"},
		{"tests:\n  - name: a\n    events:\n      - {repeat: 600000, event: {type: api.call}}\n      - {repeat: 600000, event: {type: api.call}}\n", "more than 1000000 events"},
	} {
		tf, err := ParseTestFile("t.yaml", []byte(c.yaml))
		if err != nil {
			t.Fatal(err)
		}
		_, err = tf.Tests[0].Run(Builtin())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q ran: %v; want an error saying %q", c.yaml, err, c.want)
		}
	}
}

// FuzzTestFile runs rules unit-test files: each is refused with problems
// naming the file, or its cases run to an end, each passing, failing with
// a diff or refused with an error.
func FuzzTestFile(f *testing.F) {
	for _, s := range []string{
		"tests:\n  - name: a\n    events:\n      - {at: 0s, repeat: 3, every: 10s, event: {type: access.attempt, actor: {id: u1}, outcome: denied}}\n    until: 5m\n    expect:\n      - {rule: access-denied-burst, state: firing, group: {actor.id: u1}, at: 20s}\n",
		"tests:\n  - name: a\n    start: 2026-01-05T00:00:00Z\n    eval_interval: 30s\n    events:\n      - {at: -1m, event: {type: model.deploy, model: {name: m, version: v}}}\n",
		"builtin: false\ntests: []\n",
		"tests:\n  - events:\n      - {event: {attributes: {a: [1, {b: c}]}}}\n",
		"tests: {",
	} {
		f.Add([]byte(s))
	}
	rules := Builtin()
	f.Fuzz(func(t *testing.T, data []byte) {
		tf, err := ParseTestFile("t.yaml", data)
		if err != nil {
			if ps, ok := err.(Problems); !ok || len(ps) == 0 || !strings.HasPrefix(ps[0].String(), "t.yaml:") {
				t.Fatalf("error %v does not name the file", err)
			}
			return
		}
		for _, tc := range tf.Tests {
			if diff, err := tc.Run(rules); err == nil && len(diff) > 0 && diff[0] == "" {
				t.Fatalf("an empty difference: %q", diff)
			}
		}
	})
}
