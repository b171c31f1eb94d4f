// Package fold matches text with ASCII letters in either case, without
// copying or lowering the text searched: the content scanner's keyword
// prefilter and the query index's text search (which matches as SQL LIKE
// does) both use it.
package fold

import "bytes"

// Contains reports whether s contains kw, a lower-case keyword, with
// ASCII letters matched in either case. It finds candidates with
// bytes.IndexByte on kw's first byte in both cases, so that content is
// neither copied nor lowered.
func Contains(s []byte, kw string) bool {
	if kw == "" {
		return true
	}
	lo, up := kw[0], kw[0]
	if 'a' <= lo && lo <= 'z' {
		up = lo - 'a' + 'A'
	}
	last := len(s) - len(kw) // the last offset where kw fits
	nextLo, nextUp := -1, -1 // next offsets of lo and up at or after from; -2 when none
	for from := 0; from <= last; {
		if nextLo != -2 && nextLo < from {
			if nextLo = bytes.IndexByte(s[from:last+1], lo); nextLo >= 0 {
				nextLo += from
			} else {
				nextLo = -2
			}
		}
		if up != lo && nextUp != -2 && nextUp < from {
			if nextUp = bytes.IndexByte(s[from:last+1], up); nextUp >= 0 {
				nextUp += from
			} else {
				nextUp = -2
			}
		}
		at := nextLo
		if up != lo && nextUp >= 0 && (at < 0 || nextUp < at) {
			at = nextUp
		}
		if at < 0 {
			return false
		}
		if equalFoldASCII(s[at+1:at+len(kw)], kw[1:]) {
			return true
		}
		from = at + 1
	}
	return false
}

// equalFoldASCII reports whether b equals lower, a lower-case string, with
// ASCII letters of b in either case.
func equalFoldASCII(b []byte, lower string) bool {
	for i := range len(lower) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// LowerASCII returns s with its ASCII letters in lower case and every other
// byte as it is: the form of a keyword for Contains.
func LowerASCII(s string) string {
	for i := range len(s) {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// Set finds which of a fixed list of keywords a text contains, with ASCII
// letters matched in either case, in one pass over the text. Searching for
// each keyword in turn costs a pass per keyword, and ordinary prose holds
// their first letters every few bytes. Instead, eight bytes at a time, the
// pass skips what starts no keyword (a table lookup per byte); where a
// keyword may start, the byte and the next must also begin one (a bitmap
// of pairs) before the keywords starting with that byte are compared.
// A Set is safe for concurrent use.
type Set struct {
	words  []string   // the keywords, in lower case
	starts [256]int32 // for each byte, 1 + its index in groups; 0 when no keyword starts with it
	groups [][]int    // the keywords (indexes into words) starting with a byte, in either case
	empty  []int      // the empty keywords, found in any text
	// pairs has bit lower[a]<<8|lower[b] set when a keyword starts with
	// the bytes a, b (for a one-byte keyword a: for every b).
	pairs [1 << 16 / 64]uint64
}

// lower maps each byte to itself with ASCII letters in lower case.
var lower = func() (t [256]byte) {
	for c := range t {
		t[c] = byte(c)
		if 'A' <= c && c <= 'Z' {
			t[c] += 'a' - 'A'
		}
	}
	return t
}()

// NewSet returns the Set of keywords, lowered with LowerASCII.
func NewSet(keywords []string) *Set {
	set := &Set{words: make([]string, len(keywords))}
	for i, k := range keywords {
		k = LowerASCII(k)
		set.words[i] = k
		if k == "" {
			set.empty = append(set.empty, i)
			continue
		}
		c := k[0]
		if set.starts[c] == 0 {
			set.groups = append(set.groups, nil)
			set.starts[c] = int32(len(set.groups))
			if 'a' <= c && c <= 'z' {
				set.starts[c-'a'+'A'] = set.starts[c]
			}
		}
		g := set.starts[c] - 1
		set.groups[g] = append(set.groups[g], i)
		for b := range 256 {
			if len(k) == 1 || lower[b] == k[1] {
				p := int(c)<<8 | b
				set.pairs[p>>6] |= 1 << (p & 63)
			}
		}
	}
	return set
}

// Len is the number of keywords.
func (set *Set) Len() int { return len(set.words) }

// Find sets found[i] for each keyword i that s contains; found must have
// Len elements, all false. It returns how many keywords s contains.
func (set *Set) Find(s []byte, found []bool) int {
	n := 0
	for _, i := range set.empty {
		found[i] = true
		n++
	}
	left := len(set.words) - n
	for at := 0; at < len(s) && left > 0; at += 8 {
		end := min(at+8, len(s))
		if end-at == 8 && set.starts[s[at]]|set.starts[s[at+1]]|set.starts[s[at+2]]|set.starts[s[at+3]]|
			set.starts[s[at+4]]|set.starts[s[at+5]]|set.starts[s[at+6]]|set.starts[s[at+7]] == 0 {
			continue
		}
		for j := at; j < end; j++ {
			g := set.starts[s[j]]
			if g == 0 {
				continue
			}
			if j+1 < len(s) {
				p := int(lower[s[j]])<<8 | int(lower[s[j+1]])
				if set.pairs[p>>6]&(1<<(p&63)) == 0 {
					continue
				}
			}
			for _, i := range set.groups[g-1] {
				w := set.words[i]
				if !found[i] && len(w) <= len(s)-j && equalFoldASCII(s[j+1:j+len(w)], w[1:]) {
					found[i] = true
					n++
					left--
				}
			}
		}
	}
	return n
}
