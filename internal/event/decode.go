package event

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Media types Decode accepts.
const (
	// MediaTypeJSON is a body holding one event object or {"events":[…]}.
	MediaTypeJSON = "application/json"
	// MediaTypeNDJSON is a body holding one event object per line.
	MediaTypeNDJSON = "application/x-ndjson"
)

// span locates one event's JSON object in a request body.
type span struct {
	start, end int
	index      int // position of the event in the request
	line       int // NDJSON line, 0 for application/json
}

// Decode parses a request body of the given media type into events,
// strictly. mediaType is the bare, already parsed media type (no
// parameters); the body is already decompressed.
//
// An application/json body holds one event object or an object whose only
// key is "events" and whose value is a non-empty array of event objects. An
// application/x-ndjson body holds one event object per line; lines of only
// whitespace are skipped, and a line may end in "\r\n".
//
// Decode refuses, naming the event position and field path of each problem:
// malformed JSON, trailing data, invalid UTF-8 or unpaired UTF-16 surrogate
// escapes anywhere (content included), duplicate object keys, nesting
// deeper than lim.MaxDepth within an event, unknown fields (matched
// case-sensitively), values of the wrong JSON type, an empty batch, and more
// than lim.MaxBatchEvents events (code CodeTooLarge). JSON null in place of
// any field means the field is absent. Nesting is checked while scanning,
// before anything is decoded, so a deeply nested body costs at most
// lim.MaxDepth levels of work.
//
// Decode checks structure only; the field rules of the contract are
// Normalize's. Attribute numbers are decoded as json.Number, and Content
// holds the content's JSON text as sent. The error is an *Error, or wraps
// ErrMediaType for a media type other than MediaTypeJSON and MediaTypeNDJSON.
// Neither the events nor the error refer to body's memory, except for the
// events' Content, which may: the caller may reuse the body once it is done
// with the content.
func Decode(body []byte, mediaType string, lim Limits) ([]Event, error) {
	lim = lim.orDefaults()
	if fastDecode {
		if events, ok := decodeAllFast(body, mediaType, lim); ok {
			return events, nil
		}
	}
	var spans []span
	var ps problems
	switch {
	case strings.EqualFold(mediaType, MediaTypeJSON):
		spans = splitJSON(body, lim, &ps)
	case strings.EqualFold(mediaType, MediaTypeNDJSON):
		spans = splitNDJSON(body, lim, &ps)
	default:
		return nil, fmt.Errorf("%w %q: send %s or %s", ErrMediaType, mediaType, MediaTypeJSON, MediaTypeNDJSON)
	}
	// Even when some NDJSON lines are bad, decode the others so that the
	// error lists every bad event.
	events := make([]Event, len(spans))
	for i, sp := range spans {
		raw := body[sp.start:sp.end]
		if decodeFast(raw, &events[i], lim.MaxDepth) == nil {
			continue
		}
		events[i] = Event{}
		d := structDecoder{index: sp.index, line: sp.line, ps: &ps}
		d.decode(raw, reflect.ValueOf(&events[i]).Elem(), eventPath(sp.index))
	}
	if !ps.empty() {
		slices.SortStableFunc(ps.list, func(a, b Problem) int { return cmp.Compare(a.Index, b.Index) })
		return nil, ps.err()
	}
	return events, nil
}

