package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReadsAreRecorded checks that the log records who read what: each
// query and event read as a log.access record naming the token, the filter
// (with the actor as a pseudonym and free text withheld), the number of
// records and whether content was shown; refused requests as one
// access.attempt per source and window, whatever their number; entry
// bundle downloads as one record per token and window.
func TestReadsAreRecorded(t *testing.T) {
	s := startServer(t, t.TempDir(), "--config", writeConfig(t, "access_window: 200ms\n"))
	_, readerID, reader := mint(t, s, adminToken, `{"name":"auditor","roles":["read"],"tenants":["acme"]}`)
	_, contentID, contentReader := mint(t, s, adminToken, `{"name":"investigator","roles":["read","read_content"],"tenants":["acme"]}`)
	for i := 0; i < 3; i++ {
		s.post(map[string]any{"type": "ai.inference", "tenant": "acme", "id": "q" + string(rune('0'+i)),
			"actor": map[string]any{"id": "alice"}, "content": map[string]any{"prompt": "secret"}})
	}
	s.waitIndexed()

	if code, _ := s.do("GET", "/v1/events?tenant=acme&actor=alice&q=inference", reader, "", nil); code != 200 {
		t.Fatalf("query: %d", code)
	}
	if code, _ := s.do("GET", "/v1/events/q0?tenant=acme", contentReader, "", nil); code != 200 {
		t.Fatalf("get: %d", code)
	}
	if code, _ := s.do("GET", "/v1/events/q1?tenant=acme", reader, "", nil); code != 200 {
		t.Fatalf("get: %d", code)
	}
	for i := 0; i < 30; i++ {
		s.do("GET", "/v1/events", "not-a-token", "", nil)
	}
	for i := 0; i < 3; i++ {
		s.do("POST", "/v1/events", reader, "application/json", []byte(`{"type":"x.y","tenant":"acme"}`))
	}
	for i := 0; i < 2; i++ {
		if code, _ := s.do("GET", "/log/tile/entries/000.p/1", adminToken, "", nil); code != 200 {
			t.Fatalf("bundle: %d", code)
		}
	}

	// Counted accesses are recorded once per access window; on a busy
	// machine the requests above may straddle two windows, so the counts
	// are summed over the records.
	attr := func(e map[string]any, k string) any { return e["attributes"].(map[string]any)[k] }
	var access, attempts []map[string]any
	var bundles float64
	counts := map[string]float64{}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		s.waitIndexed()
		access = s.allEvents("type=log.access")
		attempts = s.allEvents("type=access.attempt")
		bundles = 0
		for _, e := range access {
			if e["action"] == "log.entries" {
				bundles += attr(e, "log.access.bundles").(float64)
			}
		}
		clear(counts)
		for _, e := range attempts {
			counts[e["action"].(string)] += attr(e, "access.attempts").(float64)
		}
		if bundles >= 2 && counts["authenticate"] >= 30 && counts["authorize"] >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted accesses never recorded: %v attempts, %v bundles", counts, bundles)
		}
	}
	var query, gotContent, gotPlain map[string]any
	for _, e := range access {
		switch {
		case e["action"] == "events.query" && attr(e, "aitrail.token_id") == readerID:
			query = e
		case e["action"] == "events.get" && attr(e, "aitrail.token_id") == contentID:
			gotContent = e
		case e["action"] == "events.get" && attr(e, "aitrail.token_id") == readerID:
			gotPlain = e
		}
	}
	if query == nil || query["tenant"] != "acme" || attr(query, "log.access.records") != 3.0 {
		t.Fatalf("query record %v", query)
	}
	filter := attr(query, "log.access.filter").(string)
	if strings.Contains(filter, "alice") || strings.Contains(filter, "inference") || !strings.Contains(filter, "hmac-sha256") || !strings.Contains(filter, "withheld") {
		t.Errorf("recorded filter %q: want the actor as a pseudonym and the text withheld", filter)
	}
	if gotContent == nil || attr(gotContent, "log.access.content_shown") != true || gotContent["actor"].(map[string]any)["id"] != contentID {
		t.Errorf("content read record %v", gotContent)
	}
	if gotPlain == nil || attr(gotPlain, "log.access.content_shown") != false {
		t.Errorf("metadata read record %v", gotPlain)
	}
	if bundles != 2 {
		t.Errorf("bundle downloads recorded %v times; want 2", bundles)
	}
	for _, e := range attempts {
		if ip, _ := e["actor"].(map[string]any)["ip"].(string); !strings.HasPrefix(ip, "hmac-sha256:") {
			t.Errorf("refused request's source stored as %q; want a pseudonym", ip)
		}
	}
	// One record per kind and window: two, or a few more if the requests
	// straddled windows, never one per request.
	if len(attempts) < 2 || len(attempts) > 6 || counts["authenticate"] != 30 || counts["authorize"] != 3 {
		t.Errorf("access.attempt records %v; want 30 bad tokens and 3 refusals counted in a few records", attempts)
	}
}

