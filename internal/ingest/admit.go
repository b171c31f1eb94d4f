package ingest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/aitrail/aitrail/internal/ledger"
)

// LagLimit holds appends back while a follower of the log (the query index)
// is more than Max records behind, so that under sustained load ingest runs
// at the rate the follower keeps up with instead of leaving it ever further
// behind. Its Admit is a Pipeline.Admit.
//
// The limit applies only once the follower has been within it: a follower
// rebuilding from the start of a long log (a new index) does not hold
// ingest back while it catches up.
type LagLimit struct {
	// Lag returns how many records the follower is behind.
	Lag func() uint64
	// Max is the most records it may be behind; 0 means no limit.
	Max uint64
	// Wait is the longest an append waits for the follower before it is
	// refused with ledger.ErrPushback (default 5s).
	Wait time.Duration
	// OnWait, if set, is called once for every append that had to wait.
	OnWait func()

	caughtUp atomic.Bool
}

// lagPoll is how often a waiting append looks at the lag again.
const lagPoll = 2 * time.Millisecond

// BehindError is why an append was held back and refused: the followers
// of the log (the query index, the detector) stayed further behind than
// the limit allows. It wraps ledger.ErrPushback.
type BehindError struct {
	Lag, Max uint64
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("the log's followers (query index, detector) are %d records behind, more than index.max_lag (%d)", e.Lag, e.Max)
}

func (e *BehindError) Unwrap() error { return ledger.ErrPushback }

// Admit returns nil at once if the follower is within Max, else when it
// comes back within Max; a *BehindError (ledger.ErrPushback) if that takes
// longer than Wait, or ctx's error if ctx ends first.
func (l *LagLimit) Admit(ctx context.Context) error {
	if l.Max == 0 {
		return nil
	}
	if l.Lag() <= l.Max {
		l.caughtUp.Store(true)
		return nil
	}
	if !l.caughtUp.Load() {
		return nil
	}
	if l.OnWait != nil {
		l.OnWait()
	}
	wait := l.Wait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(lagPoll)
	defer tick.Stop()
	for l.Lag() > l.Max {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return &BehindError{Lag: l.Lag(), Max: l.Max}
		case <-tick.C:
		}
	}
	return nil
}
