package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/ledger"
)

// runStatus reports how a log is protected: offline from its data
// directory (what the files on disk carry), or from a running server's
// /readyz (what the server is doing).
func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	data := fs.String("data", "", "data directory to inspect (read-only; the server may be running)")
	url := fs.String("url", "", "server URL, to show its /readyz details instead")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	tf := addTLSFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case (*data == "") == (*url == ""):
		return usageError{"give exactly one of --data DIR or --url URL"}
	case *url != "":
		hc, err := tf.httpClient()
		if err != nil {
			return err
		}
		return serverStatus(hc, *url, stdout)
	}
	rep, err := ledger.InspectSeals(filepath.Join(*data, ledgerDir))
	if err != nil {
		return fmt.Errorf("couldn't inspect %s: %w", *data, err)
	}
	if *jsonOut {
		return json.NewEncoder(stdout).Encode(map[string]any{"sealing": rep})
	}
	fmt.Fprintf(stdout, "complete segments: %d, read-only %d, immutable %d\n", rep.CompleteSegments, rep.ReadOnlySegments, rep.ImmutableSegments)
	fmt.Fprintf(stdout, "active segment:    %s, append-only %s\n", rep.ActiveSegment, yesNo(rep.ActiveAppendOnly))
	fmt.Fprintf(stdout, "complete tile packs: %d, read-only %d, immutable %d\n", rep.CompletePacks, rep.ReadOnlyPacks, rep.ImmutablePacks)
	fmt.Fprintf(stdout, "open tile packs:     %d, append-only %d\n", rep.OpenPacks, rep.AppendOnlyPacks)
	if rep.OldTileFiles > 0 {
		fmt.Fprintf(stdout, "full tile files of the old layout: %d (the server moves them into tile packs when it starts)\n", rep.OldTileFiles)
	}
	switch {
	case rep.ReadOnlySegments < rep.CompleteSegments || rep.ReadOnlyPacks < rep.CompletePacks:
		fmt.Fprintln(stdout, "sealing: INCOMPLETE — some complete files are writable (ledger.seal off, or the server has not run since they were completed)")
	case rep.ImmutableSegments == rep.CompleteSegments && rep.ImmutablePacks == rep.CompletePacks:
		fmt.Fprintln(stdout, "sealing: immutable — complete files are read-only and carry the immutable attribute")
	default:
		fmt.Fprintln(stdout, "sealing: read-only — complete files are read-only; not all carry the immutable attribute (see the server's log or `aitrail status --url` for why)")
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// serverStatus prints a running server's readiness and details.
func serverStatus(c *http.Client, url string, stdout io.Writer) error {
	c.Timeout = 10 * time.Second
	resp, err := c.Get(strings.TrimRight(url, "/") + "/readyz")
	if err != nil {
		return fmt.Errorf("couldn't reach the server: %w", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("couldn't read /readyz: %w", err)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return exitError{1, "the server is not ready"}
	}
	return nil
}
