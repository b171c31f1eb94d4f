package index

import (
	"bytes"
	"context"
	"fmt"
	"math/bits"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// BenchmarkApply measures indexing throughput: batches of 1000 realistic
// records of about 1.4 KiB, as the follower delivers them, into an index
// that grows as the benchmark runs. The records have 5,000 distinct actors,
// the worst case for postings, whose rows are written once a block is
// complete. On a shared 2-vCPU VM, with block postings,
// it indexed 44,000-64,000 records/s without full text and 14,600-16,300
// with it (35,000 and 13,000-18,000 with an SQLite index per filter),
// bound by SQLite's work on the writing goroutine.
//
// Their ids are time-ordered (UUIDv7, as the SDK, the proxy and the
// server make them), except in "randomids", where they come in no order,
// as OTLP span ids and UUIDv4 do: each new id then lands on its own page
// of the id index, and the rate falls as the index grows (see
// docs/BENCHMARKS.md, seventeenth round; run it with -benchtime 1500x to
// see it).
func BenchmarkApply(b *testing.B) {
	for _, bc := range []struct {
		name   string
		opts   Options
		random bool
	}{
		{"nofulltext", Options{}, false},
		{"fulltext", Options{FullText: true}, false},
		{"randomids", Options{}, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchmarkApply(b, bc.opts, bc.random)
		})
	}
}

func benchmarkApply(b *testing.B, opts Options, randomIDs bool) {
	const batch = 1000
	ix, _ := openTemp(b, opts)
	g := newGenerator(b)
	g.random = randomIDs
	ctx := context.Background()
	es := make([]ledger.Entry, batch)
	var bytes int64
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		for i := range es {
			es[i] = g.entry(uint64(n*batch + i))
			bytes += int64(len(es[i].Data))
		}
		b.StartTimer()
		if err := ix.Apply(ctx, es); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	records := float64(b.N * batch)
	b.ReportMetric(records/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(bytes)/records, "B/record")
	b.ReportMetric(0, "ns/op")
}

// generator makes realistic records quickly: it encodes a pool of distinct
// records once and gives each entry a unique id by rewriting a placeholder.
type generator struct {
	pool   [][]byte
	at     []int // offset of the id placeholder in each pool record
	random bool  // ids in no order instead of time-ordered
}

const idPlaceholder = "ID-PLACEHOLDER-000000000000000"

func newGenerator(tb testing.TB) *generator {
	g := &generator{}
	for i := range 10000 {
		r := realistic(i)
		r.ID = idPlaceholder
		data, err := event.Canonical(r)
		if err != nil {
			tb.Fatal(err)
		}
		g.pool = append(g.pool, data)
		g.at = append(g.at, bytes.Index(data, []byte(idPlaceholder)))
	}
	return g
}

func (g *generator) entry(idx uint64) ledger.Entry {
	k := idx % uint64(len(g.pool))
	data := bytes.Clone(g.pool[k])
	n := idx
	if g.random {
		// A bijection of the index, so ids stay distinct, that scatters
		// consecutive indexes over the whole range.
		n = bits.Reverse64(idx * 0x9e3779b97f4a7c15)
	}
	copy(data[g.at[k]:], fmt.Sprintf("0195a3b2-7c1d-%016x", n))
	return ledger.Entry{Index: idx, Data: data}
}

// BenchmarkQuery measures filtered queries, first page of 50, newest
// first, over an index of 300,000 realistic records (about 4.6 blocks)
// whose last block is open (its postings served from memory): a rare
// value (one actor: 60 records), a common one (a tenant: a third), two
// filters together, and a filter with a time range.
func BenchmarkQuery(b *testing.B) {
	const n, batch = 300_000, 5000
	ix, e := openTemp(b, Options{})
	ctx := context.Background()
	recs := make([]*event.Record, batch)
	for start := 0; start < n; start += batch {
		for i := range recs {
			recs[i] = realistic(start + i)
		}
		apply(b, ix, e.add(b, recs...))
	}
	rare := realistic(4999).Actor.ID
	for _, bc := range []struct {
		name string
		q    Query
	}{
		{"actor", Query{Actor: rare}},
		{"tenant", Query{Tenant: "globex"}},
		{"tenant+outcome", Query{Tenant: "globex", Outcome: "denied"}},
		{"type+time", Query{Type: "api.call", From: t0.Add(100 * time.Second), To: t0.Add(200 * time.Second)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bc.q.Limit, bc.q.Order = 50, OrderDesc
			for b.Loop() {
				p, err := ix.Query(ctx, bc.q)
				if err != nil || len(p.Hits) == 0 {
					b.Fatalf("%d hits, %v", len(p.Hits), err)
				}
			}
		})
	}
}
