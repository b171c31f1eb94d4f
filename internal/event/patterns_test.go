package event

import (
	"regexp"
	"testing"
)

// FuzzPatterns pins the byte-wise checks to the documented expressions.
func FuzzPatterns(f *testing.F) {
	typ := regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	tenant := regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	attr := regexp.MustCompile(`^[A-Za-z0-9_./:-]+$`)
	for _, s := range []string{"", "a", "ai.inference", "a..b", ".a", "a.", "a_1.b_2", "1a", "a.1", "acme", "a-b_c", "-a", "_a",
		"gen_ai.usage.input_tokens", "http/route:x", "A", "é", "a b", string(make([]byte, 64))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if isEventType(s) != typ.MatchString(s) {
			t.Errorf("isEventType(%q) = %v", s, isEventType(s))
		}
		if IsTenant(s) != tenant.MatchString(s) {
			t.Errorf("isTenant(%q) = %v", s, IsTenant(s))
		}
		if isAttrKey(s) != attr.MatchString(s) {
			t.Errorf("isAttrKey(%q) = %v", s, isAttrKey(s))
		}
	})
}
