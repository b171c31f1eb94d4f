package main

import (
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
	full := filepath.Join(data, "log", "tile", "0", "000")
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
