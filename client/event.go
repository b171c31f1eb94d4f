package client

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

// Event is one event as a producer sends it to POST /v1/events. Only Type is
// required; the server fills in the rest (see docs/api.md for every rule).
// The Recorder and RecordSync give an event without an ID a new UUIDv7
// before sending it, so that a retried request is deduplicated by the
// server.
type Event struct {
	// ID is the idempotency key: the server stores one event per
	// (tenant, id). At most 128 bytes, no whitespace.
	ID string `json:"id,omitempty"`
	// Type is a lowercase dotted name such as "ai.inference" or "api.call".
	Type string `json:"type"`
	// Time is the event's time in RFC 3339; empty means the time of
	// receipt.
	Time string `json:"time,omitempty"`
	// Tenant is the tenant the event belongs to; empty means "default".
	Tenant     string     `json:"tenant,omitempty"`
	Actor      *Actor     `json:"actor,omitempty"`
	Action     string     `json:"action,omitempty"`
	Outcome    string     `json:"outcome,omitempty"` // success, failure or denied
	Resource   *Resource  `json:"resource,omitempty"`
	Model      *Model     `json:"model,omitempty"`
	Dataset    *Dataset   `json:"dataset,omitempty"`
	API        *API       `json:"api,omitempty"`
	Prompt     *Prompt    `json:"prompt,omitempty"`
	Attributes Attributes `json:"attributes,omitempty"`
	// Content is the sensitive payload (messages, completions, uploaded
	// data). The server encrypts it at rest and keeps it out of the tree.
	Content json.RawMessage `json:"content,omitempty"`
	TraceID string          `json:"trace_id,omitempty"`
	SpanID  string          `json:"span_id,omitempty"`
}

// Attributes are flat keys with string, number or bool values.
// OpenTelemetry names are preferred ("gen_ai.usage.input_tokens").
type Attributes map[string]any

// Actor identifies who acted.
type Actor struct {
	ID        string `json:"id,omitempty"`
	Type      string `json:"type,omitempty"` // user, service or system
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	SessionID string `json:"session_id,omitempty"`
}

// Resource names what was acted on.
type Resource struct {
	Type string `json:"type,omitempty"`
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// Model references the exact model behind an event.
type Model struct {
	Provider string `json:"provider,omitempty"`
	Name     string `json:"name,omitempty"`
	Version  string `json:"version,omitempty"`
	Digest   string `json:"digest,omitempty"`
}

// Dataset references the exact data behind an event.
type Dataset struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// API references the API version behind an event.
type API struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
}

// Prompt references the prompt template behind an event.
type Prompt struct {
	ID      string `json:"id,omitempty"`
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// NewID returns a new UUIDv7, the kind of id the server makes itself. Set
// an event's ID yourself when you need to find the event later.
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// encodeEvent gives e an id if it has none and returns its JSON encoding,
// which is what is queued and sent, so later changes to the caller's maps
// do not change what is recorded.
func encodeEvent(e *Event) ([]byte, error) {
	if e.ID == "" {
		e.ID = NewID()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("couldn't encode event %s: %w", e.ID, err)
	}
	return b, nil
}
