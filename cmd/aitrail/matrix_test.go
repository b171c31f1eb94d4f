package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/fakeprovider"
)

var updateMatrix = flag.Bool("update-matrix", false, "rewrite the access matrix in docs/security.md")

// principals are the matrix's columns: no token, then a token per role
// confined to tenant acme, then an auditor of every tenant and the root
// token.
var principals = []struct{ name, body string }{
	{"no token", ""},
	{"ingest", `{"name":"m-ingest","roles":["ingest"],"tenants":["acme"]}`},
	{"read", `{"name":"m-read","roles":["read"],"tenants":["acme"]}`},
	{"read_content", `{"name":"m-content","roles":["read_content"],"tenants":["acme"]}`},
	{"audit", `{"name":"m-audit","roles":["audit"],"tenants":["acme"]}`},
	{"admin", `{"name":"m-admin","roles":["admin"],"tenants":["acme"]}`},
	{"erase", `{"name":"m-erase","roles":["erase"],"tenants":["acme"]}`},
	{"audit, all tenants", `{"name":"m-audit-all","roles":["audit"],"tenants":["*"]}`},
	{"root", "root"},
}

// cell is what one request does: its status, and for reads what the
// caller saw.
type cell struct {
	code int
	note string // "hidden" (no record of the tenant), "content", "rejected"
}

func (c cell) String() string {
	if c.note != "" {
		return fmt.Sprintf("%d %s", c.code, c.note)
	}
	return fmt.Sprint(c.code)
}

// matrixRow is one endpoint, for one tenant: "own" is acme, the tenant of
// every confined token; "other" is globex.
type matrixRow struct {
	name string
	// do sends the request as token (empty: none) for tenant and returns
	// what the caller got.
	do   func(s *server, token, tenant string) cell
	want []string // one per principal
}

// TestAccessMatrix walks every endpoint × role × tenant against the real
// server and compares what each caller gets with the table in
// docs/security.md, which it keeps true (go test -run TestAccessMatrix
// -update-matrix rewrites it).
func TestAccessMatrix(t *testing.T) {
	up := fakeprovider.NewQuiet()
	t.Cleanup(up.Close)
	s := startServerEnv(t, t.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + adminToken,
		"AITRAIL_ANTHROPIC_UPSTREAM=" + up.URL}, "--openai-upstream", up.URL+"/v1",
		// No rules: the alerts rows must not depend on what the built-in
		// pack happens to raise while the matrix runs.
		"--config", writeConfig(t, "detect:\n  disable_builtin: true\n"))
	for _, tenant := range []string{"acme", "globex"} {
		s.post(map[string]any{"type": "ai.inference", "tenant": tenant, "id": "ev-" + tenant,
			"actor": map[string]any{"id": "u"}, "content": "secret of " + tenant})
		s.post(map[string]any{"type": "model.deploy", "tenant": tenant, "id": "dep-" + tenant,
			"model": map[string]any{"name": "m", "version": "1"}})
	}
	s.waitIndexed()
	tokens := make([]string, len(principals))
	for i, p := range principals {
		switch p.body {
		case "":
		case "root":
			tokens[i] = adminToken
		default:
			code, _, tok := mint(t, s, adminToken, p.body)
			if code != 201 {
				t.Fatalf("minting %s: %d", p.name, code)
			}
			tokens[i] = tok
		}
	}

	var got [][]string
	for _, row := range matrixRows() {
		var line []string
		for i := range principals {
			line = append(line, row.do(s, tokens[i], row.tenant()).String())
		}
		got = append(got, line)
		for i, want := range row.want {
			if line[i] != want {
				t.Errorf("%s as %s: %s, want %s", row.name, principals[i].name, line[i], want)
			}
		}
	}

	table := renderMatrix(got)
	const begin, end = "<!-- access matrix: begin -->\n", "<!-- access matrix: end -->\n"
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatal("docs/security.md has no access matrix markers")
	}
	if current := string(doc[i+len(begin) : j]); current != table {
		if *updateMatrix {
			os.WriteFile("../../docs/security.md", []byte(string(doc[:i+len(begin)])+table+string(doc[j:])), 0o644)
			return
		}
		t.Errorf("docs/security.md's access matrix differs from what the server does; run go test ./cmd/aitrail -run TestAccessMatrix -update-matrix. Want:\n%s", table)
	}
}

func (r matrixRow) tenant() string {
	if strings.HasSuffix(r.name, "(other tenant)") {
		return "globex"
	}
	return "acme"
}

