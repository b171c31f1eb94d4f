package event

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error codes carried by *Error.
const (
	// CodeInvalid means the input breaks the contract; HTTP maps it to 400.
	CodeInvalid = "invalid"
	// CodeTooLarge means the input is well formed but exceeds a size limit
	// (content size, batch size, record size); HTTP maps it to 413.
	CodeTooLarge = "too_large"
)

// ErrMediaType is returned (wrapped) by Decode for a media type other than
// MediaTypeJSON or MediaTypeNDJSON. HTTP maps it to 415.
var ErrMediaType = errors.New("unsupported media type")

// ErrMalformedRecord is returned (wrapped) by ParseRecord when stored bytes
// are not a record in canonical form: for a follower or a verifier this means
// the store is corrupt or was tampered with.
var ErrMalformedRecord = errors.New("malformed record")

// maxProblems bounds how many problems one *Error carries, so a hostile
// batch cannot make the error response larger than the request.
const maxProblems = 1000

// Error reports why producer input was refused. It lists every problem
// found, each naming the event and field it concerns. Code is CodeInvalid
// or CodeTooLarge; it is CodeTooLarge only when every problem is a size
// limit, so that fixing what a 413 reports is enough to be accepted.
//
// The messages are meant for the producer and never include field values
// or content, so an *Error may be returned to the client and logged as is.
type Error struct {
	Code     string
	Problems []Problem
}

// Error renders the code and the first few problems on one line.
func (e *Error) Error() string {
	const shown = 5
	var b strings.Builder
	if e.Code == CodeTooLarge {
		b.WriteString("too large: ")
	} else {
		b.WriteString("invalid event: ")
	}
	for i, p := range e.Problems {
		if i == shown {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-shown)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// AddLines gives the problems of err (an *Error about the events Decode
// read from body, an application/x-ndjson body) that name an event and no
// line the line of that event, so that a producer finds the rules' errors
// as it finds the syntax errors Decode names. Other errors are left alone.
func AddLines(err error, body []byte) {
	var e *Error
	if !errors.As(err, &e) {
		return
	}
	var lines []int // of event i, as Decode counts them: blank lines hold none
	for off, line := 0, 1; off < len(body); line++ {
		end := len(body)
		if i := bytes.IndexByte(body[off:], '\n'); i >= 0 {
			end = off + i
		}
		if len(bytes.Trim(body[off:end], " \t\r")) > 0 {
			lines = append(lines, line)
		}
		off = end + 1
	}
	for i := range e.Problems {
		if p := &e.Problems[i]; p.Line == 0 && p.Index >= 0 && p.Index < len(lines) {
			p.Line = lines[p.Index]
		}
	}
}

// Problem is one reason input was refused.
type Problem struct {
	// Index is the event's 0-based position in the request (a body holding
	// a single event object is position 0), or -1 when the problem concerns
	// the body as a whole (syntax outside any event, batch size, …).
	Index int
	// Line is the 1-based line of an application/x-ndjson body the event
	// was on, or 0 when not known.
	Line int
	// Field is the path of the offending value, starting with the event's
	// position: "events[3].actor.ip", `events[0].attributes["gen_ai.system"]`,
	// "events[1].content.messages[2]". It is "events" for problems with the
	// batch as such and empty when no field applies.
	Field string
	// Message says what is wrong in words a producer can act on, without
	// repeating the field path or echoing the value.
	Message string
}

// String renders the problem as "line 4: events[3].actor.ip: message",
// leaving out the parts that are not set.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// problems collects problems up to maxProblems and decides the error code.
type problems struct {
	list    []Problem
	dropped int
	invalid bool // at least one problem is not a size limit
}

func (ps *problems) add(p Problem, code string) {
	if code != CodeTooLarge {
		ps.invalid = true
	}
	if len(ps.list) >= maxProblems {
		ps.dropped++
		return
	}
	ps.list = append(ps.list, p)
}

func (ps *problems) empty() bool { return len(ps.list) == 0 }

// err returns the collected problems as an *Error, or nil if there are none.
func (ps *problems) err() error {
	if ps.empty() {
		return nil
	}
	e := &Error{Code: CodeTooLarge, Problems: ps.list}
	if ps.invalid {
		e.Code = CodeInvalid
	}
	if ps.dropped > 0 {
		e.Problems = append(e.Problems, Problem{Index: -1,
			Message: fmt.Sprintf("%d more problems not listed", ps.dropped)})
	}
	return e
}

// eventPath is the path of the event at position i.
func eventPath(i int) string { return "events[" + strconv.Itoa(i) + "]" }

// keySegment renders an object key as a path segment: ".name" for keys
// that read as identifiers, `["gen_ai.system"]` for any other, truncated so
// that a hostile key cannot bloat the message.
func keySegment(k string) string {
	if isIdentifier(k) && len(k) <= 64 {
		return "." + k
	}
	const max = 64
	if len(k) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(k[cut]) {
			cut--
		}
		return "[" + strconv.Quote(k[:cut]) + "…]"
	}
	return "[" + strconv.Quote(k) + "]"
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
