// Package sqlitestore is the embedded catalog: the SQLite database that holds
// what is mutable and not derivable from the log — wrapped data keys, the
// master key check value and API tokens. It implements crypto.KeyStore and
// authz.TokenStore.
//
// The catalog is not part of the tree and cannot be rebuilt from it, so every
// write is synced (WAL with synchronous=FULL) before it returns. It never
// holds a key or a token secret in the clear: keys are wrapped by the master
// key and tokens are stored as hashes.
//
// The package also holds RegistryStore (registry.go), the model deployment
// registry's own database, which unlike the catalog is derived from the log.
package sqlitestore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/crypto"
)

// BusyTimeout is how long a statement waits for another connection's write
// lock before failing.
const BusyTimeout = 10 * time.Second

// Catalog is an open catalog database. It is safe for concurrent use.
type Catalog struct {
	db *sql.DB
}

var (
	_ crypto.KeyStore  = (*Catalog)(nil)
	_ authz.TokenStore = (*Catalog)(nil)
)

// migrations[i] moves the schema from version i to i+1. Append only: a
// released migration is never edited.
var migrations = []string{
	`CREATE TABLE tokens (
		seq        INTEGER PRIMARY KEY AUTOINCREMENT,
		id         TEXT    NOT NULL UNIQUE,
		name       TEXT    NOT NULL,
		roles      TEXT    NOT NULL, -- JSON array of role names
		tenants    TEXT    NOT NULL, -- JSON array of tenants, ["*"] for all
		hash       BLOB    NOT NULL, -- SHA-256 of the secret, never the secret
		created_at INTEGER NOT NULL, -- Unix nanoseconds
		root       INTEGER NOT NULL DEFAULT 0
	) STRICT;
	CREATE TABLE data_keys (
		seq        INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order: the newest key of a scope is current
		id         TEXT    NOT NULL UNIQUE,
		scope      TEXT    NOT NULL,
		kek_id     TEXT    NOT NULL,
		wrapped    BLOB    NOT NULL,
		created_at INTEGER NOT NULL
	) STRICT;
	CREATE INDEX data_keys_scope ON data_keys (scope, seq);
	CREATE TABLE kek_check (
		id    INTEGER PRIMARY KEY CHECK (id = 1),
		value BLOB    NOT NULL
	) STRICT;`,
	`CREATE TABLE kek_versions (
		version    INTEGER PRIMARY KEY,
		kek_id     TEXT    NOT NULL UNIQUE,
		created_at INTEGER NOT NULL
	) STRICT;`,
	`CREATE TABLE erased_keys ( -- data keys an erasure destroyed, by the SHA-256 of their id, so
		-- that the id itself, like the key, leaves the file (secure_delete)
		id_sha256 BLOB    PRIMARY KEY,
		erased_at INTEGER NOT NULL -- Unix nanoseconds
	) STRICT;`,
	`CREATE TABLE pending_erasures ( -- erasures whose keys are destroyed and whose record may not be in the log yet
		seq            INTEGER PRIMARY KEY AUTOINCREMENT,
		id             TEXT    NOT NULL UNIQUE, -- the id of the record
		tenant         TEXT    NOT NULL,
		pseudonym      TEXT    NOT NULL,
		keys_destroyed INTEGER NOT NULL,
		key_ids        TEXT    NOT NULL, -- the ids of the keys destroyed, comma-separated
		requester      TEXT    NOT NULL,
		token_id       TEXT    NOT NULL,
		erased_at      INTEGER NOT NULL -- Unix nanoseconds
	) STRICT;
	CREATE TABLE erasure_cursor ( -- the log index of the next record whose erasure is to be put in force
		id     INTEGER PRIMARY KEY CHECK (id = 1),
		cursor INTEGER NOT NULL
	) STRICT;
	ALTER TABLE tokens ADD COLUMN events_per_second REAL NOT NULL DEFAULT 0; -- the token's own rate limit; 0: the server's
	ALTER TABLE tokens ADD COLUMN burst_events INTEGER NOT NULL DEFAULT 0;`,
}

// Open opens the catalog database at path, creating it with mode 0600 if it
// does not exist, and brings its schema up to date. It refuses a catalog
// written by a newer aitrail.
func Open(path string) (*Catalog, error) {
	db, err := openPrivate(path, "catalog", "synchronous(FULL)&_pragma=foreign_keys(1)&_pragma=secure_delete(1)")
	if err != nil {
		return nil, err
	}
	c := &Catalog{db: db}
	if err := c.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitestore: catalog %s: %w", path, err)
	}
	return c, nil
}

