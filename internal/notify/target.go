package notify

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// maxBatch is the most alerts sent in one request, as Prometheus does.
const maxBatch = 64

// maxRetryAfter caps how long a Retry-After header can hold a target's
// deliveries back, so that a wrong header cannot silence alerts for days.
const maxRetryAfter = 10 * time.Minute

// TargetStatus is what an operator needs to know about one target.
type TargetStatus struct {
	// Name is the webhook's name, or the Alertmanager's URL (any password
	// in it replaced by "xxxxx").
	Name string `json:"name"`
	// Kind is "alertmanager" or "webhook".
	Kind string `json:"kind"`
	// Pending counts alerts waiting to be delivered.
	Pending int `json:"pending"`
	// Delivered counts requests the target accepted.
	Delivered uint64 `json:"delivered"`
	// Failed counts requests that failed (each retry counts).
	Failed uint64 `json:"failed"`
	// Dropped counts alerts given up: dropped from a full queue, or
	// rejected by the target as invalid.
	Dropped uint64 `json:"dropped"`
	// LastSuccess is when the target last accepted a request.
	LastSuccess time.Time `json:"last_success,omitzero"`
	// LastError is when a request last failed, and LastErrorMessage why.
	LastError        time.Time `json:"last_error,omitzero"`
	LastErrorMessage string    `json:"last_error_message,omitempty"`
}

// target is one destination with its own queue and worker. Alerts wait in
// the queue until a request carrying them succeeds, so a target that is
// down gets them when it comes back.
type target struct {
	name   string
	kind   string
	resend bool // send firing alerts again every resend interval
	// timeout bounds one request.
	timeout time.Duration
	// request builds the request that delivers alerts.
	request func(ctx context.Context, alerts []Alert) (*http.Request, error)
	// together reports whether b may travel in the same request as a.
	together func(a, b Alert) bool
	limit    int
	wake     chan struct{}

	mu     sync.Mutex
	queue  *list.List               // of *queued, oldest first
	byFP   map[string]*list.Element // the queued alert with that fingerprint
	seq    uint64
	status TargetStatus
}

type queued struct {
	alert Alert
	fp    string
	seq   uint64 // changes when a newer state replaces the alert
}

func newTarget(name, kind string, limit int) *target {
	return &target{name: name, kind: kind, limit: limit, wake: make(chan struct{}, 1),
		queue: list.New(), byFP: map[string]*list.Element{},
		status: TargetStatus{Name: name, Kind: kind}}
}

// enqueue adds a to the queue, replacing a queued alert with the same
// fingerprint, or dropping the oldest when the queue is full. It never
// blocks on delivery.
func (t *target) enqueue(m *metrics, a Alert, fp string) {
	t.mu.Lock()
	t.seq++
	if e, ok := t.byFP[fp]; ok {
		q := e.Value.(*queued)
		q.alert, q.seq = a, t.seq
	} else {
		if t.queue.Len() >= t.limit {
			oldest := t.queue.Front()
			delete(t.byFP, oldest.Value.(*queued).fp)
			t.queue.Remove(oldest)
			t.status.Dropped++
			m.dropped.WithLabelValues(t.name, reasonQueueFull).Inc()
		}
		t.byFP[fp] = t.queue.PushBack(&queued{alert: a, fp: fp, seq: t.seq})
	}
	m.queue.WithLabelValues(t.name).Set(float64(t.queue.Len()))
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// next returns copies of the oldest queued alerts that may travel together;
// they stay queued until done removes them.
func (t *target) next() []queued {
	t.mu.Lock()
	defer t.mu.Unlock()
	var batch []queued
	for e := t.queue.Front(); e != nil && len(batch) < maxBatch; e = e.Next() {
		q := *e.Value.(*queued)
		if len(batch) > 0 && !t.together(batch[0].alert, q.alert) {
			continue
		}
		batch = append(batch, q)
	}
	return batch
}

// done removes the batch's alerts from the queue, except those replaced by
// a newer state while the batch was in flight.
func (t *target) done(m *metrics, batch []queued) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, q := range batch {
		if e, ok := t.byFP[q.fp]; ok && e.Value.(*queued).seq == q.seq {
			delete(t.byFP, q.fp)
			t.queue.Remove(e)
		}
	}
	m.queue.WithLabelValues(t.name).Set(float64(t.queue.Len()))
}

