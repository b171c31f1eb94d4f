package ingest

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// TestLagLimit checks that producers' appends wait while the follower is
// too far behind and go on when it catches up, are refused with pushback
// (nothing stored) if it does not, that the server's own appends never
// wait, and that a follower still rebuilding after start holds nobody back.
func TestLagLimit(t *testing.T) {
	var lag atomic.Uint64
	lag.Store(1000) // rebuilding: never within the limit yet
	var waits atomic.Int64
	limit := &LagLimit{Lag: lag.Load, Max: 100, Wait: 200 * time.Millisecond, OnWait: func() { waits.Add(1) }}
	led := &fakeLedger{keys: map[string]uint64{}}
	pl := &Pipeline{Ledger: led, Admit: limit.Admit}
	ctx := context.Background()
	producer := root

	if _, err := pl.Append(ctx, producer, []event.Event{{Type: "a.b"}}); err != nil || waits.Load() != 0 {
		t.Fatalf("append while the follower rebuilds: %v, %d waits", err, waits.Load())
	}
	lag.Store(50) // caught up once: the limit applies from now on
	if _, err := pl.Append(ctx, producer, []event.Event{{Type: "a.b"}}); err != nil {
		t.Fatal(err)
	}

	lag.Store(500)
	start := time.Now()
	_, err := pl.Append(ctx, producer, []event.Event{{Type: "a.b"}})
	var behind *BehindError
	if !errors.Is(err, ledger.ErrPushback) || !errors.As(err, &behind) || behind.Lag != 500 || !strings.Contains(err.Error(), "followers") ||
		time.Since(start) < 200*time.Millisecond || len(led.records) != 2 {
		t.Fatalf("append while the follower stays behind: %v after %s, %d records stored", err, time.Since(start), len(led.records))
	}

	system := root
	system.TokenID = SystemTokenID
	if _, err := pl.Append(ctx, system, []event.Event{{Type: "a.b"}}); err != nil || len(led.records) != 3 {
		t.Fatalf("the server's own append waited or failed: %v", err)
	}

	go func() {
		time.Sleep(50 * time.Millisecond)
		lag.Store(100)
	}()
	if _, err := pl.Append(ctx, producer, []event.Event{{Type: "a.b"}}); err != nil || len(led.records) != 4 || waits.Load() != 2 {
		t.Fatalf("append once the follower caught up: %v, %d records, %d waits", err, len(led.records), waits.Load())
	}

	lag.Store(500)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := pl.Append(cctx, producer, []event.Event{{Type: "a.b"}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append whose caller gave up: %v", err)
	}
}
