package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// nopLedger acknowledges everything without storing it.
type nopLedger struct{ n uint64 }

func (l *nopLedger) Err() error { return nil }

func (l *nopLedger) Append(_ context.Context, items []ledger.Item) (ledger.Receipt, error) {
	r := ledger.Receipt{Results: make([]ledger.Result, len(items))}
	for i := range items {
		r.Results[i].Index = l.n
		l.n++
	}
	return r, nil
}

// BenchmarkProtection measures the CPU the pipeline spends per event of
// about 1 KiB, in batches of 100, with the bench command's shape: plain
// (no actor, payload in attributes), then with a user actor among 1,000
// (pseudonymised) and the payload as content (encrypted). The difference
// is the cost of encryption and pseudonyms, without the disk, the index or
// HTTP in the way.
func BenchmarkProtection(b *testing.B) {
	kek, err := crypto.NewLocalKEK("", make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	keyring := crypto.NewKeyring(kek, new(cryptotest.MemKeyStore))
	pad := strings.Repeat("x", 800)
	for _, bc := range []struct {
		name    string
		protect bool
	}{{"plain", false}, {"actor+content", true}} {
		b.Run(bc.name, func(b *testing.B) {
			pl := &Pipeline{Ledger: &nopLedger{}, Sealer: keyring, Subjects: keyring}
			p := authz.Principal{Root: true}
			batch := make([]event.Event, 100)
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for j := range batch {
					e := event.Event{ID: fmt.Sprintf("e-%d-%d", n, j), Type: "ai.inference", Tenant: "bench",
						Action: "chat.completions.create", Outcome: "success",
						Model: &event.Model{Provider: "openai", Name: "gpt-4o", Version: "2024-08-06"}}
					if bc.protect {
						e.Actor = &event.Actor{ID: fmt.Sprintf("user-%d", (n*100+j)%1000), Type: "user"}
						e.Content = json.RawMessage(`{"prompt":"` + pad + `"}`)
					} else {
						e.Attributes = map[string]any{"gen_ai.usage.input_tokens": j, "note": pad}
					}
					batch[j] = e
				}
				if _, err := pl.Append(context.Background(), p, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch))/float64(time.Microsecond), "µs/event")
			b.ReportMetric(0, "ns/op")
		})
	}
}
