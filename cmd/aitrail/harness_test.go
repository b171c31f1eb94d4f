package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/ledger"
)

// The test binary doubles as the aitrail binary: with this variable set it
// runs main's logic instead of the tests, so end-to-end tests exercise the
// real program in its own process.
const childEnv = "AITRAIL_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	if os.Getenv(bareProxyEnv) == "1" {
		os.Exit(runBareProxy(os.Args[1], os.Args[2]))
	}
	os.Exit(m.Run())
}

const adminToken = "e2e-admin-token"

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// server is a running aitrail process.
type server struct {
	t      testing.TB
	cmd    *exec.Cmd
	url    string
	data   string
	stderr *syncBuffer
	done   chan error
	client *http.Client
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer runs `aitrail serve` on data and waits until it is ready.
func startServer(t testing.TB, data string, args ...string) *server {
	t.Helper()
	return startServerEnv(t, data, []string{"AITRAIL_ADMIN_TOKEN=" + adminToken}, args...)
}

// startServerEnv is startServer with the given extra environment.
func startServerEnv(t testing.TB, data string, env []string, args ...string) *server {
	t.Helper()
	return startServerClient(t, data, env, nil, args...)
}

// startServerClient is startServerEnv talking to the server through hc:
// with one, the server is reached over HTTPS (start it with --tls-cert).
func startServerClient(t testing.TB, data string, env []string, hc *http.Client, args ...string) *server {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--data", data, "--addr", addr}, args...)...)
	cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	s := &server{t: t, cmd: cmd, url: "http://" + addr, data: data, stderr: &syncBuffer{}, done: make(chan error, 1), client: http.DefaultClient}
	if hc != nil {
		s.url, s.client = "https://"+addr, hc
	}
	cmd.Stderr = s.stderr
	cmd.Stdout = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	// Runs after the process is gone (cleanups run last first), so that
	// the test's temporary directory can be removed.
	t.Cleanup(func() { unseal(t, data) })
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.client.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-s.done:
			t.Fatalf("server exited while starting: %v\n%s", err, s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 30s:\n%s", s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unseal lifts the seals the server put on the log's files, as an operator
// with root would, so that a test can change or delete them.
func unseal(t testing.TB, data string) {
	t.Helper()
	if err := ledger.LiftSeals(filepath.Join(data, ledgerDir)); err != nil {
		t.Errorf("couldn't lift seals: %v", err)
	}
}

// kill SIGKILLs the server.
func (s *server) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// stop sends SIGTERM and requires a clean exit.
func (s *server) stop() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Fatalf("server exited with %v after SIGTERM:\n%s", err, s.stderr.String())
		}
	case <-time.After(30 * time.Second):
		s.t.Fatalf("server did not stop within 30s of SIGTERM")
	}
}

// do sends a request and returns status and body.
func (s *server) do(method, path, token, contentType string, body []byte, hdr ...string) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// getJSON GETs path with the admin token and decodes the 200 answer.
func (s *server) getJSON(path string, v any) {
	s.t.Helper()
	code, body := s.do("GET", path, adminToken, "", nil)
	if code != http.StatusOK {
		s.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
}

// post sends events with the admin token and returns the receipt.
func (s *server) post(events ...map[string]any) receipt {
	s.t.Helper()
	body, _ := json.Marshal(map[string]any{"events": events})
	code, data := s.do("POST", "/v1/events", adminToken, "application/json", body)
	if code != http.StatusOK {
		s.t.Fatalf("POST /v1/events: %d %s", code, data)
	}
	var r receipt
	if err := json.Unmarshal(data, &r); err != nil {
		s.t.Fatal(err)
	}
	return r
}

type receipt struct {
	Results []struct {
		ID        string `json:"id"`
		Index     uint64 `json:"index"`
		Duplicate bool   `json:"duplicate"`
	} `json:"results"`
	Checkpoint string `json:"checkpoint"`
}

// send POSTs body to url with token and the given headers (name, value,
// …) and returns the status, headers and whole body of the answer. It
// does not call Fatal, so it may run on any goroutine, and against a server
// that may be gone.
func send(client *http.Client, url, token, contentType string, body io.Reader, hdr ...string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, answer, err
}

// postNDJSON sends an NDJSON body of events with the admin token through
// client and returns the receipt. Unlike s.post it does not call Fatal, so
// it may run on any goroutine, and against a server that may be gone.
func postNDJSON(client *http.Client, url string, body io.Reader) (receipt, error) {
	code, _, answer, err := send(client, url+"/v1/events", adminToken, "application/x-ndjson", body)
	if err != nil {
		return receipt{}, err
	}
	if code != http.StatusOK {
		return receipt{}, fmt.Errorf("POST /v1/events: %d", code)
	}
	var r receipt
	if err := json.Unmarshal(answer, &r); err != nil {
		return receipt{}, fmt.Errorf("POST /v1/events: %w", err)
	}
	return r, nil
}

// size is the log size from the checkpoint.
func (s *server) size() uint64 {
	s.t.Helper()
	_, body := s.do("GET", "/log/checkpoint", "", "", nil)
	var n uint64
	lines := strings.Split(string(body), "\n")
	if len(lines) < 2 {
		s.t.Fatalf("bad checkpoint %q", body)
	}
	fmt.Sscan(lines[1], &n)
	return n
}

// waitIndexed waits until the query index has caught up with the log.
func (s *server) waitIndexed() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var r struct {
			Details struct {
				IndexLag uint64 `json:"index_lag"`
			} `json:"details"`
		}
		s.getJSON("/readyz", &r)
		if r.Details.IndexLag == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatal("index did not catch up within 60s")
}

// allEvents pages through GET /v1/events with the given filter.
func (s *server) allEvents(filter string) []map[string]any {
	s.t.Helper()
	var out []map[string]any
	cursor := ""
	for {
		path := "/v1/events?limit=1000&" + filter
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var page struct {
			Events     []map[string]any `json:"events"`
			NextCursor string           `json:"next_cursor"`
		}
		s.getJSON(path, &page)
		out = append(out, page.Events...)
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

// metric returns the value of an unlabelled metric in s's /metrics.
func (s *server) metric(name string) float64 {
	s.t.Helper()
	_, out := s.do("GET", "/metrics", "", "", nil)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(out)
	if m == nil {
		s.t.Fatalf("/metrics lacks %s", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		s.t.Fatalf("/metrics: %s %q: %v", name, m[1], err)
	}
	return v
}

// settledSize waits until the detector has seen every record, so that the
// alerts records fire (a token's creation fires privilege-change) are in
// the log, and returns the log's size.
func (s *server) settledSize() uint64 {
	s.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n := s.size()
		if s.metric(`aitrail_follower_lag_records{follower="detector"}`) == 0 && s.size() == n {
			return n
		}
	}
	s.t.Fatal("the detector did not catch up within 30 s")
	return 0
}

// runCLI runs an aitrail subcommand in-process and returns its exit status
// and output.
func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// runChild runs aitrail in its own process and returns its exit status and
// stderr; a process still running after timeout is killed (exit -1).
func runChild(t *testing.T, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1", "AITRAIL_ADMIN_TOKEN="+adminToken)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, stderr.String()
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// writeConfig writes a YAML config file for serve.
func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := t.TempDir() + "/aitrail.yaml"
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
