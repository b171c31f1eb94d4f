package event

import (
	"bytes"
	"encoding/binary"
	stdjson "encoding/json"
	"errors"
	"io"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// errNotEvent is what decodeEvent reports for input it does not take; the
// precise decoder then says what is wrong.
var errNotEvent = errors.New("not a well-formed event")

// eventDecoder is a reusable token reader, with the short strings it has
// made: events repeat their tenants, types, actors, models and attribute
// names, and a string made once is shared.
type eventDecoder struct {
	d       jsontext.Decoder
	in      bytes.Buffer // over the event being read
	none    bytes.Buffer // always empty: what d reads between uses
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
// jsonv2.Unmarshal(raw, e, fastOptions) does but without reflection: member
// names match exactly, unknown members, duplicate names, invalid UTF-8 and
// trailing data are refused, null leaves a field unset, an empty object
// still sets a pointer field, and attribute numbers stay json.Number.
// FuzzDecodeEvent checks that the two agree.
func decodeEvent(raw []byte, e *Event) error {
	ed := eventDecoders.Get().(*eventDecoder)
	d := &ed.d
	ed.in = *bytes.NewBuffer(raw)
	d.Reset(&ed.in) // read in place, not copied
	defer func() {
		d.Reset(&ed.none) // not to keep raw alive in the pool
		ed.in = bytes.Buffer{}
		eventDecoders.Put(ed)
	}()
	if d.PeekKind() == 'n' { // null sets nothing, as for any field
		if _, err := d.ReadToken(); err != nil {
			return err
		}
		if _, err := d.ReadToken(); err != io.EOF {
			return errNotEvent
		}
		return nil
	}
	err := readObject(d, func(name []byte) error {
		switch string(name) {
		case "id":
			return ed.readUnique(&e.ID)
		case "type":
			return ed.readString(&e.Type)
		case "time":
			return ed.readUnique(&e.Time)
		case "tenant":
			return ed.readString(&e.Tenant)
		case "action":
			return ed.readString(&e.Action)
		case "outcome":
			return ed.readString(&e.Outcome)
		case "trace_id":
			return ed.readUnique(&e.TraceID)
		case "span_id":
			return ed.readUnique(&e.SpanID)
		case "actor":
			return readStruct(ed, &e.Actor, func(a *Actor, name []byte) *string {
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
			return readStruct(ed, &e.Resource, func(r *Resource, name []byte) *string {
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
			return readStruct(ed, &e.Model, func(m *Model, name []byte) *string {
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
			return readStruct(ed, &e.Dataset, func(s *Dataset, name []byte) *string {
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
			return readStruct(ed, &e.API, func(a *API, name []byte) *string {
				switch string(name) {
				case "name":
					return &a.Name
				case "version":
					return &a.Version
				}
				return nil
			})
		case "prompt":
			return readStruct(ed, &e.Prompt, func(p *Prompt, name []byte) *string {
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
			return ed.readAttributes(&e.Attributes)
		case "content":
			v, err := d.ReadValue()
			if err != nil {
				return err
			}
			if string(v) != "null" {
				e.Content = stdjson.RawMessage(bytes.Clone(v))
				e.checked = e.Content
			}
			return nil
		}
		return errNotEvent
	})
	if err != nil {
		return err
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return errNotEvent // trailing data
	}
	return nil
}

// readObject reads an object, calling member for each name with the
// decoder at its value; the name is valid only until member reads on. A
// null is no object: it reports errNotEvent.
func readObject(d *jsontext.Decoder, member func(name []byte) error) error {
	if d.PeekKind() != '{' {
		return errNotEvent
	}
	if _, err := d.ReadToken(); err != nil {
		return err
	}
	for d.PeekKind() != '}' {
		name, err := readName(d)
		if err != nil {
			return err
		}
		if err := member(name); err != nil {
			return err
		}
	}
	_, err := d.ReadToken()
	return err
}

// readName reads an object member's name, unescaped. The decoder has
// already refused duplicates.
func readName(d *jsontext.Decoder) ([]byte, error) {
	v, err := d.ReadValue()
	if err != nil {
		return nil, err
	}
	if len(v) < 2 || v[0] != '"' {
		return nil, errNotEvent
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], nil
	}
	return jsontext.AppendUnquote(nil, v)
}

// readString reads a string into s; null leaves s as it is.
func (ed *eventDecoder) readString(s *string) error { return ed.readText(s, true) }

// readUnique is readString for a value that differs from event to event
// (an id, a time): keeping it would only crowd out the strings that repeat.
func (ed *eventDecoder) readUnique(s *string) error { return ed.readText(s, false) }

func (ed *eventDecoder) readText(s *string, intern bool) error {
	d := &ed.d
	switch d.PeekKind() {
	case 'n':
		_, err := d.ReadToken()
		return err
	case '"':
	default:
		return errNotEvent
	}
	v, err := d.ReadValue()
	if err != nil {
		return err
	}
	if bytes.IndexByte(v, '\\') < 0 {
		v = v[1 : len(v)-1]
	} else if v, err = jsontext.AppendUnquote(nil, v); err != nil {
		return err
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
	d := &ed.d
	if d.PeekKind() == 'n' {
		_, err := d.ReadToken()
		return err
	}
	v := new(T)
	if err := readObject(d, func(name []byte) error {
		f := field(v, name)
		if f == nil {
			return errNotEvent
		}
		return ed.readString(f)
	}); err != nil {
		return err
	}
	*p = v
	return nil
}

// readAttributes reads the attributes object: scalars directly, numbers as
// json.Number, anything nested as encoding/json/v2 decodes it with
// fastOptions (Normalize refuses it later); null leaves *m nil.
func (ed *eventDecoder) readAttributes(m *map[string]any) error {
	d := &ed.d
	if d.PeekKind() == 'n' {
		_, err := d.ReadToken()
		return err
	}
	out := map[string]any{}
	if err := readObject(d, func(name []byte) error {
		key := ed.str(name) // name is valid only until the next read
		var v any
		switch d.PeekKind() {
		case '"':
			var s string
			if err := ed.readString(&s); err != nil {
				return err
			}
			v = s
		case '0':
			raw, err := d.ReadValue()
			if err != nil {
				return err
			}
			v = stdjson.Number(raw)
		case 't', 'f':
			tok, err := d.ReadToken()
			if err != nil {
				return err
			}
			v = tok.Bool()
		case 'n':
			if _, err := d.ReadToken(); err != nil {
				return err
			}
		default:
			if err := jsonv2.UnmarshalDecode(d, &v, fastOptions); err != nil {
				return err
			}
		}
		out[key] = v
		return nil
	}); err != nil {
		return err
	}
	*m = out
	return nil
}
