package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// Alert is one alert as GET /v1/alerts shows it: folded from its
// alert.fired, alert.resolved and alert.acknowledged records.
type Alert struct {
	ID           string     `json:"id"`
	Tenant       string     `json:"tenant"`
	Rule         string     `json:"rule"`
	RuleHash     string     `json:"rule_hash,omitempty"`
	Severity     string     `json:"severity,omitempty"`
	Summary      string     `json:"summary,omitempty"`
	Group        string     `json:"group,omitempty"`
	State        string     `json:"state"` // firing or resolved
	Acknowledged bool       `json:"acknowledged"`
	FiredAt      *time.Time `json:"fired_at,omitempty"`
	ResolvedAt   *time.Time `json:"resolved_at,omitempty"`
	TriggerIDs   string     `json:"trigger_ids,omitempty"`
	Records      []uint64   `json:"records"`
}

// Alerts runs GET /v1/alerts with the given filters (tenant, state, rule,
// severity, from, to, limit).
func (c *Client) Alerts(ctx context.Context, filters url.Values) ([]Alert, error) {
	var r struct {
		Alerts []Alert `json:"alerts"`
	}
	if err := c.getJSON(ctx, "/v1/alerts", filters, &r); err != nil {
		return nil, err
	}
	return r.Alerts, nil
}

// AckAlert acknowledges alert id (of tenant, if ids collide across the
// caller's tenants) with a note; it needs the audit or admin role.
func (c *Client) AckAlert(ctx context.Context, id, tenant, note string) error {
	body, _ := json.Marshal(map[string]string{"tenant": tenant, "note": note})
	_, err := c.do(ctx, http.MethodPost, "/v1/alerts/"+url.PathEscape(id)+"/ack", body, "application/json")
	return err
}
