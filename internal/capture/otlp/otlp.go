// Package otlp is aitrail's OTLP/HTTP receiver: it accepts OpenTelemetry
// traces and logs (POST /otlp/v1/traces, /otlp/v1/logs; protobuf or JSON,
// optionally gzip) and records the GenAI spans and log events among them as
// ai.* events through the one ingest pipeline. Other spans and log records
// are accepted and dropped unless configured to be kept. docs/api.md holds
// the mapping table.
//
// Responses follow the OTLP/HTTP specification: an Export…ServiceResponse
// in the request's encoding, with partial success for items that could not
// be recorded, and a google.rpc.Status body on errors.
//
// The receiver never logs telemetry content, and it never puts message
// content (prompts, completions, tool arguments, log bodies) into an
// event's attributes: that goes into content, which the pipeline encrypts.
// It does not import the HTTP API or the wiring above it.
package otlp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
)

// Paths the receiver serves.
const (
	TracesPath = "/otlp/v1/traces"
	LogsPath   = "/otlp/v1/logs"
)

// Media types of OTLP/HTTP bodies.
const (
	mediaProto = "application/x-protobuf"
	mediaJSON  = "application/json"
)

// TenantHeader names the tenant of items whose resource has no
// aitrail.tenant attribute.
const TenantHeader = "X-Aitrail-Tenant"

// retryAfterSeconds is the Retry-After sent when the log pushes back.
const retryAfterSeconds = 1

// defaultMaxBodyBytes bounds a request body when Options say nothing.
const defaultMaxBodyBytes = 16 << 20

// maxReasons bounds the rejection reasons quoted in a partial-success
// message.
const maxReasons = 5

// Appender appends events atomically and durably: a nil error means every
// event is stored (or was already, with the same tenant and id); on error
// nothing of the call is stored. *ingest.Pipeline is one.
type Appender interface {
	Append(ctx context.Context, p authz.Principal, events []event.Event) (ingest.Receipt, error)
}

// Options configure a Handler. Ingest is required.
type Options struct {
	Ingest Appender
	// MaxBodyBytes bounds a request body, as sent and after decompression
	// (16 MiB if zero).
	MaxBodyBytes int64
	// MaxBatchEvents is the most events one Append carries; a request that
	// maps to more is appended in several atomic parts
	// (event.DefaultMaxBatchEvents if zero).
	MaxBatchEvents int
	// KeepOtherSpans records spans without gen_ai.* attributes as
	// trace.span events instead of dropping them.
	KeepOtherSpans bool
	// KeepOtherLogs records log records that are not GenAI events as
	// log.record events instead of dropping them.
	KeepOtherLogs bool
	// Registerer, if set, receives the receiver's metrics.
	Registerer prometheus.Registerer
	// Logger logs internal errors (never content); slog.Default if nil.
	Logger *slog.Logger
}

// Handler serves the OTLP/HTTP paths. It expects requests that are already
// authenticated, with the principal in the context (authz.WithPrincipal);
// it is safe for concurrent use.
type Handler struct {
	opts  Options
	log   *slog.Logger
	items *prometheus.CounterVec
}

// New returns a Handler.
func New(o Options) *Handler {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBodyBytes
	}
	if o.MaxBatchEvents <= 0 {
		o.MaxBatchEvents = event.DefaultMaxBatchEvents
	}
	h := &Handler{opts: o, log: o.Logger}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.items = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aitrail_otlp_items_total",
		Help: "OTLP spans and log records by signal and result: received, recorded (stored new), duplicate (already stored), dropped (not GenAI) or rejected.",
	}, []string{"signal", "result"})
	// Every series exists from the start, at 0: a rate over one that
	// appears only when first counted misses its first increase, and a
	// scrape should show what can be counted.
	for _, signal := range []string{"spans", "logs"} {
		for _, result := range []string{"received", "dropped", "recorded", "duplicate", "rejected"} {
			h.items.WithLabelValues(signal, result)
		}
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(h.items)
	}
	return h
}

// encoding is how a request's body and response are encoded.
type encoding bool

const (
	encProto encoding = false
	encJSON  encoding = true
)

func (e encoding) mediaType() string {
	if e == encJSON {
		return mediaJSON
	}
	return mediaProto
}

