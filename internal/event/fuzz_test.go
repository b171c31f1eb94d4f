package event

import (
	"encoding/json"
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// longAttributes is an event with long attribute values, plain and not
// (see plainTexts).
var longAttributes = `{"id":"e1","type":"a","attributes":{` +
	`"plain":"` + strings.Repeat("abc ", 20) + `",` +
	`"del":"` + strings.Repeat("abc ", 20) + "\x7f" + `",` +
	`"accent":"` + strings.Repeat("abc ", 20) + "é" + `",` +
	`"escaped":"` + strings.Repeat("abc ", 20) + `\u0041",` +
	`"tab":"` + strings.Repeat("abc ", 20) + `\t",` +
	`"quote":"` + strings.Repeat("abc ", 20) + `\"",` +
	`"plain2":"` + strings.Repeat("def ", 20) + `",` +
	`"plain3":"` + strings.Repeat("ghi ", 20) + `",` +
	`"plain4":"` + strings.Repeat("jkl ", 20) + `",` +
	`"plain5":"` + strings.Repeat("mno ", 20) + `"}}`

// FuzzDecode feeds arbitrary bodies to Decode. Nothing may panic; an
// accepted body must be valid JSON; and every event that normalizes must
// survive Canonical and ParseRecord unchanged. The seed corpus is in
// testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	golden, err := os.ReadFile(filepath.Join("testdata", "golden", "event.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden, MediaTypeJSON)
	f.Add([]byte(longAttributes), MediaTypeNDJSON)
	now := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	// Small limits so that the fuzzer reaches them.
	lim := Limits{MaxContentBytes: 4096, MaxBatchEvents: 20, MaxDepth: 12}
	f.Fuzz(func(t *testing.T, body []byte, mediaType string) {
		events, err := Decode(body, mediaType, lim)
		uncheck(t, events)
		// The fast decoder and the precise one agree on what they accept.
		fastDecode = false
		slow, slowErr := Decode(body, mediaType, lim)
		fastDecode = true
		uncheck(t, slow)
		if (err == nil) != (slowErr == nil) || (err == nil && !reflect.DeepEqual(events, slow)) {
			t.Fatalf("fast and precise decoders disagree on %q:\n%#v, %v\n%#v, %v", body, events, err, slow, slowErr)
		}
		if err != nil {
			checkError(t, err, errors.Is(err, ErrMediaType))
			return
		}
		if len(events) == 0 || len(events) > lim.MaxBatchEvents {
			t.Fatalf("Decode accepted %d events", len(events))
		}
		if mediaType == MediaTypeJSON && !json.Valid(body) {
			t.Fatalf("Decode accepted invalid JSON %q", body)
		}
		if mediaType == MediaTypeJSON && !utf8.Valid(body) {
			t.Fatalf("Decode accepted invalid UTF-8 %q", body)
		}

		records, contents, err := NormalizeAll(events, now, lim)
		if err != nil {
			checkError(t, err, false)
			// Round-trip the events that are fine on their own.
			for i := range events {
				r, content, err := Normalize(&events[i], now, lim)
				if err != nil {
					checkError(t, err, false)
					continue
				}
				roundTrip(t, r, content)
			}
			return
		}
		for i, r := range records {
			roundTrip(t, r, contents[i])
		}
	})
}

// checkError checks that err is a well-formed *Error, or something else
// that is expected.
func checkError(t *testing.T, err error, otherOK bool) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		if otherOK {
			return
		}
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Code != CodeInvalid && e.Code != CodeTooLarge {
		t.Fatalf("error code %q", e.Code)
	}
	if len(e.Problems) == 0 || len(e.Problems) > maxProblems+1 {
		t.Fatalf("error has %d problems", len(e.Problems))
	}
	for _, p := range e.Problems {
		if p.Message == "" || p.Index < -1 || p.Line < 0 {
			t.Fatalf("malformed problem %+v", p)
		}
		if !utf8.ValidString(p.String()) {
			t.Fatalf("problem is not valid UTF-8: %q", p.String())
		}
	}
}

