package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mint(t *testing.T, s *server, by, body string) (int, string, string) {
	t.Helper()
	code, resp := s.do("POST", "/v1/tokens", by, "application/json", []byte(body))
	var tok struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	json.Unmarshal(resp, &tok)
	return code, tok.ID, tok.Token
}

// TestTokensRolesAndTenants walks the token lifecycle and what each role and
// tenant scope allows.
func TestTokensRolesAndTenants(t *testing.T) {
	s := startServer(t, t.TempDir())
	code, _, ingest := mint(t, s, adminToken, `{"name":"app","roles":["ingest"],"tenants":["acme"]}`)
	if code != 201 || !strings.HasPrefix(ingest, "atr_") {
		t.Fatalf("mint: %d %q", code, ingest)
	}
	_, _, reader := mint(t, s, adminToken, `{"name":"auditor","roles":["read"],"tenants":["acme"]}`)
	_, _, contentReader := mint(t, s, adminToken, `{"name":"investigator","roles":["read","read_content"],"tenants":["acme"]}`)
	_, subID, subAdmin := mint(t, s, adminToken, `{"name":"acme-admin","roles":["admin","read"],"tenants":["acme"]}`)

	ev := func(tenant string) []byte {
		return []byte(`{"type":"ai.inference","id":"t-` + tenant + `","tenant":"` + tenant + `","content":{"prompt":"MARKER-PLAINTEXT-4711"}}`)
	}
	if code, body := s.do("POST", "/v1/events", ingest, "application/json", ev("acme")); code != 200 {
		t.Fatalf("ingest into its tenant: %d %s", code, body)
	}
	if code, _ := s.do("POST", "/v1/events", ingest, "application/json", ev("globex")); code != 403 {
		t.Fatalf("ingest into another tenant: %d, want 403", code)
	}
	s.post(map[string]any{"type": "ai.inference", "id": "t-globex", "tenant": "globex"})
	s.waitIndexed()

	// Reading: read sees metadata only; read_content also sees content;
	// other tenants do not exist for either.
	code, body := s.do("GET", "/v1/events/t-acme", reader, "", nil)
	if code != 200 || strings.Contains(string(body), "MARKER") || !strings.Contains(string(body), `"digest"`) {
		t.Fatalf("read token: %d %s", code, body)
	}
	code, body = s.do("GET", "/v1/events/t-acme", contentReader, "", nil)
	if code != 200 || !strings.Contains(string(body), `"decrypted_content":{"prompt":"MARKER-PLAINTEXT-4711"}`) {
		t.Fatalf("read_content token: %d %s", code, body)
	}
	if code, _ := s.do("GET", "/v1/events/t-globex", contentReader, "", nil); code != 404 {
		t.Fatalf("another tenant's event: %d, want 404", code)
	}
	code, body = s.do("GET", "/v1/events", reader, "", nil)
	if code != 200 || strings.Contains(string(body), "globex") || !strings.Contains(string(body), "t-acme") {
		t.Fatalf("query with a tenant-scoped token: %d %s", code, body)
	}
	if code, _ := s.do("GET", "/v1/events", ingest, "", nil); code != 403 {
		t.Fatalf("ingest token querying: %d, want 403", code)
	}

	// Minting: never more than the minter holds.
	for _, req := range []string{
		`{"name":"x","roles":["read"],"tenants":["*"]}`,
		`{"name":"x","roles":["read"],"tenants":["globex"]}`,
		`{"name":"x","roles":["audit"],"tenants":["acme"]}`,
	} {
		if code, _, _ := mint(t, s, subAdmin, req); code != 403 {
			t.Errorf("tenant admin minting %s: %d, want 403", req, code)
		}
	}
	if code, _, _ := mint(t, s, subAdmin, `{"name":"x","roles":["read"],"tenants":["acme"]}`); code != 201 {
		t.Errorf("tenant admin minting within its scope: %d", code)
	}

	// Listing never shows secrets; revoking takes effect at once.
	code, body = s.do("GET", "/v1/tokens", adminToken, "", nil)
	if code != 200 || strings.Contains(string(body), ingest[len(ingest)-20:]) || strings.Contains(string(body), `"hash"`) {
		t.Fatalf("token list: %d %s", code, body)
	}
	if code, _ := s.do("DELETE", "/v1/tokens/"+subID, adminToken, "", nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := s.do("GET", "/v1/events", subAdmin, "", nil); code != 401 {
		t.Fatalf("revoked token: %d, want 401", code)
	}
	s.stop()

	// The content marker is nowhere in the log's files in plaintext.
	filepath.Walk(filepath.Join(s.data, "log"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte("MARKER-PLAINTEXT-4711")) {
				t.Errorf("%s holds event content in plaintext", p)
			}
		}
		return nil
	})
}

// TestPushbackAnswers503 fills a tiny queue: the overflow gets 503 with
// Retry-After, and every request that got 200 is stored.
func TestPushbackAnswers503(t *testing.T) {
	s := startServer(t, t.TempDir(), "--config", writeConfig(t, "ledger:\n  max_pending: 1\n"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	stored := map[string]bool{}
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				id := string(rune('a'+w)) + "-" + strings.Repeat("x", i)
				req, _ := http.NewRequest("POST", s.url+"/v1/events", strings.NewReader(`{"type":"a.b","id":"`+id+`"}`))
				req.Header.Set("Authorization", "Bearer "+adminToken)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				if resp.StatusCode == 200 {
					stored[id] = true
				} else if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "" {
					t.Error("503 without Retry-After")
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if statuses[503] == 0 || statuses[200] == 0 || statuses[200]+statuses[503] != 16*30 {
		t.Fatalf("statuses %v; want some 200 and some 503 only", statuses)
	}
	if got := s.size(); got != uint64(len(stored)) {
		t.Fatalf("log has %d records, %d were acknowledged", got, len(stored))
	}
}
