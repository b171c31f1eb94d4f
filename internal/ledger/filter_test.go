package ledger

import (
	"fmt"
	"testing"
)

func TestKeyFilter(t *testing.T) {
	f := newKeyFilter(1000)
	const n = 300_000 // several growths past the first filter
	for i := 0; i < n; i++ {
		f.Add(hashKey(fmt.Sprintf("tenant\x00id-%d", i)))
	}
	for i := 0; i < n; i++ {
		if !f.MayContain(hashKey(fmt.Sprintf("tenant\x00id-%d", i))) {
			t.Fatalf("key %d was added but is reported absent", i)
		}
	}
	fp := 0
	for i := 0; i < 100_000; i++ {
		if f.MayContain(hashKey(fmt.Sprintf("tenant\x00other-%d", i))) {
			fp++
		}
	}
	t.Logf("false positives: %d in 100,000", fp)
	// Each new key that may have been seen costs an index query.
	if rate := float64(fp) / 100_000; rate > 0.0005 {
		t.Fatalf("false-positive rate %.5f over three filters, want about 0.00005", rate)
	}
}
