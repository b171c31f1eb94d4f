package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// Field rules of the public contract (API.md, "Events").
const (
	// DefaultTenant is the tenant of an event that names none.
	DefaultTenant = "default"

	maxIDBytes        = 128
	maxTypeBytes      = 128
	maxTextBytes      = 1024
	maxAttributes     = 256
	maxAttrKeyBytes   = 256
	maxAttrValueBytes = 4096
	maxExactInteger   = 1 << 53 // integers beyond ±2^53 lose precision as float64
	contentRefReserve = 256     // canonical bytes left for the ContentRef the caller adds
)

// Normalize checks one event against the contract and returns the record
// to store, with defaults filled in, and the event's content.
//
// The record's Content is nil: the caller encrypts the returned content and
// sets a ContentRef. The returned content is the content's JSON text as
// sent (it aliases e.Content), or nil when the event has none or it is JSON
// null. Normalize leaves room in the record for a ContentRef of up to 256
// canonical bytes, so that Canonical succeeds once the caller has set one.
// The record's Attributes is e.Attributes, changed in place as the rules
// below say (numbers made float64, legacy names renamed), even when the
// event is refused.
//
// Rules, beyond Decode's structural ones:
//   - id: at most 128 bytes, no whitespace or control characters; if empty,
//     a new UUIDv7.
//   - type: required; dot-separated segments of [a-z0-9_] each starting with
//     a letter ("ai.inference"); at most 128 bytes.
//   - time: RFC 3339, with or without fractional seconds, stored in UTC; it
//     must fall in the years 0001 to 9999 UTC. Empty means now.
//   - tenant: [a-z0-9][a-z0-9_-]{0,62}; empty means DefaultTenant.
//   - actor.type: user, service or system; outcome: success, failure or
//     denied; either may be empty.
//   - actor.ip: an IP address, stored in its canonical form.
//   - trace_id, span_id: 32 and 16 hexadecimal digits, not all zero, stored
//     in lowercase.
//   - every other string: valid UTF-8 without control characters, at most
//     1024 bytes.
//   - attributes: at most 256 keys of 1 to 256 bytes matching
//     [A-Za-z0-9_.\-/:]+; values are strings (at most 4096 bytes of valid
//     UTF-8, no control characters but tab, newline and carriage return),
//     booleans or finite numbers. An integer written without fraction or
//     exponent must lie within ±2^53 so that it is stored exactly. Numbers
//     are stored as float64; Go integer and float types and json.Number are
//     accepted.
//   - content: a single JSON value of at most lim.MaxContentBytes bytes
//     (else a CodeTooLarge problem), nested at most lim.MaxDepth levels
//     counting the event as level 1, valid UTF-8 without unpaired surrogates
//     or duplicate keys.
//   - attributes under a legacy OpenTelemetry GenAI name (gen_ai.system,
//     gen_ai.usage.prompt_tokens, …) are stored under the current name
//     (see CurrentAttribute); if both are sent, the current one is kept.
//   - objects with nothing set (such as "actor":{}) and empty attributes
//     become nil.
//
// ReceivedAt is now in UTC. The error is an *Error listing every problem of
// the event, with Index 0 and fields such as "events[0].tenant" (use
// NormalizeAll to have the event's real position reported), or, should the
// system's random source fail, an error that is not an *Error.
func Normalize(e *Event, now time.Time, lim Limits) (Record, []byte, error) {
	var ps problems
	r, content, err := normalize(e, now, lim.orDefaults(), 0, &ps)
	if err != nil {
		return Record{}, nil, err
	}
	if err := ps.err(); err != nil {
		return Record{}, nil, err
	}
	return r, content, nil
}

