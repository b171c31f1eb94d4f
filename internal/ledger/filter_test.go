package ledger

import (
	"bytes"
	"fmt"
	"testing"
)

// filterKey is the i-th key the filter tests add.
func filterKey(i int) keyHash { return testHasher.hash(fmt.Sprintf("tenant\x00id-%d", i)) }

// checkFilter requires that f reports every one of the first n keys as
// possibly seen, and returns how many of 100,000 keys never added it
// reports so.
func checkFilter(t *testing.T, f *keyFilter, n int) (falsePositives int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if !f.MayContain(filterKey(i)) {
			t.Fatalf("key %d was added but is reported absent", i)
		}
	}
	for i := 0; i < 100_000; i++ {
		if f.MayContain(testHasher.hash(fmt.Sprintf("tenant\x00other-%d", i))) {
			falsePositives++
		}
	}
	return falsePositives
}

func TestKeyFilter(t *testing.T) {
	f := newKeyFilter(1000, 0)
	const n = 300_000 // several growths past the first filter
	for i := 0; i < n; i++ {
		f.Add(filterKey(i))
	}
	fp := checkFilter(t, f, n)
	t.Logf("false positives: %d in 100,000", fp)
	// Each new key that may have been seen costs an index query.
	if rate := float64(fp) / 100_000; rate > 0.0005 {
		t.Fatalf("false-positive rate %.5f over three filters, want about 0.00005", rate)
	}
}

// TestKeyFilterLimit: a filter at its memory limit spreads every further
// key over the filters it has: its memory stays within the limit, no key
// added is ever reported absent, and the false-positive rate rises as
// slowly as the memory allows.
func TestKeyFilterLimit(t *testing.T) {
	const limit = 1 << 20
	f := newKeyFilter(0, limit)
	const n = 1_000_000 // about three times what 1 MiB is made for
	for i := 0; i < n; i++ {
		f.Add(filterKey(i))
		if i == 100_000 {
			if _, full := f.Bytes(); full {
				t.Fatal("full after 100,000 keys; 1 MiB is made for about 350,000")
			}
		}
	}
	bytes, full := f.Bytes()
	if bytes > limit || !full {
		t.Fatalf("%d bytes, full %v after %d keys; want at most %d bytes, full", bytes, full, n, limit)
	}
	fp := checkFilter(t, f, n)
	t.Logf("%d bytes; false positives: %d in 100,000", bytes, fp)
	// Three times its keys in 1 MiB: about 11 %. Putting them all in the
	// last filter gave 36 %.
	if rate := float64(fp) / 100_000; rate > 0.2 {
		t.Fatalf("false-positive rate %.3f at three times the keys, want about 0.11", rate)
	}
}

// TestKeyFilterWriteRead: a filter written for a start-up snapshot reads
// back holding every key it held, at its limit as it was; with the limit
// raised since, it grows again. Data cut short is refused.
func TestKeyFilterWriteRead(t *testing.T) {
	const limit = 1 << 20
	f := newKeyFilter(0, limit)
	const n = 500_000 // beyond what 1 MiB is made for
	for i := range n {
		f.Add(filterKey(i))
	}
	var buf bytes.Buffer
	if err := f.writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	g, err := readKeyFilter(bytes.NewReader(buf.Bytes()), limit, int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if _, full := f.Bytes(); !full {
		t.Fatal("the filter written is not at its limit")
	}
	if gb, gfull := g.Bytes(); !gfull || gb > limit {
		t.Fatalf("read back: %d bytes, full %v; want full within %d", gb, gfull, limit)
	}
	if fp, gp := checkFilter(t, f, n), checkFilter(t, g, n); fp != gp {
		t.Fatalf("false positives %d read back, %d written", gp, fp)
	}
	g, err = readKeyFilter(bytes.NewReader(buf.Bytes()), 8*limit, int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for i := n; i < 2*n; i++ {
		g.Add(filterKey(i))
	}
	if gb, gfull := g.Bytes(); gfull || gb <= limit {
		t.Fatalf("read back under a raised limit and given more keys: %d bytes, full %v; want it grown", gb, gfull)
	}
	checkFilter(t, g, 2*n)
	for _, cut := range []int{0, 4, 5, 30, buf.Len() - 1} {
		if _, err := readKeyFilter(bytes.NewReader(buf.Bytes()[:cut]), limit, int64(buf.Len())); err == nil {
			t.Errorf("a filter cut to %d of %d bytes was read", cut, buf.Len())
		}
	}
	if _, err := readKeyFilter(bytes.NewReader(buf.Bytes()), limit, int64(buf.Len())/2); err == nil {
		t.Error("a filter larger than its file was read")
	}
}
