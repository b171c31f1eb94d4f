package text

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestField(t *testing.T) {
	for in, want := range map[string]string{
		"GET /items/{id}":         "GET /items/{id}",
		"Mozilla\tX":              "Mozilla\uFFFDX",
		"/a\x01b":                 "/a\uFFFDb",
		"caf\xe9":                 "caf\uFFFD",
		"a\u0085b":                "a\uFFFDb", // C1
		strings.Repeat("é", 600):  strings.Repeat("é", 512),
		strings.Repeat("x", 1025): strings.Repeat("x", 1024),
	} {
		if got := Field(in); got != want {
			t.Errorf("Field(%.20q) = %.20q (%d bytes); want %.20q (%d bytes)", in, got, len(got), want, len(want))
		}
	}
	if got := Attribute("line 1\nline 2\t\r\x00"); got != "line 1\nline 2\t\r\uFFFD" {
		t.Errorf("Attribute kept %q", got)
	}
}

func FuzzClean(f *testing.F) {
	f.Add("GET /\x01", true)
	f.Fuzz(func(t *testing.T, s string, attribute bool) {
		got, limit := Field(s), MaxField
		if attribute {
			got, limit = Attribute(s), MaxAttribute
		}
		if !utf8.ValidString(got) || len(got) > limit {
			t.Fatalf("%q: invalid or too long", got)
		}
		for _, r := range got {
			if unicode.IsControl(r) && !(attribute && (r == '\t' || r == '\n' || r == '\r')) {
				t.Fatalf("%q holds control character %U", got, r)
			}
		}
		if utf8.ValidString(s) && len(s) <= limit && got != s && !strings.ContainsFunc(s, unicode.IsControl) {
			t.Fatalf("a clean %q was changed to %q", s, got)
		}
	})
}
