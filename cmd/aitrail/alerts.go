package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"time"
)

// runAlerts lists alerts, or acknowledges one (aitrail alerts ack).
func runAlerts(args []string, stdout, stderr io.Writer) error {
	ack := len(args) > 0 && args[0] == "ack"
	if ack {
		args = args[1:]
	}
	fs := newFlags("alerts", stderr)
	u := fs.String("url", "http://127.0.0.1:8080", "server URL")
	token := tokenFlag(fs, "`token` with the read role (audit or admin to acknowledge) (default $AITRAIL_TOKEN)")
	tenant := fs.String("tenant", "", "only this tenant")
	state := fs.String("state", "", "firing, resolved, acknowledged or unacknowledged")
	rule := fs.String("rule", "", "only this rule")
	severity := fs.String("severity", "", "only this severity")
	jsonOut := fs.Bool("json", false, "print JSON lines")
	id := fs.String("id", "", "with ack: the alert to acknowledge")
	note := fs.String("note", "", "with ack: why")
	tf := addTLSFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *token == "" {
		return usageError{"--token (or $AITRAIL_TOKEN) is required"}
	}
	hc, err := tf.httpClient()
	if err != nil {
		return err
	}
	c := (&queryFlags{url: u, token: token}).clientWith(hc)
	ctx := context.Background()
	if ack {
		if *id == "" {
			return usageError{"ack needs --id"}
		}
		if err := c.AckAlert(ctx, *id, *tenant, *note); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Acknowledged %s.\n", *id)
		return nil
	}
	v := url.Values{}
	for k, p := range map[string]*string{"tenant": tenant, "state": state, "rule": rule, "severity": severity} {
		if *p != "" {
			v.Set(k, *p)
		}
	}
	alerts, err := c.Alerts(ctx, v)
	if err != nil {
		return err
	}
	for _, a := range alerts {
		if *jsonOut {
			b, _ := json.Marshal(a)
			fmt.Fprintln(stdout, string(b))
			continue
		}
		fired := ""
		if a.FiredAt != nil {
			fired = a.FiredAt.Format(time.RFC3339)
		}
		ackd := ""
		if a.Acknowledged {
			ackd = " (acknowledged)"
		}
		fmt.Fprintf(stdout, "%s  %-8s %-8s %-24s %s  %s %s%s\n", fired, a.State, a.Severity, a.Rule, a.Tenant, a.ID, a.Summary, ackd)
	}
	if len(alerts) == 0 && !*jsonOut {
		fmt.Fprintln(stdout, "No alerts.")
	}
	return nil
}
