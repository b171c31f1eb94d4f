package ledger

import (
	"runtime"
	"sync"
)

// arena copies byte slices into shared chunks, one allocation for many
// records instead of one each. A slice it returns keeps its whole chunk
// alive.
type arena struct{ chunk []byte }

// arenaChunk is the size of an arena's chunks.
const arenaChunk = 256 << 10

// copy returns a copy of p, with no spare capacity.
func (a *arena) copy(p []byte) []byte {
	if cap(a.chunk)-len(a.chunk) < len(p) {
		a.chunk = make([]byte, 0, max(arenaChunk, len(p)))
	}
	start := len(a.chunk)
	a.chunk = append(a.chunk, p...)
	return a.chunk[start:len(a.chunk):len(a.chunk)]
}

// orderedBatch gathers items read in log order and, a batch at a time, runs
// prep on each of them on every core, then apply on each in order, stopping
// at the first error: recovery and verification do the per-record work
// that depends on no other record (leaf hashes, keys, content checks) in
// parallel, and the tree in order, so that an error still names the first
// record at fault.
type orderedBatch[T any] struct {
	prep  func(*T)
	apply func(*T) error
	items []T
	bytes int   // held by items, as add was told
	arena arena // where add's callers copy what the items hold
}

// A batch is applied when it holds this many items or bytes.
const (
	batchItems = 4096
	batchBytes = 32 << 20
)

// add takes an item that holds size bytes in; it applies the batch when
// the batch is full.
func (b *orderedBatch[T]) add(item T, size int) error {
	b.items = append(b.items, item)
	b.bytes += size
	if len(b.items) >= batchItems || b.bytes >= batchBytes {
		return b.flush()
	}
	return nil
}

// flush runs prep on every item in parallel, then apply on each in order.
func (b *orderedBatch[T]) flush() error {
	if len(b.items) == 0 {
		return nil
	}
	parallel(len(b.items), func(i int) { b.prep(&b.items[i]) })
	for i := range b.items {
		if err := b.apply(&b.items[i]); err != nil {
			return err
		}
	}
	clear(b.items) // let go of the records they hold
	b.items, b.bytes, b.arena = b.items[:0], 0, arena{}
	return nil
}

// parallel calls fn for 0 to n-1 on every core, each core taking one
// contiguous share, and returns when all calls have.
func parallel(n int, fn func(i int)) {
	workers := max(1, min(runtime.GOMAXPROCS(0), n/64))
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := min(w*per, n), min((w+1)*per, n)
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				fn(i)
			}
		})
	}
	wg.Wait()
}
