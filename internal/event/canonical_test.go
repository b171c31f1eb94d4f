package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// goldenRecord decodes and normalizes testdata/golden/event.json the way the
// server would, with a fixed receipt time and content reference.
func goldenRecord(t *testing.T) Record {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "golden", "event.json"))
	if err != nil {
		t.Fatal(err)
	}
	events, err := Decode(body, jsonMT, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	r, content, err := Normalize(&events[0], time.Date(2025, 3, 4, 3, 6, 8, 0, time.UTC), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	r.Content = &ContentRef{
		Digest: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		KeyID:  "k1",
		Size:   int64(len(content)),
	}
	return r
}

// TestCanonicalGolden pins the exact bytes the Merkle tree commits to: any
// change here breaks every existing log, so it needs a migration, not an
// update of the golden file.
func TestCanonicalGolden(t *testing.T) {
	r := goldenRecord(t)
	got, err := Canonical(&r)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden", "record.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Canonical =\n%s\nwant\n%s", got, want)
	}

	back, err := ParseRecord(want)
	if err != nil {
		t.Fatalf("ParseRecord(golden): %v", err)
	}
	if !reflect.DeepEqual(*back, r) {
		t.Errorf("ParseRecord(golden) =\n%+v\nwant\n%+v", *back, r)
	}
}

// TestCanonicalSortsKeys checks every object of the golden record has its
// keys in order (RFC 8785 sorts by UTF-16 code units; all keys are ASCII).
func TestCanonicalSortsKeys(t *testing.T) {
	r := goldenRecord(t)
	b, err := Canonical(&r)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		object  bool
		lastKey string
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if k, ok := tok.(string); ok {
				if k <= top.lastKey {
					t.Errorf("key %q follows %q", k, top.lastKey)
				}
				top.lastKey, top.wantKey = k, false
				continue
			}
		}
		if top != nil && top.object {
			top.wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true
			}
		}
	}
	if !bytes.HasPrefix(b, []byte(`{"action":`)) {
		t.Errorf("canonical record starts %.20s, want the action key first", b)
	}
}

