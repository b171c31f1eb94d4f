package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIndexMaxLag checks index.max_lag on the real server: while the query
// index is further behind than the limit, a producer's append waits for it
// (counted in /metrics) and is then stored; nothing is refused or lost.
func TestIndexMaxLag(t *testing.T) {
	s := startServer(t, t.TempDir(), "--config", writeConfig(t, "index:\n  max_lag: 10\n"))
	waits := func() string {
		_, metrics := s.do("GET", "/metrics", "", "", nil)
		for _, line := range strings.Split(string(metrics), "\n") {
			if v, ok := strings.CutPrefix(line, "aitrail_ingest_index_waits_total "); ok {
				return v
			}
		}
		t.Fatal("/metrics lacks aitrail_ingest_index_waits_total")
		return ""
	}
	if w := waits(); w != "0" {
		t.Fatalf("waits before any load: %s", w)
	}
	// A batch of 500 puts the index 500 records behind until it applies
	// them (it lingers a little to batch), so an append sent right after
	// must wait. Retry in case the index was quicker than the second append.
	sent := 0
	for try := 0; try < 50 && waits() == "0"; try++ {
		batch := make([]map[string]any, 500)
		for i := range batch {
			batch[i] = map[string]any{"id": fmt.Sprintf("lag-%d-%d", try, i), "type": "api.call"}
		}
		s.post(batch...)
		s.post(map[string]any{"id": fmt.Sprintf("after-%d", try), "type": "api.call"})
		sent += len(batch) + 1
	}
	if waits() == "0" {
		t.Fatal("no append waited for the index although it was 500 records behind a limit of 10")
	}
	s.waitIndexed()
	if got := len(s.allEvents("type=api.call")); got != sent {
		t.Fatalf("%d events indexed, %d acknowledged", got, sent)
	}
	s.stop()
}

// TestIndexBatchFor: the index applies large transactions unless
// index.max_lag holds producers back, and then a quarter of the limit.
func TestIndexBatchFor(t *testing.T) {
	for _, tc := range []struct {
		maxLag uint64
		want   int
	}{{0, indexBatch}, {1, followBatch}, {20_000, followBatch}, {100_000, 25_000}, {1 << 40, indexBatch}} {
		if got := indexBatchFor(tc.maxLag); got != tc.want {
			t.Errorf("indexBatchFor(%d) = %d, want %d", tc.maxLag, got, tc.want)
		}
	}
}

// TestIndexedMeansQueryable: once /readyz reports no index lag, filtered
// queries find every acknowledged event, batches that add many values to
// the open block's postings included.
func TestIndexedMeansQueryable(t *testing.T) {
	s := startServer(t, t.TempDir())
	for round := range 3 {
		batch := make([]map[string]any, 600)
		for i := range batch {
			batch[i] = map[string]any{"id": fmt.Sprintf("q-%d-%d", round, i), "type": "api.call",
				"actor": map[string]any{"id": fmt.Sprintf("svc-%d-%d", round, i), "type": "service"}}
		}
		s.post(batch...)
		s.waitIndexed()
		for _, i := range []int{0, 599} {
			if got := s.allEvents(fmt.Sprintf("actor=svc-%d-%d", round, i)); len(got) != 1 {
				t.Fatalf("round %d: the index reports no lag, but actor svc-%d-%d finds %d events, want 1", round, round, i, len(got))
			}
		}
	}
	s.stop()
}

// TestDetectorMaxLag: index.max_lag holds producers back for the alert
// detector too. The detector is stopped by making its state unsavable (a
// non-empty directory where it writes the state's temporary file), so
// that every Apply fails once a save is due: with the index caught up, an
// append past the limit waits and is then refused with 503, storing
// nothing, until the detector can go on.
func TestDetectorMaxLag(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data, "--config", writeConfig(t, "index:\n  max_lag: 10\n"))
	s.post(map[string]any{"id": "first", "type": "api.call"})
	s.waitIndexed()
	blocker := filepath.Join(data, detectorFile+".tmp")
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5200 * time.Millisecond) // the detector saves at most every 5 s: the next Apply saves
	batch := make([]map[string]any, 100)
	for i := range batch {
		batch[i] = map[string]any{"id": fmt.Sprintf("stuck-%d", i), "type": "api.call"}
	}
	s.post(batch...)
	s.waitIndexed()
	body, _ := json.Marshal(map[string]any{"events": []map[string]any{{"id": "refused", "type": "api.call"}}})
	code, resp := s.do("POST", "/v1/events", adminToken, "application/json", body)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("an append with the detector 100 records behind a limit of 10: %d %s, want 503", code, resp)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, resp = s.do("POST", "/v1/events", adminToken, "application/json", body)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appends still refused after the detector could save again: %d %s", code, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.waitIndexed()
	if got := len(s.allEvents("type=api.call")); got != 102 {
		t.Fatalf("%d events stored, want 102 (the refused append stored nothing)", got)
	}
	s.stop()
}
