package crypto_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/crypto"
)

func TestParseMasterKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb}, 32) // encodes differently in the std and URL alphabets
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"std", base64.StdEncoding.EncodeToString(key), ""},
		{"std unpadded", base64.RawStdEncoding.EncodeToString(key), ""},
		{"url", base64.URLEncoding.EncodeToString(key), ""},
		{"url unpadded", base64.RawURLEncoding.EncodeToString(key), ""},
		{"surrounding whitespace", "  " + base64.StdEncoding.EncodeToString(key) + "\n", ""},
		{"empty", "", "empty"},
		{"too short", base64.StdEncoding.EncodeToString(key[:16]), "32 bytes, got 16"},
		{"too long", base64.StdEncoding.EncodeToString(append(key, 1)), "32 bytes, got 33"},
		{"not base64", "this is not base64 at all!!!", "not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := crypto.ParseMasterKey(tt.in)
			if tt.wantErr == "" {
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("ParseMasterKey = %x, %v; want the key", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseMasterKey err = %v, want one mentioning %q", err, tt.wantErr)
			}
			if s := strings.TrimSpace(tt.in); s != "" && strings.Contains(err.Error(), s) {
				t.Errorf("error %q repeats the secret input", err)
			}
		})
	}
}

func TestMasterKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	key, err := crypto.CreateMasterKeyFile(path)
	if err != nil {
		t.Fatalf("CreateMasterKeyFile: %v", err)
	}
	if len(key) != crypto.MasterKeySize {
		t.Fatalf("key has %d bytes, want %d", len(key), crypto.MasterKeySize)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("created file mode = %04o, want 0600", fi.Mode().Perm())
	}
	got, err := crypto.LoadMasterKeyFile(path)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("LoadMasterKeyFile = %x, %v; want the created key", got, err)
	}
	if _, err := crypto.CreateMasterKeyFile(path); err == nil {
		t.Errorf("CreateMasterKeyFile over an existing file succeeded; it must never replace a master key")
	}
	if again, _ := crypto.LoadMasterKeyFile(path); !bytes.Equal(again, key) {
		t.Errorf("the existing master key changed after a refused create")
	}
}

func TestLoadMasterKeyFileRefuses(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "\n"
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		wantErr string
	}{
		{"world readable", good, 0o644, "chmod 600"},
		{"group readable", good, 0o640, "group or others"},
		{"group writable", good, 0o620, "group or others"},
		{"short key", base64.StdEncoding.EncodeToString(make([]byte, 16)), 0o600, "32 bytes"},
		{"not base64", "hunter2 hunter2\n", 0o600, "not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			if err := os.WriteFile(path, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil { // umask may have cleared bits
				t.Fatal(err)
			}
			_, err := crypto.LoadMasterKeyFile(path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadMasterKeyFile err = %v, want one mentioning %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(tt.content)) {
				t.Errorf("error %q contains the file's content", err)
			}
		})
	}
}

func TestKEKID(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	if crypto.KEKID(a) != crypto.KEKID(bytes.Clone(a)) || crypto.KEKID(a) == crypto.KEKID(b) {
		t.Errorf("KEKID must be stable per key and differ between keys")
	}
	if !regexp.MustCompile(`^mk1-[0-9a-f]{8}$`).MatchString(crypto.KEKID(a)) {
		t.Errorf("KEKID = %q, want mk1-<8 hex>", crypto.KEKID(a))
	}
	kek, err := crypto.NewLocalKEK("", a)
	if err != nil || kek.ID() != crypto.KEKID(a) {
		t.Errorf("NewLocalKEK(\"\", key).ID() = %v, %v; want the derived id", kek, err)
	}
	if _, err := crypto.NewLocalKEK("", a[:16]); err == nil {
		t.Errorf("NewLocalKEK accepted a 16-byte key")
	}
}
