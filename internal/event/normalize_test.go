package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/uuid"
)

var testNow = time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.FixedZone("CEST", 2*60*60))

// decodeOne decodes body as a single application/json event.
func decodeOne(t *testing.T, body string) *Event {
	t.Helper()
	events, err := Decode([]byte(body), jsonMT, Limits{})
	if err != nil {
		t.Fatalf("Decode(%s): %v", body, err)
	}
	return &events[0]
}

func TestNormalizeFillsAndNormalizes(t *testing.T) {
	e := decodeOne(t, `{
		"id": "evt-1",
		"type": "ai.tool_call",
		"time": "2025-01-02T03:04:05.5-07:00",
		"tenant": "acme-eu_1",
		"actor": {"id": "u", "type": "service", "ip": "2001:0DB8:0:0::1", "user_agent": "sdk/1.0", "session_id": "s"},
		"action": "search",
		"outcome": "denied",
		"resource": {"type": "index", "id": "i", "name": "Zoë ✓"},
		"model": {"provider": "anthropic", "name": "claude", "version": "4", "digest": "sha256:ab"},
		"dataset": {"name": "d", "version": "1", "digest": "x"},
		"api": {"name": "a", "version": "v1"},
		"prompt": {"id": "p", "version": "2", "digest": "y"},
		"attributes": {"gen_ai.usage.input_tokens": 12, "temp": 0.7, "ok": false, "note": "two\nlines", "max": 9007199254740992, "min": -9007199254740992, "z": -0.0},
		"content": {"messages": [{"role": "user", "content": "hi"}]},
		"trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736",
		"span_id": "00F067AA0BA902B7"
	}`)
	r, content, err := Normalize(e, testNow, Limits{})
	if err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	want := Record{
		ID:         "evt-1",
		Type:       "ai.tool_call",
		Time:       time.Date(2025, 1, 2, 10, 4, 5, 500_000_000, time.UTC),
		ReceivedAt: testNow.UTC(),
		Tenant:     "acme-eu_1",
		Actor:      &Actor{ID: "u", Type: "service", IP: "2001:db8::1", UserAgent: "sdk/1.0", SessionID: "s"},
		Action:     "search",
		Outcome:    "denied",
		Resource:   &Resource{Type: "index", ID: "i", Name: "Zoë ✓"},
		Model:      &Model{Provider: "anthropic", Name: "claude", Version: "4", Digest: "sha256:ab"},
		Dataset:    &Dataset{Name: "d", Version: "1", Digest: "x"},
		API:        &API{Name: "a", Version: "v1"},
		Prompt:     &Prompt{ID: "p", Version: "2", Digest: "y"},
		Attributes: map[string]any{"gen_ai.usage.input_tokens": 12.0, "temp": 0.7, "ok": false, "note": "two\nlines",
			"max": 9007199254740992.0, "min": -9007199254740992.0, "z": 0.0},
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		SpanID:  "00f067aa0ba902b7",
	}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("Normalize =\n%+v\nwant\n%+v", r, want)
	}
	if r.Time.Location() != time.UTC || r.ReceivedAt.Location() != time.UTC {
		t.Errorf("times not in UTC: %v, %v", r.Time, r.ReceivedAt)
	}
	if string(content) != `{"messages": [{"role": "user", "content": "hi"}]}` {
		t.Errorf("content = %s, want it as sent", content)
	}
	if math.Signbit(r.Attributes["z"].(float64)) {
		t.Errorf("-0 was kept as -0")
	}
}

