package detect

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"

	"github.com/aitrail/aitrail/internal/event"
)

// fastRecords are records that the fast paths must read exactly as CEL
// does: parts present and absent, empty and unusual strings.
func fastRecords() []*event.Record {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var rs []*event.Record
	for i, outcome := range []string{"success", "denied", "failure", "", "Success"} {
		r := &event.Record{ID: fmt.Sprintf("e%d", i), Type: []string{"ai.inference", "api.call", "access.attempt", "model.deploy", "data.export"}[i],
			Tenant: "acme", Action: fmt.Sprintf("act-%d", i*11), Outcome: outcome, Time: now, ReceivedAt: now}
		if i%2 == 0 {
			r.Actor = &event.Actor{ID: fmt.Sprintf("hmac-sha256:user-%d", i), Type: "user", IP: "10.0.0.1"}
			r.Model = &event.Model{Provider: "openai", Name: fmt.Sprintf("gpt-%d", i), Version: "v1"}
			r.Attributes = map[string]any{"aitrail.token.id": "t1", "gen_ai.usage.input_tokens": float64(1500 * i)}
		}
		if i == 1 {
			// Values CEL converts or rejects where a number is expected.
			r.Attributes = map[string]any{"note": "2.5", "gen_ai.usage.input_tokens": "12", "x": true}
		}
		if i == 3 {
			r.Actor = &event.Actor{Type: "service"}
			r.Resource = &event.Resource{Type: "deployment", ID: "d-1"}
			r.Attributes = map[string]any{"x": 0.25}
		}
		rs = append(rs, r)
	}
	return rs
}

// TestFastPathsAgreeWithCEL holds every fast path to CEL's own result, over
// the built-in pack, the generated rules of the benchmark and expressions
// at the edges of what the fast paths take.
func TestFastPathsAgreeWithCEL(t *testing.T) {
	var progs []*program
	var names []string
	add := func(name string, p *program) {
		if p != nil {
			progs, names = append(progs, p), append(names, name)
		}
	}
	extra, err := Load("extra.yaml", []byte(extraRules(100)))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range append(Builtin(), extra...) {
		add(r.ID+" condition", r.cond)
		for i, p := range r.groupBy {
			add(fmt.Sprintf("%s group_by[%d]", r.ID, i), p)
		}
		for i, p := range r.values {
			add(fmt.Sprintf("%s value[%d]", r.ID, i), p)
		}
		add(r.ID+" sum", r.sum)
	}
	fast := 0
	for _, src := range []string{
		`outcome in ["denied", "failure"]`,
		`!(outcome == "success") || actor.type != "user"`,
		`"success" == outcome && model.name.endsWith("-2")`,
		`"aitrail.token.id" in attributes && actor.id.contains("user")`,
		`true && type.startsWith("ai.")`,
		`resource.id == "d-1" && attributes["missing"] == 1`,
		`outcome == "denied" && attributes["missing"] == 1`,
		`actor.id == "" && content_size == 0`,
		`actor.id`, `tenant`, `model.version`, `resource.name`,
		`outcome != "success" || double(attributes[?"gen_ai.usage.input_tokens"].orValue(0)) > 1000.0`,
		`double(attributes[?"gen_ai.usage.input_tokens"].orValue(0)) + double(attributes[?"x"].orValue(2)) >= 3000`,
		`attributes[?"gen_ai.usage.input_tokens"].orValue(0) < 5 && outcome == "denied"`,
		`attributes.?note.orValue(0) == 0 || false`,
		`double(attributes[?"note"].orValue(1)) > 0.5`,
		`double(attributes[?"aitrail.token.id"].orValue(0)) - 1.5 != 0.0`,
		`attributes[?"x"].orValue(true) == false`, `false == attributes[?"x"].orValue(true)`,
		`attributes[?"x"].orValue(false) != true`, `attributes[?"note"].orValue(true) == true`,
		`attributes[?"aitrail.token.id"].orValue("") != ""`, `attributes[?"aitrail.token.id"].orValue("t1") == "t1"`,
		`attributes[?"note"].orValue("") == "2.5"`, `attributes[?"x"].orValue("") == "0.25"`,
		`attributes[?"x"].orValue(1) == "1"`,
		// A comprehension variable that shadows a field: never read as the field.
		`attributes.exists(tenant, tenant == "note") || tenant == "other"`,
		`!attributes.all(outcome, outcome.startsWith("gen_ai")) && outcome != "x"`,
	} {
		p, err := compileCEL(src, nil)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		add(src, p)
	}
	known := 0
	for i, p := range progs {
		if p.field != nil || p.test != nil || p.num != nil {
			fast++
		}
		for _, r := range fastRecords() {
			a := &activation{r: r}
			v, _, celErr := p.cel.Eval(a)
			if p.field != nil {
				if got := p.field(r); celErr != nil || got != valueString(v) {
					t.Errorf("%s on %s: fast %q, CEL %v (%v)", names[i], r.ID, got, v, celErr)
				}
			}
			if p.test != nil {
				got, k := p.test(r)
				if k && (celErr != nil || types.Bool(got) != v) {
					t.Errorf("%s on %s: fast %v, CEL %v (%v)", names[i], r.ID, got, v, celErr)
				}
				if k {
					known++
				}
			}
			if p.num != nil {
				got, k := p.num(r)
				want, isNum := v.Value().(float64)
				if k && (celErr != nil || !isNum || got != want) {
					t.Errorf("%s on %s: fast %v, CEL %v (%v)", names[i], r.ID, got, v, celErr)
				}
				if k {
					known++
				}
			}
		}
	}
	if known == 0 {
		t.Fatal("no fast path ever knew its result")
	}
	// Most of the generated rules and the group keys of the built-in pack
	// are simple enough; if none took a fast path the test would prove
	// nothing.
	if fast < len(progs)/2 {
		t.Fatalf("only %d of %d expressions have a fast path", fast, len(progs))
	}
}
