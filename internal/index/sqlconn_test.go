package index

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/ledger"
)

func openTestConn(t *testing.T) *conn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	// SQLite creates the file only for a connection that may create it;
	// ours never does, so an empty file stands for a new database.
	c, err := openConn(path, 1000)
	if err == nil {
		t.Fatal("opened a database that does not exist")
	}
	if !strings.Contains(err.Error(), "unable to open") {
		t.Errorf("opening a missing file: %v", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = openConn(path, 1000, "PRAGMA journal_mode = WAL"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	if err := c.exec("CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT, b BLOB)"); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConnRoundTrip: values bound go in and come back out unchanged, those
// larger than a statement's buffer and the empty ones included, and a
// statement's buffer is reused from one execution to the next.
func TestConnRoundTrip(t *testing.T) {
	c := openTestConn(t)
	ins, err := c.prepare("INSERT INTO t (i, s, b) VALUES (?, ?, ?)")
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", stmtBuffer+1)
	want := []struct {
		s string // "" is bound as NULL (bindOptional)
		b []byte // nil is bound as NULL
	}{
		{"a", []byte{0, 1, 2}},
		{"", []byte{}},
		{"", nil},
		{big, []byte(big)},
		{"é\x00z", bytes.Repeat([]byte{7}, stmtBuffer/2)},
		{strings.Repeat("y", stmtBuffer/2), bytes.Repeat([]byte{9}, stmtBuffer/2+1)}, // the second overflows
	}
	for i, w := range want {
		ins.bindInt(1, int64(i))
		ins.bindOptional(2, w.s)
		if w.b == nil {
			ins.bindNull(3)
		} else {
			ins.bindBlob(3, w.b)
		}
		if n, err := ins.exec(); err != nil || n != 1 {
			t.Fatalf("insert %d: %d rows, %v", i, n, err)
		}
	}
	sel, err := c.prepare("SELECT i, s, hex(b), s IS NULL, b IS NULL FROM t ORDER BY i")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		ok, err := sel.step()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if i != len(want) {
				t.Fatalf("read %d rows; want %d", i, len(want))
			}
			break
		}
		w := want[i]
		if got := sel.columnInt(0); got != int64(i) {
			t.Errorf("row %d: i = %d", i, got)
		}
		if w.s == "" {
			if sel.columnInt(3) != 1 || sel.columnText(1) != "" {
				t.Errorf("row %d: s not NULL", i)
			}
		} else if got := sel.columnText(1); got != w.s || sel.columnInt(3) != 0 {
			t.Errorf("row %d: s = %.20q (%d bytes); want %.20q (%d)", i, got, len(got), w.s, len(w.s))
		}
		if w.b == nil {
			if sel.columnInt(4) != 1 {
				t.Errorf("row %d: b not NULL", i)
			}
		} else if got := sel.columnText(2); got != fmt.Sprintf("%X", w.b) || sel.columnInt(4) != 0 {
			t.Errorf("row %d: b = %d hex digits; want %d bytes", i, len(got), len(w.b))
		}
	}
}

// TestConnErrors: SQLite's errors come back with its message, a binding
// error is reported when the statement runs (and it does not run), and a
// failed statement leaves the transaction usable.
func TestConnErrors(t *testing.T) {
	c := openTestConn(t)
	if _, err := c.prepare("SELEKT 1"); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("bad SQL: %v", err)
	}
	if err := c.begin(); err != nil {
		t.Fatal(err)
	}
	ins, err := c.prepare("INSERT INTO t (i, s) VALUES (?, ?)")
	if err != nil {
		t.Fatal(err)
	}
	ins.bindInt(1, 1)
	ins.bindText(2, "one")
	if _, err := ins.exec(); err != nil {
		t.Fatal(err)
	}
	ins.bindInt(1, 1)
	ins.bindText(2, "again")
	if _, err := ins.exec(); err == nil || !strings.Contains(err.Error(), "UNIQUE constraint failed") {
		t.Errorf("duplicate key: %v", err)
	}
	ins.bindInt(1, 2)
	ins.bindText(3, "no such parameter")
	if _, err := ins.exec(); err == nil || !strings.Contains(err.Error(), "range") {
		t.Errorf("parameter out of range: %v", err)
	}
	if err := c.commit(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.queryInt("SELECT count(*) FROM t"); err != nil || n != 1 {
		t.Errorf("%d rows, %v; want the one that was inserted", n, err)
	}

	// Rolled back: nothing of the transaction stays.
	if err := c.begin(); err != nil {
		t.Fatal(err)
	}
	if err := c.execInt("DELETE FROM t WHERE i = ?", 1); err != nil {
		t.Fatal(err)
	}
	c.rollback()
	c.rollback() // no transaction: nothing to do
	if n, err := c.queryInt("SELECT count(*) FROM t"); err != nil || n != 1 {
		t.Errorf("after rollback: %d rows, %v", n, err)
	}

	c.close()
	if _, err := c.prepare("SELECT 1"); err == nil {
		t.Error("a closed connection prepared a statement")
	}
	if c.inTx() {
		t.Error("a closed connection is in a transaction")
	}
	if err := c.close(); err != nil {
		t.Errorf("closing again: %v", err)
	}
}

// TestApplyAfterClose: an Index used after Close (a follower that had not
// stopped yet) returns errors instead of touching the closed connection.
func TestApplyAfterClose(t *testing.T) {
	ix, _ := openTemp(t, Options{})
	g := newGenerator(t)
	if err := ix.Apply(context.Background(), []ledger.Entry{g.entry(0)}); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ix.Apply(context.Background(), []ledger.Entry{g.entry(1)}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Apply after Close: %v", err)
	}
	if _, err := ix.ScrubActor(context.Background(), "acme", "p-x"); err == nil {
		t.Error("ScrubActor after Close succeeded")
	}
}
