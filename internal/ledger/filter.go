package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
)

// keyFilter is a Bloom filter of every idempotency key in the log, so that
// Append asks Options.Lookup (a database query) only about keys that may
// have been seen: nearly every new key is known to be new from memory. It
// grows by adding larger filters, each sized for twice the keys of the one
// before, keeping the false-positive rate low, until its memory reaches
// its limit: then every further key goes into one of the filters, chosen
// by its hash in proportion to their sizes so that they fill evenly, and
// the false-positive rate, and with it the share of appends that query the
// index, rises as they fill (a filter never forgets a key, so no duplicate
// goes unnoticed). Add and MayContain are safe for concurrent use.
type keyFilter struct {
	mu      sync.RWMutex
	sets    []*bloom
	limit   int64       // most bytes for all sets; 0 for no limit
	atLimit atomic.Bool // no set will be added: sets is final
}

// Each key sets filterHashes bits within one block of 512 bits (a cache
// line) that its hash chooses, so that an addition or a lookup touches one
// cache line instead of filterHashes scattered ones, and divides nothing.
// Such a blocked filter needs more bits per key than a plain one for the
// same false-positive rate; with these, a filter holding its full count of
// keys has about 0.005%. A lookup consults every filter, so the rates add
// up: with 16 bits per key (0.08% each), a log of a few million records had
// five or six filters, a third of the requests of 100 new ids queried the
// index for a key it did not hold, and those queries took 2% of the
// server's CPU under batched ingest, more as the log grew. The price is
// memory: 3 to 6 bytes per key (each filter is made for twice the keys of
// the last), 30-60 MiB for ten million.
const (
	filterBitsPerKey = 24
	filterHashes     = 11
	filterMinKeys    = 1 << 16
	blockWords       = 8 // 512 bits
)

type bloom struct {
	words  []atomic.Uint64
	blocks uint64
	keys   atomic.Int64 // added so far, until the filter is at its limit
	cap    int64        // keys it is made for
}

func newBloom(keys int64) *bloom {
	blocks := max(1, uint64(keys*filterBitsPerKey+511)/512)
	return &bloom{words: make([]atomic.Uint64, blocks*blockWords), blocks: blocks, cap: keys}
}

func (b *bloom) size() int64 { return int64(len(b.words)) * 8 }

// newKeyFilter makes a filter for expected keys (at least filterMinKeys)
// that grows up to limit bytes (0: no limit).
func newKeyFilter(expected, limit int64) *keyFilter {
	return &keyFilter{sets: []*bloom{newBloom(max(expected, filterMinKeys))}, limit: limit}
}

// size returns the bytes of all sets. Called with f.mu held.
func (f *keyFilter) size() int64 {
	var n int64
	for _, b := range f.sets {
		n += b.size()
	}
	return n
}

// next returns the keys of the filter to add after one made for keys, or
// 0 if the limit leaves no room for one of at least filterMinKeys. Called
// with f.mu held.
func (f *keyFilter) next(keys int64) int64 {
	n := min(keys*2, math.MaxInt64/filterBitsPerKey)
	if f.limit > 0 {
		n = min(n, (f.limit-f.size())*8/filterBitsPerKey)
	}
	if n < filterMinKeys {
		return 0
	}
	return n
}

// Bytes returns the memory the filter takes, and whether it has reached its
// limit (it then takes keys beyond its design).
func (f *keyFilter) Bytes() (bytes int64, full bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.size(), f.atLimit.Load()
}

// spread returns the set that takes key once the filter is at its limit:
// each set with a chance in proportion to its blocks. sets is final then,
// and read without the lock. The choice mixes both halves of the hash, so
// that the keys of one set do not share the bits probes takes from them.
func (f *keyFilter) spread(key keyHash) *bloom {
	var total uint64
	for _, b := range f.sets {
		total += b.blocks
	}
	at, _ := bits.Mul64((key.a^bits.RotateLeft64(key.b, 32))*0x9e3779b97f4a7c15, total)
	for _, b := range f.sets {
		if at < b.blocks {
			return b
		}
		at -= b.blocks
	}
	return f.sets[len(f.sets)-1]
}

// probes calls f with where key's block starts in b.words and each of the
// filterHashes bits key has in it, until f returns false. The high bits of
// the first half of the key's hash choose the block; nine bits each, from
// the second half and then from the low bits of the first, give the bits.
// (Double hashing within so small a block made the false-positive rate
// three times the expected.)
func (b *bloom) probes(key keyHash, f func(start, bit uint64) bool) {
	block, _ := bits.Mul64(key.a, b.blocks)
	x := key.b
	for i := range filterHashes {
		if i == 64/9 {
			x = key.a
		}
		if !f(block*blockWords, x%512) {
			return
		}
		x >>= 9
	}
}

