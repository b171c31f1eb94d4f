package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeyRotation writes content under three master key versions (two
// rotations with the server stopped in between) and reads all of it back;
// the retired master key no longer starts the server, with a message that
// says why; a rotation interrupted right after its commit point is finished
// at the next start.
func TestKeyRotation(t *testing.T) {
	data := t.TempDir()
	var ids []string
	keyIDs := map[string]bool{}
	write := func(n int) {
		s := startServer(t, data)
		id := fmt.Sprintf("secret-%d", n)
		s.post(map[string]any{"type": "ai.inference", "id": id, "content": map[string]any{"prompt": "prompt " + id}})
		ids = append(ids, id)
		s.waitIndexed()
		for _, id := range ids {
			var ev map[string]any
			s.getJSON("/v1/events/"+id, &ev)
			dc, _ := ev["decrypted_content"].(map[string]any)
			if dc["prompt"] != "prompt "+id {
				t.Fatalf("after %d rotations, %s reads back as %v", n, id, ev["decrypted_content"])
			}
			keyIDs[ev["content"].(map[string]any)["key_id"].(string)] = true
		}
		s.stop()
	}
	rotate := func() string {
		t.Helper()
		code, out, errOut := runCLI("keys", "rotate", "--data", data)
		if code != 0 {
			t.Fatalf("keys rotate: exit %d %s %s", code, out, errOut)
		}
		return out
	}

	write(0)
	first, _ := os.ReadFile(filepath.Join(data, masterKeyFile))
	if out := rotate(); !strings.Contains(out, "version 1") || !strings.Contains(out, "version 2") {
		t.Fatalf("rotate output:\n%s", out)
	}
	write(1)
	rotate()
	write(2)
	if len(keyIDs) != 3 {
		t.Fatalf("content was sealed under %d data keys; want one per master key version", len(keyIDs))
	}
	code, out, _ := runCLI("keys", "list", "--data", data)
	if code != 0 || strings.Count(out, "  mk1-") != 3 {
		t.Fatalf("keys list: exit %d\n%s", code, out)
	}

	// The first master key is retired.
	old := filepath.Join(t.TempDir(), "old.key")
	os.WriteFile(old, first, 0o600)
	code, _, errOut := runCLI("serve", "--data", data, "--addr", freeAddr(t), "--master-key-file", old)
	if code != 1 || !strings.Contains(errOut, "is not this data directory's master key") || !strings.Contains(errOut, "keys rotate") {
		t.Fatalf("serve with the retired key: exit %d, %q", code, errOut)
	}

	// A rotation stopped right after its commit point: the catalog has the
	// new key, the new files are not yet in place. The next start settles it.
	rotateCrashPoint = func() error { return errors.New("simulated crash") }
	code, _, errOut = runCLI("keys", "rotate", "--data", data)
	rotateCrashPoint = nil
	if code != 1 {
		t.Fatalf("interrupted rotation: exit %d %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(data, nextMasterKeyFile)); err != nil {
		t.Fatalf("the interrupted rotation left no new key file: %v", err)
	}
	write(3)
	if _, err := os.Stat(filepath.Join(data, nextMasterKeyFile)); err == nil {
		t.Fatal("the new key file is still waiting after a start")
	}
	if code, out, errOut := runCLI("verify", "--data", data, "--quiet"); code != 0 {
		t.Fatalf("verify after rotations: %d %s %s", code, out, errOut)
	}

	// A master key kept outside the data directory needs the new one named.
	keyFile := filepath.Join(t.TempDir(), "mk")
	cur, _ := os.ReadFile(filepath.Join(data, masterKeyFile))
	os.WriteFile(keyFile, cur, 0o600)
	if code, _, errOut := runCLI("keys", "rotate", "--data", data, "--master-key-file", keyFile); code != 2 || !strings.Contains(errOut, "--new-master-key-file") {
		t.Fatalf("rotation of an outside key without --new-master-key-file: exit %d %q", code, errOut)
	}
	next := filepath.Join(t.TempDir(), "next.key")
	if code, out, errOut := runCLI("keys", "rotate", "--data", data, "--master-key-file", keyFile, "--new-master-key-file", next); code != 0 || !strings.Contains(out, next) {
		t.Fatalf("rotation to a named key: exit %d %s %s", code, out, errOut)
	}
	s := startServer(t, data, "--master-key-file", next)
	var ev map[string]any
	s.getJSON("/v1/events/secret-0", &ev)
	if dc, _ := ev["decrypted_content"].(map[string]any); dc["prompt"] != "prompt secret-0" {
		t.Fatalf("content under the named key: %v", ev["decrypted_content"])
	}
}

// TestMissingMasterKeyIsNotReplaced: a data directory set up with a master
// key from the environment, started without it, is refused with a message
// naming the key it needs, and no new key file is written into it (one
// would be taken for the directory's key by every later command).
func TestMissingMasterKeyIsNotReplaced(t *testing.T) {
	data := t.TempDir()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	startServerEnv(t, data, []string{"AITRAIL_ADMIN_TOKEN=" + adminToken, "AITRAIL_MASTER_KEY=" + key}).stop()
	code, errOut := runChild(t, time.Minute, "serve", "--data", data, "--addr", freeAddr(t))
	if code != 1 || !strings.Contains(errOut, "AITRAIL_MASTER_KEY") || !strings.Contains(errOut, "mk1-") {
		t.Fatalf("start without the master key: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(data, masterKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a master key file was written: %v", err)
	}
}

// TestMissingCatalogIsNotReplaced: a data directory whose log exists but
// whose key catalog is gone is refused, naming the file to restore; a new
// catalog would read all content as erased, give every subject new
// pseudonyms and mint a new root token. The keys command needs a data
// directory and does not make a catalog anywhere else.
func TestMissingCatalogIsNotReplaced(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	postN(s, "a", 3)
	s.stop()
	for _, f := range []string{catalogFile, catalogFile + "-wal", catalogFile + "-shm"} {
		os.Remove(filepath.Join(data, f))
	}
	code, errOut := runChild(t, time.Minute, "serve", "--data", data, "--addr", freeAddr(t))
	if code != 1 || !strings.Contains(errOut, "catalog.db is missing") || !strings.Contains(errOut, "restore") {
		t.Fatalf("start without the catalog: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(data, catalogFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a catalog was made: %v", err)
	}

	empty := t.TempDir()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	t.Setenv("AITRAIL_MASTER_KEY", key)
	if code, _, errOut := runCLI("keys", "list", "--data", empty); code == 0 || !strings.Contains(errOut, "not an aitrail data directory") {
		t.Fatalf("keys list on an empty directory: exit %d %q", code, errOut)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Fatalf("keys list wrote %d files into a directory that is not a data directory", len(entries))
	}
}

// TestOlderCatalogIsNotErasure: content whose data key is missing from a
// catalog restored from an older backup is reported as unavailable, not
// as erased: nothing was erased, and the log holds no erasure record.
func TestOlderCatalogIsNotErasure(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	s.post(map[string]any{"type": "ai.inference", "id": "before", "actor": map[string]any{"id": "u1"}, "content": map[string]any{"prompt": "one"}})
	s.stop()
	backup := t.TempDir()
	catalogs, _ := filepath.Glob(filepath.Join(data, catalogFile+"*"))
	for _, f := range catalogs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(backup, filepath.Base(f)), b, 0o600)
	}
	s = startServer(t, data)
	s.post(map[string]any{"type": "ai.inference", "id": "after", "actor": map[string]any{"id": "u2"}, "content": map[string]any{"prompt": "two"}})
	s.stop()
	for _, f := range catalogs {
		os.Remove(f)
	}
	restored, _ := filepath.Glob(filepath.Join(backup, "*"))
	for _, f := range restored {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(data, filepath.Base(f)), b, 0o600)
	}
	s = startServer(t, data)
	var before, after map[string]any
	s.getJSON("/v1/events/before", &before)
	s.getJSON("/v1/events/after", &after)
	if dc, _ := before["decrypted_content"].(map[string]any); dc["prompt"] != "one" {
		t.Errorf("content under a key the backup holds: %v", before)
	}
	if after["content_erased"] != nil || after["decrypted_content"] != nil || after["content_unavailable"] == nil {
		t.Errorf("content under a key the backup lacks: erased %v, unavailable %v; want it unavailable, not erased", after["content_erased"], after["content_unavailable"])
	}
}
