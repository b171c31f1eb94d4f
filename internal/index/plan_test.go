package index

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestFiltersUseTheirIndexes checks, with SQLite's own query plans, that
// each equality filter of Query is answered from its index rather than by
// reading every record: on a large log a full scan is what a user would
// notice. The actor, model and resource indexes are partial (only records
// that have the field), which SQLite uses only when the filter implies the
// field is present; this keeps that true.
func TestFiltersUseTheirIndexes(t *testing.T) {
	ix, _ := openTemp(t, Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		q     Query
		index string
	}{
		{Query{Actor: "hmac-sha256:u1"}, "records_actor"},
		{Query{Actors: []string{"hmac-sha256:u1", "hmac-sha256:u2"}}, "records_actor"},
		{Query{Model: "gpt-4o@2024-08-06"}, "records_model"},
		{Query{Model: "gpt-4o"}, "records_model"},
		{Query{Resource: "dep-1"}, "records_resource"},
		{Query{Resource: "deployment:dep-1"}, "records_resource"},
		{Query{Type: "ai.inference"}, "records_type"},
		{Query{Type: "ai.*"}, "records_type"},
		{Query{From: time.Unix(100, 0), To: time.Unix(200, 0)}, "records_time"},
		{Query{Tenants: []string{"acme"}}, "records_tenant"},
	} {
		st, err := ix.statement(tc.q, true, tc.q.fingerprint(true), nil)
		if err != nil || st.sql == "" {
			t.Fatalf("%+v: %q, %v", tc.q, st.sql, err)
		}
		rows, err := ix.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+st.sql, append(st.args, 100)...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, "INDEX "+tc.index) {
			t.Errorf("%+v is planned as %q, not with %s", tc.q, p, tc.index)
		}
	}
}
