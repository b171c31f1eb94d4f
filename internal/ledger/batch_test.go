package ledger

import (
	"errors"
	"testing"
)

// TestOrderedBatch: items are prepared and then applied in the order they
// were added, across batches worked on in the background; the first error
// stops the applying and is what every later call returns; after flush
// every item added has been applied.
func TestOrderedBatch(t *testing.T) {
	const n = 3*batchItems + 100
	var applied []int
	b := &orderedBatch[[2]int]{
		prep:  func(it *[2]int) { it[1] = it[0] * 2 },
		apply: func(it *[2]int) error { applied = append(applied, it[1]/2); return nil },
	}
	for i := range n {
		if err := b.add([2]int{i, 0}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	if len(applied) != n {
		t.Fatalf("%d items applied after flush, want %d", len(applied), n)
	}
	for i, v := range applied {
		if v != i {
			t.Fatalf("item %d applied in place %d", v, i)
		}
	}

	bad := errors.New("bad item")
	const failAt = batchItems + 7
	last := -1
	b = &orderedBatch[[2]int]{
		prep: func(*[2]int) {},
		apply: func(it *[2]int) error {
			if it[0] == failAt {
				return bad
			}
			last = it[0]
			return nil
		},
	}
	var addErr error
	for i := range n {
		if addErr = b.add([2]int{i, 0}, 1); addErr != nil {
			break
		}
	}
	if !errors.Is(addErr, bad) {
		t.Fatalf("add after the failing batch: %v, want %v", addErr, bad)
	}
	if err := b.flush(); !errors.Is(err, bad) {
		t.Fatalf("flush after a failure: %v, want %v", err, bad)
	}
	if last != failAt-1 {
		t.Fatalf("last item applied %d, want %d (the one before the failure)", last, failAt-1)
	}
}
