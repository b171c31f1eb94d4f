package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/index"
)

// Alerts are records: the detector appends alert.fired and alert.resolved
// events, and acknowledging appends alert.acknowledged. Each names its
// alert in resource.id (resource.type "alert"); GET /v1/alerts folds them
// into one entry per alert.

// Alert is one alert as GET /v1/alerts shows it.
type Alert struct {
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Rule     string `json:"rule"`
	RuleHash string `json:"rule_hash,omitempty"`
	Severity string `json:"severity,omitempty"`
	Summary  string `json:"summary,omitempty"`
	Group    string `json:"group,omitempty"`
	// State is firing or resolved.
	State        string     `json:"state"`
	Acknowledged bool       `json:"acknowledged"`
	FiredAt      *time.Time `json:"fired_at,omitempty"`
	ResolvedAt   *time.Time `json:"resolved_at,omitempty"`
	// TriggerIDs are the ids of the events that made it fire.
	TriggerIDs string `json:"trigger_ids,omitempty"`
	// Records are the log indexes of the alert's own records, oldest first.
	Records []uint64 `json:"records"`
	// Acks are the acknowledgements, oldest first.
	Acks []AlertAck `json:"acks,omitempty"`
}

// AlertAck is one acknowledgement of an alert.
type AlertAck struct {
	At      time.Time `json:"at"`
	TokenID string    `json:"token_id"`
	Index   uint64    `json:"index"`
}

// maxAlertRecords bounds the alert records one GET /v1/alerts folds.
const maxAlertRecords = 10_000

// alertParams are the parameters GET /v1/alerts accepts.
var alertParams = map[string]bool{"tenant": true, "state": true, "rule": true, "severity": true, "from": true, "to": true, "limit": true}

// listAlerts handles GET /v1/alerts: the alerts of the tenants the caller
// may see whose records fall between from and to (the last 30 days by
// default), newest first.
func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	v := r.URL.Query()
	if err := checkParams(v, alertParams); err != nil {
		s.writeError(w, r, err)
		return
	}
	state := v.Get("state")
	if !slices.Contains([]string{"", "firing", "resolved", "acknowledged", "unacknowledged"}, state) {
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_query", "state must be firing, resolved, acknowledged or unacknowledged"))
		return
	}
	limit := 100
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_query", "limit must be an integer from 1 to 1000"))
			return
		}
		limit = n
	}
	q := index.Query{Tenants: p.VisibleTenants(), Tenant: v.Get("tenant"), Type: "alert.*", Order: "asc",
		Limit: index.MaxLimit, From: s.Now().Add(-30 * 24 * time.Hour)}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if str := v.Get(t.name); str != "" {
			tm, ok := event.ParseTime(str)
			if !ok {
				s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_query", t.name+" must be an RFC 3339 time of a year from 1 to 9999"))
				return
			}
			*t.dst = tm
		}
	}
	alerts, n, err := s.foldAlerts(r, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := []*Alert{}
	perTenant := map[string]int{}
	for _, a := range slices.Backward(alerts) {
		switch {
		case v.Get("rule") != "" && a.Rule != v.Get("rule"),
			v.Get("severity") != "" && a.Severity != v.Get("severity"),
			state == "firing" && a.State != "firing",
			state == "resolved" && a.State != "resolved",
			state == "acknowledged" && !a.Acknowledged,
			state == "unacknowledged" && a.Acknowledged:
			continue
		}
		if len(out) < limit {
			out = append(out, a)
			perTenant[a.Tenant]++
		}
	}
	tenant := v.Get("tenant")
	if tenant == "" {
		tenant = readTenant
	}
	if err := s.recordRead(r.Context(), w, p, "alerts.list", tenant, perTenant,
		sameAttrs(map[string]any{"log.access.filter": recordedFilter(v, nil), "log.access.alert_records": n})); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"alerts": out, "truncated": n >= maxAlertRecords})
}

// foldAlerts reads the alert records q selects, oldest first, and folds
// them into alerts in the order they first appear. It returns how many
// records it read.
func (s *Server) foldAlerts(r *http.Request, q index.Query) ([]*Alert, int, error) {
	var f alertFolder
	n := 0
	for n < maxAlertRecords {
		page, err := s.Index.Query(r.Context(), q)
		if err != nil {
			return nil, 0, err
		}
		for _, h := range page.Hits {
			n++
			if err := f.add(h); err != nil {
				return nil, 0, err
			}
		}
		if page.NextCursor == "" {
			break
		}
		q.Cursor = page.NextCursor
	}
	return f.order, n, nil
}

