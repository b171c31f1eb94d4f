package merkle

import (
	"bytes"
	"crypto/rand"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// FuzzParseTilePath: tile paths come from URLs. Whatever parses must print
// back to the same path and stay within C2SP's ranges.
func FuzzParseTilePath(f *testing.F) {
	f.Fuzz(func(t *testing.T, path string) {
		id, err := ParseTilePath(path)
		if err != nil {
			return
		}
		if id.Path() != path {
			t.Fatalf("%q parsed as %+v, which prints as %q", path, id, id.Path())
		}
		if id.W < 1 || id.W > TileWidth || id.Level < EntriesLevel || id.Level > 63 {
			t.Fatalf("%q parsed out of range: %+v", path, id)
		}
	})
}

// FuzzOpenCheckpoint: checkpoints come from remote servers (verify --url)
// and from disk. Only a correctly signed, well-formed one may open.
func FuzzOpenCheckpoint(f *testing.F) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "fuzz.example/log")
	if err != nil {
		f.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	signed, _ := Checkpoint{Origin: "fuzz.example/log", Size: 42}.Sign(s)
	f.Add(signed)
	f.Fuzz(func(t *testing.T, msg []byte) {
		if _, err := ParseCheckpoint(msg); err != nil && !bytes.Contains([]byte(err.Error()), []byte("checkpoint")) {
			t.Fatalf("ParseCheckpoint error does not say what failed: %v", err)
		}
		cp, err := OpenCheckpoint(msg, v)
		if err != nil {
			return
		}
		// Anything that opens carries our signature over its own body.
		resigned, err := cp.Sign(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := OpenCheckpoint(resigned, v); err != nil {
			t.Fatalf("re-signed checkpoint %+v does not open: %v", cp, err)
		}
	})
}
