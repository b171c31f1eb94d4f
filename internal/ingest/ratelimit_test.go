package ingest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/event"
)

// TestTokenRate: each token appends at most its burst at once and then its
// rate; a refused request stores nothing, takes nothing from the bucket and
// says when to come back; other tokens, the server's own records and the
// outcomes of proxied calls are not held back.
func TestTokenRate(t *testing.T) {
	now := time.Unix(1700000000, 0)
	var refused []string
	rate := &TokenRate{Rate: 10, Burst: 20, OnRefuse: func(id string, n int) { refused = append(refused, id) }}
	led := &fakeLedger{keys: map[string]uint64{}}
	pl := &Pipeline{Ledger: led, Rate: rate, Now: func() time.Time { return now }}
	ctx := context.Background()
	producer, other, system := root, root, root
	producer.TokenID, other.TokenID, system.TokenID = "tok-a", "tok-b", SystemTokenID

	if _, err := pl.Append(ctx, producer, events(20)); err != nil {
		t.Fatalf("a burst within the limit: %v", err)
	}
	_, err := pl.Append(ctx, producer, events(5))
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != "rate_limited" || ae.RetryAfter != 1 {
		t.Fatalf("past the burst: %v (%+v); want 429 rate_limited, Retry-After 1", err, ae)
	}
	if len(led.records) != 20 || len(refused) != 1 || refused[0] != "tok-a" {
		t.Fatalf("after the refusal: %d records stored, refusals %v", len(led.records), refused)
	}
	// Others go on: another token, the server, a proxied call's outcome.
	if _, err := pl.Append(ctx, other, events(20)); err != nil {
		t.Errorf("another token: %v", err)
	}
	if _, err := pl.Append(ctx, system, events(50)); err != nil {
		t.Errorf("the server's own records: %v", err)
	}
	if _, err := pl.Append(Admitted(ctx), producer, events(1)); err != nil {
		t.Errorf("the outcome of a call whose request was taken: %v", err)
	}
	// Half a second fills five events: the refused request took none.
	now = now.Add(500 * time.Millisecond)
	if _, err := pl.Append(ctx, producer, events(5)); err != nil {
		t.Errorf("after the Retry-After delay: %v", err)
	}
	now = now.Add(100 * time.Millisecond) // one more event's worth
	if _, err := pl.Append(ctx, producer, events(3)); !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests {
		t.Errorf("three events with one in the bucket: %v; want 429", err)
	}
	// More than the burst could never be taken: 413, not a wait.
	if _, err := pl.Append(ctx, other, events(21)); !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("a request larger than the burst: %v; want 413", err)
	}
	if want := 20 + 20 + 50 + 1 + 5; len(led.records) != want {
		t.Errorf("%d records stored; want %d", len(led.records), want)
	}
}

// TestTokenOwnRate: a token's own limit bounds it in place of the server's,
// with or without one; its burst, when it names none, is the largest
// request or a second's worth.
func TestTokenOwnRate(t *testing.T) {
	now := time.Unix(1700000000, 0)
	for _, serverRate := range []float64{0, 1000} {
		led := &fakeLedger{keys: map[string]uint64{}}
		pl := &Pipeline{Ledger: led, Rate: &TokenRate{Rate: serverRate, Burst: 1000, MinBurst: 10}, Now: func() time.Time { return now }}
		ctx := context.Background()
		own, unlimited := root, root
		own.TokenID, own.Limit = "tok-own", authz.Limit{EventsPerSecond: 0.5}
		unlimited.TokenID = "tok-server"
		if _, err := pl.Append(ctx, own, events(10)); err != nil {
			t.Fatalf("server rate %v: a burst of the token's own size: %v", serverRate, err)
		}
		_, err := pl.Append(ctx, own, events(1))
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || !strings.Contains(ae.Message, "0.5 events a second, 10 at once (the token's own limit)") {
			t.Errorf("server rate %v: past the token's own limit: %v", serverRate, err)
		}
		if _, err := pl.Append(ctx, unlimited, events(500)); err != nil {
			t.Errorf("server rate %v: a token without a limit of its own: %v", serverRate, err)
		}
		fast := root
		fast.TokenID, fast.Limit = "tok-fast", authz.Limit{EventsPerSecond: 5000, BurstEvents: 3000}
		if _, err := pl.Append(ctx, fast, events(2500)); err != nil {
			t.Errorf("server rate %v: a token whose own limit is above the server's: %v", serverRate, err)
		}
	}
}

// TestTokenRateRetryAfterIsBounded: at a rate so low that the wait passes
// what a time.Duration holds, the refusal still names a day, not a
// negative or absurd delay.
func TestTokenRateRetryAfterIsBounded(t *testing.T) {
	now := time.Unix(1700000000, 0)
	pl := &Pipeline{Ledger: &fakeLedger{keys: map[string]uint64{}}, Rate: &TokenRate{Rate: 1e-9, Burst: 10}, Now: func() time.Time { return now }}
	p := root
	p.TokenID = "tok-slow"
	if _, err := pl.Append(context.Background(), p, events(10)); err != nil {
		t.Fatal(err)
	}
	_, err := pl.Append(context.Background(), p, events(10))
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.RetryAfter != maxRetryAfter {
		t.Fatalf("past a rate of one event in 30 years: %v (%+v); want 429, Retry-After a day", err, ae)
	}
}

// events returns n events of one type, as a request would hold them.
func events(n int) []event.Event {
	evs := make([]event.Event, n)
	for i := range evs {
		evs[i] = event.Event{Type: "a.b"}
	}
	return evs
}

// TestTokenRateDefaultBurst: with no burst named, the server's limit and a
// token's own allow the largest request at once, or a second's worth at a
// rate above it.
func TestTokenRateDefaultBurst(t *testing.T) {
	rate := &TokenRate{Rate: 50, MinBurst: 10_000}
	own := root
	own.Limit = authz.Limit{EventsPerSecond: 50_000}
	for _, c := range []struct {
		name string
		p    authz.Principal
		want int
	}{
		{"the server's limit", root, 10_000},
		{"a token's own limit above the largest request", own, 50_000},
	} {
		if _, burst, _ := rate.limitOf(c.p); burst != c.want {
			t.Errorf("%s: the default burst is %d; want %d", c.name, burst, c.want)
		}
	}
	fast := &TokenRate{Rate: 50_000, MinBurst: 10_000}
	if _, burst, _ := fast.limitOf(root); burst != 50_000 {
		t.Errorf("the server's default burst at 50,000 a second = %d, want a second's worth", burst)
	}
}