func TestNormalizeDefaults(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		check func(t *testing.T, r Record, content []byte)
	}{
		{"minimal event", `{"type":"login"}`, func(t *testing.T, r Record, content []byte) {
			id, err := uuid.Parse(r.ID)
			if err != nil || id.Version() != 7 {
				t.Errorf("id = %q, want a UUIDv7", r.ID)
			}
			if r.Tenant != "default" {
				t.Errorf("tenant = %q, want default", r.Tenant)
			}
			if !r.Time.Equal(testNow) || r.Time.Location() != time.UTC {
				t.Errorf("time = %v, want now in UTC", r.Time)
			}
			if r.Actor != nil || r.Attributes != nil || r.Content != nil || content != nil {
				t.Errorf("absent fields became %+v, content %q", r, content)
			}
		}},
		{"empty strings are absent", `{"type":"a","id":"","tenant":"","time":""}`, func(t *testing.T, r Record, content []byte) {
			if r.ID == "" || r.Tenant != "default" || !r.Time.Equal(testNow) {
				t.Errorf("defaults not applied: %+v", r)
			}
		}},
		{"empty objects become nil", `{"type":"a","actor":{},"resource":{"id":""},"model":{},"dataset":{},"api":{},"prompt":{},"attributes":{}}`,
			func(t *testing.T, r Record, content []byte) {
				if r.Actor != nil || r.Resource != nil || r.Model != nil || r.Dataset != nil || r.API != nil || r.Prompt != nil || r.Attributes != nil {
					t.Errorf("empty objects kept: %+v", r)
				}
			}},
		{"null content is absent", `{"type":"a","content":null}`, func(t *testing.T, r Record, content []byte) {
			if content != nil {
				t.Errorf("content = %q, want nil", content)
			}
		}},
		{"scalar content", `{"type":"a","content":"just text"}`, func(t *testing.T, r Record, content []byte) {
			if string(content) != `"just text"` {
				t.Errorf("content = %q", content)
			}
		}},
		{"false content is content", `{"type":"a","content":false}`, func(t *testing.T, r Record, content []byte) {
			if string(content) != `false` {
				t.Errorf("content = %q", content)
			}
		}},
		{"IPv4", `{"type":"a","actor":{"ip":"192.0.2.10"}}`, func(t *testing.T, r Record, content []byte) {
			if r.Actor.IP != "192.0.2.10" {
				t.Errorf("ip = %q", r.Actor.IP)
			}
		}},
		{"lowercase t and z in time", `{"type":"a","time":"2025-01-02t03:04:05z"}`, func(t *testing.T, r Record, content []byte) {
			if !r.Time.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("time = %v", r.Time)
			}
		}},
		{"earliest time", `{"type":"a","time":"0001-01-01T00:00:00Z"}`, func(t *testing.T, r Record, content []byte) {
			if r.Time.Year() != 1 {
				t.Errorf("time = %v", r.Time)
			}
		}},
		{"far future time", `{"type":"a","time":"9999-12-31T23:59:59.999999999Z"}`, func(t *testing.T, r Record, content []byte) {
			if r.Time.Year() != 9999 {
				t.Errorf("time = %v", r.Time)
			}
		}},
		{"single-segment type and edge tenants", `{"type":"x","tenant":"0"}`, func(t *testing.T, r Record, content []byte) {
			if r.Type != "x" || r.Tenant != "0" {
				t.Errorf("record = %+v", r)
			}
		}},
		{"63-byte tenant", `{"type":"a.b_c.d9","tenant":"` + strings.Repeat("a", 63) + `"}`, func(t *testing.T, r Record, content []byte) {
			if len(r.Tenant) != 63 {
				t.Errorf("tenant = %q", r.Tenant)
			}
		}},
		{"128-byte id", `{"type":"a","id":"` + strings.Repeat("é", 64) + `"}`, func(t *testing.T, r Record, content []byte) {
			if len(r.ID) != 128 {
				t.Errorf("id = %q", r.ID)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, content, err := Normalize(decodeOne(t, tt.body), testNow, Limits{})
			if err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			tt.check(t, r, content)
		})
	}
}

