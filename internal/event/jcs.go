package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// appendCanonical appends the RFC 8785 encoding of r to b. It writes the
// record's members directly in sorted order instead of marshalling and then
// re-parsing with a generic canonicalizer: ingest calls it for every event,
// and the generic route costs ten times more. Numbers are formatted by the
// jcs library (the ECMAScript algorithm RFC 8785 requires); tests and a fuzz
// target check that the output equals jcs.Transform of the marshalled record.
func appendCanonical(b []byte, r *Record) ([]byte, error) {
	var err error
	o := objWriter{b: append(b, '{')}
	// Members in code-unit order of their names.
	o.str("action", r.Action)
	if r.Actor != nil {
		o.key("actor")
		a := objWriter{b: append(o.b, '{'), plain: &r.plain}
		a.str("id", r.Actor.ID)
		a.str("ip", r.Actor.IP)
		a.str("session_id", r.Actor.SessionID)
		a.str("type", r.Actor.Type)
		a.str("user_agent", r.Actor.UserAgent)
		o.b = append(a.b, '}')
	}
	if r.API != nil {
		o.key("api")
		a := objWriter{b: append(o.b, '{')}
		a.str("name", r.API.Name)
		a.str("version", r.API.Version)
		o.b = append(a.b, '}')
	}
	if len(r.Attributes) > 0 {
		o.key("attributes")
		if o.b, err = appendAttributes(o.b, r.Attributes, &r.plain); err != nil {
			return nil, err
		}
	}
	if r.Content != nil {
		o.key("content")
		a := objWriter{b: append(o.b, '{'), plain: &r.plain}
		a.strAlways("digest", r.Content.Digest)
		a.strAlways("key_id", r.Content.KeyID)
		a.key("size")
		a.b = strconv.AppendInt(a.b, r.Content.Size, 10)
		o.b = append(a.b, '}')
	}
	if r.Dataset != nil {
		o.key("dataset")
		a := objWriter{b: append(o.b, '{')}
		a.str("digest", r.Dataset.Digest)
		a.str("name", r.Dataset.Name)
		a.str("version", r.Dataset.Version)
		o.b = append(a.b, '}')
	}
	o.strAlways("id", r.ID)
	if r.Model != nil {
		o.key("model")
		a := objWriter{b: append(o.b, '{')}
		a.str("digest", r.Model.Digest)
		a.str("name", r.Model.Name)
		a.str("provider", r.Model.Provider)
		a.str("version", r.Model.Version)
		o.b = append(a.b, '}')
	}
	o.str("outcome", r.Outcome)
	if r.Prompt != nil {
		o.key("prompt")
		a := objWriter{b: append(o.b, '{')}
		a.str("digest", r.Prompt.Digest)
		a.str("id", r.Prompt.ID)
		a.str("version", r.Prompt.Version)
		o.b = append(a.b, '}')
	}
	o.key("received_at")
	if o.b, err = appendTime(o.b, r.ReceivedAt); err != nil {
		return nil, err
	}
	if r.Resource != nil {
		o.key("resource")
		a := objWriter{b: append(o.b, '{')}
		a.str("id", r.Resource.ID)
		a.str("name", r.Resource.Name)
		a.str("type", r.Resource.Type)
		o.b = append(a.b, '}')
	}
	o.str("span_id", r.SpanID)
	o.strAlways("tenant", r.Tenant)
	o.key("time")
	if o.b, err = appendTime(o.b, r.Time); err != nil {
		return nil, err
	}
	o.str("trace_id", r.TraceID)
	o.strAlways("type", r.Type)
	if o.bad {
		return nil, errors.New("record holds a string that is not valid UTF-8")
	}
	return append(o.b, '}'), nil
}

// objWriter writes the members of one JSON object.
type objWriter struct {
	b     []byte
	n     int
	bad   bool
	plain *plainTexts // strings known to need no escaping, or nil
}