// ServeHTTP handles an export request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	enc := encJSON
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == mediaProto {
		enc = encProto
	}
	signal := ""
	switch r.URL.Path {
	case TracesPath:
		signal = "spans"
	case LogsPath:
		signal = "logs"
	default:
		h.writeError(w, r, enc, apierr.New(http.StatusNotFound, "not_found", "no such OTLP endpoint: use "+TracesPath+" or "+LogsPath))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.writeError(w, r, enc, apierr.New(http.StatusMethodNotAllowed, "method_not_allowed", "use POST"))
		return
	}
	body, _, err := httpbody.Read(w, r, h.opts.MaxBodyBytes, mediaProto, mediaJSON)
	if err != nil {
		h.writeError(w, r, enc, err)
		return
	}
	p, _ := authz.PrincipalFrom(r.Context())
	m := &mapper{keepSpans: h.opts.KeepOtherSpans, keepLogs: h.opts.KeepOtherLogs, tenant: defaultTenant(r, p)}
	var b *batch
	if signal == "spans" {
		req := ptraceotlp.NewExportRequest()
		if err := unmarshal(req, enc, body); err != nil {
			h.writeError(w, r, enc, err)
			return
		}
		b = m.spans(req.Traces())
	} else {
		req := plogotlp.NewExportRequest()
		if err := unmarshal(req, enc, body); err != nil {
			h.writeError(w, r, enc, err)
			return
		}
		b = m.logs(req.Logs())
	}
	h.items.WithLabelValues(signal, "received").Add(float64(b.received))
	h.items.WithLabelValues(signal, "dropped").Add(float64(b.dropped))
	recorded, dups, err := h.record(r.Context(), p, b)
	h.items.WithLabelValues(signal, "recorded").Add(float64(recorded))
	h.items.WithLabelValues(signal, "duplicate").Add(float64(dups))
	h.items.WithLabelValues(signal, "rejected").Add(float64(len(b.reasons)))
	if err != nil {
		h.writeError(w, r, enc, err)
		return
	}
	h.writeResponse(w, enc, signal, b.reasons)
}

// defaultTenant is the tenant of items whose resource names none: the
// X-Aitrail-Tenant header, else the token's one tenant if it has exactly
// one, else the default tenant.
func defaultTenant(r *http.Request, p authz.Principal) string {
	if t := r.Header.Get(TenantHeader); t != "" {
		return t
	}
	if len(p.Tenants) == 1 && p.Tenants[0] != authz.AllTenantsWildcard {
		return p.Tenants[0]
	}
	return ""
}

// unmarshaler is an OTLP export request.
type unmarshaler interface {
	UnmarshalProto([]byte) error
	UnmarshalJSON([]byte) error
}

func unmarshal(req unmarshaler, enc encoding, body []byte) error {
	var err error
	if enc == encJSON {
		err = req.UnmarshalJSON(body)
	} else {
		err = req.UnmarshalProto(body)
	}
	if err != nil {
		return apierr.New(http.StatusBadRequest, "invalid_body", "couldn't decode the OTLP "+enc.mediaType()+" body")
	}
	return nil
}

// record appends the batch's events in parts of at most MaxBatchEvents,
// each atomic. Events the pipeline finds invalid are rejected (their reasons
// added to b) and the rest of their part appended without them. A part that
// fails otherwise fails the request; parts before it stay stored, and
// since ids are derived from the items, a retry stores nothing twice.
func (h *Handler) record(ctx context.Context, p authz.Principal, b *batch) (recorded, dups int, err error) {
	items := make([]item, 0, len(b.items))
	for _, it := range b.items {
		t := it.ev.Tenant
		if t == "" {
			t = event.DefaultTenant
		}
		if !p.CanSeeTenant(t) {
			b.reject(it.label(), "this token may not write to tenant "+strconv.Quote(t))
			continue
		}
		items = append(items, it)
	}
	for part := range slices.Chunk(items, h.opts.MaxBatchEvents) {
		for len(part) > 0 {
			evs := make([]event.Event, len(part))
			for i := range part {
				evs[i] = part[i].ev
			}
			receipt, err := h.opts.Ingest.Append(ctx, p, evs)
			var ee *event.Error
			if errors.As(err, &ee) {
				bad := map[int]string{}
				for _, pr := range ee.Problems {
					if pr.Index >= 0 && pr.Index < len(part) && bad[pr.Index] == "" {
						field := strings.TrimPrefix(strings.TrimPrefix(pr.Field, "events["+strconv.Itoa(pr.Index)+"]"), ".")
						bad[pr.Index] = pr.Message
						if field != "" {
							bad[pr.Index] = field + ": " + pr.Message
						}
					}
				}
				if len(bad) == 0 {
					return recorded, dups, err
				}
				kept := part[:0:0]
				for i, it := range part {
					if reason, ok := bad[i]; ok {
						b.reject(it.label(), reason)
						continue
					}
					kept = append(kept, it)
				}
				part = kept
				continue
			}
			if err != nil {
				return recorded, dups, err
			}
			for _, res := range receipt.Results {
				if res.Duplicate {
					dups++
				} else {
					recorded++
				}
			}
			break
		}
	}
	return recorded, dups, nil
}

