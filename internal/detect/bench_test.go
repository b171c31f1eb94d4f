package detect

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
)

// extraRules returns n generated rules of every kind over the common event
// types, as a large deployment might add to the built-in pack.
func extraRules(n int) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	types := []string{"ai.inference", "api.call", "access.attempt", "data.export", "admin.change"}
	for i := range n {
		typ := types[i%len(types)]
		fmt.Fprintf(&b, "  - id: extra-%d\n    types: [%s]\n", i, typ)
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "    kind: match\n    condition: actor.id == 'hmac-sha256:user-%d' && outcome == 'failure'\n", i)
		case 1:
			fmt.Fprintf(&b, "    kind: threshold\n    condition: outcome != 'success' || double(attributes[?'gen_ai.usage.input_tokens'].orValue(0)) > %d.0\n    group_by: [tenant, actor.id]\n    window: 5m\n    threshold: 1000000\n", 1000+i)
		case 2:
			fmt.Fprintf(&b, "    kind: new_value\n    condition: model.name.startsWith('gpt-%d')\n    group_by: [tenant]\n    value: [model.version]\n", i)
		case 3:
			fmt.Fprintf(&b, "    kind: anomaly\n    condition: action.contains('%d')\n    group_by: [tenant, actor.id]\n    min_volume: 100\n", i)
		}
	}
	return b.String()
}

// BenchmarkObserve measures records per second on one core with the
// built-in pack and 100 extra rules, over inference traffic from 1,000
// actors.
func BenchmarkObserve(b *testing.B) {
	extra, err := Load("extra.yaml", []byte(extraRules(100)))
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(append(Builtin(), extra...))
	recs := make([]event.Record, 4096)
	for i := range recs {
		typ := "ai.inference"
		if i%10 == 0 {
			typ = "api.call"
		}
		recs[i] = event.Record{
			ID: fmt.Sprintf("id-%d", i), Type: typ, Tenant: "bench", Outcome: "success", Action: "chat",
			Actor:      &event.Actor{ID: fmt.Sprintf("hmac-sha256:user-%d", i%1000), Type: "user"},
			Model:      &event.Model{Provider: "openai", Name: "gpt-4o", Version: "2024-08-06"},
			Attributes: map[string]any{"gen_ai.usage.input_tokens": float64(500 + i%300), "gen_ai.usage.output_tokens": 200.0, "aitrail.model.deployed": true},
		}
	}
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := &recs[i%len(recs)]
		r.ReceivedAt = start.Add(time.Duration(i) * 100 * time.Microsecond) // 10,000 records/s
		e.Observe(uint64(i), r)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkScanContent measures the default patterns over 1 KiB of content
// that holds none of their keywords' first letters (the ingest benchmark's
// padding) and over 1 KiB of ordinary chat text, which holds many.
func BenchmarkScanContent(b *testing.B) {
	s, err := NewScanner(DefaultPatterns)
	if err != nil {
		b.Fatal(err)
	}
	chat := `{"messages":[{"role":"system","content":"You are a helpful assistant for a travel agency. Answer briefly."},` +
		`{"role":"user","content":"Hello! I'd like to plan a trip to Lisbon in early spring with my partner. We enjoy food markets, ` +
		`old neighbourhoods and day trips by train. What would a relaxed five-day itinerary look like, and which areas are pleasant to stay in?"}]}`
	for name, content := range map[string]string{
		"padding": strings.Repeat("x", 1024),
		"chat":    strings.Repeat(chat, 1024/len(chat)+1)[:1024],
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(content)))
			for b.Loop() {
				if ms := s.ScanContent("t", []byte(content)); len(ms) != 0 {
					b.Fatalf("markers %v in benign content", ms)
				}
			}
		})
	}
}
