package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/aitrail/aitrail/client"
)

// fastRetry keeps unit tests quick: backoff starts at a millisecond.
var fastRetry = client.RecorderOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}

// newRecorder returns a recorder on f, closed at the end of the test.
func newRecorder(t *testing.T, f *fakeServer, opts client.RecorderOptions) *client.Recorder {
	t.Helper()
	rec := client.NewRecorder(client.New(f.URL, "tok"), opts)
	t.Cleanup(func() { rec.Close(context.Background()) })
	return rec
}

func record(t *testing.T, rec *client.Recorder, evs ...client.Event) {
	t.Helper()
	for _, e := range evs {
		if err := rec.Record(context.Background(), e); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
}

func events(n int, prefix string) []client.Event {
	evs := make([]client.Event, n)
	for i := range evs {
		evs[i] = client.Event{ID: fmt.Sprintf("%s-%d", prefix, i), Type: "api.call"}
	}
	return evs
}

func TestRecorderBatchesBySizeAndSendsTheRestOnFlush(t *testing.T) {
	f := newFakeServer(t)
	rec := newRecorder(t, f, client.RecorderOptions{MaxBatchEvents: 10, MaxDelay: time.Hour})
	evs := events(25, "e")
	record(t, rec, evs...)
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, r := range f.requestIDs() {
		sizes = append(sizes, len(r))
	}
	if !slices.Equal(sizes, []int{10, 10, 5}) {
		t.Errorf("request sizes %v, want [10 10 5]", sizes)
	}
	var want []string
	for _, e := range evs {
		want = append(want, e.ID)
	}
	if got := f.stored(); !slices.Equal(got, want) {
		t.Errorf("stored %v, want %v in order", got, want)
	}
	if s := rec.Stats(); s.Sent != 25 || s.Queued != 0 || s.Failed != 0 || s.Retries != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestRecorderSendsAfterMaxDelayWithoutFlush(t *testing.T) {
	f := newFakeServer(t)
	acked := make(chan struct{})
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		writeReceipt(w, store())
		close(acked)
		return true
	}
	rec := newRecorder(t, f, client.RecorderOptions{MaxDelay: time.Millisecond})
	record(t, rec, client.Event{ID: "lonely", Type: "api.call"})
	<-acked // would hang if a lone event waited for a full batch
	if got := f.stored(); !slices.Equal(got, []string{"lonely"}) {
		t.Errorf("stored %v", got)
	}
}

func TestRecorderGivesIDsAndRetriesWithTheSameIDsAfterALostAnswer(t *testing.T) {
	f := newFakeServer(t)
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		switch n {
		case 0: // stored, then the answer is lost
			store()
			loseAnswer(w)
			return true
		case 1:
			writeError(w, http.StatusInternalServerError, "internal")
			return true
		}
		return false
	}
	rec := newRecorder(t, f, fastRetry)
	record(t, rec, client.Event{Type: "ai.inference"}, client.Event{Type: "ai.inference"}, client.Event{ID: "mine", Type: "ai.inference"})
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	reqs := f.requestIDs()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (lost answer, 500, success)", len(reqs))
	}
	for _, r := range reqs[1:] {
		if !slices.Equal(r, reqs[0]) {
			t.Errorf("retry sent ids %v, first attempt %v", r, reqs[0])
		}
	}
	for _, id := range reqs[0][:2] {
		if u, err := uuid.Parse(id); err != nil || u.Version() != 7 {
			t.Errorf("assigned id %q is not a UUIDv7", id)
		}
	}
	if reqs[0][2] != "mine" {
		t.Errorf("the caller's id was replaced: %v", reqs[0])
	}
	if got := f.stored(); len(got) != 3 {
		t.Errorf("stored %v, want each event once", got)
	}
	if s := rec.Stats(); s.Sent != 3 || s.Duplicates != 3 || s.Retries != 2 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestRecorderHonoursRetryAfter(t *testing.T) {
	f := newFakeServer(t)
	var mu sync.Mutex
	var at []time.Time
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		if n == 0 {
			writeError(w, http.StatusServiceUnavailable, "pushback") // Retry-After: 1
			return true
		}
		return false
	}
	rec := newRecorder(t, f, fastRetry) // its own backoff would retry within 10ms
	record(t, rec, events(3, "p")...)
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(at) != 2 {
		t.Fatalf("%d requests, want 2", len(at))
	}
	if gap := at[1].Sub(at[0]); gap < time.Second {
		t.Errorf("retried %v after a 503 with Retry-After: 1", gap)
	}
	if got := f.stored(); len(got) != 3 {
		t.Errorf("stored %v", got)
	}
}

