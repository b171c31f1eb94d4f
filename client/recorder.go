package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Defaults of RecorderOptions.
const (
	// DefaultMaxBatchEvents is the most events sent in one request.
	DefaultMaxBatchEvents = 500
	// DefaultMaxBatchBytes is the most encoded bytes sent in one request
	// (a single larger event is sent alone).
	DefaultMaxBatchBytes = 4 << 20
	// DefaultMaxDelay is how long an event waits for others to fill its
	// batch before it is sent anyway.
	DefaultMaxDelay = 100 * time.Millisecond
	// DefaultMaxQueueEvents is the most events a Recorder holds, queued or
	// in flight.
	DefaultMaxQueueEvents = 10_000
	// DefaultMaxQueueBytes is the most encoded bytes a Recorder holds,
	// queued or in flight.
	DefaultMaxQueueBytes = 32 << 20
)

var (
	// ErrQueueFull is returned by Record when the queue is full and
	// RecorderOptions.RejectWhenFull is set. The event was not recorded.
	ErrQueueFull = errors.New("aitrail: recorder queue is full")
	// ErrClosed is returned by Record after Close. The event was not
	// recorded.
	ErrClosed = errors.New("aitrail: recorder is closed")
	// ErrEventTooLarge is returned by Record for an event whose encoding is
	// larger than the whole queue may hold.
	ErrEventTooLarge = errors.New("aitrail: event is larger than the recorder's queue")
)

// RecorderOptions tune a Recorder. The zero value gives the defaults above;
// a zero or negative number means its default.
type RecorderOptions struct {
	// MaxBatchEvents and MaxBatchBytes bound one request.
	MaxBatchEvents int
	MaxBatchBytes  int
	// MaxDelay is how long the first event of a batch waits for the batch
	// to fill before it is sent.
	MaxDelay time.Duration
	// MaxQueueEvents and MaxQueueBytes bound the memory a Recorder uses:
	// events count from Record until the server acknowledges or refuses
	// them.
	MaxQueueEvents int
	MaxQueueBytes  int
	// RejectWhenFull makes Record return ErrQueueFull at once when the
	// queue is full. By default Record blocks until there is room or its
	// context is done, so a server that is down slows the producer rather
	// than losing events.
	RejectWhenFull bool
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts to send a batch.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// OnError, if set, is told about every event that will not be stored:
	// rejected by Record (queue full, closed, too large, context done),
	// refused by the server with a permanent error (such as
	// 400 invalid_event or 403), still unsent when Close gave up, or not
	// recorded by HTTPMiddleware in Sync mode. err wraps an *APIError for a
	// refusal. Event content is never passed to it.
	// It is called from the Recorder's goroutines and must not block for
	// long or call the Recorder.
	OnError func(ids []string, err error)
}

// withDefaults is the options' one validation step.
func (o RecorderOptions) withDefaults() RecorderOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxBatchEvents, DefaultMaxBatchEvents)
	def(&o.MaxBatchBytes, DefaultMaxBatchBytes)
	def(&o.MaxQueueEvents, DefaultMaxQueueEvents)
	def(&o.MaxQueueBytes, DefaultMaxQueueBytes)
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	return o
}

// RecorderStats counts what a Recorder did since it was made.
type RecorderStats struct {
	// Queued is the number of events held now (waiting or in flight), and
	// QueuedBytes their encoded size.
	Queued      int
	QueuedBytes int
	// Sent counts events the server acknowledged (they are durable),
	// Duplicates those among them it already had (after a retry whose first
	// answer was lost, for example).
	Sent       uint64
	Duplicates uint64
	// Failed counts events accepted by Record that will never be stored:
	// refused by the server or abandoned by Close.
	Failed uint64
	// Rejected counts events Record refused (queue full, closed, too
	// large).
	Rejected uint64
	// Retries counts requests sent again after a network error, pushback
	// or server error.
	Retries uint64
}

// Recorder sends events to aitrail in the background: batched, retried with
// the same ids until the server acknowledges them, within bounded memory.
// Events are sent in the order Record accepted them, one request at a time.
// It is safe for concurrent use.
type Recorder struct {
	c    *Client
	opts RecorderOptions

	mu         sync.Mutex
	queue      []queued // queue[:inFlight] is being sent
	queueBytes int
	lastSeq    uint64 // seq of the newest event accepted
	doneSeq    uint64 // every event up to this seq is acknowledged or failed
	flushSeq   uint64 // send without waiting for MaxDelay up to this seq
	closed     bool
	waiters    []*flushWaiter
	// failed counts the queued events that failed, lastFailure is why the
	// last one did, and flushReported is how many of them a Flush has
	// reported.
	failed        uint64
	lastFailure   error
	flushReported uint64
	closeDone     chan struct{} // closed when the first Close has finished
	closeErr      error         // what it returned
	lastErr       error         // the sender's last error sending to the server, nil after a success
	maxEvents     int           // the most events a batch holds: MaxBatchEvents, or less once the server refused a batch as too large
	roomFreed     chan struct{} // closed and replaced whenever events leave
	stats         RecorderStats

	wake      chan struct{} // tells the sender something changed
	abandon   context.CancelFunc
	sendCtx   context.Context
	senderEnd chan struct{}
}

