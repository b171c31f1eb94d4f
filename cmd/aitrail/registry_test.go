package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// postAs sends events with token and returns the status and body.
func postAs(s *server, token string, events ...map[string]any) (int, string) {
	body, _ := json.Marshal(map[string]any{"events": events})
	code, data := s.do("POST", "/v1/events", token, "application/json", body)
	return code, string(data)
}

// modelOf returns the stored model and attributes of the event id in tenant.
func modelOf(t *testing.T, s *server, tenant, id string) (map[string]any, map[string]any) {
	t.Helper()
	s.waitIndexed()
	var e struct {
		Model      map[string]any `json:"model"`
		Attributes map[string]any `json:"attributes"`
	}
	s.getJSON("/v1/events/"+id+"?tenant="+tenant, &e)
	return e.Model, e.Attributes
}

// ids returns the ids of the events GET /v1/events finds with filter.
func ids(s *server, filter string) []string {
	var out []string
	for _, e := range s.allEvents(filter) {
		out = append(out, e["id"].(string))
	}
	slices.Sort(out)
	return out
}

func inference(tenant, id, version string, attrs map[string]any) map[string]any {
	model := map[string]any{"name": "fraud"}
	if version != "" {
		model["version"] = version
	}
	return map[string]any{"type": "ai.inference", "id": id, "tenant": tenant, "model": model, "attributes": attrs}
}

func deployEvent(tenant, id, version string, attrs map[string]any) map[string]any {
	return map[string]any{"type": "model.deploy", "id": id, "tenant": tenant, "actor": map[string]any{"id": "release-bot", "type": "service"},
		"model": map[string]any{"name": "fraud", "version": version, "digest": "sha256:" + version}, "attributes": attrs}
}

