package event

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// scanner checks that a JSON text is well formed and within limits without
// building any value. Decode runs it before encoding/json sees the input,
// because encoding/json would accept what aitrail must refuse: it silently
// replaces invalid UTF-8 and unpaired surrogates with U+FFFD and keeps the
// last of duplicate object keys, so two readers of the same audit event
// could disagree about it. The scanner also refuses hostile nesting after
// reading at most MaxDepth levels, and it knows the path of what it is
// reading, so its errors name the field.
type scanner struct {
	data     []byte
	pos      int    // next byte to read
	base     int    // offset of data[0] in the text reported to the user
	where    string // appended to byte offsets in messages, e.g. " of the content"
	maxDepth int
	index    int    // event position for problems, -1 outside any event
	root     string // path of the scanned value relative to its event, e.g. ".content"
	path     []pathSeg
}

// pathSeg is one step of the path to the value being scanned.
type pathSeg struct {
	key   string
	index int // array index, or -1 when key applies
}

// scanError is the first problem a scanner found.
type scanError struct {
	index int
	field string
	msg   string
}

func (e *scanError) Error() string { return e.field + ": " + e.msg }

// problem converts the error to a Problem on the given NDJSON line.
func (e *scanError) problem(line int) Problem {
	return Problem{Index: e.index, Line: line, Field: e.field, Message: e.msg}
}

func (s *scanner) fieldPath() string {
	if s.index < 0 && len(s.path) == 0 {
		return ""
	}
	var b strings.Builder
	path := s.path
	if s.index >= 0 {
		b.WriteString(eventPath(s.index))
		b.WriteString(s.root)
		// Within content the path stops at .content: its member names
		// are content (a key may be a patient's name), and the byte
		// offset in the message says where.
		if strings.HasPrefix(s.root, ".content") {
			return b.String()
		}
		if len(path) > 0 && path[0].index < 0 && path[0].key == "content" {
			return b.String() + ".content"
		}
	}
	// Beyond a dozen levels the middle of a path says nothing useful.
	const keep = 5
	for i, p := range path {
		if len(path) > 2*keep+2 && i >= keep && i < len(path)-keep {
			if i == keep {
				b.WriteString("…")
			}
			continue
		}
		if p.index >= 0 {
			b.WriteString("[" + strconv.Itoa(p.index) + "]")
		} else {
			b.WriteString(keySegment(p.key))
		}
	}
	return b.String()
}

// fail reports a problem at the current position.
func (s *scanner) fail(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &scanError{index: s.index, field: s.fieldPath(),
		msg: fmt.Sprintf("%s (at byte %d%s)", msg, s.base+s.pos, s.where)}
}

// unexpected reports the byte at the current position, or the end of input.
func (s *scanner) unexpected(expected string) error {
	if s.pos >= len(s.data) {
		return s.fail("invalid JSON: unexpected end of input, expected %s", expected)
	}
	c := s.data[s.pos]
	switch {
	case c >= utf8.RuneSelf:
		r, size := utf8.DecodeRune(s.data[s.pos:])
		if r == utf8.RuneError && size == 1 {
			return s.fail("invalid UTF-8 byte 0x%02x, expected %s", c, expected)
		}
		return s.fail("invalid JSON: unexpected character %U, expected %s", r, expected)
	case c < 0x20 || c == 0x7f:
		return s.fail("invalid JSON: unexpected control character 0x%02x, expected %s", c, expected)
	default:
		return s.fail("invalid JSON: unexpected character %q, expected %s", rune(c), expected)
	}
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// atEnd reports whether only whitespace is left.
func (s *scanner) atEnd() bool {
	s.skipSpace()
	return s.pos == len(s.data)
}

// value scans one JSON value nested inside depth levels of containers.
func (s *scanner) value(depth int) error {
	s.skipSpace()
	if s.pos >= len(s.data) {
		return s.unexpected("a value")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth + 1)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, err := s.str(false)
		return err
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.unexpected("a value")
	}
}

func (s *scanner) tooDeep() error {
	return s.fail("nesting deeper than %d levels", s.maxDepth)
}

