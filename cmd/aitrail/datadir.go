package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/sys/unix"

	"github.com/aitrail/aitrail/internal/config"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/vaultkek"
	"github.com/aitrail/aitrail/internal/detect"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
	"github.com/aitrail/aitrail/internal/registry"
	sqlitestore "github.com/aitrail/aitrail/internal/store/sqlite"
)

// Files in the data directory.
const (
	ledgerDir      = "log"
	catalogFile    = "catalog.db"
	indexFile      = "index.db"
	registryFile   = "registry.db" // the model deployment registry, derived from the log
	masterKeyFile  = "master.key"
	signerKeyFile  = "log.key" // the note signer key, wrapped by the master key
	publicKeyFile  = "log.pub" // the note verifier key
	adminTokenFile = "admin-token"
	lockFile       = "LOCK"
)

// lockData locks the data directory: exclusively for a process that
// writes it, so that two never write it at once, or shared for one that
// only reads it (verify), so that it never reads while one writes. The lock
// is released when the returned file is closed or the process exits.
//
// A reader of a directory where the lock file does not exist and cannot be
// made (a backup on read-only media, an immutable copy) reads it without
// a lock: no writer can hold one there. The file returned is then nil.
func lockData(dir string, exclusive bool) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil && !exclusive {
		if f, err = os.Open(path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("couldn't open lock file: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory %s is in use by another aitrail process (stop it first)", dir)
	}
	return f, nil
}

// isDataDir refuses a directory that holds no log, before anything is
// made in it.
func isDataDir(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, ledgerDir)); err != nil {
		return usageError{fmt.Sprintf("%s is not an aitrail data directory: %v", dir, err)}
	}
	return nil
}

// openCatalog opens the key catalog of the data directory dir. It refuses
// to create one beside a log that exists (its signing key is there): the
// catalog holds every data key, salt and token, and a new one would read
// every stored content as erased, give known subjects new pseudonyms and
// mint a new root token, without a word.
func openCatalog(dir string) (*sqlitestore.Catalog, error) {
	path := filepath.Join(dir, catalogFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, signerKeyFile)); err == nil {
			return nil, fmt.Errorf("the key catalog %s is missing, but this data directory holds a log (%s): restore %s from a backup "+
				"(made after the newest keys, or content sealed under later keys stays unreadable); a new, empty one is not created over an existing log",
				path, signerKeyFile, catalogFile)
		}
	}
	catalog, err := sqlitestore.Open(path)
	if err != nil {
		return nil, fmt.Errorf("couldn't open catalog: %w", err)
	}
	return catalog, nil
}

// keySource says where the master key is: a file, a Vault transit key
// ("mount/key"), or, if neither, $AITRAIL_MASTER_KEY or <data>/master.key.
type keySource struct {
	file, vault string
}

// addKeyFlags adds the flags that name the master key.
func addKeyFlags(fs *flag.FlagSet) *keySource {
	var k keySource
	fs.StringVar(&k.file, "master-key-file", "", "file holding the base64 master key (default: $AITRAIL_MASTER_KEY, else <data>/master.key)")
	fs.StringVar(&k.vault, "vault-transit-key", os.Getenv(vaultKeyEnv), "keep the master key in Vault's transit engine: MOUNT/KEY, e.g. transit/aitrail (address and token from $VAULT_ADDR, $VAULT_TOKEN; default $"+vaultKeyEnv+")")
	return &k
}

// vaultKeyEnv names the Vault transit key when no flag or setting does.
const vaultKeyEnv = "AITRAIL_VAULT_TRANSIT_KEY"

// vaultKEK returns the master key held by Vault's transit key "mount/key".
func vaultKEK(name string) (crypto.KEK, error) {
	i := strings.LastIndex(name, "/")
	if i <= 0 || i == len(name)-1 {
		return nil, usageError{fmt.Sprintf("vault transit key %q: want MOUNT/KEY, such as transit/aitrail", name)}
	}
	return vaultkek.New(vaultkek.Config{Mount: name[:i], Key: name[i+1:]})
}

