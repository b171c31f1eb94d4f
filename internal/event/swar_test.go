package event

import (
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzScanners pins the word-at-a-time loops to the plain byte rules.
func FuzzScanners(f *testing.F) {
	for _, s := range []string{"", "plain text of some length", "tab\there", "quote\"in the middle of it", "back\\slash slash",
		"del\x7f and more text", "ünïcödé text here", "\u0085next line", "\x00\x01\x02\x03\x04\x05\x06\x07\x08"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The plain prefix is exact, up to the last bytes it leaves.
		isPlainByte := func(c byte) bool { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' }
		for i := range min(len(s), 9) {
			n, nb := plainASCII(s, i), plainBytes([]byte(s), i)
			if n != nb {
				t.Fatalf("plainASCII(%q, %d) = %d, plainBytes %d", s, i, n, nb)
			}
			for j := i; j < i+n; j++ {
				if !isPlainByte(s[j]) {
					t.Fatalf("plainASCII(%q, %d) = %d passes %q", s, i, n, s[j])
				}
			}
			if i+n+8 <= len(s) && isPlainByte(s[i+n]) {
				t.Fatalf("plainASCII(%q, %d) = %d stops before plain %q", s, i, n, s[i+n])
			}
		}
		if !utf8.ValidString(s) {
			return
		}
		for _, ws := range []bool{false, true} {
			want := false
			for _, r := range s {
				if unicode.IsControl(r) && !(ws && (r == '\t' || r == '\n' || r == '\r')) {
					want = true
				}
			}
			if got := hasControl(s, ws); got != want {
				t.Fatalf("hasControl(%q, %v) = %v", s, ws, got)
			}
		}
		got, _ := appendString(nil, s)
		var want []byte
		want = append(want, '"')
		for i := 0; i < len(s); i++ {
			switch c := s[i]; {
			case c == '"' || c == '\\':
				want = append(want, '\\', c)
			case c == '\b':
				want = append(want, `\b`...)
			case c == '\f':
				want = append(want, `\f`...)
			case c == '\n':
				want = append(want, `\n`...)
			case c == '\r':
				want = append(want, `\r`...)
			case c == '\t':
				want = append(want, `\t`...)
			case c < 0x20:
				want = append(want, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				want = append(want, c)
			}
		}
		want = append(want, '"')
		if string(got) != string(want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}