func TestCanonicalNumbers(t *testing.T) {
	tests := []struct {
		literal string // as the producer sends it
		want    string // as RFC 8785 writes it
	}{
		{"1", "1"},
		{"1.0", "1"},
		{"-1", "-1"},
		{"0.1", "0.1"},
		{"1e21", "1e+21"},
		{"1E21", "1e+21"},
		{"1e20", "100000000000000000000"},
		{"1.2345678901234568e20", "123456789012345680000"},
		{"1e-6", "0.000001"},
		{"1e-7", "1e-7"},
		{"-0", "0"},
		{"-0.0", "0"},
		{"3.5e2", "350"},
		{"9007199254740992", "9007199254740992"},
		{"0.30000000000000004", "0.30000000000000004"},
		{"1.7976931348623157e308", "1.7976931348623157e+308"},
		{"5e-324", "5e-324"},
		{"1e-400", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.literal, func(t *testing.T) {
			e := decodeOne(t, `{"id":"x","type":"a","attributes":{"n":`+tt.literal+`}}`)
			r, _, err := Normalize(e, testNow, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			b, err := Canonical(&r)
			if err != nil {
				t.Fatal(err)
			}
			if want := `"attributes":{"n":` + tt.want + `}`; !bytes.Contains(b, []byte(want)) {
				t.Errorf("Canonical = %s, want it to contain %s", b, want)
			}
			back, err := ParseRecord(b)
			if err != nil || !reflect.DeepEqual(*back, r) {
				t.Errorf("ParseRecord(%s) = %+v, %v", b, back, err)
			}
		})
	}
}

func TestCanonicalStrings(t *testing.T) {
	r := Record{ID: "x", Type: "a", Tenant: "default", Action: "<&> \"q\" \\ é \u2028 \U0001F600 \u007f",
		Attributes: map[string]any{"s": "tab\tnl\ncr\r"}}
	b, err := Canonical(&r)
	if err != nil {
		t.Fatal(err)
	}
	// RFC 8785 escapes only what JSON requires, and writes the rest as UTF-8.
	for _, want := range []string{`"action":"<&> \"q\" \\ é ` + "\u2028 \U0001F600 \u007f" + `"`, `"s":"tab\tnl\ncr\r"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("Canonical = %s, want it to contain %s", b, want)
		}
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	loc := time.FixedZone("X", -5*60*60)
	tests := []struct {
		name string
		r    Record
	}{
		{"minimal", Record{ID: "1", Type: "a", Tenant: "default"}},
		{"zero times", Record{ID: "1", Type: "a", Tenant: "t", Time: time.Time{}, ReceivedAt: time.Time{}}},
		{"nanoseconds", Record{ID: "1", Type: "a", Tenant: "t", Time: time.Date(2025, 1, 1, 0, 0, 0, 1, time.UTC),
			ReceivedAt: time.Date(2025, 1, 1, 0, 0, 0, 100_000_000, time.UTC)}},
		{"everything", func() Record {
			r := goldenRecord(t)
			r.Content.Size = 1 << 40
			return r
		}()},
		{"empty strings inside objects", Record{ID: "1", Type: "a", Tenant: "t", Actor: &Actor{ID: "u"}, Model: &Model{Digest: "d"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Canonical(&tt.r)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseRecord(b)
			if err != nil {
				t.Fatalf("ParseRecord(%s): %v", b, err)
			}
			if !reflect.DeepEqual(*back, tt.r) {
				t.Errorf("ParseRecord(Canonical(r)) =\n%+v\nwant\n%+v", *back, tt.r)
			}
		})
	}

	// Canonical depends on the instant, not on how it was written.
	a := Record{ID: "1", Type: "a", Tenant: "t", Time: time.Date(2025, 1, 1, 7, 0, 0, 0, loc)}
	b := Record{ID: "1", Type: "a", Tenant: "t", Time: a.Time.UTC()}
	ca, _ := Canonical(&a)
	cb, _ := Canonical(&b)
	if !bytes.Equal(ca, cb) || !bytes.Contains(ca, []byte(`"time":"2025-01-01T12:00:00Z"`)) {
		t.Errorf("Canonical with a zone = %s, in UTC = %s", ca, cb)
	}
}

func TestCanonicalTooLarge(t *testing.T) {
	r := Record{ID: "1", Type: "a", Tenant: "t", Attributes: map[string]any{"x": strings.Repeat("x", MaxRecordSize)}}
	_, err := Canonical(&r)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeTooLarge {
		t.Fatalf("Canonical error = %v, want a too_large *Error", err)
	}
	if !strings.Contains(err.Error(), "metadata too large for one record") {
		t.Errorf("error = %q, want it to say the metadata is too large for one record", err)
	}

	// Exactly MaxRecordSize is fine.
	r.Attributes["x"] = ""
	b, _ := Canonical(&r)
	r.Attributes["x"] = strings.Repeat("x", MaxRecordSize-len(b))
	if b, err := Canonical(&r); err != nil || len(b) != MaxRecordSize {
		t.Errorf("Canonical of a %d-byte record: %d bytes, %v", MaxRecordSize, len(b), err)
	}
}

func TestCanonicalRefusesUnencodable(t *testing.T) {
	for _, r := range []Record{
		{ID: "1", Type: "a", Tenant: "t", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{ID: "1", Type: "a", Tenant: "t", Attributes: map[string]any{"x": func() {}}},
	} {
		if _, err := Canonical(&r); err == nil {
			t.Errorf("Canonical(%+v) succeeded", r)
		}
	}
}

func TestParseRecordRefuses(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "golden", "record.json"))
	if err != nil {
		t.Fatal(err)
	}
	const ok = `{"id":"1","received_at":"2025-01-01T00:00:00Z","tenant":"t","time":"2025-01-01T00:00:00Z","type":"a"}`
	if _, err := ParseRecord([]byte(ok)); err != nil {
		t.Fatalf("ParseRecord(%s): %v", ok, err)
	}
	tests := []struct {
		name string
		data string
	}{
		{"empty", ``},
		{"null", `null`},
		{"array", `[]`},
		{"whitespace", strings.Replace(ok, `,`, `, `, 1)},
		{"trailing newline", ok + "\n"},
		{"trailing data", ok + `{}`},
		{"unsorted keys", `{"tenant":"t","id":"1","received_at":"2025-01-01T00:00:00Z","time":"2025-01-01T00:00:00Z","type":"a"}`},
		{"unknown field", strings.Replace(ok, `"type":"a"`, `"type":"a","zzz":1`, 1)},
		{"field in other case", strings.Replace(ok, `"id"`, `"ID"`, 1)},
		{"duplicate key", strings.Replace(ok, `"id":"1",`, `"id":"1","id":"1",`, 1)},
		{"time with offset", strings.Replace(ok, `"time":"2025-01-01T00:00:00Z"`, `"time":"2025-01-01T00:00:00+00:00"`, 1)},
		{"time with trailing zeros", strings.Replace(ok, `"time":"2025-01-01T00:00:00Z"`, `"time":"2025-01-01T00:00:00.500Z"`, 1)},
		{"empty optional field", strings.Replace(ok, `"id":"1",`, `"action":"","id":"1",`, 1)},
		{"null attributes", strings.Replace(ok, `{"id"`, `{"attributes":null,"id"`, 1)},
		{"non-canonical number", strings.Replace(ok, `{"id"`, `{"attributes":{"n":1.0},"id"`, 1)},
		{"nested attribute", strings.Replace(ok, `{"id"`, `{"attributes":{"n":{}},"id"`, 1)},
		{"null attribute", strings.Replace(ok, `{"id"`, `{"attributes":{"n":null},"id"`, 1)},
		{"escaped character", strings.Replace(ok, `"type":"a"`, `"type":"\u0061"`, 1)},
		{"invalid UTF-8", strings.Replace(ok, `"type":"a"`, "\"type\":\"\xff\"", 1)},
		{"wrong type", strings.Replace(ok, `"id":"1"`, `"id":1`, 1)},
		{"truncated", string(golden[:len(golden)-1])},
		{"too large", `{"id":"` + strings.Repeat("x", MaxRecordSize) + `","received_at":"2025-01-01T00:00:00Z","tenant":"t","time":"2025-01-01T00:00:00Z","type":"a"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRecord([]byte(tt.data))
			if !errors.Is(err, ErrMalformedRecord) {
				t.Errorf("ParseRecord(%.80q) = %+v, %v; want ErrMalformedRecord", tt.data, r, err)
			}
		})
	}
}
