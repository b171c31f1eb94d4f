package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"golang.org/x/sys/unix"

	"github.com/aitrail/aitrail/internal/fakeprovider"
)

// smallFS mounts a file system of size bytes (tmpfs) for a data directory
// and returns a function that gives it a new size. It needs root, which CI
// has.
func smallFS(t *testing.T, size int64) (string, func(size int64)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system needs root")
	}
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("couldn't mount a small file system: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("couldn't unmount %s: %v", dir, err)
		}
	})
	resize := func(size int64) {
		t.Helper()
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_REMOUNT, fmt.Sprintf("size=%d", size)); err != nil {
			t.Fatalf("couldn't resize the small file system: %v", err)
		}
	}
	return filepath.Join(dir, "data"), resize
}

// fillBody is an NDJSON body of n events of tenant "disk", with about 1 KiB
// of content each, for request r.
func fillBody(r, n int) *bytes.Buffer {
	var body bytes.Buffer
	pad := strings.Repeat("x", 1000)
	for j := range n {
		json.NewEncoder(&body).Encode(map[string]any{"id": fmt.Sprintf("d%d-%d", r, j), "type": "ai.inference",
			"tenant": "disk", "content": map[string]any{"prompt": pad}})
	}
	return &body
}

// errorAnswer posts body to path of s and returns the status, the error
// code of the JSON answer and its Retry-After.
func errorAnswer(t *testing.T, s *server, path, token, contentType string, body []byte, hdr ...string) (int, string, string) {
	t.Helper()
	code, header, answer, err := send(s.client, s.url+path, token, contentType, bytes.NewReader(body), hdr...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(answer, &e)
	return code, e.Error.Code, header.Get("Retry-After")
}

type readiness struct {
	Status  string
	Details struct {
		LedgerError string `json:"ledger_error"`
		Storage     struct {
			FreeBytes     int64 `json:"free_bytes"`
			MinFreeBytes  int64 `json:"min_free_bytes"`
			WritesRefused bool  `json:"writes_refused"`
		}
	}
}

func (s *server) readiness() (int, readiness) {
	s.t.Helper()
	code, body := s.do("GET", "/readyz", "", "", nil)
	var r readiness
	if err := json.Unmarshal(body, &r); err != nil {
		s.t.Fatalf("/readyz: %v: %s", err, body)
	}
	return code, r
}

// TestLowDiskSpaceRefusesIngestUntilFreed fills a small file system up to
// ledger.min_free_bytes: every way in (the API, OTLP, the recording proxy)
// is then refused with 503 insufficient_storage and Retry-After, the
// provider is not called, reads still work, and once space is freed ingest
// goes on without a restart. Nothing acknowledged is lost and the log
// verifies.
func TestLowDiskSpaceRefusesIngestUntilFreed(t *testing.T) {
	data, resize := smallFS(t, 192<<20)
	up := fakeprovider.New()
	t.Cleanup(up.Close)
	const minFree = 128 << 20
	config := writeConfig(t, fmt.Sprintf("ledger:\n  min_free_bytes: %d\n", minFree))
	s := startServerEnv(t, data, []string{"AITRAIL_ADMIN_TOKEN=" + adminToken, "AITRAIL_OPENAI_API_KEY=" + openaiKey},
		"--config", config, "--openai-upstream", up.URL+"/v1")
	if code, r := s.readiness(); code != http.StatusOK || r.Details.Storage.MinFreeBytes != minFree || r.Details.Storage.FreeBytes < minFree {
		t.Fatalf("/readyz at the start: %d %+v", code, r)
	}

	client := &http.Client{Timeout: 10 * time.Second}
	acked := 0
	refused := false
	for r := 0; r < 1000 && !refused; r++ {
		rc, err := postNDJSON(client, s.url, fillBody(r, 100))
		switch {
		case err == nil:
			acked += len(rc.Results)
		case strings.Contains(err.Error(), ": 503"):
			refused = true
		default:
			t.Fatalf("request %d: %v", r, err)
		}
	}
	if !refused {
		t.Fatal("ingest was never refused while the disk filled")
	}
	size := s.size()
	if size != uint64(acked) {
		t.Fatalf("log holds %d records, %d were acknowledged", size, acked)
	}
	t.Logf("%d events acknowledged before the reserve was reached", acked)

	body := fillBody(-1, 1).Bytes()
	if code, ecode, retry := errorAnswer(t, s, "/v1/events", adminToken, "application/x-ndjson", body); code != http.StatusServiceUnavailable || ecode != "insufficient_storage" || retry == "" {
		t.Errorf("POST /v1/events short of space: %d %q, Retry-After %q; want 503 insufficient_storage with Retry-After", code, ecode, retry)
	}
	var tid pcommon.TraceID
	copy(tid[:], "disk-space-trace")
	if code, _, retry := errorAnswer(t, s, "/otlp/v1/traces", adminToken, "application/x-protobuf", otlpBenchBody(tid, 10, 300, false)); code != http.StatusServiceUnavailable || retry == "" {
		t.Errorf("OTLP export short of space: %d, Retry-After %q; want 503 with Retry-After", code, retry)
	}
	chat := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}`)
	if code, ecode, retry := errorAnswer(t, s, "/openai/v1/chat/completions", adminToken, "application/json", chat, "X-Aitrail-Tenant", "disk"); code != http.StatusServiceUnavailable || ecode != "insufficient_storage" || retry == "" {
		t.Errorf("proxied call short of space: %d %q, Retry-After %q; want 503 insufficient_storage with Retry-After", code, ecode, retry)
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("the provider was called %d times while the request could not be recorded", n)
	}
	if got := s.size(); got != size {
		t.Errorf("refused requests stored %d records", got-size)
	}
	if code, r := s.readiness(); code != http.StatusServiceUnavailable || !r.Details.Storage.WritesRefused || r.Details.LedgerError != "" {
		t.Errorf("/readyz short of space: %d %+v; want 503 with writes_refused and no ledger error", code, r)
	}
	if v := s.metric("aitrail_storage_writes_refused"); v != 1 {
		t.Errorf("aitrail_storage_writes_refused = %v short of space, want 1", v)
	}
	// Reads go on: their records come from the reserve.
	var page struct{ Events []map[string]any }
	s.getJSON("/v1/events?tenant=disk&limit=5", &page)
	if len(page.Events) != 5 {
		t.Errorf("a read short of space returned %d events, want 5", len(page.Events))
	}
	if !strings.Contains(s.stderr.String(), "refusing ingest") {
		t.Errorf("the server did not log that it refuses ingest:\n%s", s.stderr.String())
	}

	// Space is freed: ingest goes on, with no restart.
	resize(512 << 20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		rc, err := postNDJSON(client, s.url, fillBody(-2, 10))
		if err == nil {
			acked += len(rc.Results)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest still refused after space was freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, r := s.readiness(); code != http.StatusOK || r.Details.Storage.WritesRefused {
		t.Errorf("/readyz after space was freed: %d %+v", code, r)
	}
	if v := s.metric("aitrail_storage_writes_refused"); v != 0 {
		t.Errorf("aitrail_storage_writes_refused = %v after space was freed, want 0", v)
	}
	s.waitIndexed()
	if n := len(s.allEvents("tenant=disk&type=ai.inference")); n != acked {
		t.Errorf("%d events of tenant disk are queryable, %d were acknowledged", n, acked)
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
}

// TestFullDiskStopsTheLogAndRestartRecovers fills a small file system with
// no reserve (ledger.min_free_bytes: 0) until a write fails: the log stops
// taking writes, ingest is answered 503 and /readyz says why. Restarted
// with space freed, the server has every acknowledged event at the index
// its receipt named, takes writes again, and the log verifies.
func TestFullDiskStopsTheLogAndRestartRecovers(t *testing.T) {
	data, resize := smallFS(t, 48<<20)
	config := writeConfig(t, "ledger:\n  min_free_bytes: 0\n")
	s := startServer(t, data, "--config", config)

	client := &http.Client{Timeout: 10 * time.Second}
	acked := map[string]uint64{}
	stopped := false
	for r := 0; r < 1000 && !stopped; r++ {
		rc, err := postNDJSON(client, s.url, fillBody(r, 100))
		if err == nil {
			for _, res := range rc.Results {
				acked[res.ID] = res.Index
			}
			continue
		}
		if !strings.Contains(err.Error(), ": 5") {
			t.Fatalf("request %d: %v", r, err)
		}
		_, rd := s.readiness()
		stopped = rd.Details.LedgerError != ""
	}
	if !stopped {
		t.Fatal("the log did not stop as the disk filled")
	}
	// Refused before anything is done for it: an event of a new tenant
	// would need a new key stored, which the full disk refuses too.
	for _, body := range []string{string(fillBody(-1, 1).Bytes()), `{"type":"ai.inference","tenant":"new-tenant","content":{"prompt":"hi"}}`} {
		if code, ecode, retry := errorAnswer(t, s, "/v1/events", adminToken, "application/x-ndjson", []byte(body)); code != http.StatusServiceUnavailable || ecode != "unavailable" || retry == "" {
			t.Errorf("POST /v1/events with the log stopped: %d %q, Retry-After %q; want 503 unavailable with Retry-After", code, ecode, retry)
		}
	}
	if code, r := s.readiness(); code != http.StatusServiceUnavailable || !strings.Contains(r.Details.LedgerError, "no space left on device") {
		t.Errorf("/readyz with the log stopped: %d %+v; want 503 naming the full disk", code, r)
	}
	t.Logf("%d events acknowledged before the disk was full", len(acked))
	s.kill()

	resize(256 << 20)
	s = startServer(t, data, "--config", config)
	s.waitIndexed()
	got := map[string]uint64{}
	for _, e := range s.allEvents("tenant=disk&type=ai.inference") {
		got[e["id"].(string)] = uint64(e["index"].(float64))
	}
	for id, idx := range acked {
		if at, ok := got[id]; !ok {
			t.Errorf("acknowledged event %s (index %d) is missing after the restart", id, idx)
		} else if at != idx {
			t.Errorf("acknowledged event %s moved from index %d to %d", id, idx, at)
		}
	}
	if _, err := postNDJSON(client, s.url, fillBody(-2, 10)); err != nil {
		t.Errorf("ingest after the restart: %v", err)
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
}