// Add records a key, by its hash.
func (f *keyFilter) Add(key keyHash) {
	var b *bloom
	if f.atLimit.Load() {
		b = f.spread(key)
	} else {
		f.mu.RLock()
		b = f.sets[len(f.sets)-1]
		f.mu.RUnlock()
		if b.keys.Add(1) > b.cap {
			f.mu.Lock()
			if last := f.sets[len(f.sets)-1]; last == b && !f.atLimit.Load() {
				if n := f.next(b.cap); n > 0 {
					f.sets = append(f.sets, newBloom(n))
				} else {
					f.atLimit.Store(true)
				}
			}
			if f.atLimit.Load() {
				b = f.spread(key)
			} else if last := f.sets[len(f.sets)-1]; last != b {
				b = last
				b.keys.Add(1)
			}
			f.mu.Unlock()
		}
	}
	var masks [blockWords]uint64
	var start uint64
	b.probes(key, func(s, bit uint64) bool {
		start = s
		masks[bit/64] |= 1 << (bit % 64)
		return true
	})
	for i, m := range masks {
		if m != 0 {
			b.words[start+uint64(i)].Or(m)
		}
	}
}

// MayContain reports false only if key was never added.
func (f *keyFilter) MayContain(key keyHash) bool {
	f.mu.RLock()
	sets := f.sets
	f.mu.RUnlock()
	for _, b := range sets {
		found := true
		b.probes(key, func(start, bit uint64) bool {
			found = b.words[start+bit/64].Load()&(1<<(bit%64)) != 0
			return found
		})
		if found {
			return true
		}
	}
	return false
}

// writeTo writes the filter for a start-up snapshot: whether it is at its
// limit, then each set's design, count and bits. Keys added meanwhile may
// or may not be in what it writes; every key added before it was called is.
func (f *keyFilter) writeTo(w io.Writer) error {
	full := f.atLimit.Load() // before sets: once at its limit, sets is final
	f.mu.RLock()
	sets := f.sets
	f.mu.RUnlock()
	buf := make([]byte, 0, 64<<10)
	if full {
		buf = append(buf, 1)
	} else {
		buf = append(buf, 0)
	}
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(sets)))
	for _, b := range sets {
		buf = binary.LittleEndian.AppendUint64(buf, uint64(b.cap))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(b.keys.Load()))
		buf = binary.LittleEndian.AppendUint64(buf, b.blocks)
		for i := range b.words {
			if len(buf)+8 > cap(buf) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
			buf = binary.LittleEndian.AppendUint64(buf, b.words[i].Load())
		}
	}
	_, err := w.Write(buf)
	return err
}

// maxFilterSets bounds the sets a filter read back may have: each is made
// for twice the keys of the last.
const maxFilterSets = 48

// readKeyFilter reads a filter written by writeTo, of at most maxBytes of
// bits, that grows up to limit bytes (0: no limit).
func readKeyFilter(r io.Reader, limit, maxBytes int64) (*keyFilter, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(head[1:])
	if head[0] > 1 || n == 0 || n > maxFilterSets {
		return nil, fmt.Errorf("key filter of %d sets", n)
	}
	f := &keyFilter{limit: limit}
	f.atLimit.Store(head[0] == 1)
	buf := make([]byte, 64<<10)
	for range n {
		var h [24]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return nil, err
		}
		keys, count, blocks := int64(binary.LittleEndian.Uint64(h[:])), int64(binary.LittleEndian.Uint64(h[8:])), binary.LittleEndian.Uint64(h[16:])
		if keys < filterMinKeys || count < 0 || blocks != max(1, uint64(keys*filterBitsPerKey+511)/512) ||
			blocks > uint64(maxBytes)/(blockWords*8) {
			return nil, errors.New("key filter set of an impossible size")
		}
		maxBytes -= int64(blocks) * blockWords * 8
		b := newBloom(keys)
		b.keys.Store(count)
		for i := 0; i < len(b.words); {
			chunk := buf[:min(len(buf), (len(b.words)-i)*8)]
			if _, err := io.ReadFull(r, chunk); err != nil {
				return nil, err
			}
			for ; len(chunk) > 0; chunk = chunk[8:] {
				b.words[i].Store(binary.LittleEndian.Uint64(chunk))
				i++
			}
		}
		f.sets = append(f.sets, b)
	}
	// A limit raised since it was written leaves room to grow again.
	if last := f.sets[len(f.sets)-1]; f.atLimit.Load() && f.next(last.cap) > 0 {
		f.atLimit.Store(false)
	}
	return f, nil
}
