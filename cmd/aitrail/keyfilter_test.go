package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

// TestKeyFilterLimitKeepsIdempotency runs the server with the smallest
// limit for its filter of event ids (1 MiB, made for about 350,000 ids)
// and sends more ids than that: /metrics shows the filter full and within
// its limit, and ids sent again, old and new, are still recognised as
// duplicates at their first index, through queries of the index the
// metrics count, while new ids are stored. The server is restarted before
// the ids are sent again, so that the index finds them through the id
// filters it stored (27 parts of 16,384 records) and the one of its open
// part, which it rebuilds.
func TestKeyFilterLimitKeepsIdempotency(t *testing.T) {
	data, config := t.TempDir(), writeConfig(t, "ledger:\n  key_filter_bytes: 1048576\nindex:\n  max_lag: 0\n")
	s := startServer(t, data, "--config", config)
	post := func(prefix string, from, to int) receipt {
		var body bytes.Buffer
		for i := from; i < to; i++ {
			fmt.Fprintf(&body, `{"id":"%s-%d","type":"api.call"}`+"\n", prefix, i)
		}
		code, out := s.do("POST", "/v1/events", adminToken, "application/x-ndjson", body.Bytes())
		var r receipt
		if code != 200 || json.Unmarshal(out, &r) != nil || len(r.Results) != to-from {
			t.Fatalf("POST %s-%d..%d: %d %s", prefix, from, to, code, out)
		}
		return r
	}
	const n = 450_000
	first := map[int]uint64{}
	for i := 0; i < n; i += 10_000 {
		r := post("e", i, i+10_000)
		first[i] = r.Results[0].Index
	}
	if full, b := s.metric("aitrail_ledger_key_filter_full"), s.metric("aitrail_ledger_key_filter_bytes"); full != 1 || b > 1<<20 {
		t.Fatalf("after %d ids: key filter full %v, %v bytes; want full, at most 1 MiB", n, full, b)
	}
	s.waitIndexed()
	s.stop()
	s = startServer(t, data, "--config", config)
	if b := s.metric("aitrail_index_id_filter_bytes"); b != 27*20480 {
		t.Fatalf("after a restart: id filters of %v bytes, want those of 27 parts (27 x 20 KiB)", b)
	}
	before := s.metric("aitrail_ledger_key_lookups_total")
	// Ids of the first and the last requests again, with new ones among them.
	for _, from := range []int{0, n - 10_000} {
		r := post("e", from, from+10_000)
		for j, res := range r.Results {
			if !res.Duplicate || res.Index != first[from]+uint64(j) {
				t.Fatalf("resent id %s: %+v; want a duplicate at index %d", res.ID, res, first[from]+uint64(j))
			}
		}
	}
	r := post("new", 0, 10_000)
	for _, res := range r.Results {
		if res.Duplicate {
			t.Fatalf("new id %s taken for a duplicate", res.ID)
		}
	}
	if after := s.metric("aitrail_ledger_key_lookups_total"); after < before+2 {
		t.Fatalf("key lookups %v -> %v; want the resent ids looked up in the index", before, after)
	}
}
