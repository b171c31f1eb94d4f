package client

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// TestFlushGivenUpLeavesNothingBehind: a Flush whose context ends stops
// waiting and leaves nothing behind, so that an application calling Flush
// with short timeouts while the server is down does not pile up waiters
// (each holds memory, and every failed event was checked against each).
func TestFlushGivenUpLeavesNothingBehind(t *testing.T) {
	srv := httptest.NewServer(nil)
	srv.Close() // nothing listens there now
	r := NewRecorder(New(srv.URL, "tok"), RecorderOptions{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		r.Close(ctx)
	}()
	if err := r.Record(context.Background(), Event{Type: "api.call"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 1000 {
		if err := r.Flush(ctx); err == nil {
			t.Fatal("Flush succeeded with the server down")
		}
	}
	r.mu.Lock()
	n := len(r.waiters)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d Flushes given up on are still waiting", n)
	}
}
