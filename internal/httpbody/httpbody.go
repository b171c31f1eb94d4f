// Package httpbody reads request bodies the way every aitrail endpoint
// does: the media type checked, gzip undone, the size bounded before and
// after decompression, and each failure turned into the error a client may
// see. It knows nothing of what the body holds.
package httpbody

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aitrail/aitrail/internal/apierr"
)

// Read returns the request body, decompressed (Content-Encoding gzip) and
// bounded by limit both as sent and after decompression, and its media
// type, which must be one of allowed. Anything unexpected is an
// *apierr.Error: 415 for another media type or encoding, 413 for a body over
// the limit, 400 for bad gzip or a body that could not be read.
//
// A body it refuses is read on and discarded (drain), up to four times the
// limit, before it returns, so that the client gets the error.
func Read(w http.ResponseWriter, r *http.Request, limit int64, allowed ...string) ([]byte, string, error) {
	data, mt, started, err := read(w, r, limit, allowed)
	if err != nil {
		drain(w, r, started, 4*limit)
	}
	return data, mt, err
}

// read is Read without the drain; started reports whether it read any of
// the body.
func read(w http.ResponseWriter, r *http.Request, limit int64, allowed []string) (data []byte, mt string, started bool, err error) {
	mt, _, err = mime.ParseMediaType(r.Header.Get("Content-Type"))
	ok := err == nil
	if ok {
		ok = false
		for _, a := range allowed {
			ok = ok || mt == a
		}
	}
	if !ok {
		return nil, "", false, apierr.New(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"Content-Type must be one of "+strings.Join(allowed, ", "))
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	gzipped := false
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(body)
		if err != nil {
			return nil, "", true, apierr.New(http.StatusBadRequest, "invalid_encoding", "body is not valid gzip")
		}
		defer gz.Close()
		body, gzipped = gz, true
	default:
		return nil, "", false, apierr.New(http.StatusUnsupportedMediaType, "unsupported_encoding", "Content-Encoding must be gzip or identity")
	}
	// Size the buffer from Content-Length when it is honest and small
	// enough, instead of growing it by doubling.
	size := 0
	if cl := r.ContentLength; cl > 0 && cl <= limit && r.Header.Get("Content-Encoding") == "" {
		size = int(cl) + 1 // room to see the end without growing
	}
	data, err = readAll(io.LimitReader(body, limit+1), size, meterFrom(r.Context()))
	started = gzipped || len(data) > 0 || !errors.Is(err, ErrBusy)
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, ErrBusy):
		return nil, "", started, err
	case errors.As(err, &mbe) || int64(len(data)) > limit:
		return nil, "", true, apierr.New(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("request body exceeds %d bytes", limit))
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, "", true, apierr.New(http.StatusBadRequest, "invalid_encoding", "body is truncated or not valid gzip")
	case err != nil:
		return nil, "", true, apierr.New(http.StatusBadRequest, "invalid_body", "couldn't read the request body")
	}
	return data, mt, true, nil
}

// drainTime bounds how long drain reads a refused body.
const drainTime = 10 * time.Second

// drain reads and discards what is left of a refused request's body, up to
// max bytes and for at most drainTime. A server that closes a connection
// with unread data in it makes the kernel reset the connection, and a
// client that sends its whole body before it reads the answer, as most do,
// then fails on a write and never sees the refusal (a 503 pushback it
// would retry after Retry-After, a 413 it would not retry). Discarding
// takes no memory. A client waiting for 100 Continue that was sent nothing
// yet has sent no body, and is left waiting for the refusal; HTTP/2 ends
// the stream without touching the connection.
func drain(w http.ResponseWriter, r *http.Request, started bool, max int64) {
	if r.ProtoMajor >= 2 || !started && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(drainTime))
	io.CopyN(io.Discard, r.Body, max)
	rc.SetReadDeadline(time.Time{})
}

// Request bodies up to maxPooled bytes are read into buffers kept for
// reuse: under batched ingest a new buffer of 100 KiB for every request
// was allocated and cleared for nothing.
const maxPooled = 1 << 20

var buffers sync.Pool // of *[]byte

