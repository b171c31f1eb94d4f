package otlp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/aitrail/aitrail/internal/event"
)

// Attribute names read by the mapping (OpenTelemetry semantic conventions).
const (
	attrTenant         = "aitrail.tenant"
	attrOperation      = "gen_ai.operation.name"
	attrProvider       = "gen_ai.provider.name"
	attrSystem         = "gen_ai.system" // legacy name of gen_ai.provider.name
	attrRequestModel   = "gen_ai.request.model"
	attrResponseModel  = "gen_ai.response.model"
	attrConversationID = "gen_ai.conversation.id"
	attrToolName       = "gen_ai.tool.name"
	attrToolCallID     = "gen_ai.tool.call.id"
	attrAgentID        = "gen_ai.agent.id"
	attrAgentName      = "gen_ai.agent.name"
	attrServiceName    = "service.name"
	attrEventName      = "event.name" // where older SDKs put a log event's name
	attrErrorType      = "error.type"

	eventInferenceDetails = "gen_ai.client.inference.operation.details"
	eventEvaluation       = "gen_ai.evaluation.result"
)

// Event types the receiver writes.
const (
	typeInference = "ai.inference"
	typeEmbedding = "ai.embedding"
	typeToolCall  = "ai.tool_call"
	typeAgent     = "ai.agent"
	typeOperation = "ai.operation"  // a GenAI operation of another or no name
	typeMessage   = "ai.message"    // a GenAI log event carrying one message
	typeEval      = "ai.evaluation" // gen_ai.evaluation.result
	typeSpan      = "trace.span"    // any other span, when kept
	typeLog       = "log.record"    // any other log record, when kept
)

// operationTypes maps gen_ai.operation.name to an event type.
var operationTypes = map[string]string{
	"chat":             typeInference,
	"text_completion":  typeInference,
	"generate_content": typeInference,
	"embeddings":       typeEmbedding,
	"execute_tool":     typeToolCall,
	"invoke_agent":     typeAgent,
	"create_agent":     typeAgent,
}

// contentAttrs are attributes that carry message content: they go into the
// event's encrypted content, never into its attributes. Keys starting with
// gen_ai.prompt or gen_ai.completion (the legacy, indexed forms such as
// gen_ai.prompt.0.content) are content too.
var contentAttrs = map[string]bool{
	"gen_ai.input.messages":         true,
	"gen_ai.output.messages":        true,
	"gen_ai.system_instructions":    true,
	"gen_ai.tool.definitions":       true,
	"gen_ai.tool.call.arguments":    true,
	"gen_ai.tool.call.result":       true,
	"gen_ai.prompt":                 true,
	"gen_ai.completion":             true,
	"gen_ai.evaluation.explanation": true,
}

func isContentAttr(k string) bool {
	return contentAttrs[k] || strings.HasPrefix(k, "gen_ai.prompt.") || strings.HasPrefix(k, "gen_ai.completion.")
}

// renamed maps legacy GenAI attribute names to their current names.
var renamed = map[string]string{
	attrSystem:                       attrProvider,
	"gen_ai.usage.prompt_tokens":     "gen_ai.usage.input_tokens",
	"gen_ai.usage.completion_tokens": "gen_ai.usage.output_tokens",
}

// keptAttrs are the attributes other than gen_ai.* and openai.* (where
// the conventions moved gen_ai.openai.*) that an event keeps, from the
// span, log record or resource.
var keptAttrs = map[string]bool{
	"service.name":                true,
	"service.version":             true,
	"service.namespace":           true,
	"deployment.environment":      true,
	"deployment.environment.name": true,
	"server.address":              true,
	"server.port":                 true,
	"http.request.method":         true,
	"http.response.status_code":   true,
	"http.route":                  true,
	"error.type":                  true,
}

// Event attribute limits (see event.Normalize).
const (
	maxAttributes     = 256
	maxAttrValueBytes = 4096
	maxExactInteger   = 1 << 53
)