func renderMatrix(got [][]string) string {
	var b strings.Builder
	b.WriteString("| endpoint |")
	for _, p := range principals {
		b.WriteString(" " + p.name + " |")
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---|", len(principals)))
	b.WriteString("\n")
	for i, row := range matrixRows() {
		b.WriteString("| " + row.name + " |")
		for _, c := range got[i] {
			b.WriteString(" " + c + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// request sends method path with token and the extra headers and returns
// the status and body.
func request(s *server, method, path, token, contentType, body string, hdr ...string) (int, []byte) {
	if token != "" {
		hdr = append(hdr, "Authorization", "Bearer "+token)
	}
	return s.do(method, path, "", contentType, []byte(body), hdr...)
}

func statusOnly(method, path, contentType, body string, hdr ...string) func(*server, string, string) cell {
	return func(s *server, token, tenant string) cell {
		code, _ := request(s, method, strings.ReplaceAll(path, "{t}", tenant), token, contentType,
			strings.ReplaceAll(body, "{t}", tenant), hdrFor(hdr, tenant)...)
		return cell{code: code}
	}
}

func hdrFor(hdr []string, tenant string) []string {
	out := append([]string(nil), hdr...)
	for i := range out {
		out[i] = strings.ReplaceAll(out[i], "{t}", tenant)
	}
	return out
}

// listed reads a list answer and notes "hidden" when it holds nothing of
// the tenant.
func listed(path, key string) func(*server, string, string) cell {
	return func(s *server, token, tenant string) cell {
		code, body := request(s, "GET", strings.ReplaceAll(path, "{t}", tenant), token, "", "")
		c := cell{code: code}
		if code == 200 {
			var page map[string][]map[string]any
			json.Unmarshal(body, &page)
			n := 0
			for _, e := range page[key] {
				if e["tenant"] == tenant {
					n++
				}
			}
			if n == 0 {
				c.note = "hidden"
			}
		}
		return c
	}
}

func matrixRows() []matrixRow {
	const (
		own   = " (own tenant)"
		other = " (other tenant)"
	)
	all := func(v string) []string {
		out := make([]string, len(principals))
		for i := range out {
			out[i] = v
		}
		return out
	}
	anyToken := append([]string{"401"}, all("200")[1:]...)
	otlp := `{"resourceSpans":[{"resource":{"attributes":[{"key":"aitrail.tenant","value":{"stringValue":"{t}"}}]},` +
		`"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"chat",` +
		`"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000",` +
		`"attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}]}]}]}]}`
	getEvent := func(s *server, token, tenant string) cell {
		code, body := request(s, "GET", "/v1/events/ev-"+tenant+"?tenant="+tenant, token, "", "")
		c := cell{code: code}
		if code == 200 && strings.Contains(string(body), `"decrypted_content"`) {
			c.note = "content"
		}
		return c
	}
	otlpRow := func(s *server, token, tenant string) cell {
		code, body := request(s, "POST", "/otlp/v1/traces", token, "application/json", strings.ReplaceAll(otlp, "{t}", tenant))
		c := cell{code: code}
		if code == 200 && strings.Contains(string(body), "rejected") {
			c.note = "rejected"
		}
		return c
	}
	revoke := func(s *server, token, tenant string) cell {
		_, body := s.do("POST", "/v1/tokens", adminToken, "application/json", []byte(`{"name":"victim","roles":["read"],"tenants":["`+tenant+`"]}`))
		var victim struct{ ID string }
		json.Unmarshal(body, &victim)
		code, _ := request(s, "DELETE", "/v1/tokens/"+victim.ID, token, "", "")
		return cell{code: code}
	}
	chat := `{"model":"gpt-fake","messages":[{"role":"user","content":"hi"}]}`
	msg := `{"model":"claude-fake","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`
	//                               none   ingest read   content audit  admin  erase  audit* root
	return []matrixRow{
		{"`POST /v1/events`" + own, statusOnly("POST", "/v1/events", "application/json", `{"type":"api.call","tenant":"{t}"}`),
			[]string{"401", "200", "403", "403", "403", "403", "403", "403", "200"}},
		{"`POST /v1/events`" + other, statusOnly("POST", "/v1/events", "application/json", `{"type":"api.call","tenant":"{t}"}`),
			[]string{"401", "403", "403", "403", "403", "403", "403", "403", "200"}},
		{"`GET /v1/events`" + own, listed("/v1/events?tenant={t}", "events"),
			[]string{"401", "403", "200", "200", "200", "403", "403", "200", "200"}},
		{"`GET /v1/events`" + other, listed("/v1/events?tenant={t}", "events"),
			[]string{"401", "403", "200 hidden", "200 hidden", "200 hidden", "403", "403", "200", "200"}},
		{"`GET /v1/events/{id}`" + own, getEvent,
			[]string{"401", "403", "200", "200 content", "200", "403", "403", "200", "200 content"}},
		{"`GET /v1/events/{id}`" + other, getEvent,
			[]string{"401", "403", "404", "404", "404", "403", "403", "200", "200 content"}},
		{"`GET /v1/models`" + own, listed("/v1/models?tenant={t}", "models"),
			[]string{"401", "403", "200", "200", "200", "403", "403", "200", "200"}},
		{"`GET /v1/models`" + other, listed("/v1/models?tenant={t}", "models"),
			[]string{"401", "403", "200 hidden", "200 hidden", "200 hidden", "403", "403", "200", "200"}},
		{"`GET /v1/alerts`" + own, listed("/v1/alerts?tenant={t}", "alerts"),
			[]string{"401", "403", "200 hidden", "200 hidden", "200 hidden", "403", "403", "200 hidden", "200 hidden"}},
		{"`POST /v1/alerts/{id}/ack` (no such alert)", statusOnly("POST", "/v1/alerts/none/ack", "", ""),
			[]string{"401", "403", "403", "403", "404", "404", "403", "404", "404"}},
		{"`GET /v1/proof/inclusion`, `/v1/proof/consistency`", statusOnly("GET", "/v1/proof/inclusion?index=0&size=1", "", ""), anyToken},
		{"`POST /v1/tokens` (roles the caller holds)" + own, statusOnly("POST", "/v1/tokens", "application/json", `{"name":"x","roles":["admin"],"tenants":["{t}"]}`),
			[]string{"401", "403", "403", "403", "403", "201", "403", "403", "201"}},
		{"`POST /v1/tokens` (roles the caller holds)" + other, statusOnly("POST", "/v1/tokens", "application/json", `{"name":"x","roles":["admin"],"tenants":["{t}"]}`),
			[]string{"401", "403", "403", "403", "403", "403", "403", "403", "201"}},
		{"`GET /v1/tokens`", statusOnly("GET", "/v1/tokens", "", ""),
			[]string{"401", "403", "403", "403", "403", "200", "403", "403", "200"}},
		{"`DELETE /v1/tokens/{id}`" + own, revoke,
			[]string{"401", "403", "403", "403", "403", "204", "403", "403", "204"}},
		{"`DELETE /v1/tokens/{id}`" + other, revoke,
			[]string{"401", "403", "403", "403", "403", "404", "403", "403", "204"}},
		{"`POST /v1/subjects/{tenant}/{subject}/erase`" + own, statusOnly("POST", "/v1/subjects/{t}/nobody/erase", "", ""),
			[]string{"401", "403", "403", "403", "403", "403", "200", "403", "200"}},
		{"`POST /v1/subjects/{tenant}/{subject}/erase`" + other, statusOnly("POST", "/v1/subjects/{t}/nobody/erase", "", ""),
			[]string{"401", "403", "403", "403", "403", "403", "404", "403", "200"}},
		{"`GET /log/tile/entries/…` (entry bundles, every tenant's records)", statusOnly("GET", "/log/tile/entries/000.p/1", "", ""),
			[]string{"401", "403", "403", "403", "403", "403", "403", "200", "200"}},
		{"`GET /log/key`, `/log/checkpoint`, `/log/tile/<L>/<N>`", statusOnly("GET", "/log/tile/0/000.p/1", "", ""), all("200")},
		{"`GET /healthz`, `/readyz`, `/metrics`", statusOnly("GET", "/readyz", "", ""), all("200")},
		{"`POST /otlp/v1/traces`, `/otlp/v1/logs`" + own, otlpRow,
			[]string{"401", "200", "403", "403", "403", "403", "403", "403", "200"}},
		{"`POST /otlp/v1/traces`, `/otlp/v1/logs`" + other, otlpRow,
			[]string{"401", "200 rejected", "403", "403", "403", "403", "403", "403", "200"}},
		{"`POST /openai/v1/…`" + own, statusOnly("POST", "/openai/v1/chat/completions", "application/json", chat, "X-Aitrail-Tenant", "{t}"),
			[]string{"401", "200", "403", "403", "403", "403", "403", "403", "200"}},
		{"`POST /openai/v1/…`" + other, statusOnly("POST", "/openai/v1/chat/completions", "application/json", chat, "X-Aitrail-Tenant", "{t}"),
			[]string{"401", "403", "403", "403", "403", "403", "403", "403", "200"}},
		{"`POST /anthropic/v1/messages`" + own, statusOnly("POST", "/anthropic/v1/messages", "application/json", msg, "X-Aitrail-Tenant", "{t}"),
			[]string{"401", "200", "403", "403", "403", "403", "403", "403", "200"}},
		{"`POST /anthropic/v1/messages`" + other, statusOnly("POST", "/anthropic/v1/messages", "application/json", msg, "X-Aitrail-Tenant", "{t}"),
			[]string{"401", "403", "403", "403", "403", "403", "403", "403", "200"}},
	}
}
