package registry

import (
	"bytes"
	"context"
	"fmt"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

var _ ledger.Handler = (*Registry)(nil)

// Cursor returns the index of the next log entry the registry needs (see
// ledger.Handler).
func (r *Registry) Cursor(ctx context.Context) (uint64, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cursor, nil
}

// LastFact returns the fact of the highest log index the registry knows,
// and false when it knows none. The server compares it with the log at
// start: a registry that describes another log must be rebuilt.
func (r *Registry) LastFact() (Deployment, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var last Deployment
	found := false
	for _, m := range r.models {
		if n := len(m.facts); n > 0 && (!found || m.facts[n-1].Index > last.Index) {
			last, found = m.facts[n-1], true
		}
	}
	return last, found
}

// typeMember starts the type member of every deploy or retire record in
// canonical form. Other records may hold it too (an attribute named "type"),
// so it only spares parsing the records that certainly are neither.
var typeMember = []byte(`"type":"model.`)

// Apply learns the facts in consecutive log entries, stores them and moves
// the cursor past the last entry (see ledger.Handler). Entries below the
// cursor are skipped; a record that cannot be parsed fails the whole Apply.
func (r *Registry) Apply(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	cursor, _ := r.Cursor(ctx)
	next := entries[len(entries)-1].Index + 1
	if next <= cursor {
		return nil
	}
	if entries[0].Index > cursor {
		return fmt.Errorf("couldn't apply entries from %d: the registry's cursor is %d, so entries in between would be missing", entries[0].Index, cursor)
	}
	var facts []Deployment
	for _, e := range entries {
		if e.Index < cursor {
			continue
		}
		// A record read from the files is decoded only if it may be a
		// deployment; one from memory is decoded already.
		if e.Value == nil && !bytes.Contains(e.Data, typeMember) {
			continue
		}
		rec, err := event.RecordFrom(e.Value, e.Data)
		if err != nil {
			return fmt.Errorf("couldn't parse record %d: %w", e.Index, err)
		}
		if d, ok := FromRecord(e.Index, rec); ok {
			facts = append(facts, d)
		}
	}
	if err := r.store.Save(ctx, facts, next); err != nil {
		return fmt.Errorf("couldn't store registry facts up to %d: %w", next, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(facts...)
	r.cursor = max(r.cursor, next)
	return nil
}
