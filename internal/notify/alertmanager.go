package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// postableAlert is one element of the array Alertmanager's
// POST /api/v2/alerts accepts. A firing alert carries no endsAt: Alertmanager
// then keeps it for its resolve_timeout, which is why firing alerts are sent
// again every resend interval.
type postableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// newAlertmanager returns a target posting to base's /api/v2/alerts.
func newAlertmanager(base *url.URL, timeout time.Duration, limit int) *target {
	endpoint := base.JoinPath("api", "v2", "alerts").String()
	t := newTarget(base.Redacted(), "alertmanager", limit)
	t.resend = true
	t.timeout = timeout
	t.together = func(a, b Alert) bool { return true }
	t.request = func(ctx context.Context, alerts []Alert) (*http.Request, error) {
		body := make([]postableAlert, len(alerts))
		for i, a := range alerts {
			body[i] = postableAlert{Labels: a.Labels, Annotations: a.Annotations,
				StartsAt: a.StartsAt.UTC(), EndsAt: a.EndsAt.UTC(), GeneratorURL: a.GeneratorURL}
		}
		return jsonRequest(ctx, endpoint, body)
	}
	return t
}

// jsonRequest returns a POST of v as JSON.
func jsonRequest(ctx context.Context, endpoint string, v any) (*http.Request, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("couldn't encode the alerts: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("couldn't build the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}