// NormalizeAll normalizes a batch as Normalize does each event. It is all
// or nothing: if any event breaks a rule, it returns no records and one
// *Error listing the problems of every bad event, each with its position in
// events as Index. contents[i] is the content of records[i], or nil.
// An empty batch and one of more than lim.MaxBatchEvents events are refused.
func NormalizeAll(events []Event, now time.Time, lim Limits) (records []Record, contents [][]byte, err error) {
	lim = lim.orDefaults()
	var ps problems
	switch {
	case len(events) == 0:
		ps.add(Problem{Index: -1, Field: "events", Message: "batch is empty: send at least one event"}, CodeInvalid)
		return nil, nil, ps.err()
	case len(events) > lim.MaxBatchEvents:
		ps.add(Problem{Index: -1, Field: "events",
			Message: fmt.Sprintf("more than %d events in one request: split the batch", lim.MaxBatchEvents)}, CodeTooLarge)
		return nil, nil, ps.err()
	}
	records = make([]Record, len(events))
	contents = make([][]byte, len(events))
	for i := range events {
		records[i], contents[i], err = normalize(&events[i], now, lim, i, &ps)
		if err != nil {
			return nil, nil, err
		}
	}
	if err := ps.err(); err != nil {
		return nil, nil, err
	}
	return records, contents, nil
}

// checker collects the problems of the event at one position.
type checker struct {
	ps    *problems
	index int
	path  string // "events[3]"
}

func (c *checker) add(field, format string, args ...any) {
	c.addCode(CodeInvalid, field, format, args...)
}

func (c *checker) addCode(code, field, format string, args ...any) {
	c.ps.add(Problem{Index: c.index, Field: c.path + field, Message: fmt.Sprintf(format, args...)}, code)
}

func normalize(e *Event, now time.Time, lim Limits, index int, ps *problems) (Record, []byte, error) {
	c := &checker{ps: ps, index: index, path: eventPath(index)}
	before := len(ps.list) + ps.dropped
	r := Record{ID: e.ID, Type: e.Type, ReceivedAt: now.UTC(), Tenant: e.Tenant}

	switch {
	case r.ID == "":
		id, err := uuid.NewV7()
		if err != nil {
			return Record{}, nil, fmt.Errorf("couldn't make an event id: %w", err)
		}
		r.ID = id.String()
	case len(r.ID) > maxIDBytes:
		c.add(".id", "must be at most %d bytes", maxIDBytes)
	case hasSpaceOrControl(r.ID):
		c.add(".id", "must not contain whitespace or control characters")
	case r.ID == "." || r.ID == "..":
		// A path segment of its own meaning this or the parent: clients
		// and proxies do not send it as GET /v1/events/{id} needs.
		c.add(".id", "must not be . or ..")
	case !utf8.ValidString(r.ID):
		c.add(".id", "must be valid UTF-8")
	}

	switch {
	case r.Type == "":
		c.add(".type", "is required, such as ai.inference")
	case len(r.Type) > maxTypeBytes:
		c.add(".type", "must be at most %d bytes", maxTypeBytes)
	case !isEventType(r.Type):
		c.add(".type", "must be lowercase dotted words such as ai.inference: segments of [a-z0-9_] starting with a letter, separated by dots")
	}

	if e.Time == "" {
		r.Time = now.UTC()
	} else if t, ok := ParseTime(e.Time); ok {
		r.Time = t
	} else {
		c.add(".time", "must be an RFC 3339 timestamp in the years 0001 to 9999, such as 2025-01-02T15:04:05.123Z")
	}

	if r.Tenant == "" {
		r.Tenant = DefaultTenant
	} else if !IsTenant(r.Tenant) {
		c.add(".tenant", "must match [a-z0-9][a-z0-9_-]{0,62}")
	}

	if a := e.Actor; a != nil {
		n := Actor{
			ID:        c.text(".actor.id", a.ID),
			Type:      c.oneOf(".actor.type", a.Type, "user", "service", "system"),
			IP:        c.ip(".actor.ip", a.IP),
			UserAgent: c.text(".actor.user_agent", a.UserAgent),
			SessionID: c.text(".actor.session_id", a.SessionID),
		}
		if n != (Actor{}) {
			r.Actor = &n
		}
	}
	r.Action = c.text(".action", e.Action)
	r.Outcome = c.oneOf(".outcome", e.Outcome, "success", "failure", "denied")
	if x := e.Resource; x != nil {
		n := Resource{Type: c.text(".resource.type", x.Type), ID: c.text(".resource.id", x.ID), Name: c.text(".resource.name", x.Name)}
		if n != (Resource{}) {
			r.Resource = &n
		}
	}
	if x := e.Model; x != nil {
		n := Model{Provider: c.text(".model.provider", x.Provider), Name: c.text(".model.name", x.Name),
			Version: c.text(".model.version", x.Version), Digest: c.text(".model.digest", x.Digest)}
		if n != (Model{}) {
			r.Model = &n
		}
	}
	if x := e.Dataset; x != nil {
		n := Dataset{Name: c.text(".dataset.name", x.Name), Version: c.text(".dataset.version", x.Version),
			Digest: c.text(".dataset.digest", x.Digest)}
		if n != (Dataset{}) {
			r.Dataset = &n
		}
	}
	if x := e.API; x != nil {
		n := API{Name: c.text(".api.name", x.Name), Version: c.text(".api.version", x.Version)}
		if n != (API{}) {
			r.API = &n
		}
	}
	if x := e.Prompt; x != nil {
		n := Prompt{ID: c.text(".prompt.id", x.ID), Version: c.text(".prompt.version", x.Version),
			Digest: c.text(".prompt.digest", x.Digest)}
		if n != (Prompt{}) {
			r.Prompt = &n
		}
	}

	r.Attributes = c.attributes(e.Attributes, &e.plain)
	r.plain = e.plain
	content := c.content(e.Content, sameBytes(e.Content, e.checked), lim)
	r.TraceID = c.hexID(".trace_id", e.TraceID, 32)
	r.SpanID = c.hexID(".span_id", e.SpanID, 16)

	if len(ps.list)+ps.dropped == before {
		c.fits(r, content != nil)
	}
	return r, content, nil
}

