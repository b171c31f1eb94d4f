package event

import (
	"bytes"
	"encoding/binary"
	stdjson "encoding/json"
	"errors"
	"sync"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// errNotEvent is what decodeEvent reports for input it does not take; the
// precise decoder then says what is wrong.
var errNotEvent = errors.New("not a well-formed event")

// eventDecoder reads events in place, with the short strings it has made:
// events repeat their tenants, types, actors, models and attribute names,
// and a string made once is shared.
type eventDecoder struct {
	jsonReader
	strings *[internSlots]string
}

// The strings an eventDecoder keeps are in a table of internSlots, each
// string in the slot a hash of its bytes picks, the last one made there;
// strings longer than maxInternSize are not kept. A map had cost more to
// look up than making the strings again.
const (
	internSlots   = 4096
	maxInternSize = 64
)

// str returns b as a string, the same one as before when it has seen b
// (and not made another string in its slot since).
func (ed *eventDecoder) str(b []byte) string {
	if len(b) > maxInternSize {
		return string(b)
	}
	if ed.strings == nil {
		ed.strings = new([internSlots]string)
	}
	slot := &ed.strings[internHash(b)%internSlots]
	if *slot == string(b) {
		return *slot
	}
	*slot = string(b)
	return *slot
}

// internHash mixes b's length and its first and last eight bytes (or all
// of it when shorter): what tells apart the strings events repeat, such as
// actor ids that differ in their last digits.
func internHash(b []byte) uint64 {
	h := uint64(len(b))
	if len(b) >= 8 {
		h ^= binary.LittleEndian.Uint64(b) ^ binary.LittleEndian.Uint64(b[len(b)-8:])*0x9e3779b97f4a7c15
	} else {
		for _, c := range b {
			h = h<<8 | uint64(c)
		}
	}
	h *= 0xff51afd7ed558ccd
	return h ^ h>>29
}

var eventDecoders = sync.Pool{New: func() any { return new(eventDecoder) }}

// decodeEvent decodes one event object field by field, as
// jsonv2.Unmarshal(raw, e, fastOptions) does but without reflection or a
// token reader: member names match exactly, unknown members, duplicate
// names, invalid UTF-8 and trailing data are refused, null leaves a field
// unset, an empty object still sets a pointer field, and attribute numbers
// stay json.Number. Containers may nest at most maxDepth levels, the event
// itself being the first. FuzzDecodeEvent checks that the two agree.
func decodeEvent(raw []byte, e *Event, maxDepth int) error {
	ed := eventDecoders.Get().(*eventDecoder)
	ed.jsonReader = jsonReader{data: raw, maxDepth: maxDepth}
	defer func() {
		ed.jsonReader = jsonReader{} // not to keep raw alive in the pool
		eventDecoders.Put(ed)
	}()
	if ed.peek() == 'n' { // null sets nothing, as for any field
		if !ed.literal("null") || !ed.atEnd() {
			return errNotEvent
		}
		return nil
	}
	var seen uint32 // the members read, to refuse duplicates
	err := ed.object(1, func(name []byte) error {
		var bit uint32
		var err error
		switch string(name) {
		case "id":
			bit, err = 1<<0, ed.readUnique(&e.ID)
		case "type":
			bit, err = 1<<1, ed.readString(&e.Type)
		case "time":
			bit, err = 1<<2, ed.readUnique(&e.Time)
		case "tenant":
			bit, err = 1<<3, ed.readString(&e.Tenant)
		case "action":
			bit, err = 1<<4, ed.readString(&e.Action)
		case "outcome":
			bit, err = 1<<5, ed.readString(&e.Outcome)
		case "trace_id":
			bit, err = 1<<6, ed.readUnique(&e.TraceID)
		case "span_id":
			bit, err = 1<<7, ed.readUnique(&e.SpanID)
		case "actor":
			bit, err = 1<<8, readStruct(ed, &e.Actor, func(a *Actor, name []byte) *string {
				switch string(name) {
				case "id":
					return &a.ID
				case "type":
					return &a.Type
				case "ip":
					return &a.IP
				case "user_agent":
					return &a.UserAgent
				case "session_id":
					return &a.SessionID
				}
				return nil
			})
		case "resource":
			bit, err = 1<<9, readStruct(ed, &e.Resource, func(r *Resource, name []byte) *string {
				switch string(name) {
				case "type":
					return &r.Type
				case "id":
					return &r.ID
				case "name":
					return &r.Name
				}
				return nil
			})
		case "model":
			bit, err = 1<<10, readStruct(ed, &e.Model, func(m *Model, name []byte) *string {
				switch string(name) {
				case "provider":
					return &m.Provider
				case "name":
					return &m.Name
				case "version":
					return &m.Version
				case "digest":
					return &m.Digest
				}
				return nil
			})
		case "dataset":
			bit, err = 1<<11, readStruct(ed, &e.Dataset, func(s *Dataset, name []byte) *string {
				switch string(name) {
				case "name":
					return &s.Name
				case "version":
					return &s.Version
				case "digest":
					return &s.Digest
				}
				return nil
			})
		case "api":
			bit, err = 1<<12, readStruct(ed, &e.API, func(a *API, name []byte) *string {
				switch string(name) {
				case "name":
					return &a.Name
				case "version":
					return &a.Version
				}
				return nil
			})
		case "prompt":
			bit, err = 1<<13, readStruct(ed, &e.Prompt, func(p *Prompt, name []byte) *string {
				switch string(name) {
				case "id":
					return &p.ID
				case "version":
					return &p.Version
				case "digest":
					return &p.Digest
				}
				return nil
			})
		case "attributes":
			bit, err = 1<<14, ed.readAttributes(&e.Attributes, &e.plain)
		case "content":
			bit = 1 << 15
			var v []byte
			if v, err = ed.value(2); err == nil && string(v) != "null" {
				e.Content = stdjson.RawMessage(v) // the caller keeps raw (see Decode)
				e.checked = e.Content
			}
		default:
			return errNotEvent
		}
		if seen&bit != 0 {
			return errNotEvent
		}
		seen |= bit
		return err
	})
	if err != nil || !ed.atEnd() {
		return errNotEvent
	}
	return nil
}

// readString reads a string into s; null leaves s as it is.
func (ed *eventDecoder) readString(s *string) error { return ed.readText(s, true) }

// readUnique is readString for a value that differs from event to event
// (an id, a time): keeping it would only crowd out the strings that repeat.
func (ed *eventDecoder) readUnique(s *string) error { return ed.readText(s, false) }

func (ed *eventDecoder) readText(s *string, intern bool) error {
	switch ed.peek() {
	case 'n':
		if !ed.literal("null") {
			return errNotEvent
		}
		return nil
	case '"':
	default:
		return errNotEvent
	}
	v, _, ok := ed.text()
	if !ok {
		return errNotEvent
	}
	if intern {
		*s = ed.str(v)
	} else {
		*s = string(v)
	}
	return nil
}

// readStruct reads an object of string fields into a new T at *p; null
// leaves *p nil. field returns the field a member name sets, or nil.
func readStruct[T any](ed *eventDecoder, p **T, field func(v *T, name []byte) *string) error {
	if ed.peek() == 'n' {
		if !ed.literal("null") {
			return errNotEvent
		}
		return nil
	}
	v := new(T)
	var seen [8]*string // no struct has more fields
	n := 0
	if err := ed.object(2, func(name []byte) error {
		f := field(v, name)
		if f == nil {
			return errNotEvent
		}
		for _, g := range seen[:n] {
			if g == f {
				return errNotEvent // duplicate
			}
		}
		seen[n] = f
		n++
		return ed.readString(f)
	}); err != nil {
		return err
	}
	*p = v
	return nil
}

// readAttributes reads the attributes object: scalars directly, numbers as
// json.Number, anything nested as encoding/json/v2 decodes it with
// fastOptions (Normalize refuses it later); null leaves *m nil. It notes
// the long strings it finds plain in plain.
func (ed *eventDecoder) readAttributes(m *map[string]any, plain *plainTexts) error {
	if ed.peek() == 'n' {
		if !ed.literal("null") {
			return errNotEvent
		}
		return nil
	}
	out := map[string]any{}
	if err := ed.object(2, func(name []byte) error {
		key := ed.str(name) // name is valid only until the next read
		if _, dup := out[key]; dup {
			return errNotEvent
		}
		var v any
		switch c := ed.peek(); {
		case c == '"':
			text, isPlain, ok := ed.text()
			if !ok {
				return errNotEvent
			}
			s := ed.str(text)
			if isPlain {
				plain.note(s)
			}
			v = s
		case c == '-' || '0' <= c && c <= '9':
			raw, ok := ed.number()
			if !ok {
				return errNotEvent
			}
			v = stdjson.Number(raw)
		case c == 't':
			if !ed.literal("true") {
				return errNotEvent
			}
			v = true
		case c == 'f':
			if !ed.literal("false") {
				return errNotEvent
			}
			v = false
		case c == 'n':
			if !ed.literal("null") {
				return errNotEvent
			}
		default:
			raw, err := ed.value(3)
			if err != nil {
				return err
			}
			var nested any // apart from v, which would then be allocated for every member
			if err := jsonv2.Unmarshal(raw, &nested, fastOptions); err != nil {
				return errNotEvent
			}
			v = nested
		}
		out[key] = v
		return nil
	}); err != nil {
		return err
	}
	*m = out
	return nil
}

// jsonReader reads JSON text in place. It takes what jsontext takes by
// default (RFC 8259 syntax, valid UTF-8, escaped UTF-16 surrogates in
// pairs, no duplicate member names within an object) and containers
// nested at most maxDepth levels, and it only reports that something is
// wrong: the precise decoder names the problem.
type jsonReader struct {
	data     []byte
	pos      int // next byte to read
	maxDepth int
}

// peek skips whitespace and returns the next byte, or 0 at the end.
func (r *jsonReader) peek() byte {
	for r.pos < len(r.data) {
		switch c := r.data[r.pos]; c {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return c
		}
	}
	return 0
}

// atEnd reports whether only whitespace is left.
func (r *jsonReader) atEnd() bool { return r.peek() == 0 && r.pos == len(r.data) }

// literal reads lit (true, false or null) at r.pos.
func (r *jsonReader) literal(lit string) bool {
	if !bytes.HasPrefix(r.data[r.pos:], []byte(lit)) {
		return false
	}
	r.pos += len(lit)
	return true
}

// object reads an object at r.pos, at depth levels of nesting, calling
// member for each name with the reader at the member's value; the name is
// valid only until member reads on. The caller refuses duplicate names.
func (r *jsonReader) object(depth int, member func(name []byte) error) error {
	if depth > r.maxDepth || r.peek() != '{' {
		return errNotEvent
	}
	r.pos++
	if r.peek() == '}' {
		r.pos++
		return nil
	}
	for {
		if r.peek() != '"' {
			return errNotEvent
		}
		name, _, ok := r.text()
		if !ok || r.peek() != ':' {
			return errNotEvent
		}
		r.pos++
		if err := member(name); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.pos++
		case '}':
			r.pos++
			return nil
		default:
			return errNotEvent
		}
	}
}

