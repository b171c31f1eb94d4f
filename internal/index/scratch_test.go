package index

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

func BenchmarkScratch(b *testing.B) {
	for _, page := range []int{4096, 16384} {
		for _, idx := range []int{0, 3, 7} {
			b.Run(fmt.Sprintf("page%d/idx%d", page, idx), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "x.db")
				db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(8192)&_txlock=immediate")
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				db.SetMaxOpenConns(1)
				ctx := context.Background()
				mustExec := func(q string) {
					if _, err := db.Exec(q); err != nil {
						b.Fatal(err)
					}
				}
				mustExec(fmt.Sprintf("PRAGMA page_size=%d", page))
				mustExec("PRAGMA journal_mode=WAL")
				mustExec(schema)
				all := []string{"records_id", "records_tenant", "records_type", "records_actor", "records_model", "records_resource", "records_time"}
				for _, n := range all[idx:] {
					mustExec("DROP INDEX " + n)
				}
				g := newGenerator(b)
				ix := &Index{}
				var bytes int
				b.ResetTimer()
				for n := 0; n < b.N; n++ {
					b.StopTimer()
					rows := make([]row, 1000)
					for i := range rows {
						ix.parseOne(&rows[i], g.entry(uint64(n*1000+i)))
						bytes += len(rows[i].data)
					}
					b.StartTimer()
					tx, err := db.BeginTx(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					if err := ix.insert(ctx, tx, rows); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "records/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
