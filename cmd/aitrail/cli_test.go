package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/aitrail/aitrail/internal/capture/otlp"
)

func postN(s *server, prefix string, n int) {
	for i := 0; i < n; i += 100 {
		var evs []map[string]any
		for j := i; j < i+100 && j < n; j++ {
			evs = append(evs, map[string]any{"type": "ai.inference", "id": fmt.Sprintf("%s-%d", prefix, j)})
		}
		s.post(evs...)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(filepath.Join(dst, lockFile))
	return dst
}

// TestRemoteVerify checks `aitrail verify --url`: a first full check, an
// incremental one proved consistent with the trusted checkpoint, and the
// refusal of a log that was rolled back or forked.
func TestRemoteVerify(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	postN(s, "a", 300)
	_, key := s.do("GET", "/log/key", "", "", nil)
	vkey := strings.TrimSpace(string(key))
	trusted := filepath.Join(t.TempDir(), "trusted")
	verify := func(s *server, token string) (int, string) {
		code, out, errOut := runCLI("verify", "--url", s.url, "--key", vkey, "--trusted", trusted, "--token", token)
		return code, out + errOut
	}
	if code, out := verify(s, adminToken); code != 0 || !strings.Contains(out, "300 records") || !strings.Contains(out, "300 new entries re-hashed") {
		t.Fatalf("first verify: %d %s", code, out)
	}
	// The trusted file is replaced through a temporary file of its own,
	// whatever was left beside it, and none stays behind.
	if err := os.Mkdir(trusted+".tmp", 0o755); err != nil {
		t.Fatal(err)
	}
	if code, out := verify(s, ""); code != 0 {
		t.Fatalf("verify beside a leftover %s.tmp: %d %s", trusted, code, out)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(trusted), ".*tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	os.Remove(trusted + ".tmp")
	// An entry bundle the server pushes back (a large answer while its
	// memory for answers is taken) is fetched again after Retry-After.
	var pushed atomic.Int64
	target, _ := url.Parse(s.url)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/log/tile/entries/") && pushed.Add(1) <= 2 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"code":"pushback","message":"busy"}}`)
			return
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer front.Close()
	code, out, errOut := runCLI("verify", "--url", front.URL, "--key", vkey, "--token", adminToken)
	if code != 0 || pushed.Load() <= 2 || !strings.Contains(out+errOut, "300 new entries re-hashed") {
		t.Fatalf("verify through pushback of entry bundles: %d %s%s", code, out, errOut)
	}
	postN(s, "b", 200)
	if code, out := verify(s, adminToken); code != 0 || !strings.Contains(out, "consistent with the trusted checkpoint of 300") || !strings.Contains(out, "200 new entries") {
		t.Fatalf("incremental verify: %d %s", code, out)
	}
	if code, out := verify(s, ""); code != 0 || !strings.Contains(out, "not re-hashed") {
		t.Fatalf("verify without a token: %d %s", code, out)
	}
	s.stop()
	snapshot := copyDir(t, data) // 500 records

	// The operator rolls the log back to an older copy: refused.
	s = startServer(t, data)
	postN(s, "c", 100) // 600, trusted next
	if code, out := verify(s, ""); code != 0 {
		t.Fatalf("verify at 600: %d %s", code, out)
	}
	s.stop()
	s = startServer(t, snapshot)
	if code, out := verify(s, ""); code != 1 || !strings.Contains(out, "shrank") {
		t.Fatalf("rolled-back log: %d %s; want exit 1 saying it shrank", code, out)
	}
	// A fork: the old copy grows past the trusted size with other events.
	postN(s, "fork", 150)
	if code, out := verify(s, ""); code != 1 || !strings.Contains(out, "inconsistent") {
		t.Fatalf("forked log: %d %s; want exit 1 saying it is inconsistent", code, out)
	}
	if code, _, errOut := runCLI("verify", "--url", s.url); code != 2 || !strings.Contains(errOut, "--key") {
		t.Fatalf("verify --url without --key: exit %d %s", code, errOut)
	}
	// A server that cannot be talked to says nothing about the log: an
	// error, not FAILED.
	https := "https" + strings.TrimPrefix(s.url, "http")
	if code, out, errOut := runCLI("verify", "--url", https, "--key", vkey); code != 1 || strings.Contains(out+errOut, "FAILED") {
		t.Fatalf("verify over HTTPS of an HTTP server: exit %d %s%s; want 1 without FAILED", code, out, errOut)
	}
	// A key that is not the log's: FAILED, saying so.
	if code, out, errOut := runCLI("verify", "--url", s.url, "--key", otherKey(t)); code != 1 || !strings.Contains(out+errOut, "FAILED") ||
		!strings.Contains(out+errOut, "no signature by the key") {
		t.Fatalf("verify with another key: exit %d %s%s", code, out, errOut)
	}
	s.stop()
}

// otherKey returns the verifier key of a new log key, not any server's.
func otherKey(t *testing.T) string {
	t.Helper()
	_, vkey, err := note.GenerateKey(rand.Reader, "another-log")
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

// TestFirstStartCreatesAdminToken covers the bootstrap without
// AITRAIL_ADMIN_TOKEN: a random token printed once and saved with mode 0600.
func TestFirstStartCreatesAdminToken(t *testing.T) {
	data := t.TempDir()
	s := startServerEnv(t, data, nil)
	path := filepath.Join(data, adminTokenFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", fi, err)
	}
	raw, _ := os.ReadFile(path)
	token := strings.TrimSpace(string(raw))
	if !strings.Contains(s.stderr.String(), token) {
		t.Fatal("the admin token was not printed on first start")
	}
	if code, body := s.do("GET", "/v1/tokens", token, "", nil); code != 200 {
		t.Fatalf("admin token does not work: %d %s", code, body)
	}
	for _, name := range []string{masterKeyFile, signerKeyFile, catalogFile, indexFile, indexFile + "-wal", registryFile, registryFile + "-wal"} {
		if fi, err := os.Stat(filepath.Join(data, name)); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v, mode %v; want private", name, err, fi.Mode())
		}
	}
	s.stop()
	s = startServerEnv(t, data, nil)
	if strings.Contains(s.stderr.String(), token) {
		t.Fatal("the admin token was printed again on a later start")
	}
	s.stop()
}

// TestWrongMasterKeyFailsClearly starts a data directory with a different
// master key than it was created with.
func TestWrongMasterKeyFailsClearly(t *testing.T) {
	data := t.TempDir()
	key1 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	key2 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("j", 32)))
	s := startServerEnv(t, data, []string{"AITRAIL_ADMIN_TOKEN=" + adminToken, "AITRAIL_MASTER_KEY=" + key1})
	s.post(map[string]any{"type": "a.b", "content": "secret"})
	s.stop()
	if _, err := os.Stat(filepath.Join(data, masterKeyFile)); err == nil {
		t.Fatal("a master key file was written although the key came from the environment")
	}
	cmd := exec.Command(os.Args[0], "serve", "--data", data, "--addr", freeAddr(t))
	cmd.Env = append(os.Environ(), childEnv+"=1", "AITRAIL_MASTER_KEY="+key2)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "master key") {
		t.Fatalf("start with the wrong master key: %v %s", err, out)
	}
}

