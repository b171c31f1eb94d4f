package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
)

// errorf returns an error a client may see.
func errorf(status int, code, message string, details ...any) *apierr.Error {
	return apierr.New(status, code, message, details...)
}

// errIntegrity answers a read that met stored data failing its integrity
// check. The failure has been logged and recorded as integrity.failure.
var errIntegrity = errorf(http.StatusInternalServerError, "integrity_failure",
	"stored data failed its integrity check against the signed log; the failure has been recorded")

// retryAfterSeconds is the Retry-After sent with pushback.
const retryAfterSeconds = 1

// WriteError answers r with err exactly as the API answers its own errors
// (see writeError). Capture handlers are given it, so that errors have one
// mapping whichever door they come through.
func (s *Server) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeError(w, r, err)
}

// writeError is the one place errors become HTTP responses. Errors the
// client may learn about map to 4xx/503 with their message; anything else is
// logged and answered with a bare 500.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apierr.Error
	var ee *event.Error
	var behind *ingest.BehindError
	var te *index.TamperedError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ee):
		status, code := http.StatusBadRequest, "invalid_event"
		if ee.Code == "too_large" {
			status, code = http.StatusRequestEntityTooLarge, "too_large"
		}
		details := make([]any, 0, len(ee.Problems))
		for _, p := range ee.Problems {
			d := map[string]any{"message": p.Message}
			if p.Index >= 0 {
				d["index"] = p.Index
			}
			if p.Line > 0 {
				d["line"] = p.Line
			}
			if p.Field != "" {
				d["field"] = p.Field
			}
			details = append(details, d)
		}
		ae = errorf(status, code, ee.Error(), details...)
	case errors.As(err, &behind):
		ae = errorf(http.StatusServiceUnavailable, "pushback", behind.Error()+"; retry after the Retry-After delay")
	case errors.Is(err, ledger.ErrPushback):
		ae = errorf(http.StatusServiceUnavailable, "pushback", "the log is at capacity; retry after the Retry-After delay")
	case errors.Is(err, ledger.ErrTooLarge):
		ae = errorf(http.StatusRequestEntityTooLarge, "too_large", err.Error())
	case errors.Is(err, ledger.ErrUnsynced):
		ae = errorf(http.StatusServiceUnavailable, "unavailable", "the log cannot make its checkpoint durable; writes are taken again once it can")
	case errors.Is(err, ledger.ErrClosed), errors.Is(err, ledger.ErrFailed):
		ae = errorf(http.StatusServiceUnavailable, "unavailable", "the log is not accepting writes")
	case errors.Is(err, index.ErrInvalidQuery):
		// The code says it is a query's fault; the message says what.
		ae = errorf(http.StatusBadRequest, "invalid_query", strings.TrimPrefix(err.Error(), index.ErrInvalidQuery.Error()+": "))
	case errors.Is(err, index.ErrNotFound), errors.Is(err, ledger.ErrNotFound), errors.Is(err, authz.ErrNotFound):
		ae = errorf(http.StatusNotFound, "not_found", "not found")
	case errors.Is(err, authz.ErrUnauthenticated):
		ae = errorf(http.StatusUnauthorized, "unauthenticated", "missing or invalid bearer token")
	case errors.Is(err, authz.ErrForbidden):
		ae = errorf(http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, authz.ErrInvalid):
		ae = errorf(http.StatusBadRequest, "invalid_request", err.Error())
	case errors.Is(err, authz.ErrConflict):
		ae = errorf(http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, authz.ErrExists):
		ae = errorf(http.StatusConflict, "conflict", err.Error())
	case errors.As(err, &te):
		// A record the index points to failed its check against the tree,
		// or is not the index's: the log's files or the index were altered.
		s.reportIntegrity(r.Context(), te.Tenant, te.Check, te.Index)
		ae = errIntegrity
	case errors.Is(err, ledger.ErrTampered), errors.Is(err, errContentIntegrity):
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = errIntegrity
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		ae = errorf(http.StatusServiceUnavailable, "unavailable", "request cancelled or timed out")
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		ae = errorf(http.StatusInternalServerError, "internal", "internal error")
	}
	if ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(cmp.Or(ae.RetryAfter, retryAfterSeconds)))
	}
	if ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden {
		s.countRefused(r, ae.Status)
	}
	if ae.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="aitrail"`)
	}
	body := map[string]any{"code": ae.Code, "message": ae.Message}
	if len(ae.Details) > 0 {
		body["details"] = ae.Details
	}
	writeJSON(w, ae.Status, map[string]any{"error": body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h["Content-Type"], h["X-Content-Type-Options"] = jsonType, nosniff
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		slog.Debug("couldn't write response", "err", err)
	}
}