// queued is one accepted event.
type queued struct {
	seq  uint64
	id   string
	data []byte
	at   time.Time
}

// flushWaiter is a Flush waiting for the events up to seq to.
type flushWaiter struct {
	to   uint64
	done chan struct{}
}

// NewRecorder starts a Recorder that sends through c. Call Close to send
// what is left and stop it.
func NewRecorder(c *Client, opts RecorderOptions) *Recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{
		c:         c,
		opts:      opts.withDefaults(),
		roomFreed: make(chan struct{}),
		closeDone: make(chan struct{}),
		wake:      make(chan struct{}, 1),
		abandon:   cancel,
		sendCtx:   ctx,
		senderEnd: make(chan struct{}),
	}
	r.maxEvents = r.opts.MaxBatchEvents
	go r.send()
	return r
}

// Record queues e to be sent and returns without waiting for the server.
// An event without an ID is given a UUIDv7 first, so a retried request
// never stores it twice. When the queue is full, Record waits for room until
// ctx is done, or returns ErrQueueFull at once if RejectWhenFull is set.
// A nil error means only that the event is queued; Flush or Close tell when
// it is durable, and OnError if it never will be.
func (r *Recorder) Record(ctx context.Context, e Event) error {
	data, err := encodeEvent(&e)
	if err != nil {
		r.reject([]string{e.ID}, err)
		return err
	}
	if len(data) > r.opts.MaxQueueBytes {
		r.reject([]string{e.ID}, ErrEventTooLarge)
		return ErrEventTooLarge
	}
	r.mu.Lock()
	for {
		if r.closed {
			r.mu.Unlock()
			r.reject([]string{e.ID}, ErrClosed)
			return ErrClosed
		}
		if len(r.queue) < r.opts.MaxQueueEvents && r.queueBytes+len(data) <= r.opts.MaxQueueBytes {
			break
		}
		if r.opts.RejectWhenFull {
			r.mu.Unlock()
			r.reject([]string{e.ID}, ErrQueueFull)
			return ErrQueueFull
		}
		room := r.roomFreed
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			err := fmt.Errorf("couldn't queue event %s: %w", e.ID, ctx.Err())
			r.reject([]string{e.ID}, err)
			return err
		case <-room:
		}
		r.mu.Lock()
	}
	r.lastSeq++
	r.queue = append(r.queue, queued{seq: r.lastSeq, id: e.ID, data: data, at: time.Now()})
	r.queueBytes += len(data)
	r.mu.Unlock()
	r.poke()
	return nil
}

// Flush waits until every event Record accepted before the call has been
// acknowledged by the server (it is durable) or has failed, sending them
// without waiting for MaxDelay. It returns an error if events failed since
// the last Flush returned (OnError has named them), or ctx's error if ctx
// ends first; the events stay queued then.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	since := r.flushReported
	if r.doneSeq < r.lastSeq {
		w := &flushWaiter{to: r.lastSeq, done: make(chan struct{})}
		r.waiters = append(r.waiters, w)
		r.flushSeq = max(r.flushSeq, w.to)
		r.mu.Unlock()
		r.poke()
		select {
		case <-ctx.Done():
			r.mu.Lock()
			defer r.mu.Unlock()
			// Gone: a Flush given up on must not stay behind (an
			// application calling Flush with short timeouts while the
			// server is down would pile them up).
			r.waiters = slices.DeleteFunc(r.waiters, func(o *flushWaiter) bool { return o == w })
			if r.lastErr != nil {
				return fmt.Errorf("couldn't flush: %w (the last attempt to send failed: %w)", ctx.Err(), r.lastErr)
			}
			return fmt.Errorf("couldn't flush: %w", ctx.Err())
		case <-w.done:
		}
		r.mu.Lock()
	}
	defer r.mu.Unlock()
	n := r.failed - since
	r.flushReported = max(r.flushReported, r.failed)
	if n > 0 {
		return fmt.Errorf("%d events recorded were not stored: %w", n, r.lastFailure)
	}
	return nil
}