// readAll reads r to its end into a buffer, from the pool when one is
// there, charging m (if not nil) for the buffer's memory as it grows:
// ErrBusy, with what it read, if m's budget cannot take it. size, if not
// 0, is the length the body announced, plus one: the buffer is made for up
// to maxPooled of it at once and grows toward it as bytes come, so that a
// client sending a large body slowly holds no more memory, and no more of
// the budget, than it has sent.
func readAll(r io.Reader, size int, m *meter) ([]byte, error) {
	var b []byte
	if p, ok := buffers.Get().(*[]byte); ok {
		b = (*p)[:0]
	}
	if c := min(size, maxPooled); cap(b) < c {
		b = make([]byte, 0, c)
	}
	// A pooled buffer larger than an announced body is charged for the
	// body: the rest is the pool's memory, there with or without it.
	charged := cap(b)
	if size > 0 {
		charged = min(charged, size)
	}
	if !m.take(int64(charged)) {
		Release(b)
		return nil, ErrBusy
	}
	for {
		if len(b) == cap(b) {
			c := max(2*cap(b), 512)
			if size > cap(b) {
				c = min(c, size)
			}
			if !m.take(int64(c - charged)) {
				return b, ErrBusy
			}
			b, charged = append(make([]byte, 0, c), b...), c
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// Release gives back a body Read returned, once nothing refers to its
// bytes any more; it must not be used after. Callers that keep parts of
// the body, or do not know, simply do not call it.
func Release(body []byte) {
	if cap(body) == 0 || cap(body) > maxPooled {
		return
	}
	body = body[:0]
	buffers.Put(&body)
}

// ErrBusy refuses a request whose body (or response: Charge) would take
// the bodies being read and handled at once past their Budget: a 503,
// which clients retry after Retry-After.
var ErrBusy = apierr.New(http.StatusServiceUnavailable, "pushback",
	"the server is handling as many large requests as its memory allows; retry after the Retry-After delay")

// Budget bounds the memory of the request bodies that the handlers it wraps
// hold at once: Read charges each body's buffer to it as the buffer grows
// (after decompression), and the charge is given back when the handler
// returns. A body that would take the total past the budget is refused with
// ErrBusy, so that many large requests at once cannot take the server's
// memory; a body is never larger than the limit Read is given, which the
// budget must be at least. Safe for concurrent use.
type Budget struct {
	max  int64
	used atomic.Int64
	// answers is the part of used charged by ChargeAnswer, at most half
	// of max.
	answers atomic.Int64
	// Refused counts the requests refused for the budget.
	Refused atomic.Int64
}

// NewBudget returns a budget of max bytes.
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Used returns the bytes charged now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Wrap returns next with the bodies its requests read through Read charged
// to b.
func (b *Budget) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := &meter{b: b}
		defer func() {
			if !m.kept {
				m.release()
			}
		}()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), meterKey{}, m)))
	})
}

// Keep makes what the request of ctx has charged to its budget, and
// charges the handler makes later, outlast the handler: they are given
// back when release is called, once, instead of when the handler
// returns. It is for work a handler leaves running on what it read (the
// proxies append the record of an answer after passing it on). It must be
// called from the handler; outside any budget release does nothing.
func Keep(ctx context.Context) (release func()) {
	m := meterFrom(ctx)
	if m == nil {
		return func() {}
	}
	m.kept = true
	return m.release
}

// Charge charges n bytes the request of ctx is about to hold (a large
// response, say) to the budget its handler runs under: ErrBusy if the
// budget cannot take them; nil, charging nothing, outside any budget. The
// charge is given back when the handler returns.
func Charge(ctx context.Context, n int64) error {
	if !meterFrom(ctx).take(n) {
		return ErrBusy
	}
	return nil
}

// ChargeAnswer is Charge for what an answer holds (records, content),
// which no limit on bodies bounds. Answers take at most half the budget
// in all, so that clients reading large answers, or not reading them,
// always leave ingest the other half; and one answer is charged at most
// half the budget, so that a large one is refused only while other
// answers hold memory, never always.
func ChargeAnswer(ctx context.Context, n int64) error {
	m := meterFrom(ctx)
	if m == nil || n <= 0 {
		return nil
	}
	n = min(n, m.b.max/2)
	if !reserve(&m.b.answers, n, m.b.max/2) {
		m.refuse()
		return ErrBusy
	}
	if !m.take(n) {
		m.b.answers.Add(-n)
		return ErrBusy
	}
	m.answered += n
	return nil
}

// meter is what one request has charged to a budget.
type meter struct {
	b        *Budget
	charged  int64 // in all
	answered int64 // of charged, by ChargeAnswer
	refused  bool
	kept     bool // released by Keep's caller, not when the handler returns
}

type meterKey struct{}

func meterFrom(ctx context.Context) *meter {
	m, _ := ctx.Value(meterKey{}).(*meter)
	return m
}

// take charges n bytes, or reports that the budget cannot take them. A nil
// meter (a request outside any budget) takes anything.
func (m *meter) take(n int64) bool {
	if m == nil || n <= 0 {
		return true
	}
	if !reserve(&m.b.used, n, m.b.max) {
		m.refuse()
		return false
	}
	m.charged += n
	return true
}

// refuse counts the meter's request as refused, once.
func (m *meter) refuse() {
	if !m.refused {
		m.refused = true
		m.b.Refused.Add(1)
	}
}

// reserve adds n to v unless that takes it past max; never over max, even
// for a moment, since Used is a metric.
func reserve(v *atomic.Int64, n, max int64) bool {
	for used := v.Load(); ; used = v.Load() {
		if used+n > max {
			return false
		}
		if v.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (m *meter) release() {
	m.b.used.Add(-m.charged)
	m.b.answers.Add(-m.answered)
	m.charged, m.answered = 0, 0
}
