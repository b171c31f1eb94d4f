package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	jsonMT   = MediaTypeJSON
	ndjsonMT = MediaTypeNDJSON
)

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name      string
		mediaType string
		body      string
		wantTypes []string
	}{
		{"single event", jsonMT, `{"type":"ai.inference"}`, []string{"ai.inference"}},
		{"whitespace around the body", jsonMT, " \r\n\t{\"type\":\"a\"}\n\n", []string{"a"}},
		{"batch", jsonMT, `{"events":[{"type":"a"},{"type":"b"} , {"type":"c"}]}`, []string{"a", "b", "c"}},
		{"batch of one", jsonMT, `{ "events" : [ {"type":"a"} ] }`, []string{"a"}},
		{"media type in capitals", "Application/JSON", `{"type":"a"}`, []string{"a"}},
		{"empty event object (rules are Normalize's)", jsonMT, `{}`, []string{""}},
		{"ndjson", ndjsonMT, "{\"type\":\"a\"}\n{\"type\":\"b\"}\n", []string{"a", "b"}},
		{"ndjson without final newline", ndjsonMT, "{\"type\":\"a\"}\n{\"type\":\"b\"}", []string{"a", "b"}},
		{"ndjson with blank lines and CRLF", ndjsonMT, "\n{\"type\":\"a\"}\r\n   \r\n\t\n{\"type\":\"b\"}\r\n\n", []string{"a", "b"}},
		{"null fields are absent", jsonMT, `{"type":"a","id":null,"actor":null,"attributes":null,"content":null}`, []string{"a"}},
		{"escaped surrogate pair", jsonMT, `{"type":"a","action":"\ud83d\ude00"}`, []string{"a"}},
		{"nesting at the limit", jsonMT, `{"type":"a","content":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := Decode([]byte(tt.body), tt.mediaType, DefaultLimits())
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var types []string
			for _, e := range events {
				types = append(types, e.Type)
			}
			if !reflect.DeepEqual(types, tt.wantTypes) {
				t.Errorf("types = %q, want %q", types, tt.wantTypes)
			}
		})
	}
}

// TestDecodeAllFields sends an event with every field set, so that a field
// the decoder does not know about (a tag renamed in event.go) shows up.
func TestDecodeAllFields(t *testing.T) {
	want := Event{
		ID: "1", Type: "t", Time: "2025-01-01T00:00:00Z", Tenant: "acme",
		Actor:      &Actor{ID: "u", Type: "user", IP: "192.0.2.1", UserAgent: "ua", SessionID: "s"},
		Action:     "login",
		Outcome:    "success",
		Resource:   &Resource{Type: "doc", ID: "d", Name: "n"},
		Model:      &Model{Provider: "p", Name: "m", Version: "v", Digest: "d"},
		Dataset:    &Dataset{Name: "n", Version: "v", Digest: "d"},
		API:        &API{Name: "n", Version: "v"},
		Prompt:     &Prompt{ID: "i", Version: "v", Digest: "d"},
		Attributes: map[string]any{"s": "x", "n": json.Number("1.5"), "b": true},
		Content:    json.RawMessage(`{"k":[1,"two",null]}`),
		TraceID:    "4bf92f3577b34da6a3ce929d0e0e4736",
		SpanID:     "00f067aa0ba902b7",
	}
	body, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	events, err := Decode(body, jsonMT, DefaultLimits())
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	uncheck(t, events)
	if len(events) != 1 || !reflect.DeepEqual(events[0], want) {
		t.Errorf("Decode(%s) =\n%+v\nwant\n%+v", body, events, want)
	}
}

func TestDecodeRefuses(t *testing.T) {
	deep := func(n int) string {
		return `{"type":"a","content":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
	}
	tests := []struct {
		name      string
		mediaType string
		body      string
		lim       Limits
		code      string
		index     int    // of the first problem
		line      int    // of the first problem
		want      string // substring of the first problem, rendered
	}{
		// Body shape.
		{"empty body", jsonMT, "", Limits{}, CodeInvalid, -1, 0, "body is empty"},
		{"blank body", jsonMT, " \n ", Limits{}, CodeInvalid, -1, 0, "body is empty"},
		{"array body", jsonMT, `[{"type":"a"}]`, Limits{}, CodeInvalid, -1, 0, "body must be a JSON object"},
		{"string body", jsonMT, `"a"`, Limits{}, CodeInvalid, -1, 0, "body must be a JSON object"},
		{"null body", jsonMT, `null`, Limits{}, CodeInvalid, -1, 0, "body must be a JSON object"},
		{"byte order mark", jsonMT, "\ufeff{\"type\":\"a\"}", Limits{}, CodeInvalid, -1, 0, "body must be a JSON object"},
		{"truncated event", jsonMT, `{"type":"a"`, Limits{}, CodeInvalid, 0, 0, "events[0].type: invalid JSON: unexpected end of input, expected ',' or '}' (at byte 11)"},
		{"truncated string", jsonMT, `{"type":"a`, Limits{}, CodeInvalid, 0, 0, "unterminated string"},
		{"truncated batch", jsonMT, `{"events":[{"type":"a"},`, Limits{}, CodeInvalid, -1, 0, "unexpected end of input, expected an event object"},
		{"unclosed batch", jsonMT, `{"events":[{"type":"a"}]`, Limits{}, CodeInvalid, -1, 0, "unexpected end of input, expected '}'"},
		{"trailing garbage", jsonMT, `{"type":"a"}x`, Limits{}, CodeInvalid, -1, 0, "trailing data after the event (at byte 12)"},
		{"two objects", jsonMT, `{"type":"a"} {"type":"b"}`, Limits{}, CodeInvalid, -1, 0, "trailing data"},
		{"trailing garbage after batch", jsonMT, `{"events":[{"type":"a"}]}]`, Limits{}, CodeInvalid, -1, 0, "trailing data after the JSON value"},
		{"trailing comma", jsonMT, `{"type":"a",}`, Limits{}, CodeInvalid, 0, 0, "expected a string key"},
		{"single quotes", jsonMT, `{'type':'a'}`, Limits{}, CodeInvalid, 0, 0, "unexpected character '\\''"},
		{"leading zero", jsonMT, `{"type":"a","attributes":{"n":01}}`, Limits{}, CodeInvalid, 0, 0, "events[0].attributes.n: invalid JSON: numbers must not have leading zeros"},
		{"bad literal", jsonMT, `{"type":"a","content":tru}`, Limits{}, CodeInvalid, 0, 0, "events[0].content: invalid JSON"},
		{"NaN", jsonMT, `{"type":"a","content":NaN}`, Limits{}, CodeInvalid, 0, 0, "events[0].content: invalid JSON"},
		{"duplicate key", jsonMT, `{"type":"a","type":"b"}`, Limits{}, CodeInvalid, 0, 0, "events[0].type: duplicate key"},
		{"duplicate key by escape", jsonMT, `{"type":"a","t\u0079pe":"b"}`, Limits{}, CodeInvalid, 0, 0, "events[0].type: duplicate key"},
		{"duplicate key in content", jsonMT, `{"type":"a","content":{"x":1,"y":2,"x":3}}`, Limits{}, CodeInvalid, 0, 0, "events[0].content: duplicate key"},

		// Encoding.
		{"invalid UTF-8 in a string", jsonMT, "{\"type\":\"a\xff\"}", Limits{}, CodeInvalid, 0, 0, "events[0].type: invalid UTF-8 in string (at byte 10)"},
		{"invalid UTF-8 in content", jsonMT, "{\"type\":\"a\",\"content\":{\"m\":[\"ok\",\"\xff\"]}}", Limits{}, CodeInvalid, 0, 0, "events[0].content: invalid UTF-8 in string"},
		{"invalid UTF-8 in a key", jsonMT, "{\"type\":\"a\",\"attributes\":{\"\xff\":1}}", Limits{}, CodeInvalid, 0, 0, "invalid UTF-8 in string"},
		{"invalid UTF-8 outside strings", jsonMT, "{\"type\":\"a\"\xff}", Limits{}, CodeInvalid, 0, 0, "invalid UTF-8 byte 0xff"},
		{"overlong UTF-8", jsonMT, "{\"type\":\"\xc0\xaf\"}", Limits{}, CodeInvalid, 0, 0, "invalid UTF-8 in string"},
		{"UTF-8 encoded surrogate", jsonMT, "{\"type\":\"\xed\xa0\x80\"}", Limits{}, CodeInvalid, 0, 0, "invalid UTF-8 in string"},
		{"unpaired high surrogate", jsonMT, `{"type":"a","action":"\ud800x"}`, Limits{}, CodeInvalid, 0, 0, `events[0].action: invalid JSON: unpaired UTF-16 surrogate \ud800`},
		{"unpaired low surrogate", jsonMT, `{"type":"a","content":"\udc00"}`, Limits{}, CodeInvalid, 0, 0, `unpaired UTF-16 surrogate \udc00`},
		{"reversed surrogates", jsonMT, `{"type":"a","content":"\ude00\ud83d"}`, Limits{}, CodeInvalid, 0, 0, `unpaired UTF-16 surrogate`},
		{"raw NUL in a string", jsonMT, "{\"type\":\"a\x00\"}", Limits{}, CodeInvalid, 0, 0, "events[0].type: invalid JSON: control character 0x00 must be escaped"},
		{"raw NUL outside strings", jsonMT, "{\"type\":\"a\"}\x00", Limits{}, CodeInvalid, -1, 0, "trailing data"},
		{"raw newline in a string", jsonMT, "{\"type\":\"a\nb\"}", Limits{}, CodeInvalid, 0, 0, "control character 0x0a must be escaped"},
		{"bad escape", jsonMT, `{"type":"\x41"}`, Limits{}, CodeInvalid, 0, 0, "invalid escape sequence"},
		{"short unicode escape", jsonMT, `{"type":"\u41"}`, Limits{}, CodeInvalid, 0, 0, `\u must be followed by 4 hexadecimal digits`},

		// Depth.
		{"nesting one past the limit", jsonMT, deep(64), Limits{}, CodeInvalid, 0, 0, "nesting deeper than 64 levels"},
		{"nesting past a configured limit", jsonMT, deep(4), Limits{MaxDepth: 4}, CodeInvalid, 0, 0, "events[0].content: nesting deeper than 4 levels"},
		{"deep attributes", jsonMT, `{"type":"a","attributes":{"x":` + strings.Repeat("[", 100) + `}}`, Limits{}, CodeInvalid, 0, 0, "events[0].attributes.x[0][0][0]…[0][0][0][0][0]: nesting deeper than 64 levels"},
		{"deep in a batch", jsonMT, `{"events":[{"type":"a"},` + deep(10000)[:len(deep(10000))-1] + `]}`, Limits{}, CodeInvalid, 1, 0, "events[1].content"},

		// Types and fields.
		{"type is a number", jsonMT, `{"type":5}`, Limits{}, CodeInvalid, 0, 0, "events[0].type: must be a string, not a number"},
		{"time is a number", jsonMT, `{"type":"a","time":1700000000}`, Limits{}, CodeInvalid, 0, 0, "events[0].time: must be a string, not a number"},
		{"actor is a string", jsonMT, `{"type":"a","actor":"bob"}`, Limits{}, CodeInvalid, 0, 0, "events[0].actor: must be an object, not a string"},
		{"actor.ip is a number", jsonMT, `{"type":"a","actor":{"ip":1}}`, Limits{}, CodeInvalid, 0, 0, "events[0].actor.ip: must be a string, not a number"},
		{"attributes is an array", jsonMT, `{"type":"a","attributes":[1]}`, Limits{}, CodeInvalid, 0, 0, "events[0].attributes: must be an object, not an array"},
		{"id is a boolean", jsonMT, `{"type":"a","id":true}`, Limits{}, CodeInvalid, 0, 0, "events[0].id: must be a string, not a boolean"},
		{"unknown field", jsonMT, `{"type":"a","user":"bob"}`, Limits{}, CodeInvalid, 0, 0, "events[0].user: unknown field; the fields are id, type, time"},
		{"unknown nested field", jsonMT, `{"type":"a","actor":{"name":"bob"}}`, Limits{}, CodeInvalid, 0, 0, "events[0].actor.name: unknown field; the fields are id, type, ip, user_agent, session_id"},
		{"field names are case-sensitive", jsonMT, `{"Type":"a"}`, Limits{}, CodeInvalid, 0, 0, "events[0].Type: unknown field"},
		{"events inside a single event", jsonMT, `{"type":"a","events":[]}`, Limits{}, CodeInvalid, 0, 0, "events[0].events: unknown field"},
		{"odd key in path", jsonMT, `{"type":"a","x.y\n":1}`, Limits{}, CodeInvalid, 0, 0, `events[0]["x.y\n"]: unknown field`},

		// Batches.
		{"empty batch", jsonMT, `{"events":[]}`, Limits{}, CodeInvalid, -1, 0, "events: batch is empty"},
		{"null batch", jsonMT, `{"events":null}`, Limits{}, CodeInvalid, -1, 0, "events: batch is empty"},
		{"batch not an array", jsonMT, `{"events":{"type":"a"}}`, Limits{}, CodeInvalid, -1, 0, "events: must be an array of event objects"},
		{"batch with another key", jsonMT, `{"events":[{"type":"a"}],"tenant":"x"}`, Limits{}, CodeInvalid, -1, 0, `a batch must be an object whose only key is "events"`},
		{"batch element not an object", jsonMT, `{"events":[{"type":"a"},"b"]}`, Limits{}, CodeInvalid, 1, 0, "events[1]: must be an event object, not a string"},
		{"batch names the bad event", jsonMT, `{"events":[{"type":"a"},{"type":"b"},{"type":"c","actor":{"ip":[]}},{"type":"d"}]}`, Limits{}, CodeInvalid, 2, 0, "events[2].actor.ip: must be a string, not an array"},
		{"batch too large", jsonMT, `{"events":[` + strings.Repeat(`{},`, 10000) + `{}]}`, Limits{}, CodeTooLarge, -1, 0, "events: more than 10000 events in one request"},
		{"batch over a configured limit", jsonMT, `{"events":[{},{},{}]}`, Limits{MaxBatchEvents: 2}, CodeTooLarge, -1, 0, "more than 2 events"},

		// NDJSON.
		{"ndjson empty", ndjsonMT, "", Limits{}, CodeInvalid, -1, 0, "events: batch is empty"},
		{"ndjson only blank lines", ndjsonMT, "\n \r\n\n", Limits{}, CodeInvalid, -1, 0, "events: batch is empty"},
		{"ndjson event over two lines", ndjsonMT, "{\"type\":\n\"a\"}\n", Limits{}, CodeInvalid, 0, 1, "line 1: events[0].type: invalid JSON: unexpected end of input"},
		{"ndjson two events on a line", ndjsonMT, "{\"type\":\"a\"} {\"type\":\"b\"}\n", Limits{}, CodeInvalid, 0, 1, "line 1: events[0]: trailing data after the event: put one event on each line (at byte 13)"},
		{"ndjson array line", ndjsonMT, "{\"type\":\"a\"}\n[{\"type\":\"b\"}]\n", Limits{}, CodeInvalid, 1, 2, "line 2: events[1]: must be an event object (one per line), not an array"},
		{"ndjson bad line after blanks", ndjsonMT, "{\"type\":\"a\"}\n\n\n{\"type\":\"b\",\"actor\":5}\n", Limits{}, CodeInvalid, 1, 4, "line 4: events[1].actor: must be an object, not a number"},
		{"ndjson invalid UTF-8", ndjsonMT, "{\"type\":\"a\"}\n{\"type\":\"\xff\"}\n", Limits{}, CodeInvalid, 1, 2, "line 2: events[1].type: invalid UTF-8 in string (at byte 22)"},
		{"ndjson batch wrapper", ndjsonMT, `{"events":[{"type":"a"}]}`, Limits{}, CodeInvalid, 0, 1, "events[0].events: unknown field"},
		{"ndjson too many events", ndjsonMT, strings.Repeat("{}\n", 10001), Limits{}, CodeTooLarge, -1, 10001, "more than 10000 events"},
		{"ndjson deep", ndjsonMT, "{\"type\":\"a\"}\n" + deep(100000), Limits{}, CodeInvalid, 1, 2, "nesting deeper than 64 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := Decode([]byte(tt.body), tt.mediaType, tt.lim)
			if err == nil {
				t.Fatalf("Decode succeeded with %d events, want an error containing %q", len(events), tt.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if events != nil {
				t.Errorf("Decode returned events along with an error")
			}
			if e.Code != tt.code {
				t.Errorf("code = %q, want %q (%v)", e.Code, tt.code, err)
			}
			p := e.Problems[0]
			if !strings.Contains(p.String(), tt.want) {
				t.Errorf("first problem = %q, want it to contain %q", p.String(), tt.want)
			}
			if p.Index != tt.index || p.Line != tt.line {
				t.Errorf("first problem at index %d line %d, want index %d line %d (%q)", p.Index, p.Line, tt.index, tt.line, p)
			}
		})
	}
}

// TestAddLines: the rules' problems with events of an NDJSON body get the
// line the event was on, counted as Decode counts them (blank lines, CRLF).
func TestAddLines(t *testing.T) {
	body := []byte("{\"type\":\"a\"}\r\n\r\n \t\n{\"type\":\"BAD\"}\r\n{\"type\":\"c\"}")
	events, err := Decode(body, ndjsonMT, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = NormalizeAll(events, testNow, Limits{})
	AddLines(err, body)
	var e *Error
	if !errors.As(err, &e) || e.Problems[0].Index != 1 || e.Problems[0].Line != 4 {
		t.Fatalf("NormalizeAll then AddLines: %v", err)
	}
	AddLines(errors.New("not an *Error"), body) // left alone, no panic
}

// TestUnknownFieldListsTheFields: the message for an unknown field lists
// the fields an event has, and nothing else.
func TestUnknownFieldListsTheFields(t *testing.T) {
	_, err := Decode([]byte(`{"type":"a","user":"bob"}`), jsonMT, Limits{})
	var e *Error
	if !errors.As(err, &e) || !strings.HasSuffix(e.Problems[0].Message, "attributes, content, trace_id, span_id") {
		t.Fatalf("Decode: %v", err)
	}
}

func TestDecodeUnsupportedMediaType(t *testing.T) {
	for _, mt := range []string{"", "text/plain", "application/json; charset=utf-8", "application/jsonl"} {
		_, err := Decode([]byte(`{"type":"a"}`), mt, Limits{})
		if !errors.Is(err, ErrMediaType) {
			t.Errorf("Decode(media type %q) error = %v, want ErrMediaType", mt, err)
		}
	}
}

// TestDecodeListsEveryBadEvent checks that one request with several bad
// events gets one error naming each of them, in order.
func TestDecodeListsEveryBadEvent(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		body := `{"events":[{"type":"a"},{"type":1},{"type":"c"},{"type":"d","x":1,"actor":"me"}]}`
		_, err := Decode([]byte(body), jsonMT, Limits{})
		assertProblems(t, err, []string{
			"events[1].type: must be a string, not a number",
			"events[3].actor: must be an object, not a string",
			"events[3].x: unknown field",
		})
	})
	t.Run("ndjson", func(t *testing.T) {
		body := "{\"type\":\"a\"}\n{\"type\":1}\n\n{oops}\n{\"type\":\"d\"}\n{\"type\":\"e\"} x\n"
		_, err := Decode([]byte(body), ndjsonMT, Limits{})
		assertProblems(t, err, []string{
			"line 2: events[1].type: must be a string, not a number",
			"line 4: events[2]: invalid JSON: unexpected character 'o', expected a string key",
			"line 6: events[4]: trailing data after the event",
		})
	})
}

// assertProblems checks that err is an *Error whose problems, rendered,
// start with the wanted strings, in order.
func assertProblems(t *testing.T, err error, want []string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	var got []string
	for _, p := range e.Problems {
		got = append(got, p.String())
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(got[i], want[i])
	}
	if !ok {
		t.Errorf("problems:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestDecodeDeepNestingIsCheap sends a million levels of nesting followed
// by garbage: Decode must refuse it for its depth, which shows that it
// stopped reading early, and quickly.
func TestDecodeDeepNestingIsCheap(t *testing.T) {
	for _, shape := range []string{"[", `{"a":`, `[{"b":`} {
		body := `{"type":"a","content":` + strings.Repeat(shape, 1_000_000) + "\xff garbage"
		for _, mt := range []string{jsonMT, ndjsonMT} {
			start := time.Now()
			_, err := Decode([]byte(body), mt, Limits{})
			elapsed := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "nesting deeper than 64 levels") {
				t.Errorf("Decode(%q × 1e6, %s) error = %v, want a nesting error", shape, mt, err)
			}
			if elapsed > time.Second {
				t.Errorf("Decode(%q × 1e6, %s) took %v", shape, mt, elapsed)
			}
		}
	}
	// Refusing it allocates little, however deep the body: the decoders
	// stop at a fixed depth. (About 70 allocations either way, a few more
	// under the race detector, whose sync.Pool drops items at random.)
	allocs := func(levels int) float64 {
		body := []byte(`{"type":"a","content":` + strings.Repeat("[", levels))
		return testing.AllocsPerRun(5, func() { Decode(body, jsonMT, Limits{}) })
	}
	if a, b := allocs(20_000), allocs(1_000_000); a > 100 || b > 100 {
		t.Errorf("refusing a deep body took %v allocations, %v for one 50 times deeper", a, b)
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{Index: 2, Field: "events[2].tenant", Message: "must match [a-z0-9][a-z0-9_-]{0,62}"}, "events[2].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{Problem{Index: 0, Line: 3, Field: "events[0].type", Message: "is required"}, "line 3: events[0].type: is required"},
		{Problem{Index: -1, Message: "body is empty"}, "body is empty"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	e := &Error{Code: CodeInvalid}
	for i := range 7 {
		e.Problems = append(e.Problems, Problem{Index: i, Field: fmt.Sprintf("events[%d].type", i), Message: "is required"})
	}
	want := "invalid event: events[0].type: is required; events[1].type: is required; events[2].type: is required; " +
		"events[3].type: is required; events[4].type: is required; and 2 more"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestDepthLimitBothDecoders: at and around the nesting limit, in content
// and in attribute values, the fast decoder (which checks only those
// parts) refuses exactly what the precise one refuses.
func TestDepthLimitBothDecoders(t *testing.T) {
	lim := Limits{MaxDepth: 12}
	for levels := 8; levels <= 14; levels++ {
		nested := strings.Repeat(`{"k":`, levels) + "1" + strings.Repeat("}", levels)
		arrays := strings.Repeat("[", levels) + strings.Repeat("]", levels)
		for _, body := range []string{
			`{"type":"a","content":` + nested + `}`,
			`{"type":"a","content":` + arrays + `}`,
			`{"type":"a","attributes":{"x":` + nested + `}}`,
			`{"type":"a","attributes":{"s":"v","x":` + arrays + `}}`,
		} {
			_, fastErr := Decode([]byte(body), jsonMT, lim)
			fastDecode = false
			_, preciseErr := Decode([]byte(body), jsonMT, lim)
			fastDecode = true
			if (fastErr == nil) != (preciseErr == nil) {
				t.Errorf("%d levels, %.40s…: fast decoder %v, precise %v", levels, body, fastErr, preciseErr)
			}
			deep := strings.Contains(fmt.Sprint(preciseErr), "nesting deeper")
			if wantDeep := levels+1 > lim.MaxDepth && strings.Contains(body, "content") || levels+2 > lim.MaxDepth && strings.Contains(body, "attributes"); deep != wantDeep {
				t.Errorf("%d levels, %.40s…: error %v; want a nesting error: %v", levels, body, preciseErr, wantDeep)
			}
		}
	}
}

// TestPlainAttributes: Decode notes the long attribute values that are
// plain, and only those; Normalize and Canonical give the same record as
// without the notes; a value with the same bytes in other memory is not
// taken for a noted one.
func TestPlainAttributes(t *testing.T) {
	events, err := Decode([]byte(longAttributes), MediaTypeNDJSON, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	e := &events[0]
	for _, name := range []string{"plain", "plain2", "plain3", "plain4"} {
		if !e.plain.has(e.Attributes[name].(string)) {
			t.Errorf("attribute %q is not noted as plain", name)
		}
	}
	for _, name := range []string{"del", "accent", "escaped", "tab", "quote", "plain5"} { // plain5: no slot left
		if e.plain.has(e.Attributes[name].(string)) {
			t.Errorf("attribute %q is noted as plain", name)
		}
	}
	if s := e.Attributes["plain"].(string); e.plain.has(strings.Clone(s)) {
		t.Error("a copy of a noted string is taken for it")
	}

	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	delete(e.Attributes, "del") // a control character: Normalize refuses it
	r, _, err := Normalize(e, now, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if r.plain != e.plain {
		t.Error("the record does not keep the event's notes")
	}
	got, err := Canonical(&r)
	if err != nil {
		t.Fatal(err)
	}
	if r.plain != (plainTexts{}) {
		t.Error("Canonical kept the notes")
	}
	events, err = Decode([]byte(longAttributes), MediaTypeNDJSON, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	events[0].plain = plainTexts{}
	delete(events[0].Attributes, "del")
	r, _, err = Normalize(&events[0], now, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want, err := Canonical(&r)
	if err != nil || string(got) != string(want) {
		t.Fatalf("with notes:\n%s\nwithout:\n%s (%v)", got, want, err)
	}

	// A noted value is still held to the length limit.
	long := `{"type":"a","attributes":{"s":"` + strings.Repeat("x", maxAttrValueBytes+1) + `"}}`
	events, err = Decode([]byte(long), MediaTypeNDJSON, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Normalize(&events[0], now, DefaultLimits()); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("Normalize of a noted value over the limit: %v", err)
	}
}

// TestDecodeCopiesTheBody: the events Decode returns, and its errors, keep
// nothing of the body's memory but the content (the server reuses request
// buffers once it has sealed the content), on the fast path and the
// precise one.
func TestDecodeCopiesTheBody(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "golden", "event.json"))
	if err != nil {
		t.Fatal(err)
	}
	nested := `{"id":"n1","type":"a","attributes":{"o":{"k":[1,"a"]},"n":1.5,"s":"\u00e9t\u00e9"},"content":{"m":"hi"}}`
	for _, tt := range []struct {
		name, body, mediaType string
	}{
		{"golden", string(golden), MediaTypeJSON},
		{"batch", `{"events":[` + string(bytes.TrimSpace(golden)) + `,` + nested + `]}`, MediaTypeJSON},
		{"ndjson", longAttributes + "\n" + nested + "\n", MediaTypeNDJSON},
		{"bad", longAttributes + "\n" + `{"id":"b","type":1,"attributes":{"k\u00e9y":"v"}}` + "\n", MediaTypeNDJSON},
	} {
		for _, fast := range []bool{true, false} {
			body := []byte(tt.body)
			fastDecode = fast
			events, err := Decode(body, tt.mediaType, DefaultLimits())
			want, wantErr := Decode([]byte(tt.body), tt.mediaType, DefaultLimits())
			fastDecode = true
			uncheck(t, events)
			uncheck(t, want)
			if !reflect.DeepEqual(events, want) {
				t.Fatalf("%s (fast %v): Decode gives\n%#v\nfrom the same body\n%#v", tt.name, fast, events, want)
			}
			for i := range body {
				body[i] = 'x'
			}
			for i := range events {
				events[i].Content, want[i].Content = nil, nil
			}
			if !reflect.DeepEqual(events, want) || fmt.Sprint(err) != fmt.Sprint(wantErr) {
				t.Errorf("%s (fast %v): after the body was overwritten, Decode's result is\n%#v, %v\nnot\n%#v, %v",
					tt.name, fast, events, err, want, wantErr)
			}
		}
	}
}

// TestNotePlain: strings a caller notes as plain are written as they would
// be without the note, once; the notes are gone after Canonical.
func TestNotePlain(t *testing.T) {
	pseudonym := "hmac-sha256:" + strings.Repeat("0123456789abcdef", 4)
	digest := "sha256:" + strings.Repeat("fedcba9876543210", 4)
	r := Record{ID: "e1", Type: "ai.inference", Tenant: "acme", Time: time.Unix(1, 0).UTC(), ReceivedAt: time.Unix(2, 0).UTC(),
		Actor: &Actor{ID: pseudonym, Type: "user"}, Content: &ContentRef{Digest: digest, KeyID: "dk-1", Size: 3}}
	want, err := Canonical(&r)
	if err != nil {
		t.Fatal(err)
	}
	r.NotePlain(pseudonym)
	r.NotePlain(digest)
	if !r.plain.has(pseudonym) || !r.plain.has(digest) {
		t.Fatal("the notes were not taken")
	}
	got, err := Canonical(&r)
	if err != nil || string(got) != string(want) {
		t.Fatalf("with notes:\n%s\nwithout:\n%s (%v)", got, want, err)
	}
	if r.plain != (plainTexts{}) {
		t.Error("Canonical kept the notes")
	}
}

// TestErrorsDoNotRepeatContent: problems under content name the place by
// the event and the byte offset, not by content's member names, which are
// content (a key may be a patient's name); other fields are named in full.
func TestErrorsDoNotRepeatContent(t *testing.T) {
	for _, body := range []string{
		`{"type":"t.b","content":{"SECRET-john-doe":1,"SECRET-john-doe":2}}`,
		`{"type":"t.b","content":{"SECRET-bob":"` + "\xff" + `"}}`,
		`{"type":"t.b","content":{"SECRET-eve":"\ud800"}}`,
		`{"type":"t.b","content":{"SECRET-carol":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}}`,
		`{"events":[{"type":"t.b","content":{"SECRET-dan":{"SECRET-x":1,"SECRET-x":1}}}]}`,
		"{\"type\":\"t.b\",\"content\":{\"SECRET-fay\":1,\"SECRET-fay\":1}}\n",
	} {
		for _, mt := range []string{jsonMT, MediaTypeNDJSON} {
			if mt == MediaTypeNDJSON && strings.HasPrefix(body, `{"events"`) {
				continue // a batch is one event of NDJSON, with an unknown field
			}
			_, err := Decode([]byte(body), mt, DefaultLimits())
			var pe *Error
			if !errors.As(err, &pe) || len(pe.Problems) == 0 {
				t.Fatalf("%.60s (%s): %v, want problems", body, mt, err)
			}
			for _, p := range pe.Problems {
				if strings.Contains(p.Field+p.Message, "SECRET") || !strings.Contains(p.Field, ".content") {
					t.Errorf("%.60s (%s): problem at %q: %q", body, mt, p.Field, p.Message)
				}
			}
		}
	}
	// Outside content the path is kept.
	_, err := Decode([]byte(`{"type":"t.b","attributes":{"k":1,"k":2}}`), jsonMT, DefaultLimits())
	if err == nil || !strings.Contains(err.Error(), `attributes.k:`) {
		t.Fatalf("duplicate attribute: %v", err)
	}
}
