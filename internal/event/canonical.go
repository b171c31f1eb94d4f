package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// Canonical returns the record's RFC 8785 (JCS) canonical JSON: the bytes
// the log stores and the Merkle tree commits to. Members are sorted, empty
// optional fields are left out, times are RFC 3339 in UTC with as many
// fractional digits as needed (as time.Time marshals them), and numbers are
// in their shortest round-tripping form (1, 0.1, 1e+21).
//
// If the result would exceed MaxRecordSize, Canonical returns an *Error with
// code CodeTooLarge saying that the metadata is too large for one record.
// It returns another error only for a record Normalize would not produce,
// such as one with a NaN attribute.
//
// The strings noted as plain (Record.NotePlain, and by Decode and
// Normalize) are written without a look for characters to escape; the
// notes are for one encoding, and Canonical clears them, so that the record
// then equals the one its bytes decode to.
func Canonical(r *Record) ([]byte, error) {
	b, err := canonical(r)
	r.plain = plainTexts{}
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRecordSize {
		return nil, &Error{Code: CodeTooLarge, Problems: []Problem{{Index: -1,
			Message: fmt.Sprintf("metadata too large for one record: %d bytes of canonical JSON; the limit is %d bytes", len(b), MaxRecordSize)}}}
	}
	return b, nil
}

// canonical is Canonical without the size limit. It encodes into a pooled
// buffer and returns an exact copy: records are kept in memory (the log's
// newest, requests in flight), where a grown buffer's spare capacity would
// be held too, and growing one costs copies and garbage.
func canonical(r *Record) ([]byte, error) {
	bp := canonicalBufs.Get().(*[]byte)
	b, err := appendCanonical((*bp)[:0], r)
	if err != nil {
		canonicalBufs.Put(bp)
		return nil, fmt.Errorf("couldn't canonicalize record %q: %w", r.ID, err)
	}
	out := bytes.Clone(b)
	if cap(b) <= 2*MaxRecordSize { // a record too large for the log is not worth keeping a buffer for
		*bp = b
		canonicalBufs.Put(bp)
	}
	return out, nil
}

var canonicalBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// ParseRecord parses a record's canonical bytes, as stored in the log. It
// accepts exactly the output of Canonical: data must be at most
// MaxRecordSize bytes, hold only Record's fields (matched case-sensitively)
// and attribute values that are strings, numbers or booleans, and be
// byte-for-byte what Canonical returns for the parsed record. Otherwise the
// error wraps ErrMalformedRecord.
//
// For any r that Normalize returns, with or without a ContentRef set,
// ParseRecord(Canonical(r)) is equal to r: times are in UTC and attribute
// numbers are float64.
func ParseRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformedRecord, len(data), MaxRecordSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	for k, v := range r.Attributes {
		switch v.(type) {
		case string, float64, bool:
		default:
			return nil, fmt.Errorf("%w: attribute %q is not a string, number or boolean", ErrMalformedRecord, k)
		}
	}
	c, err := canonical(&r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	if !bytes.Equal(c, data) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrMalformedRecord)
	}
	return &r, nil
}

// contentRefStart starts the content reference object in a canonical
// record, after its name: the object can occur nowhere else with that name
// before it (string values escape their quotes, and attribute values are
// never objects), but other objects may start with a digest (a model's).
var (
	contentName     = []byte(`"content":`)
	contentRefStart = []byte(`{"digest":"`)
)

// ContentDigest returns the content digest a stored (canonical) record
// commits to, without parsing the whole record; ok is false if the record
// references no content. Verification calls it for every record.
func ContentDigest(record []byte) (digest string, ok bool) {
	// The search is for the object's start: '{' is rare in a record,
	// where '"' (the name's first byte) is everywhere and would make the
	// search go byte by byte.
	for off := 0; ; {
		i := bytes.Index(record[off:], contentRefStart)
		if i < 0 {
			return "", false
		}
		i += off
		if !bytes.HasSuffix(record[:i], contentName) {
			off = i + 1
			continue
		}
		rest := record[i+len(contentRefStart):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			return "", false
		}
		return string(rest[:j]), true
	}
}