// openPrivate opens the SQLite database at path in WAL mode with
// BEGIN IMMEDIATE transactions and the given extra pragmas, creating the
// file with mode 0600 (and restricting an existing one). what names the
// database in errors.
func openPrivate(path, what, pragmas string) (*sql.DB, error) {
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, ":memory:") {
		return nil, fmt.Errorf("sqlitestore: invalid %s path %q: must be a file path without '?'", what, path)
	}
	// Create the file ourselves so it gets mode 0600; SQLite gives its -wal
	// and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't open %s: %w", what, err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't stat %s: %w", what, err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("sqlitestore: %s %s is accessible by group or others and couldn't be restricted: %w", what, path, err)
		}
	}
	dsn := path + "?_txlock=immediate" +
		fmt.Sprintf("&_pragma=busy_timeout(%d)", BusyTimeout.Milliseconds()) +
		"&_pragma=journal_mode(WAL)&_pragma=" + pragmas
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't open %s %s: %w", what, path, err)
	}
	return db, nil
}

func (c *Catalog) migrate(ctx context.Context) error {
	tx, err := c.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: one migrator at a time
	if err != nil {
		return fmt.Errorf("couldn't begin migration: %w", err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("couldn't read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this aitrail understands (%d); run a newer aitrail", v, len(migrations))
	}
	if v == len(migrations) {
		return nil
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("couldn't migrate schema to version %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("couldn't set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("couldn't commit migration: %w", err)
	}
	return nil
}

// Close closes the database.
func (c *Catalog) Close() error {
	return c.db.Close()
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// PutKey implements crypto.KeyStore.
func (c *Catalog) PutKey(ctx context.Context, k crypto.WrappedKey) error {
	return c.PutKeys(ctx, []crypto.WrappedKey{k})
}

// PutKeys implements crypto.KeyStore: one transaction, one sync.
func (c *Catalog) PutKeys(ctx context.Context, keys []crypto.WrappedKey) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't store %d data keys: %w", len(keys), err)
	}
	defer tx.Rollback()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO data_keys (id, scope, kek_id, wrapped, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't store %d data keys: %w", len(keys), err)
	}
	defer ins.Close()
	for _, k := range keys {
		res, err := ins.ExecContext(ctx, k.ID, k.Scope, k.KEKID, k.Wrapped, unixNano(k.CreatedAt))
		if err != nil {
			return fmt.Errorf("sqlitestore: couldn't store data key %q: %w", k.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("sqlitestore: couldn't store data key %q: %w", k.ID, err)
		} else if n == 0 {
			return fmt.Errorf("sqlitestore: data key %q: %w", k.ID, crypto.ErrExists)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: couldn't store %d data keys: %w", len(keys), err)
	}
	return nil
}

const keyColumns = `id, scope, kek_id, wrapped, created_at`

func scanKey(row scanner) (crypto.WrappedKey, error) {
	var k crypto.WrappedKey
	var created int64
	err := row.Scan(&k.ID, &k.Scope, &k.KEKID, &k.Wrapped, &created)
	k.CreatedAt = fromUnixNano(created)
	return k, err
}

// GetKey implements crypto.KeyStore.
func (c *Catalog) GetKey(ctx context.Context, id string) (crypto.WrappedKey, error) {
	k, err := scanKey(c.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM data_keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		var erased int
		if err := c.db.QueryRowContext(ctx, `SELECT count(*) FROM erased_keys WHERE id_sha256 = ?`, idHash(id)).Scan(&erased); err != nil {
			return crypto.WrappedKey{}, fmt.Errorf("sqlitestore: couldn't read data key %q: %w", id, err)
		}
		if erased > 0 {
			return crypto.WrappedKey{}, fmt.Errorf("sqlitestore: data key %q: %w", id, crypto.ErrErased)
		}
		return crypto.WrappedKey{}, fmt.Errorf("sqlitestore: data key %q: %w", id, crypto.ErrNotFound)
	}
	if err != nil {
		return crypto.WrappedKey{}, fmt.Errorf("sqlitestore: couldn't read data key %q: %w", id, err)
	}
	return k, nil
}

// CurrentKey implements crypto.KeyStore.
func (c *Catalog) CurrentKey(ctx context.Context, scope string) (crypto.WrappedKey, bool, error) {
	k, err := scanKey(c.db.QueryRowContext(ctx,
		`SELECT `+keyColumns+` FROM data_keys WHERE scope = ? ORDER BY seq DESC LIMIT 1`, scope))
	if errors.Is(err, sql.ErrNoRows) {
		return crypto.WrappedKey{}, false, nil
	}
	if err != nil {
		return crypto.WrappedKey{}, false, fmt.Errorf("sqlitestore: couldn't read current data key: %w", err)
	}
	return k, true, nil
}

// GetCheck implements crypto.KeyStore.
func (c *Catalog) GetCheck(ctx context.Context) ([]byte, bool, error) {
	var v []byte
	err := c.db.QueryRowContext(ctx, `SELECT value FROM kek_check WHERE id = 1`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("sqlitestore: couldn't read master key check value: %w", err)
	}
	return v, true, nil
}

// PutCheck implements crypto.KeyStore.
func (c *Catalog) PutCheck(ctx context.Context, check []byte) error {
	res, err := c.db.ExecContext(ctx, `INSERT INTO kek_check (id, value) VALUES (1, ?) ON CONFLICT (id) DO NOTHING`, check)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't store master key check value: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlitestore: couldn't store master key check value: %w", err)
	} else if n == 0 {
		return fmt.Errorf("sqlitestore: master key check value: %w", crypto.ErrExists)
	}
	return nil
}

// AllKeys implements crypto.KeyStore.
func (c *Catalog) AllKeys(ctx context.Context) ([]crypto.WrappedKey, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM data_keys ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't list data keys: %w", err)
	}
	defer rows.Close()
	var out []crypto.WrappedKey
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't list data keys: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// KEKVersions implements crypto.KeyStore.
func (c *Catalog) KEKVersions(ctx context.Context) ([]crypto.KEKVersion, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT version, kek_id, created_at FROM kek_versions ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't read the master key history: %w", err)
	}
	defer rows.Close()
	var out []crypto.KEKVersion
	for rows.Next() {
		var v crypto.KEKVersion
		var created int64
		if err := rows.Scan(&v.Version, &v.KEKID, &created); err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't read the master key history: %w", err)
		}
		v.CreatedAt = fromUnixNano(created)
		out = append(out, v)
	}
	return out, rows.Err()
}

