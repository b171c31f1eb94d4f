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
// token id that holds Burst events and fills at Rate events a second. The
// server's own records, and the outcomes of proxied calls, are not counted
// (Pipeline.Rate). A request whose events the bucket
// does not hold is refused with 429 rate_limited and a Retry-After of when
// it would, and takes nothing from the bucket, so that a producer that
// retries after the delay is taken.
type TokenRate struct {
	Rate  float64 // events a second; 0 sets no bound
	Burst int     // at least the largest request, or that request is refused with 413
	// OnRefuse, if set, is called with the token id of each refused
	// request and the events it held.
	OnRefuse func(tokenID string, events int)

	buckets sync.Map // token id → *rate.Limiter
}

// take takes n events of p's bucket at now, or says why it cannot.
func (t *TokenRate) take(p authz.Principal, n int, now time.Time) error {
	if t == nil || t.Rate <= 0 || n == 0 {
		return nil
	}
	b, ok := t.buckets.Load(p.TokenID)
	if !ok {
		b, _ = t.buckets.LoadOrStore(p.TokenID, rate.NewLimiter(rate.Limit(t.Rate), t.Burst))
	}
	r := b.(*rate.Limiter).ReserveN(now, n)
	if !r.OK() {
		return apierr.New(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("the request holds %d events, more than a token may append at once (limits.token_burst_events: %d)", n, t.Burst))
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
		fmt.Sprintf("this token may append %s events a second, %d at once (limits.token_events_per_second, limits.token_burst_events); retry after the Retry-After delay",
			strconv.FormatFloat(t.Rate, 'f', -1, 64), t.Burst))
	e.RetryAfter = int(math.Ceil(wait.Seconds()))
	return e
}
