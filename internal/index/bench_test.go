package index

import (
	"bytes"
	"context"
	"flag"
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
// as OTLP span ids and UUIDv4 do. With one B-tree over all ids, each new
// id then landed on its own page and the rate fell as the index grew
// (21,630 records/s over 1.5 million); the id index is partitioned by
// log position since (lookup.go). Run it with -benchtime 1500x to see
// the rate over a large index.
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

// lookupRecords is how many records BenchmarkLookup indexes:
// go test ./internal/index -run '^$' -bench BenchmarkLookup -args -lookup-records N.
var lookupRecords = flag.Int("lookup-records", 2_000_000, "records BenchmarkLookup indexes")

// BenchmarkLookup measures lookups by id in an index of 2,000,000 records
// (or -lookup-records) with ids in no order (123 parts of records_id):
// LookupID, and LookupIDs of 100 keys as ingest asks them, found in the
// newest records (a batch sent again), in the oldest, or not at all; with
// the filters of complete groups of parts (groups=true), and with the
// parts' filters alone, as before any group filter is built.
func BenchmarkLookup(b *testing.B) {
	const batch = 5000
	n := uint64(*lookupRecords)
	ix, _ := openTemp(b, Options{})
	g := newGenerator(b)
	g.random = true
	ctx := context.Background()
	es := make([]ledger.Entry, batch)
	for start := uint64(0); start < n; start += batch {
		for i := range es {
			es[i] = g.entry(start + uint64(i))
		}
		apply(b, ix, es)
	}
	keys := func(from uint64, absent bool) []Key {
		ks := make([]Key, 100)
		for i := range ks {
			tenant, id, err := event.RecordKey(g.entry(from + uint64(i)).Data)
			if err != nil {
				b.Fatal(err)
			}
			if absent {
				id += "-absent"
			}
			ks[i] = Key{tenant, id}
		}
		return ks
	}
	waitGroups(b, ix)
	one := keys(n/2, false)[0]
	for _, groups := range []bool{true, false} {
		if !groups {
			ix.ids.clear()
			if err := ix.loadPartFilters(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("groups=%v/LookupID", groups), func(b *testing.B) {
			for b.Loop() {
				if _, ok, err := ix.LookupID(ctx, one.Tenant, one.ID); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
		})
		for _, bc := range []struct {
			name  string
			keys  []Key
			found int
		}{
			{"LookupIDs/newest", keys(n-100, false), 100},
			{"LookupIDs/oldest", keys(0, false), 100},
			{"LookupIDs/absent", keys(n/2, true), 0},
		} {
			b.Run(fmt.Sprintf("groups=%v/%s", groups, bc.name), func(b *testing.B) {
				for b.Loop() {
					found, err := ix.LookupIDs(ctx, bc.keys)
					if err != nil || len(found) != bc.found {
						b.Fatalf("found %d, want %d: %v", len(found), bc.found, err)
					}
				}
			})
		}
	}
}
