package main

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyChecksTheQueryIndex: verify --data says whether the query
// index is intact, and fails, saying that the log itself verified and how
// to rebuild the index, when rows are missing from it; reindex repairs it.
func TestVerifyChecksTheQueryIndex(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, data)
	postN(s, "ix", 300)
	s.waitIndexed()
	s.stop()
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 || !strings.Contains(out, "Query index: intact, every record indexed") {
		t.Fatalf("verify of an intact data directory: %d %q %s", code, out, errOut)
	}

	db, err := sql.Open("sqlite", filepath.Join(data, indexFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DELETE FROM records WHERE idx BETWEEN 10 AND 19"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	code, out, errOut := runCLI("verify", "--data", data)
	if code != 1 || !strings.Contains(errOut, "query index is damaged") || !strings.Contains(errOut, "the log itself verified") ||
		!strings.Contains(errOut, "aitrail reindex --data") {
		t.Fatalf("verify with rows missing from the index: %d %q %q; want exit 1 saying so", code, out, errOut)
	}
	if code, out, errOut := runCLI("reindex", "--data", data); code != 0 {
		t.Fatalf("reindex: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runCLI("verify", "--data", data); code != 0 || !strings.Contains(out, "Query index: intact") {
		t.Fatalf("verify after reindex: %d %q %s", code, out, errOut)
	}
}
