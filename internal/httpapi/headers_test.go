package httpapi

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// Every answer, success or error, carries nosniff and no-store once each,
// and JSON answers their content type.
func TestResponseHeaders(t *testing.T) {
	api := newTestAPI(t)
	srv := httptest.NewServer((&Server{Ledger: api.ledger, Index: api.idx, Ingest: api.pl, Auth: api.auth, MaxBodyBytes: 1 << 20}).Handler())
	defer srv.Close()
	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
	}{
		{"append", "POST", "/v1/events", "root-token", `{"id":"h-1","type":"api.call"}`, http.StatusOK},
		{"query", "GET", "/v1/events", "root-token", "", http.StatusOK},
		{"wrong token", "GET", "/v1/events", "nope", "", http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+tc.token)
		if tc.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.code)
		}
		for k, want := range map[string][]string{"X-Content-Type-Options": {"nosniff"}, "Cache-Control": {"no-store"},
			"Content-Type": {"application/json"}} {
			if got := resp.Header.Values(k); !slices.Equal(got, want) {
				t.Errorf("%s: %s %q, want %q", tc.name, k, got, want)
			}
		}
	}
}

// The header values every answer shares are never changed by one answer:
// a handler that adds to them (as the recording proxy does with the
// provider's headers) leaves the next answer's as they were.
func TestSharedHeaderValuesStay(t *testing.T) {
	h := securityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/add" {
			w.Header().Add("Cache-Control", "private")
			w.Header().Add("X-Content-Type-Options", "other")
		}
	}))
	for _, path := range []string{"/add", "/plain"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if path == "/plain" {
			if got := rec.Header().Values("Cache-Control"); !slices.Equal(got, []string{"no-store"}) {
				t.Errorf("after an answer added to it, Cache-Control is %q, want [no-store]", got)
			}
			if got := rec.Header().Values("X-Content-Type-Options"); !slices.Equal(got, []string{"nosniff"}) {
				t.Errorf("after an answer added to it, X-Content-Type-Options is %q, want [nosniff]", got)
			}
		}
	}
}
