package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
	"github.com/aitrail/aitrail/internal/merkle"
)

// ingest handles POST /v1/events: validate everything, encrypt content,
// append atomically, and answer only once the records are durable.
func (s *Server) ingest(w http.ResponseWriter, r *http.Request) {
	body, mt, err := httpbody.Read(w, r, s.MaxBodyBytes, "application/json", "application/x-ndjson")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The events' content is the body's memory until Append has sealed it.
	defer httpbody.Release(body)
	events, err := event.Decode(body, mt, s.Ingest.Limits)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	receipt, err := s.Ingest.Append(r.Context(), principalFrom(r.Context()), events)
	if err != nil {
		if mt == "application/x-ndjson" {
			event.AddLines(err, body)
		}
		s.writeError(w, r, err)
		return
	}
	var dups int
	for _, res := range receipt.Results {
		if res.Duplicate {
			dups++
		}
	}
	s.metrics.stored.Add(float64(len(receipt.Results) - dups))
	s.metrics.duplicates.Add(float64(dups))
	writeReceipt(w, receipt)
}

// writeReceipt writes the answer to an append, receiptBody's JSON, without
// reflection: encoding/json took 2 % of the server's CPU under batched
// ingest writing a hundred results per request.
func writeReceipt(w http.ResponseWriter, receipt ingest.Receipt) {
	b := make([]byte, 0, 64+len(receipt.Checkpoint)+len(receipt.Results)*64)
	b = append(b, `{"checkpoint":`...)
	b, _ = jsontext.AppendQuote(b, receipt.Checkpoint)
	b = append(b, `,"results":[`...)
	for i, res := range receipt.Results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		// Invalid UTF-8 (which ids never hold) would be replaced, as
		// encoding/json does.
		b, _ = jsontext.AppendQuote(b, res.ID)
		b = append(b, `,"index":`...)
		b = strconv.AppendUint(b, res.Index, 10)
		if res.Duplicate {
			b = append(b, `,"duplicate":true`...)
		}
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	h := w.Header()
	h["Content-Type"], h["X-Content-Type-Options"] = jsonType, nosniff
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// queryParams are the parameters GET /v1/events accepts.
var queryParams = map[string]bool{"tenant": true, "type": true, "actor": true, "model": true, "outcome": true,
	"resource": true, "from": true, "to": true, "q": true, "limit": true, "cursor": true, "order": true, "after": true}

// notATenant says what a tenant name is, for the errors that refuse one.
const notATenant = "must be a tenant name: lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 63 bytes"

// checkParams refuses, as invalid_query, a query string with a parameter
// other than the allowed ones or one given twice, and a tenant parameter
// that cannot name a tenant (nothing is read, or recorded as read, in a
// tenant that cannot exist).
func checkParams(v url.Values, allowed map[string]bool) error {
	for k, vs := range v {
		if !allowed[k] {
			return errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("unknown parameter %q", k))
		}
		if len(vs) > 1 {
			return errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("parameter %q given more than once", k))
		}
	}
	if t := v.Get("tenant"); t != "" && !event.IsTenant(t) {
		return errorf(http.StatusBadRequest, "invalid_query", "tenant "+notATenant)
	}
	return nil
}

func parseQuery(v url.Values) (index.Query, error) {
	if err := checkParams(v, queryParams); err != nil {
		return index.Query{}, err
	}
	q := index.Query{
		Tenant: v.Get("tenant"), Type: v.Get("type"), Actor: v.Get("actor"), Model: v.Get("model"),
		Outcome: v.Get("outcome"), Resource: v.Get("resource"), Text: v.Get("q"), Cursor: v.Get("cursor"),
		Order: v.Get("order"),
	}
	for _, t := range []struct {
		name  string
		dst   *time.Time
		given *bool
	}{{"from", &q.From, &q.HasFrom}, {"to", &q.To, &q.HasTo}} {
		if s := v.Get(t.name); s != "" {
			tm, ok := event.ParseTime(s)
			if !ok {
				return q, errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("%s must be an RFC 3339 time of a year from 1 to 9999", t.name))
			}
			*t.dst, *t.given = tm, true
		}
	}
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 63)
		if err != nil {
			return q, errorf(http.StatusBadRequest, "invalid_query", "after must be a log index (a non-negative integer)")
		}
		q.After = &n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > index.MaxLimit {
			return q, errorf(http.StatusBadRequest, "invalid_query", fmt.Sprintf("limit must be an integer from 1 to %d", index.MaxLimit))
		}
		q.Limit = n
	}
	return q, nil
}