// recordDepth bounds the nesting RecordKey reads: a stored record nests
// three levels at most (attribute values are never objects or arrays).
const recordDepth = 64

// errKeyFound stops RecordKey's reading once it has both names.
var errKeyFound = errors.New("key found")

// RecordKey returns a stored record's tenant and id (its idempotency key)
// reading only the top level of the record, up to the second of them,
// which is much cheaper than parsing it: the ledger calls it for every
// record when it starts, and reads for every record they serve. The
// members it reads through are checked for JSON syntax, but their strings
// only for where they end (see skip); the tenant, the id and the names of
// the top level are checked as the decoder checks an event (valid UTF-8,
// escapes).
func RecordKey(record []byte) (tenant, id string, err error) {
	r := jsonReader{data: record, maxDepth: recordDepth}
	var haveTenant, haveID bool
	err = r.object(1, func(name []byte) error {
		isID, isTenant := string(name) == "id", string(name) == "tenant"
		if !isID && !isTenant {
			if !r.skip(2) {
				return errNotEvent
			}
			return nil
		}
		if r.peek() != '"' {
			return fmt.Errorf("%s is not a string", name)
		}
		v, _, ok := r.text()
		if !ok {
			return fmt.Errorf("%s is not a valid string", name)
		}
		if isID {
			id, haveID = string(v), len(v) > 0
		} else {
			tenant, haveTenant = string(v), len(v) > 0
		}
		if haveID && haveTenant {
			return errKeyFound
		}
		return nil
	})
	switch {
	case err == errKeyFound:
		return tenant, id, nil
	case err == errNotEvent:
		return "", "", fmt.Errorf("%w: not a well-formed JSON object", ErrMalformedRecord)
	case err != nil:
		return "", "", fmt.Errorf("%w: %v", ErrMalformedRecord, err)
	}
	return "", "", fmt.Errorf("%w: no id or tenant", ErrMalformedRecord)
}

// skip reads past the value at r.pos, at depth levels of nesting, as value
// does, except that a string (a member name too) is read only for where it
// ends, at its first quote not escaped by a backslash, and that objects may
// repeat names. A stored record is the canonical form of an event the
// decoder accepted, protected by its leaf hash, and in any valid JSON that
// quote ends the string; checking every byte (UTF-8, control characters,
// escapes) took most of RecordKey's time on the long strings records carry
// (go test ./internal/event -bench RecordKey: 720 ns a record of 1 KiB with
// it, 385 without).
func (r *jsonReader) skip(depth int) bool {
	switch r.peek() {
	case '"':
		return r.skipString()
	case '{':
		return r.skipMembers(depth, '}', true)
	case '[':
		return r.skipMembers(depth, ']', false)
	}
	_, err := r.value(depth)
	return err == nil
}

// skipMembers reads past the object (named, its members' names skipped as
// strings) or array at r.pos that ends with closing.
func (r *jsonReader) skipMembers(depth int, closing byte, named bool) bool {
	if depth > r.maxDepth {
		return false
	}
	r.pos++
	if r.peek() == closing {
		r.pos++
		return true
	}
	for {
		if named {
			if r.peek() != '"' || !r.skipString() || r.peek() != ':' {
				return false
			}
			r.pos++
		}
		if !r.skip(depth + 1) {
			return false
		}
		switch r.peek() {
		case ',':
			r.pos++
		case closing:
			r.pos++
			return true
		default:
			return false
		}
	}
}

// skipString reads past the string at r.pos (its opening quote).
func (r *jsonReader) skipString() bool {
	for i := r.pos + 1; ; {
		j := bytes.IndexByte(r.data[i:], '"')
		if j < 0 {
			return false
		}
		end := i + j
		backslashes := 0
		for r.data[end-1-backslashes] == '\\' {
			backslashes++
		}
		if backslashes%2 == 0 {
			r.pos = end + 1
			return true
		}
		i = end + 1
	}
}
