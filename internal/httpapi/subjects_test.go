package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ledger"
)

// TestErasureRecordedOnceTheLogTakesIt: an erasure whose record the log
// refuses still destroys the keys, says that it is not recorded yet, and
// is recorded by Run as soon as the log takes writes again, once.
func TestErasureRecordedOnceTheLogTakesIt(t *testing.T) {
	ctx := context.Background()
	var s *Server
	api := newTestAPIWith(t, func(srv *Server) {
		s = srv
		s.Subjects = s.Opener.(*crypto.Keyring)
		s.Scrubber = s.Index.(Scrubber)
		s.AccessWindow = 20 * time.Millisecond
	})
	if _, err := api.pl.Append(ctx, system, []event.Event{{Type: "ai.inference", Tenant: "acme", Actor: &event.Actor{ID: "alice"}}}); err != nil {
		t.Fatal(err)
	}
	actorOfAlice := func() string {
		page, err := api.idx.Query(ctx, index.Query{Tenant: "acme", Type: "ai.inference"})
		if err != nil || len(page.Hits) != 1 {
			t.Fatalf("alice's event: %v, %v", page, err)
		}
		r, err := event.RecordFrom(nil, page.Hits[0].Record)
		if err != nil {
			t.Fatal(err)
		}
		return r.Actor.ID
	}
	pseudonym := actorOfAlice()

	api.ledger.mu.Lock()
	api.ledger.refuse = ledger.ErrPushback
	api.ledger.mu.Unlock()
	req, _ := http.NewRequest("POST", api.srv.URL+"/v1/subjects/acme/alice/erase", nil)
	req.Header.Set("Authorization", "Bearer root-token")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	body := string(b)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "not recorded yet") {
		t.Fatalf("erasure while the log refuses writes: %d %s; want 503 saying it is not recorded yet", res.StatusCode, body)
	}
	pending, err := s.Subjects.PendingErasures(ctx)
	if err != nil || len(pending) != 1 || pending[0].Pseudonym != pseudonym || pending[0].KeysDestroyed != 1 {
		t.Fatalf("pending erasures: %+v, %v; want alice's, with her salt destroyed", pending, err)
	}
	if _, ok, _ := s.Subjects.LookupSubject(ctx, "acme", "alice"); ok {
		t.Fatal("alice's keys survive the erasure")
	}
	pendingInReadyz := func() any {
		res, err := http.Get(api.srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var r struct{ Details map[string]any }
		json.NewDecoder(res.Body).Decode(&r)
		return r.Details["erasures_pending"]
	}
	if n := pendingInReadyz(); n != 1.0 {
		t.Errorf("/readyz details.erasures_pending = %v while the erasure waits; want 1", n)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { s.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()
	time.Sleep(100 * time.Millisecond) // Run tries while the log refuses
	api.ledger.mu.Lock()
	api.ledger.refuse = nil
	api.ledger.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if p, _ := s.Subjects.PendingErasures(ctx); len(p) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the erasure was not recorded after the log took writes again")
		}
	}
	time.Sleep(100 * time.Millisecond) // more of Run's rounds
	if n := pendingInReadyz(); n != nil {
		t.Errorf("/readyz details.erasures_pending = %v once recorded; want none", n)
	}
	page, err := api.idx.Query(ctx, index.Query{Tenant: "acme", Type: "privacy.erasure"})
	if err != nil || len(page.Hits) != 1 {
		t.Fatalf("erasure records: %d, %v; want 1", len(page.Hits), err)
	}
	r, err := event.RecordFrom(nil, page.Hits[0].Record)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != pending[0].ID || r.Resource == nil || r.Resource.ID != pseudonym || r.Actor.ID != "root" ||
		!r.Time.Equal(pending[0].At) {
		t.Errorf("erasure record %+v; want id %s, resource %s, by root, at %v", r, pending[0].ID, pseudonym, pending[0].At)
	}
	if page, _ := api.idx.Query(ctx, index.Query{Tenant: "acme", Actor: pseudonym}); len(page.Hits) != 0 {
		t.Errorf("alice's pseudonym still finds %d events", len(page.Hits))
	}
}
