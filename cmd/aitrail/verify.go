package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ledger"
)

func runVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("verify", stderr)
	data := fs.String("data", "", "verify this data directory offline and completely")
	url := fs.String("url", "", "verify the log served at this URL")
	key := fs.String("key", "", "the log's public key (name+hash+base64); required with --url, defaults to <data>/log.pub with --data")
	trusted := fs.String("trusted", "", "with --url: file holding the last trusted checkpoint; updated on success")
	tf := addTLSFlags(fs)
	token := tokenFlag(fs, "with --url: `token` with the audit role, to fetch and re-hash entries (default $AITRAIL_TOKEN)")
	quiet := fs.Bool("quiet", false, "print nothing on success")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case (*data == "") == (*url == ""):
		return usageError{"give exactly one of --data or --url"}
	case *url != "" && *key == "":
		return usageError{"--url needs --key"}
	case *data != "" && *trusted != "":
		return usageError{"--trusted goes with --url"}
	}
	var v note.Verifier
	var err error
	if *key != "" {
		if v, err = note.NewVerifier(strings.TrimSpace(*key)); err != nil {
			return usageError{fmt.Sprintf("--key: %v", err)}
		}
	}
	if *data != "" {
		return verifyData(*data, v, *quiet, stdout, stderr)
	}
	hc, err := tf.httpClient()
	if err != nil {
		return err
	}
	return verifyURL(client.New(*url, *token).WithHTTPClient(hc), *token != "", v, *trusted, *quiet, stdout, stderr)
}

func verifyData(dir string, v note.Verifier, quiet bool, stdout, stderr io.Writer) error {
	if err := isDataDir(dir); err != nil {
		return err
	}
	lock, err := lockData(dir, false)
	if err != nil {
		return fmt.Errorf("%w, or use verify --url against the running server", err)
	}
	if lock != nil {
		defer lock.Close()
	}
	if v == nil {
		if v, err = readVerifier(dir); err != nil {
			return err
		}
	}
	start := time.Now()
	rep, err := ledger.Verify(filepath.Join(dir, ledgerDir), ledger.VerifyOptions{
		Verifier:   v,
		CheckEntry: checkContentDigest,
		Progress: func(done uint64) {
			if !quiet {
				fmt.Fprintf(stderr, "verified %d records…\n", done)
			}
		},
	})
	var ve *ledger.VerifyError
	if errors.As(err, &ve) {
		return exitError{1, fmt.Sprintf("FAILED: %v", ve)}
	}
	if err != nil {
		return err
	}
	took := time.Since(start)
	// The query index is derived from the log, but a damaged one answers
	// queries from part of it without a word.
	ixRep, err := index.Check(context.Background(), filepath.Join(dir, indexFile), rep.Records)
	if errors.Is(err, index.ErrDamaged) {
		return exitError{1, fmt.Sprintf("FAILED: %v; the log itself verified (%d records): rebuild the index with aitrail reindex --data %s", err, rep.Records, dir)}
	}
	if err != nil {
		return err
	}
	if !quiet {
		fmt.Fprintf(stdout, "OK: %d records verified in %s (%.0f records/s); checkpoint covers %d records, root %x; %d full and %d partial tiles checked\n",
			rep.Records, took.Round(time.Millisecond), float64(rep.Records)/took.Seconds(), rep.Checkpoint.Size,
			rep.Checkpoint.Hash[:], rep.TilesChecked, rep.PartialChecked)
		switch {
		case ixRep.Missing:
			fmt.Fprintln(stdout, "Query index: none yet (the server builds it when it starts)")
		case ixRep.Stale:
			fmt.Fprintln(stdout, "Query index: of another version of aitrail (the server rebuilds it when it starts)")
		case ixRep.Records == rep.Records:
			fmt.Fprintln(stdout, "Query index: intact, every record indexed")
		default:
			fmt.Fprintf(stdout, "Query index: intact, %d of the %d records indexed (the server indexes the rest when it starts)\n", ixRep.Records, rep.Records)
		}
	}
	return nil
}

// checkContentDigest checks that a record and the blob stored beside it
// agree: content referenced iff present, and the digest matches.
func checkContentDigest(_ uint64, record, blob []byte) error {
	digest, hasRef := event.ContentDigest(record)
	switch {
	case !hasRef && len(blob) > 0:
		return errors.New("content is stored but the record does not reference it")
	case hasRef && len(blob) == 0:
		return errors.New("the record references content that is missing")
	case hasRef && crypto.Digest(blob) != digest:
		return fmt.Errorf("stored content does not match the digest %s", digest)
	}
	return nil
}

func verifyURL(c *client.Client, entries bool, v note.Verifier, trustedPath string, quiet bool, stdout, stderr io.Writer) error {
	var trusted []byte
	if trustedPath != "" {
		var err error
		trusted, err = os.ReadFile(trustedPath)
		if errors.Is(err, fs.ErrNotExist) {
			trusted = nil
		} else if err != nil {
			return err
		}
	}
	res, err := c.Verify(context.Background(), v, client.VerifyOptions{
		Trusted: trusted,
		Entries: entries,
		Progress: func(done, total uint64) {
			if !quiet && total > 0 && (done%100_000 < 256 || done == total) {
				fmt.Fprintf(stderr, "re-hashed %d of %d entries…\n", done, total)
			}
		},
	})
	if err != nil {
		// The server not answering (unreachable, refused, TLS, HTTP for
		// HTTPS) or answering with an error says nothing of the log.
		var ae *client.APIError
		var ue *url.Error
		if errors.As(err, &ae) || errors.As(err, &ue) {
			return err
		}
		return exitError{1, fmt.Sprintf("FAILED: %v", err)}
	}
	if trustedPath != "" {
		if err := replaceFile(trustedPath, res.Checkpoint, 0o644); err != nil {
			return fmt.Errorf("couldn't save the trusted checkpoint: %w", err)
		}
	}
	if !quiet {
		fmt.Fprintf(stdout, "OK: log has %d records", res.Size)
		if res.From > 0 {
			fmt.Fprintf(stdout, "; consistent with the trusted checkpoint of %d records", res.From)
		}
		if entries {
			fmt.Fprintf(stdout, "; %d new entries re-hashed", res.EntriesChecked)
		} else {
			fmt.Fprint(stdout, "; entries not re-hashed (pass --token with the audit role to do so)")
		}
		fmt.Fprintln(stdout)
	}
	return nil
}
