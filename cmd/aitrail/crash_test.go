package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKilledUnderLoadLosesNothing SIGKILLs the real server repeatedly while
// clients write concurrently. Every event that was acknowledged must be in
// the log at the index its receipt named, none may appear twice, and the
// log must verify.
func TestKilledUnderLoadLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test; run without -short")
	}
	data := t.TempDir()
	// Start-up snapshots every 1,000 records (and an eighth of the log),
	// written by syncs ten times a second: starts after the first crash
	// take the log from the newest one.
	config := writeConfig(t, "ledger:\n  snapshot_records: 1000\n  sync_interval: 100ms\n")
	const rounds, workers = 5, 8
	var mu sync.Mutex
	acked := map[string]uint64{}
	var sent, fromSnapshot int

	for round := 0; round < rounds; round++ {
		s := startServer(t, data, "--config", config)
		if round > 0 {
			// Everything acknowledged before the last crash is there.
			if got := s.size(); got < uint64(len(acked)) {
				t.Fatalf("round %d: log has %d records after restart, %d were acknowledged", round, got, len(acked))
			}
		}
		if strings.Contains(s.stderr.String(), "started from the start-up snapshot") {
			fromSnapshot++
		}
		body := func(w, seq int) io.Reader {
			var body bytes.Buffer
			n := 1 + (seq*7+w)%20
			for j := 0; j < n; j++ {
				ev := map[string]any{"id": fmt.Sprintf("r%d-w%d-s%d-%d", round, w, seq, j), "type": "ai.inference",
					"tenant": "crash", "actor": map[string]any{"id": fmt.Sprintf("user-%d", w)}}
				if j%2 == 0 {
					ev["content"] = map[string]any{"prompt": fmt.Sprintf("secret prompt %d/%d/%d", round, w, seq)}
				}
				json.NewEncoder(&body).Encode(ev)
			}
			mu.Lock()
			sent += n
			mu.Unlock()
			return &body
		}
		killUnderLoad(s, workers, time.Duration(300+rand.IntN(700))*time.Millisecond, body, func(r receipt) {
			mu.Lock()
			for _, res := range r.Results {
				acked[res.ID] = res.Index
			}
			mu.Unlock()
		})
	}
	if len(acked) < 100 {
		t.Fatalf("only %d events acknowledged; the load did not run", len(acked))
	}
	t.Logf("%d events sent, %d acknowledged across %d crashes; %d starts from a start-up snapshot", sent, len(acked), rounds, fromSnapshot)
	if fromSnapshot == 0 {
		t.Errorf("no start after a crash took the log from a start-up snapshot")
	}

	s := startServer(t, data, "--config", config)
	s.waitIndexed()
	events := s.allEvents("tenant=crash")
	seen := map[string]uint64{}
	for _, e := range events {
		id := e["id"].(string)
		if _, dup := seen[id]; dup {
			t.Errorf("event %s is in the log twice", id)
		}
		seen[id] = uint64(e["index"].(float64))
	}
	for id, idx := range acked {
		got, ok := seen[id]
		if !ok {
			t.Errorf("acknowledged event %s (index %d) is missing", id, idx)
		} else if got != idx {
			t.Errorf("acknowledged event %s moved from index %d to %d", id, idx, got)
		}
	}
	// Content written before the crashes still decrypts.
	for id := range acked {
		var ev map[string]any
		s.getJSON("/v1/events/"+id, &ev)
		if ev["content"] != nil && ev["decrypted_content"] == nil {
			t.Fatalf("event %s: content not readable after the crashes", id)
		}
		break
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 {
		t.Fatalf("verify after crashes: exit %d\n%s%s", code, out, errOut)
	}
}

// killUnderLoad has workers post the bodies body makes (for worker w, its
// seq-th request) to s until it SIGKILLs s after d, and gives every
// receipt to acked (called from the workers).
func killUnderLoad(s *server, workers int, d time.Duration, body func(w, seq int) io.Reader, acked func(receipt)) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				// Errors are expected: the server is being killed.
				if r, err := postNDJSON(client, s.url, body(w, seq)); err == nil {
					acked(r)
				}
			}
		}()
	}
	time.Sleep(d)
	s.kill()
	close(stop)
	wg.Wait()
}

