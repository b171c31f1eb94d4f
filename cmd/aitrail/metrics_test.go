package main

import (
	"bytes"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// promtoolCheck runs `promtool check metrics` on an exposition and fails
// the test with what promtool reports. promtool comes with Prometheus
// (Debian's prometheus package); scripts/install-test-deps.sh installs it.
func promtoolCheck(t *testing.T, exposition []byte) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not on PATH; run scripts/install-test-deps.sh, which installs it, then the tests again")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestMetricsPassPromtool scrapes a real server's /metrics after traffic
// that makes every aitrail series appear, and checks it with promtool, as a
// Prometheus operator would before relying on it.
func TestMetricsPassPromtool(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.post(map[string]any{"id": "m-1", "type": "ai.inference", "tenant": "acme", "actor": map[string]any{"id": "u-1", "type": "user"},
		"action": "chat.completions.create", "outcome": "success"})
	s.post(map[string]any{"id": "m-1", "type": "ai.inference", "tenant": "acme", "actor": map[string]any{"id": "u-1", "type": "user"},
		"action": "chat.completions.create", "outcome": "success"})
	if code, _ := s.do("GET", "/v1/events", "wrong-token", "", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/events with a wrong token: %d, want 401", code)
	}
	span := `{"resourceSpans":[{"resource":{"attributes":[{"key":"aitrail.tenant","value":{"stringValue":"acme"}}]},
		"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"chat",
		"attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}]}]}]}]}`
	if code, body := s.do("POST", "/otlp/v1/traces", adminToken, "application/json", []byte(span)); code != http.StatusOK {
		t.Fatalf("OTLP export: %d %s", code, body)
	}
	s.waitIndexed()

	code, metrics := s.do("GET", "/metrics", "", "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, family := range []string{
		"aitrail_http_requests_total", "aitrail_http_request_duration_seconds", "aitrail_ingest_events_total",
		"aitrail_ledger_commit_records", "aitrail_ledger_commit_seconds", "aitrail_ledger_written_bytes_total",
		"aitrail_ledger_records", "aitrail_follower_lag_records", "aitrail_ledger_healthy", "aitrail_ledger_sync_failures_total", "aitrail_otlp_items_total",
		"aitrail_ingest_index_waits_total",
	} {
		if !strings.Contains(string(metrics), "\n# TYPE "+family+" ") {
			t.Errorf("/metrics lacks %s, so promtool would not check it", family)
		}
	}
	promtoolCheck(t, metrics)
	s.stop()
}

// TestServeRuntimeDefaults checks the Go runtime settings serve chooses
// when the environment names none (docs/configuration.md), and that the
// environment overrides each, as the server's own /metrics reports them.
// A fresh server also reports its ingest and OTLP counters at 0 before any
// event.
func TestServeRuntimeDefaults(t *testing.T) {
	unset := []string{"GOGC=", "GOMEMLIMIT=", "GOMAXPROCS="}
	// Go's default here: tests that run serve in this process change it.
	own := runtime.GOMAXPROCS(0)
	runtime.SetDefaultGOMAXPROCS()
	defaultProcs := runtime.GOMAXPROCS(own)
	s := startServerEnv(t, t.TempDir(), append(unset, "AITRAIL_ADMIN_TOKEN="+adminToken))
	want := map[string]float64{
		"go_gc_gogc_percent":                                         serverGCPercent,
		"go_gc_gomemlimit_bytes":                                     serverMemoryLimit,
		"go_sched_gomaxprocs_threads":                                float64(defaultProcs + extraProcs),
		`aitrail_ingest_events_total{result="stored"}`:               0,
		`aitrail_ingest_events_total{result="duplicate"}`:            0,
		`aitrail_otlp_items_total{result="received",signal="logs"}`:  0,
		`aitrail_otlp_items_total{result="recorded",signal="spans"}`: 0,
	}
	checkGauges(t, s, want)
	s.stop()

	s = startServerEnv(t, t.TempDir(), append(unset, "AITRAIL_ADMIN_TOKEN="+adminToken, "GOGC=150", "GOMEMLIMIT=1GiB", "GOMAXPROCS=1"))
	checkGauges(t, s, map[string]float64{"go_gc_gogc_percent": 150, "go_gc_gomemlimit_bytes": 1 << 30, "go_sched_gomaxprocs_threads": 1})
	s.stop()
}

func checkGauges(t *testing.T, s *server, want map[string]float64) {
	t.Helper()
	code, metrics := s.do("GET", "/metrics", "", "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	for name, v := range want {
		var got float64
		found := false
		for line := range strings.Lines(string(metrics)) {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				got, found = mustFloat(t, strings.TrimSpace(rest)), true
			}
		}
		if !found || got != v {
			t.Errorf("%s = %v (reported: %v), want %v", name, got, found, v)
		}
	}
}

func mustFloat(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