// Close stops accepting events, sends every queued one and stops the
// Recorder. It returns nil when every event Record ever accepted was
// acknowledged, and an error counting those that were not otherwise (as
// Flush reported them, or not). If ctx ends first, the events still unsent
// are abandoned (counted as failed and passed to OnError) and ctx's error
// is returned. Calling Close again waits for the first call to finish and
// returns what it returned, or its own ctx's error if that ends first (the
// first call goes on).
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		select {
		case <-r.closeDone:
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.closeErr
		case <-ctx.Done():
			return fmt.Errorf("couldn't close: %w (an earlier Close is still sending)", ctx.Err())
		}
	}
	r.closed = true
	close(r.roomFreed) // wake Records waiting for room: they see closed
	r.roomFreed = make(chan struct{})
	r.mu.Unlock()
	err := r.Flush(ctx)
	r.abandon()
	r.poke()
	<-r.senderEnd
	r.mu.Lock()
	if err == nil && r.failed > 0 {
		err = fmt.Errorf("%d events recorded were not stored: %w", r.failed, r.lastFailure)
	}
	r.closeErr = err
	r.mu.Unlock()
	close(r.closeDone)
	return err
}

// Stats returns the Recorder's counters.
func (r *Recorder) Stats() RecorderStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Queued, s.QueuedBytes = len(r.queue), r.queueBytes
	return s
}

// RecordSync sends events as one atomic request and returns their receipt
// once they are durable: the index of each event, in order, and a signed
// checkpoint covering them. Events without an ID are given a UUIDv7 first,
// written into the events slice, and the request is retried with the same
// ids on network errors, pushback and server errors until ctx is done; so
// calling RecordSync again with the same slice after an error cannot store
// an event twice. A permanent error (such as
// 400 invalid_event) is returned at once as an *APIError; nothing was stored
// then. RecordSync does not go through the queue, so it does not wait for
// events passed to Record.
func (r *Recorder) RecordSync(ctx context.Context, events ...Event) (Receipt, error) {
	lines, ids := make([][]byte, len(events)), make([]string, len(events))
	for i := range events {
		data, err := encodeEvent(&events[i])
		if err != nil {
			return Receipt{}, err
		}
		lines[i], ids[i] = data, events[i].ID
	}
	rc, err := r.appendRetrying(ctx, ndjson(lines), ids, false)
	if err != nil {
		return Receipt{}, fmt.Errorf("couldn't record %d events: %w", len(events), err)
	}
	return rc, nil
}