// TestReindexRebuildsTheIndex deletes the query index and rebuilds it.
func TestReindexRebuildsTheIndex(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	postN(s, "r", 450)
	s.stop()
	// A damaged index stops the server with a hint; reindex repairs it.
	os.WriteFile(filepath.Join(data, indexFile), []byte("this is not a database, just garbage bytes..."), 0o600)
	if code, errOut := runChild(t, 30*time.Second, "serve", "--data", data, "--addr", freeAddr(t)); code == 0 || !strings.Contains(errOut, "aitrail reindex") {
		t.Fatalf("serve with a damaged index: exit %d, %q", code, errOut)
	}
	code, out, errOut := runCLI("reindex", "--data", data)
	if code != 0 || !strings.Contains(out, "reindexed 450 records") {
		t.Fatalf("reindex: %d %s %s", code, out, errOut)
	}
	s = startServer(t, data)
	if got := len(s.allEvents("type=ai.*")); got != 450 {
		t.Fatalf("after reindex the query finds %d events, want 450", got)
	}
	s.stop()
}

// TestVerifyABackupOnReadOnlyMedia: a backup holding only the log and its
// public key, on media nothing can be written to, verifies (it takes no
// lock where none can be made); reindex refuses a directory that is not a
// data directory and leaves nothing in it.
func TestVerifyABackupOnReadOnlyMedia(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	postN(s, "b", 120)
	s.stop()
	backup := t.TempDir()
	if out, err := exec.Command("cp", "-a", filepath.Join(data, ledgerDir), filepath.Join(data, publicKeyFile), backup).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	// Immutable: even root can create nothing in it.
	if out, err := exec.Command("chattr", "-R", "+i", backup).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", backup).Run() })
	if code, out, errOut := runCLI("verify", "--data", backup); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("verify of a read-only backup: exit %d %s%s", code, out, errOut)
	}
	empty := t.TempDir()
	if code, _, errOut := runCLI("reindex", "--data", empty); code != 2 || !strings.Contains(errOut, "not an aitrail data directory") {
		t.Fatalf("reindex of an empty directory: exit %d %s", code, errOut)
	}
	if left, _ := os.ReadDir(empty); len(left) != 0 {
		t.Errorf("reindex left %v in a directory that is not a data directory", left)
	}
}

