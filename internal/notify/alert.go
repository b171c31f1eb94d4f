// Package notify delivers alerts to the systems operators already watch:
// Prometheus Alertmanager (its v2 API) and generic webhooks (Alertmanager's
// v4 webhook payload, so that any receiver written for Alertmanager works
// unchanged).
//
// Delivery never blocks the caller: [Notifier.Send] only queues, and each
// target has its own bounded queue, worker, retries with exponential backoff
// and jitter, and counters. When a queue is full the oldest alert waiting in
// it is dropped and counted. A target that is down and comes back gets what
// is still waiting for it.
//
// The package must never import the HTTP API, the wiring in cmd, a storage
// backend or a database driver: alerts are handed to it, and it only talks
// to the targets it is given.
package notify

import (
	"errors"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
)

// The two states of an alert, as Alertmanager names them.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Alert is one alert, modelled on Alertmanager's: its labels identify it,
// and the same labels sent again update the same alert.
type Alert struct {
	// Labels identify the alert; "alertname" names it. Label names match
	// [a-zA-Z_][a-zA-Z0-9_]*, as Alertmanager requires.
	Labels map[string]string
	// Annotations carry information that does not identify the alert,
	// such as a summary or a link to a runbook.
	Annotations map[string]string
	// StartsAt is when the alert began firing.
	StartsAt time.Time
	// EndsAt is when the alert was resolved; zero while it fires.
	EndsAt time.Time
	// GeneratorURL links back to what raised the alert (a rule, a query).
	GeneratorURL string
}

// Status returns StatusResolved when EndsAt is set, StatusFiring otherwise.
func (a Alert) Status() string {
	if a.EndsAt.IsZero() {
		return StatusFiring
	}
	return StatusResolved
}

// Fingerprint returns the hash of the alert's labels that Alertmanager
// computes for the same labels (16 hexadecimal digits), so that an alert can
// be found by it in Alertmanager and in webhook payloads.
func (a Alert) Fingerprint() string {
	return model.Fingerprint(model.LabelsToSignature(a.Labels)).String()
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate returns every reason Alertmanager would refuse the alert, joined.
func (a Alert) Validate() error {
	var errs []error
	if len(a.Labels) == 0 {
		errs = append(errs, errors.New("alert has no labels"))
	}
	for k, v := range a.Labels {
		if !labelName.MatchString(k) {
			errs = append(errs, fmt.Errorf("label name %q is not a valid Prometheus label name", k))
		}
		if !utf8.ValidString(v) {
			errs = append(errs, fmt.Errorf("label %s: value is not valid UTF-8", k))
		}
	}
	for k, v := range a.Annotations {
		if !labelName.MatchString(k) {
			errs = append(errs, fmt.Errorf("annotation name %q is not a valid Prometheus label name", k))
		}
		if !utf8.ValidString(v) {
			errs = append(errs, fmt.Errorf("annotation %s: value is not valid UTF-8", k))
		}
	}
	if a.StartsAt.IsZero() {
		errs = append(errs, errors.New("alert has no start time"))
	}
	if !a.EndsAt.IsZero() && a.EndsAt.Before(a.StartsAt) {
		errs = append(errs, errors.New("alert ends before it starts"))
	}
	return errors.Join(errs...)
}

// clone returns a copy of a that shares no maps with it, so that a caller
// changing its maps after Send cannot change what is delivered.
func (a Alert) clone() Alert {
	c := a
	c.Labels = copyMap(a.Labels)
	c.Annotations = copyMap(a.Annotations)
	return c
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
