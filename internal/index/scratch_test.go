package index

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/aitrail/aitrail/internal/ledger"
)

func BenchmarkScratch(b *testing.B) {
	all := []string{"records_tenant", "records_type", "records_actor", "records_model", "records_resource", "records_time"}
	for _, page := range []int{16384} {
		for range 1 {
		for _, am := range []int{0, 6} {
			b.Run(fmt.Sprintf("noblob/drop%d", am), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "x.db")
				db, _ := sql.Open("sqlite", path)
				db.Exec(fmt.Sprintf("PRAGMA page_size=%d", page))
				db.Exec("CREATE TABLE x(y)")
				db.Close()
				ix, err := Open(path, Options{NoFullText: true})
				if err != nil {
					b.Fatal(err)
				}
				defer ix.Close()
				for _, n := range all[:am] {
					if _, err := ix.db.Exec("DROP INDEX " + n); err != nil {
						b.Fatal(err)
					}
				}
				for _, n := range all[:0] {
					if _, err := ix.db.Exec("DROP INDEX " + n); err != nil {
						b.Fatal(err)
					}
				}
				g := newGenerator(b)
				ctx := context.Background()
				b.ResetTimer()
				for n := 0; n < b.N; n++ {
					b.StopTimer()
					es := make([]ledger.Entry, 1000)
					for i := range es {
						es[i] = g.entry(uint64(n*1000 + i))
					}
					b.StartTimer()
					if err := ix.Apply(ctx, es); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "records/s")
				b.ReportMetric(0, "ns/op")
			})
		}
		}
	}
}

func TestPageSize(t *testing.T) {
	ix, _ := openTemp(t, Options{NoFullText: true})
	var ps int
	var jm string
	ix.db.QueryRow("PRAGMA page_size").Scan(&ps)
	ix.db.QueryRow("PRAGMA journal_mode").Scan(&jm)
	t.Log(ps, jm)
}