// text checks a free-text string field and returns it.
// The patterns below are checked byte by byte rather than with regexp:
// they run for every event and the tests pin them to the documented
// expressions.

// isEventType reports whether s matches ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$.
func isEventType(s string) bool {
	start := true
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z':
			start = false
		case (b >= '0' && b <= '9') || b == '_':
			if start {
				return false
			}
		case b == '.':
			if start {
				return false
			}
			start = true
		default:
			return false
		}
	}
	return !start
}

// IsTenant reports whether s is a valid tenant name:
// ^[a-z0-9][a-z0-9_-]{0,62}$.
func IsTenant(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9'):
		case (b == '_' || b == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// isAttrKey reports whether s matches ^[A-Za-z0-9_./:-]+$.
func isAttrKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
			b == '_' || b == '.' || b == '/' || b == ':' || b == '-') {
			return false
		}
	}
	return true
}

// hasSpaceOrControl reports whether s holds a white space or control
// character (unicode.IsSpace, unicode.IsControl). Below 0x80 those are the
// bytes up to ' ' and DEL; only ids with other bytes are decoded.
func hasSpaceOrControl(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= utf8.RuneSelf:
			return strings.ContainsFunc(s[i:], func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
		case c <= ' ' || c == 0x7f:
			return true
		}
	}
	return false
}

// hasControl reports whether s (valid UTF-8) holds a control character
// (unicode.IsControl: C0, DEL and C1), other than tab, newline and carriage
// return when allowWhitespace. It walks bytes: text is nearly always ASCII.
func hasControl(s string, allowWhitespace bool) bool {
	for i := 0; i < len(s); i++ {
		if len(s)-i >= 8 {
			if n := plainASCII(s, i); n > 0 {
				i += n - 1
				continue
			}
		}
		b := s[i]
		switch {
		case b < 0x20:
			if !allowWhitespace || (b != '\t' && b != '\n' && b != '\r') {
				return true
			}
		case b == 0x7f:
			return true
		case b >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(s[i:])
			if unicode.IsControl(r) {
				return true
			}
			i += size - 1
		}
	}
	return false
}

