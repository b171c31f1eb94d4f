package index

import (
	"errors"
	"fmt"
	"unsafe"

	"modernc.org/libc"
	"modernc.org/libc/sys/types"
	sqlite3 "modernc.org/sqlite/lib"
)

// A conn is the connection Apply writes with, made with SQLite's C API
// (modernc.org/sqlite/lib, the library the database/sql driver is built
// on) instead of through database/sql.
//
// The driver opens every connection with SQLITE_OPEN_FULLMUTEX, so SQLite
// locks the connection's mutex around every call, and it copies every
// string it binds into memory of its own. Indexing a record makes about
// fifteen calls: in a CPU profile of batched ingest, the locking alone took
// 7 % of the server, binding and database/sql as much again. A conn is
// opened with SQLITE_OPEN_NOMUTEX, binds strings from a buffer that each
// statement keeps, and keeps its statements prepared.
//
// A conn is not safe for concurrent use: Index uses it only under applyMu.
type conn struct {
	tls   *libc.TLS
	db    uintptr
	stmts map[string]*stmt
}

// openConn opens the existing database at path and runs pragmas, each a
// statement such as "PRAGMA synchronous = NORMAL".
func openConn(path string, busyMillis int, pragmas ...string) (*conn, error) {
	c := &conn{tls: libc.NewTLS(), stmts: map[string]*stmt{}}
	if err := c.open(path); err != nil {
		c.close()
		return nil, err
	}
	sqlite3.Xsqlite3_extended_result_codes(c.tls, c.db, 1)
	sqlite3.Xsqlite3_busy_timeout(c.tls, c.db, int32(busyMillis))
	for _, p := range pragmas {
		if err := c.exec(p); err != nil {
			c.close()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return c, nil
}

// open opens the database at path without SQLite's mutex. On failure
// SQLite may still have made a connection, which holds the message and
// must be closed.
func (c *conn) open(path string) error {
	name, err := libc.CString(path)
	if err != nil {
		return err
	}
	defer libc.Xfree(c.tls, name)
	pdb := c.tls.Alloc(int(unsafe.Sizeof(uintptr(0))))
	defer c.tls.Free(int(unsafe.Sizeof(uintptr(0))))
	rc := sqlite3.Xsqlite3_open_v2(c.tls, name, pdb, sqlite3.SQLITE_OPEN_READWRITE|sqlite3.SQLITE_OPEN_NOMUTEX, 0)
	c.db = *(*uintptr)(cMemory(pdb))
	if rc != sqlite3.SQLITE_OK {
		return c.error(rc)
	}
	return nil
}

// close finalizes the statements and closes the connection.
func (c *conn) close() error {
	if c.tls == nil {
		return nil // closed before
	}
	for _, s := range c.stmts {
		s.finalize()
	}
	c.stmts = nil
	var err error
	if c.db != 0 {
		if rc := sqlite3.Xsqlite3_close_v2(c.tls, c.db); rc != sqlite3.SQLITE_OK {
			err = c.error(rc)
		}
		c.db = 0
	}
	c.tls.Close()
	c.tls = nil
	return err
}

// sqliteError is an error SQLite returned, with its extended result code.
type sqliteError struct {
	code int32
	msg  string
}

func (e *sqliteError) Error() string { return fmt.Sprintf("%s (%d)", e.msg, e.code) }

// error returns the error rc stands for, with the connection's message
// when it is about rc.
func (c *conn) error(rc int32) error {
	msg := libc.GoString(sqlite3.Xsqlite3_errstr(c.tls, rc))
	if c.db != 0 && sqlite3.Xsqlite3_extended_errcode(c.tls, c.db)&0xff == rc&0xff {
		msg = libc.GoString(sqlite3.Xsqlite3_errmsg(c.tls, c.db))
	}
	return &sqliteError{code: rc, msg: msg}
}

// exec runs sql, which may hold several statements and takes no arguments.
func (c *conn) exec(sql string) error {
	z, err := libc.CString(sql)
	if err != nil {
		return err
	}
	defer libc.Xfree(c.tls, z)
	if rc := sqlite3.Xsqlite3_exec(c.tls, c.db, z, 0, 0, 0); rc != sqlite3.SQLITE_OK {
		return c.error(rc)
	}
	return nil
}

// inTx reports whether a transaction is open.
func (c *conn) inTx() bool { return c.db != 0 && sqlite3.Xsqlite3_get_autocommit(c.tls, c.db) == 0 }

// begin starts a transaction that takes the write lock at once, so that
// two writers wait on each other (busy timeout) instead of one failing when
// it tries to upgrade a read lock.
func (c *conn) begin() error { return c.run("BEGIN IMMEDIATE") }

func (c *conn) commit() error { return c.run("COMMIT") }

// rollback ends the transaction, if one is open, without its changes.
func (c *conn) rollback() {
	if c.inTx() {
		c.run("ROLLBACK")
	}
}

// run runs sql, one statement that takes no arguments and returns no rows.
func (c *conn) run(sql string) error {
	s, err := c.prepare(sql)
	if err != nil {
		return err
	}
	_, err = s.exec()
	return err
}

// execInt runs sql, one statement that takes one integer and returns no
// rows.
func (c *conn) execInt(sql string, v int64) error {
	s, err := c.prepare(sql)
	if err != nil {
		return err
	}
	s.bindInt(1, v)
	_, err = s.exec()
	return err
}

// queryInt returns the first column of the one row sql returns.
func (c *conn) queryInt(sql string) (int64, error) {
	s, err := c.prepare(sql)
	if err != nil {
		return 0, err
	}
	ok, err := s.step()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errors.New("no rows")
	}
	v := s.columnInt(0)
	s.reset()
	return v, nil
}

// prepare returns sql, one statement, prepared. Statements are kept for
// the life of the connection: the same sql gets the same stmt, reset.
func (c *conn) prepare(sql string) (*stmt, error) { return c.prepareMaybe(sql, true) }

// scanRange runs query, whose two parameters bound the log index (from
// included, to not), and calls row with the statement at each row.
func (c *conn) scanRange(query string, from, to int64, row func(s *stmt)) error {
	s, err := c.prepare(query)
	if err != nil {
		return err
	}
	s.bindInt(1, from)
	s.bindInt(2, to)
	for {
		ok, err := s.step()
		if !ok || err != nil {
			return err
		}
		row(s)
	}
}

// prepareMaybe is prepare, but a statement not kept must be finalized by
// the caller.
func (c *conn) prepareMaybe(sql string, keep bool) (*stmt, error) {
	if s := c.stmts[sql]; s != nil {
		return s, nil
	}
	if c.db == 0 {
		return nil, errors.New("index closed")
	}
	z, err := libc.CString(sql)
	if err != nil {
		return nil, err
	}
	defer libc.Xfree(c.tls, z)
	pp := c.tls.Alloc(int(unsafe.Sizeof(uintptr(0))))
	defer c.tls.Free(int(unsafe.Sizeof(uintptr(0))))
	var flags uint32
	if keep {
		flags = sqlite3.SQLITE_PREPARE_PERSISTENT
	}
	if rc := sqlite3.Xsqlite3_prepare_v3(c.tls, c.db, z, -1, flags, pp, 0); rc != sqlite3.SQLITE_OK {
		return nil, c.error(rc)
	}
	p := *(*uintptr)(cMemory(pp))
	if p == 0 {
		return nil, errors.New("no statement in " + sql)
	}
	s := &stmt{c: c, p: p}
	if keep {
		c.stmts[sql] = s
	}
	return s, nil
}

// A stmt is a prepared statement of a conn. Bind its parameters (numbered
// from 1), then run it with exec or read its rows with step and the column
// methods; exec, and step at the end of the rows or on an error, reset it
// for the next use, as reset does. An error binding is reported by exec or
// step. Bind every parameter again before each run: reset keeps SQLite's
// bindings, but the buffer strings were bound from is reused.
type stmt struct {
	c *conn
	p uintptr
	// buf is C memory that strings and blobs are copied to and bound from
	// (SQLITE_STATIC); used is how much of it the current bindings take.
	buf  uintptr
	used int
	err  error
}

// stmtBuffer is the size of a statement's bind buffer. A value that does
// not fit in what is left of it is bound through a copy SQLite makes.
const stmtBuffer = 16 << 10

func (s *stmt) finalize() {
	sqlite3.Xsqlite3_finalize(s.c.tls, s.p)
	if s.buf != 0 {
		libc.Xfree(s.c.tls, s.buf)
		s.buf = 0
	}
}

func (s *stmt) check(rc int32) {
	if rc != sqlite3.SQLITE_OK && s.err == nil {
		s.err = s.c.error(rc)
	}
}

func (s *stmt) bindInt(i int, v int64) {
	s.check(sqlite3.Xsqlite3_bind_int64(s.c.tls, s.p, int32(i), v))
}

func (s *stmt) bindNull(i int) {
	s.check(sqlite3.Xsqlite3_bind_null(s.c.tls, s.p, int32(i)))
}

func (s *stmt) bindText(i int, v string) {
	s.bindBytes(i, unsafe.StringData(v), len(v), false)
}

func (s *stmt) bindBlob(i int, v []byte) {
	s.bindBytes(i, unsafe.SliceData(v), len(v), true)
}

// bindOptional binds "" as NULL.
func (s *stmt) bindOptional(i int, v string) {
	if v == "" {
		s.bindNull(i)
	} else {
		s.bindText(i, v)
	}
}

// bindBytes binds the n bytes at p as a blob or as text. They are copied
// to C memory: to the statement's buffer, where they stay until the
// statement is reset, or, when the buffer is full, to memory freed once
// SQLite has made its own copy.
func (s *stmt) bindBytes(i int, p *byte, n int, blob bool) {
	if s.buf == 0 {
		if s.buf = libc.Xmalloc(s.c.tls, types.Size_t(stmtBuffer)); s.buf == 0 {
			s.check(sqlite3.SQLITE_NOMEM)
			return
		}
	}
	dst, destructor := s.buf+uintptr(s.used), uintptr(sqlite3.SQLITE_STATIC)
	if s.used+n <= stmtBuffer {
		s.used += n
	} else {
		if dst = libc.Xmalloc(s.c.tls, types.Size_t(n)); dst == 0 {
			s.check(sqlite3.SQLITE_NOMEM)
			return
		}
		defer libc.Xfree(s.c.tls, dst)
		destructor = sqlite3.SQLITE_TRANSIENT
	}
	if n > 0 {
		copy(unsafe.Slice((*byte)(cMemory(dst)), n), unsafe.Slice(p, n))
	}
	if blob {
		s.check(sqlite3.Xsqlite3_bind_blob(s.c.tls, s.p, int32(i), dst, int32(n), destructor))
	} else {
		s.check(sqlite3.Xsqlite3_bind_text(s.c.tls, s.p, int32(i), dst, int32(n), destructor))
	}
}

// reset makes the statement ready to be bound and run again.
func (s *stmt) reset() {
	sqlite3.Xsqlite3_reset(s.c.tls, s.p)
	s.used = 0
	s.err = nil
}

// exec runs the statement, which must return no rows, and returns how many
// rows it inserted, changed or deleted.
func (s *stmt) exec() (int64, error) {
	defer s.reset()
	if s.err != nil {
		return 0, s.err
	}
	switch rc := sqlite3.Xsqlite3_step(s.c.tls, s.p); rc {
	case sqlite3.SQLITE_DONE:
		return sqlite3.Xsqlite3_changes64(s.c.tls, s.c.db), nil
	case sqlite3.SQLITE_ROW:
		return 0, errors.New("statement returned rows")
	default:
		return 0, s.c.error(rc)
	}
}

// step moves to the next row of the statement's result and reports
// whether there is one. Call reset to stop reading before the end.
func (s *stmt) step() (bool, error) {
	if s.err != nil {
		err := s.err
		s.reset()
		return false, err
	}
	switch rc := sqlite3.Xsqlite3_step(s.c.tls, s.p); rc {
	case sqlite3.SQLITE_ROW:
		return true, nil
	case sqlite3.SQLITE_DONE:
		s.reset()
		return false, nil
	default:
		err := s.c.error(rc)
		s.reset()
		return false, err
	}
}

// The column methods read column i (numbered from 0) of the current row.

func (s *stmt) columnInt(i int) int64 {
	return sqlite3.Xsqlite3_column_int64(s.c.tls, s.p, int32(i))
}

// columnText returns the column as a string, "" for NULL.
func (s *stmt) columnText(i int) string {
	p := sqlite3.Xsqlite3_column_text(s.c.tls, s.p, int32(i))
	n := sqlite3.Xsqlite3_column_bytes(s.c.tls, s.p, int32(i))
	if p == 0 || n == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(cMemory(p)), n))
}

// cMemory returns a pointer to p, an address in the C memory that
// modernc.org/libc allocates outside Go's heap.
func cMemory(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }
