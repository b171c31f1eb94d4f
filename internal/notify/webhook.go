package notify

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// webhookVersion is the version of Alertmanager's webhook payload sent.
const webhookVersion = "4"

// webhookMessage is Alertmanager's v4 webhook payload, field for field
// (Alertmanager's notify/webhook.Message and template.Data), so that
// receivers written for Alertmanager read it unchanged.
type webhookMessage struct {
	Receiver          string            `json:"receiver"`
	Status            string            `json:"status"`
	Alerts            []webhookAlert    `json:"alerts"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   uint64            `json:"truncatedAlerts"`
}

// webhookAlert is one alert of a webhookMessage. EndsAt is written as
// 0001-01-01T00:00:00Z while the alert fires, as Alertmanager writes it.
type webhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// newWebhook returns a target posting v4 webhook payloads to cfg.URL, one
// request per alert name, as an Alertmanager route grouping by alertname
// would.
func newWebhook(cfg WebhookConfig, externalURL string, limit int) *target {
	t := newTarget(cfg.Name, "webhook", limit)
	t.timeout = cfg.Timeout
	t.together = func(a, b Alert) bool { return a.Labels[model.AlertNameLabel] == b.Labels[model.AlertNameLabel] }
	t.request = func(ctx context.Context, alerts []Alert) (*http.Request, error) {
		req, err := jsonRequest(ctx, cfg.URL, webhookPayload(cfg.Name, externalURL, alerts))
		if err != nil {
			return nil, err
		}
		for k, v := range cfg.Headers {
			req.Header.Set(k, v)
		}
		if cfg.BearerTokenFile != "" {
			token, err := os.ReadFile(cfg.BearerTokenFile)
			if err != nil {
				return nil, fmt.Errorf("couldn't read the bearer token file: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		}
		return req, nil
	}
	return t
}

// webhookPayload returns the message for alerts, which share an alert name.
func webhookPayload(receiver, externalURL string, alerts []Alert) webhookMessage {
	m := webhookMessage{
		Receiver:          receiver,
		Status:            StatusResolved,
		Alerts:            make([]webhookAlert, len(alerts)),
		GroupLabels:       map[string]string{},
		CommonLabels:      common(alerts, func(a Alert) map[string]string { return a.Labels }),
		CommonAnnotations: common(alerts, func(a Alert) map[string]string { return a.Annotations }),
		ExternalURL:       externalURL,
		Version:           webhookVersion,
	}
	if name, ok := alerts[0].Labels[model.AlertNameLabel]; ok {
		m.GroupLabels[model.AlertNameLabel] = name
	}
	// The key Alertmanager gives a group of its root route ("{}").
	m.GroupKey = "{}:" + toLabelSet(m.GroupLabels).String()
	for i, a := range alerts {
		if a.Status() == StatusFiring {
			m.Status = StatusFiring
		}
		m.Alerts[i] = webhookAlert{
			Status:       a.Status(),
			Labels:       a.Labels,
			Annotations:  copyMap(a.Annotations), // never null
			StartsAt:     a.StartsAt.UTC(),
			EndsAt:       a.EndsAt.UTC(),
			GeneratorURL: a.GeneratorURL,
			Fingerprint:  a.Fingerprint(),
		}
	}
	return m
}

// common returns the pairs that every alert's map holds with the same value.
func common(alerts []Alert, of func(Alert) map[string]string) map[string]string {
	c := copyMap(of(alerts[0]))
	for _, a := range alerts[1:] {
		m := of(a)
		for k, v := range c {
			if w, ok := m[k]; !ok || w != v {
				delete(c, k)
			}
		}
	}
	return c
}

func toLabelSet(m map[string]string) model.LabelSet {
	ls := make(model.LabelSet, len(m))
	for k, v := range m {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}
