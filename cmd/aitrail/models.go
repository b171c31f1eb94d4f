package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/aitrail/aitrail/client"
)

// runModels prints the model deployment registry: the deployments in force,
// or with --history every deploy and retire.
func runModels(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("models", stderr)
	serverURL := fs.String("url", "http://127.0.0.1:8080", "server URL")
	token := tokenFlag(fs, "`token` with the read role (default $AITRAIL_TOKEN)")
	tenant := fs.String("tenant", "", "only this tenant")
	name := fs.String("name", "", "only this model name")
	env := fs.String("environment", "", "only this deployment environment")
	history := fs.Bool("history", false, "print every deploy and retire instead of the deployments in force")
	asJSON := fs.Bool("json", false, "print the models as JSON, one per line")
	tf := addTLSFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *token == "" {
		return usageError{"--token (or $AITRAIL_TOKEN) is required"}
	}
	v := url.Values{}
	for k, p := range map[string]*string{"tenant": tenant, "name": name, "environment": env} {
		if *p != "" {
			v.Set(k, *p)
		}
	}
	hc, err := tf.httpClient()
	if err != nil {
		return err
	}
	models, err := client.New(*serverURL, *token).WithHTTPClient(hc).Models(context.Background(), v)
	if err != nil {
		return err
	}
	if *asJSON {
		for _, m := range models {
			b, _ := json.Marshal(m)
			fmt.Fprintln(stdout, string(b))
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tMODEL\tACTION\tVERSION\tENVIRONMENT\tSERVICE\tTIME\tBY\tINDEX")
	for _, m := range models {
		list := m.Current
		if *history {
			list = m.History
		}
		for _, d := range list {
			model := d.Name
			if d.Provider != "" {
				model = d.Provider + ":" + d.Name
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", tableCell(d.Tenant), tableCell(model), tableCell(d.Action), tableCell(d.Version),
				tableCell(d.Environment), tableCell(d.Service), d.Time.Format(time.RFC3339), tableCell(d.Actor), d.Index)
		}
	}
	return tw.Flush()
}

// tableCell is s as a table shows it: "-" when empty, quoted when it holds a
// control character (a tab or line break in a value from the log would
// otherwise make cells or rows of its own).
func tableCell(s string) string {
	switch {
	case s == "":
		return "-"
	case strings.ContainsFunc(s, unicode.IsControl):
		return strconv.Quote(s)
	}
	return s
}