// alertFolder folds alert records, given oldest first, into alerts.
type alertFolder struct {
	byID  map[string]*Alert
	order []*Alert
}

func (f *alertFolder) add(h index.Hit) error {
	rec, err := event.ParseRecord(h.Record)
	if err != nil {
		return fmt.Errorf("couldn't parse alert record %d: %w", h.Index, err)
	}
	if rec.Resource == nil || rec.Resource.Type != "alert" || rec.Resource.ID == "" {
		return nil
	}
	if f.byID == nil {
		f.byID = map[string]*Alert{}
	}
	key := rec.Tenant + "\x00" + rec.Resource.ID
	a := f.byID[key]
	if a == nil {
		a = &Alert{ID: rec.Resource.ID, Tenant: rec.Tenant, Records: []uint64{}}
		f.byID[key] = a
		f.order = append(f.order, a)
	}
	a.Records = append(a.Records, h.Index)
	str := func(k string) string { v, _ := rec.Attributes[k].(string); return v }
	at := rec.Time
	switch rec.Type {
	case "alert.fired":
		a.State, a.FiredAt, a.ResolvedAt = "firing", &at, nil
		a.Rule, a.RuleHash, a.Severity = str("alert.rule"), str("alert.rule_hash"), str("alert.severity")
		a.Summary, a.Group, a.TriggerIDs = str("alert.summary"), str("alert.group"), str("alert.trigger_ids")
	case "alert.resolved":
		a.State, a.ResolvedAt = "resolved", &at
		if a.Rule == "" {
			a.Rule, a.Severity = str("alert.rule"), str("alert.severity")
		}
	case "alert.acknowledged":
		a.Acknowledged = true
		a.Acks = append(a.Acks, AlertAck{At: at, TokenID: str("aitrail.token_id"), Index: h.Index})
	}
	return nil
}

// maxAckBody bounds an acknowledgement's body.
const maxAckBody = 64 << 10

// ackAlert handles POST /v1/alerts/{id}/ack (role audit or admin) with an
// optional JSON body {"tenant":"…","note":"…"}: it appends an
// alert.acknowledged record. The note may say anything, so it is kept as
// encrypted content.
func (s *Server) ackAlert(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if !p.Has(authz.RoleAudit) && !p.Has(authz.RoleAdmin) {
		s.writeError(w, r, errorf(http.StatusForbidden, "forbidden", "acknowledging alerts needs the audit or admin role"))
		return
	}
	var body struct {
		Tenant string `json:"tenant"`
		Note   string `json:"note"`
	}
	if r.ContentLength != 0 {
		data, _, err := httpbody.Read(w, r, maxAckBody, "application/json")
		if err == nil && len(data) > 0 {
			err = decodeStrict(data, &body, `{"tenant":…,"note":…}`)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	q := index.Query{Tenants: p.VisibleTenants(), Tenant: body.Tenant, Type: "alert.fired", Order: "asc", Limit: index.MaxLimit}
	alerts, _, err := s.foldAlerts(r, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var found *Alert
	for _, a := range alerts {
		if a.ID == r.PathValue("id") {
			if found != nil {
				s.writeError(w, r, errorf(http.StatusConflict, "conflict", "alerts of several tenants have that id: give \"tenant\""))
				return
			}
			found = a
		}
	}
	if found == nil {
		s.writeError(w, r, errorf(http.StatusNotFound, "not_found", "no such alert"))
		return
	}
	ev := event.Event{
		Type: "alert.acknowledged", Tenant: found.Tenant, Action: found.Rule, Outcome: "success",
		Actor:      &event.Actor{ID: p.TokenID, Type: "service"},
		Resource:   &event.Resource{Type: "alert", ID: found.ID},
		Attributes: map[string]any{"alert.rule": found.Rule, "aitrail.token_id": p.TokenID},
	}
	if body.Note != "" {
		note, _ := json.Marshal(map[string]string{"note": body.Note})
		ev.Content = note
	}
	receipt, err := s.Ingest.Append(r.Context(), system, []event.Event{ev})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"alert": found.ID, "tenant": found.Tenant,
		"event": receipt.Results[0], "checkpoint": string(receipt.Checkpoint)})
}