// EraseScopes implements crypto.KeyStore. The catalog runs with
// secure_delete, so deleted rows are overwritten in the database file, and
// the write-ahead log is checkpointed and truncated afterwards, so that no
// copy of a destroyed wrapped key stays in either file.
func (c *Catalog) EraseScopes(ctx context.Context, scopes []string, e crypto.Erasure) ([]string, error) {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
	}
	defer tx.Rollback()
	var ids []string
	for _, scope := range scopes {
		rows, err := tx.QueryContext(ctx, `DELETE FROM data_keys WHERE scope = ? RETURNING id`, scope)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
			}
			ids = append(ids, id)
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
		}
	}
	if err := noteErased(ctx, tx, ids); err != nil {
		return nil, err
	}
	var exists int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pending_erasures WHERE id = ?`, e.ID).Scan(&exists); err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't keep the erasure: %w", err)
	}
	if exists > 0 {
		return nil, fmt.Errorf("sqlitestore: erasure %q: %w", e.ID, crypto.ErrExists)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO pending_erasures (id, tenant, pseudonym, keys_destroyed, key_ids, requester, token_id, erased_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, e.ID, e.Tenant, e.Pseudonym, len(ids), strings.Join(ids, ","), e.Requester, e.TokenID, unixNano(e.At)); err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't keep the erasure: %w", err)
	}
	return c.commitErasure(ctx, tx, ids)
}

// noteErased keeps the ids as those of erased keys (erased_keys).
func noteErased(ctx context.Context, tx *sql.Tx, ids []string) error {
	now := time.Now().UnixNano()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO erased_keys (id_sha256, erased_at) VALUES (?, ?)`, idHash(id), now); err != nil {
			return fmt.Errorf("sqlitestore: couldn't note the erased keys: %w", err)
		}
	}
	return nil
}