func (c *checker) text(field, s string) string {
	switch {
	case !utf8.ValidString(s):
		c.add(field, "must be valid UTF-8")
	case len(s) > maxTextBytes:
		c.add(field, "must be at most %d bytes", maxTextBytes)
	case hasControl(s, false):
		c.add(field, "must not contain control characters")
	}
	return s
}

// oneOf checks that s is empty or one of allowed.
func (c *checker) oneOf(field, s string, allowed ...string) string {
	if s != "" && !slices.Contains(allowed, s) {
		c.add(field, "must be one of %s", strings.Join(allowed, ", "))
	}
	return s
}

// ip checks an IP address and returns its canonical form.
func (c *checker) ip(field, s string) string {
	if s == "" {
		return ""
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		c.add(field, "must be an IP address such as 192.0.2.1 or 2001:db8::1")
		return s
	}
	return addr.String()
}

// hexID checks a tracing id of n hexadecimal digits and returns it in
// lowercase.
func (c *checker) hexID(field, s string, n int) string {
	if s == "" {
		return ""
	}
	ok, zero, upper := len(s) == n, true, false
	for i := 0; ok && i < len(s); i++ {
		switch b := s[i]; {
		case '0' <= b && b <= '9':
			zero = zero && b == '0'
		case 'a' <= b && b <= 'f':
			zero = false
		case 'A' <= b && b <= 'F':
			zero, upper = false, true
		default:
			ok = false
		}
	}
	if !ok {
		c.add(field, "must be %d hexadecimal digits", n)
		return s
	}
	if zero {
		c.add(field, "must not be all zeros")
	}
	if upper {
		return strings.ToLower(s)
	}
	return s
}

// ParseTime parses an RFC 3339 timestamp of a year from 1 to 9999 into
// UTC, as event times are read. time.Parse alone is laxer than RFC 3339
// (it accepts a comma before the fraction, and offsets of 24 hours) and
// stricter (it refuses a lowercase "t" or "z").
func ParseTime(s string) (time.Time, bool) {
	ok, lower := rfc3339Form(s)
	if !ok {
		return time.Time{}, false
	}
	if lower {
		s = strings.ToUpper(s)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	t = t.UTC()
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}, false
	}
	return t, true
}

// rfc3339Form reports whether s has the form of an RFC 3339 timestamp,
// ^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$, and
// whether it uses a lowercase "t" or "z" (which time.Parse refuses). It is
// a byte loop rather than a regular expression, which had cost more than the
// parse itself.
func rfc3339Form(s string) (ok, lower bool) {
	digits := func(from, to int) bool {
		for i := from; i < to; i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	if len(s) < 20 || !digits(0, 4) || s[4] != '-' || !digits(5, 7) || s[7] != '-' || !digits(8, 10) ||
		s[10] != 'T' && s[10] != 't' || !digits(11, 13) || s[13] != ':' || !digits(14, 16) || s[16] != ':' || !digits(17, 19) {
		return false, false
	}
	lower = s[10] == 't'
	i := 19
	if s[i] == '.' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			return false, false
		}
		i = j
	}
	switch rest := s[i:]; {
	case rest == "Z":
		return true, lower
	case rest == "z":
		return true, true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		// time.Parse takes hours up to 24; RFC 3339 only up to 23.
		return digits(i+1, i+3) && digits(i+4, i+6) && rest[1:3] <= "23" && rest[4:6] <= "59", lower
	}
	return false, false
}

