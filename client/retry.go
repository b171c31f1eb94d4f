package client

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"
)

// Defaults of the retry policy shared by Recorder.Record and
// Recorder.RecordSync.
const (
	// DefaultMinBackoff is the wait before the first retry.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the wait between two attempts; a longer
	// Retry-After from the server is still honoured.
	DefaultMaxBackoff = 10 * time.Second
)

// permanent reports whether a failed POST /v1/events would fail again if
// sent unchanged: a 4xx answer other than 408 and 429, a successful
// answer that is not a receipt (ErrNotReceipt), or a redirect. Everything else —
// network errors, timeouts, pushback (429, 503) and other server errors —
// is worth retrying, which is safe because every event carries an id the
// server deduplicates on. Callers check their own context first.
func permanent(err error) bool {
	if errors.Is(err, ErrNotReceipt) || errors.Is(err, errRedirected) {
		return true
	}
	var ae *APIError
	return errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 &&
		ae.Status != http.StatusRequestTimeout && ae.Status != http.StatusTooManyRequests
}

// tooLarge reports whether err is the server refusing a request as too
// large (413).
func tooLarge(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusRequestEntityTooLarge
}

// backoff is the exponential backoff with jitter of one sender.
type backoff struct {
	min, max time.Duration
	attempt  int
}

// next returns how long to wait after err: a random duration between half
// and all of min·2^attempt (capped at max), and never less than the
// server's Retry-After.
func (b *backoff) next(err error) time.Duration {
	d := b.min << min(b.attempt, 20)
	if d > b.max || d <= 0 {
		d = b.max
	}
	b.attempt++
	d = d/2 + rand.N(d/2+1)
	var ae *APIError
	if errors.As(err, &ae) && ae.RetryAfter > d {
		// Spread the clients the server pushed back a little, so they do
		// not all come back in the same instant.
		d = ae.RetryAfter + rand.N(ae.RetryAfter/10+1)
	}
	return d
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// refusedEvents returns the positions of the events a permanent error
// names, or nil when it does not name events (then the whole request was
// refused).
func refusedEvents(err error, n int) []int {
	var ae *APIError
	if !errors.As(err, &ae) || len(ae.Details) == 0 {
		return nil
	}
	seen := map[int]bool{}
	var bad []int
	for _, d := range ae.Details {
		var p struct {
			Index *int `json:"index"`
		}
		if json.Unmarshal(d, &p) != nil || p.Index == nil || *p.Index < 0 || *p.Index >= n {
			return nil
		}
		if !seen[*p.Index] {
			seen[*p.Index] = true
			bad = append(bad, *p.Index)
		}
	}
	return bad
}
