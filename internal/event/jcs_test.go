package event

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
)

// viaLibrary is the reference: marshal, then canonicalize with the jcs
// library.
func viaLibrary(t testing.TB, r *Record) []byte {
	c := *r
	c.Time, c.ReceivedAt = c.Time.UTC(), c.ReceivedAt.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jcs.Transform(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCanonicalMatchesLibrary(t *testing.T) {
	ts := time.Date(2026, 11, 27, 9, 54, 22, 779327501, time.FixedZone("x", 3600))
	for _, r := range []*Record{
		{ID: "a", Type: "t", Tenant: "default", Time: ts, ReceivedAt: ts.Add(time.Second)},
		{ID: "e\u00e9\u2028<>&\"\\\x01\x1f\x7f", Type: "ai.inference", Tenant: "acme", Time: time.Unix(0, 0), ReceivedAt: ts,
			Actor:  &Actor{ID: "alice", Type: "user", IP: "10.0.0.1", UserAgent: "ua\tx", SessionID: "s"},
			Action: "chat.completions.create", Outcome: "success",
			Resource:   &Resource{Type: "doc", ID: "d1", Name: "n"},
			Model:      &Model{Provider: "openai", Name: "gpt", Version: "1", Digest: "sha256:00"},
			Dataset:    &Dataset{Name: "ds", Version: "2", Digest: "d"},
			API:        &API{Name: "api", Version: "v1"},
			Prompt:     &Prompt{ID: "p", Version: "3", Digest: "x"},
			Attributes: map[string]any{"b": true, "a.z": "s", "n": 1e21, "f": 0.1, "i": float64(1 << 53), "neg": -5.0, "tiny": 1e-7, "é": "x", "\U0001F600": 1.0, "ｚ": 2.0},
			Content:    &ContentRef{Digest: "sha256:ff", KeyID: "k", Size: 42},
			TraceID:    "0af7651916cd43dd8448eb211c80319c", SpanID: "b7ad6b7169203331"},
		{ID: "b", Type: "t", Tenant: "t", Time: ts, ReceivedAt: ts, Actor: &Actor{}, Attributes: map[string]any{}},
	} {
		got, err := Canonical(r)
		if err != nil {
			t.Fatal(err)
		}
		if want := viaLibrary(t, r); !bytes.Equal(got, want) {
			t.Errorf("canonical encoding differs from the jcs library:\n got %s\nwant %s", got, want)
		}
	}
	if _, err := Canonical(&Record{ID: "x", Type: "t", Tenant: "t", Attributes: map[string]any{"n": math.NaN()}}); err == nil {
		t.Error("NaN attribute accepted")
	}
	if _, err := Canonical(&Record{ID: "\xff", Type: "t", Tenant: "t"}); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
}

// appendNumber's shortcut for whole numbers must write what the jcs
// library writes.
func TestAppendNumberMatchesLibrary(t *testing.T) {
	values := []float64{0, math.Copysign(0, -1), 1, -1, 7, 42, 1e15, 1e20, 1e21, 1 << 53, 1<<53 - 1, -(1<<53 - 1), 1 << 62,
		0.5, -2.5, 1e-7, 123456789.125, math.MaxFloat64, math.SmallestNonzeroFloat64}
	for i := range 2000 {
		values = append(values, float64(i*i*i), -float64(i)*1e9, float64(i)/7)
	}
	for _, f := range values {
		checkNumber(t, f)
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := appendNumber(nil, f); err == nil {
			t.Errorf("%v accepted", f)
		}
	}
}

func checkNumber(t *testing.T, f float64) {
	t.Helper()
	got, err := appendNumber(nil, f)
	want, werr := jcs.NumberToJSON(f)
	if (err != nil) != (werr != nil) || string(got) != want {
		t.Errorf("appendNumber(%v) = %q, %v; the jcs library gives %q, %v", f, got, err, want, werr)
	}
}

func FuzzAppendNumber(f *testing.F) {
	f.Add(uint64(0))
	f.Add(math.Float64bits(1 << 53))
	f.Add(math.Float64bits(-12345))
	f.Fuzz(func(t *testing.T, bits uint64) { checkNumber(t, math.Float64frombits(bits)) })
}

func BenchmarkCanonical(b *testing.B) {
	ts := time.Now()
	r := &Record{ID: "bench-abc-1-2-3", Type: "ai.inference", Tenant: "bench", Time: ts, ReceivedAt: ts,
		Actor: &Actor{ID: "user-1", Type: "user"}, Action: "chat.completions.create", Outcome: "success",
		Model:      &Model{Provider: "openai", Name: "gpt-4o", Version: "2024-08-06"},
		Attributes: map[string]any{"gen_ai.usage.input_tokens": 12.0, "note": string(bytes.Repeat([]byte("x"), 700))}}
	for i := 0; i < b.N; i++ {
		Canonical(r)
	}
}

func TestContentDigest(t *testing.T) {
	ts := time.Now()
	r := &Record{ID: "x", Type: "a.b", Tenant: "t", Time: ts, ReceivedAt: ts,
		Attributes: map[string]any{"content": `"content":{"digest":"forged"}`, "note": `{"digest":"x"}`},
		// An object that starts with a digest, and is not content.
		Model:   &Model{Digest: "sha256:model"},
		Dataset: &Dataset{Name: "d"}}
	b, _ := Canonical(r)
	if d, ok := ContentDigest(b); ok {
		t.Fatalf("record without content: found digest %q in %s", d, b)
	}
	r.Content = &ContentRef{Digest: "sha256:abc", KeyID: "k", Size: 3}
	b, _ = Canonical(r)
	if d, ok := ContentDigest(b); !ok || d != "sha256:abc" {
		t.Fatalf("ContentDigest = %q, %v in %s", d, ok, b)
	}
}

func TestRecordKey(t *testing.T) {
	ts := time.Now()
	b, _ := Canonical(&Record{ID: "ev-1", Type: "a.b", Tenant: "acme", Time: ts, ReceivedAt: ts,
		Actor: &Actor{ID: "not-this"}, Attributes: map[string]any{"id": "nor-this", "tenant": "x"}})
	tenant, id, err := RecordKey(b)
	if err != nil || tenant != "acme" || id != "ev-1" {
		t.Fatalf("RecordKey = %q, %q, %v", tenant, id, err)
	}
	// Members before the key are read for where they end: strings ending
	// in escaped quotes and backslashes, nested arrays and objects.
	skipped := `{"a":"x\\","b":["\"",{"c":"\\\"","d":[[],{}]},1.5e3,true,null],"id":"i","tenant":"t"}`
	if tenant, id, err := RecordKey([]byte(skipped)); err != nil || tenant != "t" || id != "i" {
		t.Fatalf("RecordKey(%s) = %q, %q, %v", skipped, tenant, id, err)
	}
	for _, bad := range []string{"", "[]", `{"id":1,"tenant":"t"}`, `{"id":"x"}`, `{"id":"x","tenant":`,
		`{"a":"x\","id":"i","tenant":"t"}`, `{"a":["x",],"id":"i","tenant":"t"}`, `{"a":{"b"},"id":"i","tenant":"t"}`,
		`{"a":"x,"id":"i","tenant":"t"}`, `{"a":{"b":1,},"id":"i","tenant":"t"}`} {
		if _, _, err := RecordKey([]byte(bad)); err == nil {
			t.Errorf("RecordKey(%q) succeeded", bad)
		}
	}
}

// FuzzSizeBound: the cheap bound must never be below the real size, or
// Normalize would let an oversized record through its size check. It also
// holds RecordKey to the record's tenant and id.
func FuzzSizeBound(f *testing.F) {
	f.Add("id", "a.b", "acme", "act\x01\"\\", "k", "v\u2028", 1.5, true)
	f.Fuzz(func(t *testing.T, id, typ, tenant, action, key, val string, num float64, flag bool) {
		r := &Record{ID: id, Type: typ, Tenant: tenant, Action: action, Time: time.Unix(0, 0), ReceivedAt: time.Unix(1, 1),
			Actor: &Actor{ID: action, IP: id}, Model: &Model{Name: val}, Resource: &Resource{ID: key},
			Dataset: &Dataset{Name: id}, API: &API{Name: typ}, Prompt: &Prompt{ID: tenant},
			Attributes: map[string]any{key: val, key + "n": num, key + "b": flag}, TraceID: id, SpanID: typ}
		b, err := canonical(r)
		if err != nil {
			return
		}
		if bound := sizeBound(r); bound < len(b) {
			t.Fatalf("bound %d below the real size %d", bound, len(b))
		}
		// Reads check a record's key with RecordKey: it must read what
		// the full decoder does, whatever the other fields hold.
		if tenant, id, err := RecordKey(b); r.ID != "" && r.Tenant != "" && (err != nil || tenant != r.Tenant || id != r.ID) {
			t.Fatalf("RecordKey = %q, %q, %v; the record has %q, %q", tenant, id, err, r.Tenant, r.ID)
		}
	})
}

// BenchmarkRecordKey measures reading a record's tenant and id, which every
// read does for every record it serves, on a record of about 1 KiB.
func BenchmarkRecordKey(b *testing.B) {
	ts := time.Now()
	data, err := Canonical(&Record{ID: "bench-abc-1-2-3", Type: "ai.inference", Tenant: "bench", Time: ts, ReceivedAt: ts,
		Actor: &Actor{ID: "user-1", Type: "user"}, Action: "chat.completions.create", Outcome: "success",
		Model:      &Model{Provider: "openai", Name: "gpt-4o", Version: "2024-08-06"},
		Attributes: map[string]any{"gen_ai.usage.input_tokens": 12.0, "note": string(bytes.Repeat([]byte("x"), 700))}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if tenant, _, err := RecordKey(data); err != nil || tenant != "bench" {
			b.Fatal(tenant, err)
		}
	}
}
