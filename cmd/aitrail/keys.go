package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/aitrail/aitrail/internal/config"
	"github.com/aitrail/aitrail/internal/crypto"
	sqlitestore "github.com/aitrail/aitrail/internal/store/sqlite"
)

// Files a rotation writes before its commit point (the catalog transaction)
// and renames into place after it.
const (
	nextMasterKeyFile = masterKeyFile + ".next"
	nextSignerKeyFile = signerKeyFile + ".next"
)

// rotateCrashPoint, when set by a test, is called right after a rotation's
// commit point, before the new files are renamed into place; returning an
// error stops the rotation there, as a crash would.
var rotateCrashPoint func() error

// runKeys handles `aitrail keys rotate` and `aitrail keys list`.
func runKeys(args []string, stdout, stderr io.Writer) error {
	const use = "usage: aitrail keys rotate|list [flags]"
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stderr, use+"\n(aitrail keys rotate -h and aitrail keys list -h list each one's flags)")
		return flag.ErrHelp
	}
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "list") {
		return usageError{use}
	}
	fs := newFlags("keys "+args[0], stderr)
	data := fs.String("data", config.DefaultDataDir, "data directory")
	src := addKeyFlags(fs)
	var newFile, newVault *string
	if args[0] == "rotate" {
		newFile = fs.String("new-master-key-file", "", "file holding the new master key, created with a random key if missing; required unless the master key is <data>/master.key")
		newVault = fs.String("new-vault-transit-key", "", "rotate to this Vault transit key (MOUNT/KEY) instead of a key file")
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if err := isDataDir(*data); err != nil {
		return err
	}
	lock, err := lockData(*data, true)
	if err != nil {
		return err
	}
	defer lock.Close()
	catalog, err := openCatalog(*data)
	if err != nil {
		return err
	}
	defer catalog.Close()
	ctx := context.Background()
	if err := settleRotation(ctx, *data, catalog); err != nil {
		return err
	}
	kek, err := masterKey(*data, *src, false)
	if err != nil {
		return err
	}
	if err := crypto.NewKeyring(kek, catalog).CheckKEK(ctx); err != nil {
		return err
	}
	if args[0] == "list" {
		return listKeys(ctx, catalog, kek, stdout)
	}
	return rotateKeys(ctx, *data, *src, *newFile, *newVault, catalog, kek, stdout)
}

// rotateKeys replaces the master key. The catalog transaction is the commit
// point: before it, the old master key and log.key are in force and the
// ".next" files are leftovers that settleRotation removes; after it, the new
// ones are, and settleRotation finishes the renames if the process stopped
// before it could.
func rotateKeys(ctx context.Context, data string, src keySource, newFile, newVault string, catalog *sqlitestore.Catalog, old crypto.KEK, stdout io.Writer) error {
	inDataDir := src.file == "" && src.vault == "" && os.Getenv("AITRAIL_MASTER_KEY") == ""
	var key []byte
	var err error
	var next crypto.KEK
	switch {
	case newFile != "" && newVault != "":
		return usageError{"give one new master key: --new-master-key-file or --new-vault-transit-key"}
	case newVault != "":
		if next, err = vaultKEK(newVault); err != nil {
			return err
		}
	case newFile != "":
		key, err = crypto.LoadMasterKeyFile(newFile)
		if errors.Is(err, fs.ErrNotExist) {
			key, err = crypto.CreateMasterKeyFile(newFile)
		}
	case inDataDir:
		key, err = crypto.CreateMasterKeyFile(filepath.Join(data, nextMasterKeyFile))
	default:
		return usageError{"the master key is configured outside the data directory: give --new-master-key-file FILE (or --new-vault-transit-key MOUNT/KEY), then configure it as the master key"}
	}
	if err != nil {
		return fmt.Errorf("new master key: %w", err)
	}
	if next == nil {
		if next, err = crypto.NewLocalKEK("", key); err != nil {
			return err
		}
	}
	cleanup := func() {
		os.Remove(filepath.Join(data, nextSignerKeyFile))
		if newFile == "" && newVault == "" {
			os.Remove(filepath.Join(data, nextMasterKeyFile))
		}
	}
	if err := rewrapSigner(data, old, next); err != nil {
		cleanup()
		return err
	}
	rep, err := crypto.RotateMasterKey(ctx, catalog, old, next)
	if err != nil {
		cleanup()
		return err
	}
	if rotateCrashPoint != nil {
		if err := rotateCrashPoint(); err != nil {
			return err
		}
	}
	if err := settleRotation(ctx, data, catalog); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Master key rotated: version %d (%s) → version %d (%s).\n", rep.From.Version, rep.From.KEKID, rep.To.Version, rep.To.KEKID)
	fmt.Fprintf(stdout, "%d data keys re-wrapped; %d scopes got a new data key for new content; the log signing key re-wrapped.\n", rep.Rewrapped, rep.NewDataKey)
	switch {
	case newVault != "":
		fmt.Fprintf(stdout, "Start aitrail with the new master key from now on (--vault-transit-key %s).\n", newVault)
	case newFile != "":
		fmt.Fprintf(stdout, "Start aitrail with the new master key from now on (master_key_file: %s, or its contents in AITRAIL_MASTER_KEY).\n", newFile)
	default:
		fmt.Fprintf(stdout, "The new master key is in %s. The old one no longer opens this data directory.\n", filepath.Join(data, masterKeyFile))
	}
	return nil
}

