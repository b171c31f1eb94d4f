package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"testing"
)

// benchIDs returns the ids of the events of one bench body.
func benchIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev struct{ ID string }
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bench body line %q: %v", sc.Text(), err)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

// TestBenchBodyIDs: by default the load generator's ids grow with time,
// request after request, as the SDK's do (bench-<UUIDv7 of the request>-
// <client>-<event>); with --random-ids every event has a UUID of its own
// and they come in no order.
func TestBenchBodyIDs(t *testing.T) {
	for _, random := range []bool{false, true} {
		next := benchBodies(0, 100, 256, false, true, "user", random)
		var all, uuids []string
		for seq := range 3 {
			ids := benchIDs(t, next(seq))
			if len(ids) != 100 {
				t.Fatalf("random=%v: %d events in a body, want 100", random, len(ids))
			}
			all = append(all, ids...)
			for _, id := range ids {
				uuids = append(uuids, id[len("bench-"):len("bench-")+36])
			}
		}
		if distinct := slices.Compact(slices.Sorted(slices.Values(all))); len(distinct) != len(all) {
			t.Fatalf("random=%v: %d distinct ids of %d", random, len(distinct), len(all))
		}
		distinct := slices.Compact(slices.Clone(uuids))
		switch {
		case !random && (len(distinct) != 3 || !slices.IsSorted(distinct)):
			t.Errorf("time-ordered ids: request UUIDs %v, want 3 growing ones", distinct)
		case random && (len(distinct) != len(uuids) || slices.IsSorted(uuids)):
			t.Errorf("random ids: %d distinct UUIDs of %d, sorted %v; want all distinct, in no order", len(distinct), len(uuids), slices.IsSorted(uuids))
		}
	}
}
