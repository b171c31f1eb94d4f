package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/authz/authztest"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
)

// indexingLedger numbers appended records and indexes them at once, as the
// index follower does a moment later in the server. It keeps records and
// blobs, serves the records to the index and blob as every record's blob
// when set (damaged storage). The other Ledger methods are not used by these
// tests.
type indexingLedger struct {
	Ledger
	mu      sync.Mutex
	idx     *index.Index
	n       uint64
	records [][]byte
	blobs   map[uint64][]byte
	blob    []byte
	refuse  error // when set, Append returns it and stores nothing
}

// ReadRecords serves the index, which finds records by index here (the
// offsets are the real ledger's business).
func (l *indexingLedger) ReadRecords(locs []ledger.Loc, keep func(record []byte) bool) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([][]byte, len(locs))
	for i, loc := range locs {
		if loc.Index >= uint64(len(l.records)) {
			return nil, ledger.ErrNotFound
		}
		if rec := l.records[loc.Index]; keep == nil || keep(rec) {
			out[i] = rec
		}
	}
	return out, nil
}

func (l *indexingLedger) Blob(i uint64) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blob != nil {
		return l.blob, nil
	}
	return l.blobs[i], nil
}

func (l *indexingLedger) Err() error { return nil }

func (l *indexingLedger) Append(ctx context.Context, items []ledger.Item) (ledger.Receipt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refuse != nil {
		return ledger.Receipt{}, l.refuse
	}
	var r ledger.Receipt
	var es []ledger.Entry
	for _, it := range items {
		if l.blobs == nil {
			l.blobs = map[uint64][]byte{}
		}
		l.blobs[l.n] = it.Blob
		l.records = append(l.records, it.Record)
		es = append(es, ledger.Entry{Index: l.n, Data: it.Record})
		r.Results = append(r.Results, ledger.Result{Index: l.n})
		l.n++
	}
	r.Checkpoint = []byte("test checkpoint\n")
	return r, l.idx.Apply(ctx, es)
}

// testAPI is a Server over a real index, a real keyring and a ledger that
// indexes what it appends at once.
type testAPI struct {
	srv    *httptest.Server
	idx    *index.Index
	pl     *ingest.Pipeline
	auth   *authz.Authenticator
	root   authz.Principal
	ledger *indexingLedger
}

func newTestAPI(t testing.TB) *testAPI { return newTestAPIWith(t, nil) }

