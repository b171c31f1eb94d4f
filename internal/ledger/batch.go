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
//
// A full batch is worked on in the background while the caller reads the
// next one (one batch at a time: reading, mostly one core's work, overlaps
// the hashing and the tree); flush waits for it. prep and apply therefore
// run on another goroutine than add's caller, and what apply changes may be
// read by the caller only once flush (or wait) has returned.
type orderedBatch[T any] struct {
	prep  func(*T)
	apply func(*T) error
	items []T
	bytes int   // held by items, as add was told
	arena arena // where add's callers copy what the items hold

	spare []T        // the items slice of the batch before, to reuse
	busy  chan error // the background batch's result; nil when none runs
	err   error      // the first error: every later call returns it
}

// A batch is applied when it holds this many items or bytes.
const (
	batchItems = 4096
	batchBytes = 32 << 20
)

// add takes an item that holds size bytes in; when the batch is full it is
// handed to the background, once the one before is done.
func (b *orderedBatch[T]) add(item T, size int) error {
	if b.err != nil {
		return b.err
	}
	b.items = append(b.items, item)
	b.bytes += size
	if len(b.items) >= batchItems || b.bytes >= batchBytes {
		return b.start()
	}
	return nil
}

// start waits for the background batch, if any, then hands it the items
// gathered so far.
func (b *orderedBatch[T]) start() error {
	if err := b.wait(); err != nil {
		return err
	}
	if len(b.items) == 0 {
		return nil
	}
	items, done := b.items, make(chan error, 1)
	go func() { done <- b.run(items) }()
	b.busy = done
	b.items, b.spare, b.bytes, b.arena = b.spare[:0], items, 0, arena{}
	return nil
}

// run runs prep on every item in parallel, then apply on each in order.
func (b *orderedBatch[T]) run(items []T) error {
	defer clear(items) // let go of the records they hold
	parallel(len(items), func(i int) { b.prep(&items[i]) })
	for i := range items {
		if err := b.apply(&items[i]); err != nil {
			return err
		}
	}
	return nil
}

// wait waits for the background batch, if any, and returns the first error
// of any batch so far.
func (b *orderedBatch[T]) wait() error {
	if b.busy != nil {
		b.err = <-b.busy
		b.busy = nil
	}
	return b.err
}

// flush works on the items gathered so far and waits until every item
// added has been applied (or one failed).
func (b *orderedBatch[T]) flush() error {
	if err := b.start(); err != nil {
		return err
	}
	return b.wait()
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