// text reads a string at r.pos (its opening quote) and returns its value
// (the bytes between the quotes when it has no escapes, else a new slice)
// and whether it is plain (see plainTexts).
func (r *jsonReader) text() (v []byte, plain, ok bool) {
	raw, escaped, plain, ok := r.rawString()
	if !ok || !escaped {
		return raw, plain, ok
	}
	v, err := jsontext.AppendUnquote(nil, r.data[r.pos-len(raw)-2:r.pos])
	return v, false, err == nil
}

// rawString reads a string at r.pos (its opening quote) and returns the
// bytes between its quotes, whether they hold escapes, and whether they
// are plain (see plainTexts).
func (r *jsonReader) rawString() (raw []byte, escaped, plain, ok bool) {
	start := r.pos + 1
	plain = true
	for i := start; i < len(r.data); {
		i += plainBytes(r.data, i)
		if i >= len(r.data) {
			break
		}
		switch c := r.data[i]; {
		case c == '"':
			r.pos = i + 1
			return r.data[start:i], escaped, plain && !escaped, true
		case c == '\\':
			n := escapeLen(r.data[i:])
			if n == 0 {
				return nil, false, false, false
			}
			escaped = true
			i += n
		case c < 0x20:
			return nil, false, false, false
		case c < utf8.RuneSelf:
			plain = plain && c != 0x7f
			i++
		default:
			rn, size := utf8.DecodeRune(r.data[i:])
			if rn == utf8.RuneError && size == 1 {
				return nil, false, false, false
			}
			plain = false
			i += size
		}
	}
	return nil, false, false, false
}