func (o *objWriter) key(k string) {
	if o.n > 0 {
		o.b = append(o.b, ',')
	}
	o.n++
	o.b = append(o.b, '"')
	o.b = append(o.b, k...) // member names here need no escaping
	o.b = append(o.b, '"', ':')
}

// str writes a member unless its value is empty (omitempty).
func (o *objWriter) str(k, v string) {
	if v != "" {
		o.strAlways(k, v)
	}
}

func (o *objWriter) strAlways(k, v string) {
	o.key(k)
	if o.plain.has(v) {
		o.b = append(append(append(o.b, '"'), v...), '"')
		return
	}
	var ok bool
	o.b, ok = appendString(o.b, v)
	o.bad = o.bad || !ok
}

const hexDigits = "0123456789abcdef"

// appendString writes s as an RFC 8785 string: only '"', '\\' and control
// characters are escaped, with the short forms where JSON has them. It
// reports false if s is not valid UTF-8.
func appendString(b []byte, s string) ([]byte, bool) {
	b = append(b, '"')
	start := 0
	ascii := true // every byte looked at one by one was below 0x80
	for i := 0; i < len(s); i++ {
		if len(s)-i >= 8 {
			if n := plainASCII(s, i); n > 0 {
				i += n - 1
				continue
			}
		}
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			ascii = ascii && c < utf8.RuneSelf
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"'), ascii || utf8.ValidString(s)
}

// appendTime writes t as encoding/json does (RFC 3339 with the fraction
// trimmed), in UTC.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	t = t.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("time %v is outside years 0 to 9999", t)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// appendAttributes writes the attribute map with its keys in UTF-16
// code-unit order. Strings plain notes are copied without a look for
// characters to escape.
func appendAttributes(b []byte, attrs map[string]any, plain *plainTexts) ([]byte, error) {
	keys := make([]string, 0, len(attrs))
	ascii := true
	for k := range attrs {
		keys = append(keys, k)
		for i := 0; i < len(k) && ascii; i++ {
			ascii = k[i] < utf8.RuneSelf
		}
	}
	if ascii {
		slices.Sort(keys)
	} else {
		slices.SortFunc(keys, func(x, y string) int {
			return slices.Compare(utf16.Encode([]rune(x)), utf16.Encode([]rune(y)))
		})
	}
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendString(b, k); !ok {
			return nil, fmt.Errorf("attribute name %q is not valid UTF-8", k)
		}
		b = append(b, ':')
		switch v := attrs[k].(type) {
		case string:
			if plain.has(v) {
				b = append(append(append(b, '"'), v...), '"')
			} else if b, ok = appendString(b, v); !ok {
				return nil, fmt.Errorf("attribute %q is not valid UTF-8", k)
			}
		case bool:
			b = strconv.AppendBool(b, v)
		default:
			f, err := attributeFloat(v)
			if err != nil {
				return nil, fmt.Errorf("attribute %q: %w", k, err)
			}
			b, err = appendNumber(b, f)
			if err != nil {
				return nil, fmt.Errorf("attribute %q: %w", k, err)
			}
		}
	}
	return append(b, '}'), nil
}

// appendNumber appends f as RFC 8785 writes it. Whole numbers below 2^53,
// such as token counts, are written as integers, which is what the
// ECMAScript formatting gives them, without its general algorithm.
func appendNumber(b []byte, f float64) ([]byte, error) {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.AppendInt(b, int64(f), 10), nil
	}
	s, err := jcs.NumberToJSON(f)
	return append(b, s...), err
}

// attributeFloat converts a numeric attribute to the float64 RFC 8785
// formats (JSON numbers are IEEE doubles there).
func attributeFloat(v any) (float64, error) {
	switch n := v.(type) {
	case float64:
		return n, nil
	case float32:
		return float64(n), nil
	case int:
		return float64(n), nil
	case int64:
		return float64(n), nil
	case uint64:
		return float64(n), nil
	case json.Number:
		return n.Float64()
	}
	return 0, fmt.Errorf("unsupported value of type %T", v)
}