// TestQueryCLI prints matching events as JSON lines.
func TestQueryCLI(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.post(map[string]any{"type": "ai.inference", "id": "q1", "actor": map[string]any{"id": "alice"}},
		map[string]any{"type": "access.attempt", "id": "q2", "actor": map[string]any{"id": "bob"}, "outcome": "denied"})
	s.waitIndexed()
	code, out, errOut := runCLI("query", "--url", s.url, "--token", adminToken, "--outcome", "denied")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"id":"q2"`) {
		t.Fatalf("query: %d %q %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("query", "--url", s.url); code != 2 || !strings.Contains(errOut, "token") {
		t.Fatalf("query without a token: %d %s", code, errOut)
	}
	s.stop()
	// A page the server pushes back (it holds as many large answers as its
	// memory allows) is asked for again; other errors end the query.
	var asked atomic.Int64
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch n := asked.Add(1); {
		case n <= 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"code":"pushback","message":"busy"}}`)
		case n == 3:
			fmt.Fprint(w, `{"events":[{"id":"p1","index":0}],"next_cursor":"c"}`)
		default:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"code":"invalid_query","message":"bad cursor"}}`)
		}
	}))
	defer busy.Close()
	code, out, errOut = runCLI("query", "--url", busy.URL, "--token", adminToken)
	if code != 1 || strings.Count(errOut, "retrying") != 2 || !strings.Contains(out, `"id":"p1"`) || !strings.Contains(errOut, "bad cursor") {
		t.Fatalf("query against a server pushing back twice, then failing: %d %q %s", code, out, errOut)
	}
}

// TestTailCLI follows new events as they are written.
func TestTailCLI(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.post(map[string]any{"type": "ai.inference", "id": "old"})
	s.waitIndexed()
	out := startTail(t, "--url", s.url, "--token", adminToken, "--interval", "50ms", "--type", "ai.*")
	// Wait until tail is following: it prints an event written after it
	// started.
	warm := 0
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), `"id":"warm-`); warm++ {
		if time.Now().After(deadline) {
			t.Fatalf("tail printed nothing new within 20s: %q", out.String())
		}
		s.post(map[string]any{"type": "ai.warmup", "id": fmt.Sprintf("warm-%d", warm)})
		time.Sleep(100 * time.Millisecond)
	}
	s.post(map[string]any{"type": "ai.inference", "id": "new-1"}, map[string]any{"type": "data.upload", "id": "other"})
	s.post(map[string]any{"type": "ai.embedding", "id": "new-2"})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), `"id":"new-2"`) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got := out.String()
	if strings.Contains(got, `"id":"old"`) || strings.Contains(got, `"id":"other"`) ||
		!strings.Contains(got, `"id":"new-1"`) || !strings.Contains(got, `"id":"new-2"`) ||
		strings.Count(got, "\n") != strings.Count(got, `"id":"warm-`)+2 {
		t.Fatalf("tail printed %q; want the warm-up events, new-1 and new-2, and nothing older or of another type", got)
	}

	// Without a type filter tail still does not print the log.access
	// records of its own polling (each poll is recorded).
	allOut := startTail(t, "--url", s.url, "--token", adminToken, "--interval", "50ms")
	time.Sleep(500 * time.Millisecond) // ten polls, each recorded
	s.post(map[string]any{"type": "ai.inference", "id": "after-polls"})
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(allOut.String(), `"id":"after-polls"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tail without filter printed %q", allOut.String())
		}
	}
	if strings.Contains(allOut.String(), `"aitrail.token_id":"root"`) {
		t.Errorf("tail printed the records of its own polling: %q", allOut.String())
	}

	// Nor with a root token shaped like a minted one (as the server makes
	// one when none is given), whose reads are recorded as "root".
	const shaped = "atr_0123456789abcdef_root-token-of-its-own-shape"
	other := startServerEnv(t, t.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + shaped})
	shapedOut := startTail(t, "--url", other.url, "--token", shaped, "--interval", "50ms")
	time.Sleep(500 * time.Millisecond)
	if code, body := other.do("POST", "/v1/events", shaped, "application/json", []byte(`{"type":"ai.inference","id":"after-shaped-polls"}`)); code != 200 {
		t.Fatalf("POST with the atr_-shaped root token: %d %s", code, body)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(shapedOut.String(), `"id":"after-shaped-polls"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("tail with the atr_-shaped root token printed %q", shapedOut.String())
		}
	}
	if strings.Contains(shapedOut.String(), `"type":"log.access"`) {
		t.Errorf("tail with the atr_-shaped root token printed the records of its own polling: %q", shapedOut.String())
	}

	// A server that refuses the token refuses it on every poll: tail
	// says so and exits, with or without --all, instead of retrying.
	for _, all := range []string{"--all=false", "--all"} {
		code, stderr := runChild(t, 20*time.Second, "tail", "--url", s.url, "--token", "atr_0123456789abcdef_wrong", "--interval", "50ms", all)
		if code != 1 || !strings.Contains(stderr, "401") {
			t.Errorf("tail %s with a wrong token: exit %d, %q; want exit 1 naming the 401", all, code, stderr)
		}
	}
}