// TestReadRecordsKeepPseudonymsApart: a search by a person's id across
// tenants is recorded in each tenant with that tenant's pseudonym only;
// one record holding all of them would link the person's pseudonyms
// across tenants (and survive the erasure of one of them), and show a
// reader of one tenant that the person is known in another.
func TestReadRecordsKeepPseudonymsApart(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, tenant := range []string{"acme", "globex"} {
		s.post(map[string]any{"type": "api.call", "tenant": tenant, "id": "z-" + tenant, "actor": map[string]any{"id": "zed", "type": "user"}})
	}
	s.waitIndexed()
	if code, _ := s.do("GET", "/v1/events?actor=zed", adminToken, "", nil); code != 200 {
		t.Fatalf("query: %d", code)
	}
	s.waitIndexed()
	for _, tenant := range []string{"acme", "globex"} {
		var ev map[string]any
		s.getJSON("/v1/events/z-"+tenant+"?tenant="+tenant, &ev)
		own := ev["actor"].(map[string]any)["id"].(string)
		var filters []string
		for _, e := range s.allEvents("type=log.access&tenant=" + tenant) {
			if e["action"] == "events.query" {
				filters = append(filters, e["attributes"].(map[string]any)["log.access.filter"].(string))
			}
		}
		if len(filters) != 1 || strings.Count(filters[0], "hmac-sha256") != 1 || !strings.Contains(filters[0], strings.TrimPrefix(own, "hmac-sha256:")) {
			t.Errorf("tenant %s: read records with filters %q; want one naming only its pseudonym %s", tenant, filters, own)
		}
	}
}

// TestCursorsKeepTheirActor: a cursor of a search by actor is refused with
// another actor or none, as with any other changed filter.
func TestCursorsKeepTheirActor(t *testing.T) {
	s := startServer(t, t.TempDir())
	for i := range 3 {
		s.post(map[string]any{"type": "api.call", "id": fmt.Sprintf("u1-%d", i), "actor": map[string]any{"id": "u-1", "type": "user"}})
	}
	s.waitIndexed()
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	s.getJSON("/v1/events?actor=u-1&limit=1", &page)
	if page.NextCursor == "" {
		t.Fatal("no cursor")
	}
	for _, filter := range []string{"actor=u-2&", "", "actor=u-1&type=api.call&"} {
		if code, body := s.do("GET", "/v1/events?"+filter+"limit=1&cursor="+page.NextCursor, adminToken, "", nil); code != 400 {
			t.Errorf("the cursor with %q: %d %s; want 400", filter, code, body)
		}
	}
	if code, body := s.do("GET", "/v1/events?actor=u-1&limit=1&cursor="+page.NextCursor, adminToken, "", nil); code != 200 {
		t.Errorf("the cursor with its own filter: %d %s", code, body)
	}
}

// TestRecordedReadsNameTheirToken: the answer to every recorded read names
// the token id its log.access records name, "root" for the root token.
func TestRecordedReadsNameTheirToken(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.post(map[string]any{"type": "ai.inference", "id": "named"})
	s.waitIndexed()
	code, body := s.do("POST", "/v1/tokens", adminToken, "application/json", []byte(`{"name":"reader","roles":["read"],"tenants":["*"]}`))
	var tok struct{ ID, Token string }
	if json.Unmarshal(body, &tok); code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	for _, c := range []struct{ token, want string }{{tok.Token, tok.ID}, {adminToken, "root"}} {
		for _, path := range []string{"/v1/events", "/v1/events/named", "/v1/alerts"} {
			req, _ := http.NewRequest("GET", s.url+path, nil)
			req.Header.Set("Authorization", "Bearer "+c.token)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if got := res.Header.Get("Aitrail-Token-Id"); res.StatusCode != 200 || got != c.want {
				t.Errorf("GET %s as %s: %d, Aitrail-Token-Id %q; want %q", path, c.want, res.StatusCode, got, c.want)
			}
		}
	}
}
