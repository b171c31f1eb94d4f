package event

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// fastDecode lets tests turn the fast whole-body path off to compare.
var fastDecode = true

// fastOptions make encoding/json/v2 decode an event as strictly as
// structDecoder: member names match case-sensitively, unknown members are
// errors, and attribute numbers stay json.Number so Normalize can check
// they are exact. decodeEvent decodes as they say (FuzzDecodeEvent), and
// uses them for nested attribute values.
var fastOptions = jsonv2.JoinOptions(
	jsonv2.RejectUnknownMembers(true),
	jsonv2.WithUnmarshalers(jsonv2.UnmarshalFromFunc(func(d *jsontext.Decoder, v *any) error {
		if d.PeekKind() != '0' {
			return errors.ErrUnsupported // the default decoding
		}
		b, err := d.ReadValue()
		if err != nil {
			return err
		}
		*v = stdjson.Number(b)
		return nil
	})),
)

// decodeFast decodes one scanned event object with decodeEvent. Decode
// uses it first because it is several times faster than structDecoder;
// when it fails, Decode runs structDecoder, which names every problem
// precisely. For input both accept they give the same Event (FuzzDecode
// checks this).
func decodeFast(raw []byte, e *Event, maxDepth int) error {
	if err := decodeEvent(raw, e, maxDepth); err != nil {
		*e = Event{} // what it had set is not to be used
		return err
	}
	return nil
}

// decodeAllFast decodes a body that is entirely valid, or reports false:
// then Decode's precise path runs and names every problem. It accepts
// exactly what the precise path accepts (FuzzDecode checks this): the same
// media types, blank NDJSON lines, batch limits, nesting limit, and each
// event an object that decodeEvent takes (as encoding/json/v2 would with
// fastOptions: it refuses invalid UTF-8, duplicate names and trailing data).
func decodeAllFast(body []byte, mediaType string, lim Limits) ([]Event, bool) {
	var raws [][]byte
	switch {
	case strings.EqualFold(mediaType, MediaTypeNDJSON):
		for off := 0; off < len(body); {
			end := len(body)
			if i := bytes.IndexByte(body[off:], '\n'); i >= 0 {
				end = off + i
			}
			line := bytes.Trim(body[off:end], " \t\r\n")
			off = end + 1
			if len(line) > 0 {
				raws = append(raws, line)
			}
		}
	case strings.EqualFold(mediaType, MediaTypeJSON):
		trimmed := bytes.Trim(body, " \t\r\n")
		var batch struct {
			Events []jsontext.Value `json:"events"`
		}
		if jsonv2.Unmarshal(trimmed, &batch, jsonv2.RejectUnknownMembers(true)) == nil {
			raws = make([][]byte, len(batch.Events))
			for i, e := range batch.Events {
				raws[i] = bytes.Trim(e, " \t\r\n")
			}
		} else {
			raws = [][]byte{trimmed}
		}
	default:
		return nil, false
	}
	if len(raws) == 0 || len(raws) > lim.MaxBatchEvents {
		return nil, false
	}
	events := make([]Event, len(raws))
	for i, raw := range raws {
		if len(raw) == 0 || raw[0] != '{' {
			return nil, false
		}
		if decodeFast(raw, &events[i], lim.MaxDepth) != nil {
			return nil, false
		}
	}
	return events, true
}

// TooDeep reports whether JSON text nests containers more than max levels.
func TooDeep(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			// Jump to the closing quote: one not preceded by an odd
			// number of backslashes.
			for {
				j := bytes.IndexByte(b[i+1:], '"')
				if j < 0 {
					return false // unterminated: v2 refuses it
				}
				i += 1 + j
				k := i - 1
				for k >= 0 && b[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case '{', '[':
			if depth++; depth > max {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// RecordOfType returns the record a follower of the log reads, as
// RecordFrom does, when it is of type typ, and nil otherwise. A record
// given only as stored is decoded only when its bytes name the type, so
// that followers looking for one rare type pass over the others cheaply.
func RecordOfType(value any, data []byte, typ string) (*Record, error) {
	if r, ok := value.(*Record); ok {
		if r.Type != typ {
			return nil, nil
		}
		return r, nil
	}
	// Canonical JSON writes the type so, unescaped; the mark may also be
	// a nested object's, which decoding tells apart.
	if !bytes.Contains(data, []byte(`"type":"`+typ+`"`)) {
		return nil, nil
	}
	r, err := RecordFrom(nil, data)
	if err != nil || r.Type != typ {
		return nil, err
	}
	return r, nil
}

// RecordFrom returns the record a follower of the log reads: value itself
// when it is the *Record its appender built (the ledger serves recent
// entries from memory with it), else data, the stored canonical bytes,
// decoded with encoding/json/v2 (several times faster than encoding/json
// on records, and without ParseRecord's check that they are canonical,
// which is verify's job). Both give the same record: ingest's
// FuzzValueIsTheRecord holds the appender to that. The record may be shared
// with other followers and must not be modified.
func RecordFrom(value any, data []byte) (*Record, error) {
	if r, ok := value.(*Record); ok {
		return r, nil
	}
	r := new(Record)
	if err := jsonv2.Unmarshal(data, r); err != nil {
		return nil, err
	}
	return r, nil
}