// attributes checks the attributes and returns them with every number as
// a float64 and legacy names renamed, or nil if there are none. It makes
// those changes in place, in in, which the record then shares: a second
// map for every event was a tenth of ingest's allocations. Strings plain
// notes are known to be valid and free of control characters.
func (c *checker) attributes(in map[string]any, plain *plainTexts) map[string]any {
	if len(in) == 0 {
		return nil
	}
	if len(in) > maxAttributes {
		c.add(".attributes", "must have at most %d keys", maxAttributes)
		return nil
	}
	legacy := false
	for k, v := range in {
		if attrKeyOK(k) {
			if nv, msg := attributeValue(v, plain); msg == "" {
				switch v.(type) {
				case string, bool: // kept as they are
				default:
					in[k] = nv
				}
				legacy = legacy || CurrentAttribute(k) != k
				continue
			}
		}
		// Something is wrong: report every problem, in key order, so
		// that they come in a stable order. Sorting only then spares
		// valid attributes (nearly all) a sort.
		return c.attributeProblems(in, plain)
	}
	if legacy {
		renameLegacy(in)
	}
	return in
}

// attrKeyOK reports whether k is a valid attribute key.
func attrKeyOK(k string) bool {
	return k != "" && len(k) <= maxAttrKeyBytes && isAttrKey(k)
}

// attributeProblems is attributes for a map with problems: it checks the
// keys in order and reports each problem.
func (c *checker) attributeProblems(in map[string]any, plain *plainTexts) map[string]any {
	out := make(map[string]any, len(in))
	for _, k := range slices.Sorted(maps.Keys(in)) {
		field := func() string { return ".attributes" + keySegment(k) }
		switch {
		case k == "" || len(k) > maxAttrKeyBytes:
			c.add(field(), "key must be 1 to %d bytes", maxAttrKeyBytes)
			continue
		case !isAttrKey(k):
			c.add(field(), `key must match [A-Za-z0-9_.\-/:]+`)
			continue
		}
		v, msg := attributeValue(in[k], plain)
		if msg != "" {
			c.add(field(), "%s", msg)
			continue
		}
		out[k] = v
	}
	renameLegacy(out)
	return out
}

// attributeValue checks one attribute value and returns it as stored, or
// says what is wrong with it. A value stored as it is is returned as the
// same interface value, which saves boxing it again. A string plain notes
// is not scanned again.
func attributeValue(in any, plain *plainTexts) (any, string) {
	const kinds = "must be a string, number or boolean"
	switch v := in.(type) {
	case string:
		known := plain.has(v)
		switch {
		case !known && !utf8.ValidString(v):
			return nil, "must be valid UTF-8"
		case len(v) > maxAttrValueBytes:
			return nil, fmt.Sprintf("must be at most %d bytes", maxAttrValueBytes)
		case !known && hasControl(v, true):
			return nil, "must not contain control characters other than tab, newline and carriage return"
		}
		return in, ""
	case bool:
		return in, ""
	case float64:
		if v != 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
			return in, ""
		}
		return floatValue(v)
	case json.Number:
		return numberValue(string(v))
	case float32:
		return floatValue(float64(v))
	case int:
		return intValue(int64(v))
	case int8:
		return intValue(int64(v))
	case int16:
		return intValue(int64(v))
	case int32:
		return intValue(int64(v))
	case int64:
		return intValue(v)
	case uint:
		return uintValue(uint64(v))
	case uint8:
		return uintValue(uint64(v))
	case uint16:
		return uintValue(uint64(v))
	case uint32:
		return uintValue(uint64(v))
	case uint64:
		return uintValue(v)
	case nil:
		return nil, kinds + ", not null"
	case map[string]any:
		return nil, kinds + ", not an object: attributes are flat"
	case []any:
		return nil, kinds + ", not an array: attributes are flat"
	default:
		return nil, fmt.Sprintf("%s, not a Go %T", kinds, v)
	}
}

const integerRange = "integers must lie within ±9007199254740992 (2^53) to be stored exactly; send larger ones as strings"

