package httpapi

import (
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/aitrail/aitrail/internal/ingest"
)

// TestWriteReceipt: the hand-written receipt is the JSON encoding/json
// gives the receipt's fields, for ids that need escaping too.
func TestWriteReceipt(t *testing.T) {
	type receiptBody struct {
		Checkpoint string          `json:"checkpoint"`
		Results    []ingest.Result `json:"results"`
	}
	for _, receipt := range []ingest.Receipt{
		{Checkpoint: []byte("example.org/log\n42\nq83+AQ==\n\n— example.org/log abc=\n"), Results: []ingest.Result{
			{ID: "a", Index: 0},
			{ID: `q"uote\back\slash`, Index: 41, Duplicate: true},
			{ID: "é\u2028✓<&>", Index: 1<<63 + 5},
		}},
		{Checkpoint: []byte("x"), Results: []ingest.Result{}},
	} {
		rec := httptest.NewRecorder()
		writeReceipt(rec, receipt)
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var got, want receiptBody
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: %v", rec.Body, err)
		}
		b, _ := json.Marshal(receiptBody{string(receipt.Checkpoint), receipt.Results})
		json.Unmarshal(b, &want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %s\nwant %s", rec.Body, b)
		}
	}
}
