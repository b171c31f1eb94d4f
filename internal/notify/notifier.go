package notify

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options are what a Notifier is given besides its configuration.
type Options struct {
	// Logger receives delivery failures and recoveries; nil discards them.
	// Neither webhook URLs nor header values nor tokens are ever logged.
	Logger *slog.Logger
	// Registerer receives the delivery metrics; nil keeps them private.
	Registerer prometheus.Registerer
	// Client sends the requests; nil means a client of its own.
	Client *http.Client

	// wait sleeps for d or until ctx is done, and reports whether d
	// passed; tests replace it to see the backoff without waiting for it.
	wait func(ctx context.Context, d time.Duration) bool
}

// Notifier delivers alerts to every configured target. Its methods are safe
// for concurrent use.
type Notifier struct {
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	wait    func(ctx context.Context, d time.Duration) bool
	metrics *metrics
	targets []*target

	mu     sync.Mutex
	firing map[string]Alert // by fingerprint
}

// New returns a Notifier for cfg (with defaults applied and validated).
// Nothing is delivered until Run is called; alerts sent before wait in the
// targets' queues.
func New(cfg Config, o Options) (*Notifier, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Notifier{cfg: cfg, log: o.Logger, client: o.Client, wait: o.wait, firing: map[string]Alert{}}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.client == nil {
		n.client = &http.Client{}
	}
	if n.wait == nil {
		n.wait = sleep
	}
	for _, am := range cfg.Alertmanagers {
		u, _ := url.Parse(am.URL) // checked by Validate
		n.targets = append(n.targets, newAlertmanager(u, am.Timeout, cfg.QueueSize))
	}
	for _, w := range cfg.Webhooks {
		n.targets = append(n.targets, newWebhook(w, cfg.ExternalURL, cfg.QueueSize))
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, n.targets)
	if err != nil {
		return nil, fmt.Errorf("couldn't register the alert delivery metrics: %w", err)
	}
	n.metrics = m
	return n, nil
}

// Send queues a for delivery to every target and returns at once: it never
// waits for a target. An alert with the labels of one already queued for a
// target replaces it there (the newest state wins); when a target's queue is
// full, its oldest alert is dropped and counted. Sending an alert with
// EndsAt set resolves it. Send returns an error, and queues nothing, only
// when the alert is invalid.
func (n *Notifier) Send(a Alert) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("couldn't send the alert: %w", err)
	}
	a = a.clone()
	fp := a.Fingerprint()
	n.mu.Lock()
	if a.Status() == StatusFiring {
		n.firing[fp] = a
	} else {
		delete(n.firing, fp)
	}
	n.metrics.firing.Set(float64(len(n.firing)))
	n.mu.Unlock()
	for _, t := range n.targets {
		t.enqueue(n.metrics, a, fp)
	}
	return nil
}

// Run delivers queued alerts, and sends firing alerts to Alertmanagers again
// every resend interval, until ctx is done; then it returns once every
// request in flight has ended. Alerts still queued are not delivered. Call
// it once.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, t := range n.targets {
		wg.Go(func() { n.deliverLoop(ctx, t) })
	}
	tick := time.NewTicker(n.cfg.ResendInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
			n.resend()
		}
	}
}

// resend queues every firing alert again for the targets that forget
// alerts they are not reminded of.
func (n *Notifier) resend() {
	n.mu.Lock()
	firing := make(map[string]Alert, len(n.firing))
	for fp, a := range n.firing {
		firing[fp] = a
	}
	n.mu.Unlock()
	for _, t := range n.targets {
		if !t.resend {
			continue
		}
		for fp, a := range firing {
			t.enqueue(n.metrics, a, fp)
		}
	}
}

// Status returns the delivery status of every target, in configuration
// order (Alertmanagers first, then webhooks).
func (n *Notifier) Status() []TargetStatus {
	s := make([]TargetStatus, len(n.targets))
	for i, t := range n.targets {
		s[i] = t.snapshot()
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