// TestTailWaitsForTheServer: a server that cannot be reached is polled
// again, with or without --all, until tail is stopped.
func TestTailWaitsForTheServer(t *testing.T) {
	for _, all := range []string{"--all=false", "--all"} {
		code, stderr := runChild(t, 2*time.Second, "tail", "--url", "http://"+freeAddr(t), "--token", adminToken, "--interval", "50ms", all)
		if code != -1 || !strings.Contains(stderr, "(retrying)") {
			t.Errorf("tail %s with no server: exit %d, %q; want it still polling when stopped", all, code, stderr)
		}
	}
}

// TestUsageErrors: flag values the commands cannot use are usage errors
// (exit 2, with a message) before anything is sent, and no usage text
// shows the token taken from $AITRAIL_TOKEN.
func TestUsageErrors(t *testing.T) {
	const secret = "atr_0123456789abcdef_do-not-print-me"
	t.Setenv("AITRAIL_TOKEN", secret)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"query", "-h"}, 0, "-token"},
		{[]string{"tail", "-h"}, 0, "-token"},
		{[]string{"verify", "-h"}, 0, "-token"},
		{[]string{"models", "-h"}, 0, "-token"},
		{[]string{"bench", "-h"}, 0, "-token"},
		{[]string{"alerts", "-h"}, 0, "-token"},
		{[]string{"erase", "-h"}, 0, "-token"},
		{[]string{"rules", "-h"}, 0, "usage: aitrail rules check"},
		{[]string{"keys", "-h"}, 0, "usage: aitrail keys rotate|list"},
		{[]string{"version", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"version", "--bogus"}, 2, "-bogus"},
		{[]string{"query", "--limit=x"}, 2, "-token"},
		{[]string{"query", "--limit", "-5"}, 2, "--limit must be 0 (all) or more"},
		{[]string{"query", "--order", "sideways"}, 2, "--order must be asc or desc"},
		{[]string{"query", "--from", "yesterday"}, 2, "not an RFC 3339 time"},
		{[]string{"tail", "--to", "2026-13-01T00:00:00Z"}, 2, "not an RFC 3339 time"},
		{[]string{"tail", "--interval", "0s"}, 2, "--interval 0s is too short"},
		{[]string{"bench", "--rate", "-5"}, 2, "--rate ≥ 0"},
	} {
		code, out, errOut := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.msg) || strings.Contains(out+errOut, secret) {
			t.Errorf("%v: exit %d, %q; want exit %d with %q and without the token", tc.args, code, out+errOut, tc.code, tc.msg)
		}
	}
}