// escapeLen returns the length of the escape sequence b starts with (at
// its backslash), or 0 if it is not a valid one. Escaped UTF-16
// surrogates must come in high-low pairs.
func escapeLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
	default:
		return 0
	}
	r, ok := hex4(b[2:])
	switch {
	case !ok:
		return 0
	case r < 0xd800 || r > 0xdfff:
		return 6
	case r >= 0xdc00:
		return 0 // a low surrogate first
	}
	if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
		if lo, ok := hex4(b[8:]); ok && 0xdc00 <= lo && lo <= 0xdfff {
			return 12
		}
	}
	return 0
}

// hex4 decodes the four hexadecimal digits b starts with.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a number with the grammar of RFC 8259 at r.pos.
func (r *jsonReader) number() ([]byte, bool) {
	n, ok := scanNumber(r.data[r.pos:])
	r.pos += n
	return r.data[r.pos-n : r.pos], ok
}

// scanNumber reads the number b starts with, with the grammar of RFC 8259,
// and returns its length; or, when b does not start with one, how far it
// read before that was clear.
func scanNumber(b []byte) (int, bool) {
	i := 0
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return i, false
		}
	}
	return i, true
}

// value reads any value at r.pos, whose containers start at depth levels
// of nesting, and returns its text.
func (r *jsonReader) value(depth int) ([]byte, error) {
	c := r.peek()
	start := r.pos
	var ok bool
	switch {
	case c == '{':
		ok = r.anyObject(depth)
	case c == '[':
		ok = r.anyArray(depth)
	case c == '"':
		_, _, _, ok = r.rawString()
	case c == '-' || '0' <= c && c <= '9':
		_, ok = r.number()
	case c == 't':
		ok = r.literal("true")
	case c == 'f':
		ok = r.literal("false")
	case c == 'n':
		ok = r.literal("null")
	}
	if !ok {
		return nil, errNotEvent
	}
	return r.data[start:r.pos], nil
}