// spanKinds names span kinds as attribute values.
var spanKinds = map[ptrace.SpanKind]string{
	ptrace.SpanKindUnspecified: "unspecified", ptrace.SpanKindInternal: "internal", ptrace.SpanKindServer: "server",
	ptrace.SpanKindClient: "client", ptrace.SpanKindProducer: "producer", ptrace.SpanKindConsumer: "consumer",
}

// mapper turns OTLP items into events.
type mapper struct {
	keepSpans, keepLogs bool
	// tenant is the tenant of items whose resource names none.
	tenant string
}

// item is one event made from one span or log record.
type item struct {
	ev event.Event
	// logRecord is the position of the log record in the request, or -1
	// for a span.
	logRecord int
}

// label names the item's origin in a partial-success message.
func (it *item) label() string {
	if it.logRecord >= 0 {
		return "log record " + strconv.Itoa(it.logRecord)
	}
	return "span " + it.ev.TraceID + "/" + it.ev.SpanID
}

// batch is what a request maps to.
type batch struct {
	items    []item
	received int // spans or log records in the request
	dropped  int // accepted but not recorded (not GenAI)
	// rejected items could not be mapped; reasons says why, one per item.
	reasons []string
}

func (b *batch) reject(label, reason string) {
	b.reasons = append(b.reasons, label+": "+reason)
}

// spans maps a trace export request.
func (m *mapper) spans(td ptrace.Traces) *batch {
	b := &batch{items: make([]item, 0, td.SpanCount())}
	for _, rs := range td.ResourceSpans().All() {
		res := rs.Resource().Attributes()
		tenant := m.tenantOf(res)
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				b.received++
				attrs := sp.Attributes()
				genAI := hasGenAI(attrs)
				if !genAI && !m.keepSpans {
					b.dropped++
					continue
				}
				tid, sid := sp.TraceID().String(), sp.SpanID().String()
				it := item{logRecord: -1, ev: event.Event{
					ID:      tid + "-" + sid,
					Tenant:  tenant,
					Time:    timestamp(sp.StartTimestamp()),
					TraceID: tid,
					SpanID:  sid,
					Outcome: "success",
				}}
				ev := &it.ev
				if sp.TraceID().IsEmpty() || sp.SpanID().IsEmpty() {
					b.reject(it.label(), "a span needs a trace_id and a span_id")
					continue
				}
				if sp.Status().Code() == ptrace.StatusCodeError {
					ev.Outcome = "failure"
				}
				content := map[string]any{}
				if genAI {
					op := str(attrs, attrOperation)
					ev.Type, ev.Action = operationType(op, typeOperation), op
					genAIFields(ev, attrs, res)
					// Older instrumentations record messages as span events.
					var evs []any
					for _, se := range sp.Events().All() {
						if strings.HasPrefix(se.Name(), "gen_ai.") {
							evs = append(evs, map[string]any{"name": se.Name(), "time": timestamp(se.Timestamp()), "attributes": se.Attributes().AsRaw()})
						}
					}
					if evs != nil {
						content["events"] = evs
					}
				} else {
					ev.Type, ev.Action = typeSpan, sp.Name()
					ev.Actor = actorOf(attrs, res)
				}
				ev.Attributes = attributes(attrs, res, content)
				ev.Attributes["otel.span.name"] = validString(sp.Name())
				ev.Attributes["otel.span.kind"] = spanKinds[sp.Kind()]
				if s, e := sp.StartTimestamp(), sp.EndTimestamp(); s != 0 && e >= s {
					ev.Attributes["duration_ms"] = float64(e-s) / 1e6
				}
				if msg := sp.Status().Message(); msg != "" {
					ev.Attributes["otel.status_description"] = validString(msg)
				}
				cleanAttrs(ev.Attributes)
				if reason := setContent(ev, content); reason != "" {
					b.reject(it.label(), reason)
					continue
				}
				b.items = append(b.items, it)
			}
		}
	}
	return b
}

