package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aitrail/aitrail/internal/config"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ledger"
)

// runReindex empties the query index and rebuilds it from the log. The
// server must be stopped.
func runReindex(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reindex", stderr)
	data := fs.String("data", config.DefaultDataDir, "data directory")
	src := addKeyFlags(fs)
	fullText := fs.Bool("full-text", false, "build the full-text index too (as index.full_text: true in the server's config)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := isDataDir(*data); err != nil {
		return err
	}
	lock, err := lockData(*data, true)
	if err != nil {
		return err
	}
	defer lock.Close()
	kek, err := masterKey(*data, *src, false)
	if err != nil {
		return err
	}
	signer, verifier, _, err := logKeys(*data, config.DefaultLogName, kek, false)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	led, err := ledger.Open(filepath.Join(*data, ledgerDir), ledger.Options{
		Origin: verifier.Name(), Signer: signer, Verifier: verifier, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("couldn't open the log: %w", err)
	}
	defer led.Close()
	// The index is rebuilt from scratch, so start from fresh files: that
	// also repairs an index file too damaged to open.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(filepath.Join(*data, indexFile+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("couldn't remove the old index: %w", err)
		}
	}
	idx, err := openIndex(*data, led, index.Options{FullText: *fullText, Logger: log})
	if err != nil {
		return fmt.Errorf("couldn't open the index: %w", err)
	}
	defer idx.Close()
	ctx := context.Background()
	if err := idx.Reset(ctx); err != nil {
		return fmt.Errorf("couldn't empty the index: %w", err)
	}
	total := led.Size()
	fmt.Fprintf(stderr, "reindexing %d records…\n", total)
	start := time.Now()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	last := time.Now()
	done := make(chan struct{})
	go func() {
		ledger.Follow(fctx, led, idx, ledger.FollowOptions{
			Name:      "reindex",
			BatchSize: indexBatch,
			Logger:    log,
			OnApply: func(c uint64) {
				if time.Since(last) > 2*time.Second {
					fmt.Fprintf(stderr, "  %d of %d records (%.0f%%)\n", c, total, 100*float64(c)/float64(max(total, 1)))
					last = time.Now()
				}
				if c >= total {
					cancel()
				}
			},
		})
		close(done)
	}()
	<-done
	c, err := idx.Cursor(ctx)
	if err != nil {
		return err
	}
	if c < total {
		return fmt.Errorf("reindex stopped at record %d of %d", c, total)
	}
	// A start from the log's start-up snapshot checks the records below it
	// in the background: the index is only as good as they are.
	if err := led.WaitChecked(ctx); err != nil {
		return fmt.Errorf("the log does not match its signed tree: %w", err)
	}
	took := time.Since(start)
	fmt.Fprintf(stdout, "reindexed %d records in %s (%.0f records/s)\n", total, took.Round(time.Millisecond), float64(total)/max(took.Seconds(), 1e-9))
	return nil
}