func TestRecorderDoesNotRetryPermanentErrors(t *testing.T) {
	f := newFakeServer(t)
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		var details []any
		for i, e := range evs {
			if e.Type == "Bad" {
				details = append(details, map[string]any{"index": i, "field": fmt.Sprintf("events[%d].type", i), "message": "bad"})
			}
			if e.Type == "forbidden" {
				writeError(w, http.StatusForbidden, "forbidden")
				return true
			}
		}
		if details != nil {
			writeError(w, http.StatusBadRequest, "invalid_event", details...)
			return true
		}
		return false
	}
	var mu sync.Mutex
	refused := map[string]error{}
	opts := fastRetry
	opts.MaxDelay = time.Hour
	opts.OnError = func(ids []string, err error) {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			refused[id] = err
		}
	}
	rec := newRecorder(t, f, opts)

	// One bad event in a batch: it is dropped, the others are stored.
	record(t, rec, client.Event{ID: "ok-1", Type: "api.call"}, client.Event{ID: "bad", Type: "Bad"}, client.Event{ID: "ok-2", Type: "api.call"})
	err := rec.Flush(context.Background())
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("Flush = %v, want an error wrapping the 400", err)
	}
	if got := f.stored(); !slices.Equal(got, []string{"ok-1", "ok-2"}) {
		t.Errorf("stored %v, want the two good events", got)
	}
	if len(refused) != 1 || refused["bad"] == nil {
		t.Errorf("OnError saw %v, want only the bad event", refused)
	}

	// A refusal that names no event fails the whole batch, once.
	record(t, rec, client.Event{ID: "f-1", Type: "forbidden"}, client.Event{ID: "f-2", Type: "api.call"})
	if err := rec.Flush(context.Background()); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("Flush = %v, want an error wrapping the 403", err)
	}
	reqs := f.requestIDs()
	if len(reqs) != 3 {
		t.Errorf("%d requests, want 3: nothing permanent is retried", len(reqs))
	}
	if refused["f-1"] == nil || refused["f-2"] == nil {
		t.Errorf("OnError saw %v", refused)
	}
	if s := rec.Stats(); s.Failed != 3 || s.Sent != 2 || s.Retries != 0 {
		t.Errorf("stats %+v", s)
	}
	// Later events are not affected.
	record(t, rec, client.Event{ID: "after", Type: "api.call"})
	if err := rec.Flush(context.Background()); err != nil {
		t.Errorf("Flush after the failures: %v", err)
	}
}

// TestRecorderSplitsBatchesTheServerFindsTooLarge: a server whose limits
// (limits.max_batch_events, max_body_bytes) are below the Recorder's
// batches refuses them whole with 413 too_large. The Recorder sends such a
// batch again in halves, loses nothing, and keeps later batches small.
func TestRecorderSplitsBatchesTheServerFindsTooLarge(t *testing.T) {
	const serverMax = 3
	f := newFakeServer(t)
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		if len(evs) > serverMax {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large")
			return true
		}
		return false
	}
	opts := fastRetry
	opts.MaxDelay = time.Hour
	rec := newRecorder(t, f, opts)
	evs := events(20, "e")
	record(t, rec, evs[:10]...)
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	before := len(f.requestIDs())
	record(t, rec, evs[10:]...)
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatalf("second Flush: %v", err)
	}
	var want []string
	for _, e := range evs {
		want = append(want, e.ID)
	}
	if got := f.stored(); !slices.Equal(got, want) {
		t.Errorf("stored %v, want all 20 in order", got)
	}
	for _, ids := range f.requestIDs()[before:] {
		if len(ids) > serverMax {
			t.Errorf("a later batch of %d events, more than the server took", len(ids))
		}
	}
	if s := rec.Stats(); s.Failed != 0 || s.Sent != 20 {
		t.Errorf("stats %+v", s)
	}
}

// TestRecorderFlushSaysWhySendingFails: a Flush that gives up while the
// server cannot be reached says what the last attempt met, so that an
// application can tell a server that is down from a wrong URL.
func TestRecorderFlushSaysWhySendingFails(t *testing.T) {
	f := startFake()
	f.Close() // nothing listens there now
	rec := client.NewRecorder(client.New(f.URL, "tok"), fastRetry)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		rec.Close(ctx)
	}()
	record(t, rec, events(1, "x")...)
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err = rec.Flush(ctx)
		cancel()
		if err != nil && strings.Contains(err.Error(), "connection refused") {
			break
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the last attempt to send failed") {
		t.Fatalf("Flush = %v, want the deadline and the last send error", err)
	}
}

