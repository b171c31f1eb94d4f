package index

import (
	"context"
	"fmt"
	"strings"

	"github.com/aitrail/aitrail/internal/ledger"
)

// Key names one event for LookupIDs: ids are unique per tenant.
type Key struct {
	Tenant, ID string
}

// lookupChunk bounds the ids in one query (SQLite's bound-parameter limit is
// far above it).
const lookupChunk = 500

// LookupIDs is LookupID for many events at once, in one query per 500 ids,
// and also says where each record is in the log: ingest checks a whole
// request with it, and reads back what it finds. Keys the index does not
// hold are absent from the result. As with LookupID, a miss is not proof of
// absence while the index lags the log.
func (ix *Index) LookupIDs(ctx context.Context, keys []Key) (map[Key]ledger.Loc, error) {
	out := make(map[Key]ledger.Loc)
	for start := 0; start < len(keys); start += lookupChunk {
		chunk := keys[start:min(start+lookupChunk, len(keys))]
		args := make([]any, len(chunk))
		for i, k := range chunk {
			args[i] = k.ID
		}
		q := "SELECT tenant, id, idx, pos FROM records WHERE id IN (?" + strings.Repeat(",?", len(chunk)-1) + ")"
		rows, err := ix.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("couldn't look up event ids: %w", err)
		}
		want := make(map[Key]bool, len(chunk))
		for _, k := range chunk {
			want[k] = true
		}
		for rows.Next() {
			var k Key
			var idx, pos int64
			if err := rows.Scan(&k.Tenant, &k.ID, &idx, &pos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("couldn't look up event ids: %w", err)
			}
			if want[k] {
				out[k] = ledger.Loc{Index: uint64(idx), Offset: pos}
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("couldn't look up event ids: %w", err)
		}
	}
	return out, nil
}
