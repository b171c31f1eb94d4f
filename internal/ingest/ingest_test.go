package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ledger"
)

// fakeLedger stores records in memory; keys it has seen are duplicates.
type fakeLedger struct {
	records [][]byte
	keys    map[string]uint64
	fail    error
}

func (l *fakeLedger) Err() error { return nil }

func (l *fakeLedger) Append(_ context.Context, items []ledger.Item) (ledger.Receipt, error) {
	if l.fail != nil {
		return ledger.Receipt{}, l.fail
	}
	var r ledger.Receipt
	for _, it := range items {
		if i, ok := l.keys[it.Key]; ok {
			r.Results = append(r.Results, ledger.Result{Index: i, Duplicate: true})
			continue
		}
		l.keys[it.Key] = uint64(len(l.records))
		r.Results = append(r.Results, ledger.Result{Index: uint64(len(l.records))})
		l.records = append(l.records, it.Record)
	}
	return r, nil
}

// fakeRegistry refuses events of type "bad.event", tags every record it
// resolves and remembers what was committed.
type fakeRegistry struct {
	committed []uint64
}

func (f *fakeRegistry) Check(rec *event.Record) []event.Problem {
	if rec.Type == "bad.event" {
		return []event.Problem{{Field: ".model.version", Message: "is required"}}
	}
	return nil
}

func (f *fakeRegistry) Resolve(rec *event.Record) {
	rec.Attributes = map[string]any{"resolved": true}
}

func (f *fakeRegistry) Committed(index uint64, rec *event.Record) {
	f.committed = append(f.committed, index)
}

var root = authz.Principal{Root: true}

