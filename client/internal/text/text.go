// Package text makes strings the SDK takes from requests and answers it
// does not control acceptable to the server as event fields, so that an
// event is recorded with a cleaned value rather than refused whole.
package text

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// The server's limits on event strings (api.md, "Event fields").
const (
	// MaxField bounds a field such as action or actor.user_agent.
	MaxField = 1024
	// MaxAttribute bounds an attribute's string value.
	MaxAttribute = 4096
)

// Field returns s as a field may hold it: valid UTF-8, control characters
// (tab included) replaced by U+FFFD, cut to at most MaxField bytes on a
// character boundary.
func Field(s string) string { return clean(s, MaxField, false) }

// Attribute is Field for attribute values, which may hold tabs, newlines
// and carriage returns and MaxAttribute bytes.
func Attribute(s string) string { return clean(s, MaxAttribute, true) }

func clean(s string, limit int, whitespace bool) string {
	bad := func(r rune) bool {
		return unicode.IsControl(r) && !(whitespace && (r == '\t' || r == '\n' || r == '\r'))
	}
	if utf8.ValidString(s) && !strings.ContainsFunc(s, bad) && len(s) <= limit {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if bad(r) {
			return '\uFFFD'
		}
		return r
	}, s)
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