// TestGracefulStopKeepsEverything checks SIGTERM: exit status 0 and nothing
// acknowledged lost.
func TestGracefulStopKeepsEverything(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	r := s.post(map[string]any{"type": "admin.change", "id": "a"}, map[string]any{"type": "admin.change", "id": "b"})
	s.stop()
	s = startServer(t, data)
	if s.size() != 2 {
		t.Fatalf("size %d after restart, want 2", s.size())
	}
	// It started from the snapshot the stop wrote, and checks the records
	// below it in the background.
	if n := s.metric("aitrail_ledger_snapshot_records"); n != 2 {
		t.Fatalf("aitrail_ledger_snapshot_records = %v after a clean stop, want 2", n)
	}
	for start := time.Now(); s.metric("aitrail_ledger_start_check_running") != 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the check of the records below the start-up snapshot did not end")
		}
	}
	// Idempotent across the restart.
	r2 := s.post(map[string]any{"type": "admin.change", "id": "b"})
	if !r2.Results[0].Duplicate || r2.Results[0].Index != r.Results[1].Index {
		t.Fatalf("re-sent id after restart: %+v", r2.Results[0])
	}
	s.stop()
}

// TestDamageBelowSnapshotStopsServer: a server starting from the start-up
// snapshot of its last clean stop does not read the records below it
// before it listens; it checks them in the background, and a record
// changed on disk stops it with exit status 1, naming the record, as a
// start reading every record would have.
func TestDamageBelowSnapshotStopsServer(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	// More than the newest records a start reads back for followers
	// (16,384), which it checks too.
	for b := range 20 {
		var events []map[string]any
		for i := range 1000 {
			events = append(events, map[string]any{"type": "admin.change", "id": fmt.Sprintf("e%d", b*1000+i), "tenant": "snap"})
		}
		s.post(events...)
	}
	s.waitIndexed() // else the next start reads the keys the index lacks, and finds the damage there
	s.stop()
	if _, err := os.Stat(filepath.Join(data, "log", "start-snapshot")); err != nil {
		t.Fatalf("no start-up snapshot after a clean stop: %v", err)
	}
	unseal(t, data)
	segs, _ := filepath.Glob(filepath.Join(data, "log", "segments", "*.seg"))
	seg, _ := os.ReadFile(segs[0])
	i := bytes.Index(seg, []byte(`"id":"e123"`))
	if i < 0 {
		t.Fatal("event e123 not found in the segment")
	}
	seg[i+len(`"id":"e1`)] = '9' // e123 becomes e193: the frame's checksum no longer matches
	if err := os.WriteFile(segs[0], seg, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr := runChild(t, 30*time.Second, "serve", "--data", data, "--addr", freeAddr(t))
	if code != 1 || !strings.Contains(stderr, "started from the start-up snapshot") ||
		!regexp.MustCompile(`does not match its signed tree: .*record \d+ \(segment`).MatchString(stderr) {
		t.Fatalf("serve on a log damaged below its snapshot: exit %d, want 1 with the record named\n%s", code, stderr)
	}
	// reindex takes the log from the snapshot too, and fails the same way.
	if code, _, stderr := runCLI("reindex", "--data", data); code != 1 || !strings.Contains(stderr, "does not match its signed tree") {
		t.Fatalf("reindex of a log damaged below its snapshot: exit %d, want 1\n%s", code, stderr)
	}
}

// TestKilledServerLeavesZerosThatVerify: a server killed at rest leaves
// its active segment ending in the zeros it wrote ahead of its records
// (ledger.preallocate_bytes); `aitrail verify --data` reads them as the end
// of the log, and the next start keeps every event and cuts them off at a
// clean stop.
func TestKilledServerLeavesZerosThatVerify(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data, "--config", writeConfig(t, "ledger:\n  sync_interval: 20ms\n"))
	var evs []map[string]any
	for i := range 50 {
		evs = append(evs, map[string]any{"type": "api.call", "id": fmt.Sprintf("z%d", i), "content": map[string]any{"n": i}})
	}
	s.post(evs...)
	// Once the watermark covers them, so does the checkpoint file (written
	// first); and the zeros are written in the background, 16 MiB of them
	// (the default preallocate_bytes) by the time the file is that long.
	seg := filepath.Join(data, ledgerDir, "segments", "00000000000000000000.seg")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		w, _ := os.ReadFile(filepath.Join(data, ledgerDir, "tiles-durable"))
		if fi, err := os.Stat(seg); string(w) == "50\n" && err == nil && fi.Size() >= 16<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the checkpoint file never covered the 50 events, or the zeros were never written")
		}
	}
	s.kill()

	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 1<<20 || !bytes.Equal(b[len(b)-4096:], make([]byte, 4096)) {
		t.Fatalf("the killed server's segment is %d bytes and does not end in zeros", len(b))
	}
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 || !strings.Contains(out, "50 records") {
		t.Fatalf("verify of the killed server's log: exit %d\n%s%s", code, out, errOut)
	}
	s = startServer(t, data)
	if s.size() != 50 {
		t.Fatalf("size %d after the kill, want 50", s.size())
	}
	s.stop()
	if b2, _ := os.ReadFile(seg); len(b2) >= len(b) || bytes.Equal(b2[len(b2)-16:], make([]byte, 16)) {
		t.Fatalf("after a clean stop the segment is %d bytes (%d with the zeros)", len(b2), len(b))
	}
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 {
		t.Fatalf("verify after the restart: exit %d\n%s%s", code, out, errOut)
	}
}