// rewrapSigner writes log.key.next: the log signing key wrapped by next.
func rewrapSigner(data string, old, next crypto.KEK) error {
	raw, err := readSigner(data, signerKeyFile, old)
	if err != nil {
		return err
	}
	defer clear(raw)
	js, err := wrapSigner(raw, next)
	if err != nil {
		return err
	}
	path := filepath.Join(data, nextSignerKeyFile)
	os.Remove(path) // a leftover of an earlier attempt
	return writeNew(path, js, 0o600)
}

// settleRotation finishes or undoes a rotation that stopped half way, by
// what the catalog says is the master key: a ".next" file made for that key
// is renamed into place, any other is removed. It needs no key material.
func settleRotation(ctx context.Context, data string, catalog *sqlitestore.Catalog) error {
	check, ok, err := catalog.GetCheck(ctx)
	if err != nil || !ok {
		return err
	}
	current, _, _ := bytes.Cut(check, []byte{0})
	settle := func(next, final string, madeFor func([]byte) (string, error)) error {
		path := filepath.Join(data, next)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		id, err := madeFor(b)
		if err != nil || id != string(current) {
			return os.Remove(path)
		}
		if err := os.Rename(path, filepath.Join(data, final)); err != nil {
			return fmt.Errorf("couldn't finish the key rotation: %w", err)
		}
		return syncDirOf(filepath.Join(data, final))
	}
	masterKeyID := func(b []byte) (string, error) {
		key, err := crypto.ParseMasterKey(string(b))
		if err != nil {
			return "", err
		}
		return crypto.KEKID(key), nil
	}
	signerKEKID := func(b []byte) (string, error) {
		var st storedSigner
		err := json.Unmarshal(b, &st)
		return st.KEKID, err
	}
	if err := settle(nextMasterKeyFile, masterKeyFile, masterKeyID); err != nil {
		return err
	}
	return settle(nextSignerKeyFile, signerKeyFile, signerKEKID)
}

func syncDirOf(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// listKeys prints the master key history and the data keys per scope:
// ids and dates only, never key material.
func listKeys(ctx context.Context, catalog *sqlitestore.Catalog, kek crypto.KEK, stdout io.Writer) error {
	versions, err := catalog.KEKVersions(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "master key versions:")
	if len(versions) == 0 {
		fmt.Fprintf(stdout, "  1  %s  (never rotated)\n", kek.ID())
	}
	for _, v := range versions {
		fmt.Fprintf(stdout, "  %d  %s  since %s\n", v.Version, v.KEKID, v.CreatedAt.Format("2006-01-02T15:04:05Z"))
	}
	keys, err := catalog.AllKeys(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "data keys (scope, id, created; the last of each scope seals new content):")
	for _, k := range keys {
		fmt.Fprintf(stdout, "  %s  %s  %s\n", k.Scope, k.ID, k.CreatedAt.Format("2006-01-02T15:04:05Z"))
	}
	return nil
}

// wrapSigner returns the signer key file's contents: raw wrapped by kek.
func wrapSigner(raw []byte, kek crypto.KEK) ([]byte, error) {
	wrapped, err := kek.Wrap(raw, signerAAD)
	if err != nil {
		return nil, err
	}
	return json.Marshal(storedSigner{KEKID: kek.ID(), Wrapped: base64.StdEncoding.EncodeToString(wrapped)})
}
