package httpapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/aitrail/aitrail/internal/event"
)

// fuzzAPI is a test API for fuzzing whole requests: bodies are bounded to
// 1 MiB so that the limits are reached too.
func fuzzAPI(f *testing.F) *testAPI {
	return newTestAPIWith(f, func(s *Server) { s.MaxBodyBytes = 1 << 20 })
}

// send posts body to path with the root token, the media type and, with
// encoding "gzip", the body compressed ("gzip-raw": the header alone).
func (api *testAPI) send(t *testing.T, path, mediaType, encoding string, body []byte) (int, []byte) {
	t.Helper()
	if !httpguts.ValidHeaderFieldValue(mediaType) {
		t.Skip("not a header value a client can send")
	}
	if encoding == "gzip" {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(body)
		zw.Close()
		body = buf.Bytes()
	}
	req, err := http.NewRequest("POST", api.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer root-token")
	if mediaType != "" {
		req.Header.Set("Content-Type", mediaType)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", strings.TrimSuffix(encoding, "-raw"))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

// records is how many records the test ledger holds.
func (api *testAPI) records() uint64 {
	api.ledger.mu.Lock()
	defer api.ledger.mu.Unlock()
	return api.ledger.n
}

// checkRefusal fails unless a refusal is a 4xx with the JSON error body and
// nothing was appended.
func (api *testAPI) checkRefusal(t *testing.T, code int, answer []byte, before uint64) {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if code/100 != 4 || json.Unmarshal(answer, &e) != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("answer %d %q; want 2xx, or a 4xx with the JSON error", code, answer)
	}
	if n := api.records(); n != before {
		t.Fatalf("refused with %d %s, but %d records were appended", code, answer, n-before)
	}
}

var fuzzEncodings = []string{"", "gzip", "gzip-raw", "br"}

// FuzzIngestRequest sends whole POST /v1/events requests, in every media
// type and encoding: each is either stored whole, each result naming its
// event's record, or refused with a 4xx and nothing stored.
func FuzzIngestRequest(f *testing.F) {
	api := fuzzAPI(f)
	one := `{"id":"e1","type":"api.call","tenant":"acme","actor":{"id":"u-1","type":"user"},"outcome":"success","content":{"prompt":"hi"}}`
	for _, s := range []struct {
		mediaType string
		enc       uint8
		body      string
	}{
		{"application/json", 0, one},
		{"application/json", 1, `{"events":[` + one + `,{"type":"ai.inference","tenant":"t","model":{"name":"m"}}]}`},
		{"application/x-ndjson; charset=utf-8", 0, one + "\r\n\n" + `{"type":"data.delete","tenant":"x","resource":{"type":"file","id":"a"}}` + "\n"},
		{"application/x-ndjson", 1, `{"type":"api.call"}` + "\n" + one},
		{"application/json", 2, one},
		{"application/json", 3, one},
		{"text/plain", 0, one},
		{"application/json", 0, `{"events":[]}`},
		{"application/json", 0, `{"type":"api.call","tenant":"../etc","attributes":{"a":[[[[[[1]]]]]]}}`},
		{"application/json", 0, `{"type":"alert.fired","tenant":"acme"}`},
		{"application/json", 0, "{\"type\":\"api.call\",\"tenant\":\"caf\xe9\"}"},
	} {
		f.Add(s.mediaType, s.enc, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, mediaType string, enc uint8, body []byte) {
		before := api.records()
		code, answer := api.send(t, "/v1/events", mediaType, fuzzEncodings[int(enc)%len(fuzzEncodings)], body)
		if code != http.StatusOK {
			api.checkRefusal(t, code, answer, before)
			return
		}
		var receipt struct {
			Checkpoint string
			Results    []struct {
				ID        string
				Index     uint64
				Duplicate bool
			}
		}
		if err := json.Unmarshal(answer, &receipt); err != nil || receipt.Checkpoint == "" || len(receipt.Results) == 0 {
			t.Fatalf("200 with %q", answer)
		}
		fresh := uint64(0)
		api.ledger.mu.Lock()
		defer api.ledger.mu.Unlock()
		for _, res := range receipt.Results {
			if !res.Duplicate {
				fresh++
			}
			if res.Index >= api.ledger.n {
				t.Fatalf("result %+v beyond the log's %d records", res, api.ledger.n)
			}
			var rec event.Event
			if err := json.Unmarshal(api.ledger.records[res.Index], &rec); err != nil || rec.ID != res.ID {
				t.Fatalf("result %+v names record %s (%v)", res, api.ledger.records[res.Index], err)
			}
		}
		if api.ledger.n-before != fresh {
			t.Fatalf("%d records appended for %d new results", api.ledger.n-before, fresh)
		}
	})
}

// FuzzTokenRequest sends whole POST /v1/tokens bodies: each mints a token
// and records it, or is refused with a 4xx, minting and recording nothing.
func FuzzTokenRequest(f *testing.F) {
	api := fuzzAPI(f)
	for _, s := range []string{
		`{"name":"chat-backend","roles":["ingest"],"tenants":["acme"]}`,
		`{"name":"ops","roles":["read","audit"],"tenants":["*"]}`,
		`{"name":"x","roles":["root"],"tenants":["acme"]}`,
		`{"name":"x","roles":["read"],"tenants":["../a"]}`,
		`{"name":"x","roles":["read"],"tenants":["a"],"name":"y"}`,
		`{"name":"x","roles":"read"}`,
		`null`,
	} {
		f.Add("application/json", uint8(0), []byte(s))
	}
	tokens := func(t *testing.T) int {
		toks, err := api.auth.List(context.Background(), api.root)
		if err != nil {
			t.Fatal(err)
		}
		return len(toks)
	}
	f.Fuzz(func(t *testing.T, mediaType string, enc uint8, body []byte) {
		before, had := api.records(), tokens(t)
		code, answer := api.send(t, "/v1/tokens", mediaType, fuzzEncodings[int(enc)%len(fuzzEncodings)], body)
		if code != http.StatusCreated {
			api.checkRefusal(t, code, answer, before)
			if n := tokens(t); n != had {
				t.Fatalf("refused with %d %s, but there are %d tokens (were %d)", code, answer, n, had)
			}
			return
		}
		var tok struct{ ID, Token string }
		if json.Unmarshal(answer, &tok) != nil || tok.ID == "" || tok.Token == "" {
			t.Fatalf("201 with %q", answer)
		}
		if n := tokens(t); n != had+1 || api.records() != before+1 {
			t.Fatalf("minted: %d tokens (were %d), %d records appended; want one of each", n, had, api.records()-before)
		}
	})
}

// FuzzAckRequest sends whole POST /v1/alerts/{id}/ack bodies: each
// appends one alert.acknowledged record, or is refused with a 4xx and
// appends nothing.
func FuzzAckRequest(f *testing.F) {
	api := fuzzAPI(f)
	_, err := api.pl.Append(context.Background(), system, []event.Event{{Type: "alert.fired", Tenant: "acme",
		Actor:      &event.Actor{ID: "aitrail-detector", Type: "system"},
		Resource:   &event.Resource{Type: "alert", ID: "a-1"},
		Attributes: map[string]any{"alert.rule": "denied-burst"}}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{``, `{}`, `{"note":"looking into it"}`, `{"tenant":"acme","note":""}`,
		`{"tenant":"globex"}`, `{"note":"a"} {}`, `{"Note":"a"}`} {
		f.Add("application/json", uint8(0), []byte(s))
	}
	f.Fuzz(func(t *testing.T, mediaType string, enc uint8, body []byte) {
		before := api.records()
		code, answer := api.send(t, "/v1/alerts/a-1/ack", mediaType, fuzzEncodings[int(enc)%len(fuzzEncodings)], body)
		if code != http.StatusOK {
			api.checkRefusal(t, code, answer, before)
			return
		}
		if n := api.records(); n != before+1 {
			t.Fatalf("acknowledged with %s, %d records appended; want one", answer, n-before)
		}
	})
}
