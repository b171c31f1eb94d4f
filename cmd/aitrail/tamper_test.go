package main

import (
	"database/sql"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// buildLog makes a data directory holding n events (every third with
// content) through the real server, stopped cleanly.
func buildLog(t *testing.T, n int) string {
	t.Helper()
	data := t.TempDir()
	s := startServer(t, data)
	for i := 0; i < n; i += 50 {
		var evs []map[string]any
		for j := i; j < i+50 && j < n; j++ {
			ev := map[string]any{"type": "data.upload", "id": fmt.Sprintf("e%d", j), "actor": map[string]any{"id": "u"}}
			if j%3 == 0 {
				ev["content"] = fmt.Sprintf("c%d", j)
			}
			evs = append(evs, ev)
		}
		s.post(evs...)
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data, "--quiet"); code != 0 {
		t.Fatalf("fresh log does not verify: %d %s %s", code, out, errOut)
	}
	// The tests change files as an attacker with root would: lifting the
	// seals first. The tree, not the seals, must catch them.
	unseal(t, data)
	return data
}

var reportsIndex = regexp.MustCompile(`^FAILED: (record \d+: |checkpoint: )`)

// flipEach flips every byte of file in turn (restoring it after) and
// requires `aitrail verify --data` to fail with exit status 1, naming the
// record or the checkpoint.
func flipEach(t *testing.T, data, file string, stride int) {
	t.Helper()
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(file, orig, 0o600)
	rel, _ := filepath.Rel(data, file)
	for i := 0; i < len(orig); i += stride {
		mod := append([]byte(nil), orig...)
		mod[i] ^= 0x20
		if err := os.WriteFile(file, mod, 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := runCLI("verify", "--data", data, "--quiet")
		if code != 1 || !reportsIndex.MatchString(strings.TrimSpace(errOut)) {
			t.Fatalf("%s byte %d changed: verify exit %d, output %q %q; want exit 1 naming the record or checkpoint", rel, i, code, out, errOut)
		}
	}
}

// TestVerifyReportsEveryChangedByte changes every single byte of the stored
// records (segments), of the tiles and of the checkpoint.
func TestVerifyReportsEveryChangedByte(t *testing.T) {
	data := buildLog(t, 12)
	segs, _ := filepath.Glob(filepath.Join(data, "log", "segments", "*.seg"))
	for _, f := range segs {
		flipEach(t, data, f, 1)
	}
	flipEach(t, data, filepath.Join(data, "log", "checkpoint"), 1)
	tiles, _ := filepath.Glob(filepath.Join(data, "log", "tile", "0", "*.p", "*"))
	if len(tiles) == 0 {
		t.Fatal("no partial tile files")
	}
	for _, f := range tiles {
		flipEach(t, data, f, 1)
	}
}

func TestVerifyReportsChangedFullTiles(t *testing.T) {
	data := buildLog(t, 260)
	full := filepath.Join(data, "log", "tile", "0", "pack", "00000000")
	if _, err := os.Stat(full); err != nil {
		t.Fatal(err)
	}
	flipEach(t, data, full, 1)
}

// TestVerifyCatchesRewrittenRecord changes a record and fixes its checksum,
// as a deliberate forger would: the tree still exposes it, by index.
func TestVerifyCatchesRewrittenRecord(t *testing.T) {
	data := buildLog(t, 12)
	segs, _ := filepath.Glob(filepath.Join(data, "log", "segments", "*.seg"))
	b, _ := os.ReadFile(segs[0])
	// Walk the frames to record 7 and change a byte of its "type".
	off := 16
	for i := 0; i < 7; i++ {
		off += 12 + int(binary.BigEndian.Uint32(b[off:])) + int(binary.BigEndian.Uint32(b[off+4:]))
	}
	recLen := int(binary.BigEndian.Uint32(b[off:]))
	blobLen := int(binary.BigEndian.Uint32(b[off+4:]))
	rec := b[off+12 : off+12+recLen]
	i := strings.Index(string(rec), "data.upload")
	rec[i] = 'D'
	crc := crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), b[off:off+8])
	crc = crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), b[off+12:off+12+recLen+blobLen])
	binary.BigEndian.PutUint32(b[off+8:], crc)
	os.WriteFile(segs[0], b, 0o600)
	code, _, errOut := runCLI("verify", "--data", data)
	if code != 1 || !strings.Contains(errOut, "record 7:") {
		t.Fatalf("verify exit %d, %q; want exit 1 naming record 7", code, errOut)
	}
	// The server refuses to start on it, naming the problem.
	code, errOut = runChild(t, 30*time.Second, "serve", "--data", data, "--addr", freeAddr(t))
	if code == 0 || !strings.Contains(errOut, "record 7") {
		t.Fatalf("serve on a rewritten log: exit %d, %q", code, errOut)
	}
}

