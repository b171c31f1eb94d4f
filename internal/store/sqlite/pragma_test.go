package sqlitestore

import (
	"path/filepath"
	"testing"
)

// The catalog is not derivable from anything else: every connection must
// sync each commit.
func TestPragmas(t *testing.T) {
	c, err := Open(filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Hold several connections at once so the check covers more than the first.
	for i := range 3 {
		conn, err := c.db.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var mode string
		var sync, busy int
		if err := conn.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(t.Context(), "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || sync != 2 || busy != int(BusyTimeout.Milliseconds()) {
			t.Errorf("connection %d: journal_mode=%s synchronous=%d busy_timeout=%d; want wal, 2 (FULL), %d",
				i, mode, sync, busy, BusyTimeout.Milliseconds())
		}
	}
}