// logs maps a logs export request.
func (m *mapper) logs(ld plog.Logs) *batch {
	b := &batch{items: make([]item, 0, ld.LogRecordCount())}
	for _, rl := range ld.ResourceLogs().All() {
		res := rl.Resource().Attributes()
		tenant := m.tenantOf(res)
		for _, sl := range rl.ScopeLogs().All() {
			for _, lr := range sl.LogRecords().All() {
				b.received++
				attrs := lr.Attributes()
				name := lr.EventName()
				if name == "" {
					name = str(attrs, attrEventName)
				}
				genAI := strings.HasPrefix(name, "gen_ai.") || hasGenAI(attrs)
				if !genAI && !m.keepLogs {
					b.dropped++
					continue
				}
				it := item{logRecord: b.received - 1, ev: event.Event{Tenant: tenant, Action: name}}
				ev := &it.ev
				if !lr.TraceID().IsEmpty() {
					ev.TraceID = lr.TraceID().String()
				}
				if !lr.SpanID().IsEmpty() {
					ev.SpanID = lr.SpanID().String()
				}
				ts := lr.Timestamp()
				if ts == 0 {
					ts = lr.ObservedTimestamp()
				}
				ev.Time = timestamp(ts)
				content := map[string]any{}
				if lr.Body().Type() != pcommon.ValueTypeEmpty {
					content["body"] = rawValue(lr.Body())
				}
				if genAI {
					op := str(attrs, attrOperation)
					switch {
					case op != "":
						ev.Type, ev.Action = operationType(op, typeOperation), op
					case name == eventInferenceDetails:
						ev.Type = typeInference
					case name == eventEvaluation:
						ev.Type = typeEval
					default:
						ev.Type = typeMessage
					}
					genAIFields(ev, attrs, res)
				} else {
					ev.Type = typeLog
					ev.Actor = actorOf(attrs, res)
				}
				if _, ok := attrs.Get(attrErrorType); ok {
					ev.Outcome = "failure"
				}
				ev.Attributes = attributes(attrs, res, content)
				if name != "" {
					ev.Attributes[attrEventName] = validString(name)
				}
				if s := lr.SeverityText(); s != "" {
					ev.Attributes["log.severity_text"] = validString(s)
				}
				cleanAttrs(ev.Attributes)
				if reason := setContent(ev, content); reason != "" {
					b.reject(it.label(), reason)
					continue
				}
				// A log record has no id of its own: derive one from all it
				// says, attributes the event does not keep included (two
				// records told apart only by those are two events), so
				// that a re-sent batch maps to the same ids.
				h := sha256.New()
				ident, _ := json.Marshal(ev)
				h.Write(ident)
				h.Write([]byte(timestamp(lr.ObservedTimestamp())))
				all, _ := json.Marshal([]any{attrs.AsRaw(), res.AsRaw(), lr.SeverityNumber(), uint32(lr.Flags())})
				h.Write(all)
				ev.ID = "log-" + hex.EncodeToString(h.Sum(nil)[:20])
				b.items = append(b.items, it)
			}
		}
	}
	return b
}

// tenantOf returns the tenant a resource's items go to.
func (m *mapper) tenantOf(res pcommon.Map) string {
	if v, ok := res.Get(attrTenant); ok {
		return v.AsString()
	}
	return m.tenant
}

// genAIFields fills the fields every GenAI event shares: model, actor and
// the resource a tool call or agent acts on.
func genAIFields(ev *event.Event, attrs, res pcommon.Map) {
	provider := str(attrs, attrProvider)
	if provider == "" {
		provider = str(attrs, attrSystem)
	}
	name, version := str(attrs, attrRequestModel), str(attrs, attrResponseModel)
	if name == "" {
		name, version = version, ""
	}
	if version == name {
		version = ""
	}
	if provider != "" || name != "" {
		ev.Model = &event.Model{Provider: provider, Name: name, Version: version}
	}
	ev.Actor = actorOf(attrs, res)
	switch ev.Type {
	case typeToolCall:
		ev.Resource = &event.Resource{Type: "tool", ID: str(attrs, attrToolCallID), Name: str(attrs, attrToolName)}
	case typeAgent:
		ev.Resource = &event.Resource{Type: "agent", ID: str(attrs, attrAgentID), Name: str(attrs, attrAgentName)}
	}
}

