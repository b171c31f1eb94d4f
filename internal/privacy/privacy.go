// Package privacy keeps erasures in force. An erasure destroys a subject's
// keys in the key catalog and appends a privacy.erasure record naming
// them; a catalog restored from a backup made before the erasure holds the
// keys again, and with them the subject's content and pseudonyms. Guard
// follows the log and destroys again the keys of every erasure record the
// catalog has not seen, so that restoring a backup undoes no erasure.
package privacy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

const (
	// TypeErasure is the type of the record of an erasure.
	TypeErasure = "privacy.erasure"
	// KeyIDsAttr is the attribute of an erasure record that lists the ids
	// of the data keys it destroyed, comma-separated. Ids beyond what one
	// attribute value holds go on in KeyIDsAttr+".2", ".3" and so on.
	KeyIDsAttr = "privacy.erased_key_ids"
	// maxValue is the most bytes of one attribute value (event.Normalize's
	// bound).
	maxValue = 4096
)

// KeyIDAttributes returns the attributes that list ids in an erasure
// record.
func KeyIDAttributes(ids []string) map[string]any {
	out := map[string]any{}
	var b strings.Builder
	flush := func() {
		name := KeyIDsAttr
		if n := len(out); n > 0 {
			name = fmt.Sprintf("%s.%d", KeyIDsAttr, n+1)
		}
		out[name] = b.String()
		b.Reset()
	}
	for _, id := range ids {
		if b.Len() > 0 && b.Len()+1+len(id) > maxValue {
			flush()
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(id)
	}
	if b.Len() > 0 {
		flush()
	}
	return out
}

// KeyIDs returns the key ids an erasure record's attributes list.
func KeyIDs(attrs map[string]any) []string {
	var ids []string
	for n := 1; ; n++ {
		name := KeyIDsAttr
		if n > 1 {
			name = fmt.Sprintf("%s.%d", KeyIDsAttr, n)
		}
		v, ok := attrs[name].(string)
		if !ok {
			return ids
		}
		for id := range strings.SplitSeq(v, ",") {
			if id != "" {
				ids = append(ids, id)
			}
		}
	}
}

// Keys is what Guard needs of the key ring (crypto.Keyring).
type Keys interface {
	// EraseKeys destroys those of the keys the catalog holds and keeps
	// every id as erased; it returns the ids it destroyed.
	EraseKeys(ctx context.Context, ids []string) ([]string, error)
	// ErasureCursor and SetErasureCursor keep, in the catalog, the log
	// index of the next record Guard needs.
	ErasureCursor(ctx context.Context) (uint64, bool, error)
	SetErasureCursor(ctx context.Context, cursor uint64) error
}

// Guard is a ledger.Handler that puts the erasure records it is given in
// force in the key catalog. Its cursor is kept in the catalog itself, so
// that a catalog restored from a backup starts it again from where the
// backup was made. The cursor is stored after every batch holding an
// erasure record, at most every SaveEvery otherwise, and by Save when the
// server stops: a start after a crash goes over at most SaveEvery of the
// log again, which destroys nothing twice.
type Guard struct {
	Keys Keys
	// Start is where Guard starts when the catalog holds no cursor: the
	// log's size when the server starts, since erasure records written
	// before Guard existed list no keys.
	Start uint64
	// SaveEvery is how often the cursor is stored while no erasure record
	// comes by; default 10 s.
	SaveEvery time.Duration
	Logger    *slog.Logger

	saved, reported time.Time
	// next is the cursor once the entries applied so far are gone over,
	// stored the cursor last stored.
	next, stored uint64
}

var _ ledger.Handler = (*Guard)(nil)

// Cursor implements ledger.Handler.
func (g *Guard) Cursor(ctx context.Context) (uint64, error) {
	c, ok, err := g.Keys.ErasureCursor(ctx)
	if err != nil {
		return 0, err
	}
	if !ok {
		if err := g.Keys.SetErasureCursor(ctx, g.Start); err != nil {
			return 0, err
		}
		c = g.Start
	}
	if c < g.Start && g.Logger != nil {
		g.Logger.Info("putting the erasures recorded in the log in force in the key catalog", "from", c, "to", g.Start)
	}
	g.saved, g.reported = time.Now(), time.Now()
	g.next, g.stored = c, c
	return c, nil
}

// Apply implements ledger.Handler.
func (g *Guard) Apply(ctx context.Context, entries []ledger.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	applied := false
	for _, e := range entries {
		rec, err := event.RecordOfType(e.Value, e.Data, TypeErasure)
		if err != nil || rec == nil {
			continue // a record that cannot be read is verify's to report
		}
		ids := KeyIDs(rec.Attributes)
		if len(ids) == 0 {
			continue
		}
		applied = true
		destroyed, err := g.Keys.EraseKeys(ctx, ids)
		if err != nil {
			return fmt.Errorf("couldn't put the erasure at %d in force: %w", e.Index, err)
		}
		if len(destroyed) > 0 && g.Logger != nil {
			g.Logger.Warn("the key catalog held keys an erasure in the log had destroyed (restored from a backup older than the erasure?); destroyed them again",
				"record", e.Index, "tenant", rec.Tenant, "keys", len(destroyed))
		}
	}
	g.next = entries[len(entries)-1].Index + 1
	// Going over the log up to Start, which holds the server's start:
	// progress every 5 s.
	if g.next < g.Start && g.Logger != nil && time.Since(g.reported) >= 5*time.Second {
		g.Logger.Info("putting the erasures recorded in the log in force in the key catalog", "at", g.next, "to", g.Start)
		g.reported = time.Now()
	}
	every := g.SaveEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	if applied || time.Since(g.saved) >= every {
		return g.Save(ctx)
	}
	return nil
}

// Save stores the cursor past the entries applied so far, if it moved. The
// server calls it once its followers have stopped, so that the next start
// does not go over the log since the last store again. It must not run
// with Apply.
func (g *Guard) Save(ctx context.Context) error {
	if g.next == g.stored {
		return nil
	}
	if err := g.Keys.SetErasureCursor(ctx, g.next); err != nil {
		return err
	}
	g.saved, g.stored = time.Now(), g.next
	return nil
}