// numberValue converts a JSON number. An integer literal must be exact as
// a float64; any other number is rounded to the nearest float64, which is
// what JSON numbers mean (RFC 8259, section 6).
func numberValue(n string) (any, string) {
	if !isJSONNumber(n) {
		return nil, "must be a JSON number"
	}
	if !strings.ContainsAny(n, ".eE") {
		i, err := strconv.ParseInt(n, 10, 64)
		if err != nil || i < -maxExactInteger || i > maxExactInteger {
			return nil, integerRange
		}
		return intValue(i)
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, "must be a JSON number"
	}
	return floatValue(f)
}

func floatValue(f float64) (any, string) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, "must be a finite number (within the range of a 64-bit float)"
	}
	if f == 0 {
		f = 0 // canonical JSON has no -0
	}
	return f, ""
}

func intValue(i int64) (any, string) {
	if i < -maxExactInteger || i > maxExactInteger {
		return nil, integerRange
	}
	return float64(i), ""
}

func uintValue(u uint64) (any, string) {
	if u > maxExactInteger {
		return nil, integerRange
	}
	return float64(u), ""
}

// content checks the event's content and returns it, or nil if absent.
func (c *checker) content(raw json.RawMessage, checked bool, lim Limits) []byte {
	if int64(len(raw)) > lim.MaxContentBytes {
		c.addCode(CodeTooLarge, ".content", "is %d bytes; the limit is %d bytes", len(raw), lim.MaxContentBytes)
		return nil
	}
	if content, ok := validContent(raw, checked, lim.MaxDepth); ok {
		if string(content) == "null" {
			return nil
		}
		return content
	}
	s := &scanner{data: raw, where: " of the content", maxDepth: lim.MaxDepth, index: c.index, root: ".content"}
	if s.atEnd() {
		return nil
	}
	start := s.pos
	if err := s.value(1); err != nil {
		c.ps.add(err.(*scanError).problem(0), CodeInvalid)
		return nil
	}
	content := raw[start:s.pos]
	if !s.atEnd() {
		c.add(".content", "must be a single JSON value")
		return nil
	}
	if string(content) == "null" {
		return nil
	}
	return content
}

// fastContent lets tests turn validContent off to compare.
var fastContent = true

// validContent is the fast path of checker.content: content that is one
// valid JSON value (jsontext's strict check: syntax, UTF-8, no duplicate
// names) within the nesting limit is returned without surrounding space.
// checked says raw passed the strict check already (Decode read it so).
// It reports false for anything else, including content the precise
// scanner would accept, which then decides and names the problem; it never
// accepts what the scanner refuses (FuzzValidContent checks both).
func validContent(raw []byte, checked bool, maxDepth int) ([]byte, bool) {
	content := bytes.Trim(raw, " \t\r\n")
	// The content is one level below the event: its outermost object or
	// array is at depth 2.
	if !fastContent || len(content) == 0 || (!checked && !jsontext.Value(content).IsValid()) || TooDeep(content, maxDepth-1) {
		return nil, false
	}
	return content, true
}

// sameBytes reports whether a and b are the same bytes in memory, not
// merely equal ones.
func sameBytes(a, b []byte) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

