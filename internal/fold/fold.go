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
