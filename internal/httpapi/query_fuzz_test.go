package httpapi

import (
	"errors"
	"net/url"
	"testing"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/index"
)

// FuzzParseQuery: GET /v1/events parameters come straight from URLs. Every
// input is either a query or a 400 apiError, never a panic or another error.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "limit=10&order=desc", "type=ai.*&from=2025-01-01T00:00:00Z", "after=18446744073709551615",
		"limit=-1", "limit=1001", "colour=red", "q=%22AND%22", "tenant=a&tenant=b", "from=2025-13-01T00:00:00Z", "cursor=%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseQuery(v)
		if err != nil {
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != "invalid_query" || ae.Message == "" {
				t.Fatalf("parseQuery(%q) = %v; want a 400 invalid_query", raw, err)
			}
			return
		}
		if q.Limit < 0 || q.Limit > index.MaxLimit {
			t.Fatalf("parseQuery(%q) accepted limit %d", raw, q.Limit)
		}
	})
}
