// Package crypto encrypts event content with envelope encryption: each scope
// (a tenant, or a tenant and subject) has its own random data key, data keys
// are wrapped by a master key (the key-encryption key, KEK) and kept in a
// durable key catalog, and content is sealed with AES-256-GCM under the
// scope's data key with associated data that binds it to its record.
//
// The package must never log, and never put into an error, key material or
// plaintext. It performs no I/O except through the KeyStore it is given and
// the master key file helpers.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unicode"
)

// MasterKeySize is the size in bytes of a master key (AES-256).
const MasterKeySize = 32

// KEK is a master key: a key-encryption key that wraps data keys. The local
// implementation holds the key in memory; later ones may delegate to Vault
// transit or a cloud KMS.
//
// Implementations must be safe for concurrent use. Wrap and Unwrap are
// deterministic in their contract, not their output: Unwrap(Wrap(p, aad),
// aad) returns p, and Unwrap with any other aad, or of modified bytes, fails.
type KEK interface {
	// ID names the master key. It is derived from the key, is not secret, and
	// is recorded next to every data key the KEK wraps.
	ID() string
	// Wrap encrypts plaintext (a data key) bound to aad.
	Wrap(plaintext, aad []byte) ([]byte, error)
	// Unwrap decrypts wrapped bytes produced by Wrap with the same aad. It
	// returns an error wrapping ErrDecrypt when they do not authenticate.
	Unwrap(wrapped, aad []byte) ([]byte, error)
}

// wrapVersion is the first byte of every blob produced by a local KEK.
const wrapVersion = 1

type localKEK struct {
	id   string
	aead cipher.AEAD
}

// KEKID returns the derived, non-secret identifier of a master key:
// "mk1-" followed by the first 8 hex digits of SHA-256("aitrail kek id" ‖ key).
// It lets an operator tell master keys apart without revealing them.
func KEKID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("aitrail kek id"))
	h.Write(key)
	return "mk1-" + hex.EncodeToString(h.Sum(nil))[:8]
}

// NewLocalKEK returns a KEK that wraps with AES-256-GCM under key, which must
// be MasterKeySize bytes. If id is empty, KEKID(key) is used; an explicit id
// must be printable and contain no spaces.
func NewLocalKEK(id string, key []byte) (KEK, error) {
	if len(key) != MasterKeySize {
		return nil, fmt.Errorf("crypto: master key must be %d bytes, got %d", MasterKeySize, len(key))
	}
	if id == "" {
		id = KEKID(key)
	}
	if len(id) > 128 || strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		return nil, fmt.Errorf("crypto: invalid master key id %q", id)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &localKEK{id: id, aead: aead}, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't create cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't create GCM: %w", err)
	}
	return aead, nil
}

func (k *localKEK) ID() string { return k.id }

// Wrap returns 1 version byte ‖ 12-byte random nonce ‖ ciphertext+tag.
func (k *localKEK) Wrap(plaintext, aad []byte) ([]byte, error) {
	return seal(k.aead, plaintext, aad)
}

func (k *localKEK) Unwrap(wrapped, aad []byte) ([]byte, error) {
	return open(k.aead, wrapped, aad)
}

// seal and open implement the blob format shared by wrapped keys and sealed
// content: 1 version byte, 12-byte random nonce, AES-256-GCM ciphertext+tag.
func seal(aead cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	ns := aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+aead.Overhead())
	out[0] = wrapVersion
	if err := readNonce(out[1:]); err != nil {
		return nil, fmt.Errorf("crypto: couldn't generate nonce: %w", err)
	}
	return aead.Seal(out, out[1:1+ns], plaintext, aad), nil
}

// nonces hands out random bytes for nonces from a buffer the system's
// generator fills 4 KiB at a time: reading 12 bytes from it for every
// sealed content was a system call per event (1.4 % of the server's CPU
// under encrypted ingest). Every byte is handed out once. Nonces are not
// secret, so the bytes waiting in memory give nothing away.
var nonces struct {
	mu   sync.Mutex
	buf  [4096]byte
	left int // unused bytes, at the end of buf
}

// readNonce fills dst (at most 4 KiB) with random bytes.
func readNonce(dst []byte) error {
	nonces.mu.Lock()
	defer nonces.mu.Unlock()
	if nonces.left < len(dst) {
		if _, err := rand.Read(nonces.buf[:]); err != nil {
			return err
		}
		nonces.left = len(nonces.buf)
	}
	start := len(nonces.buf) - nonces.left
	copy(dst, nonces.buf[start:start+len(dst)])
	nonces.left -= len(dst)
	return nil
}

func open(aead cipher.AEAD, blob, aad []byte) ([]byte, error) {
	ns := aead.NonceSize()
	if len(blob) < 1+ns+aead.Overhead() {
		return nil, fmt.Errorf("%w: blob too short", ErrDecrypt)
	}
	if blob[0] != wrapVersion {
		return nil, fmt.Errorf("%w: unknown blob version %d", ErrDecrypt, blob[0])
	}
	pt, err := aead.Open(nil, blob[1:1+ns], blob[1+ns:], aad)
	if err != nil {
		// The GCM error says nothing useful and nothing secret; ours says
		// what the caller can act on.
		return nil, fmt.Errorf("%w: authentication failed (wrong key, wrong associated data or modified bytes)", ErrDecrypt)
	}
	return pt, nil
}

// ParseMasterKey decodes a master key given as base64 text, as in the
// AITRAIL_MASTER_KEY environment variable. Standard and URL-safe alphabets,
// padded or not, are accepted; surrounding whitespace is ignored. The key
// must decode to MasterKeySize bytes. Errors never contain the input.
func ParseMasterKey(b64 string) ([]byte, error) {
	s := strings.TrimSpace(b64)
	if s == "" {
		return nil, errors.New("crypto: master key is empty")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != MasterKeySize {
			return nil, fmt.Errorf("crypto: master key must decode to %d bytes, got %d (generate one with `openssl rand -base64 32`)", MasterKeySize, len(key))
		}
		return key, nil
	}
	return nil, fmt.Errorf("crypto: master key is not valid base64 (expected %d bytes encoded as base64, e.g. from `openssl rand -base64 32`)", MasterKeySize)
}

// LoadMasterKeyFile reads a master key file written by CreateMasterKeyFile
// (or by hand: base64 of MasterKeySize bytes). On Unix it refuses a file that
// group or others can access, as ssh does for private keys.
func LoadMasterKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't open master key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't stat master key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("crypto: master key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("crypto: master key file %s has mode %04o and can be accessed by group or others; restrict it with `chmod 600 %s`", path, perm, path)
	}
	// A key file is a few dozen bytes; a large one is not a key file.
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't read master key file %s: %w", path, err)
	}
	key, err := ParseMasterKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return key, nil
}

// CreateMasterKeyFile generates a random master key and writes it as base64
// to a new file at path with mode 0600. It fails if the file exists. When it
// returns nil the file and its directory entry have been synced to disk.
func CreateMasterKeyFile(path string) ([]byte, error) {
	key := make([]byte, MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("crypto: couldn't generate master key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("crypto: couldn't create master key file: %w", err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("crypto: couldn't write master key file %s: %w", path, err)
	}
	return key, nil
}

func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync on Windows
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
