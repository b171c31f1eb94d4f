package event

// Word-at-a-time scanning for the byte loops that run over every string of
// every event. Each helper looks at eight bytes at once and only reports
// where a closer look is needed; the callers keep their exact byte rules.

const (
	swarOnes = 0x0101010101010101
	swarHigh = 0x8080808080808080
)

// load64 reads eight bytes of s at i, little-endian (the compiler turns
// this into one load).
func load64(s string, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

// hasLess reports whether a byte of w is below n (n ≤ 128).
func hasLess(w, n uint64) bool { return (w-swarOnes*n)&^w&swarHigh != 0 }

// hasByte reports whether a byte of w equals c.
func hasByte(w uint64, c byte) bool { return hasLess(w^(swarOnes*uint64(c)), 1) }

// plainASCII returns the length of the longest prefix of s[i:], rounded down
// to whole words, made only of printable ASCII other than '"' and '\\':
// bytes that need no escaping and are never control characters.
func plainASCII(s string, i int) int {
	start := i
	for ; i+8 <= len(s); i += 8 {
		// One test for the five conditions: a byte at or above 0x7f (w+1
		// sets its high bit; a carry only comes out of 0xff, itself
		// flagged), below 0x20, or equal to '"' or '\\'.
		w := load64(s, i)
		q, bs := w^(swarOnes*'"'), w^(swarOnes*'\\')
		if ((w+swarOnes)|w|(w-swarOnes*0x20)&^w|(q-swarOnes)&^q|(bs-swarOnes)&^bs)&swarHigh != 0 {
			break
		}
	}
	return i - start
}
