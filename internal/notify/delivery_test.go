package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value reads a counter's or a gauge's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if c := d.GetCounter(); c != nil {
		return c.GetValue()
	}
	return d.GetGauge().GetValue()
}

// TestReceiverDownThenUp checks that a webhook receiver that is down when
// an alert is raised gets it once it comes back on the same address, that
// the failures are visible in the status and metrics meanwhile, and that
// neither the URL's secret path nor the header values reach the logs.
func TestReceiverDownThenUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there until the receiver comes back

	logFile, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	reg := prometheus.NewRegistry()
	n := start(t, Config{
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Webhooks: []WebhookConfig{{Name: "oncall", URL: "http://" + addr + "/hooks/T0KEN-IN-PATH",
			Headers: map[string]string{"X-Api-Key": "header-secret"}}},
	}, Options{Logger: slog.New(slog.NewJSONHandler(logFile, nil)), Registerer: reg})
	if err := n.Send(alert("DeniedBurst", "api-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "several failed attempts", func() bool { return n.Status()[0].Failed >= 3 })
	st := n.Status()[0]
	if st.Pending != 1 || st.Delivered != 0 || st.LastError.IsZero() || st.LastErrorMessage == "" {
		t.Errorf("status while the receiver is down = %+v; want 1 pending, none delivered, the last error", st)
	}
	if got := value(t, n.metrics.deliveries.WithLabelValues("oncall", resultFailed)); got < 3 {
		t.Errorf("aitrail_alert_deliveries_total{result=failed} = %v, want at least 3", got)
	}

	rcv := &receiver{}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("couldn't listen on %s again: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(rcv)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	defer srv.Close()

	waitFor(t, "the receiver to get the alert", func() bool { return countAlerts(t, rcv) == 1 })
	waitFor(t, "the status to show the delivery", func() bool { return n.Status()[0].Delivered == 1 })
	st = n.Status()[0]
	if st.Pending != 0 || st.LastSuccess.IsZero() {
		t.Errorf("status after recovery = %+v; want nothing pending and a last success", st)
	}
	if got := rcv.requests()[0].path; got != "/hooks/T0KEN-IN-PATH" {
		t.Errorf("posted to %s", got)
	}
	logs, err := os.ReadFile(logFile.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"T0KEN-IN-PATH", "header-secret"} {
		if strings.Contains(string(logs), secret) || strings.Contains(st.LastErrorMessage, secret) {
			t.Errorf("a secret (%s) reached the logs or the status:\n%s\n%s", secret, logs, st.LastErrorMessage)
		}
	}
	if !strings.Contains(string(logs), "alert target reachable again") {
		t.Errorf("the recovery was not logged:\n%s", logs)
	}
}

// TestBackoff checks the waits between retries: doubling from min_backoff
// up to max_backoff with jitter, and what the receiver asks for in
// Retry-After when that is longer.
func TestBackoff(t *testing.T) {
	rcv := &receiver{answer: func(n int, w http.ResponseWriter) {
		switch n {
		case 0, 1, 2, 3:
			w.WriteHeader(http.StatusInternalServerError)
		case 4:
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 5:
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	var mu sync.Mutex
	var waits []time.Duration
	wait := func(ctx context.Context, d time.Duration) bool {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return ctx.Err() == nil
	}
	n := start(t, Config{MinBackoff: time.Second, MaxBackoff: 4 * time.Second,
		Webhooks: []WebhookConfig{{Name: "oncall", URL: srv.URL}}}, Options{wait: wait})
	if err := n.Send(alert("DeniedBurst", "api-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the alert to be delivered after the failures", func() bool { return n.Status()[0].Delivered == 1 })
	mu.Lock()
	defer mu.Unlock()
	// Before jitter: 1s, 2s, 4s, 4s (capped), then Retry-After, then 4s.
	want := []struct{ lo, hi time.Duration }{
		{500 * time.Millisecond, time.Second}, {time.Second, 2 * time.Second}, {2 * time.Second, 4 * time.Second},
		{2 * time.Second, 4 * time.Second}, {120 * time.Second, 120 * time.Second}, {2 * time.Second, 4 * time.Second},
	}
	if len(waits) != len(want) {
		t.Fatalf("waited %v, want %d waits", waits, len(want))
	}
	for i, w := range want {
		if waits[i] < w.lo || waits[i] > w.hi {
			t.Errorf("wait %d = %v, want between %v and %v (all: %v)", i+1, waits[i], w.lo, w.hi, waits)
		}
	}
}

// TestStuckTargetNeverBlocksSend checks that Send returns at once while a
// target hangs, that a full queue drops its oldest alerts and counts them,
// and that the newest reach the target once it answers again.
func TestStuckTargetNeverBlocksSend(t *testing.T) {
	release := make(chan struct{})
	rcv := &receiver{answer: func(n int, w http.ResponseWriter) {
		if n == 0 {
			<-release
		}
	}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	defer close(release)
	fast := httptest.NewServer(&receiver{})
	defer fast.Close()
	reg := prometheus.NewRegistry()
	const queue, sent = 5, 200
	n := start(t, Config{QueueSize: queue, Webhooks: []WebhookConfig{
		{Name: "stuck", URL: srv.URL, Timeout: time.Minute},
		{Name: "fast", URL: fast.URL},
	}}, Options{Registerer: reg})
	if err := n.Send(alert("DeniedBurst", "api-0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first request to hang", func() bool { return len(rcv.requests()) == 1 })

	done := make(chan struct{})
	go func() {
		for i := 1; i < sent; i++ {
			n.Send(alert("DeniedBurst", fmt.Sprintf("api-%d", i)))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked behind a target that does not answer")
	}
	st := n.Status()[0]
	if st.Pending != queue || st.Dropped != sent-queue {
		t.Errorf("stuck target status = %+v; want %d pending and %d dropped", st, queue, sent-queue)
	}
	if got := value(t, n.metrics.dropped.WithLabelValues("stuck", reasonQueueFull)); got != sent-queue {
		t.Errorf("aitrail_alert_deliveries_dropped_total{target=stuck} = %v, want %d", got, sent-queue)
	}
	if got := value(t, n.metrics.queue.WithLabelValues("stuck")); got != queue {
		t.Errorf("aitrail_alert_delivery_queue{target=stuck} = %v, want %d", got, queue)
	}
	if got := value(t, n.metrics.firing); got != sent {
		t.Errorf("aitrail_alerts_firing = %v, want %d", got, sent)
	}

	release <- struct{}{}
	waitFor(t, "the newest alerts to be delivered", func() bool { return n.Status()[0].Pending == 0 })
	reqs := rcv.requests()
	var last webhookMessage
	if err := json.Unmarshal(reqs[len(reqs)-1].body, &last); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range last.Alerts {
		got = append(got, a.Labels["instance"])
	}
	if want := "api-195 api-196 api-197 api-198 api-199"; strings.Join(got, " ") != want || len(reqs) != 2 {
		t.Errorf("after the hang the receiver got %d requests, the last with %v; want one more with %s", len(reqs), got, want)
	}
}

// TestRejectedAlertsAreDropped checks that alerts a target refuses as
// invalid (a 4xx answer) are not retried for ever but dropped and counted.
func TestRejectedAlertsAreDropped(t *testing.T) {
	rcv := &receiver{answer: func(n int, w http.ResponseWriter) {
		if n == 0 {
			http.Error(w, "bad alert", http.StatusBadRequest)
		}
	}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := start(t, Config{Webhooks: []WebhookConfig{{Name: "oncall", URL: srv.URL}}}, Options{})
	n.Send(alert("DeniedBurst", "api-1"))
	waitFor(t, "the rejection", func() bool { return n.Status()[0].Dropped == 1 })
	n.Send(alert("DeniedBurst", "api-2"))
	waitFor(t, "the next alert", func() bool { return n.Status()[0].Delivered == 1 })
	st := n.Status()[0]
	if st.Failed != 1 || st.Pending != 0 || !strings.Contains(st.LastErrorMessage, "400") {
		t.Errorf("status = %+v; want one failure (400), nothing pending", st)
	}
	if got := value(t, n.metrics.dropped.WithLabelValues("oncall", reasonRejected)); got != 1 {
		t.Errorf("aitrail_alert_deliveries_dropped_total{reason=rejected} = %v, want 1", got)
	}
}

// TestAlertmanagerResend checks, against a stand-in for Alertmanager, that
// a firing alert is posted again every resend interval without endsAt, and
// that resolving it posts endsAt.
func TestAlertmanagerResend(t *testing.T) {
	rcv := &receiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	n := start(t, Config{ResendInterval: 20 * time.Millisecond, Alertmanagers: []AlertmanagerConfig{{URL: srv.URL + "/am"}}}, Options{})
	a := alert("DeniedBurst", "api-1")
	n.Send(a)
	posted := func() [][]postableAlert {
		var all [][]postableAlert
		for _, r := range rcv.requests() {
			if r.path != "/am/api/v2/alerts" {
				t.Errorf("posted to %s", r.path)
			}
			var batch []postableAlert
			if err := json.Unmarshal(r.body, &batch); err != nil {
				t.Fatal(err)
			}
			all = append(all, batch)
		}
		return all
	}
	waitFor(t, "the alert to be sent three times", func() bool { return len(posted()) >= 3 })
	for _, batch := range posted() {
		if len(batch) != 1 || !batch[0].EndsAt.IsZero() || !batch[0].StartsAt.Equal(t0) || batch[0].Labels["instance"] != "api-1" {
			t.Fatalf("firing alert posted as %+v; want it alone, with its start and no end", batch)
		}
	}
	a.EndsAt = t0.Add(time.Minute)
	n.Send(a)
	waitFor(t, "the resolved alert", func() bool {
		all := posted()
		last := all[len(all)-1]
		return len(last) == 1 && last[0].EndsAt.Equal(a.EndsAt)
	})
	if got := value(t, n.metrics.firing); got != 0 {
		t.Errorf("aitrail_alerts_firing = %v after resolving, want 0", got)
	}
}

// TestSendRefusesInvalidAlerts checks that an alert Alertmanager would
// refuse is refused by Send, with the reason.
func TestSendRefusesInvalidAlerts(t *testing.T) {
	n, err := New(Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    Alert
		want string
	}{
		{"no labels", Alert{StartsAt: t0}, "no labels"},
		{"bad label name", Alert{Labels: map[string]string{"rule-id": "x"}, StartsAt: t0}, `"rule-id"`},
		{"no start", Alert{Labels: map[string]string{"alertname": "x"}}, "no start"},
		{"ends before start", Alert{Labels: map[string]string{"alertname": "x"}, StartsAt: t0, EndsAt: t0.Add(-time.Second)}, "ends before"},
	} {
		if err := n.Send(tc.a); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Send = %v, want an error mentioning %s", tc.name, err, tc.want)
		}
	}
}