func (s *scanner) object(depth int) error {
	if depth > s.maxDepth {
		return s.tooDeep()
	}
	s.pos++ // '{'
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	n := len(s.path)
	// Most objects are small: remember the first key in a string and only
	// build a set once there is a second.
	var first string
	var seen map[string]struct{}
	for count := 0; ; count++ {
		s.path = s.path[:n]
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.unexpected("a string key")
		}
		key, err := s.str(true)
		if err != nil {
			return err
		}
		s.path = append(s.path, pathSeg{key: key, index: -1})
		switch count {
		case 0:
			first = key
		case 1:
			seen = map[string]struct{}{first: {}}
			fallthrough
		default:
			if _, dup := seen[key]; dup {
				return s.fail("duplicate key")
			}
			seen[key] = struct{}{}
		}
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.unexpected("':'")
		}
		s.pos++
		if err := s.value(depth); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos < len(s.data) {
			switch s.data[s.pos] {
			case ',':
				s.pos++
				continue
			case '}':
				s.pos++
				s.path = s.path[:n]
				return nil
			}
		}
		return s.unexpected("',' or '}'")
	}
}

func (s *scanner) array(depth int) error {
	if depth > s.maxDepth {
		return s.tooDeep()
	}
	s.pos++ // '['
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	n := len(s.path)
	s.path = append(s.path, pathSeg{})
	for i := 0; ; i++ {
		s.path[n].index = i
		if err := s.value(depth); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos < len(s.data) {
			switch s.data[s.pos] {
			case ',':
				s.pos++
				continue
			case ']':
				s.pos++
				s.path = s.path[:n]
				return nil
			}
		}
		return s.unexpected("',' or ']'")
	}
}

// str scans a string starting at its opening quote. With decode set it
// returns the string's value.
func (s *scanner) str(decode bool) (string, error) {
	open := s.pos
	s.pos++
	escaped := false
	for {
		if s.pos >= len(s.data) {
			return "", s.fail("invalid JSON: unterminated string")
		}
		switch c := s.data[s.pos]; {
		case c == '"':
			s.pos++
			if !decode {
				return "", nil
			}
			if !escaped {
				return string(s.data[open+1 : s.pos-1]), nil
			}
			// The string is known to be valid, so encoding/json decodes
			// it faithfully.
			var v string
			if err := json.Unmarshal(s.data[open:s.pos], &v); err != nil {
				return "", s.fail("invalid JSON string")
			}
			return v, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return "", err
			}
		case c < 0x20:
			return "", s.fail("invalid JSON: control character 0x%02x must be escaped in a string", c)
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size == 1 {
				return "", s.fail("invalid UTF-8 in string")
			}
			s.pos += size
		}
	}
}

// escape scans one escape sequence starting at its backslash. Escaped
// UTF-16 surrogates must come in high-low pairs.
func (s *scanner) escape() error {
	if s.pos+1 >= len(s.data) {
		return s.fail("invalid JSON: unterminated string")
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
	default:
		return s.fail("invalid JSON: invalid escape sequence in string")
	}
	r, ok := hex4(s.data[s.pos+2:])
	if !ok {
		return s.fail("invalid JSON: \\u must be followed by 4 hexadecimal digits")
	}
	switch {
	case r < 0xd800 || r > 0xdfff:
		s.pos += 6
		return nil
	case r >= 0xdc00:
		return s.fail("invalid JSON: unpaired UTF-16 surrogate \\u%04x in string", r)
	}
	if escapeLen(s.data[s.pos:]) == 12 { // followed by a low surrogate
		s.pos += 12
		return nil
	}
	return s.fail("invalid JSON: unpaired UTF-16 surrogate \\u%04x in string", r)
}

// number scans a number with the grammar of RFC 8259.
func (s *scanner) number() error {
	n, ok := scanNumber(s.data[s.pos:])
	s.pos += n
	if !ok {
		return s.fail("invalid JSON: invalid number")
	}
	if s.pos < len(s.data) && '0' <= s.data[s.pos] && s.data[s.pos] <= '9' {
		return s.fail("invalid JSON: numbers must not have leading zeros")
	}
	return nil
}

func (s *scanner) literal(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return s.unexpected("a value")
	}
	s.pos += len(lit)
	return nil
}

// isJSONNumber reports whether n is a number with the grammar of RFC 8259.
func isJSONNumber(n string) bool {
	if n == "" {
		return false
	}
	s := scanner{data: []byte(n), index: -1}
	return s.number() == nil && s.pos == len(n)
}