// actorOf returns the end user (user.id, else enduser.id) with the
// conversation (gen_ai.conversation.id, else session.id), looked up on the
// item and then its resource; without a user, the service that sent it.
func actorOf(attrs, res pcommon.Map) *event.Actor {
	first := func(keys ...string) string {
		for _, m := range []pcommon.Map{attrs, res} {
			for _, k := range keys {
				if s := str(m, k); s != "" {
					return s
				}
			}
		}
		return ""
	}
	a := &event.Actor{ID: first("user.id", "enduser.id"), Type: "user", SessionID: first(attrConversationID, "session.id")}
	if a.ID == "" {
		a.ID, a.Type = str(res, attrServiceName), "service"
		if a.ID == "" {
			a.Type = ""
		}
	}
	if *a == (event.Actor{}) {
		return nil
	}
	return a
}

// operationType returns the event type of a GenAI operation.
func operationType(op, otherwise string) string {
	if t, ok := operationTypes[op]; ok {
		return t
	}
	return otherwise
}

// attributes returns the attributes an event keeps: gen_ai.* (legacy names
// renamed) and keptAttrs, from the item and then the resource. Content
// attributes go into content instead.
func attributes(attrs, res pcommon.Map, content map[string]any) map[string]any {
	// Sized for what callers add too (span name and kind, duration,
	// status): growing a map on the way cost more than its spare room.
	out := make(map[string]any, attrs.Len()+4)
	for k, v := range attrs.All() {
		switch {
		case isContentAttr(k):
			content[k] = rawValue(v)
		case strings.HasPrefix(k, "gen_ai.") || strings.HasPrefix(k, "openai.") || keptAttrs[k]:
			if n, ok := renamed[k]; ok {
				if _, dup := attrs.Get(n); dup {
					continue
				}
				k = n
			}
			if fv, ok := flatValue(v); ok {
				out[k] = fv
			}
			if k == attrFinishReasons && v.Type() == pcommon.ValueTypeSlice {
				if s, ok := joined(v.Slice()); ok {
					out[k] = s
				}
			}
		}
	}
	for k, v := range res.All() {
		if _, ok := out[k]; !ok && keptAttrs[k] {
			if fv, ok := flatValue(v); ok {
				out[k] = fv
			}
		}
	}
	return out
}

// attrFinishReasons is a list in the conventions, stored comma-separated
// as the proxies and the event vocabulary store it.
const attrFinishReasons = "gen_ai.response.finish_reasons"

// joined returns a list of strings joined with commas, if it is one and
// fits an attribute.
func joined(l pcommon.Slice) (string, bool) {
	parts := make([]string, 0, l.Len())
	for _, e := range l.All() {
		if e.Type() != pcommon.ValueTypeStr {
			return "", false
		}
		parts = append(parts, e.Str())
	}
	s := strings.Join(parts, ",")
	return s, okString(s)
}

// flatValue returns v as an event attribute value: strings, booleans and
// numbers as they are, an array of those as its JSON text; maps, bytes,
// empty values, non-finite numbers and integers beyond ±2^53 are dropped, as
// are strings over 4096 bytes or with control characters.
func flatValue(v pcommon.Value) (any, bool) {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return v.Str(), okString(v.Str())
	case pcommon.ValueTypeBool:
		return v.Bool(), true
	case pcommon.ValueTypeInt:
		// As the event stores numbers: a float64, exact within ±2^53.
		i := v.Int()
		return float64(i), i >= -maxExactInteger && i <= maxExactInteger
	case pcommon.ValueTypeDouble:
		f := v.Double()
		return f, !math.IsNaN(f) && !math.IsInf(f, 0)
	case pcommon.ValueTypeSlice:
		for _, e := range v.Slice().All() {
			switch e.Type() {
			case pcommon.ValueTypeStr, pcommon.ValueTypeBool, pcommon.ValueTypeInt, pcommon.ValueTypeDouble:
			default:
				return nil, false
			}
		}
		b, err := json.Marshal(v.Slice().AsRaw())
		return string(b), err == nil && okString(string(b))
	}
	return nil, false
}