// commitErasure commits a transaction that destroyed the keys with the
// ids and then, if it destroyed any, checkpoints and truncates the
// write-ahead log, so that no copy of them stays in it.
func (c *Catalog) commitErasure(ctx context.Context, tx *sql.Tx, destroyed []string) ([]string, error) {
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
	}
	if len(destroyed) > 0 {
		if _, err := c.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			return destroyed, fmt.Errorf("sqlitestore: couldn't checkpoint after deleting keys: %w", err)
		}
	}
	return destroyed, nil
}

// PendingErasures implements crypto.KeyStore.
func (c *Catalog) PendingErasures(ctx context.Context) ([]crypto.Erasure, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT id, tenant, pseudonym, keys_destroyed, key_ids, requester, token_id, erased_at
		FROM pending_erasures ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't read the pending erasures: %w", err)
	}
	defer rows.Close()
	var out []crypto.Erasure
	for rows.Next() {
		var e crypto.Erasure
		var at int64
		var keyIDs string
		if err := rows.Scan(&e.ID, &e.Tenant, &e.Pseudonym, &e.KeysDestroyed, &keyIDs, &e.Requester, &e.TokenID, &at); err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't read the pending erasures: %w", err)
		}
		e.At = fromUnixNano(at)
		if keyIDs != "" {
			e.KeyIDs = strings.Split(keyIDs, ",")
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteKeys implements crypto.KeyStore, as EraseScopes does.
func (c *Catalog) DeleteKeys(ctx context.Context, ids []string) ([]string, error) {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
	}
	defer tx.Rollback()
	var destroyed []string
	for _, id := range ids {
		res, err := tx.ExecContext(ctx, `DELETE FROM data_keys WHERE id = ?`, id)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't delete keys: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			destroyed = append(destroyed, id)
		}
	}
	// Every id, so that content under a key the copy never held reads as
	// erased too.
	if err := noteErased(ctx, tx, ids); err != nil {
		return nil, err
	}
	return c.commitErasure(ctx, tx, destroyed)
}

// ErasureCursor implements crypto.KeyStore.
func (c *Catalog) ErasureCursor(ctx context.Context) (uint64, bool, error) {
	var cursor int64
	err := c.db.QueryRowContext(ctx, `SELECT cursor FROM erasure_cursor WHERE id = 1`).Scan(&cursor)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("sqlitestore: couldn't read the erasure cursor: %w", err)
	}
	return uint64(cursor), true, nil
}

// SetErasureCursor implements crypto.KeyStore.
func (c *Catalog) SetErasureCursor(ctx context.Context, cursor uint64) error {
	if cursor > math.MaxInt64 {
		return fmt.Errorf("sqlitestore: erasure cursor %d out of range", cursor)
	}
	if _, err := c.db.ExecContext(ctx, `INSERT INTO erasure_cursor (id, cursor) VALUES (1, ?)
		ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor`, int64(cursor)); err != nil {
		return fmt.Errorf("sqlitestore: couldn't store the erasure cursor: %w", err)
	}
	return nil
}

