package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/crypto"
)

// grepData returns the files under dir that contain marker.
func grepData(t *testing.T, dir, marker string) []string {
	t.Helper()
	var hits []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(marker)) {
			hits = append(hits, path)
		}
		return nil
	})
	return hits
}

// TestNoPlaintextAtRest sends personal identifiers and content carrying
// markers through the real server and looks for them in every file of the
// data directory: the log, tiles, catalog, index, registry and their
// write-ahead logs hold only pseudonyms and ciphertext.
func TestNoPlaintextAtRest(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	const (
		actor   = "marker-actor-7f3a@example.com"
		ip      = "198.51.100.73"
		agent   = "marker-agent/9.9"
		session = "marker-session-51c2"
		secret  = "marker-content-e91b"
		email   = "marker-email-40d1@example.com"
	)
	s.post(map[string]any{
		"type": "ai.inference", "id": "pii-1",
		"actor":      map[string]any{"id": actor, "ip": ip, "user_agent": agent, "session_id": session, "type": "user"},
		"attributes": map[string]any{"gen_ai.conversation.id": session, "user.id": actor},
		"content":    map[string]any{"prompt": secret},
	})
	// An event with more attributes than there are personal ones (the
	// server then looks for them the other way round).
	many := map[string]any{"user.email": email, "client.address": ip}
	for i := range 20 {
		many[fmt.Sprintf("other.%d", i)] = i
	}
	s.post(map[string]any{"type": "ai.inference", "id": "pii-2", "actor": map[string]any{"id": actor, "type": "user"}, "attributes": many})
	s.waitIndexed()
	// Searching by the plaintext id still works: the server computes the
	// pseudonym.
	hits := s.allEvents("actor=" + url.QueryEscape(actor))
	if len(hits) != 2 {
		t.Fatalf("search by actor found %d events; want 2", len(hits))
	}
	stored := hits[0]["actor"].(map[string]any)
	for _, k := range []string{"id", "ip", "user_agent", "session_id"} {
		if v, _ := stored[k].(string); !strings.HasPrefix(v, "hmac-sha256:") {
			t.Errorf("stored actor.%s = %q; want a pseudonym", k, v)
		}
	}
	s.stop()
	for _, m := range []string{actor, ip, agent, session, secret, email} {
		if files := grepData(t, data, m); len(files) > 0 {
			t.Errorf("%q is stored in the clear in %v", m, files)
		}
	}
}

