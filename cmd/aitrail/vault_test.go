package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/crypto/vaultkek/vaulttest"
)

// TestVaultTransitMasterKey runs the server with its master key in Vault's
// transit engine (a stand-in speaking its wire format: no Vault server can
// run here), rotates to another transit key, and checks what a user relies
// on: content reads back, no master key is written to the data directory,
// the replaced key and an unreachable Vault fail clearly at start.
func TestVaultTransitMasterKey(t *testing.T) {
	v := vaulttest.NewServer("s.test-token")
	defer v.Close()
	t.Setenv("VAULT_ADDR", v.URL)
	t.Setenv("VAULT_TOKEN", "s.test-token")
	env := []string{"AITRAIL_ADMIN_TOKEN=" + adminToken, "VAULT_ADDR=" + v.URL, "VAULT_TOKEN=s.test-token"}
	data := t.TempDir()

	s := startServerEnv(t, data, env, "--vault-transit-key", "transit/aitrail")
	s.post(map[string]any{"type": "ai.inference", "id": "v1", "content": map[string]any{"prompt": "kept in vault"}})
	s.waitIndexed()
	readBack := func(s *server) {
		t.Helper()
		var ev map[string]any
		s.getJSON("/v1/events/v1", &ev)
		if dc, _ := ev["decrypted_content"].(map[string]any); dc["prompt"] != "kept in vault" {
			t.Fatalf("content read back as %v", ev["decrypted_content"])
		}
	}
	readBack(s)
	s.stop()
	if _, err := os.Stat(filepath.Join(data, masterKeyFile)); err == nil {
		t.Fatal("a master key file was written although the key is in Vault")
	}
	sawAAD := false
	for _, r := range v.Requests() {
		sawAAD = sawAAD || (strings.HasPrefix(r.Path, "/v1/transit/encrypt/aitrail") && r.Body["associated_data"] != "")
	}
	if !sawAAD {
		t.Fatal("no encrypt request with associated data reached Vault")
	}

	code, out, errOut := runCLI("keys", "rotate", "--data", data, "--vault-transit-key", "transit/aitrail", "--new-vault-transit-key", "transit/next")
	if code != 0 || !strings.Contains(out, "vault:transit/next") {
		t.Fatalf("rotation to another transit key: exit %d %s %s", code, out, errOut)
	}
	s = startServerEnv(t, data, env, "--vault-transit-key", "transit/next")
	s.waitIndexed()
	readBack(s)
	s.stop()

	code, _, errOut = runCLI("serve", "--data", data, "--addr", freeAddr(t), "--vault-transit-key", "transit/aitrail")
	if code != 1 || !strings.Contains(errOut, "is not this data directory's master key") {
		t.Fatalf("serve with the replaced transit key: exit %d %q", code, errOut)
	}
	t.Setenv("VAULT_ADDR", "http://"+freeAddr(t))
	code, _, errOut = runCLI("serve", "--data", data, "--addr", freeAddr(t), "--vault-transit-key", "transit/next")
	if code != 1 || !strings.Contains(errOut, "vault transit") {
		t.Fatalf("serve with Vault unreachable: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLI("serve", "--data", data, "--vault-transit-key", "nokey"); code != 2 {
		t.Fatalf("a malformed transit key name: exit %d %q; want 2", code, errOut)
	}
}
