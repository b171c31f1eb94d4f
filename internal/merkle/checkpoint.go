package merkle

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is the body of a C2SP tlog-checkpoint: the log's origin, its
// size and the root hash of the tree of that size.
type Checkpoint struct {
	Origin string
	Size   uint64
	Hash   Hash
}

// ErrBadCheckpoint reports a checkpoint that cannot be parsed or whose
// signature does not verify.
var ErrBadCheckpoint = errors.New("bad checkpoint")

// Body returns the checkpoint's note text.
func (c Checkpoint) Body() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash[:]))
}

// Sign returns the checkpoint as a signed note.
func (c Checkpoint) Sign(s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: string(c.Body())}, s)
}

// OpenCheckpoint verifies a signed checkpoint against v and parses it. The
// checkpoint's origin must be v's name, as C2SP requires for the log's own
// key.
func OpenCheckpoint(signed []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		return Checkpoint{}, fmt.Errorf("%w: it has no signature by the key %s (the wrong key, or another log's checkpoint)", ErrBadCheckpoint, v.Name())
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("%w: origin %q is not the key's name %q", ErrBadCheckpoint, c.Origin, v.Name())
	}
	return c, nil
}

// MaxTreeSize is the largest tree size a checkpoint may state. The tree
// math of golang.org/x/mod/sumdb/tlog overflows past it (it never returns
// for sizes from 2^62, and panics from 2^63), and no log comes near it.
const MaxTreeSize = 1<<62 - 1

// ParseCheckpoint parses an unsigned checkpoint body. Extension lines after
// the root hash are allowed and ignored.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	bad := func(why string) (Checkpoint, error) {
		return Checkpoint{}, fmt.Errorf("%w: %s", ErrBadCheckpoint, why)
	}
	if !bytes.HasSuffix(text, []byte("\n")) {
		return bad("missing final newline")
	}
	lines := strings.Split(string(text[:len(text)-1]), "\n")
	if len(lines) < 3 {
		return bad("fewer than three lines")
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" {
		return bad("empty origin")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return bad("bad tree size")
	}
	if size > MaxTreeSize {
		return bad("tree size past " + strconv.FormatUint(MaxTreeSize, 10))
	}
	c.Size = size
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != HashSize {
		return bad("bad root hash")
	}
	copy(c.Hash[:], h)
	return c, nil
}
