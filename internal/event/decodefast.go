package event

import (
	stdjson "encoding/json"
	"errors"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// fastDecode lets tests turn the fast path off to compare.
var fastDecode = true

// fastOptions make encoding/json/v2 decode an event as strictly as
// structDecoder: member names match case-sensitively, unknown members are
// errors, and attribute numbers stay json.Number so Normalize can check
// they are exact.
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

// decodeFast decodes one scanned event object. Decode uses it first because
// it is several times faster than structDecoder; when it fails, Decode runs
// structDecoder, which names every problem precisely. For input both accept
// they give the same Event (FuzzDecode checks this).
func decodeFast(raw []byte, e *Event) error {
	if err := jsonv2.Unmarshal(raw, e, fastOptions); err != nil {
		return err
	}
	if string(e.Content) == "null" {
		e.Content = nil // null means absent, as for every field
	}
	return nil
}
