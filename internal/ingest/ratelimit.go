package ingest

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/authz"
)

// TokenRate bounds the events each token may append: a token bucket per
// token id that holds the token's burst and fills at its rate, its own
// limit's (authz.Limit) or else Rate and Burst. The server's own records,
// and the outcomes of proxied calls, are not counted (Pipeline.Rate). A
// request whose events the bucket does not hold is refused with 429
// rate_limited and a Retry-After of when it would, and takes nothing from
// the bucket, so that a producer that retries after the delay is taken.
type TokenRate struct {
	// Rate and Burst bound the tokens without a limit of their own
	// (authz.Limit): events a second, 0 for no bound, and how many at
	// once, at least the largest request, or that request is refused with
	// 413; 0 for the default burst.
	Rate  float64
	Burst int
	// MinBurst is the default burst, of Rate and of a token's own limit
	// that names none, if the rate does not give more: the largest request
	// (limits.max_batch_events).
	MinBurst int
	// OnRefuse, if set, is called with the token id of each refused
	// request and the events it held.
	OnRefuse func(tokenID string, events int)

	buckets sync.Map // token id → *rate.Limiter
}

// maxRetryAfter is the longest Retry-After a refusal names, in seconds.
const maxRetryAfter = 86400

// limitOf returns the rate and burst that bound p, and what sets them.
func (t *TokenRate) limitOf(p authz.Principal) (float64, int, string) {
	perSecond, burst, source := t.Rate, t.Burst, "limits.token_events_per_second, limits.token_burst_events"
	if l := p.Limit; l.EventsPerSecond > 0 {
		perSecond, burst, source = l.EventsPerSecond, l.BurstEvents, "the token's own limit"
	}
	if burst == 0 {
		// A second's worth, and at least the largest request.
		burst = max(t.MinBurst, int(math.Ceil(perSecond)))
	}
	return perSecond, burst, source
}

// take takes n events of p's bucket at now, or says why it cannot.
func (t *TokenRate) take(p authz.Principal, n int, now time.Time) error {
	if t == nil || n == 0 {
		return nil
	}
	perSecond, burst, source := t.limitOf(p)
	if perSecond <= 0 {
		return nil
	}
	b, ok := t.buckets.Load(p.TokenID)
	if !ok {
		b, _ = t.buckets.LoadOrStore(p.TokenID, rate.NewLimiter(rate.Limit(perSecond), burst))
	}
	if l := b.(*rate.Limiter); float64(l.Limit()) != perSecond || l.Burst() != burst {
		// Another limit than the bucket's (which tokens do not change):
		// a fresh bucket.
		b = rate.NewLimiter(rate.Limit(perSecond), burst)
		t.buckets.Store(p.TokenID, b)
	}
	r := b.(*rate.Limiter).ReserveN(now, n)
	if !r.OK() {
		return apierr.New(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("the request holds %d events, more than this token may append at once (%d: %s)", n, burst, source))
	}
	wait := r.DelayFrom(now)
	if wait == 0 {
		return nil
	}
	r.CancelAt(now)
	if t.OnRefuse != nil {
		t.OnRefuse(p.TokenID, n)
	}
	e := apierr.New(http.StatusTooManyRequests, "rate_limited",
		fmt.Sprintf("this token may append %s events a second, %d at once (%s); retry after the Retry-After delay",
			strconv.FormatFloat(perSecond, 'f', -1, 64), burst, source))
	// A day at most: at a rate of a few events a day the wait passes what
	// a time.Duration holds, and comes back negative.
	e.RetryAfter = maxRetryAfter
	if secs := math.Ceil(wait.Seconds()); secs > 0 && secs < maxRetryAfter {
		e.RetryAfter = int(secs)
	}
	return e
}