// appendRetrying sends body, the events with ids, until the server
// acknowledges it, refuses it with a permanent error, or ctx ends, and
// then returns the last error. Every attempt sends the same bytes, so the
// same ids. Attempts of the queue's sender (queued) keep their error for
// Flush to report.
func (r *Recorder) appendRetrying(ctx context.Context, body []byte, ids []string, queued bool) (Receipt, error) {
	b := backoff{min: r.opts.MinBackoff, max: r.opts.MaxBackoff}
	for {
		rc, err := r.c.AppendRaw(ctx, body, "application/x-ndjson")
		if err == nil {
			err = receiptFor(rc, ids)
		}
		if queued {
			r.mu.Lock()
			r.lastErr = err
			r.mu.Unlock()
		}
		if err == nil {
			r.countSent(rc)
			return rc, nil
		}
		if permanent(err) {
			return Receipt{}, err
		}
		if ctx.Err() != nil {
			return Receipt{}, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		if serr := sleep(ctx, b.next(err)); serr != nil {
			return Receipt{}, fmt.Errorf("%w (last error: %w)", serr, err)
		}
		r.mu.Lock()
		r.stats.Retries++
		r.mu.Unlock()
	}
}

// receiptFor checks that rc acknowledges the events with ids, in order.
func receiptFor(rc Receipt, ids []string) error {
	if len(rc.Results) != len(ids) {
		return notReceipt(fmt.Sprintf("%d results for %d events", len(rc.Results), len(ids)))
	}
	for i, res := range rc.Results {
		if res.ID != ids[i] {
			return notReceipt(fmt.Sprintf("result %d is for event %q, not %q", i, res.ID, ids[i]))
		}
	}
	return nil
}

// ndjson joins encoded events into an application/x-ndjson body.
func ndjson(lines [][]byte) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// poke wakes the sender.
func (r *Recorder) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// reject counts and reports events Record refused.
func (r *Recorder) reject(ids []string, err error) { r.lost(&r.stats.Rejected, ids, err) }

// reportFailure counts and reports events that will not be stored.
func (r *Recorder) reportFailure(ids []string, err error) { r.lost(&r.stats.Failed, ids, err) }

// lost adds ids to counter and tells OnError.
func (r *Recorder) lost(counter *uint64, ids []string, err error) {
	r.mu.Lock()
	*counter += uint64(len(ids))
	r.mu.Unlock()
	if r.opts.OnError != nil {
		r.opts.OnError(ids, err)
	}
}

func (r *Recorder) countSent(rc Receipt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Sent += uint64(len(rc.Results))
	for _, res := range rc.Results {
		if res.Duplicate {
			r.stats.Duplicates++
		}
	}
}

// send is the Recorder's one sending goroutine.
func (r *Recorder) send() {
	defer close(r.senderEnd)
	for {
		batch, ok := r.nextBatch()
		if !ok {
			return
		}
		r.sendBatch(batch)
		r.finish(len(batch))
	}
}

// nextBatch waits until a batch is due and returns it: when it is full, the
// oldest event has waited MaxDelay, Flush or Close asked, or the Recorder
// was abandoned (then whatever is queued, to be failed). It returns false
// when the Recorder is closed and empty.
func (r *Recorder) nextBatch() ([]queued, bool) {
	for {
		r.mu.Lock()
		n, size := 0, 0
		for n < len(r.queue) && n < r.maxEvents && (n == 0 || size+len(r.queue[n].data) <= r.opts.MaxBatchBytes) {
			size += len(r.queue[n].data)
			n++
		}
		full := n < len(r.queue) || n == r.maxEvents
		var wait time.Duration
		if n > 0 {
			wait = time.Until(r.queue[0].at.Add(r.opts.MaxDelay))
		}
		abandoned := r.sendCtx.Err() != nil
		due := n > 0 && (full || wait <= 0 || r.flushSeq >= r.queue[0].seq || r.closed || abandoned)
		if due {
			batch := slices.Clone(r.queue[:n])
			r.mu.Unlock()
			return batch, true
		}
		if n == 0 && (r.closed && abandoned) {
			r.mu.Unlock()
			return nil, false
		}
		r.mu.Unlock()
		if n == 0 {
			<-r.wake
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// sendBatch sends batch until every event in it is acknowledged or has
// failed. It retries the same bytes, so the same ids, after retryable
// errors; after a permanent error naming some events it drops those and
// sends the rest. A batch the server refuses as too large as a whole (more
// events or bytes than its limits.max_batch_events or max_body_bytes) is
// sent again in halves, and later batches are no larger than what the
// server took.
func (r *Recorder) sendBatch(batch []queued) {
	for len(batch) > 0 {
		lines, ids := make([][]byte, len(batch)), make([]string, len(batch))
		for i, q := range batch {
			lines[i], ids[i] = q.data, q.id
		}
		_, err := r.appendRetrying(r.sendCtx, ndjson(lines), ids, true)
		if err == nil {
			return
		}
		if !permanent(err) {
			r.fail(batch, fmt.Errorf("couldn't send before Close gave up: %w", err))
			return
		}
		bad := refusedEvents(err, len(batch))
		if bad == nil && len(batch) > 1 && tooLarge(err) {
			half := len(batch) / 2
			r.mu.Lock()
			r.maxEvents = min(r.maxEvents, half)
			r.mu.Unlock()
			r.sendBatch(batch[:half])
			batch = batch[half:]
			continue
		}
		if bad == nil {
			r.fail(batch, fmt.Errorf("the server refused the events: %w", err))
			return
		}
		var refused, rest []queued
		for i, q := range batch {
			if slices.Contains(bad, i) {
				refused = append(refused, q)
			} else {
				rest = append(rest, q)
			}
		}
		r.fail(refused, fmt.Errorf("the server refused the events: %w", err))
		batch = rest
	}
}

// fail counts and reports queued events that will not be stored, and
// tells the Flushes waiting for them.
func (r *Recorder) fail(events []queued, err error) {
	ids := make([]string, len(events))
	for i, q := range events {
		ids[i] = q.id
	}
	r.mu.Lock()
	r.failed += uint64(len(events))
	r.lastFailure = err
	r.mu.Unlock()
	r.reportFailure(ids, err)
}

// finish removes the first n queued events, which are resolved, and wakes
// the Flushes and Records waiting for them.
func (r *Recorder) finish(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range r.queue[:n] {
		r.queueBytes -= len(q.data)
	}
	r.doneSeq = r.queue[n-1].seq
	r.queue = slices.Delete(r.queue, 0, n)
	if len(r.queue) == 0 {
		r.queue = nil // let a burst's backing array go
	}
	r.waiters = slices.DeleteFunc(r.waiters, func(w *flushWaiter) bool {
		if r.doneSeq >= w.to {
			close(w.done)
			return true
		}
		return false
	})
	close(r.roomFreed)
	r.roomFreed = make(chan struct{})
}