// TestErasure erases a subject and checks each promise: its content no
// longer decrypts, a search for it finds nothing, other subjects are
// untouched, the erasure is itself a record, and the whole log still
// verifies.
func TestErasure(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	for _, who := range []string{"alice", "bob"} {
		for i := 0; i < 3; i++ {
			s.post(map[string]any{"type": "ai.inference", "id": who + string(rune('0'+i)),
				"actor": map[string]any{"id": who}, "content": map[string]any{"prompt": "prompt of " + who}})
		}
	}
	s.post(map[string]any{"type": "model.deploy", "id": "svc", "actor": map[string]any{"id": "release-bot", "type": "service"},
		"model": map[string]any{"name": "m", "version": "1"}})
	s.waitIndexed()
	if n := len(s.allEvents("actor=alice")); n != 3 {
		t.Fatalf("before erasure, alice has %d events; want 3", n)
	}
	// A service actor names no person: stored as sent, found by its id.
	if svc := s.allEvents("actor=release-bot"); len(svc) != 1 || svc[0]["actor"].(map[string]any)["id"] != "release-bot" {
		t.Fatalf("service actor search: %v", svc)
	}
	var before map[string]any
	s.getJSON("/v1/events/alice0", &before)
	pseudonym := before["actor"].(map[string]any)["id"].(string)
	keyID := before["content"].(map[string]any)["key_id"].(string)

	// Only the erase role may erase.
	code, body := s.do("POST", "/v1/tokens", adminToken, "application/json", []byte(`{"name":"reader","roles":["read"],"tenants":["*"]}`))
	var tok struct{ Token string }
	json.Unmarshal(body, &tok)
	if code != 201 {
		t.Fatalf("token: %d %s", code, body)
	}
	if code, _ := s.do("POST", "/v1/subjects/default/alice/erase", tok.Token, "", nil); code != 403 {
		t.Fatalf("erase with a read token: %d; want 403", code)
	}
	code, body = s.do("POST", "/v1/subjects/default/alice/erase", adminToken, "", nil)
	var res struct {
		Pseudonym     string `json:"pseudonym"`
		KeysDestroyed int    `json:"keys_destroyed"`
		Scrubbed      int    `json:"index_rows_scrubbed"`
		Event         struct{ ID string }
	}
	if err := json.Unmarshal(body, &res); code != 200 || err != nil {
		t.Fatalf("erase: %d %s", code, body)
	}
	if res.Pseudonym != pseudonym || res.KeysDestroyed != 2 || res.Scrubbed != 3 {
		t.Fatalf("erase answered %s", body)
	}

	if n := len(s.allEvents("actor=alice")); n != 0 {
		t.Errorf("after erasure, a search for alice finds %d events", n)
	}
	if n := len(s.allEvents("actor=" + pseudonym)); n != 0 {
		t.Errorf("after erasure, a search for alice's pseudonym finds %d events", n)
	}
	var after map[string]any
	s.getJSON("/v1/events/alice0", &after)
	if after["decrypted_content"] != nil || after["content_erased"] != true {
		t.Errorf("alice's event after erasure: decrypted %v, content_erased %v", after["decrypted_content"], after["content_erased"])
	}
	var bobs map[string]any
	s.getJSON("/v1/events/bob0", &bobs)
	if dc, _ := bobs["decrypted_content"].(map[string]any); dc["prompt"] != "prompt of bob" {
		t.Errorf("bob's content after alice's erasure: %v", bobs["decrypted_content"])
	}
	if n := len(s.allEvents("actor=bob")); n != 3 {
		t.Errorf("bob has %d events after alice's erasure; want 3", n)
	}
	s.waitIndexed()
	var rec map[string]any
	s.getJSON("/v1/events/"+res.Event.ID, &rec)
	if rec["type"] != "privacy.erasure" || rec["resource"].(map[string]any)["id"] != pseudonym || strings.Contains(string(mustJSON(rec)), "alice") {
		t.Errorf("erasure record %v", rec)
	}
	// Erasing again (here with the CLI) destroys nothing more and is not
	// an error.
	if code, out, errOut := runCLI("erase", "--url", s.url, "--token", adminToken, "--subject", "alice"); code != 0 || !strings.Contains(out, "Nothing to erase") {
		t.Errorf("second erasure: exit %d %s %s", code, out, errOut)
	}
	// A tenant the token may not see is not found.
	code, body = s.do("POST", "/v1/tokens", adminToken, "application/json", []byte(`{"name":"eraser","roles":["erase"],"tenants":["acme"]}`))
	json.Unmarshal(body, &tok)
	if code, _ := s.do("POST", "/v1/subjects/default/bob/erase", tok.Token, "", nil); code != 404 {
		t.Errorf("erasing in another tenant: %d; want 404", code)
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data, "--quiet"); code != 0 {
		t.Fatalf("verify after erasure: %d %s %s", code, out, errOut)
	}
	// A rebuilt index applies the erasure record again: the pseudonym
	// stays out of it.
	if code, out, errOut := runCLI("reindex", "--data", data); code != 0 {
		t.Fatalf("reindex: %d %s %s", code, out, errOut)
	}
	s = startServer(t, data)
	s.waitIndexed()
	if n := len(s.allEvents("actor=" + pseudonym)); n != 0 {
		t.Errorf("after reindex, a search for alice's former pseudonym finds %d events", n)
	}
	if n := len(s.allEvents("actor=bob")); n != 3 {
		t.Errorf("after reindex, bob has %d events; want 3", n)
	}
	s.stop()
	// The destroyed key is gone from the catalog's files, not just unlinked.
	for _, f := range grepData(t, data, keyID) {
		if strings.Contains(filepath.Base(f), "catalog") {
			t.Errorf("the erased data key %s is still in %s", keyID, f)
		}
	}
	s = startServer(t, data)
	var again map[string]any
	s.getJSON("/v1/events/alice1", &again)
	if again["content_erased"] != true {
		t.Errorf("after a restart alice's content is %v", again["decrypted_content"])
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestErasureLeftPendingIsRecordedAtStart: an erasure whose keys were
// destroyed but whose record never reached the log (the process stopped in
// between) is recorded when the server next starts, once.
func TestErasureLeftPendingIsRecordedAtStart(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	s.post(map[string]any{"type": "ai.inference", "id": "alice0", "actor": map[string]any{"id": "alice"},
		"content": map[string]any{"prompt": "prompt of alice"}})
	s.waitIndexed()
	var before map[string]any
	s.getJSON("/v1/events/alice0", &before)
	pseudonym := before["actor"].(map[string]any)["id"].(string)
	s.stop()

	// The keys step of an erasure, as the server takes it, and then a stop.
	catalog, err := openCatalog(data)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := masterKey(data, keySource{}, false)
	if err != nil {
		t.Fatal(err)
	}
	e, err := crypto.NewKeyring(kek, catalog).EraseSubject(context.Background(), "default", "alice", "dpo", "tok-dpo")
	catalog.Close()
	if err != nil || e.KeysDestroyed != 2 {
		t.Fatalf("erasing alice's keys: %+v, %v", e, err)
	}

	for range 2 { // the second start finds nothing pending
		s = startServer(t, data)
		s.waitIndexed()
		recs := s.allEvents("type=privacy.erasure")
		if len(recs) != 1 {
			t.Fatalf("%d erasure records after the start; want 1", len(recs))
		}
		if r := recs[0]; r["id"] != e.ID || r["resource"].(map[string]any)["id"] != pseudonym || r["actor"].(map[string]any)["id"] != "dpo" {
			t.Errorf("erasure record %v; want id %s naming %s, by dpo", r, e.ID, pseudonym)
		}
		if n := len(s.allEvents("actor=" + pseudonym)); n != 0 {
			t.Errorf("alice's pseudonym still finds %d events", n)
		}
		var after map[string]any
		s.getJSON("/v1/events/alice0", &after)
		if after["content_erased"] != true {
			t.Errorf("alice's content after the erasure: %v", after["decrypted_content"])
		}
		s.stop()
	}
}

// TestErasureSurvivesARestoredCatalog: a key catalog restored from a backup
// made before an erasure holds the erased subject's keys again; the server
// destroys them again, from the keys the erasure record lists, before it
// serves anything, and says so once.
func TestErasureSurvivesARestoredCatalog(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	for _, who := range []string{"alice", "bob"} {
		s.post(map[string]any{"type": "ai.inference", "id": who + "0", "actor": map[string]any{"id": who},
			"content": map[string]any{"prompt": "prompt of " + who}})
	}
	s.waitIndexed()
	s.stop()
	backup := t.TempDir()
	for _, name := range []string{catalogFile, catalogFile + "-wal", catalogFile + "-shm"} {
		if b, err := os.ReadFile(filepath.Join(data, name)); err == nil {
			os.WriteFile(filepath.Join(backup, name), b, 0o600)
		}
	}

	s = startServer(t, data)
	code, body := s.do("POST", "/v1/subjects/default/alice/erase", adminToken, "", nil)
	var res struct {
		Pseudonym string
		Event     struct{ ID string }
	}
	if err := json.Unmarshal(body, &res); code != 200 || err != nil {
		t.Fatalf("erase: %d %s", code, body)
	}
	s.waitIndexed()
	var rec map[string]any
	s.getJSON("/v1/events/"+res.Event.ID, &rec)
	if ids, _ := rec["attributes"].(map[string]any)["privacy.erased_key_ids"].(string); strings.Count(ids, "dk-") != 2 {
		t.Fatalf("the erasure record lists the keys %q; want alice's salt and content keys", ids)
	}
	s.stop()

	// The catalog as it was before the erasure.
	for _, name := range []string{catalogFile, catalogFile + "-wal", catalogFile + "-shm"} {
		os.Remove(filepath.Join(data, name))
		if b, err := os.ReadFile(filepath.Join(backup, name)); err == nil {
			os.WriteFile(filepath.Join(data, name), b, 0o600)
		}
	}
	for start := 0; start < 2; start++ {
		s = startServer(t, data)
		var alice, bob map[string]any
		s.getJSON("/v1/events/alice0", &alice)
		s.getJSON("/v1/events/bob0", &bob)
		if alice["content_erased"] != true || alice["decrypted_content"] != nil {
			t.Errorf("start %d: alice's content with the restored catalog: %v", start, alice["decrypted_content"])
		}
		if dc, _ := bob["decrypted_content"].(map[string]any); dc["prompt"] != "prompt of bob" {
			t.Errorf("start %d: bob's content: %v", start, bob["decrypted_content"])
		}
		if n := len(s.allEvents("actor=alice")); n != 0 {
			t.Errorf("start %d: a search for alice finds %d events", start, n)
		}
		for deadline := time.Now().Add(10 * time.Second); s.metric(`aitrail_follower_lag_records{follower="erasures"}`) != 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("start %d: the erasure guard stays behind the log", start)
			}
		}
		said := strings.Contains(s.stderr.String(), "destroyed them again")
		if said != (start == 0) {
			t.Errorf("start %d: the server said it destroyed keys again: %v", start, said)
		}
		s.stop()
	}
}
