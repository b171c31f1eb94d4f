package index

import (
	"context"
	"errors"
	"testing"
)

// FuzzText checks that no text, however hostile, makes a query fail: user
// input must never reach FTS5 as syntax.
func FuzzText(f *testing.F) {
	for _, s := range []string{`"`, `*`, `AND OR NOT`, `(`, `NEAR(a b, 2)`, `text:x`, `^a`, `-a`, `a"*`, "\x00", `'`, `\`, `%_`, "\xff"} {
		f.Add(s)
	}
	ix, _ := fixtureIndex(f, Options{FullText: true})
	f.Fuzz(func(t *testing.T, text string) {
		if _, err := ix.Query(context.Background(), Query{Text: text}); err != nil {
			t.Fatalf("Query(Text: %q): %v", text, err)
		}
	})
}

// FuzzCursor checks that any cursor a client sends is either one the index
// issued for this query or rejected as an invalid query.
func FuzzCursor(f *testing.F) {
	ix, _ := fixtureIndex(f, Options{})
	p, err := ix.Query(context.Background(), Query{Limit: 1})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{p.NextCursor, "", "AA", "!!", p.NextCursor + "A", p.NextCursor[1:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		_, err := ix.Query(context.Background(), Query{Limit: 1, Cursor: cursor})
		if err != nil && !errors.Is(err, ErrInvalidQuery) {
			t.Fatalf("cursor %q: %v", cursor, err)
		}
		if err == nil && cursor != "" && cursor != p.NextCursor {
			t.Fatalf("forged cursor %q accepted", cursor)
		}
	})
}
