// Package httpbody reads request bodies the way every aitrail endpoint
// does: the media type checked, gzip undone, the size bounded before and
// after decompression, and each failure turned into the error a client may
// see. It knows nothing of what the body holds.
package httpbody

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/aitrail/aitrail/internal/apierr"
)

// Read returns the request body, decompressed (Content-Encoding gzip) and
// bounded by limit both as sent and after decompression, and its media
// type, which must be one of allowed. Anything unexpected is an
// *apierr.Error: 415 for another media type or encoding, 413 for a body over
// the limit, 400 for bad gzip or a body that could not be read.
func Read(w http.ResponseWriter, r *http.Request, limit int64, allowed ...string) ([]byte, string, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	ok := err == nil
	if ok {
		ok = false
		for _, a := range allowed {
			ok = ok || mt == a
		}
	}
	if !ok {
		return nil, "", apierr.New(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"Content-Type must be one of "+strings.Join(allowed, ", "))
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, limit)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(body)
		if err != nil {
			return nil, "", apierr.New(http.StatusBadRequest, "invalid_encoding", "body is not valid gzip")
		}
		defer gz.Close()
		body = gz
	default:
		return nil, "", apierr.New(http.StatusUnsupportedMediaType, "unsupported_encoding", "Content-Encoding must be gzip or identity")
	}
	// Size the buffer from Content-Length when it is honest and small
	// enough, instead of growing it by doubling.
	size := 0
	if cl := r.ContentLength; cl > 0 && cl <= limit && r.Header.Get("Content-Encoding") == "" {
		size = int(cl) + 1 // room to see the end without growing
	}
	data, err := readAll(io.LimitReader(body, limit+1), size)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || int64(len(data)) > limit:
		return nil, "", apierr.New(http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("request body exceeds %d bytes", limit))
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, "", apierr.New(http.StatusBadRequest, "invalid_encoding", "body is truncated or not valid gzip")
	case err != nil:
		return nil, "", apierr.New(http.StatusBadRequest, "invalid_body", "couldn't read the request body")
	}
	return data, mt, nil
}

// Request bodies up to maxPooled bytes are read into buffers kept for
// reuse: under batched ingest a new buffer of 100 KiB for every request
// was allocated and cleared for nothing.
const maxPooled = 1 << 20

var buffers sync.Pool // of *[]byte

// readAll reads r to its end into a buffer of at least size bytes, from
// the pool when one is there.
func readAll(r io.Reader, size int) ([]byte, error) {
	var b []byte
	if p, ok := buffers.Get().(*[]byte); ok {
		b = (*p)[:0]
	}
	if cap(b) < size {
		b = make([]byte, 0, size)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
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