// blockServer holds every request until release is closed.
func blockServer(t *testing.T) (f *fakeServer, arrived chan struct{}, release chan struct{}) {
	f = newFakeServer(t)
	arrived, release = make(chan struct{}, 100), make(chan struct{})
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		arrived <- struct{}{}
		<-release
		return false
	}
	return f, arrived, release
}

func TestRecorderQueueIsBounded(t *testing.T) {
	t.Run("reject", func(t *testing.T) {
		f, arrived, release := blockServer(t)
		var rejected []string
		rec := newRecorder(t, f, client.RecorderOptions{MaxQueueEvents: 3, RejectWhenFull: true,
			OnError: func(ids []string, err error) { rejected = append(rejected, ids...) }})
		record(t, rec, events(1, "a")...)
		<-arrived // a-0 is in flight and still counts
		record(t, rec, events(2, "b")...)
		if err := rec.Record(context.Background(), client.Event{ID: "c", Type: "api.call"}); !errors.Is(err, client.ErrQueueFull) {
			t.Fatalf("Record on a full queue = %v, want ErrQueueFull", err)
		}
		if s := rec.Stats(); s.Rejected != 1 || s.Queued != 3 {
			t.Errorf("stats %+v", s)
		}
		if !slices.Equal(rejected, []string{"c"}) {
			t.Errorf("OnError saw %v", rejected)
		}
		close(release)
		if err := rec.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := f.stored(); !slices.Equal(got, []string{"a-0", "b-0", "b-1"}) {
			t.Errorf("stored %v", got)
		}
	})
	t.Run("block", func(t *testing.T) {
		f, arrived, release := blockServer(t)
		rec := newRecorder(t, f, client.RecorderOptions{MaxQueueBytes: 70})
		record(t, rec, events(2, "a")...) // 30 bytes each
		<-arrived
		ctx, cancel := context.WithCancel(context.Background())
		blocked := make(chan error)
		go func() { blocked <- rec.Record(ctx, client.Event{ID: "c", Type: "api.call"}) }()
		cancel()
		if err := <-blocked; !errors.Is(err, context.Canceled) {
			t.Fatalf("Record on a full queue with a cancelled context = %v", err)
		}
		// Once the server answers there is room again.
		go func() { blocked <- rec.Record(context.Background(), client.Event{ID: "d", Type: "api.call"}) }()
		close(release)
		if err := <-blocked; err != nil {
			t.Fatalf("Record after room was freed: %v", err)
		}
		if err := rec.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := f.stored(); !slices.Equal(got, []string{"a-0", "a-1", "d"}) {
			t.Errorf("stored %v", got)
		}
	})
	t.Run("too large", func(t *testing.T) {
		f := newFakeServer(t)
		rec := newRecorder(t, f, client.RecorderOptions{MaxQueueBytes: 100})
		big := client.Event{Type: "api.call", Content: []byte(`"` + strings.Repeat("x", 100) + `"`)}
		if err := rec.Record(context.Background(), big); !errors.Is(err, client.ErrEventTooLarge) {
			t.Errorf("Record of an event larger than the queue = %v", err)
		}
	})
}

func TestRecorderFlushWaitsForAcknowledgement(t *testing.T) {
	f, arrived, release := blockServer(t)
	rec := newRecorder(t, f, client.RecorderOptions{MaxDelay: time.Hour})
	record(t, rec, events(3, "a")...)
	flushed := make(chan error)
	go func() { flushed <- rec.Flush(context.Background()) }()
	<-arrived
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned %v before the server answered", err)
	default:
	}
	close(release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if got := f.stored(); len(got) != 3 {
		t.Errorf("after Flush the server has %v", got)
	}
	// A cancelled Flush returns its context's error and leaves events queued.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f2, _, release2 := blockServer(t)
	rec2 := newRecorder(t, f2, client.RecorderOptions{})
	record(t, rec2, events(1, "b")...)
	if err := rec2.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush with a cancelled context = %v", err)
	}
	close(release2)
	if err := rec2.Close(context.Background()); err != nil || len(f2.stored()) != 1 {
		t.Errorf("Close = %v, stored %v", err, f2.stored())
	}
}