// writeResponse answers a successful export, with partial success when
// items were rejected. A full success leaves partial_success unset, as the
// specification asks: an empty message.
func (h *Handler) writeResponse(w http.ResponseWriter, enc encoding, signal string, reasons []string) {
	var body []byte
	var err error
	switch {
	case len(reasons) == 0 && enc == encJSON:
		body = []byte("{}")
	case len(reasons) == 0:
		// The protobuf encoding of an empty message has no bytes.
	case signal == "spans":
		resp := ptraceotlp.NewExportResponse()
		resp.PartialSuccess().SetRejectedSpans(int64(len(reasons)))
		resp.PartialSuccess().SetErrorMessage(rejectionMessage(signal, reasons))
		body, err = marshal(resp, enc)
	default:
		resp := plogotlp.NewExportResponse()
		resp.PartialSuccess().SetRejectedLogRecords(int64(len(reasons)))
		resp.PartialSuccess().SetErrorMessage(rejectionMessage(signal, reasons))
		body, err = marshal(resp, enc)
	}
	if err != nil {
		h.log.Error("couldn't encode an OTLP response", "err", err)
	}
	w.Header().Set("Content-Type", enc.mediaType())
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// rejectionMessage says how many items were rejected and why, naming the
// first few.
func rejectionMessage(signal string, reasons []string) string {
	msg := fmt.Sprintf("%d of the %s could not be recorded: %s", len(reasons), signal, strings.Join(reasons[:min(len(reasons), maxReasons)], "; "))
	if len(reasons) > maxReasons {
		msg += fmt.Sprintf("; and %d more", len(reasons)-maxReasons)
	}
	return msg
}

type marshaler interface {
	MarshalProto() ([]byte, error)
	MarshalJSON() ([]byte, error)
}

func marshal(m marshaler, enc encoding) ([]byte, error) {
	if enc == encJSON {
		return m.MarshalJSON()
	}
	return m.MarshalProto()
}

// ErrorDomain is the domain of the google.rpc.ErrorInfo detail in every
// error answer, whose reason is the error's code (pushback,
// insufficient_storage, too_large ...).
const ErrorDomain = "aitrail"

// ErrorCode returns the code an error answer of this receiver names in
// its ErrorInfo detail, "" if it names none.
func ErrorCode(st *statuspb.Status) string {
	for _, d := range st.GetDetails() {
		var info errdetails.ErrorInfo
		if d.UnmarshalTo(&info) == nil && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// writeError answers with the status an error maps to and, as the OTLP
// specification asks, a google.rpc.Status in the request's encoding.
// Pushback and unavailability are 503 with Retry-After, which OTLP exporters
// retry; internal errors are logged and answered without detail.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, enc encoding, err error) {
	var ae *apierr.Error
	var ee *event.Error
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ee):
		status := http.StatusBadRequest
		if ee.Code == event.CodeTooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		ae = apierr.New(status, ee.Code, ee.Error())
	case errors.Is(err, ledger.ErrPushback):
		ae = apierr.New(http.StatusServiceUnavailable, "pushback", "the log is at capacity; retry after the Retry-After delay")
	case errors.Is(err, ledger.ErrTooLarge):
		ae = apierr.New(http.StatusRequestEntityTooLarge, "too_large", err.Error())
	case errors.Is(err, ledger.ErrClosed), errors.Is(err, ledger.ErrFailed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		ae = apierr.New(http.StatusServiceUnavailable, "unavailable", "the log is not accepting writes")
	default:
		h.log.Error("OTLP export failed", "path", r.URL.Path, "err", err)
		ae = apierr.New(http.StatusInternalServerError, "internal", "internal error")
	}
	if ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(cmp.Or(ae.RetryAfter, retryAfterSeconds)))
	}
	st := &statuspb.Status{Code: int32(grpcCode(ae.Status)), Message: ae.Message}
	// The error's code, as the JSON errors of the rest of the API carry it,
	// in the detail google.rpc defines for a machine-readable reason.
	if info, err := anypb.New(&errdetails.ErrorInfo{Reason: ae.Code, Domain: ErrorDomain}); err == nil {
		st.Details = []*anypb.Any{info}
	}
	var body []byte
	if enc == encJSON {
		body, err = protojson.Marshal(st)
	} else {
		body, err = proto.Marshal(st)
	}
	if err != nil {
		h.log.Error("couldn't encode an OTLP error", "err", err)
	}
	w.Header().Set("Content-Type", enc.mediaType())
	w.WriteHeader(ae.Status)
	w.Write(body)
}

// grpcCode is the gRPC status code closest to an HTTP status, for the
// Status body (OTLP/HTTP clients go by the HTTP status).
func grpcCode(status int) codes.Code {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType:
		return codes.Unimplemented
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	return codes.Internal
}
