package ledger

// tail keeps the newest committed records in memory, with the values their
// appenders decoded them to, so that followers close to the head of the log
// (the usual case) get them without reading the segment files or decoding
// them again. It is a ring: adding a record beyond its capacity drops the
// oldest. A ledger's tail is guarded by its mu.
type tail struct {
	ring  []Entry
	first uint64 // index of the oldest record held
	next  uint64 // index after the newest record held
}

// newTail returns a tail holding up to n records whose first record will be
// the one at index size.
func newTail(n int, size uint64) tail {
	return tail{ring: make([]Entry, max(n, 0)), first: size, next: size}
}

// add appends the entries of a commit, which starts where the previous one
// ended.
func (t *tail) add(entries []Entry) {
	n := uint64(len(t.ring))
	if n == 0 || len(entries) == 0 {
		return
	}
	for _, e := range entries {
		t.ring[e.Index%n] = e
	}
	t.next = entries[len(entries)-1].Index + 1
	t.first = max(t.first, t.next-min(t.next, n))
}

// get returns the count records from index from if the tail holds all of
// them.
func (t *tail) get(from, count uint64) ([]Entry, bool) {
	if from < t.first || from+count > t.next {
		return nil, false
	}
	n := uint64(len(t.ring))
	out := make([]Entry, count)
	for i := range out {
		out[i] = t.ring[(from+uint64(i))%n]
	}
	return out, true
}

// record returns the record at index idx if the tail holds it.
func (t *tail) record(idx uint64) ([]byte, bool) {
	if idx < t.first || idx >= t.next {
		return nil, false
	}
	return t.ring[idx%uint64(len(t.ring))].Data, true
}
