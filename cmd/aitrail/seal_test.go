package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCompleteFilesAreSealed runs the real server until it has completed a
// segment and made full tiles durable, then checks what an operator would:
// those files are read-only and, where the process may set it, immutable,
// so that they cannot be deleted or rewritten by accident; the server and
// `aitrail status` say which protection holds, including whether the active
// segment is append-only (only when commits append: preallocate_bytes 0);
// and the sealed log still restarts and verifies.
func TestCompleteFilesAreSealed(t *testing.T) {
	data := t.TempDir()
	cfg := writeConfig(t, "ledger:\n  segment_bytes: 1048576\n  sync_interval: 20ms\n")
	s := startServer(t, data, "--config", cfg)
	big := strings.Repeat("x", 60_000)
	for i := 0; i < 20; i++ { // 1.2 MB of content: the first segment fills up
		s.post(map[string]any{"type": "data.upload", "id": fmt.Sprintf("big%d", i), "content": big})
	}
	// A complete tile pack: 256 full tiles of level 0, 65,536 records.
	for i := 0; i < 66_000; i += 2000 {
		var evs []map[string]any
		for j := i; j < i+2000; j++ {
			evs = append(evs, map[string]any{"type": "api.call", "id": fmt.Sprintf("small%d", j)})
		}
		s.post(evs...)
	}

	type sealing struct {
		Mode        string `json:"mode"`
		Attributes  bool   `json:"attributes"`
		Reason      string `json:"reason"`
		SealedFiles int    `json:"sealed_files"`
		Failures    int    `json:"failures"`
		AppendOnly  bool   `json:"active_append_only"`
	}
	seg := filepath.Join(data, "log", "segments", "00000000000000000000.seg")
	tile := filepath.Join(data, "log", "tile", "0", "pack", "00000000")
	var st sealing
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var ready struct {
			Details struct {
				Sealing sealing `json:"sealing"`
			} `json:"details"`
		}
		s.getJSON("/readyz", &ready)
		st = ready.Details.Sealing
		// The first segment and the tile pack are sealed once the pack
		// is durable, within a sync interval: made read-only, then, with
		// attributes, immutable, which even root cannot open for writing.
		if fi, err := os.Stat(tile); err == nil && fi.Mode().Perm() == 0o400 && st.SealedFiles >= 2 &&
			(!st.Attributes || !writable(tile) && !writable(seg)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server sealed %d files; want the complete segment and the complete tile pack: %+v", st.SealedFiles, st)
		}
	}
	if st.Mode != "immutable" || st.Failures != 0 || (!st.Attributes && st.Reason == "") {
		t.Fatalf("/readyz sealing %+v; want mode immutable, no failures, and a reason if attributes are off", st)
	}
	if st.AppendOnly {
		t.Fatalf("/readyz sealing %+v: the active segment is append-only, but commits write over zeros ahead of its end", st)
	}

	for _, path := range []string{seg, tile} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o400 {
			t.Errorf("%s has mode %v; want read-only 0400", path, fi.Mode().Perm())
		}
		if st.Attributes {
			if err := os.Remove(path); err == nil {
				t.Fatalf("deleted the sealed %s", path)
			}
			if err := os.WriteFile(path, []byte("rewritten"), 0o600); err == nil {
				t.Fatalf("rewrote the sealed %s", path)
			}
		}
	}

	code, out, errOut := runCLI("status", "--data", data)
	// Every complete segment read-only, and immutable with attributes;
	// the complete tile pack too; the packs being filled (levels 0 and 1)
	// append-only with attributes.
	want := regexp.MustCompile(`complete segments: ([1-9]\d*), read-only ([1-9]\d*), immutable 0\n` +
		`active segment: +\S+, append-only no\n` +
		`complete tile packs: 1, read-only 1, immutable 0\n` +
		`open tile packs: +2, append-only 0\n` +
		`sealing: read-only`)
	if st.Attributes {
		want = regexp.MustCompile(`complete segments: ([1-9]\d*), read-only ([1-9]\d*), immutable ([1-9]\d*)\n` +
			`active segment: +\S+, append-only no\n` +
			`complete tile packs: 1, read-only 1, immutable 1\n` +
			`open tile packs: +2, append-only 2\n` +
			`sealing: immutable`)
	}
	m := want.FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != m[2] || (len(m) > 3 && m[3] != m[1]) {
		t.Fatalf("status exit %d:\n%s%s\nwant it to match %s, the counts of segments equal", code, out, errOut, want)
	}
	code, out, _ = runCLI("status", "--url", s.url)
	if code != 0 || !strings.Contains(out, `"mode": "immutable"`) {
		t.Fatalf("status --url exit %d:\n%s", code, out)
	}
	var rep map[string]any
	if code, out, _ := runCLI("status", "--data", data, "--json"); code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("status --json exit %d: %s", code, out)
	}

	// A sealed log restarts, with commits appending now (the active
	// segment becomes append-only where attributes can be set), and
	// verifies.
	s.stop()
	s = startServer(t, data, "--config", writeConfig(t, "ledger:\n  segment_bytes: 1048576\n  preallocate_bytes: 0\n"))
	s.post(map[string]any{"type": "api.call", "id": "after-restart"})
	if _, out, _ := runCLI("status", "--data", data); !strings.Contains(out, "append-only "+yesNo(st.Attributes)) {
		t.Errorf("status with preallocate_bytes 0:\n%s\nwant the active segment append-only %s", out, yesNo(st.Attributes))
	}
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data, "--quiet"); code != 0 {
		t.Fatalf("verify exit %d: %s %s", code, out, errOut)
	}
	if code, _, errOut := runCLI("status"); code != 2 || !strings.Contains(errOut, "--data") {
		t.Fatalf("status without flags: exit %d, %q; want a usage error", code, errOut)
	}
}

// writable reports whether path can be opened for writing.
func writable(path string) bool {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