func TestRecorderClose(t *testing.T) {
	t.Run("sends everything and then refuses", func(t *testing.T) {
		f := newFakeServer(t)
		rec := newRecorder(t, f, client.RecorderOptions{MaxDelay: time.Hour})
		record(t, rec, events(7, "a")...)
		if err := rec.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := f.stored(); len(got) != 7 {
			t.Errorf("stored %v after Close", got)
		}
		if err := rec.Record(context.Background(), client.Event{Type: "api.call"}); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Record after Close = %v", err)
		}
		if err := rec.Close(context.Background()); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})
	t.Run("gives up when its context ends", func(t *testing.T) {
		f := newFakeServer(t)
		tries := make(chan struct{}, 1000)
		f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
			tries <- struct{}{}
			writeError(w, http.StatusBadGateway, "down")
			return true
		}
		var mu sync.Mutex
		var abandoned []string
		opts := fastRetry
		opts.OnError = func(ids []string, err error) {
			mu.Lock()
			abandoned = append(abandoned, ids...)
			mu.Unlock()
		}
		rec := newRecorder(t, f, opts)
		record(t, rec, events(4, "a")...)
		<-tries
		<-tries // it is retrying
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := rec.Close(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Close = %v, want the context's error", err)
		}
		slices.Sort(abandoned)
		if !slices.Equal(abandoned, []string{"a-0", "a-1", "a-2", "a-3"}) {
			t.Errorf("OnError saw %v, want every abandoned event", abandoned)
		}
		if s := rec.Stats(); s.Failed != 4 || s.Queued != 0 || s.Retries == 0 {
			t.Errorf("stats %+v", s)
		}
	})
}

func TestRecordSync(t *testing.T) {
	f := newFakeServer(t)
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		if n == 0 {
			store()
			loseAnswer(w)
			return true
		}
		return false
	}
	rec := newRecorder(t, f, fastRetry)
	rc, err := rec.RecordSync(context.Background(), client.Event{Type: "model.deploy"}, client.Event{ID: "x", Type: "model.deploy"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Results) != 2 || rc.Results[0].Index != 0 || rc.Results[1].Index != 1 || rc.Results[1].ID != "x" || rc.Checkpoint == "" {
		t.Errorf("receipt %+v", rc)
	}
	reqs := f.requestIDs()
	if len(reqs) != 2 || !slices.Equal(reqs[0], reqs[1]) || reqs[0][0] != rc.Results[0].ID {
		t.Errorf("requests %v: the retry must resend the same ids", reqs)
	}
	if len(f.stored()) != 2 {
		t.Errorf("stored %v", f.stored())
	}

	// A permanent error comes back at once, and the context bounds retries.
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		writeError(w, http.StatusBadRequest, "invalid_event")
		return true
	}
	var ae *client.APIError
	if _, err := rec.RecordSync(context.Background(), client.Event{Type: "x"}); !errors.As(err, &ae) || ae.Code != "invalid_event" {
		t.Errorf("RecordSync with a 400 = %v", err)
	}
	if n := len(f.requestIDs()); n != 3 {
		t.Errorf("%d requests in all, want 3: a 400 is not retried", n)
	}
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		writeError(w, http.StatusServiceUnavailable, "pushback")
		return true
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(f.requestIDs()) < 4 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := rec.RecordSync(ctx, client.Event{Type: "x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("RecordSync cancelled during pushback = %v, want the context's error", err)
	}
}

func writeReceipt(w http.ResponseWriter, rc client.Receipt) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rc)
}

func TestAPIErrorReadsBothFormsOfRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		header string
		min    time.Duration
	}{
		{"3", 3 * time.Second},
		{time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 59 * time.Minute},
		{"soon", 0},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", tc.header)
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		_, err := client.New(srv.URL, "tok").Append(context.Background(), client.Event{Type: "x"})
		srv.Close()
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.RetryAfter < tc.min || tc.min == 0 && ae.RetryAfter != 0 {
			t.Errorf("Retry-After %q: %v", tc.header, err)
		}
	}
}

func TestRecordSyncAgainAfterAnErrorKeepsTheIDs(t *testing.T) {
	f := newFakeServer(t)
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		if n == 0 {
			store()
			writeError(w, http.StatusBadRequest, "invalid_event") // as if refused after all
			return true
		}
		return false
	}
	rec := newRecorder(t, f, fastRetry)
	evs := []client.Event{{Type: "admin.change"}}
	if _, err := rec.RecordSync(context.Background(), evs...); err == nil {
		t.Fatal("RecordSync succeeded despite the 400")
	}
	rc, err := rec.RecordSync(context.Background(), evs...)
	if err != nil || !rc.Results[0].Duplicate || len(f.stored()) != 1 {
		t.Errorf("second RecordSync: %+v, %v; stored %v", rc, err, f.stored())
	}
}