// TestBenchAndMetrics runs the load generator briefly against a server and
// checks the metrics an operator watches.
func TestBenchAndMetrics(t *testing.T) {
	s := startServer(t, t.TempDir())
	code, out, errOut := runCLI("bench", "--url", s.url, "--token", adminToken, "--clients", "2", "--batch", "10", "--duration", "500ms")
	if code != 0 || !strings.Contains(out, "events/s") || !strings.Contains(out, "p99") {
		t.Fatalf("bench: %d %q %s", code, out, errOut)
	}
	// With --watch-lag it reports the index lag and returns once the index
	// has caught up.
	code, out, errOut = runCLI("bench", "--url", s.url, "--token", adminToken, "--clients", "2", "--batch", "50", "--duration", "500ms", "--watch-lag", "10ms", "--json")
	var res struct {
		Events   int64    `json:"events"`
		MaxLag   *int64   `json:"max_index_lag"`
		CaughtUp *float64 `json:"index_caught_up_s"`
	}
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.MaxLag == nil || res.CaughtUp == nil || res.Events == 0 {
		t.Fatalf("bench --watch-lag: %d %q %s", code, out, errOut)
	}
	if _, metrics := s.do("GET", "/metrics", "", "", nil); !strings.Contains(string(metrics), `aitrail_follower_lag_records{follower="index"} 0`+"\n") {
		t.Errorf("bench --watch-lag returned before the index caught up")
	}
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			fmt.Fprintln(w, "# nothing of aitrail's")
			return
		}
		fmt.Fprint(w, `{"checkpoint":"x"}`)
	}))
	defer other.Close()
	if code, _, errOut := runCLI("bench", "--url", other.URL, "--token", adminToken, "--duration", "100ms", "--watch-lag", "10ms"); code != 1 || !strings.Contains(errOut, "no index lag") {
		t.Errorf("bench --watch-lag against another server: exit %d %q", code, errOut)
	}
	// Pushback is waited out; a server refusing for another reason (its
	// disk is full) fails the run.
	var answered atomic.Int64
	// OTLP errors are protobuf, their code in an ErrorInfo detail.
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := "pushback"
		if answered.Add(1) > 20 {
			code = "insufficient_storage"
		}
		w.Header().Set("Retry-After", "1")
		if strings.HasPrefix(r.URL.Path, "/otlp/") {
			info, _ := anypb.New(&errdetails.ErrorInfo{Reason: code, Domain: otlp.ErrorDomain})
			body, _ := proto.Marshal(&statuspb.Status{Code: 14, Message: "m", Details: []*anypb.Any{info}})
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write(body)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"error":{"code":%q,"message":"m"}}`, code)
	}))
	defer refusing.Close()
	for _, otlpFlag := range []string{"--otlp=false", "--otlp"} {
		answered.Store(0)
		code, out, errOut = runCLI("bench", "--url", refusing.URL, "--token", adminToken, "--clients", "1", "--duration", "1s", "--json", otlpFlag)
		var refused struct{ Pushbacks, Failures int }
		if json.Unmarshal([]byte(out), &refused) != nil || code != 1 || refused.Pushbacks != 20 || refused.Failures == 0 || !strings.Contains(errOut, "insufficient_storage") {
			t.Errorf("bench %s against a server pushing back, then out of disk: exit %d %q %s", otlpFlag, code, out, errOut)
		}
	}
	code, out, errOut = runCLI("bench-disk", "--dir", t.TempDir(), "--duration", "200ms")
	if code != 0 || !strings.Contains(out, "records/s") {
		t.Fatalf("bench-disk: %d %q %s", code, out, errOut)
	}
	// bench-http answers bench's requests with receipts until stopped.
	addr := freeAddr(t)
	ref := exec.Command(os.Args[0], "bench-http", "--addr", addr)
	ref.Env = append(os.Environ(), childEnv+"=1")
	if err := ref.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Process.Kill(); ref.Wait() })
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			break
		}
		if i == 100 {
			t.Fatal("bench-http did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, out, errOut = runCLI("bench", "--url", "http://"+addr, "--token", "x", "--clients", "4", "--batch", "1", "--duration", "300ms", "--json")
	var refRes struct {
		Events   int64 `json:"events"`
		Failures int64 `json:"failures"`
	}
	if err := json.Unmarshal([]byte(out), &refRes); code != 0 || err != nil || refRes.Events == 0 || refRes.Failures != 0 {
		t.Fatalf("bench against bench-http: %d %q %s", code, out, errOut)
	}
	ref.Process.Signal(syscall.SIGTERM)
	if err := ref.Wait(); err != nil {
		t.Errorf("bench-http on SIGTERM: %v", err)
	}
	s.waitIndexed()
	_, metrics := s.do("GET", "/metrics", "", "", nil)
	for _, want := range []string{
		"aitrail_ledger_records " + fmt.Sprint(s.size()),
		`aitrail_follower_lag_records{follower="index"} 0`,
		"aitrail_ingest_events_total",
		"aitrail_ledger_commit_seconds_bucket",
		`aitrail_http_requests_total{code="200",route="/v1/events"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	s.stop()
}

