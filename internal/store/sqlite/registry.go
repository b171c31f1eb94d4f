package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"

	"github.com/aitrail/aitrail/internal/registry"
)

// RegistryStore keeps the model deployment registry's facts and follower
// cursor (registry.Store) in a SQLite database of their own. Unlike the
// catalog it holds only what can be rebuilt from the log: a database of
// another schema version is emptied, and deleting the file (server stopped)
// makes the registry follow the log again from the start. Commits are not
// synced (synchronous=NORMAL): one lost in a power cut takes its facts and
// cursor with it, and the follower delivers those entries again.
type RegistryStore struct {
	db *sql.DB
}

var _ registry.Store = (*RegistryStore)(nil)

// registrySchemaVersion is stored in PRAGMA user_version.
const registrySchemaVersion = 1

const registrySchema = `
CREATE TABLE IF NOT EXISTS deployments (
	idx  INTEGER PRIMARY KEY, -- log index of the deploy or retire record
	fact TEXT    NOT NULL     -- registry.Deployment as JSON
) STRICT;
CREATE TABLE IF NOT EXISTS registry_state (
	one    INTEGER PRIMARY KEY CHECK (one = 1),
	cursor INTEGER NOT NULL -- next log index needed
) STRICT;
INSERT INTO registry_state (one, cursor) VALUES (1, 0) ON CONFLICT DO NOTHING;
`

// OpenRegistry opens the registry database at path, creating it with mode
// 0600 if it does not exist.
func OpenRegistry(path string) (*RegistryStore, error) {
	db, err := openPrivate(path, "registry", "synchronous(NORMAL)")
	if err != nil {
		return nil, err
	}
	if err := initRegistry(context.Background(), db); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitestore: registry %s: %w", path, err)
	}
	return &RegistryStore{db: db}, nil
}

func initRegistry(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("couldn't begin: %w", err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("couldn't read schema version: %w", err)
	}
	if v != registrySchemaVersion {
		// Derived data: start again rather than migrate.
		if _, err := tx.ExecContext(ctx, "DROP TABLE IF EXISTS deployments; DROP TABLE IF EXISTS registry_state"); err != nil {
			return fmt.Errorf("couldn't drop schema version %d: %w", v, err)
		}
	}
	if _, err := tx.ExecContext(ctx, registrySchema); err != nil {
		return fmt.Errorf("couldn't create schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", registrySchemaVersion)); err != nil {
		return fmt.Errorf("couldn't set schema version: %w", err)
	}
	return tx.Commit()
}

// Close closes the database.
func (s *RegistryStore) Close() error { return s.db.Close() }

// Load implements registry.Store.
func (s *RegistryStore) Load(ctx context.Context) ([]registry.Deployment, uint64, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("sqlitestore: couldn't read the registry: %w", err)
	}
	defer tx.Rollback()
	var cursor int64
	if err := tx.QueryRowContext(ctx, "SELECT cursor FROM registry_state").Scan(&cursor); err != nil {
		return nil, 0, fmt.Errorf("sqlitestore: couldn't read the registry cursor: %w", err)
	}
	rows, err := tx.QueryContext(ctx, "SELECT idx, fact FROM deployments ORDER BY idx")
	if err != nil {
		return nil, 0, fmt.Errorf("sqlitestore: couldn't read registry facts: %w", err)
	}
	defer rows.Close()
	var facts []registry.Deployment
	for rows.Next() {
		var idx int64
		var fact string
		if err := rows.Scan(&idx, &fact); err != nil {
			return nil, 0, fmt.Errorf("sqlitestore: couldn't read registry facts: %w", err)
		}
		var d registry.Deployment
		if err := json.Unmarshal([]byte(fact), &d); err != nil || d.Index != uint64(idx) {
			return nil, 0, fmt.Errorf("sqlitestore: registry fact %d is corrupt (the registry is rebuilt from the log if its file is deleted)", idx)
		}
		facts = append(facts, d)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("sqlitestore: couldn't read registry facts: %w", err)
	}
	return facts, uint64(cursor), nil
}

// Save implements registry.Store.
func (s *RegistryStore) Save(ctx context.Context, facts []registry.Deployment, cursor uint64) error {
	if cursor > math.MaxInt64 {
		return fmt.Errorf("sqlitestore: registry cursor %d out of range", cursor)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: couldn't begin registry transaction: %w", err)
	}
	defer tx.Rollback()
	for _, d := range facts {
		fact, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("sqlitestore: couldn't encode registry fact %d: %w", d.Index, err)
		}
		if d.Index > math.MaxInt64 {
			return fmt.Errorf("sqlitestore: registry fact index %d out of range", d.Index)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO deployments (idx, fact) VALUES (?, ?) ON CONFLICT DO NOTHING", int64(d.Index), string(fact)); err != nil {
			return fmt.Errorf("sqlitestore: couldn't store registry fact %d: %w", d.Index, err)
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE registry_state SET cursor = max(cursor, ?)", int64(cursor)); err != nil {
		return fmt.Errorf("sqlitestore: couldn't store the registry cursor: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: couldn't commit registry facts: %w", err)
	}
	return nil
}
