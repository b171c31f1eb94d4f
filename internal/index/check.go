package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
)

// ErrDamaged means the index file fails Check: queries would answer from
// part of the log, or fail. Rebuilding the index from the log repairs it.
var ErrDamaged = errors.New("the query index is damaged")

// CheckReport is what Check found.
type CheckReport struct {
	// Records is how many records the index holds, Cursor the log index
	// of the next record it needs: equal in an intact index.
	Records, Cursor uint64
	// Missing is set when there is no index file (the server builds it),
	// Stale when the file is of another version of aitrail (the server
	// rebuilds it when it opens it).
	Missing, Stale bool
}

// Check examines the index file at path, for a log of logSize records,
// without writing to it: SQLite's quick_check of the file's structure, and
// that it holds exactly one row for each record before its cursor, with
// the cursor not past the log. Errors from a damaged file wrap ErrDamaged.
// It does not compare the rows with the records: only rebuilding the index
// does that.
func Check(ctx context.Context, path string, logSize uint64) (CheckReport, error) {
	var rep CheckReport
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		rep.Missing = true
		return rep, nil
	}
	params := url.Values{}
	params.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	params.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+params.Encode())
	if err != nil {
		return rep, fmt.Errorf("couldn't open index %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	damaged := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrDamaged, what, err)
		}
		return fmt.Errorf("%w: %s", ErrDamaged, what)
	}
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return rep, damaged("its header cannot be read", err)
	}
	if version != schemaVersion {
		rep.Stale = true
		return rep, nil
	}
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return rep, damaged("SQLite's quick_check cannot run", err)
	}
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return rep, damaged("SQLite's quick_check", err)
		}
		if line != "ok" && len(problems) < 5 {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return rep, damaged("SQLite's quick_check", err)
	}
	rows.Close()
	if len(problems) > 0 {
		return rep, damaged("SQLite's quick_check found "+strings.Join(problems, "; "), nil)
	}
	var n, cursor, last sql.NullInt64
	err = db.QueryRowContext(ctx, "SELECT (SELECT count(*) FROM records), (SELECT max(idx) FROM records), cursor FROM state").Scan(&n, &last, &cursor)
	if err != nil {
		return rep, damaged("its state cannot be read", err)
	}
	rep.Records, rep.Cursor = uint64(n.Int64), uint64(cursor.Int64)
	switch {
	case cursor.Int64 < 0 || rep.Cursor > logSize:
		return rep, damaged(fmt.Sprintf("its cursor %d is past the log's %d records", cursor.Int64, logSize), nil)
	case rep.Records != rep.Cursor || rep.Cursor > 0 && (!last.Valid || uint64(last.Int64) != rep.Cursor-1):
		return rep, damaged(fmt.Sprintf("it holds %d records, but the %d before its cursor should be there", rep.Records, rep.Cursor), nil)
	}
	return rep, nil
}
