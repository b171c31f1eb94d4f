package index

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"
)

// A cursor is base64url(version | order | last index | MAC), where the MAC
// is HMAC-SHA-256, truncated, over the rest and a fingerprint of the query's
// filters, keyed with a random key kept in the index (so cursors survive
// restarts and Reset, but not deleting the index file). A cursor is only a
// position, so a forged one could not reveal anything its holder may not
// see; it is authenticated so that a corrupted or edited cursor, or one
// reused with other filters or another order, is reported instead of
// silently paging from somewhere else.
const (
	cursorVersion = 1
	cursorMACSize = 16
	cursorSize    = 1 + 1 + 8 + cursorMACSize
)

// makeCursor returns the cursor for the page after the hit at index last.
func (ix *Index) makeCursor(last uint64, desc bool, fp []byte) string {
	b := make([]byte, 0, cursorSize)
	b = append(b, cursorVersion, orderByte(desc))
	b = binary.BigEndian.AppendUint64(b, last)
	b = append(b, ix.cursorMAC(b, fp)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseCursor returns the index of the last hit before the page s asks
// for, if s was made for a query with this order and fingerprint.
func (ix *Index) parseCursor(s string, desc bool, fp []byte) (uint64, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != cursorSize || b[0] != cursorVersion {
		return 0, fmt.Errorf("%w: malformed cursor", ErrInvalidQuery)
	}
	if b[1] != orderByte(desc) {
		return 0, fmt.Errorf("%w: cursor was issued for the other order", ErrInvalidQuery)
	}
	body, mac := b[:cursorSize-cursorMACSize], b[cursorSize-cursorMACSize:]
	if !hmac.Equal(mac, ix.cursorMAC(body, fp)) {
		return 0, fmt.Errorf("%w: cursor is not valid for this query (its filters differ from those of the page it came with, or the index was rebuilt since): start the listing again", ErrInvalidQuery)
	}
	last := binary.BigEndian.Uint64(body[2:])
	if last >= 1<<63 {
		return 0, fmt.Errorf("%w: malformed cursor", ErrInvalidQuery)
	}
	return last, nil
}

func orderByte(desc bool) byte {
	if desc {
		return 'd'
	}
	return 'a'
}

func (ix *Index) cursorMAC(body, fp []byte) []byte {
	m := hmac.New(sha256.New, ix.macKey)
	m.Write(body)
	m.Write(fp)
	return m.Sum(nil)[:cursorMACSize]
}

// fingerprint identifies q's filters and order: everything a cursor must be
// used with unchanged. Each field is length-prefixed, so no two different
// queries share an encoding.
func (q *Query) fingerprint(desc bool) []byte {
	h := sha256.New()
	str := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	tm := func(t time.Time, given bool) {
		if !given {
			str("")
		} else {
			str(t.UTC().Format(time.RFC3339Nano))
		}
	}
	str(q.Tenant)
	str(q.Type)
	str(q.Actor)
	str(q.Model)
	str(q.Outcome)
	str(q.Resource)
	str(q.Text)
	tm(q.From, q.hasFrom())
	tm(q.To, q.hasTo())
	if q.After == nil {
		str("")
	} else {
		str(strconv.FormatUint(*q.After, 10))
	}
	str(string(orderByte(desc)))
	// The actors an actor filter was resolved to (Actors, which replaces
	// Actor), last and only when set, so that cursors of queries without
	// them keep their fingerprints.
	if q.Actors != nil {
		str("actors")
		for _, a := range q.Actors {
			str(a)
		}
	}
	return h.Sum(nil)
}