// splitJSON scans an application/json body and returns where its events are.
func splitJSON(body []byte, lim Limits, ps *problems) []span {
	s := &scanner{data: body, maxDepth: lim.MaxDepth, index: -1}
	bodyProblem := func(field, msg string) []span {
		ps.add(Problem{Index: -1, Field: field, Message: msg}, CodeInvalid)
		return nil
	}
	scanProblem := func(err error) []span {
		ps.add(err.(*scanError).problem(0), CodeInvalid)
		return nil
	}
	if s.atEnd() {
		return bodyProblem("", `body is empty: send one event object or {"events":[…]}`)
	}
	if s.data[s.pos] != '{' {
		return bodyProblem("", `body must be a JSON object: one event or {"events":[…]}`)
	}
	var spans []span
	if !s.batchAhead() {
		s.index = 0
		start := s.pos
		if err := s.value(0); err != nil {
			return scanProblem(err)
		}
		spans = append(spans, span{start: start, end: s.pos})
		s.index = -1
		if !s.atEnd() {
			return scanProblem(s.fail("trailing data after the event"))
		}
		return spans
	}

	// {"events":[…]}: batchAhead has checked `{"events":`, so skip it.
	s.pos++ // '{'
	s.skipSpace()
	_, _ = s.str(false)
	s.skipSpace()
	s.pos++ // ':'
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != '[' {
		if s.pos < len(s.data) && s.data[s.pos] == 'n' {
			return bodyProblem("events", "batch is empty: send at least one event")
		}
		return bodyProblem("events", "must be an array of event objects")
	}
	s.pos++
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		return bodyProblem("events", "batch is empty: send at least one event")
	}
	for i := 0; ; i++ {
		if i == lim.MaxBatchEvents {
			ps.add(Problem{Index: -1, Field: "events",
				Message: fmt.Sprintf("more than %d events in one request: split the batch", lim.MaxBatchEvents)}, CodeTooLarge)
			return nil
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return scanProblem(s.unexpected("an event object"))
		}
		if s.data[s.pos] != '{' {
			ps.add(Problem{Index: i, Field: eventPath(i), Message: "must be an event object, not " + jsonKind(s.data[s.pos])}, CodeInvalid)
			return nil
		}
		s.index = i
		start := s.pos
		if err := s.value(0); err != nil {
			return scanProblem(err)
		}
		spans = append(spans, span{start: start, end: s.pos, index: i})
		s.index = -1
		s.skipSpace()
		if s.pos < len(s.data) && s.data[s.pos] == ',' {
			s.pos++
			continue
		}
		if s.pos < len(s.data) && s.data[s.pos] == ']' {
			s.pos++
			break
		}
		return scanProblem(s.unexpected("',' or ']' after an event"))
	}
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ',' {
		return bodyProblem("", `a batch must be an object whose only key is "events"`)
	}
	if s.pos >= len(s.data) || s.data[s.pos] != '}' {
		return scanProblem(s.unexpected("'}'"))
	}
	s.pos++
	if !s.atEnd() {
		return scanProblem(s.fail("trailing data after the JSON value"))
	}
	return spans
}

// batchAhead reports whether the object at the current position starts
// with the key "events" followed by a colon. It does not move the scanner.
func (s *scanner) batchAhead() bool {
	t := scanner{data: s.data, pos: s.pos + 1, index: -1}
	t.skipSpace()
	if t.pos >= len(t.data) || t.data[t.pos] != '"' {
		return false
	}
	key, err := t.str(true)
	if err != nil || key != "events" {
		return false
	}
	t.skipSpace()
	return t.pos < len(t.data) && t.data[t.pos] == ':'
}

// splitNDJSON scans an application/x-ndjson body and returns where its
// events are. Lines are framed independently, so it reports a problem for
// every bad line rather than stopping at the first.
func splitNDJSON(body []byte, lim Limits, ps *problems) []span {
	var spans []span
	n := 0 // events seen
	for off, line := 0, 1; off < len(body); line++ {
		end := len(body)
		if i := bytes.IndexByte(body[off:], '\n'); i >= 0 {
			end = off + i
		}
		s := &scanner{data: body[off:end], base: off, maxDepth: lim.MaxDepth, index: n}
		lineStart := off
		off = end + 1
		if s.atEnd() {
			continue // blank line
		}
		if n == lim.MaxBatchEvents {
			*ps = problems{}
			ps.add(Problem{Index: -1, Line: line, Field: "events",
				Message: fmt.Sprintf("more than %d events in one request: split the batch", lim.MaxBatchEvents)}, CodeTooLarge)
			return nil
		}
		n++
		if c := s.data[s.pos]; c != '{' {
			ps.add(Problem{Index: s.index, Line: line, Field: eventPath(s.index),
				Message: "must be an event object (one per line), not " + jsonKind(c)}, CodeInvalid)
			continue
		}
		start := s.pos
		if err := s.value(0); err != nil {
			ps.add(err.(*scanError).problem(line), CodeInvalid)
			continue
		}
		if !s.atEnd() {
			err := s.fail("trailing data after the event: put one event on each line")
			ps.add(err.(*scanError).problem(line), CodeInvalid)
			continue
		}
		spans = append(spans, span{start: lineStart + start, end: lineStart + s.pos, index: s.index, line: line})
	}
	if n == 0 && ps.empty() {
		ps.add(Problem{Index: -1, Field: "events", Message: "batch is empty: send at least one event"}, CodeInvalid)
	}
	return spans
}

