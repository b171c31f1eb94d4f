package index

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// rec builds a Record with the fields every record has; edit modifies it.
func rec(tenant, id, typ string, edit ...func(*event.Record)) *event.Record {
	r := &event.Record{
		ID:         id,
		Type:       typ,
		Time:       t0,
		ReceivedAt: t0.Add(time.Millisecond),
		Tenant:     tenant,
	}
	for _, e := range edit {
		e(r)
	}
	return r
}

// withActor is an edit for rec that gives the record an actor.
func withActor(id string) func(*event.Record) {
	return func(r *event.Record) { r.Actor = &event.Actor{ID: id} }
}

// env is what an index under test follows: a real ledger, which tests
// append records to and the index reads them back from.
type env struct {
	log  *ledger.Ledger
	path string // the index file
}

// openTemp opens an index over a new, empty ledger.
func openTemp(t testing.TB, opts Options) (*Index, *env) {
	t.Helper()
	dir := t.TempDir()
	skey, vkey, err := note.GenerateKey(crand.Reader, "test.example/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	led, err := ledger.Open(filepath.Join(dir, "log"), ledger.Options{
		Origin: "test.example/log", Signer: signer, Verifier: verifier,
		SegmentSize: 64 << 10, // a new segment after each append past 64 KiB
		TailEntries: 100,      // and most records read from them
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	e := &env{log: led, path: filepath.Join(dir, "index.db")}
	return e.open(t, opts), e
}

// open opens the index file of e (again).
func (e *env) open(t testing.TB, opts Options) *Index {
	t.Helper()
	ix, err := Open(e.path, e.log, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix
}

// add appends records to the log in canonical form and returns them as the
// follower gets them.
func (e *env) add(t testing.TB, recs ...*event.Record) []ledger.Entry {
	t.Helper()
	items := make([]ledger.Item, len(recs))
	for i, r := range recs {
		data, err := event.Canonical(r)
		if err != nil {
			t.Fatal(err)
		}
		items[i] = ledger.Item{Record: data}
	}
	ctx := context.Background()
	first := e.log.Size()
	if _, err := e.log.Append(ctx, items); err != nil {
		t.Fatal(err)
	}
	es, err := e.log.Entries(ctx, first, len(items))
	if err != nil || len(es) != len(items) {
		t.Fatalf("reading back %d records: %d, %v", len(items), len(es), err)
	}
	return es
}

// realistic returns a record of about 1 KiB like an ai.inference event
// recorded by the proxy, varying with i.
func realistic(i int) *event.Record {
	at := t0.Add(time.Duration(i) * time.Millisecond)
	return &event.Record{
		ID:         fmt.Sprintf("0195a3b2-7c1d-7%03x-8%03x-%012x", i%4096, (i/4096)%4096, i),
		Type:       []string{"ai.inference", "ai.tool_call", "api.call", "access.attempt"}[i%4],
		Time:       at,
		ReceivedAt: at.Add(3 * time.Millisecond),
		Tenant:     []string{"acme", "globex", "initech"}[i%3],
		Actor: &event.Actor{
			ID:        fmt.Sprintf("pseu:%016x", uint64(i%5000)*0x9e3779b97f4a7c15),
			Type:      "user",
			IP:        fmt.Sprintf("10.%d.%d.%d", i%256, (i/256)%256, i%7),
			UserAgent: "openai-python/1.54.3 (Linux; x86_64) CPython/3.12.4",
			SessionID: fmt.Sprintf("sess-%08x", i/20),
		},
		Action:   "chat.completions.create",
		Outcome:  []string{"success", "success", "success", "failure", "denied"}[i%5],
		Resource: &event.Resource{Type: "deployment", ID: fmt.Sprintf("dep-%04d", i%300), Name: "customer support assistant"},
		Model:    &event.Model{Provider: "openai", Name: []string{"gpt-4o", "gpt-4o-mini", "o3"}[i%3], Version: "2024-08-06", Digest: "sha256:0b6f6b8b3e4c5d1f2a9e8d7c6b5a49382716f5e4d3c2b1a09f8e7d6c5b4a3928"},
		Prompt:   &event.Prompt{ID: "support-triage", Version: "v12", Digest: "sha256:7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e"},
		Attributes: map[string]any{
			"gen_ai.provider.name":           "openai",
			"gen_ai.request.model":           "gpt-4o",
			"gen_ai.response.model":          "gpt-4o-2024-08-06",
			"gen_ai.response.id":             fmt.Sprintf("chatcmpl-%024x", i),
			"gen_ai.usage.input_tokens":      1200 + i%500,
			"gen_ai.usage.output_tokens":     200 + i%300,
			"gen_ai.request.temperature":     0.2,
			"gen_ai.response.finish_reasons": "stop",
			"http.route":                     "/v1/chat/completions",
			"server.address":                 "api.openai.com",
			"aitrail.proxy.latency_ms":       412 + i%100,
			"ticket":                         fmt.Sprintf("SUP-%05d", i%20000),
		},
		Content: &event.ContentRef{
			Digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			KeyID:  fmt.Sprintf("dk-acme-%08x", i%5000),
			Size:   int64(2000 + i%3000),
		},
		TraceID: fmt.Sprintf("%032x", uint64(i)*0x9e3779b97f4a7c15),
		SpanID:  fmt.Sprintf("%016x", uint64(i)),
	}
}

func apply(t testing.TB, ix *Index, es []ledger.Entry) {
	t.Helper()
	if err := ix.Apply(context.Background(), es); err != nil {
		t.Fatal(err)
	}
}

// applyReopening applies recs in batches of random size up to most,
// closing and reopening the index after a third of them (so that what it
// keeps in memory between batches is rebuilt), and returns the index open
// at the end.
func applyReopening(t testing.TB, ix *Index, e *env, recs []*event.Record, rng *rand.Rand, most int) *Index {
	t.Helper()
	for i := 0; i < len(recs); {
		k := min(len(recs)-i, 1+rng.IntN(most))
		apply(t, ix, e.add(t, recs[i:i+k]...))
		i += k
		if rng.IntN(3) == 0 {
			ix.Close()
			ix = e.open(t, Options{})
		}
	}
	return ix
}

// modes are the configurations every behaviour must hold in.
var modes = []Options{{}, {FullText: true}}

// forModes runs f once for each of modes.
func forModes(t *testing.T, f func(t *testing.T, opts Options)) {
	for _, opts := range modes {
		t.Run(fmt.Sprintf("FullText=%v", opts.FullText), func(t *testing.T) { f(t, opts) })
	}
}

// toTable writes the open block's postings to the table, from which
// queries then read them (as after Open), so that a test can alter them.
func toTable(t testing.TB, ix *Index) {
	t.Helper()
	ix.applyMu.Lock()
	defer ix.applyMu.Unlock()
	if err := ix.writeOpenBlock(context.Background()); err != nil {
		t.Fatal(err)
	}
}