func TestNormalizeRefuses(t *testing.T) {
	manyAttrs := func(n, valueLen int) string {
		var b strings.Builder
		b.WriteString(`{"type":"a","attributes":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":"%s"`, i, strings.Repeat("v", valueLen))
		}
		b.WriteString(`}}`)
		return b.String()
	}
	tests := []struct {
		name string
		body string
		lim  Limits
		code string
		want string // the only problem, rendered
	}{
		{"id too long", `{"type":"a","id":"` + strings.Repeat("x", 129) + `"}`, Limits{}, CodeInvalid, "events[0].id: must be at most 128 bytes"},
		{"id with space", `{"type":"a","id":"a b"}`, Limits{}, CodeInvalid, "events[0].id: must not contain whitespace or control characters"},
		{"id with no-break space", `{"type":"a","id":"a\u00a0b"}`, Limits{}, CodeInvalid, "events[0].id: must not contain whitespace"},
		{"id with NUL", `{"type":"a","id":"a\u0000"}`, Limits{}, CodeInvalid, "events[0].id: must not contain whitespace or control characters"},

		{"type missing", `{"id":"x"}`, Limits{}, CodeInvalid, "events[0].type: is required"},
		{"type uppercase", `{"type":"AI.Inference"}`, Limits{}, CodeInvalid, "events[0].type: must be lowercase dotted words"},
		{"type starts with digit", `{"type":"1ai"}`, Limits{}, CodeInvalid, "events[0].type: must be lowercase dotted words"},
		{"type segment starts with digit", `{"type":"ai.2x"}`, Limits{}, CodeInvalid, "events[0].type: must be lowercase dotted words"},
		{"type empty segment", `{"type":"ai..x"}`, Limits{}, CodeInvalid, "events[0].type: must be lowercase dotted words"},
		{"type trailing dot", `{"type":"ai."}`, Limits{}, CodeInvalid, "events[0].type: must be lowercase dotted words"},
		{"type with wildcard", `{"type":"ai.*"}`, Limits{}, CodeInvalid, "events[0].type: must be lowercase dotted words"},
		{"type with dash", `{"type":"ai.tool-call"}`, Limits{}, CodeInvalid, "events[0].type: must be lowercase dotted words"},
		{"type too long", `{"type":"` + strings.Repeat("a", 129) + `"}`, Limits{}, CodeInvalid, "events[0].type: must be at most 128 bytes"},

		{"time date only", `{"type":"a","time":"2025-01-02"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time without zone", `{"type":"a","time":"2025-01-02T03:04:05"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time with space", `{"type":"a","time":"2025-01-02 03:04:05Z"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time with comma", `{"type":"a","time":"2025-01-02T03:04:05,5Z"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time unix seconds", `{"type":"a","time":"1735787045"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time month 13", `{"type":"a","time":"2025-13-02T03:04:05Z"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time offset of 24 hours", `{"type":"a","time":"2025-01-02T15:04:05+24:00"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time offset of 60 minutes", `{"type":"a","time":"2025-01-02T15:04:05-01:60"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time year 0", `{"type":"a","time":"0000-06-01T00:00:00Z"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp in the years 0001 to 9999"},
		{"time before year 1 in UTC", `{"type":"a","time":"0001-01-01T00:00:00+01:00"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},
		{"time after 9999 in UTC", `{"type":"a","time":"9999-12-31T23:00:00-02:00"}`, Limits{}, CodeInvalid, "events[0].time: must be an RFC 3339 timestamp"},

		{"tenant parent directory", `{"type":"a","tenant":"../x"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant with slash", `{"type":"a","tenant":"a/b"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant uppercase", `{"type":"a","tenant":"A"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant percent-encoded dots", `{"type":"a","tenant":"%2e%2e"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant dot", `{"type":"a","tenant":"."}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant leading dash", `{"type":"a","tenant":"-a"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant with NUL", `{"type":"a","tenant":"a\u0000"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant with trailing newline", `{"type":"a","tenant":"a\n"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant with fullwidth letter", `{"type":"a","tenant":"ａ"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},
		{"tenant too long", `{"type":"a","tenant":"` + strings.Repeat("a", 64) + `"}`, Limits{}, CodeInvalid, "events[0].tenant: must match [a-z0-9][a-z0-9_-]{0,62}"},

		{"actor type", `{"type":"a","actor":{"type":"admin"}}`, Limits{}, CodeInvalid, "events[0].actor.type: must be one of user, service, system"},
		{"actor type case", `{"type":"a","actor":{"type":"User"}}`, Limits{}, CodeInvalid, "events[0].actor.type: must be one of user, service, system"},
		{"outcome", `{"type":"a","outcome":"ok"}`, Limits{}, CodeInvalid, "events[0].outcome: must be one of success, failure, denied"},
		{"actor ip", `{"type":"a","actor":{"ip":"1.2.3"}}`, Limits{}, CodeInvalid, "events[0].actor.ip: must be an IP address"},
		{"actor ip host name", `{"type":"a","actor":{"ip":"localhost"}}`, Limits{}, CodeInvalid, "events[0].actor.ip: must be an IP address"},
		{"actor ip with port", `{"type":"a","actor":{"ip":"192.0.2.1:80"}}`, Limits{}, CodeInvalid, "events[0].actor.ip: must be an IP address"},

		{"trace id short", `{"type":"a","trace_id":"abc"}`, Limits{}, CodeInvalid, "events[0].trace_id: must be 32 hexadecimal digits"},
		{"trace id not hex", `{"type":"a","trace_id":"` + strings.Repeat("g", 32) + `"}`, Limits{}, CodeInvalid, "events[0].trace_id: must be 32 hexadecimal digits"},
		{"trace id zero", `{"type":"a","trace_id":"` + strings.Repeat("0", 32) + `"}`, Limits{}, CodeInvalid, "events[0].trace_id: must not be all zeros"},
		{"span id long", `{"type":"a","span_id":"` + strings.Repeat("a", 17) + `"}`, Limits{}, CodeInvalid, "events[0].span_id: must be 16 hexadecimal digits"},
		{"span id zero", `{"type":"a","span_id":"0000000000000000"}`, Limits{}, CodeInvalid, "events[0].span_id: must not be all zeros"},

		{"action with NUL", `{"type":"a","action":"lo\u0000gin"}`, Limits{}, CodeInvalid, "events[0].action: must not contain control characters"},
		{"action with newline", `{"type":"a","action":"login\nfake log line"}`, Limits{}, CodeInvalid, "events[0].action: must not contain control characters"},
		{"action with C1 control", `{"type":"a","action":"a\u009bb"}`, Limits{}, CodeInvalid, "events[0].action: must not contain control characters"},
		{"action too long", `{"type":"a","action":"` + strings.Repeat("a", 1025) + `"}`, Limits{}, CodeInvalid, "events[0].action: must be at most 1024 bytes"},
		{"resource name too long", `{"type":"a","resource":{"name":"` + strings.Repeat("é", 513) + `"}}`, Limits{}, CodeInvalid, "events[0].resource.name: must be at most 1024 bytes"},
		{"model digest control", `{"type":"a","model":{"digest":"\u0007"}}`, Limits{}, CodeInvalid, "events[0].model.digest: must not contain control characters"},
		{"dataset name control", `{"type":"a","dataset":{"name":"\t"}}`, Limits{}, CodeInvalid, "events[0].dataset.name: must not contain control characters"},
		{"api version too long", `{"type":"a","api":{"version":"` + strings.Repeat("1", 1025) + `"}}`, Limits{}, CodeInvalid, "events[0].api.version: must be at most 1024 bytes"},
		{"prompt id control", `{"type":"a","prompt":{"id":"\r"}}`, Limits{}, CodeInvalid, "events[0].prompt.id: must not contain control characters"},
		{"actor user agent control", `{"type":"a","actor":{"user_agent":"\u001b[31m"}}`, Limits{}, CodeInvalid, "events[0].actor.user_agent: must not contain control characters"},
		{"actor session control", `{"type":"a","actor":{"session_id":"\u007f"}}`, Limits{}, CodeInvalid, "events[0].actor.session_id: must not contain control characters"},

		{"too many attributes", manyAttrs(257, 1), Limits{}, CodeInvalid, "events[0].attributes: must have at most 256 keys"},
		{"attribute key with space", `{"type":"a","attributes":{"a b":1}}`, Limits{}, CodeInvalid, `events[0].attributes["a b"]: key must match [A-Za-z0-9_.\-/:]+`},
		{"attribute key non-ASCII", `{"type":"a","attributes":{"été":1}}`, Limits{}, CodeInvalid, `events[0].attributes["été"]: key must match`},
		{"attribute key empty", `{"type":"a","attributes":{"":1}}`, Limits{}, CodeInvalid, `events[0].attributes[""]: key must be 1 to 256 bytes`},
		{"attribute key too long", `{"type":"a","attributes":{"` + strings.Repeat("k", 257) + `":1}}`, Limits{}, CodeInvalid, `events[0].attributes["kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"…]: key must be 1 to 256 bytes`},
		{"attribute null", `{"type":"a","attributes":{"x":null}}`, Limits{}, CodeInvalid, "events[0].attributes.x: must be a string, number or boolean, not null"},
		{"attribute object", `{"type":"a","attributes":{"x":{"y":1}}}`, Limits{}, CodeInvalid, "events[0].attributes.x: must be a string, number or boolean, not an object"},
		{"attribute array", `{"type":"a","attributes":{"x":[1]}}`, Limits{}, CodeInvalid, "events[0].attributes.x: must be a string, number or boolean, not an array"},
		{"attribute string too long", `{"type":"a","attributes":{"x":"` + strings.Repeat("v", 4097) + `"}}`, Limits{}, CodeInvalid, "events[0].attributes.x: must be at most 4096 bytes"},
		{"attribute string with NUL", `{"type":"a","attributes":{"x":"a\u0000"}}`, Limits{}, CodeInvalid, "events[0].attributes.x: must not contain control characters other than tab, newline and carriage return"},
		{"attribute integer above 2^53", `{"type":"a","attributes":{"x":9007199254740993}}`, Limits{}, CodeInvalid, "events[0].attributes.x: integers must lie within ±9007199254740992 (2^53)"},
		{"attribute integer below -2^53", `{"type":"a","attributes":{"x":-9007199254740993}}`, Limits{}, CodeInvalid, "events[0].attributes.x: integers must lie within"},
		{"attribute integer beyond int64", `{"type":"a","attributes":{"x":123456789012345678901234567890}}`, Limits{}, CodeInvalid, "events[0].attributes.x: integers must lie within"},
		{"attribute number overflows", `{"type":"a","attributes":{"x":1e400}}`, Limits{}, CodeInvalid, "events[0].attributes.x: must be a finite number"},
		{"attribute number overflows negative", `{"type":"a","attributes":{"x":-1.5e309}}`, Limits{}, CodeInvalid, "events[0].attributes.x: must be a finite number"},

		{"content too large", `{"type":"a","content":"` + strings.Repeat("x", 100) + `"}`, Limits{MaxContentBytes: 100}, CodeTooLarge, "events[0].content: is 102 bytes; the limit is 100 bytes"},
		{"metadata too large", manyAttrs(256, 4096), Limits{}, CodeTooLarge, "events[0]: metadata too large for one record: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, content, err := Normalize(decodeOne(t, tt.body), testNow, tt.lim)
			if err == nil {
				t.Fatalf("Normalize succeeded: %+v", r)
			}
			if content != nil || !reflect.DeepEqual(r, Record{}) {
				t.Errorf("Normalize returned a record along with an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if e.Code != tt.code {
				t.Errorf("code = %q, want %q", e.Code, tt.code)
			}
			if len(e.Problems) != 1 || e.Problems[0].Index != 0 || !strings.HasPrefix(e.Problems[0].String(), tt.want) {
				t.Errorf("problems = %q, want one at index 0 starting %q", e.Problems, tt.want)
			}
		})
	}
}

// TestNormalizeGoValues covers events built in Go (by the proxy and the
// OTLP receiver) rather than decoded, whose values Decode never checked.
func TestNormalizeGoValues(t *testing.T) {
	tests := []struct {
		name  string
		event Event
		want  string // the only problem, rendered; empty for success
		attrs map[string]any
	}{
		{"Go numbers", Event{Type: "a", Attributes: map[string]any{"i": 7, "i64": int64(-1 << 53), "u8": uint8(255), "f32": float32(0.5), "f": 2.5, "n": json.Number("1e3")}},
			"", map[string]any{"i": 7.0, "i64": float64(-1 << 53), "u8": 255.0, "f32": 0.5, "f": 2.5, "n": 1000.0}},
		{"int64 beyond 2^53", Event{Type: "a", Attributes: map[string]any{"x": int64(1 << 60)}}, "events[0].attributes.x: integers must lie within", nil},
		{"uint64 beyond 2^53", Event{Type: "a", Attributes: map[string]any{"x": uint64(1<<53 + 1)}}, "events[0].attributes.x: integers must lie within", nil},
		{"NaN", Event{Type: "a", Attributes: map[string]any{"x": math.NaN()}}, "events[0].attributes.x: must be a finite number", nil},
		{"infinity", Event{Type: "a", Attributes: map[string]any{"x": math.Inf(-1)}}, "events[0].attributes.x: must be a finite number", nil},
		{"bad json.Number", Event{Type: "a", Attributes: map[string]any{"x": json.Number("0x10")}}, "events[0].attributes.x: must be a JSON number", nil},
		{"nested map", Event{Type: "a", Attributes: map[string]any{"x": map[string]any{}}}, "events[0].attributes.x: must be a string, number or boolean, not an object", nil},
		{"other Go type", Event{Type: "a", Attributes: map[string]any{"x": time.Second}}, "events[0].attributes.x: must be a string, number or boolean, not a Go time.Duration", nil},
		{"invalid UTF-8 attribute", Event{Type: "a", Attributes: map[string]any{"x": "\xff"}}, "events[0].attributes.x: must be valid UTF-8", nil},
		{"invalid UTF-8 action", Event{Type: "a", Action: "a\xffb"}, "events[0].action: must be valid UTF-8", nil},
		{"invalid UTF-8 id", Event{Type: "a", ID: "\xff"}, "events[0].id: must be valid UTF-8", nil},
		{"invalid UTF-8 actor", Event{Type: "a", Actor: &Actor{ID: "\xc3"}}, "events[0].actor.id: must be valid UTF-8", nil},
		{"content not JSON", Event{Type: "a", Content: json.RawMessage(`{"a":`)}, "events[0].content: invalid JSON: unexpected end of input", nil},
		{"content two values", Event{Type: "a", Content: json.RawMessage(`1 2`)}, "events[0].content: must be a single JSON value", nil},
		{"content invalid UTF-8", Event{Type: "a", Content: json.RawMessage("\"\xff\"")}, "events[0].content: invalid UTF-8 in string (at byte 1 of the content)", nil},
		{"content too deep", Event{Type: "a", Content: json.RawMessage(strings.Repeat("[", 64))}, "events[0].content: nesting deeper than 64 levels", nil},
		{"content of spaces is absent", Event{Type: "a", Content: json.RawMessage(" \n")}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _, err := Normalize(&tt.event, testNow, Limits{})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Normalize: %v", err)
				}
				if !reflect.DeepEqual(r.Attributes, tt.attrs) {
					t.Errorf("attributes = %#v, want %#v", r.Attributes, tt.attrs)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) != 1 || !strings.HasPrefix(e.Problems[0].String(), tt.want) {
				t.Errorf("error = %v, want one problem starting %q", err, tt.want)
			}
		})
	}
}

func TestNormalizeReportsEveryProblemOfAnEvent(t *testing.T) {
	e := decodeOne(t, `{"type":"Bad","tenant":"A","time":"yesterday","actor":{"type":"robot","ip":"x"},"outcome":"maybe","span_id":"0"}`)
	_, _, err := Normalize(e, testNow, Limits{})
	assertProblems(t, err, []string{
		"events[0].type:", "events[0].time:", "events[0].tenant:", "events[0].actor.type:", "events[0].actor.ip:",
		"events[0].outcome:", "events[0].span_id:",
	})
}

func TestNormalizeAll(t *testing.T) {
	body := `{"events":[
		{"type":"ok.one"},
		{"type":"ok.two","tenant":"../etc"},
		{"type":"ok.three"},
		{"type":"ok.four","outcome":"meh","actor":{"ip":"999.1.1.1"}},
		{"type":"ok.five"}
	]}`
	events, err := Decode([]byte(body), jsonMT, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	records, contents, err := NormalizeAll(events, testNow, Limits{})
	if records != nil || contents != nil {
		t.Errorf("NormalizeAll returned records along with an error")
	}
	assertProblems(t, err, []string{
		"events[1].tenant: must match [a-z0-9][a-z0-9_-]{0,62}",
		"events[3].actor.ip: must be an IP address",
		"events[3].outcome: must be one of success, failure, denied",
	})
	var e *Error
	errors.As(err, &e)
	if e.Problems[0].Index != 1 || e.Problems[1].Index != 3 {
		t.Errorf("problem indexes = %d, %d; want 1, 3", e.Problems[0].Index, e.Problems[1].Index)
	}

	// The good events alone go through, each with its own id and content.
	good := []Event{events[0], events[2], events[4]}
	good[1].Content = json.RawMessage(`[1]`)
	records, contents, err = NormalizeAll(good, testNow, Limits{})
	if err != nil {
		t.Fatalf("NormalizeAll: %v", err)
	}
	if len(records) != 3 || len(contents) != 3 || records[1].Type != "ok.three" || string(contents[1]) != "[1]" || contents[0] != nil {
		t.Errorf("NormalizeAll = %+v, %q", records, contents)
	}
	if records[0].ID == records[1].ID {
		t.Errorf("generated ids collide: %q", records[0].ID)
	}
}

func TestNormalizeAllRefusesBatchSize(t *testing.T) {
	_, _, err := NormalizeAll(nil, testNow, Limits{})
	assertProblems(t, err, []string{"events: batch is empty"})
	_, _, err = NormalizeAll(make([]Event, 3), testNow, Limits{MaxBatchEvents: 2})
	assertProblems(t, err, []string{"events: more than 2 events in one request"})
	if e := (*Error)(nil); !errors.As(err, &e) || e.Code != CodeTooLarge {
		t.Errorf("code = %v, want too_large", err)
	}
}

// TestNormalizeAllCapsProblems checks that a hostile batch cannot make the
// error larger than a bounded size.
func TestNormalizeAllCapsProblems(t *testing.T) {
	events := make([]Event, 5000) // every one lacks a type
	_, _, err := NormalizeAll(events, testNow, Limits{})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatal(err)
	}
	if len(e.Problems) != maxProblems+1 {
		t.Errorf("%d problems, want %d", len(e.Problems), maxProblems+1)
	}
	if last := e.Problems[len(e.Problems)-1]; last.Message != "4000 more problems not listed" {
		t.Errorf("last problem = %q", last)
	}
}

func TestErrorCodeIsTooLargeOnlyWhenEveryProblemIs(t *testing.T) {
	big := `"` + strings.Repeat("x", 10) + `"`
	events := []Event{{Type: "a", Content: json.RawMessage(big)}, {Type: "b", Content: json.RawMessage(big)}}
	_, _, err := NormalizeAll(events, testNow, Limits{MaxContentBytes: 5})
	if e := (*Error)(nil); !errors.As(err, &e) || e.Code != CodeTooLarge {
		t.Errorf("error = %v, want too_large", err)
	}
	events[1].Type = ""
	_, _, err = NormalizeAll(events, testNow, Limits{MaxContentBytes: 5})
	if e := (*Error)(nil); !errors.As(err, &e) || e.Code != CodeInvalid {
		t.Errorf("error = %v, want invalid", err)
	}
}

// TestNormalizeLeavesRoomForContentRef checks that an event whose metadata
// fits in a record only without a content reference is refused when it has
// content, rather than failing later in Canonical.
func TestNormalizeLeavesRoomForContentRef(t *testing.T) {
	attrs := map[string]any{}
	for i := range 15 {
		attrs[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", 4096)
	}
	r, _, err := Normalize(&Event{ID: "x", Type: "a", Attributes: attrs}, testNow, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Canonical(&r)
	if err != nil {
		t.Fatal(err)
	}
	// Pad to 100 bytes below the limit.
	attrs["pad"] = strings.Repeat("p", MaxRecordSize-100-len(b)-len(`,"pad":""`))
	e := Event{ID: "x", Type: "a", Attributes: attrs}
	r, _, err = Normalize(&e, testNow, Limits{})
	if err != nil {
		t.Fatalf("without content: %v", err)
	}
	if b, _ := Canonical(&r); len(b) != MaxRecordSize-100 {
		t.Fatalf("record is %d bytes, want %d", len(b), MaxRecordSize-100)
	}
	e.Content = json.RawMessage(`"c"`)
	_, _, err = Normalize(&e, testNow, Limits{})
	assertProblems(t, err, []string{"events[0]: metadata too large for one record: 65435 bytes of canonical JSON; the limit is 65279 bytes"})
}

// TestRFC3339Form: the byte check of timestamps accepts exactly what the
// regular expression of RFC 3339's form (offsets up to 23:59) does, on valid stamps and on every
// one-byte change and truncation of them.
func TestRFC3339Form(t *testing.T) {
	re := regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$`)
	seeds := []string{"2025-01-02T15:04:05Z", "2025-01-02t15:04:05.123456789z", "2025-01-02T15:04:05+05:30",
		"2025-01-02T15:04:05.1-00:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"}
	var cases []string
	for _, s := range seeds {
		cases = append(cases, s)
		for i := range len(s) {
			cases = append(cases, s[:i], s[:i]+s[i+1:])
			for _, c := range []byte("0Tt:.-+Zz ,x9") {
				cases = append(cases, s[:i]+string(c)+s[i+1:], s[:i]+string(c)+s[i:])
			}
		}
	}
	for _, s := range cases {
		ok, lower := rfc3339Form(s)
		if want := re.MatchString(s); ok != want {
			t.Errorf("rfc3339Form(%q) = %v, the pattern says %v", s, ok, want)
		}
		if ok && lower != strings.ContainsAny(s, "tz") {
			t.Errorf("rfc3339Form(%q): lower = %v", s, lower)
		}
	}
}

// TestHasSpaceOrControl holds the ASCII shortcut to its definition for
// every rune below U+0100 and a few beyond, alone, after ASCII and before
// non-ASCII text.
func TestHasSpaceOrControl(t *testing.T) {
	runes := []rune{'\u1680', '\u2028', '\u3000', '\ufeff', '😀'}
	for r := rune(0); r < 0x100; r++ {
		runes = append(runes, r)
	}
	for _, r := range runes {
		for _, s := range []string{string(r), "evt-1" + string(r), string(r) + "é"} {
			want := strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
			if got := hasSpaceOrControl(s); got != want {
				t.Errorf("hasSpaceOrControl(%q) = %v, want %v", s, got, want)
			}
		}
	}
}
