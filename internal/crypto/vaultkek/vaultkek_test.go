package vaultkek_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
	"github.com/aitrail/aitrail/internal/crypto/vaultkek"
	"github.com/aitrail/aitrail/internal/crypto/vaultkek/vaulttest"
)

func newKEK(t *testing.T, v *vaulttest.Server, token, key string) *vaultkek.KEK {
	t.Helper()
	k, err := vaultkek.New(vaultkek.Config{Address: v.URL, Token: token, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRequestShape pins what goes over the wire, as Vault's transit API
// documents it: PUT /v1/<mount>/encrypt/<key> with the token header and
// base64 plaintext and associated data; decrypt likewise with the
// ciphertext.
func TestRequestShape(t *testing.T) {
	v := vaulttest.NewServer("s.token")
	defer v.Close()
	k := newKEK(t, v, "s.token", "aitrail")
	if k.ID() != "vault:transit/aitrail" {
		t.Errorf("ID = %q", k.ID())
	}
	wrapped, err := k.Wrap([]byte("data key"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(wrapped), "vault:v1:") {
		t.Errorf("wrapped = %q; want Vault's ciphertext", wrapped)
	}
	pt, err := k.Unwrap(wrapped, []byte("aad"))
	if err != nil || string(pt) != "data key" {
		t.Fatalf("Unwrap = %q, %v", pt, err)
	}
	reqs := v.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests; want 2", len(reqs))
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	enc, dec := reqs[0], reqs[1]
	if enc.Method != "PUT" || enc.Path != "/v1/transit/encrypt/aitrail" || enc.Token != "s.token" ||
		enc.Body["plaintext"] != b64("data key") || enc.Body["associated_data"] != b64("aad") || len(enc.Body) != 2 {
		t.Errorf("encrypt request %+v", enc)
	}
	if dec.Method != "PUT" || dec.Path != "/v1/transit/decrypt/aitrail" || dec.Body["ciphertext"] != string(wrapped) ||
		dec.Body["associated_data"] != b64("aad") || len(dec.Body) != 2 {
		t.Errorf("decrypt request %+v", dec)
	}
}

func TestUnwrapFailures(t *testing.T) {
	v := vaulttest.NewServer("s.token")
	defer v.Close()
	k := newKEK(t, v, "s.token", "aitrail")
	wrapped, err := k.Wrap([]byte("data key"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), wrapped...)
	tampered[len(tampered)-2] ^= 1
	for name, tc := range map[string]struct {
		kek     *vaultkek.KEK
		wrapped []byte
		aad     string
	}{
		"other associated data": {k, wrapped, "other"},
		"modified ciphertext":   {k, tampered, "aad"},
		"other transit key":     {newKEK(t, v, "s.token", "other"), wrapped, "aad"},
		"not Vault's":           {k, []byte("\x01abcdef"), "aad"},
	} {
		if _, err := tc.kek.Unwrap(tc.wrapped, []byte(tc.aad)); !errors.Is(err, crypto.ErrDecrypt) {
			t.Errorf("%s: err = %v; want ErrDecrypt", name, err)
		}
	}
	// A refused token is not a decryption failure: the caller must not
	// conclude the data is bad.
	_, err = newKEK(t, v, "s.wrong", "aitrail").Unwrap(wrapped, []byte("aad"))
	if err == nil || errors.Is(err, crypto.ErrDecrypt) || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("wrong token: err = %v; want a non-decrypt error naming the refusal", err)
	}
	if bytes.Contains([]byte(err.Error()), []byte("data key")) {
		t.Error("the error carries the plaintext")
	}
}

// TestKeyringOverVault seals and opens content with data keys wrapped by
// Vault, as the server does.
func TestKeyringOverVault(t *testing.T) {
	v := vaulttest.NewServer("s.token")
	defer v.Close()
	ctx := context.Background()
	store := new(cryptotest.MemKeyStore)
	kr := crypto.NewKeyring(newKEK(t, v, "s.token", "aitrail"), store)
	if err := kr.CheckKEK(ctx); err != nil {
		t.Fatal(err)
	}
	blob, keyID, err := kr.Seal(ctx, "acme", []byte("prompt"), crypto.ContentAAD("acme", "e1"))
	if err != nil {
		t.Fatal(err)
	}
	fresh := crypto.NewKeyring(newKEK(t, v, "s.token", "aitrail"), store)
	if err := fresh.CheckKEK(ctx); err != nil {
		t.Fatal(err)
	}
	if pt, err := fresh.Open(ctx, keyID, blob, crypto.ContentAAD("acme", "e1")); err != nil || string(pt) != "prompt" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	if err := crypto.NewKeyring(newKEK(t, v, "s.token", "other"), store).CheckKEK(ctx); !errors.Is(err, crypto.ErrWrongMasterKey) {
		t.Errorf("another transit key: CheckKEK = %v; want ErrWrongMasterKey", err)
	}
}

func TestNewRefuses(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	for _, c := range []vaultkek.Config{{Address: "http://127.0.0.1:1", Token: "t"}, {Address: "http://127.0.0.1:1", Token: "t", Key: "a/b"}, {Address: "http://127.0.0.1:1", Key: "k"}} {
		if _, err := vaultkek.New(c); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
}