// TestAlertsCLI lists alerts (none yet) and refuses to acknowledge one that
// does not exist; the API itself is tested in internal/httpapi.
func TestAlertsCLI(t *testing.T) {
	s := startServer(t, t.TempDir())
	if code, out, errOut := runCLI("alerts", "--url", s.url, "--token", adminToken); code != 0 || !strings.Contains(out, "No alerts.") {
		t.Fatalf("alerts: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := runCLI("alerts", "ack", "--url", s.url, "--token", adminToken, "--id", "nope"); code != 1 || !strings.Contains(errOut, "404") {
		t.Fatalf("alerts ack of an unknown alert: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLI("alerts", "ack", "--url", s.url, "--token", adminToken); code != 2 {
		t.Fatalf("alerts ack without --id: exit %d %q", code, errOut)
	}
}

// TestAlertingConfig starts the server with alert delivery configured: the
// targets appear in /readyz, and a bad alerting section stops the start
// with a message naming it.
func TestAlertingConfig(t *testing.T) {
	s := startServer(t, t.TempDir(), "--config", writeConfig(t,
		"alerting:\n  alertmanagers:\n    - url: http://127.0.0.1:9\n  webhooks:\n    - name: oncall\n      url: http://127.0.0.1:9/hook\n"))
	var ready struct {
		Details struct {
			Delivery []struct {
				Name, Kind string
			} `json:"alert_delivery"`
		} `json:"details"`
	}
	s.getJSON("/readyz", &ready)
	if len(ready.Details.Delivery) != 2 || ready.Details.Delivery[1].Name != "oncall" || ready.Details.Delivery[1].Kind != "webhook" {
		t.Fatalf("/readyz alert_delivery %+v", ready.Details.Delivery)
	}
	code, _, errOut := runCLI("serve", "--data", t.TempDir(), "--addr", freeAddr(t), "--config",
		writeConfig(t, "alerting:\n  webhooks:\n    - url: http://127.0.0.1:9/hook\n"))
	if code != 2 || !strings.Contains(errOut, "alerting") {
		t.Fatalf("a webhook without a name: exit %d %q; want 2 naming alerting", code, errOut)
	}
}

// TestModelsTableQuotesControlCharacters: a value holding a tab or a line
// break (a deploy recorded before the server refused them) is shown quoted
// in its cell, so it cannot make cells or rows of its own in the table.
func TestModelsTableQuotesControlCharacters(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"models":[{"tenant":"gamma","name":"m","current":[{"index":7,"action":"deploy","tenant":"gamma",`+
			`"name":"m","version":"1","environment":"prod\nacme\tfraud-scorer\tdeploy\tv666","time":"2026-11-27T10:00:00Z"}],"history":[]}]}`)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	if code := run([]string{"models", "--url", srv.URL, "--token", "t"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"prod\nacme\tfraud-scorer\tdeploy\tv666"`) {
		t.Fatalf("table:\n%s", out.String())
	}
}