// masterKey loads the master key: from the configured file, else Vault's
// transit engine, else the environment variable AITRAIL_MASTER_KEY, else
// <data>/master.key, which is created on first start.
func masterKey(dataDir string, src keySource, create bool) (crypto.KEK, error) {
	var key []byte
	var err error
	switch file := src.file; {
	case file != "" && src.vault != "":
		return nil, usageError{"give the master key once: a file or a Vault transit key, not both"}
	case src.vault != "":
		return vaultKEK(src.vault)
	case file != "":
		key, err = crypto.LoadMasterKeyFile(file)
	case os.Getenv("AITRAIL_MASTER_KEY") != "":
		key, err = crypto.ParseMasterKey(os.Getenv("AITRAIL_MASTER_KEY"))
	default:
		path := filepath.Join(dataDir, masterKeyFile)
		key, err = crypto.LoadMasterKeyFile(path)
		if errors.Is(err, fs.ErrNotExist) && create {
			// Only a new data directory gets a new key: one whose log
			// signing key is wrapped already was set up with a key given
			// some other way, which is missing now.
			data, serr := os.ReadFile(filepath.Join(dataDir, signerKeyFile))
			if serr == nil {
				var st storedSigner
				json.Unmarshal(data, &st)
				return nil, fmt.Errorf("master key: this data directory's master key (%s) is not in %s: give it with $AITRAIL_MASTER_KEY, --master-key-file or --vault-transit-key",
					cmp.Or(st.KEKID, "unknown id"), path)
			}
			key, err = crypto.CreateMasterKeyFile(path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return crypto.NewLocalKEK("", key)
}

// storedSigner is the signer key file's format.
type storedSigner struct {
	KEKID   string `json:"kek_id"`
	Wrapped string `json:"wrapped"`
}

// signerAAD binds the wrapped log signing key to its purpose.
var signerAAD = []byte("aitrail log signing key")

// readSigner reads the signer key file name and unwraps it with kek.
func readSigner(dataDir, name string, kek crypto.KEK) ([]byte, error) {
	path := filepath.Join(dataDir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("couldn't read the log signing key: %w", err)
	}
	var st storedSigner
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("log signing key %s is malformed", path)
	}
	wrapped, err := base64.StdEncoding.DecodeString(st.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("log signing key %s is malformed", path)
	}
	raw, err := kek.Unwrap(wrapped, signerAAD)
	if err != nil {
		return nil, fmt.Errorf("couldn't unwrap the log signing key with master key %s (it was wrapped by %s): is this the data directory's master key?", kek.ID(), st.KEKID)
	}
	return raw, nil
}

// logKeys loads the log's signing key (unwrapping it with the master key) or,
// on first start, creates it under name.
func logKeys(dataDir, name string, kek crypto.KEK, create bool) (note.Signer, note.Verifier, string, error) {
	skPath := filepath.Join(dataDir, signerKeyFile)
	pkPath := filepath.Join(dataDir, publicKeyFile)
	_, err := os.Stat(skPath)
	var skey, vkey string
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		skey, vkey, err = note.GenerateKey(rand.Reader, name)
		if err != nil {
			return nil, nil, "", err
		}
		js, err := wrapSigner([]byte(skey), kek)
		if err != nil {
			return nil, nil, "", err
		}
		if err := writeNew(pkPath, []byte(vkey+"\n"), 0o644); err != nil {
			return nil, nil, "", err
		}
		if err := writeNew(skPath, js, 0o600); err != nil {
			return nil, nil, "", err
		}
	default:
		raw, err := readSigner(dataDir, signerKeyFile, kek)
		if err != nil {
			return nil, nil, "", err
		}
		skey = string(raw)
		pub, err := os.ReadFile(pkPath)
		if err != nil {
			return nil, nil, "", fmt.Errorf("couldn't read the log's public key: %w", err)
		}
		vkey = strings.TrimSpace(string(pub))
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, "", fmt.Errorf("log signing key: %w", err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, "", fmt.Errorf("log public key: %w", err)
	}
	if verifier.Name() != signer.Name() || verifier.KeyHash() != signer.KeyHash() {
		return nil, nil, "", fmt.Errorf("%s and %s are not a key pair", skPath, pkPath)
	}
	return signer, verifier, vkey, nil
}

// readVerifier reads the log's public key from a data directory.
func readVerifier(dataDir string) (note.Verifier, error) {
	pub, err := os.ReadFile(filepath.Join(dataDir, publicKeyFile))
	if err != nil {
		return nil, fmt.Errorf("couldn't read the log's public key: %w", err)
	}
	return note.NewVerifier(strings.TrimSpace(string(pub)))
}

// openIndex opens the query index over log, creating its file private
// first: it holds the metadata the filters use (SQLite gives its -wal and
// -shm files the same mode).
func openIndex(dataDir string, log index.Log, opts index.Options) (*index.Index, error) {
	path := filepath.Join(dataDir, indexFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("couldn't create the query index: %w", err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, err
	}
	return index.Open(path, log, opts)
}

// indexMismatch tells why the query index, whose cursor is cursor, does not
// describe led's log, or returns "" when it does: its cursor is past the
// log's end, or the last record it indexed is not the log's record there
// (the log was restored from a copy, or the index copied from another data
// directory). Such an index would answer queries with rows the log does
// not back, and skip the log's new records.
func indexMismatch(ctx context.Context, idx *index.Index, led *ledger.Ledger, cursor uint64) (string, error) {
	if size := led.Size(); cursor > size {
		return fmt.Sprintf("the index has %d records, the log %d", cursor, size), nil
	}
	i, tenant, id, pos, ok, err := idx.LastRecord(ctx)
	if err != nil || !ok {
		return "", err
	}
	if off, ok, err := logHolds(ctx, led, i, tenant, id); err != nil || ok && off == pos {
		return "", err
	}
	return fmt.Sprintf("the index's record %d is not the log's", i), nil
}

// logHolds reports whether led's record at index i is the event (tenant,
// id), and where in the log it is.
func logHolds(ctx context.Context, led *ledger.Ledger, i uint64, tenant, id string) (offset int64, ok bool, err error) {
	es, err := led.Entries(ctx, i, 1)
	if err != nil || len(es) != 1 {
		return 0, false, err
	}
	key, err := recordKey(es[0].Data)
	return es[0].Offset, err == nil && key == ingest.Key(tenant, id), nil
}

// registryMismatch tells why the model registry does not describe led's
// log, or returns "" when it does, as indexMismatch does for the index.
func registryMismatch(ctx context.Context, reg *registry.Registry, led *ledger.Ledger) string {
	if c, _ := reg.Cursor(ctx); c > led.Size() {
		return fmt.Sprintf("the registry has seen %d records, the log holds %d", c, led.Size())
	}
	last, ok := reg.LastFact()
	if !ok {
		return ""
	}
	if _, ok, _ := logHolds(ctx, led, last.Index, last.Tenant, last.EventID); ok {
		return ""
	}
	return fmt.Sprintf("the registry's deployment at record %d is not the log's", last.Index)
}

// ledgerLink is the log the server's query index reads records back from.
// The index is opened before the ledger (which asks it for old idempotency
// keys and resumes from its cursor), so the link is made once the ledger is
// open; until then, which is before anything is served, reads fail.
type ledgerLink struct{ led atomic.Pointer[ledger.Ledger] }

func (l *ledgerLink) ReadRecords(locs []ledger.Loc, keep func(record []byte) bool) ([][]byte, error) {
	led := l.led.Load()
	if led == nil {
		return nil, errors.New("the log is not open yet")
	}
	return led.ReadRecords(locs, keep)
}

// Recent lets the index find records it has not applied yet (see
// index.Index.Get).
func (l *ledgerLink) Recent(from uint64) ([]ledger.Entry, bool) {
	if led := l.led.Load(); led != nil {
		return led.Recent(from)
	}
	return nil, false
}

// writeNew writes a file that must not exist yet, durably.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// replaceFile replaces path with data durably: through a new temporary
// file of its own name in the same directory, fsynced, renamed over path,
// and the directory fsynced; a crash leaves the old file or the new one.
func replaceFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, nothing
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDirOf(path)
}

// detectorFile holds the detector's state: the rules' windows and the log
// index it has reached.
const detectorFile = "detector.state"

// fileState is a detector state kept in one file, replaced atomically and
// synced on every save.
type fileState string

func (f fileState) Load() ([]byte, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (f fileState) Save(b []byte) error {
	tmp := string(f) + ".tmp"
	os.Remove(tmp) // a leftover of a save that stopped half way
	if err := writeNew(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, string(f)); err != nil {
		return err
	}
	return syncDirOf(string(f))
}

// loadRules loads the detector's rules: the built-in pack unless disabled,
// and the configured files.
func loadRules(c config.Detect) ([]*detect.Rule, error) {
	var files []detect.File
	for _, name := range c.Rules {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("couldn't read rule file: %w", err)
		}
		files = append(files, detect.File{Name: name, Data: data})
	}
	return detect.LoadFiles(!c.DisableBuiltin, files...)
}
