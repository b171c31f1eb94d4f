// Package vaultkek is a master key (crypto.KEK) held by HashiCorp Vault's
// transit secrets engine: data keys are wrapped and unwrapped by Vault, and
// the key itself never leaves it. It talks to Vault through Vault's official
// Go client.
//
// The transit key must be of an AEAD type (aes256-gcm96, the default, or
// chacha20-poly1305): the associated data that binds each wrapped data key
// to its id and scope is sent as `associated_data`. Vault's own rotation of
// the transit key (`vault write -f transit/keys/NAME/rotate`) needs nothing
// from aitrail: old ciphertexts name their key version and still decrypt.
package vaultkek

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/aitrail/aitrail/internal/crypto"
)

// Config names a transit key.
type Config struct {
	// Address is Vault's URL; empty means $VAULT_ADDR.
	Address string
	// Token authenticates to Vault; empty means $VAULT_TOKEN.
	Token string
	// Mount is the transit engine's mount path (default "transit").
	Mount string
	// Key is the transit key's name.
	Key string
	// Timeout bounds each call (default 10s).
	Timeout time.Duration
}

// DefaultMount is the transit engine's default mount path.
const DefaultMount = "transit"

const defaultTimeout = 10 * time.Second

// KEK wraps with a Vault transit key. It is safe for concurrent use.
type KEK struct {
	logical *api.Logical
	mount   string
	key     string
	timeout time.Duration
}

var _ crypto.KEK = (*KEK)(nil)

// New returns a KEK for the transit key c names. It does not contact Vault;
// the first Wrap or Unwrap does (aitrail's start-up check does one).
func New(c Config) (*KEK, error) {
	if c.Key == "" || strings.ContainsAny(c.Key, "/ ") {
		return nil, fmt.Errorf("vault transit: invalid key name %q", c.Key)
	}
	if c.Mount == "" {
		c.Mount = DefaultMount
	}
	c.Mount = strings.Trim(c.Mount, "/")
	if c.Timeout <= 0 {
		c.Timeout = defaultTimeout
	}
	cfg := api.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, …
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault transit: %w", cfg.Error)
	}
	if c.Address != "" {
		cfg.Address = c.Address
	}
	cfg.MaxRetries = 2
	cfg.MinRetryWait, cfg.MaxRetryWait = 100*time.Millisecond, time.Second
	client, err := api.NewClient(cfg) // reads VAULT_TOKEN
	if err != nil {
		return nil, fmt.Errorf("vault transit: couldn't create the client: %w", err)
	}
	if c.Token != "" {
		client.SetToken(c.Token)
	}
	if client.Token() == "" {
		return nil, errors.New("vault transit: no token: set VAULT_TOKEN or a token file")
	}
	return &KEK{logical: client.Logical(), mount: c.Mount, key: c.Key, timeout: c.Timeout}, nil
}

// ID names the key "vault:<mount>/<key>". It is recorded beside every data
// key the KEK wraps, so it must stay the same for the life of the key.
func (k *KEK) ID() string { return "vault:" + k.mount + "/" + k.key }

// Wrap asks Vault to encrypt plaintext with aad as associated data, and
// returns Vault's ciphertext ("vault:v<N>:…").
func (k *KEK) Wrap(plaintext, aad []byte) ([]byte, error) {
	sec, err := k.call("encrypt", map[string]any{
		"plaintext":       base64.StdEncoding.EncodeToString(plaintext),
		"associated_data": base64.StdEncoding.EncodeToString(aad),
	})
	if err != nil {
		return nil, err
	}
	ct, _ := sec.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:") {
		return nil, fmt.Errorf("vault transit: encrypt with %s returned no ciphertext", k.ID())
	}
	return []byte(ct), nil
}

// Unwrap asks Vault to decrypt wrapped with aad. A ciphertext Vault refuses
// to decrypt (wrong key, wrong associated data, modified) is crypto.ErrDecrypt;
// Vault being unreachable or refusing the token is another error.
func (k *KEK) Unwrap(wrapped, aad []byte) ([]byte, error) {
	if !strings.HasPrefix(string(wrapped), "vault:") {
		return nil, fmt.Errorf("%w: not a Vault ciphertext", crypto.ErrDecrypt)
	}
	sec, err := k.call("decrypt", map[string]any{
		"ciphertext":      string(wrapped),
		"associated_data": base64.StdEncoding.EncodeToString(aad),
	})
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
		return nil, fmt.Errorf("%w: Vault refused to decrypt with %s", crypto.ErrDecrypt, k.ID())
	}
	if err != nil {
		return nil, err
	}
	pt, _ := sec.Data["plaintext"].(string)
	out, err := base64.StdEncoding.DecodeString(pt)
	if err != nil {
		return nil, fmt.Errorf("vault transit: decrypt with %s returned malformed plaintext", k.ID())
	}
	return out, nil
}

func (k *KEK) call(op string, body map[string]any) (*api.Secret, error) {
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	defer cancel()
	sec, err := k.logical.WriteWithContext(ctx, k.mount+"/"+op+"/"+k.key, body)
	if err != nil {
		// Vault's errors name the path and status, never the payload.
		return nil, fmt.Errorf("vault transit: %s with %s: %w", op, k.ID(), err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault transit: %s with %s returned nothing", op, k.ID())
	}
	return sec, nil
}