// jsonKind names the kind of JSON value that starts with c.
func jsonKind(c byte) string {
	switch {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || '0' <= c && c <= '9':
		return "a number"
	default:
		return "valid JSON"
	}
}

// structDecoder decodes a scanned event object into an Event by the JSON
// names of its fields, collecting a problem for every unknown field and
// every value of the wrong type. (encoding/json stops at the first, does
// not name the path of unknown fields, and matches names case-insensitively.)
type structDecoder struct {
	index, line int
	ps          *problems
}

var (
	stringType  = reflect.TypeFor[string]()
	rawType     = reflect.TypeFor[json.RawMessage]()
	attrMapType = reflect.TypeFor[map[string]any]()
)

// fieldTable maps JSON names to field positions for one struct type.
type fieldTable struct {
	byName map[string]int
	names  string // for messages: "id, type, ip, …"
}

var fieldTables = func() map[reflect.Type]fieldTable {
	m := map[reflect.Type]fieldTable{}
	for _, t := range []reflect.Type{
		reflect.TypeFor[Event](), reflect.TypeFor[Actor](), reflect.TypeFor[Resource](),
		reflect.TypeFor[Model](), reflect.TypeFor[Dataset](), reflect.TypeFor[API](),
		reflect.TypeFor[Prompt](),
	} {
		ft := fieldTable{byName: map[string]int{}}
		var names []string
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue // not read from JSON
			}
			ft.byName[name] = i
			names = append(names, name)
		}
		ft.names = strings.Join(names, ", ")
		m[t] = ft
	}
	return m
}()

// decode decodes the object raw, already scanned, into the struct v.
func (d *structDecoder) decode(raw []byte, v reflect.Value, path string) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		d.add(path, "must be an object")
		return
	}
	table := fieldTables[v.Type()]
	for _, name := range slices.Sorted(maps.Keys(members)) {
		val := members[name]
		fieldPath := path + keySegment(name)
		i, ok := table.byName[name]
		if !ok {
			d.add(fieldPath, "unknown field; the fields are "+table.names)
			continue
		}
		if string(val) == "null" {
			continue
		}
		f := v.Field(i)
		switch f.Type() {
		case rawType:
			f.SetBytes(val)
		case stringType:
			if val[0] != '"' {
				d.add(fieldPath, "must be a string, not "+jsonKind(val[0]))
				continue
			}
			var s string
			if err := json.Unmarshal(val, &s); err != nil {
				d.add(fieldPath, "must be a string")
				continue
			}
			f.SetString(s)
		case attrMapType:
			if val[0] != '{' {
				d.add(fieldPath, "must be an object, not "+jsonKind(val[0]))
				continue
			}
			dec := json.NewDecoder(bytes.NewReader(val))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				d.add(fieldPath, "must be an object")
				continue
			}
			f.Set(reflect.ValueOf(m))
		default: // pointer to one of the small structs
			if val[0] != '{' {
				d.add(fieldPath, "must be an object, not "+jsonKind(val[0]))
				continue
			}
			p := reflect.New(f.Type().Elem())
			d.decode(val, p.Elem(), fieldPath)
			f.Set(p)
		}
	}
}

func (d *structDecoder) add(field, msg string) {
	d.ps.add(Problem{Index: d.index, Line: d.line, Field: field, Message: msg}, CodeInvalid)
}