// okString reports whether s is a valid attribute string.
func okString(s string) bool {
	if len(s) > maxAttrValueBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b >= utf8.RuneSelf || b < 0x20 && b != '\t' && b != '\n' && b != '\r' || b == 0x7f {
			// Not plain ASCII: check the rest rune by rune.
			return utf8.ValidString(s[i:]) && !strings.ContainsFunc(s[i:], func(r rune) bool {
				return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r'
			})
		}
	}
	return true
}

// validString returns s if it is a valid attribute string, else its valid
// prefix of at most 1024 bytes without control characters.
func validString(s string) string {
	if okString(s) {
		return s
	}
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	for len(s) > 1024 {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// cleanAttrs drops keys an event may not carry and keeps at most
// maxAttributes of them, the first in sorted order.
func cleanAttrs(attrs map[string]any) {
	for k := range attrs {
		if !isAttrKey(k) {
			delete(attrs, k)
		}
	}
	if len(attrs) > maxAttributes {
		for _, k := range slices.Sorted(maps.Keys(attrs))[maxAttributes:] {
			delete(attrs, k)
		}
	}
}

// attrKeyBytes are the bytes an attribute key may hold; all are ASCII, so
// a key is checked byte by byte.
var attrKeyBytes = func() (ok [256]bool) {
	for c := range ok {
		ok[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_./:-", byte(c)) >= 0
	}
	return ok
}()

// isAttrKey reports whether k matches [A-Za-z0-9_./:-]{1,256}.
func isAttrKey(k string) bool {
	if k == "" || len(k) > 256 {
		return false
	}
	for i := range len(k) {
		if !attrKeyBytes[k[i]] {
			return false
		}
	}
	return true
}

// rawValue returns v as a JSON-ready value; a string holding a JSON object
// or array (as gen_ai.input.messages is on the wire) becomes that value,
// if it is nested at most rawDepth deep; any other string stays a string.
// (A name given twice in it is found by the event's check of its content,
// which refuses the item: checking for that here too cost 8 % of a span's
// CPU, for JSON no producer writes.)
func rawValue(v pcommon.Value) any {
	if v.Type() == pcommon.ValueTypeStr {
		s := strings.TrimSpace(v.Str())
		if strings.HasPrefix(s, "[") || strings.HasPrefix(s, "{") {
			if b := []byte(s); json.Valid(b) && !event.TooDeep(b, rawDepth) {
				return json.RawMessage(b)
			}
		}
	}
	return v.AsRaw()
}

// rawDepth is the deepest nesting rawValue keeps as JSON, well within the
// default limit of an event's (event.DefaultMaxDepth), which counts the
// event and its content's own levels too.
const rawDepth = event.DefaultMaxDepth / 2

// setContent sets the event's content, or says why it cannot be. Values
// already in JSON form are copied as they are.
func setContent(ev *event.Event, content map[string]any) string {
	if len(content) == 0 {
		return ""
	}
	b := []byte{'{'}
	for _, k := range slices.Sorted(maps.Keys(content)) {
		if len(b) > 1 {
			b = append(b, ',')
		}
		key, _ := json.Marshal(k) // a string always encodes
		b = append(append(b, key...), ':')
		if raw, ok := content[k].(json.RawMessage); ok {
			b = append(b, raw...)
			continue
		}
		v, err := json.Marshal(content[k])
		if err != nil {
			return "content is not representable as JSON (a number that is not finite?)"
		}
		b = append(b, v...)
	}
	ev.Content = append(b, '}')
	return ""
}

// hasGenAI reports whether any attribute is a gen_ai.* one.
func hasGenAI(attrs pcommon.Map) bool {
	for k := range attrs.All() {
		if strings.HasPrefix(k, "gen_ai.") {
			return true
		}
	}
	return false
}

// str returns a string attribute, or "".
func str(m pcommon.Map, k string) string {
	if v, ok := m.Get(k); ok && v.Type() == pcommon.ValueTypeStr {
		return v.Str()
	}
	return ""
}

// timestamp formats t in RFC 3339, or "" (the time of receipt) if unset.
func timestamp(t pcommon.Timestamp) string {
	if t == 0 {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}