// TestModelRegistry drives the deployment registry through the real server:
// deploys, inference events completed at ingest, never-deployed versions
// marked, tenants kept apart, the query for every event served by a
// version, the CLI, and a crash and restart.
func TestModelRegistry(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	_, _, acme := mint(t, s, adminToken, `{"name":"acme-app","roles":["ingest","read"],"tenants":["acme"]}`)
	_, _, globex := mint(t, s, adminToken, `{"name":"globex-app","roles":["ingest","read"],"tenants":["globex"]}`)
	prod := map[string]any{"deployment.environment.name": "production", "service.name": "scoring"}

	// Invalid deploys and forged markers are refused, and nothing is stored.
	before := s.settledSize() // the tokens' creation and their alerts
	code, body := postAs(s, acme, deployEvent("acme", "ok-but-batched", "v1", prod),
		map[string]any{"type": "model.deploy", "tenant": "acme", "model": map[string]any{"name": "fraud"}})
	if code != http.StatusBadRequest || !strings.Contains(body, `"field":"events[1].model.version"`) {
		t.Fatalf("deploy without a version: %d %s", code, body)
	}
	code, body = postAs(s, acme, inference("acme", "forged", "v1", map[string]any{"aitrail.model.deployed": true}))
	if code != http.StatusBadRequest || !strings.Contains(body, "aitrail.model.deployed") {
		t.Fatalf("forged marker: %d %s", code, body)
	}
	if s.size() != before {
		t.Fatal("a refused request stored records")
	}

	// Before any deploy, events are stored as sent.
	if code, body := postAs(s, acme, inference("acme", "i0", "", prod)); code != 200 {
		t.Fatalf("inference: %d %s", code, body)
	}
	if m, a := modelOf(t, s, "acme", "i0"); m["version"] != nil || a["aitrail.model.version_source"] != nil {
		t.Fatalf("resolved without a deployment: %v %v", m, a)
	}

	// Deploy v1; the next inference, right after the acknowledgement, is
	// served by it.
	if code, body := postAs(s, acme, deployEvent("acme", "d1", "v1", prod)); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	if code, body := postAs(s, acme, inference("acme", "i1", "", prod), inference("acme", "i2", "", nil)); code != 200 {
		t.Fatalf("inference: %d %s", code, body)
	}
	for _, id := range []string{"i1", "i2"} {
		m, a := modelOf(t, s, "acme", id)
		if m["version"] != "v1" || m["digest"] != "sha256:v1" || a["aitrail.model.version_source"] != "registry" || a["aitrail.model.deployed"] != true {
			t.Fatalf("%s stored as %v %v; want v1 resolved from the registry", id, m, a)
		}
	}
	// A version never deployed is marked; a deployed one too.
	postAs(s, acme, inference("acme", "rogue", "v9", nil), inference("acme", "named", "v1", nil))
	if _, a := modelOf(t, s, "acme", "rogue"); a["aitrail.model.deployed"] != false {
		t.Fatalf("never-deployed version: %v", a)
	}
	if _, a := modelOf(t, s, "acme", "named"); a["aitrail.model.deployed"] != true || a["aitrail.model.version_source"] != nil {
		t.Fatalf("deployed version named by the producer: %v", a)
	}

	// Another tenant's deployments never affect acme, and the other way round.
	if code, body := postAs(s, globex, inference("globex", "g0", "", nil)); code != 200 {
		t.Fatalf("globex inference: %d %s", code, body)
	}
	if m, a := modelOf(t, s, "globex", "g0"); m["version"] != nil || a != nil {
		t.Fatalf("globex resolved with acme's deployment: %v %v", m, a)
	}
	postAs(s, globex, deployEvent("globex", "gd1", "g7", nil))
	if code, body := postAs(s, acme, deployEvent("acme", "d2", "v2", prod)); code != 200 {
		t.Fatalf("redeploy: %d %s", code, body)
	}
	postAs(s, acme, inference("acme", "i3", "", prod))
	if m, _ := modelOf(t, s, "acme", "i3"); m["version"] != "v2" {
		t.Fatalf("after the redeploy: %v, want v2", m)
	}

	// Every event served by a version.
	if got := ids(s, "tenant=acme&type=ai.*&model=fraud@v1"); !slices.Equal(got, []string{"i1", "i2", "named"}) {
		t.Fatalf("events served by fraud@v1: %v", got)
	}
	if got := ids(s, "tenant=acme&model=fraud@v2"); !slices.Equal(got, []string{"d2", "i3"}) {
		t.Fatalf("events naming fraud@v2: %v", got)
	}

	// GET /v1/models shows each token its own tenants only.
	models := func(token, query string) []map[string]any {
		t.Helper()
		code, body := s.do("GET", "/v1/models"+query, token, "", nil)
		var r struct {
			Models []map[string]any `json:"models"`
		}
		if code != 200 || json.Unmarshal(body, &r) != nil {
			t.Fatalf("GET /v1/models%s: %d %s", query, code, body)
		}
		return r.Models
	}
	tenants := func(ms []map[string]any) (out []string) {
		for _, m := range ms {
			out = append(out, m["tenant"].(string))
		}
		return out
	}
	if got := tenants(models(acme, "")); !slices.Equal(got, []string{"acme"}) {
		t.Fatalf("acme token sees models of %v", got)
	}
	if got := tenants(models(acme, "?tenant=globex")); len(got) != 0 {
		t.Fatalf("acme token asking for globex sees %v", got)
	}
	if got := tenants(models(adminToken, "")); !slices.Equal(got, []string{"acme", "globex"}) {
		t.Fatalf("admin sees models of %v", got)
	}
	am := models(acme, "")[0]
	cur := am["current"].([]any)
	if len(cur) != 1 || cur[0].(map[string]any)["version"] != "v2" || cur[0].(map[string]any)["actor"] != "release-bot" ||
		cur[0].(map[string]any)["environment"] != "production" || len(am["history"].([]any)) != 2 {
		t.Fatalf("acme's fraud model: %v", am)
	}
	if code, _ := s.do("GET", "/v1/models/fraud?tenant=acme", globex, "", nil); code != 404 {
		t.Fatalf("globex asking for acme's model by name: %d, want 404", code)
	}
	if code, _ := s.do("GET", "/v1/models?bogus=1", acme, "", nil); code != 400 {
		t.Fatalf("unknown parameter: %d, want 400", code)
	}
	// Pages: a model at a time, each page naming where the next starts.
	var paged []string
	for query, pages := "?limit=1", 0; ; pages++ {
		code, body := s.do("GET", "/v1/models"+query, adminToken, "", nil)
		var r struct {
			Models     []map[string]any `json:"models"`
			NextCursor string           `json:"next_cursor"`
		}
		if code != 200 || json.Unmarshal(body, &r) != nil || len(r.Models) != 1 || pages > 2 {
			t.Fatalf("GET /v1/models%s: %d %s", query, code, body)
		}
		paged = append(paged, tenants(r.Models)...)
		if r.NextCursor == "" {
			break
		}
		query = "?limit=1&cursor=" + r.NextCursor
	}
	if !slices.Equal(paged, []string{"acme", "globex"}) {
		t.Fatalf("the pages of GET /v1/models?limit=1 hold models of %v", paged)
	}
	for _, bad := range []string{"?limit=0", "?limit=1001", "?limit=01", "?limit=", "?cursor=", "?cursor=bm9wZQ", "/fraud?cursor=%5B%5D"} {
		if code, body := s.do("GET", "/v1/models"+bad, adminToken, "", nil); code != 400 || !strings.Contains(string(body), "invalid_query") {
			t.Errorf("GET /v1/models%s: %d %s; want 400 invalid_query", bad, code, body)
		}
	}

	// The CLI.
	code, out, errOut := runCLI("models", "--url", s.url, "--token", acme)
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "acme") || !strings.Contains(out, "v2") ||
		!strings.Contains(out, "production") || strings.Contains(out, "globex") {
		t.Fatalf("aitrail models: %d %q %s", code, out, errOut)
	}
	code, out, _ = runCLI("models", "--url", s.url, "--token", adminToken, "--history", "--tenant", "acme")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, "v1") {
		t.Fatalf("aitrail models --history: %d %q", code, out)
	}

	// A crash right after a deploy: at restart the registry catches up
	// from the log and is the same.
	postAs(s, acme, deployEvent("acme", "d3", "v3", map[string]any{"deployment.environment.name": "staging"}))
	want := models(adminToken, "")
	s.kill()
	s = startServer(t, data)
	if got := models(adminToken, ""); !jsonEqual(got, want) {
		t.Fatalf("after restart GET /v1/models is\n%v\nwant\n%v", got, want)
	}
	postAs(s, acme, inference("acme", "i4", "", prod), inference("acme", "i5", "", nil))
	if m, _ := modelOf(t, s, "acme", "i4"); m["version"] != "v2" {
		t.Fatalf("production after restart: %v, want v2", m)
	}
	// v2 in production and v3 in staging: an event naming no environment
	// is ambiguous.
	if m, a := modelOf(t, s, "acme", "i5"); m["version"] != nil || a["aitrail.model.version_source"] != "unresolved" {
		t.Fatalf("ambiguous event: %v %v", m, a)
	}
	// The registry is derived: without its file it is rebuilt from the log.
	want = models(adminToken, "")
	s.stop()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(data, registryFile+suffix))
	}
	s = startServer(t, data)
	if got := models(adminToken, ""); !jsonEqual(got, want) {
		t.Fatalf("rebuilt from the log, GET /v1/models is\n%v\nwant\n%v", got, want)
	}
	s.stop()
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
