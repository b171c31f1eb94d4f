package index

import (
	"encoding/json"
	"testing"

	"github.com/aitrail/aitrail/internal/event"
)

func BenchmarkParseKinds(b *testing.B) {
	g := newGenerator(b)
	b.Run("keyFields", func(b *testing.B) {
		for n := 0; b.Loop(); n++ {
			var k keyFields
			if err := json.Unmarshal(g.pool[n%len(g.pool)], &k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Record", func(b *testing.B) {
		for n := 0; b.Loop(); n++ {
			var k event.Record
			if err := json.Unmarshal(g.pool[n%len(g.pool)], &k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ParseRecord", func(b *testing.B) {
		for n := 0; b.Loop(); n++ {
			if _, err := event.ParseRecord(g.pool[n%len(g.pool)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