// roundTrip checks that a normalized record, given a content reference as
// the server would, encodes and parses back to itself.
func roundTrip(t *testing.T, r Record, content []byte) {
	t.Helper()
	if content != nil {
		if !json.Valid(content) {
			t.Fatalf("Normalize returned invalid JSON content %q", content)
		}
		r.Content = &ContentRef{Digest: "sha256:00", KeyID: "k", Size: int64(len(content))}
	}
	hinted := r.plain
	b, err := Canonical(&r)
	if err != nil {
		t.Fatalf("Canonical of a normalized record: %v", err)
	}
	// The strings noted as plain are written as they would be without
	// (Canonical has cleared the notes).
	if r.plain != (plainTexts{}) {
		t.Fatalf("Canonical left the notes %q", r.plain.s)
	}
	if without, err := Canonical(&r); err != nil || string(without) != string(b) {
		t.Fatalf("Canonical with plain strings noted (%q) gives\n%s\nwithout\n%s (%v)", hinted.s, b, without, err)
	}
	back, err := ParseRecord(b)
	if err != nil {
		t.Fatalf("ParseRecord(%s): %v", b, err)
	}
	if !reflect.DeepEqual(*back, r) {
		t.Fatalf("round trip changed the record:\n%+v\n%+v", *back, r)
	}
}

// FuzzCanonical builds records from arbitrary field values, as a Go
// producer might after Normalize, and checks that whatever Canonical
// accepts, ParseRecord gives back unchanged.
func FuzzCanonical(f *testing.F) {
	f.Add("evt-1", "ai.inference", "acme", "chat <&> \u2028", "gen_ai.usage.input_tokens", 1200.0, "value\n", int64(1741057567123456789), true)
	f.Add("", "", "", "", "", 1e21, "", int64(0), false)
	f.Add("x", "a", "t", "\U0001F600", "k", 5e-324, "\"\\", int64(-62135596800000000), false)
	f.Fuzz(func(t *testing.T, id, typ, tenant, action, key string, num float64, str string, nanos int64, flag bool) {
		for _, s := range []string{id, typ, tenant, action, key, str} {
			if !utf8.ValidString(s) {
				return // Normalize refuses these; json.Marshal would replace them
			}
		}
		if math.IsNaN(num) || math.IsInf(num, 0) {
			return
		}
		if num == 0 {
			num = 0 // no -0, as Normalize
		}
		r := Record{ID: id, Type: typ, Tenant: tenant, Action: action,
			Time: time.Unix(0, nanos).UTC(), ReceivedAt: time.Unix(0, nanos/3).UTC()}
		if key != "" {
			r.Attributes = map[string]any{key: num, key + "s": str, key + "b": flag}
		}
		if action != "" {
			r.Actor = &Actor{ID: action}
		}
		b, err := Canonical(&r)
		if err != nil {
			checkError(t, err, false)
			return
		}
		if want := viaLibrary(t, &r); string(b) != string(want) {
			t.Fatalf("Canonical differs from the jcs library:\n got %s\nwant %s", b, want)
		}
		back, err := ParseRecord(b)
		if err != nil {
			t.Fatalf("ParseRecord(%s): %v", b, err)
		}
		if !reflect.DeepEqual(*back, r) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", *back, r)
		}
	})
}

// FuzzParseRecord feeds arbitrary bytes to ParseRecord: whatever it
// accepts must be exactly what Canonical produces for the result.
func FuzzParseRecord(f *testing.F) {
	golden, err := os.ReadFile(filepath.Join("testdata", "golden", "record.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	f.Add([]byte(`{"id":"1","received_at":"2025-01-01T00:00:00Z","tenant":"t","time":"2025-01-01T00:00:00Z","type":"a"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRecord(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedRecord) {
				t.Fatalf("error %v does not wrap ErrMalformedRecord", err)
			}
			return
		}
		b, err := Canonical(r)
		if err != nil || string(b) != string(data) {
			t.Fatalf("ParseRecord accepted %q, which Canonical writes as %q (%v)", data, b, err)
		}
	})
}

// FuzzValidContent: content's fast check never accepts what the precise
// scanner refuses, and returns what it returns. The precise scanner names
// problems; the fast one only saves it the work on valid content.
func FuzzValidContent(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"hi"}`, ` [1, 2.5e3, "x", null, true] `, `null`, `"text"`, `{"a":{"b":[{"c":[]}]}}`,
		`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `"\ud800"`, `"\udc00\ud800"`, "\"\xff\"", `[[[[[[[[[[[[]]]]]]]]]]]]`,
		`{"a":1} {"b":2}`, `01`, `-0.0e+1`, `[1,]`, "\t", `{"k":"v\u0000"}`,
	} {
		f.Add([]byte(s), 4)
	}
	f.Fuzz(func(t *testing.T, raw []byte, depth int) {
		if depth < 1 || depth > 16 {
			return
		}
		lim := Limits{MaxContentBytes: 1 << 20, MaxDepth: depth}
		fast, ok := validContent(raw, false, depth)
		// Content Decode checked strictly is taken without the check, with
		// the same result.
		if jsontext.Value(raw).IsValid() {
			if again, ok2 := validContent(raw, true, depth); ok2 != ok || string(again) != string(fast) {
				t.Fatalf("%q (depth %d): checked content gives %q, %v; unchecked %q, %v", raw, depth, again, ok2, fast, ok)
			}
		}
		fastContent = false
		var ps problems
		c := &checker{ps: &ps}
		precise := c.content(raw, false, lim)
		fastContent = true
		if !ok {
			return
		}
		if !ps.empty() {
			t.Fatalf("%q (depth %d): fast check accepts, precise refuses: %v", raw, depth, ps.err())
		}
		if string(fast) == "null" {
			fast = nil
		}
		if string(fast) != string(precise) {
			t.Fatalf("%q: fast check gives %q, precise %q", raw, fast, precise)
		}
	})
}

