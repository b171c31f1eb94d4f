package client

import (
	"testing"
	"time"
)

// FuzzRetryAfter: a Retry-After header comes from the server (or anything
// between). Whatever it says, the wait it yields is never negative, and
// the backoff after it is never shorter than the server asked nor negative.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "120", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		ra := retryAfter(h)
		if ra < 0 {
			t.Fatalf("retryAfter(%q) = %v", h, ra)
		}
		b := backoff{min: DefaultMinBackoff, max: DefaultMaxBackoff}
		d := b.next(&APIError{Status: 503, RetryAfter: ra})
		if d < 0 || d < ra || d < time.Duration(0) {
			t.Fatalf("Retry-After %q (%v): backoff %v", h, ra, d)
		}
	})
}
