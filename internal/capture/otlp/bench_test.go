package otlp

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// BenchmarkTraces measures the receiver's own cost per span: decoding,
// mapping and the ingest pipeline (validation, canonical encoding), with
// an in-memory ledger. Each iteration is one request of 1000 GenAI spans.
func BenchmarkTraces(b *testing.B) {
	const n = 1000
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	for i := 0; i < n; i++ {
		chatSpan(ss, 0).SetSpanID([8]byte{1, 2, 3, 4, 5, 6, byte(i >> 8), byte(i)})
	}
	for _, json := range []bool{false, true} {
		b.Run(fmt.Sprintf("json=%v", json), func(b *testing.B) {
			body := encodeTraces(&testing.T{}, td, json)
			ct := mediaProto
			if json {
				ct = mediaJSON
			}
			h, _ := newHandler(&testing.T{}, Options{})
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				// The ledger dedupes from the second request on; the
				// receiver does the same work either way.
				if w := post(h, rootPrincipal, TracesPath, ct, body); w.Code != 200 {
					b.Fatal(w.Code, w.Body)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "spans/s")
			// CPU time, GC included, is steadier than wall time on a shared
			// machine.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N*n), "cpu-µs/span")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