// FuzzDecodeEvent: the hand-written event decoder takes exactly what
// encoding/json/v2 takes with fastOptions, and gives the same Event.
func FuzzDecodeEvent(f *testing.F) {
	golden, err := os.ReadFile(filepath.Join("testdata", "golden", "event.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	for _, s := range []string{
		`{"type":"a","actor":{"id":"u","type":"user"},"attributes":{"n":1.5e3,"s":"x","b":true,"z":null,"o":{"k":[1,"a"]}},"content":{"m":[1]}}`,
		`{"type":"a","actor":null,"model":{},"content":null,"attributes":{}}`,
		`{"\u0074ype":"a","id":"\u00e9\n"}`, `{"type":"a","type":"b"}`, `{"Type":"a"}`, `{"type":1}`,
		`{"type":"a","extra":1}`, `{"type":"a"} x`, `{"type":"a","actor":{"id":"u","nope":1}}`,
		`{"type":"a","attributes":{"a":1,"a":2}}`, `{"type":"a","attributes":[]}`, "{\"type\":\"\xff\"}",
		`{"type":"a","content":{"x":1,"x":2}}`, `{"type":null,"attributes":null}`, `{"type":"a","actor":"u"}`,
		`{"actor":{"id":"a","id":"b"}}`, `{"content":[{"a":1,"b":2,"\u0061":3}]}`, `{"attributes":{"o":{"k":1,"k":2}}}`,
		`{"content":{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1,"l":1,"m":1,"n":1,"o":1,"p":1,"q":1,"a":1}}`,
		`{"content":{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1,"l":1,"m":1,"n":1,"o":1,"p":1,"q":1,"r":1}}`,
		`{"content":"\ud83d\ude00 \u00e9\"\\\/\b\f\n\r\t"}`, `{"content":"\ude00"}`, `{"content":"\ud83d"}`, "{\"content\":\"\x7f\xed\xa0\x80\"}",
		`{"content":[01]}`, `{"content":[-0.5e+3,1E2,-]}`, `{"content":[1.]}`, `{"content":[tru]}`, ` {"type":"a"} `,
		longAttributes,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got, want Event
		err := decodeEvent(raw, &got, 10000) // jsontext's nesting limit
		// decodeFast discards what a failed decode set.
		if err == nil {
			uncheck(t, []Event{got})
		}
		got.checked, got.plain = nil, plainTexts{}
		wantErr := jsonv2.Unmarshal(raw, &want, fastOptions)
		if wantErr == nil && string(want.Content) == "null" {
			want.Content = nil
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%q: hand-written decoder says %v, encoding/json/v2 %v", raw, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: hand-written decoder gives\n%#v\nencoding/json/v2\n%#v", raw, got, want)
		}
	})
}

// uncheck fails t unless the content each event claims Decode checked is
// its Content and passes jsontext's strict check, and every string it
// notes as plain is one of its attribute values and plain; then it clears
// the claims, which the other decoders do not make.
func uncheck(t *testing.T, events []Event) {
	t.Helper()
	for i := range events {
		e := &events[i]
		if e.checked != nil && (!sameBytes(e.Content, e.checked) || !jsontext.Value(e.checked).IsValid()) {
			t.Fatalf("event %d: content %q marked as checked, but not valid", i, e.Content)
		}
		for _, s := range e.plain.s {
			if s == "" {
				continue
			}
			if !isPlain(s) {
				t.Fatalf("event %d: %q noted as plain", i, s)
			}
			if !slices.ContainsFunc(slices.Collect(maps.Values(e.Attributes)), func(v any) bool {
				w, ok := v.(string)
				return ok && unsafe.StringData(w) == unsafe.StringData(s)
			}) {
				t.Fatalf("event %d: %q noted as plain is not one of its attribute values", i, s)
			}
		}
		e.checked, e.plain = nil, plainTexts{}
	}
}

// isPlain reports whether s is printable ASCII without '"' or '\\'.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