// TestAPIErrorKeepsAPlainAnswersReason: an error answer that is not
// aitrail's JSON (a proxy's, or a TLS port spoken to in plain HTTP) keeps
// its first line in the message, which is what says what went wrong.
func TestAPIErrorKeepsAPlainAnswersReason(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "Client sent an HTTP request to an HTTPS server.\n")
	}))
	defer srv.Close()
	_, err := client.New(srv.URL, "tok").Append(context.Background(), client.Event{Type: "x"})
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request: Client sent an HTTP request to an HTTPS server.") {
		t.Fatalf("error %v", err)
	}
}

// TestRecorderReportsEveryFailure: an event the server refused is reported
// by the next Flush even when it failed before Flush was called, and by
// Close whenever it failed: neither says every event is durable when one
// is not.
func TestRecorderReportsEveryFailure(t *testing.T) {
	f := newFakeServer(t)
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		if evs[0].Type == "Bad" {
			writeError(w, http.StatusBadRequest, "invalid_event", map[string]any{"index": 0, "field": "events[0].type", "message": "bad"})
			return true
		}
		return false
	}
	rec := newRecorder(t, f, client.RecorderOptions{MaxDelay: time.Millisecond})
	record(t, rec, client.Event{ID: "bad", Type: "Bad"})
	for rec.Stats().Failed == 0 {
		time.Sleep(time.Millisecond)
	}
	var ae *client.APIError
	if err := rec.Flush(context.Background()); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("Flush after the refusal = %v; want an error wrapping the 400", err)
	}
	record(t, rec, client.Event{ID: "good", Type: "api.call"})
	if err := rec.Flush(context.Background()); err != nil {
		t.Errorf("Flush of a good event after the refusal was reported = %v", err)
	}
	if err := rec.Close(context.Background()); !errors.As(err, &ae) || !strings.Contains(err.Error(), "1 events") {
		t.Errorf("Close = %v; want an error counting the refused event", err)
	}
	if err := rec.Close(context.Background()); !errors.As(err, &ae) {
		t.Errorf("second Close = %v; want what the first returned", err)
	}
}

// TestRecorderCloseTwice: a second Close with a short deadline, while the
// first waits for a server that is down, gives up alone; the first goes on
// and stores everything once the server is back.
func TestRecorderCloseTwice(t *testing.T) {
	f := newFakeServer(t)
	var back atomic.Bool
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		if !back.Load() {
			writeError(w, http.StatusBadGateway, "down")
			return true
		}
		return false
	}
	opts := fastRetry
	rec := newRecorder(t, f, opts)
	record(t, rec, events(5, "a")...)
	first := make(chan error, 1)
	go func() { first <- rec.Close(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	time.Sleep(10 * time.Millisecond) // the first Close is under way
	if err := rec.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Close = %v; want its deadline", err)
	}
	back.Store(true)
	if err := <-first; err != nil {
		t.Errorf("first Close = %v; want nil once the server is back", err)
	}
	if got := f.stored(); len(got) != 5 || rec.Stats().Failed != 0 {
		t.Errorf("stored %v, stats %+v; want all five, none failed", got, rec.Stats())
	}
}

// TestAnswersThatAreNotReceipts: a successful answer that does not
// acknowledge the events sent (a redirect turned into a GET, a proxy's
// page, the wrong events) fails them loudly, and is not retried.
func TestAnswersThatAreNotReceipts(t *testing.T) {
	f := newFakeServer(t)
	moved := httptest.NewServer(http.RedirectHandler(f.URL+"/v1/events", http.StatusMovedPermanently))
	t.Cleanup(moved.Close)
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"events":[],"next_cursor":""}`)
	}))
	t.Cleanup(page.Close)
	f.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		rc := store()
		rc.Results[0].ID = "someone-else"
		json.NewEncoder(w).Encode(rc)
		return true
	}
	for name, c := range map[string]struct {
		url  string
		want string
	}{
		"redirected": {moved.URL, "redirected"},
		"a page":     {page.URL, "no checkpoint or no results"},
		"wrong ids":  {f.URL, `is for event "someone-else"`},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rec := client.NewRecorder(client.New(c.url, "tok"), fastRetry)
			record(t, rec, events(2, "e")...)
			if err := rec.Flush(ctx); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Flush = %v; want an error saying %q", err, c.want)
			}
			if s := rec.Stats(); s.Failed != 2 || s.Sent != 0 || s.Retries != 0 {
				t.Errorf("stats %+v; want both failed, none sent, no retries", s)
			}
			if _, err := rec.RecordSync(ctx, events(1, "s")...); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("RecordSync = %v; want an error saying %q", err, c.want)
			}
			if _, err := client.New(c.url, "tok").Append(ctx, map[string]string{"type": "api.call"}); err == nil && c.url != f.URL {
				t.Error("Append succeeded")
			}
			rec.Close(ctx)
		})
	}
}