// fits checks that the record, once the caller has set its ContentRef, is
// small enough for the log, so that a batch is refused before anything of it
// is stored rather than at commit.
// sizeBound is an upper bound of the size of r's canonical encoding
// (without content), cheap to compute: every string byte may become a
// six-byte escape, and every member's punctuation is counted generously.
func sizeBound(r *Record) int {
	const (
		structure = 1024 // member names, braces, commas, colons and quotes of the fixed fields
		escape    = 6    // the longest escape of one byte: \u00XX
		number    = 32   // the longest number RFC 8785 writes, with margin
	)
	n := structure + 2*len(time.RFC3339Nano)
	for _, s := range []string{r.ID, r.Type, r.Tenant, r.Action, r.Outcome, r.TraceID, r.SpanID} {
		n += escape * len(s)
	}
	if a := r.Actor; a != nil {
		n += escape * (len(a.ID) + len(a.Type) + len(a.IP) + len(a.UserAgent) + len(a.SessionID))
	}
	if x := r.Resource; x != nil {
		n += escape * (len(x.Type) + len(x.ID) + len(x.Name))
	}
	if x := r.Model; x != nil {
		n += escape * (len(x.Provider) + len(x.Name) + len(x.Version) + len(x.Digest))
	}
	if x := r.Dataset; x != nil {
		n += escape * (len(x.Name) + len(x.Version) + len(x.Digest))
	}
	if x := r.API; x != nil {
		n += escape * (len(x.Name) + len(x.Version))
	}
	if x := r.Prompt; x != nil {
		n += escape * (len(x.ID) + len(x.Version) + len(x.Digest))
	}
	for k, v := range r.Attributes {
		n += escape*len(k) + 4
		if s, ok := v.(string); ok {
			n += escape*len(s) + 2
		} else {
			n += number
		}
	}
	return n
}

func (c *checker) fits(r Record, hasContent bool) {
	limit := MaxRecordSize
	if hasContent {
		limit -= contentRefReserve
	}
	bound := sizeBound(&r)
	if bound+maxGrowth <= limit {
		return // certainly fits, however much it grows: no need to encode it
	}
	grows := growth(&r)
	if bound+grows <= limit {
		return
	}
	b, err := canonical(&r)
	if err != nil {
		c.add("", "%v", err) // not expected for a record that passed the rules
		return
	}
	if n := len(b) + grows; n > limit {
		as := ""
		if grows > 0 {
			as = " (as stored: personal values become pseudonyms, times may take 30 bytes)"
		}
		c.addCode(CodeTooLarge, "", "metadata too large for one record: %d bytes of canonical JSON%s; the limit is %d bytes (make attributes and text fields smaller, or move data into content)",
			n, as, limit)
	}
}

// PersonalAttributes are the attributes pseudonymised like the actor's
// identifiers (see ingest): OpenTelemetry names that identify a person, a
// device or a conversation.
var PersonalAttributes = []string{
	"user.id", "user.name", "user.full_name", "user.email", "enduser.id", "enduser.pseudo.id",
	"client.address", "source.address", "network.peer.address", "user_agent.original",
	"session.id", "session.previous_id", "gen_ai.conversation.id",
}

// pseudonymLen is the length of a pseudonym: "hmac-sha256:" and 64 hex
// digits.
const pseudonymLen = 12 + 64

// maxGrowth bounds growth for any record: two times at their longest (from
// at least "0001-01-01T00:00:00Z") and every personal value a pseudonym.
// Most records are far enough below the limit for fits to stop at it.
var maxGrowth = 2*10 + pseudonymLen*(4+len(PersonalAttributes))

// growth bounds how much r's canonical encoding grows after these checks,
// so that what passes fits is not refused later, after keys were made for
// it: each personal value may become a pseudonym (pseudonymLen bytes), and
// received_at (and time, when the event had none), written without trailing
// zeros, may take its longest form (nanoseconds ending in a digit other than
// 0), so that whether an event fits does not depend on the moment.
func growth(r *Record) int {
	longest := len(time.RFC3339Nano) - 5 // 2006-01-02T15:04:05.999999999Z
	n := longest - len(r.ReceivedAt.Format(time.RFC3339Nano))
	if r.Time.Equal(r.ReceivedAt) {
		n += longest - len(r.Time.Format(time.RFC3339Nano))
	}
	grow := func(v string) {
		if v != "" {
			n += max(0, pseudonymLen-len(v))
		}
	}
	if a := r.Actor; a != nil {
		if a.Type != "service" && a.Type != "system" {
			grow(a.ID)
			grow(a.IP)
			grow(a.UserAgent)
		}
		grow(a.SessionID)
	}
	for _, k := range PersonalAttributes {
		if v, ok := r.Attributes[k].(string); ok {
			grow(v)
		}
	}
	return n
}