// TestReadsReportAlteredRecord: a record altered in its segment file while
// the server runs, once it is older than those the log keeps in memory, is
// never served. The reads that reach it fail with integrity_failure, and the
// failure is recorded, once, as an integrity.failure event that raises the
// built-in critical alert.
func TestReadsReportAlteredRecord(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	const n = 17_000 // more than the 16,384 records the log keeps in memory
	for i := 0; i < n; i += 1000 {
		var evs []map[string]any
		for j := i; j < i+1000; j++ {
			evs = append(evs, map[string]any{"type": "data.upload", "tenant": "acme", "id": fmt.Sprintf("e%d", j), "actor": map[string]any{"id": "u"}})
		}
		s.post(evs...)
	}
	s.waitIndexed()
	var e5 struct {
		Index float64 `json:"index"`
	}
	s.getJSON("/v1/events/e5", &e5)

	// Alter e5's type in its segment, as an attacker with root would.
	unseal(t, data)
	segs, _ := filepath.Glob(filepath.Join(data, "log", "segments", "*"))
	altered := false
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if i := strings.Index(string(b), `"id":"e5",`); i >= 0 {
			j := i + strings.Index(string(b[i:]), `"data.upload"`)
			b[j+1] = 'D'
			if err := os.WriteFile(seg, b, 0o600); err != nil {
				t.Fatal(err)
			}
			altered = true
		}
	}
	if !altered {
		t.Fatal("record e5 not found in the segments")
	}

	wantIntegrityFailures(t, s, adminToken, "Data.upload", "/v1/events/e5", "/v1/events?tenant=acme&limit=10", "/v1/events/e5")
	f := onlyIntegrityFailure(t, s)
	if attrs, _ := f["attributes"].(map[string]any); f["tenant"] != "acme" || attrs["integrity.check"] != "record_hash" || attrs["integrity.record_index"] != e5.Index {
		t.Errorf("integrity.failure event %v", f)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var out struct {
			Alerts []map[string]any `json:"alerts"`
		}
		s.getJSON("/v1/alerts?tenant=acme&rule=integrity-failure", &out)
		if len(out.Alerts) > 0 {
			if a := out.Alerts[0]; a["severity"] != "critical" || a["state"] != "firing" {
				t.Fatalf("alert %v", a)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no integrity-failure alert")
		}
	}
	// Records it does not reach are still served.
	if code, body := s.do("GET", "/v1/events/e6", adminToken, "", nil); code != 200 {
		t.Errorf("an intact neighbour: %d %s", code, body)
	}
}

