package ingest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/registry"
	sqlitestore "github.com/aitrail/aitrail/internal/store/sqlite"
)

// TestSchemaAgreesWithTheServer: docs/event.schema.json accepts what the
// server accepts and refuses what it refuses, for the rules beyond one
// field that a schema can express (the event package checks those of
// single fields): types and attributes only the server writes, deploy and
// retire events, dates, ids, null for absent fields.
func TestSchemaAgreesWithTheServer(t *testing.T) {
	f, err := os.Open("../../docs/event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("event.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlitestore.OpenRegistry(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reg, err := registry.Open(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	pl := &Pipeline{Registry: reg}
	producer := authz.Principal{TokenID: "0123456789abcdef", Root: true}
	server := func(body string) error {
		evs, err := event.Decode([]byte(body), event.MediaTypeJSON, event.Limits{})
		if err != nil {
			return err
		}
		recs, _, err := event.NormalizeAll(evs, time.Now(), event.Limits{})
		if err != nil {
			return err
		}
		return pl.check(producer, recs)
	}
	deploy := func(rest string) string {
		return `{"type":"model.deploy","model":{"name":"m","version":"1"}` + rest + `}`
	}
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"type":"x.test","id":""}`, true},
		{`{"type":"x.test","id":null,"time":null,"tenant":null,"actor":null,"model":null,"outcome":null,"trace_id":null}`, true},
		{`{"type":"x.test","actor":{"id":null,"type":null,"ip":null}}`, true},
		{`{"type":"x.test","time":"2024-02-29T23:59:59+23:59"}`, true},
		{`{"type":"x.test","attributes":{"aitrail.proxy.phase":"request","a":"tab\tok"}}`, true},
		{deploy(`,"attributes":{"deployment.environment.name":"production","service.name":"scoring"}`), true},
		{`{"type":"model.retire","model":{"provider":"openai","name":"m","version":"1"}}`, true},
		{`{"type":"x.test","id":"."}`, false},
		{`{"type":"x.test","id":".."}`, false},
		{`{"type":"log.access"}`, false},
		{`{"type":"privacy.erasure"}`, false},
		{`{"type":"alert.fired"}`, false},
		{`{"type":"alert.resolved"}`, false},
		{`{"type":"alert.acknowledged"}`, false},
		{`{"type":"integrity.failure"}`, false},
		{`{"type":"x.test","attributes":{"aitrail.content.markers":"x"}}`, false},
		{`{"type":"x.test","attributes":{"aitrail.model.version_source":"registry"}}`, false},
		{`{"type":"model.deploy"}`, false},
		{`{"type":"model.deploy","model":{"name":"m"}}`, false},
		{`{"type":"model.retire","model":{"version":"1"}}`, false},
		{deploy(`,"attributes":{"deployment.environment.name":3}`), false},
		{deploy(`,"attributes":{"deployment.environment":"prod\nacme"}`), false},
		{deploy(`,"attributes":{"service.name":"a\tb"}`), false},
		{`{"type":"x.test","time":"2025-13-01T00:00:00Z"}`, false},
		{`{"type":"x.test","time":"2025-01-32T00:00:00Z"}`, false},
		{`{"type":"x.test","time":"2025-01-01T24:00:00Z"}`, false},
		{`{"type":"x.test","time":"2016-12-31T23:59:60Z"}`, false},
		{`{"type":"x.test","time":"0000-01-01T00:00:00Z"}`, false},
		{`{"type":"x.test","trace_id":"` + strings.Repeat("0", 32) + `"}`, false},
		{`{"type":"x.test","span_id":"` + strings.Repeat("0", 16) + `"}`, false},
		{`{"type":"x.test","attributes":{"a":"x\u0085y"}}`, false},
	} {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		schemaErr, serverErr := schema.Validate(v), server(tc.body)
		if (schemaErr == nil) != tc.ok || (serverErr == nil) != tc.ok {
			t.Errorf("%.90s: schema %v, server %v; want both to accept: %v", tc.body, schemaErr, serverErr, tc.ok)
		}
	}
}