// maxSmallObject is how many member names anyObject compares one by one
// before it keeps them in a set.
const maxSmallObject = 16

// anyObject reads an object of any members, refusing duplicate names.
func (r *jsonReader) anyObject(depth int) bool {
	var small [maxSmallObject][]byte
	var names [][]byte
	var set map[string]struct{}
	err := r.object(depth, func(name []byte) error {
		switch {
		case set != nil:
			if _, dup := set[string(name)]; dup {
				return errNotEvent
			}
			set[string(name)] = struct{}{}
		case len(names) < maxSmallObject:
			for _, n := range names {
				if bytes.Equal(n, name) {
					return errNotEvent
				}
			}
			if names == nil {
				names = small[:0]
			}
			names = append(names, name) // name stays valid: it is in r.data or a new slice
		default:
			set = make(map[string]struct{}, 2*maxSmallObject)
			for _, n := range names {
				set[string(n)] = struct{}{}
			}
			if _, dup := set[string(name)]; dup {
				return errNotEvent
			}
			set[string(name)] = struct{}{}
		}
		_, err := r.value(depth + 1)
		return err
	})
	return err == nil
}

// anyArray reads an array of any values.
func (r *jsonReader) anyArray(depth int) bool {
	if depth > r.maxDepth {
		return false
	}
	r.pos++ // '['
	if r.peek() == ']' {
		r.pos++
		return true
	}
	for {
		if _, err := r.value(depth + 1); err != nil {
			return false
		}
		switch r.peek() {
		case ',':
			r.pos++
		case ']':
			r.pos++
			return true
		default:
			return false
		}
	}
}