// newTestAPIWith is newTestAPI with the Server changed by set first.
func newTestAPIWith(t testing.TB, set func(*Server)) *testAPI {
	ctx := context.Background()
	led := new(indexingLedger)
	idx, err := index.Open(filepath.Join(t.TempDir(), "index.db"), led, index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	led.idx = idx
	kek, _ := crypto.NewLocalKEK("", make([]byte, 32))
	keyring := crypto.NewKeyring(kek, new(cryptotest.MemKeyStore))
	auth := authz.NewAuthenticator(new(authztest.MemTokenStore))
	if _, _, err := auth.Bootstrap(ctx, "root-token"); err != nil {
		t.Fatal(err)
	}
	root, _ := auth.Authenticate(ctx, "root-token")
	pl := &ingest.Pipeline{Ledger: led, Sealer: keyring, Subjects: keyring}
	s := &Server{Ledger: led, Index: idx, Ingest: pl, Opener: keyring, Auth: auth}
	if set != nil {
		set(s)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &testAPI{srv: srv, idx: idx, pl: pl, auth: auth, root: root, ledger: led}
}

// TestAlertsAPI drives GET /v1/alerts and POST /v1/alerts/{id}/ack over
// alert records as the detector writes them.
func TestAlertsAPI(t *testing.T) {
	ctx := context.Background()
	api := newTestAPI(t)
	idx, pl, auth, root, srv := api.idx, api.pl, api.auth, api.root, api.srv
	mintTok := func(roles ...authz.Role) string {
		_, tok, err := auth.Mint(ctx, root, "t", roles, []string{"acme"})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	reader, auditor := mintTok(authz.RoleRead), mintTok(authz.RoleAudit)

	record := func(typ, tenant, id string, at time.Time) {
		t.Helper()
		_, err := pl.Append(ctx, system, []event.Event{{Type: typ, Tenant: tenant, Time: at.Format(time.RFC3339Nano),
			Actor:    &event.Actor{ID: "aitrail-detector", Type: "system"},
			Resource: &event.Resource{Type: "alert", ID: id},
			Attributes: map[string]any{"alert.rule": "denied-burst", "alert.severity": "high",
				"alert.summary": "12 denied logins", "alert.group": "actor.ip=hmac-sha256:ab", "alert.trigger_ids": "e1,e2"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	record("alert.fired", "acme", "a-1", now.Add(-3*time.Minute))
	record("alert.fired", "globex", "g-1", now.Add(-2*time.Minute))
	record("alert.fired", "acme", "a-2", now.Add(-time.Minute))
	record("alert.resolved", "acme", "a-1", now)

	call := func(method, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	ids := func(out map[string]any) []string {
		var s []string
		for _, a := range out["alerts"].([]any) {
			s = append(s, a.(map[string]any)["id"].(string))
		}
		return s
	}

	if code, out := call("GET", "/v1/alerts", "root-token", ""); code != 200 || strings.Join(ids(out), ",") != "a-2,g-1,a-1" {
		t.Fatalf("root lists %d %v; want every alert, newest first", code, out)
	}
	code, out := call("GET", "/v1/alerts", reader, "")
	if code != 200 || strings.Join(ids(out), ",") != "a-2,a-1" {
		t.Fatalf("an acme reader lists %d %v; want only acme's alerts", code, out)
	}
	a1 := out["alerts"].([]any)[1].(map[string]any)
	if a1["state"] != "resolved" || a1["rule"] != "denied-burst" || a1["severity"] != "high" || a1["resolved_at"] == nil || len(a1["records"].([]any)) != 2 {
		t.Errorf("a-1 folded into %v", a1)
	}
	if _, out := call("GET", "/v1/alerts?state=firing", reader, ""); strings.Join(ids(out), ",") != "a-2" {
		t.Errorf("state=firing lists %v", ids(out))
	}

	if code, _ := call("POST", "/v1/alerts/a-2/ack", reader, `{"note":"looking"}`); code != 403 {
		t.Errorf("a reader acknowledged: %d; want 403", code)
	}
	if code, _ := call("POST", "/v1/alerts/g-1/ack", auditor, ""); code != 404 {
		t.Errorf("an acme auditor acknowledged globex's alert: %d; want 404", code)
	}
	if code, out := call("POST", "/v1/alerts/a-2/ack", auditor, `{"note":"looking into it"}`); code != 200 || out["alert"] != "a-2" {
		t.Fatalf("ack: %d %v", code, out)
	}
	_, out = call("GET", "/v1/alerts?state=acknowledged", reader, "")
	if strings.Join(ids(out), ",") != "a-2" || len(out["alerts"].([]any)[0].(map[string]any)["acks"].([]any)) != 1 {
		t.Errorf("state=acknowledged lists %v", out)
	}
	if _, out := call("GET", "/v1/alerts?state=unacknowledged", reader, ""); strings.Join(ids(out), ",") != "a-1" {
		t.Errorf("state=unacknowledged lists %v", ids(out))
	}
	for _, bad := range []string{"?state=on", "?limit=0", "?from=yesterday", "?colour=red"} {
		if code, _ := call("GET", "/v1/alerts"+bad, reader, ""); code != 400 {
			t.Errorf("GET /v1/alerts%s: %d; want 400", bad, code)
		}
	}
	// Each listing is itself a recorded read.
	page, err := idx.Query(ctx, index.Query{Type: "log.access", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	lists := 0
	for _, h := range page.Hits {
		if strings.Contains(string(h.Record), `"action":"alerts.list"`) {
			lists++
		}
	}
	if lists < 5 {
		t.Errorf("%d alerts.list reads recorded; want one per successful listing", lists)
	}
}

// TestAckBodiesAreReadStrictly: an acknowledgement's body is one JSON
// object of the documented members, as a token request's is; anything else
// is refused and records nothing.
func TestAckBodiesAreReadStrictly(t *testing.T) {
	ctx := context.Background()
	api := newTestAPI(t)
	_, err := api.pl.Append(ctx, system, []event.Event{{Type: "alert.fired", Tenant: "acme",
		Actor:      &event.Actor{ID: "aitrail-detector", Type: "system"},
		Resource:   &event.Resource{Type: "alert", ID: "a-1"},
		Attributes: map[string]any{"alert.rule": "denied-burst"}}})
	if err != nil {
		t.Fatal(err)
	}
	ack := func(contentType, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", api.srv.URL+"/v1/alerts/a-1/ack", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer root-token")
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	records := func() uint64 {
		api.ledger.mu.Lock()
		defer api.ledger.mu.Unlock()
		return api.ledger.n
	}
	for _, c := range []struct{ contentType, body, want string }{
		{"application/json", `{"note":"looking"} and more`, "malformed JSON"},
		{"application/json", `{"note":"a"}{"note":"b"}`, "malformed JSON"},
		{"application/json", `{"NOTE":"looking"}`, "unknown field"},
		{"application/json", `{"note":"a","note":"b"}`, "given twice"},
		{"application/json", "{\"note\":\"caf\xe9\"}", "valid UTF-8"},
		{"application/json", `{"note":7}`, "/note has the wrong type"},
		{"application/json", `{"tenant":"acme","by":"me"}`, "unknown field"},
		{"application/json", `[]`, "not a JSON object"},
		{"application/json", `null`, "not a JSON object"},
		{"application/json", `{"note":"` + strings.Repeat("x", 70<<10) + `"}`, "exceeds 65536 bytes"},
		{"text/plain", `{"note":"looking"}`, "Content-Type"},
		{"", `{"note":"looking"}`, "Content-Type"},
	} {
		before := records()
		code, out := ack(c.contentType, c.body)
		if code/100 != 4 || !strings.Contains(out, c.want) || records() != before {
			t.Errorf("ack with %.40q (%q): %d %s, %d records appended; want a 4xx naming %q and nothing recorded",
				c.body, c.contentType, code, out, records()-before, c.want)
		}
	}
	for _, c := range []struct{ contentType, body string }{
		{"", ""}, {"application/json", `{}`}, {"application/json", ` {"tenant":"acme","note":"looking"} `},
	} {
		before := records()
		if code, out := ack(c.contentType, c.body); code != http.StatusOK || records() != before+1 {
			t.Errorf("ack with %q: %d %s, %d records appended; want 200 and one record", c.body, code, out, records()-before)
		}
	}
}

// TestContentDigestMismatchIsRecorded: content that no longer matches the
// digest its record commits to is refused and reported as an
// integrity.failure record, which the built-in rule turns into an alert.
func TestContentDigestMismatchIsRecorded(t *testing.T) {
	ctx := context.Background()
	api := newTestAPI(t)
	if _, err := api.pl.Append(ctx, api.root, []event.Event{{ID: "c1", Type: "ai.inference", Tenant: "acme",
		Content: json.RawMessage(`{"prompt":"hi"}`)}}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", api.srv.URL+"/v1/events/c1", nil)
	req.Header.Set("Authorization", "Bearer root-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("intact content: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	api.ledger.mu.Lock()
	api.ledger.blob = []byte("swapped ciphertext")
	api.ledger.mu.Unlock()
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), `"code":"integrity_failure"`) {
		t.Fatalf("swapped content: %v %s; want 500 integrity_failure", resp.Status, body)
	}
	// Read again: refused again, but recorded once.
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != 500 {
		t.Fatalf("swapped content, read again: %v %v; want 500", err, resp.Status)
	}
	resp.Body.Close()
	page, err := api.idx.Query(ctx, index.Query{Type: "integrity.failure", Limit: 10})
	if err != nil || len(page.Hits) != 1 || !strings.Contains(string(page.Hits[0].Record), `"integrity.check":"content_digest"`) {
		t.Fatalf("integrity.failure records: %v %v", page.Hits, err)
	}
}