// query handles GET /v1/events.
func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	q, err := parseQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q.Tenants = p.VisibleTenants()
	pseudonyms, err := s.actorPseudonyms(r.Context(), &q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The actor searched for, as each tenant's record of the read names it.
	searched := func(tenant string) map[string]any {
		actors := []string{q.Actor} // a pseudonym as given, or none
		if pseudonyms != nil {
			actors = []string{pseudonyms[tenant]}
		}
		return map[string]any{"log.access.filter": recordedFilter(r.URL.Query(), actors)}
	}
	page, err := s.Index.Query(r.Context(), q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	perTenant := map[string]int{}
	for _, h := range page.Hits {
		perTenant[h.Tenant]++
	}
	tenant := q.Tenant
	if tenant == "" {
		tenant = readTenant
		if ts := p.VisibleTenants(); len(ts) > 0 {
			tenant = ts[0]
		}
	}
	if err := s.recordRead(r.Context(), w, p, "events.query", tenant, perTenant, searched); err != nil {
		s.writeError(w, r, err)
		return
	}
	// The answer holding the records (as much again as the records).
	size := 0
	for _, h := range page.Hits {
		size += len(h.Record)
	}
	// Held until written (answerDeadlines bounds how long a client that
	// does not read can make that take).
	if err := httpbody.ChargeAnswer(r.Context(), int64(size)); err != nil {
		s.writeError(w, r, err)
		return
	}
	var b bytes.Buffer
	b.Grow(size + 64*len(page.Hits) + 256)
	b.WriteString(`{"events":[`)
	for i, h := range page.Hits {
		if i > 0 {
			b.WriteByte(',')
		}
		writeWithIndex(&b, h)
	}
	b.WriteString(`],"next_cursor":`)
	nc, _ := json.Marshal(page.NextCursor)
	b.Write(nc)
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

// writeWithIndex writes a stored record with its log index added. The rest
// is the record exactly as stored, so a client can recompute the leaf.
func writeWithIndex(b *bytes.Buffer, h index.Hit) {
	b.WriteString(`{"index":`)
	b.WriteString(strconv.FormatUint(h.Index, 10))
	if len(h.Record) > 2 {
		b.WriteByte(',')
	}
	b.Write(h.Record[1:])
}

type proofJSON struct {
	Index    uint64   `json:"index"`
	TreeSize uint64   `json:"tree_size"`
	LeafHash string   `json:"leaf_hash"`
	Hashes   []string `json:"hashes"`
}

// getEventParams are the parameters GET /v1/events/{id} accepts.
var getEventParams = map[string]bool{"tenant": true, "proof": true}

// getEvent handles GET /v1/events/{id}[?tenant=T][&proof=true].
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	v := r.URL.Query()
	if err := checkParams(v, getEventParams); err != nil {
		s.writeError(w, r, err)
		return
	}
	wantProof := false
	switch v.Get("proof") {
	case "", "false":
	case "true":
		wantProof = true
	default:
		s.writeError(w, r, errorf(http.StatusBadRequest, "invalid_query", "proof must be true or false"))
		return
	}
	hit, err := s.Index.Get(r.Context(), p.VisibleTenants(), v.Get("tenant"), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(hit.Record, &out); err != nil {
		s.writeError(w, r, fmt.Errorf("couldn't parse stored record %d: %w", hit.Index, err))
		return
	}
	out["index"] = json.RawMessage(strconv.FormatUint(hit.Index, 10))
	if p.Has(authz.RoleReadContent) && out["content"] != nil {
		plain, err := s.openContent(w, r, hit)
		switch {
		case errors.Is(err, crypto.ErrErased):
			// Its key was destroyed: the subject was erased.
			out["content_erased"] = json.RawMessage("true")
		case errors.Is(err, crypto.ErrNotFound):
			// Not erased, and yet the key is not in the catalog: one
			// restored from a backup older than the key, say.
			s.log.Error("content cannot be read: its data key is not in the key catalog, and was not erased",
				"tenant", hit.Tenant, "index", hit.Index, "err", err)
			out["content_unavailable"] = json.RawMessage(`"its data key is not in the key catalog (restored from an older backup?); it was not erased"`)
		case err != nil:
			s.writeError(w, r, err)
			return
		default:
			out["decrypted_content"] = plain
		}
	}
	if wantProof {
		cpText := s.Ledger.Checkpoint()
		cp, err := merkle.ParseCheckpoint(checkpointBody(cpText))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		hashes, err := s.Ledger.InclusionProof(hit.Index, cp.Size)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		leaf, err := s.Ledger.LeafHash(hit.Index)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		pj, _ := json.Marshal(proofJSON{Index: hit.Index, TreeSize: cp.Size, LeafHash: b64(leaf), Hashes: b64s(hashes)})
		out["proof"] = pj
		cj, _ := json.Marshal(string(cpText))
		out["checkpoint"] = cj
	}
	_, shown := out["decrypted_content"]
	if err := s.recordRead(r.Context(), w, p, "events.get", hit.Tenant, map[string]int{hit.Tenant: 1}, sameAttrs(map[string]any{
		"log.access.event_id": r.PathValue("id"), "log.access.index": hit.Index,
		"log.access.content_shown": shown, "log.access.proof": wantProof,
	})); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// errContentIntegrity means stored content does not match the digest its
// record commits to.
var errContentIntegrity = errors.New("content integrity check failed")

// openContent decrypts a record's content.
func (s *Server) openContent(w http.ResponseWriter, r *http.Request, hit index.Hit) (json.RawMessage, error) {
	rec, err := event.ParseRecord(hit.Record)
	if err != nil {
		return nil, fmt.Errorf("couldn't parse stored record %d: %w", hit.Index, err)
	}
	// The sealed content, its plaintext and the answer holding it.
	if err := httpbody.ChargeAnswer(r.Context(), 3*rec.Content.Size); err != nil {
		return nil, err
	}
	blob, err := s.Ledger.Blob(hit.Index)
	if errors.Is(err, ledger.ErrTampered) {
		s.reportIntegrity(r.Context(), rec.Tenant, "content_checksum", hit.Index)
	}
	if err != nil {
		return nil, fmt.Errorf("couldn't read content of record %d: %w", hit.Index, err)
	}
	if crypto.Digest(blob) != rec.Content.Digest {
		s.reportIntegrity(r.Context(), rec.Tenant, "content_digest", hit.Index)
		return nil, fmt.Errorf("%w: content of record %d does not match its digest", errContentIntegrity, hit.Index)
	}
	plain, err := s.Opener.Open(r.Context(), rec.Content.KeyID, blob, crypto.ContentAAD(rec.Tenant, rec.ID))
	if err != nil {
		return nil, fmt.Errorf("couldn't decrypt content of record %d: %w", hit.Index, err)
	}
	return json.RawMessage(plain), nil
}

// reportIntegrity records that a check of stored data failed, as an
// integrity.failure record (which the built-in rule integrity-failure turns
// into a critical alert), and logs it. A failure is logged every time but
// recorded once per run, so that a client polling a damaged record does not
// fill the log with reports of it.
func (s *Server) reportIntegrity(ctx context.Context, tenant, check string, index uint64) {
	s.log.Error("integrity check failed", "check", check, "record", index)
	key := check + "/" + strconv.FormatUint(index, 10)
	if _, done := s.reported.LoadOrStore(key, true); done {
		return
	}
	ev := event.Event{Type: "integrity.failure", Tenant: tenant, Action: check, Outcome: "failure",
		Actor:      &event.Actor{ID: "aitrail", Type: "system"},
		Resource:   &event.Resource{Type: "record", ID: strconv.FormatUint(index, 10)},
		Attributes: map[string]any{"integrity.check": check, "integrity.record_index": index}}
	if _, err := s.Ingest.Append(context.WithoutCancel(ctx), system, []event.Event{ev}); err != nil {
		s.reported.Delete(key) // the next read tries again
		s.log.Error("couldn't record an integrity failure", "err", err)
	}
}

// checkpointBody returns the text of a signed note without its signatures.
func checkpointBody(signed []byte) []byte {
	if i := bytes.Index(signed, []byte("\n\n")); i >= 0 {
		return signed[:i+1]
	}
	return signed
}

func b64(h merkle.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

func b64s(hs []merkle.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = b64(h)
	}
	return out
}
