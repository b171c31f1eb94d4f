package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// openNote checks a signed note against an Ed25519 verifier key by hand,
// following the C2SP signed-note spec, without golang.org/x/mod/sumdb/note
// (which the server signs with). It returns the note's text.
func openNote(t *testing.T, vkey string, msg []byte) string {
	t.Helper()
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		t.Fatalf("bad verifier key %q", vkey)
	}
	name := parts[0]
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 1 {
		t.Fatalf("bad verifier key %q", vkey)
	}
	pub := ed25519.PublicKey(raw[1:])
	h := sha256.Sum256(append([]byte(name+"\n"), raw...))
	keyHash := binary.BigEndian.Uint32(h[:4])

	i := bytes.LastIndex(msg, []byte("\n\n"))
	if i < 0 {
		t.Fatalf("note without signatures: %q", msg)
	}
	text, sigs := msg[:i+1], string(msg[i+2:])
	for _, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
		rest, ok := strings.CutPrefix(line, "\u2014 "+name+" ")
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || len(sig) != 68 || binary.BigEndian.Uint32(sig) != keyHash {
			continue
		}
		if ed25519.Verify(pub, text, sig[4:]) {
			return string(text)
		}
	}
	t.Fatalf("no valid signature by %s on %q", name, msg)
	return ""
}

