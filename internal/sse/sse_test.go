package sse

import (
	"slices"
	"testing"
)

// TestPieces checks that events come out the same however the stream is
// cut into pieces, with CRLF or LF line ends.
func TestPieces(t *testing.T) {
	stream := ": comment\r\nevent: a\r\ndata: {\"x\":1}\r\n\r\ndata: two\ndata: lines\n\nevent: ignored-without-data\n\ndata:no-space\n\n"
	want := []string{`a {"x":1}`, " two\nlines", " no-space"}
	for size := 1; size <= len(stream); size++ {
		var got []string
		p := &Parser{Emit: func(name string, data []byte) { got = append(got, name+" "+string(data)) }}
		for s := stream; s != ""; {
			n := min(size, len(s))
			p.Write([]byte(s[:n]))
			s = s[n:]
		}
		if !slices.Equal(got, want) {
			t.Fatalf("pieces of %d: got %q, want %q", size, got, want)
		}
	}
}
