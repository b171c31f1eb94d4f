// Package event defines aitrail's event vocabulary: the event a producer
// sends, the record the ledger stores, validation against the public
// contract, and the canonical (RFC 8785) encoding that the Merkle tree
// commits to.
//
// The package is pure: it performs no I/O and never sees a key. Content is
// handled elsewhere: by the time an event becomes a Record, its content has
// been replaced by a ContentRef.
package event

import (
	"encoding/json"
	"time"
)

// MaxRecordSize is the largest canonical record the ledger accepts. It is the
// C2SP tlog-tiles limit for one entry in an entry bundle.
const MaxRecordSize = 65535

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

// ContentRef points at an event's encrypted content, which is stored outside
// the tree. Digest is "sha256:<hex>" of the stored ciphertext, so the tree
// commits to exactly the bytes that are kept without revealing the plaintext.
type ContentRef struct {
	Digest string `json:"digest"`
	KeyID  string `json:"key_id"`
	Size   int64  `json:"size"` // plaintext size in bytes
}

// Event is an event as a producer sends it (the public contract in API.md).
type Event struct {
	ID         string          `json:"id,omitempty"`
	Type       string          `json:"type"`
	Time       string          `json:"time,omitempty"`
	Tenant     string          `json:"tenant,omitempty"`
	Actor      *Actor          `json:"actor,omitempty"`
	Action     string          `json:"action,omitempty"`
	Outcome    string          `json:"outcome,omitempty"`
	Resource   *Resource       `json:"resource,omitempty"`
	Model      *Model          `json:"model,omitempty"`
	Dataset    *Dataset        `json:"dataset,omitempty"`
	API        *API            `json:"api,omitempty"`
	Prompt     *Prompt         `json:"prompt,omitempty"`
	Attributes map[string]any  `json:"attributes,omitempty"`
	Content    json.RawMessage `json:"content,omitempty"`
	TraceID    string          `json:"trace_id,omitempty"`
	SpanID     string          `json:"span_id,omitempty"`

	// checked is Content as Decode read it, which already held it to
	// jsontext's strict rules (one value, valid UTF-8, no duplicate names):
	// Normalize does not check the same bytes again.
	checked json.RawMessage
	// plain holds long attribute values Decode found to be printable
	// ASCII: Normalize does not look for control characters in them again.
	plain plainTexts
}

// Record is what the ledger stores for an accepted event: the event with its
// defaults filled in, the time the server received it, and a reference to its
// encrypted content instead of the content itself. Its canonical encoding is
// the Merkle leaf.
type Record struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	Time       time.Time      `json:"time"`
	ReceivedAt time.Time      `json:"received_at"`
	Tenant     string         `json:"tenant"`
	Actor      *Actor         `json:"actor,omitempty"`
	Action     string         `json:"action,omitempty"`
	Outcome    string         `json:"outcome,omitempty"`
	Resource   *Resource      `json:"resource,omitempty"`
	Model      *Model         `json:"model,omitempty"`
	Dataset    *Dataset       `json:"dataset,omitempty"`
	API        *API           `json:"api,omitempty"`
	Prompt     *Prompt        `json:"prompt,omitempty"`
	Attributes map[string]any `json:"attributes,omitempty"`
	Content    *ContentRef    `json:"content,omitempty"`
	TraceID    string         `json:"trace_id,omitempty"`
	SpanID     string         `json:"span_id,omitempty"`

	// plain holds long strings of the record known to be printable ASCII
	// without '"' or '\\' (attribute values as Decode found them, and what
	// NotePlain was given): Canonical writes them without looking for
	// characters to escape.
	plain plainTexts
}

// NotePlain tells the next Canonical of r that s, a value r holds or is
// about to hold, is printable ASCII without '"' or '\\' (as the pseudonyms
// and digests ingest makes are), so that it is written without a look for
// characters to escape. Only strings made so may be noted: a noted string
// is written as it is. A string counts as noted by its memory, not by its
// bytes; short strings (under 64 bytes) are not noted, as scanning them
// costs less than the lookups, and at most four are.
func (r *Record) NotePlain(s string) { r.plain.note(s) }