// TestServedLogVerifiesIndependently checks everything the server publishes
// under /log and the proof endpoints with code other than the server's:
// signatures by hand with crypto/ed25519, tree math with
// transparency-dev/merkle (the server uses x/mod's tlog).
func TestServedLogVerifiesIndependently(t *testing.T) {
	const n = 600
	s := startServer(t, t.TempDir())
	for i := 0; i < n; {
		k := 1 + i%37
		var evs []map[string]any
		for j := 0; j < k && i < n; j++ {
			evs = append(evs, map[string]any{"type": "api.call", "id": fmt.Sprintf("ev-%d", i),
				"resource": map[string]any{"type": "endpoint", "id": fmt.Sprintf("/x/%d", i)}})
			i++
		}
		s.post(evs...)
	}
	_, vkey := s.do("GET", "/log/key", "", "", nil)
	_, cpMsg := s.do("GET", "/log/checkpoint", "", "", nil)
	text := openNote(t, strings.TrimSpace(string(vkey)), cpMsg)
	lines := strings.Split(text, "\n")
	if lines[0] != strings.SplitN(string(vkey), "+", 2)[0] || lines[1] != fmt.Sprint(n) {
		t.Fatalf("checkpoint %q: want origin = key name and size %d", text, n)
	}
	cpRoot, _ := base64.StdEncoding.DecodeString(lines[2])

	// Entries: fetch every bundle and hash each entry as an RFC 6962 leaf.
	h := rfc6962.DefaultHasher
	var entries [][]byte
	for b := 0; b*256 < n; b++ {
		path := fmt.Sprintf("/log/tile/entries/%03d", b)
		if w := n - b*256; w < 256 {
			path += fmt.Sprintf(".p/%d", w)
		}
		code, body := s.do("GET", path, adminToken, "", nil)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		for len(body) > 0 {
			l := int(binary.BigEndian.Uint16(body))
			entries = append(entries, body[2:2+l])
			body = body[2+l:]
		}
	}
	if len(entries) != n {
		t.Fatalf("bundles hold %d entries, want %d", len(entries), n)
	}
	leaves := make([][]byte, n)
	rf := compact.RangeFactory{Hash: h.HashChildren}
	cr := rf.NewEmptyRange(0)
	roots := make([][]byte, n+1)
	for i, e := range entries {
		// Each entry is canonical JSON (RFC 8785) of the event as accepted.
		var m map[string]any
		if err := json.Unmarshal(e, &m); err != nil || m["id"] != fmt.Sprintf("ev-%d", i) {
			t.Fatalf("entry %d is not event ev-%d: %s", i, i, e)
		}
		if c, err := jcs.Transform(e); err != nil || !bytes.Equal(c, e) {
			t.Fatalf("entry %d is not in canonical form", i)
		}
		leaves[i] = h.HashLeaf(e)
		cr.Append(leaves[i], nil)
		roots[i+1], _ = cr.GetRootHash(nil)
	}
	if !bytes.Equal(roots[n], cpRoot) {
		t.Fatalf("root of the entries %x != checkpoint root %x", roots[n], cpRoot)
	}

	// Hash tiles: level 0 holds the leaf hashes, level 1 the roots of full
	// level-0 tiles; partial tiles are prefixes.
	for _, tc := range []struct {
		path  string
		first int
		w     int
	}{{"/log/tile/0/000", 0, 256}, {"/log/tile/0/001", 256, 256}, {"/log/tile/0/002.p/88", 512, 88}, {"/log/tile/0/002.p/10", 512, 10}} {
		code, body := s.do("GET", tc.path, "", "", nil)
		if code != 200 || len(body) != tc.w*32 {
			t.Fatalf("GET %s: %d, %d bytes", tc.path, code, len(body))
		}
		for j := 0; j < tc.w; j++ {
			if !bytes.Equal(body[j*32:(j+1)*32], leaves[tc.first+j]) {
				t.Fatalf("%s hash %d is not the leaf hash of entry %d", tc.path, j, tc.first+j)
			}
		}
	}
	_, l1 := s.do("GET", "/log/tile/1/000.p/2", "", "", nil)
	for j := 0; j < 2; j++ {
		r := rf.NewEmptyRange(0)
		for _, lh := range leaves[j*256 : (j+1)*256] {
			r.Append(lh, nil)
		}
		want, _ := r.GetRootHash(nil)
		if !bytes.Equal(l1[j*32:(j+1)*32], want) {
			t.Fatalf("tile 1/000 hash %d is not the root of tile 0/%03d", j, j)
		}
	}
	if code, _ := s.do("GET", "/log/tile/0/002.p/89", "", "", nil); code != 404 {
		t.Fatalf("a tile beyond the tree: %d, want 404", code)
	}

	// Proof endpoints, checked with transparency-dev/merkle: every index at
	// the full size, every size for a few indexes, and consistency proofs.
	proofOf := func(path string) [][]byte {
		var p struct {
			Hashes   []string `json:"hashes"`
			Size, To uint64
		}
		s.getJSON(path, &p)
		if max(p.Size, p.To) == 0 {
			t.Fatalf("%s does not say which tree the proof is for", path)
		}
		out := make([][]byte, len(p.Hashes))
		for i, b := range p.Hashes {
			out[i], _ = base64.StdEncoding.DecodeString(b)
		}
		return out
	}
	check := func(idx, size uint64) {
		p := proofOf(fmt.Sprintf("/v1/proof/inclusion?index=%d&size=%d", idx, size))
		if err := proof.VerifyInclusion(h, idx, size, leaves[idx], p, roots[size]); err != nil {
			t.Fatalf("inclusion of %d in %d: %v", idx, size, err)
		}
	}
	for idx := uint64(0); idx < n; idx++ {
		check(idx, n)
	}
	for size := uint64(1); size <= n; size++ {
		check(0, size)
		check(size-1, size)
		check((size-1)/2, size)
	}
	// Without a size, the answer says which tree the proof is for.
	var latest struct {
		Size   uint64   `json:"size"`
		Hashes []string `json:"hashes"`
	}
	s.getJSON("/v1/proof/inclusion?index=5", &latest)
	if latest.Size < n {
		t.Fatalf("a proof for the current tree says size %d; the log has at least %d records", latest.Size, n)
	}
	for _, pr := range [][2]uint64{{1, 600}, {255, 256}, {256, 257}, {300, 512}, {511, 600}, {599, 600}, {7, 8}, {100, 101}} {
		p := proofOf(fmt.Sprintf("/v1/proof/consistency?from=%d&to=%d", pr[0], pr[1]))
		if err := proof.VerifyConsistency(h, pr[0], pr[1], p, roots[pr[0]], roots[pr[1]]); err != nil {
			t.Fatalf("consistency %d→%d: %v", pr[0], pr[1], err)
		}
	}

	// GET /v1/events/{id}?proof=true: the event minus the added fields is the
	// stored record; its leaf is in the tree of the returned checkpoint.
	for _, i := range []int{0, 255, 256, 599} {
		var ev map[string]json.RawMessage
		s.getJSON(fmt.Sprintf("/v1/events/ev-%d?proof=true", i), &ev)
		var pr struct {
			Index    uint64   `json:"index"`
			TreeSize uint64   `json:"tree_size"`
			LeafHash string   `json:"leaf_hash"`
			Hashes   []string `json:"hashes"`
		}
		json.Unmarshal(ev["proof"], &pr)
		var cp string
		json.Unmarshal(ev["checkpoint"], &cp)
		cpLines := strings.Split(openNote(t, strings.TrimSpace(string(vkey)), []byte(cp)), "\n")
		root, _ := base64.StdEncoding.DecodeString(cpLines[2])
		for _, k := range []string{"index", "proof", "checkpoint", "decrypted_content"} {
			delete(ev, k)
		}
		rec, _ := json.Marshal(ev)
		rec, _ = jcs.Transform(rec)
		leaf := h.HashLeaf(rec)
		if !bytes.Equal(rec, entries[i]) {
			t.Fatalf("event %d does not reproduce its stored record:\n%s\n%s", i, rec, entries[i])
		}
		var hashes [][]byte
		for _, b := range pr.Hashes {
			x, _ := base64.StdEncoding.DecodeString(b)
			hashes = append(hashes, x)
		}
		if err := proof.VerifyInclusion(h, pr.Index, pr.TreeSize, leaf, hashes, root); err != nil {
			t.Fatalf("event %d: proof does not verify: %v", i, err)
		}
	}
}
