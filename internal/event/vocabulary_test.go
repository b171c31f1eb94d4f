package event

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// eventSchema compiles the JSON Schema published in docs/.
func eventSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("../../docs/event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("docs/event.schema.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("event.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("event.schema.json")
	if err != nil {
		t.Fatalf("docs/event.schema.json does not compile: %v", err)
	}
	return s
}

func schemaAccepts(t *testing.T, s *jsonschema.Schema, body string) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return s.Validate(v)
}

func serverAccepts(body string) ([]Record, error) {
	events, err := Decode([]byte(body), "application/json", Limits{})
	if err != nil {
		return nil, err
	}
	recs, _, err := NormalizeAll(events, time.Now(), Limits{})
	return recs, err
}

// TestDocumentedExamplesAreAccepted keeps docs/events.md true: every JSON
// example on it is valid under the published schema and accepted by the
// server as written.
func TestDocumentedExamplesAreAccepted(t *testing.T) {
	s := eventSchema(t)
	page, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(page, -1)
	if len(blocks) < 5 {
		t.Fatalf("docs/events.md has %d JSON examples; want one per main type", len(blocks))
	}
	for _, b := range blocks {
		body := string(b[1])
		if err := schemaAccepts(t, s, body); err != nil {
			t.Errorf("schema refuses the documented example\n%s\n%v", body, err)
		}
		if _, err := serverAccepts(body); err != nil {
			t.Errorf("server refuses the documented example\n%s\n%v", body, err)
		}
	}
	// The last example is the one with legacy names.
	recs, err := serverAccepts(string(blocks[len(blocks)-1][1]))
	if err != nil {
		t.Fatal(err)
	}
	a := recs[0].Attributes
	if a["gen_ai.provider.name"] != "openai" || a["gen_ai.usage.input_tokens"] != 12.0 || a["gen_ai.usage.output_tokens"] != 30.0 || len(a) != 3 {
		t.Errorf("legacy example stored as %v; want current names only", a)
	}
}

// TestSchemaAndServerRefuseTheSame checks that the schema refuses what the
// server refuses, for the rules a schema can express.
func TestSchemaAndServerRefuseTheSame(t *testing.T) {
	s := eventSchema(t)
	for _, body := range []string{
		`{}`,
		`{"type":"AI.Inference"}`,
		`{"type":"ai..inference"}`,
		`{"type":"ai.inference","tenant":"Acme"}`,
		`{"type":"ai.inference","tenant":"-acme"}`,
		`{"type":"ai.inference","time":"yesterday"}`,
		`{"type":"ai.inference","id":"has space"}`,
		`{"type":"ai.inference","id":"` + strings.Repeat("x", 129) + `"}`,
		`{"type":"ai.inference","outcome":"maybe"}`,
		`{"type":"ai.inference","actor":{"type":"robot"}}`,
		`{"type":"ai.inference","actor":{"name":"x"}}`,
		`{"type":"ai.inference","model":{"name":"x","size":"big"}}`,
		`{"type":"ai.inference","model":{"name":"a\u0001b"}}`,
		`{"type":"ai.inference","action":"` + strings.Repeat("a", 1025) + `"}`,
		`{"type":"ai.inference","attributes":{"k":{"nested":1}}}`,
		`{"type":"ai.inference","attributes":{"k":[1,2]}}`,
		`{"type":"ai.inference","attributes":{"k":null}}`,
		`{"type":"ai.inference","attributes":{"bad key":1}}`,
		`{"type":"ai.inference","attributes":{"k":"` + strings.Repeat("v", 4097) + `"}}`,
		`{"type":"ai.inference","trace_id":"xyz"}`,
		`{"type":"ai.inference","span_id":"00f067aa0ba902b7ff"}`,
		`{"type":"ai.inference","colour":"red"}`,
	} {
		if err := schemaAccepts(t, s, body); err == nil {
			t.Errorf("schema accepts %.80s", body)
		}
		if _, err := serverAccepts(body); err == nil {
			t.Errorf("server accepts %.80s", body)
		}
	}
}

func TestLegacyAttributeNames(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"gen_ai.system":"anthropic"}`, `"gen_ai.provider.name":"anthropic"`},
		{`{"gen_ai.usage.prompt_tokens":5,"gen_ai.usage.completion_tokens":7}`, `"gen_ai.usage.input_tokens":5,"gen_ai.usage.output_tokens":7`},
		// Both names sent: the current one wins.
		{`{"gen_ai.system":"old","gen_ai.provider.name":"openai"}`, `"gen_ai.provider.name":"openai"`},
		{`{"gen_ai.openai.request.seed":42}`, `"gen_ai.request.seed":42`},
		// Not a legacy name: untouched.
		{`{"gen_ai.systemx":"a"}`, `"gen_ai.systemx":"a"`},
	} {
		recs, err := serverAccepts(`{"id":"x","type":"ai.inference","time":"2026-01-01T00:00:00Z","attributes":` + tc.in + `}`)
		if err != nil {
			t.Fatal(err)
		}
		data, err := Canonical(&recs[0])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte(`"attributes":{`+tc.want+`}`)) {
			t.Errorf("attributes %s stored as %s; want {%s}", tc.in, data, tc.want)
		}
	}
}
