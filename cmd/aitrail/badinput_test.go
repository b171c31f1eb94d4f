package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// TestBadInputChangesNothing sends the real server malformed, oversized,
// mistyped, wrongly encoded and wrongly authorised requests. Each gets the
// JSON error body with the right 4xx status, nothing is stored, and the
// server stays up.
func TestBadInputChangesNothing(t *testing.T) {
	// The long access window keeps the records of refused requests (one per
	// source and window, see TestReadsAreRecorded) out of the log's size.
	s := startServer(t, t.TempDir(), "--config", writeConfig(t, "access_window: 1h\nlimits:\n  max_body_bytes: 1048576\n  max_content_bytes: 4096\n"))
	s.post(map[string]any{"type": "admin.change", "id": "seed"})
	code, body := s.do("POST", "/v1/tokens", adminToken, "application/json",
		[]byte(`{"name":"reader","roles":["read"],"tenants":["acme"]}`))
	if code != http.StatusCreated {
		t.Fatalf("creating a token: %d %s", code, body)
	}
	var tok struct{ Token string }
	json.Unmarshal(body, &tok)
	before := s.settledSize() // the seed, the token's creation and its alert

	deep := strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)
	valid := `{"type":"ai.inference"}`
	const j, nd = "application/json", "application/x-ndjson"
	for _, tc := range []struct {
		name, method, path, token, ctype string
		body                             []byte
		hdr                              []string
		status                           int
		code                             string
	}{
		{"truncated JSON", "POST", "/v1/events", adminToken, j, []byte(`{"type":"ai.inf`), nil, 400, "invalid_event"},
		{"wrong type for type", "POST", "/v1/events", adminToken, j, []byte(`{"type":42}`), nil, 400, "invalid_event"},
		{"wrong type for actor", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","actor":"bob"}`), nil, 400, "invalid_event"},
		{"missing type", "POST", "/v1/events", adminToken, j, []byte(`{"id":"x"}`), nil, 400, "invalid_event"},
		{"forged erasure record", "POST", "/v1/events", adminToken, j, []byte(`{"type":"privacy.erasure","resource":{"type":"subject","id":"x"}}`), nil, 400, "invalid_event"},
		{"forged read record", "POST", "/v1/events", adminToken, j, []byte(`{"type":"log.access"}`), nil, 400, "invalid_event"},
		{"forged alert", "POST", "/v1/events", adminToken, j, []byte(`{"events":[{"type":"ai.inference"},{"type":"alert.fired"}]}`), nil, 400, "invalid_event"},
		{"unknown field", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","colour":"red"}`), nil, 400, "invalid_event"},
		{"invalid UTF-8", "POST", "/v1/events", adminToken, j, []byte("{\"type\":\"a.b\",\"action\":\"\xff\xfe\"}"), nil, 400, "invalid_event"},
		{"NUL in id", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","id":"a\u0000b"}`), nil, 400, "invalid_event"},
		{"deep nesting in content", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","content":` + deep + `}`), nil, 400, "invalid_event"},
		{"nested attribute", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","attributes":{"x":{"y":1}}}`), nil, 400, "invalid_event"},
		{"integer beyond 2^53", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","attributes":{"x":9007199254740993}}`), nil, 400, "invalid_event"},
		{"bad time", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","time":"yesterday"}`), nil, 400, "invalid_event"},
		{"bad ip", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","actor":{"ip":"999.1.1.1"}}`), nil, 400, "invalid_event"},
		{"trailing garbage", "POST", "/v1/events", adminToken, j, []byte(valid + `xyz`), nil, 400, "invalid_event"},
		{"empty batch", "POST", "/v1/events", adminToken, j, []byte(`{"events":[]}`), nil, 400, "invalid_event"},
		{"empty body", "POST", "/v1/events", adminToken, j, nil, nil, 400, "invalid_event"},
		{"batch with one bad event", "POST", "/v1/events", adminToken, j, []byte(`{"events":[` + valid + `,{"type":"BAD"},` + valid + `]}`), nil, 400, "invalid_event"},
		{"ndjson with one bad line", "POST", "/v1/events", adminToken, nd, []byte(valid + "\n{\"type\":\n" + valid + "\n"), nil, 400, "invalid_event"},
		{"tenant path trick ../", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","tenant":"../etc"}`), nil, 400, "invalid_event"},
		{"tenant path trick slash", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","tenant":"a/b"}`), nil, 400, "invalid_event"},
		{"tenant upper case", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","tenant":"ACME"}`), nil, 400, "invalid_event"},
		{"tenant encoded dots", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","tenant":"%2e%2e"}`), nil, 400, "invalid_event"},
		{"content over limit", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","content":"` + strings.Repeat("x", 5000) + `"}`), nil, 413, "too_large"},
		{"metadata over one record", "POST", "/v1/events", adminToken, j, []byte(`{"type":"a.b","attributes":{` + manyAttrs(70) + `}}`), nil, 413, "too_large"},
		{"body over limit", "POST", "/v1/events", adminToken, nd, bytes.Repeat([]byte(valid+"\n"), 50000), nil, 413, "too_large"},
		{"gzip bomb", "POST", "/v1/events", adminToken, j, gz(bytes.Repeat([]byte(" "), 20<<20)), []string{"Content-Encoding", "gzip"}, 413, "too_large"},
		{"not gzip", "POST", "/v1/events", adminToken, j, []byte(valid), []string{"Content-Encoding", "gzip"}, 400, "invalid_encoding"},
		{"unknown encoding", "POST", "/v1/events", adminToken, j, []byte(valid), []string{"Content-Encoding", "br"}, 415, "unsupported_encoding"},
		{"bad media type", "POST", "/v1/events", adminToken, "text/plain", []byte(valid), nil, 415, "unsupported_media_type"},
		{"no media type", "POST", "/v1/events", adminToken, "", []byte(valid), nil, 415, "unsupported_media_type"},
		{"no token", "POST", "/v1/events", "", j, []byte(valid), nil, 401, "unauthenticated"},
		{"wrong token", "POST", "/v1/events", "atr_0123456789abcdef_nope", j, []byte(valid), nil, 401, "unauthenticated"},
		{"read token cannot ingest", "POST", "/v1/events", tok.Token, j, []byte(valid), nil, 403, "forbidden"},
		{"read token cannot mint", "POST", "/v1/tokens", tok.Token, j, []byte(`{"name":"x","roles":["admin"],"tenants":["*"]}`), nil, 403, "forbidden"},
		{"read token cannot read bundles", "GET", "/log/tile/entries/000.p/1", tok.Token, "", nil, nil, 403, "forbidden"},
		{"bundles need a token", "GET", "/log/tile/entries/000.p/1", "", "", nil, nil, 401, "unauthenticated"},
		{"other tenant's record is not found", "GET", "/v1/events/seed", tok.Token, "", nil, nil, 404, "not_found"},
		{"bad limit", "GET", "/v1/events?limit=0", adminToken, "", nil, nil, 400, "invalid_query"},
		{"limit too high", "GET", "/v1/events?limit=1001", adminToken, "", nil, nil, 400, "invalid_query"},
		{"bad from", "GET", "/v1/events?from=monday", adminToken, "", nil, nil, 400, "invalid_query"},
		{"from after a to of the first instant", "GET", "/v1/events?from=2025-01-01T00:00:00Z&to=0001-01-01T00:00:00Z", adminToken, "", nil, nil, 400, "invalid_query"},
		{"from with an offset of 24 hours", "GET", "/v1/events?from=2025-01-02T15:04:05%2B24:00", adminToken, "", nil, nil, 400, "invalid_query"},
		{"event time with an offset of 24 hours", "POST", "/v1/events", adminToken, "application/json", []byte(`{"type":"ai.inference","time":"2025-01-02T15:04:05+24:00"}`), nil, 400, "invalid_event"},
		{"unknown parameter", "GET", "/v1/events?colour=red", adminToken, "", nil, nil, 400, "invalid_query"},
		{"path with an empty segment", "GET", "//v1/events", adminToken, "", nil, nil, 404, "not_found"},
		{"path with an empty segment inside", "POST", "/v1//events", adminToken, j, []byte(valid), nil, 404, "not_found"},
		{"path with a dot-dot segment", "GET", "/log/tile/0/../entries/000", adminToken, "", nil, nil, 404, "not_found"},
		{"erasure in a tenant that cannot exist", "POST", "/v1/subjects/ACME/alice/erase", adminToken, "", nil, nil, 400, "invalid_request"},
		{"tile whose index overflows", "GET", "/log/tile/0/x072/x057/x594/x037/x927/935", "", "", nil, nil, 404, "not_found"},
		{"partial tile whose index overflows", "GET", "/log/tile/0/x072/x057/x594/x037/x927/935.p/5", "", "", nil, nil, 404, "not_found"},
		{"query in a tenant that cannot exist", "GET", "/v1/events?tenant=ACME", adminToken, "", nil, nil, 400, "invalid_query"},
		{"get in a tenant that cannot exist", "GET", "/v1/events/seed?tenant=Bad%20Tenant", adminToken, "", nil, nil, 400, "invalid_query"},
		{"get with a repeated parameter", "GET", "/v1/events/seed?proof=true&proof=maybe", adminToken, "", nil, nil, 400, "invalid_query"},
		{"proof with an unknown parameter", "GET", "/v1/proof/inclusion?index=0&foo=2", adminToken, "", nil, nil, 400, "invalid_query"},
		{"proof with a repeated parameter", "GET", "/v1/proof/consistency?from=0&to=1&to=1", adminToken, "", nil, nil, 400, "invalid_query"},
		{"models in a tenant that cannot exist", "GET", "/v1/models?tenant=-x", adminToken, "", nil, nil, 400, "invalid_query"},
		{"models with an empty name", "GET", "/v1/models/", adminToken, "", nil, nil, 404, "not_found"},
		{"alerts in a tenant that cannot exist", "GET", "/v1/alerts?tenant=A", adminToken, "", nil, nil, 400, "invalid_query"},
		{"forged cursor", "GET", "/v1/events?cursor=AAAAAAAAAAAAAAAA", adminToken, "", nil, nil, 400, "invalid_query"},
		{"bad order", "GET", "/v1/events?order=sideways", adminToken, "", nil, nil, 400, "invalid_query"},
		{"bad proof flag", "GET", "/v1/events/seed?proof=maybe", adminToken, "", nil, nil, 400, "invalid_query"},
		{"proof beyond the log", "GET", "/v1/proof/inclusion?index=5&size=9", adminToken, "", nil, nil, 400, "invalid_query"},
		{"proof index not a number", "GET", "/v1/proof/inclusion?index=x", adminToken, "", nil, nil, 400, "invalid_query"},
		{"proof index with a leading zero", "GET", "/v1/proof/inclusion?index=01&size=2", adminToken, "", nil, nil, 400, "invalid_query"},
		{"proof size given empty", "GET", "/v1/proof/inclusion?index=0&size=", adminToken, "", nil, nil, 400, "invalid_query"},
		{"consistency size with a sign", "GET", "/v1/proof/consistency?from=1&to=%2B2", adminToken, "", nil, nil, 400, "invalid_query"},
		{"bad tile path", "GET", "/log/tile/0/1", "", "", nil, nil, 404, "not_found"},
		{"tile path traversal", "GET", "/log/tile/../../catalog.db", "", "", nil, nil, 404, "not_found"},
		{"unknown endpoint", "GET", "/v1/nothing", adminToken, "", nil, nil, 404, "not_found"},
		{"malformed token request", "POST", "/v1/tokens", adminToken, j, []byte(`{"name":`), nil, 400, "invalid_request"},
		{"token with unknown role", "POST", "/v1/tokens", adminToken, j, []byte(`{"name":"x","roles":["god"],"tenants":["*"]}`), nil, 400, "invalid_request"},
		{"token with bad tenant", "POST", "/v1/tokens", adminToken, j, []byte(`{"name":"x","roles":["read"],"tenants":["../x"]}`), nil, 400, "invalid_request"},
		{"delete unknown token", "DELETE", "/v1/tokens/0123456789abcdef", adminToken, "", nil, nil, 404, "not_found"},
		{"delete root token", "DELETE", "/v1/tokens/root", adminToken, "", nil, nil, 409, "conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.size()
			code, body := s.do(tc.method, tc.path, tc.token, tc.ctype, tc.body, tc.hdr...)
			var e struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" {
				t.Fatalf("status %d, body %.200q is not the JSON error body", code, body)
			}
			if code != tc.status || e.Error.Code != tc.code {
				t.Fatalf("got %d %s (%s), want %d %s", code, e.Error.Code, e.Error.Message, tc.status, tc.code)
			}
			if after := s.size(); after != before {
				t.Fatalf("log grew from %d to %d records", before, after)
			}
		})
	}
	// The batch error names the bad event by position.
	_, body = s.do("POST", "/v1/events", adminToken, j, []byte(`{"events":[`+valid+`,{"type":"BAD"}]}`))
	if !strings.Contains(string(body), `"index":1`) || !strings.Contains(string(body), "events[1].type") {
		t.Fatalf("batch error does not name event 1: %s", body)
	}
	// An NDJSON body's errors name the line, the rules' as the syntax's.
	_, body = s.do("POST", "/v1/events", adminToken, nd, []byte(valid+"\r\n\r\n{\"type\":\"BAD\"}\r\n"))
	if !strings.Contains(string(body), `"index":1`) || !strings.Contains(string(body), `"line":3`) {
		t.Fatalf("NDJSON error does not name event 1 on line 3: %s", body)
	}
	if code, _ := s.do("GET", "/healthz", "", "", nil); code != 200 {
		t.Fatal("server is not healthy after bad input")
	}
	if n := s.size(); n != before {
		t.Fatalf("log has %d records, want %d: bad input stored something", n, before)
	}
	// A read of alerts with a long filter is answered (and recorded, the
	// filter cut short).
	if code, body := s.do("GET", "/v1/alerts?rule="+strings.Repeat("a", 5000), adminToken, "", nil); code != 200 {
		t.Fatalf("alerts with a long filter: %d %s", code, body)
	}
}

func manyAttrs(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + strings.Repeat("x", 3) + string(rune('a'+i%26)) + strings.Repeat("y", i) + `":"` + strings.Repeat("v", 1000) + `"`)
	}
	return b.String()
}