// TestRestoredLogRebuildsWhatFollowsIt: a log restored from a backup, with
// the newer query index, model registry and detector state left in place,
// must not be served through them: they describe records the log no longer
// holds. The index and the registry are rebuilt, the detector goes on from
// the log's end, and new events are found, by their own fields.
func TestRestoredLogRebuildsWhatFollowsIt(t *testing.T) {
	data := t.TempDir()
	events := func(prefix, typ string, n int) []map[string]any {
		var evs []map[string]any
		for i := range n {
			evs = append(evs, map[string]any{"id": fmt.Sprintf("%s-%d", prefix, i), "type": typ, "tenant": "acme"})
		}
		return evs
	}
	deploy := func(version string) map[string]any {
		return map[string]any{"type": "model.deploy", "tenant": "acme", "model": map[string]any{"name": "m", "version": version}}
	}
	s := startServer(t, data)
	s.post(append(events("r", "api.call", 30), deploy("v1"))...)
	s.stop()
	backup := filepath.Join(t.TempDir(), "log")
	if out, err := exec.Command("cp", "-a", filepath.Join(data, ledgerDir), backup).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	s = startServer(t, data)
	s.post(append(events("s", "api.call", 30), deploy("v2"))...)
	s.waitIndexed()
	s.stop()
	unseal(t, data)
	if err := os.RemoveAll(filepath.Join(data, ledgerDir)); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", backup, filepath.Join(data, ledgerDir)).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}

	s = startServer(t, data)
	s.post(events("n", "api.zzzz", 10)...)
	s.waitIndexed()
	for _, want := range []string{"query index does not match the log", "model registry does not match the log", "detector has seen more records"} {
		if !strings.Contains(s.stderr.String(), want) {
			t.Errorf("the start log does not say %q", want)
		}
	}
	if got := len(s.allEvents("type=api.zzzz")); got != 10 {
		t.Errorf("type=api.zzzz finds %d events, want the 10 new ones", got)
	}
	if got := len(s.allEvents("type=api.call")); got != 30 {
		t.Errorf("type=api.call finds %d events, want the 30 the restored log holds", got)
	}
	if code, body := s.do("GET", "/v1/events/n-3?tenant=acme", adminToken, "", nil); code != http.StatusOK {
		t.Errorf("GET of a new event: %d %s", code, body)
	}
	var models struct {
		Models []struct {
			Current []struct{ Version string } `json:"current"`
		} `json:"models"`
	}
	s.getJSON("/v1/models?tenant=acme", &models)
	if len(models.Models) != 1 || len(models.Models[0].Current) != 1 || models.Models[0].Current[0].Version != "v1" {
		t.Errorf("models after the restore: %+v, want v1 in force", models)
	}
	s.stop()

	// The index and registry of another data directory, shorter than this
	// log.
	other := t.TempDir()
	s = startServer(t, other)
	s.post(append(events("x", "x.other", 20), map[string]any{"type": "model.deploy", "tenant": "acme",
		"model": map[string]any{"name": "other-model", "version": "o1"}})...)
	s.waitIndexed()
	s.stop()
	for _, f := range []string{indexFile, registryFile} {
		for _, suffix := range []string{"-wal", "-shm"} {
			os.Remove(filepath.Join(data, f+suffix))
		}
		if out, err := exec.Command("cp", filepath.Join(other, f), filepath.Join(data, f)).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	s = startServer(t, data)
	s.waitIndexed()
	for _, want := range []string{"query index does not match the log", "model registry does not match the log"} {
		if !strings.Contains(s.stderr.String(), want) {
			t.Errorf("the start log does not say %q of another log's files", want)
		}
	}
	s.getJSON("/v1/models?tenant=acme", &models)
	if len(models.Models) != 1 || len(models.Models[0].Current) != 1 || models.Models[0].Current[0].Version != "v1" {
		t.Errorf("models with another log's registry: %+v, want v1 in force", models)
	}
	if got := len(s.allEvents("type=x.other")); got != 0 {
		t.Errorf("type=x.other finds %d events of another log", got)
	}
	if got := len(s.allEvents("type=api.zzzz")); got != 10 {
		t.Errorf("type=api.zzzz finds %d events, want 10", got)
	}
	s.stop()
}

// TestQueryErrorsSayItOnce: a query the server refuses is reported with its
// status, code and reason, without the prefixes of each layer repeated.
func TestQueryErrorsSayItOnce(t *testing.T) {
	s := startServer(t, t.TempDir())
	code, _, errOut := runCLI("query", "--url", s.url, "--token", adminToken, "--from", "2025-01-02T00:00:00Z", "--to", "2025-01-01T00:00:00Z")
	want := "aitrail query: 400 invalid_query: from 2025-01-02T00:00:00Z is not before to 2025-01-01T00:00:00Z\n"
	if code != 1 || errOut != want {
		t.Fatalf("exit %d, %q; want 1, %q", code, errOut, want)
	}
	s.stop()
}

// TestTailFollowsPagesThatEndAtTheScanLimit: a search page that ends at
// the server's scan limit with nothing found carries a cursor; tail goes on
// from it instead of asking the same again for ever, and starts after the
// log's newest record rather than printing old matches.
func TestTailFollowsPagesThatEndAtTheScanLimit(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/log/checkpoint":
			fmt.Fprintf(w, "example/log\n800000\n%s\n\n— example/log AAAA\n", base64.StdEncoding.EncodeToString(make([]byte, 32)))
		case r.URL.Path == "/v1/events":
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
			q := r.URL.Query()
			switch {
			case q.Get("after") != "799999":
				fmt.Fprint(w, `{"events":[{"id":"old-match","index":7}],"next_cursor":""}`)
			case q.Get("cursor") == "":
				fmt.Fprint(w, `{"events":[],"next_cursor":"scanned-to-262143"}`)
			case q.Get("cursor") == "scanned-to-262143":
				fmt.Fprint(w, `{"events":[{"id":"new-match","index":900000}],"next_cursor":""}`)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	out := startTail(t, "--url", srv.URL, "--token", "t", "--interval", "50ms", "--q", "secretacme")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "new-match") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := out.String(); !strings.Contains(got, "new-match") || strings.Contains(got, "old-match") {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("tail printed %q after queries %q; want the match beyond the scan limit and no old one", got, queries)
	}
}

// startTail runs aitrail tail with args in its own process, killed at the
// end of the test, and returns what it prints.
func startTail(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"tail"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out := &syncBuffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return out
}