// TestRegistryHook checks the pipeline's use of its registry: problems
// refuse the whole batch with each event's position, records are completed
// before they are encoded, and only newly stored records, durable ones, are
// reported as committed.
func TestRegistryHook(t *testing.T) {
	led := &fakeLedger{keys: map[string]uint64{}}
	reg := &fakeRegistry{}
	pl := &Pipeline{Ledger: led, Registry: reg}
	ctx := context.Background()

	_, err := pl.Append(ctx, root, []event.Event{{Type: "a.b"}, {Type: "bad.event"}})
	var ee *event.Error
	if !errors.As(err, &ee) || ee.Code != event.CodeInvalid || len(ee.Problems) != 1 ||
		ee.Problems[0].Index != 1 || ee.Problems[0].Field != "events[1].model.version" {
		t.Fatalf("refused batch: %v", err)
	}
	if len(led.records) != 0 || len(reg.committed) != 0 {
		t.Fatal("a refused batch was stored or committed")
	}

	if _, err := pl.Append(ctx, root, []event.Event{{Type: "a.b", ID: "x"}, {Type: "a.b", ID: "y"}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(led.records[0]), `"attributes":{"resolved":true}`) {
		t.Fatalf("stored record %s was not completed before encoding", led.records[0])
	}
	if _, err := pl.Append(ctx, root, []event.Event{{Type: "a.b", ID: "y"}, {Type: "a.b", ID: "z"}}); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{0, 1, 2}; !slices.Equal(reg.committed, want) {
		t.Fatalf("committed %v, want %v (the duplicate y is not committed again)", reg.committed, want)
	}

	led.fail = errors.New("disk on fire")
	if _, err := pl.Append(ctx, root, []event.Event{{Type: "a.b"}}); err == nil || len(reg.committed) != 3 {
		t.Fatalf("a failed append: %v, committed %v", err, reg.committed)
	}
}

// putCounter counts the writes of a key store.
type putCounter struct {
	crypto.KeyStore
	writes atomic.Int64
}

func (s *putCounter) PutKey(ctx context.Context, k crypto.WrappedKey) error {
	s.writes.Add(1)
	return s.KeyStore.PutKey(ctx, k)
}

func (s *putCounter) PutKeys(ctx context.Context, keys []crypto.WrappedKey) error {
	s.writes.Add(1)
	return s.KeyStore.PutKeys(ctx, keys)
}

// TestNewSubjectsShareOneKeyWrite: a batch naming many new users with
// content makes their salts and content keys with one write to the key
// store, not one each (a write is a disk sync: a thousand new users took a
// second); the pseudonyms and sealed content are those Subject and Seal
// give.
func TestNewSubjectsShareOneKeyWrite(t *testing.T) {
	ctx := context.Background()
	kek, err := crypto.NewLocalKEK("", make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	store := &putCounter{KeyStore: new(cryptotest.MemKeyStore)}
	keyring := crypto.NewKeyring(kek, store)
	led := &itemLedger{}
	pl := &Pipeline{Ledger: led, Sealer: keyring, Subjects: keyring}
	var events []event.Event
	for i := range 300 {
		events = append(events, event.Event{Type: "ai.inference", Tenant: "acme",
			Actor: &event.Actor{ID: fmt.Sprintf("user-%d", i), Type: "user"}, Content: []byte(`{"prompt":"hi"}`)})
	}
	if _, err := pl.Append(ctx, root, events); err != nil {
		t.Fatal(err)
	}
	// The tenant's subject reference key, then everything else at once.
	if n := store.writes.Load(); n != 2 {
		t.Fatalf("300 new users with content: %d writes to the key store, want 2", n)
	}
	for i, it := range led.items {
		rec := it.Value.(*event.Record)
		s, err := keyring.Subject(ctx, "acme", fmt.Sprintf("user-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if want := s.Pseudonym(fmt.Sprintf("user-%d", i)); rec.Actor.ID != want {
			t.Fatalf("event %d: actor %q, want the subject's pseudonym %q", i, rec.Actor.ID, want)
		}
		if _, err := keyring.Open(ctx, rec.Content.KeyID, it.Blob, crypto.ContentAAD("acme", rec.ID)); err != nil {
			t.Fatalf("event %d: content does not open: %v", i, err)
		}
		if _, kid, _ := s.Seal(ctx, []byte("x"), nil); kid != rec.Content.KeyID {
			t.Fatalf("event %d sealed under key %s, its subject's content key is %s", i, rec.Content.KeyID, kid)
		}
	}
	if n := store.writes.Load(); n != 2 {
		t.Fatalf("reading back made %d more writes", n-2)
	}
}

// TestServiceActorsKeepTheirNamesNotTheirConversations: a service or system
// actor's id, address and user agent name a machine and are stored as sent;
// its session is a conversation, perhaps a person's, and is pseudonymised
// as the gen_ai.conversation.id attribute holding the same value is (the
// OTLP receiver copies one into the other).
func TestServiceActorsKeepTheirNamesNotTheirConversations(t *testing.T) {
	ctx := context.Background()
	kek, _ := crypto.NewLocalKEK("", make([]byte, 32))
	keyring := crypto.NewKeyring(kek, new(cryptotest.MemKeyStore))
	led := &itemLedger{}
	pl := &Pipeline{Ledger: led, Sealer: keyring, Subjects: keyring}
	for _, typ := range []string{"service", "system"} {
		ev := event.Event{Type: "ai.inference", Tenant: "acme", Attributes: map[string]any{"gen_ai.conversation.id": "conv-81"},
			Actor: &event.Actor{ID: "agent", Type: typ, IP: "10.0.0.7", UserAgent: "agent/1.0", SessionID: "conv-81"}}
		if _, err := pl.Append(ctx, root, []event.Event{ev}); err != nil {
			t.Fatal(err)
		}
		rec := led.items[len(led.items)-1].Value.(*event.Record)
		s, _ := keyring.Subject(ctx, "acme", "agent")
		a, conv := rec.Actor, s.Pseudonym("conv-81")
		if a.ID != "agent" || a.IP != "10.0.0.7" || a.UserAgent != "agent/1.0" {
			t.Errorf("%s actor stored as %+v, want its names as sent", typ, a)
		}
		if a.SessionID != conv || rec.Attributes["gen_ai.conversation.id"] != conv {
			t.Errorf("%s actor: session %q and conversation %q stored, want both %q", typ, a.SessionID, rec.Attributes["gen_ai.conversation.id"], conv)
		}
	}
}

// TestRecordSizeIsCheckedAsStored: the size check before anything is done
// counts the record as it will be stored, personal values as pseudonyms
// and received_at at its longest. The largest event it lets through is
// stored; one byte more is refused before any key is made for its
// subject, and whether it fits does not depend on the moment it arrives.
func TestRecordSizeIsCheckedAsStored(t *testing.T) {
	ctx := context.Background()
	kek, _ := crypto.NewLocalKEK("", make([]byte, 32))
	store := &putCounter{KeyStore: new(cryptotest.MemKeyStore)}
	keyring := crypto.NewKeyring(kek, store)
	pl := &Pipeline{Ledger: &itemLedger{}, Sealer: keyring, Subjects: keyring}
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC) // received_at at its shortest
	pl.Now = func() time.Time { return at }
	ev := func(pad int) event.Event {
		attrs := map[string]any{"pad": strings.Repeat("x", pad), "user.id": "u7"}
		for i := range 15 {
			attrs[fmt.Sprintf("a%02d", i)] = strings.Repeat("y", 4096)
		}
		return event.Event{Type: "ai.inference", Tenant: "acme", Attributes: attrs,
			Actor: &event.Actor{ID: "u", Type: "user", IP: "10.0.0.1", SessionID: "s"}}
	}
	passes := func(pad int) bool {
		_, _, err := event.NormalizeAll([]event.Event{ev(pad)}, at, event.Limits{})
		return err == nil
	}
	lo, hi := 0, 4096 // passes(lo), !passes(hi)
	if !passes(lo) || passes(hi) {
		t.Fatal("the padding does not straddle the limit")
	}
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; passes(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	_, err := pl.Append(ctx, root, []event.Event{ev(hi)})
	var ee *event.Error
	if !errors.As(err, &ee) || ee.Code != event.CodeTooLarge || ee.Problems[0].Field != "events[0]" {
		t.Fatalf("one byte over: %v", err)
	}
	if n := store.writes.Load(); n != 0 {
		t.Fatalf("a refused event had %d key writes made for it", n)
	}
	at = at.Add(123456789) // received_at at its longest
	if _, err := pl.Append(ctx, root, []event.Event{ev(lo)}); err != nil {
		t.Fatalf("the largest event the check lets through: %v", err)
	}
}