// TestReadYourWrite: an acknowledged event can be fetched by id at once,
// before the query index has applied it (the index gathers records for 50
// ms), which is what a client that records and then reads back expects.
func TestReadYourWrite(t *testing.T) {
	s := startServer(t, t.TempDir())
	for i := range 20 {
		id := fmt.Sprintf("ryw-%d", i)
		s.post(map[string]any{"type": "api.call", "tenant": "acme", "id": id})
		var got map[string]any
		if code, body := s.do("GET", "/v1/events/"+id+"?proof=true", adminToken, "", nil); code != 200 {
			t.Fatalf("GET of %s right after its acknowledgement: %d %s", id, code, body)
		} else if err := json.Unmarshal(body, &got); err != nil || got["id"] != id || got["proof"] == nil {
			t.Fatalf("GET of %s: %s", id, body)
		}
	}
}

// TestKilledWhileTilePacksFill SIGKILLs the real server at random moments
// while batched ingest fills its tile packs past the end of a pack (65,536
// records) and the sync loop makes tiles durable every 20 ms, so that
// crashes leave packs written past the durable watermark and packs just
// completed. Every start must recover (cutting the packs back), every
// acknowledged event must stay at its index, the complete packs must end
// up sealed, and the log must verify offline and through its served tiles.
func TestKilledWhileTilePacksFill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test; run without -short")
	}
	data := t.TempDir()
	cfg := writeConfig(t, "ledger:\n  sync_interval: 20ms\n")
	const target = 2*65_536 + 5_000 // past the end of two packs of level 0
	var mu sync.Mutex
	acked := map[string]uint64{} // a sample: the first event of each request
	var size uint64
	rounds := 0
	for ; size < target || rounds < 3; rounds++ {
		round := rounds
		if round == 12 {
			t.Fatalf("only %d records after %d rounds; the load did not run", size, round)
		}
		s := startServer(t, data, "--config", cfg)
		if size = s.size(); size < uint64(len(acked)) {
			t.Fatalf("round %d: log has %d records after restart, %d sampled events were acknowledged", round, size, len(acked))
		}
		body := func(w, seq int) io.Reader {
			var body bytes.Buffer
			for j := range 1000 {
				fmt.Fprintf(&body, `{"id":"p%d-w%d-s%d-%d","type":"api.call","tenant":"packs"}`+"\n", round, w, seq, j)
			}
			return &body
		}
		killUnderLoad(s, 4, time.Duration(500+rand.IntN(1000))*time.Millisecond, body, func(r receipt) {
			if len(r.Results) > 0 {
				mu.Lock()
				acked[r.Results[0].ID] = r.Results[0].Index
				mu.Unlock()
			}
		})
		size = 0
		for _, idx := range acked {
			size = max(size, idx+1)
		}
	}

	t.Logf("%d records across %d crashes; %d acknowledged requests sampled", size, rounds, len(acked))
	s := startServer(t, data, "--config", cfg)
	if got := s.size(); got < size {
		t.Fatalf("log has %d records after the last restart; events up to index %d were acknowledged", got, size-1)
	}
	// Read once the index has caught up: the load may have left it more
	// records behind than the server finds unindexed events among.
	s.waitIndexed()
	for id, idx := range acked {
		var ev map[string]any
		if s.getJSON("/v1/events/"+id, &ev); ev["index"] != float64(idx) {
			t.Fatalf("acknowledged event %s was at index %d, now %v", id, idx, ev["index"])
		}
	}
	_, key := s.do("GET", "/log/key", "", "", nil)
	if code, out, errOut := runCLI("verify", "--url", s.url, "--key", strings.TrimSpace(string(key)), "--token", adminToken); code != 0 {
		t.Fatalf("verify --url after crashes: exit %d\n%s%s", code, out, errOut)
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 {
		t.Fatalf("verify --data after crashes: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := runCLI("status", "--data", data)
	m := regexp.MustCompile(`complete tile packs: (\d+), read-only (\d+)`).FindStringSubmatch(out)
	if n, _ := strconv.Atoi(m[1]); code != 0 || m == nil || m[1] != m[2] || n < 2 {
		t.Fatalf("status after crashes: exit %d\n%s%s\nwant the complete tile packs (two or more) all sealed", code, out, errOut)
	}
}

// TestKilledWithIdsInNoOrderKeepsIdempotency: ids in no order (as OTLP span
// ids and UUIDv4s are) over several parts of the query index's id index,
// the server SIGKILLed under load: after the restart every acknowledged id
// sent again is a duplicate at the index its receipt named, found through
// the id filters the index stored before the crash and the one of its open
// part it rebuilt, and ids never sent are stored.
func TestKilledWithIdsInNoOrderKeepsIdempotency(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test; run without -short")
	}
	data := t.TempDir()
	s := startServer(t, data)
	var mu sync.Mutex
	acked := map[string]uint64{}
	keep := func(r receipt) {
		mu.Lock()
		defer mu.Unlock()
		for _, res := range r.Results {
			acked[res.ID] = res.Index
		}
	}
	// batch makes n events with random ids.
	batch := func(n int) (io.Reader, []string) {
		var body bytes.Buffer
		ids := make([]string, n)
		for j := range ids {
			ids[j] = fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
			fmt.Fprintf(&body, `{"id":%q,"type":"ai.inference","tenant":"crash"}`+"\n", ids[j])
		}
		return &body, ids
	}
	client := &http.Client{Timeout: 30 * time.Second}
	for range 40 { // 40,000 events: two complete parts of 16,384 and an open one
		body, _ := batch(1000)
		r, err := postNDJSON(client, s.url, body)
		if err != nil {
			t.Fatal(err)
		}
		keep(r)
	}
	killUnderLoad(s, 8, time.Duration(300+rand.IntN(700))*time.Millisecond, func(w, seq int) io.Reader {
		body, _ := batch(200)
		return body
	}, keep)
	if len(acked) < 40_000 {
		t.Fatalf("%d events acknowledged, want at least 40,000", len(acked))
	}

	s = startServer(t, data)
	s.waitIndexed()
	ids := slices.Collect(maps.Keys(acked))
	for chunk := range slices.Chunk(ids, 1000) {
		var body bytes.Buffer
		for _, id := range chunk {
			fmt.Fprintf(&body, `{"id":%q,"type":"ai.inference","tenant":"crash"}`+"\n", id)
		}
		r, err := postNDJSON(client, s.url, &body)
		if err != nil {
			t.Fatal(err)
		}
		for _, res := range r.Results {
			if !res.Duplicate || res.Index != acked[res.ID] {
				t.Fatalf("acknowledged id %s sent again after the crash: index %d, duplicate %v; want a duplicate at %d",
					res.ID, res.Index, res.Duplicate, acked[res.ID])
			}
		}
	}
	// Most of them were found by querying the index (the rest, past its
	// cursor at the restart, the log remembers).
	_, metrics := s.do("GET", "/metrics", "", "", nil)
	if m := regexp.MustCompile(`(?m)^aitrail_ledger_key_lookups_total (\d+)$`).FindSubmatch(metrics); m == nil || string(m[1]) == "0" {
		t.Fatalf("no ingest request queried the index for ids sent again: %q", m)
	}
	t.Logf("%d events acknowledged, sent again after the crash", len(acked))

	body, _ := batch(100)
	r, err := postNDJSON(client, s.url, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range r.Results {
		if res.Duplicate {
			t.Fatalf("new id %s taken for a duplicate", res.ID)
		}
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 {
		t.Fatalf("verify after the crash: exit %d\n%s%s", code, out, errOut)
	}
}
