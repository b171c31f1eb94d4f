package event

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

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

// plainASCII returns the length of the longest prefix of s[i:] made only of
// printable ASCII other than '"' and '\\' (bytes that need no escaping and
// are never control characters), looking at whole words only: the last
// bytes of s, fewer than eight, are left for the caller to look at, so that
// s[i+n], if n is the result and i+n+8 ≤ len(s), is the first byte that is
// not plain.
func plainASCII(s string, i int) int {
	start := i
	for ; i+16 <= len(s); i += 16 {
		if (notPlain(load64(s, i))|notPlain(load64(s, i+8)))&swarHigh != 0 {
			break
		}
	}
	for ; i+8 <= len(s); i += 8 {
		if m := notPlain(load64(s, i)) & swarHigh; m != 0 {
			return i - start + firstFlagged(m)
		}
	}
	return i - start
}

// plainBytes is plainASCII for a byte slice.
func plainBytes(b []byte, i int) int {
	start := i
	for ; i+16 <= len(b); i += 16 {
		if (notPlain(binary.LittleEndian.Uint64(b[i:]))|notPlain(binary.LittleEndian.Uint64(b[i+8:])))&swarHigh != 0 {
			break
		}
	}
	for ; i+8 <= len(b); i += 8 {
		if m := notPlain(binary.LittleEndian.Uint64(b[i:])) & swarHigh; m != 0 {
			return i - start + firstFlagged(m)
		}
	}
	return i - start
}

// firstFlagged returns the index of the lowest byte whose high bit m sets.
// The tests notPlain combines flag every byte they should, and may flag
// bytes above one they rightly flag (a borrow or carry moves up), but
// never below: the lowest flag is exact.
func firstFlagged(m uint64) int { return bits.TrailingZeros64(m) / 8 }

// notPlain sets the high bit of each byte of w (and perhaps of bytes after
// it) that is not printable ASCII or is '"' or '\\'. One expression covers
// the five conditions: a byte at or above 0x7f (w+1 sets its high bit; a
// carry only comes out of 0xff, itself flagged), below 0x20, or equal to
// '"' or '\\'. Two words' results can be or-ed and tested at once, which
// lets the processor work on both together.
func notPlain(w uint64) uint64 {
	q, bs := w^(swarOnes*'"'), w^(swarOnes*'\\')
	return (w + swarOnes) | w | (w-swarOnes*0x20)&^w | (q-swarOnes)&^q | (bs-swarOnes)&^bs
}

// plainTexts notes up to four long strings known to be plain: printable
// ASCII other than '"' and '\\' throughout (what plainASCII passes), so
// valid UTF-8 without control characters and with nothing to escape. A
// string is recognised by its memory, not by its bytes: a value replaced
// after it was noted is never taken for it.
type plainTexts struct {
	s [4]string
}

// minPlainText is the shortest string worth noting: a shorter one costs
// less to scan again than the lookups cost every string.
const minPlainText = 64

// note notes s, which the caller has found plain.
func (p *plainTexts) note(s string) {
	if len(s) < minPlainText {
		return
	}
	for i := range p.s {
		if p.s[i] == "" {
			p.s[i] = s
			return
		}
	}
}

// has reports whether s is a string noted as plain; a nil p notes none.
func (p *plainTexts) has(s string) bool {
	if p == nil || len(s) < minPlainText {
		return false
	}
	for _, t := range p.s {
		if len(t) == len(s) && unsafe.StringData(t) == unsafe.StringData(s) {
			return true
		}
	}
	return false
}
