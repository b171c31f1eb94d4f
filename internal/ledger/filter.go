package ledger

import (
	"math"
	"sync"
	"sync/atomic"
)

// keyFilter is a Bloom filter of every idempotency key in the log, so that
// Append asks Options.Lookup (a database query) only about keys that may
// have been seen: nearly every new key is known to be new from memory. It
// grows by adding larger filters, each sized for twice the keys of the one
// before, keeping the false-positive rate low. Add and MayContain are
// safe for concurrent use.
type keyFilter struct {
	mu   sync.RWMutex
	sets []*bloom
}

// filterBitsPerKey and filterHashes give about a 0.05% false-positive rate:
// a request of 100 new ids then queries the index about once in 20.
const (
	filterBitsPerKey = 16
	filterHashes     = 11
	filterMinKeys    = 1 << 16
)

type bloom struct {
	words []atomic.Uint64
	bits  uint64
	keys  atomic.Int64
	cap   int64
}

func newBloom(keys int64) *bloom {
	bits := uint64(keys * filterBitsPerKey)
	bits = (bits + 63) &^ 63
	return &bloom{words: make([]atomic.Uint64, bits/64), bits: bits, cap: keys}
}

func newKeyFilter(expected int64) *keyFilter {
	return &keyFilter{sets: []*bloom{newBloom(max(expected, filterMinKeys))}}
}

// hashes gives the two hashes the filter's bit positions are derived from:
// the two halves of the key's hash, the second made odd.
func (f *keyFilter) hashes(key keyHash) (uint64, uint64) {
	return key.a, key.b | 1
}

// Add records a key, by its hash.
func (f *keyFilter) Add(key keyHash) {
	f.mu.RLock()
	b := f.sets[len(f.sets)-1]
	f.mu.RUnlock()
	if b.keys.Add(1) > b.cap {
		f.mu.Lock()
		if last := f.sets[len(f.sets)-1]; last == b {
			f.sets = append(f.sets, newBloom(min(b.cap*2, math.MaxInt64/filterBitsPerKey)))
		}
		b = f.sets[len(f.sets)-1]
		f.mu.Unlock()
		b.keys.Add(1)
	}
	h1, h2 := f.hashes(key)
	for i := uint64(0); i < filterHashes; i++ {
		bit := (h1 + i*h2) % b.bits
		b.words[bit/64].Or(1 << (bit % 64))
	}
}

// MayContain reports false only if key was never added.
func (f *keyFilter) MayContain(key keyHash) bool {
	h1, h2 := f.hashes(key)
	f.mu.RLock()
	sets := f.sets
	f.mu.RUnlock()
	for _, b := range sets {
		found := true
		for i := uint64(0); i < filterHashes && found; i++ {
			bit := (h1 + i*h2) % b.bits
			found = b.words[bit/64].Load()&(1<<(bit%64)) != 0
		}
		if found {
			return true
		}
	}
	return false
}
