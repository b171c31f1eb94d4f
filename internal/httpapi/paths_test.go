package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/aitrail/aitrail/internal/event"
)

// TestEveryIDCanBeReadBack: an id holding slashes or dots (URLs are
// common idempotency keys) is read back with GET /v1/events/{id} once
// percent-encoded; only a path written with empty, "." or ".." segments is
// refused as not canonical. The ids "." and ".." alone, which clients do
// not encode, are refused at ingest.
func TestEveryIDCanBeReadBack(t *testing.T) {
	api := newTestAPI(t)
	ids := []string{"https://example.com/req/1", "s3://bucket/key", "a//b", "a/./b", "a/..", "./a", "...",
		"a/b", "a%2Fb", "a?b#c", "é"}
	for _, id := range ids {
		if _, err := api.pl.Append(context.Background(), api.root, []event.Event{{ID: id, Type: "api.call", Tenant: "acme"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{".", ".."} {
		if _, err := api.pl.Append(context.Background(), api.root, []event.Event{{ID: id, Type: "api.call", Tenant: "acme"}}); err == nil {
			t.Errorf("id %q was accepted", id)
		}
	}
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", api.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer root-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			ID string `json:"id"`
		}
		data, _ := io.ReadAll(resp.Body)
		json.Unmarshal(data, &body)
		return resp.StatusCode, body.ID
	}
	for _, id := range ids {
		if code, got := get("/v1/events/" + url.PathEscape(id) + "?tenant=acme"); code != http.StatusOK || got != id {
			t.Errorf("id %q: %d, event %q", id, code, got)
		}
	}
	for _, path := range []string{"/v1/events/a/../b", "/v1//events", "/v1/events/./x"} {
		if code, _ := get(path); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
}