// TestReadsReportAlteredIndex alters the query index of a running server,
// as someone who can write its file but not the sealed log would, so that
// one tenant's record is listed under another tenant. Readers of that
// tenant must get an integrity failure, not the other tenant's record, and
// the failure is recorded in the record's own tenant.
func TestReadsReportAlteredIndex(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	s.post(map[string]any{"type": "data.upload", "tenant": "acme", "id": "a1"},
		map[string]any{"type": "data.upload", "tenant": "globex", "id": "g1", "action": "globex-secret"})
	s.waitIndexed()
	_, _, reader := mint(t, s, adminToken, `{"name":"r","roles":["read"],"tenants":["acme"]}`)
	if code, body := s.do("GET", "/v1/events/g1", reader, "", nil); code != 404 {
		t.Fatalf("acme's reader got globex's g1 before the index was altered: %d %s", code, body)
	}

	db, err := sql.Open("sqlite", filepath.Join(data, indexFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if res, err := db.Exec(`UPDATE records SET tenant = 'acme' WHERE id = 'g1'`); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d rows altered", n)
	}
	// And in acme's postings (which records of a block are acme's): the
	// first 64 records, as a list of little-endian uint16 places. (The
	// server holds the postings of the block it is filling in memory and
	// adds to them those the table has for it.)
	var places strings.Builder
	for i := range 64 {
		fmt.Fprintf(&places, "%02X00", i)
	}
	if res, err := db.Exec(`INSERT OR REPLACE INTO postings (key, block, bits) VALUES (CAST('nacme' AS BLOB), 0, X'` + places.String() + `')`); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d postings altered", n)
	}

	wantIntegrityFailures(t, s, reader, "globex-secret", "/v1/events/g1", "/v1/events?limit=10", "/v1/events/g1?tenant=acme")
	if f := onlyIntegrityFailure(t, s); f["tenant"] != "globex" || f["attributes"].(map[string]any)["integrity.check"] != "record_key" {
		t.Errorf("integrity.failure event %v; want one in globex for check record_key", f)
	}
	if code, body := s.do("GET", "/v1/events/a1", reader, "", nil); code != 200 {
		t.Errorf("acme's own a1: %d %s", code, body)
	}
}

// TestIngestChecksWhatTheIndexFinds: after a restart, ingest learns of ids
// sent before from the query index. A resent id is answered as the
// duplicate it is; but if the index was altered to file the id at another
// record's place, the append is refused (500 integrity_failure) rather than
// acknowledged as a duplicate of a record that is not its own, which would
// lose it.
func TestIngestChecksWhatTheIndexFinds(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	first := s.post(map[string]any{"type": "data.upload", "tenant": "acme", "id": "x1"},
		map[string]any{"type": "data.upload", "tenant": "acme", "id": "x2"},
		map[string]any{"type": "data.upload", "tenant": "acme", "id": "x3"})
	s.waitIndexed()
	s.stop()
	s = startServer(t, data)
	if again := s.post(map[string]any{"type": "data.upload", "tenant": "acme", "id": "x1"}); !again.Results[0].Duplicate || again.Results[0].Index != first.Results[0].Index {
		t.Fatalf("x1 resent after a restart: %+v; want a duplicate of index %d", again.Results[0], first.Results[0].Index)
	}

	db, err := sql.Open("sqlite", filepath.Join(data, indexFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The index files x2 at x3's place.
	for _, q := range []string{`UPDATE records SET id = 'was-x2' WHERE id = 'x2'`, `UPDATE records SET id = 'x2' WHERE id = 'x3'`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	size := s.size()
	body := []byte(`{"type":"data.upload","tenant":"acme","id":"x2"}`)
	code, resp := s.do("POST", "/v1/events", adminToken, "application/json", body)
	if code != 500 || !strings.Contains(string(resp), `"code":"integrity_failure"`) {
		t.Errorf("x2 resent with the index filing it at x3's place: %d %s; want 500 integrity_failure", code, resp)
	}
	if got := s.size(); got != size {
		t.Errorf("the refused append changed the log from %d to %d records", size, got)
	}
}

// wantIntegrityFailures requires every GET of paths by token to be refused
// with 500 integrity_failure, showing nothing of secret.
func wantIntegrityFailures(t *testing.T, s *server, token, secret string, paths ...string) {
	t.Helper()
	for _, path := range paths {
		code, body := s.do("GET", path, token, "", nil)
		if code != 500 || !strings.Contains(string(body), `"code":"integrity_failure"`) || strings.Contains(string(body), secret) {
			t.Errorf("GET %s: %d %s; want 500 integrity_failure", path, code, body)
		}
	}
}

// onlyIntegrityFailure returns the one integrity.failure record the log
// holds: a damaged record is recorded once, however often it is read.
func onlyIntegrityFailure(t *testing.T, s *server) map[string]any {
	t.Helper()
	s.waitIndexed()
	failures := s.allEvents("type=integrity.failure")
	if len(failures) != 1 {
		t.Fatalf("integrity.failure events %v; want one for the record, however often it is read", failures)
	}
	return failures[0]
}
