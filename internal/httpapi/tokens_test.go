package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ledger"
)

// TestTokenChangesAreRecorded: minting and revoking a token append
// admin.change records (who, which token, what it may do), which the
// built-in rule privilege-change watches; a token request body is read
// strictly, and one refused changes nothing.
func TestTokenChangesAreRecorded(t *testing.T) {
	api := newTestAPI(t)
	do := func(method, path, body string) (int, []byte) {
		code, _, data := asRoot(t, api, method, path, body)
		return code, []byte(data)
	}
	records := func() []event.Record {
		page, err := api.idx.Query(context.Background(), index.Query{Type: "admin.change"})
		if err != nil {
			t.Fatal(err)
		}
		var out []event.Record
		for _, h := range page.Hits {
			rec, err := event.ParseRecord(h.Record)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, *rec)
		}
		return out
	}
	for _, body := range []string{
		`{"name":"x","roles":["read"],"tenants":["acme"]}]`,
		`{"Name":"x","roles":["read"],"tenants":["acme"]}`,
		`{"name":"x","name":"y","roles":["read"],"tenants":["acme"]}`,
		"{\"name\":\"x\xff\",\"roles\":[\"read\"],\"tenants\":[\"acme\"]}",
		`[]`,
	} {
		if code, data := do("POST", "/v1/tokens", body); code != http.StatusBadRequest || strings.Contains(string(data), "field  ") {
			t.Errorf("%q: %d %s, want 400 with a message", body, code, data)
		}
	}
	if n := len(records()); n != 0 {
		t.Fatalf("refused requests left %d records", n)
	}
	code, data := do("POST", "/v1/tokens", `{"name":"reader","roles":["read"],"tenants":["acme"]}`)
	if code != http.StatusCreated {
		t.Fatalf("mint: %d %s", code, data)
	}
	var tok struct{ ID string }
	json.Unmarshal(data, &tok)
	if code, data := do("DELETE", "/v1/tokens/"+tok.ID, ""); code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, data)
	}
	recs := records()
	if len(recs) != 2 {
		t.Fatalf("%d admin.change records, want 2: %+v", len(recs), recs)
	}
	created, revoked := recs[0], recs[1]
	if created.Action != "token.create" || created.Resource.ID != tok.ID || created.Resource.Name != "reader" ||
		created.Attributes["token.roles"] != "read" || created.Attributes["token.tenants"] != "acme" || created.Actor.ID != "root" {
		t.Errorf("creation recorded as %+v %+v %v", created.Resource, created.Actor, created.Attributes)
	}
	if revoked.Action != "token.revoke" || revoked.Resource.ID != tok.ID || revoked.Actor.ID != "root" {
		t.Errorf("revocation recorded as %s %+v", revoked.Action, revoked.Resource)
	}
}

// refusingLedger is a log that takes no appends while refuse is set.
type refusingLedger struct {
	*indexingLedger
	refuse *atomic.Bool
}

func (l refusingLedger) Err() error {
	if l.refuse.Load() {
		return ledger.ErrClosed
	}
	return nil
}

// TestTokenChangesTheLogCannotTake: a token whose creation cannot be
// recorded is not handed out; a revocation that cannot be recorded stands,
// and the answer says so instead of asking the caller to try again.
func TestTokenChangesTheLogCannotTake(t *testing.T) {
	var refuse atomic.Bool
	api := newTestAPI(t)
	api.pl.Ledger = refusingLedger{api.ledger, &refuse}
	do := func(method, path, body string) (int, http.Header, string) { return asRoot(t, api, method, path, body) }
	tokens := func() int {
		toks, err := api.auth.List(context.Background(), api.root)
		if err != nil {
			t.Fatal(err)
		}
		return len(toks)
	}
	_, _, data := do("POST", "/v1/tokens", `{"name":"reader","roles":["read"],"tenants":["acme"]}`)
	var tok struct{ ID string }
	json.Unmarshal([]byte(data), &tok)
	before := tokens()

	refuse.Store(true)
	if code, _, data := do("POST", "/v1/tokens", `{"name":"other","roles":["read"],"tenants":["acme"]}`); code == http.StatusCreated || tokens() != before {
		t.Fatalf("minting while the log refuses: %d %s, %d tokens (were %d)", code, data, tokens(), before)
	}
	code, hdr, data := do("DELETE", "/v1/tokens/"+tok.ID, "")
	if code != http.StatusInternalServerError || hdr.Get("Retry-After") != "" || !strings.Contains(data, "was revoked") || tokens() != before-1 {
		t.Fatalf("revoking while the log refuses: %d %q %s, %d tokens (were %d)", code, hdr.Get("Retry-After"), data, tokens(), before)
	}
}

// asRoot sends a JSON request with the root token and returns the answer.
func asRoot(t *testing.T, api *testAPI, method, path, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, api.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer root-token")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(data)
}
