package main

import (
	"context"
	"fmt"
	"io"

	"github.com/aitrail/aitrail/client"
)

// runErase erases a subject through a running server.
func runErase(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("erase", stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "server URL")
	token := tokenFlag(fs, "`token` with the erase role on the tenant (default $AITRAIL_TOKEN)")
	tenant := fs.String("tenant", "default", "the subject's tenant")
	subject := fs.String("subject", "", "the subject to erase: an actor id as producers sent it (required)")
	tf := addTLSFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *token == "" || *subject == "" {
		return usageError{"--token (or $AITRAIL_TOKEN) and --subject are required"}
	}
	hc, err := tf.httpClient()
	if err != nil {
		return err
	}
	e, err := client.New(*url, *token).WithHTTPClient(hc).EraseSubject(context.Background(), *tenant, *subject)
	if err != nil {
		return err
	}
	if e.Pseudonym == "" && e.KeysDestroyed == 0 {
		fmt.Fprintf(stdout, "Nothing to erase: tenant %s has no keys for that subject (unknown, or erased before). Recorded as record %d.\n", e.Tenant, e.Event.Index)
		return nil
	}
	fmt.Fprintf(stdout, "Erased: %d keys destroyed, %d index rows scrubbed; the subject's records now carry the unlinkable pseudonym %s. Recorded as record %d.\n",
		e.KeysDestroyed, e.IndexRowsScrubbed, e.Pseudonym, e.Event.Index)
	return nil
}