// ErasureRecorded implements crypto.KeyStore.
func (c *Catalog) ErasureRecorded(ctx context.Context, id string) error {
	if _, err := c.db.ExecContext(ctx, `DELETE FROM pending_erasures WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlitestore: couldn't note the erasure %q as recorded: %w", id, err)
	}
	return nil
}

// idHash is how erased_keys names a data key.
func idHash(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

// Rotate implements crypto.KeyStore, in one transaction.
func (c *Catalog) Rotate(ctx context.Context, r crypto.Rotation) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't begin the rotation: %w", err)
	}
	defer tx.Rollback()
	for _, k := range r.Rewrapped {
		res, err := tx.ExecContext(ctx, `UPDATE data_keys SET kek_id = ?, wrapped = ? WHERE id = ?`, k.KEKID, k.Wrapped, k.ID)
		if err != nil {
			return fmt.Errorf("sqlitestore: couldn't re-wrap data key %q: %w", k.ID, err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("sqlitestore: data key %q: %w", k.ID, crypto.ErrNotFound)
		}
	}
	for _, k := range r.Added {
		if _, err := tx.ExecContext(ctx, `INSERT INTO data_keys (id, scope, kek_id, wrapped, created_at) VALUES (?, ?, ?, ?, ?)`,
			k.ID, k.Scope, k.KEKID, k.Wrapped, unixNano(k.CreatedAt)); err != nil {
			return fmt.Errorf("sqlitestore: couldn't store data key %q: %w", k.ID, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE kek_check SET value = ? WHERE id = 1`, r.Check); err != nil {
		return fmt.Errorf("sqlitestore: couldn't replace the master key check value: %w", err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM kek_versions`).Scan(&n); err != nil {
		return fmt.Errorf("sqlitestore: couldn't read the master key history: %w", err)
	}
	versions := []crypto.KEKVersion{r.Version}
	if n == 0 {
		versions = []crypto.KEKVersion{r.Previous, r.Version}
	}
	for _, v := range versions {
		if _, err := tx.ExecContext(ctx, `INSERT INTO kek_versions (version, kek_id, created_at) VALUES (?, ?, ?)`,
			v.Version, v.KEKID, unixNano(v.CreatedAt)); err != nil {
			return fmt.Errorf("sqlitestore: couldn't record master key version %d: %w", v.Version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: couldn't commit the rotation: %w", err)
	}
	return nil
}

// CreateToken implements authz.TokenStore.
func (c *Catalog) CreateToken(ctx context.Context, t authz.Token) error {
	roles, tenants := t.Roles, t.Tenants
	if roles == nil {
		roles = []authz.Role{}
	}
	if tenants == nil {
		tenants = []string{}
	}
	rj, err := json.Marshal(roles)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't encode roles: %w", err)
	}
	tj, err := json.Marshal(tenants)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't encode tenants: %w", err)
	}
	res, err := c.db.ExecContext(ctx,
		`INSERT INTO tokens (id, name, roles, tenants, hash, created_at, root, events_per_second, burst_events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`,
		t.ID, t.Name, string(rj), string(tj), t.Hash, unixNano(t.CreatedAt), t.Root, t.Limit.EventsPerSecond, t.Limit.BurstEvents)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't store token %q: %w", t.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlitestore: couldn't store token %q: %w", t.ID, err)
	} else if n == 0 {
		return fmt.Errorf("sqlitestore: token %q: %w", t.ID, authz.ErrExists)
	}
	return nil
}

const tokenColumns = `id, name, roles, tenants, hash, created_at, root, events_per_second, burst_events`

type scanner interface{ Scan(dest ...any) error }

func scanToken(row scanner) (authz.Token, error) {
	var t authz.Token
	var roles, tenants string
	var created int64
	if err := row.Scan(&t.ID, &t.Name, &roles, &tenants, &t.Hash, &created, &t.Root, &t.Limit.EventsPerSecond, &t.Limit.BurstEvents); err != nil {
		return authz.Token{}, err
	}
	t.CreatedAt = fromUnixNano(created)
	if err := json.Unmarshal([]byte(roles), &t.Roles); err != nil {
		return authz.Token{}, fmt.Errorf("roles of token %q are corrupt: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(tenants), &t.Tenants); err != nil {
		return authz.Token{}, fmt.Errorf("tenants of token %q are corrupt: %w", t.ID, err)
	}
	return t, nil
}

// GetToken implements authz.TokenStore.
func (c *Catalog) GetToken(ctx context.Context, id string) (authz.Token, error) {
	t, err := scanToken(c.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return authz.Token{}, fmt.Errorf("sqlitestore: token %q: %w", id, authz.ErrNotFound)
	}
	if err != nil {
		return authz.Token{}, fmt.Errorf("sqlitestore: couldn't read token %q: %w", id, err)
	}
	return t, nil
}

// ListTokens implements authz.TokenStore.
func (c *Catalog) ListTokens(ctx context.Context) ([]authz.Token, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't list tokens: %w", err)
	}
	defer rows.Close()
	var out []authz.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: couldn't list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: couldn't list tokens: %w", err)
	}
	return out, nil
}

// DeleteToken implements authz.TokenStore.
func (c *Catalog) DeleteToken(ctx context.Context, id string) error {
	res, err := c.db.ExecContext(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't delete token %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't delete token %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlitestore: token %q: %w", id, authz.ErrNotFound)
	}
	return nil
}

// CountTokens implements authz.TokenStore.
func (c *Catalog) CountTokens(ctx context.Context) (int, error) {
	var n int
	if err := c.db.QueryRowContext(ctx, `SELECT count(*) FROM tokens`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlitestore: couldn't count tokens: %w", err)
	}
	return n, nil
}