func (t *target) snapshot() TargetStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.status
	s.Pending = t.queue.Len()
	return s
}

// deliverLoop delivers t's queue until ctx is done, retrying failures with
// exponential backoff and jitter, or after the target's Retry-After.
func (n *Notifier) deliverLoop(ctx context.Context, t *target) {
	failures := 0
	for {
		batch := t.next()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-t.wake:
				continue
			}
		}
		alerts := make([]Alert, len(batch))
		for i, q := range batch {
			alerts[i] = q.alert
		}
		retryAfter, err := n.post(ctx, t, alerts)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if failures > 0 {
				n.log.Info("alert target reachable again", "target", t.name, "kind", t.kind, "failed_attempts", failures)
			}
			failures = 0
			t.done(n.metrics, batch)
			t.delivered(n.metrics)
			continue
		}
		var rejected *rejectedError
		if errors.As(err, &rejected) {
			// Sending the same alerts again would be refused again.
			n.log.Error("alert target rejected alerts; they are dropped", "target", t.name, "kind", t.kind, "alerts", len(batch), "err", err)
			t.failed(n.metrics, err, len(batch))
			t.done(n.metrics, batch)
			failures = 0 // the target answered: it is up
			continue
		}
		t.failed(n.metrics, err, 0)
		delay := max(backoff(failures, n.cfg.MinBackoff, n.cfg.MaxBackoff), min(retryAfter, maxRetryAfter))
		failures++
		n.log.Warn("couldn't deliver alerts; will retry", "target", t.name, "kind", t.kind, "alerts", len(batch),
			"attempt", failures, "retry_in", delay.String(), "err", err)
		if !n.wait(ctx, delay) {
			return
		}
	}
}

// delivered records a request the target accepted.
func (t *target) delivered(m *metrics) {
	m.deliveries.WithLabelValues(t.name, resultDelivered).Inc()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.status.Delivered++
	t.status.LastSuccess = time.Now()
}

// failed records a failed request, and the alerts dropped because the
// target rejected them.
func (t *target) failed(m *metrics, err error, dropped int) {
	m.deliveries.WithLabelValues(t.name, resultFailed).Inc()
	if dropped > 0 {
		m.dropped.WithLabelValues(t.name, reasonRejected).Add(float64(dropped))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.status.Failed++
	t.status.Dropped += uint64(dropped)
	t.status.LastError, t.status.LastErrorMessage = time.Now(), err.Error()
}

// backoff returns the wait after the given number of consecutive failures
// before this one: min doubled each time up to max, with jitter that keeps
// it between half and all of that, so that many aitrail nodes do not retry
// in step.
func backoff(failures int, lo, hi time.Duration) time.Duration {
	d := hi
	if failures < 32 {
		d = min(lo<<failures, hi)
	}
	return d/2 + rand.N(d/2+1)
}

// rejectedError is a refusal that retrying will not change (a 4xx other
// than 408 and 429).
type rejectedError struct{ status string }

func (e *rejectedError) Error() string { return "target rejected the alerts: " + e.status }

// post sends one request. It returns the delay the target asked for in a
// Retry-After header, if any. Errors never contain the target's URL.
func (n *Notifier) post(ctx context.Context, t *target, alerts []Alert) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := t.request(ctx, alerts)
	if err != nil {
		return 0, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a secret
		}
		return 0, fmt.Errorf("couldn't send the request: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return 0, nil
	case c == http.StatusTooManyRequests || c == http.StatusRequestTimeout || c >= 500:
		return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), fmt.Errorf("target answered %s", resp.Status)
	default:
		return 0, &rejectedError{resp.Status}
	}
}

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if at, err := http.ParseTime(h); err == nil && at.After(now) {
		return at.Sub(now)
	}
	return 0
}
