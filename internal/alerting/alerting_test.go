package alerting

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/detect"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
	"github.com/aitrail/aitrail/internal/notify"
)

// memLog stores events by id, once, like the ledger's idempotency.
type memLog struct {
	mu     sync.Mutex
	events []event.Event
	ids    map[string]bool
}

func (l *memLog) Append(_ context.Context, p authz.Principal, evs []event.Event) (ingest.Receipt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.TokenID != ingest.SystemTokenID {
		return ingest.Receipt{}, errors.New("alerts must be recorded as the system")
	}
	for _, e := range evs {
		if !l.ids[e.Tenant+"/"+e.ID] {
			l.ids[e.Tenant+"/"+e.ID] = true
			l.events = append(l.events, e)
		}
	}
	return ingest.Receipt{}, nil
}

type memSender struct {
	mu     sync.Mutex
	alerts []notify.Alert
}

func (s *memSender) Send(a notify.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alerts = append(s.alerts, a)
	return nil
}

type memStore struct {
	data      []byte
	failSaves int
}

func (s *memStore) Load() ([]byte, error) { return s.data, nil }
func (s *memStore) Save(b []byte) error {
	if s.failSaves > 0 {
		s.failSaves--
		return errors.New("disk full")
	}
	s.data = append([]byte(nil), b...)
	return nil
}

const rules = `rules:
  - id: denied-burst
    severity: high
    kind: threshold
    types: [access.attempt]
    condition: outcome == "denied"
    group_by: [tenant, actor.id]
    window: 1m
    threshold: 3
    summary: Burst of denied access attempts.
  - id: new-admin
    kind: match
    types: [admin.change]
    condition: "true"
    summary: An admin change.
`

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// entries encodes records as the log holds them, from index first.
func entries(t *testing.T, first uint64, recs ...event.Record) []ledger.Entry {
	t.Helper()
	var es []ledger.Entry
	for i, r := range recs {
		data, err := event.Canonical(&r)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, ledger.Entry{Index: first + uint64(i), Data: data})
	}
	return es
}

func denied(i int) event.Record {
	at := t0.Add(time.Duration(i) * time.Second)
	return event.Record{ID: fmt.Sprintf("d%d", i), Type: "access.attempt", Tenant: "acme", Time: at, ReceivedAt: at,
		Outcome: "denied", Actor: &event.Actor{ID: "hmac-sha256:aa", Type: "user"}}
}

func newDetector(t *testing.T, logSize uint64, log *memLog, send *memSender, store *memStore) *Detector {
	t.Helper()
	rs, err := detect.LoadFiles(false, detect.File{Name: "rules.yaml", Data: []byte(rules)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(rs, logSize, log, send, store, testIDKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDetectorRecordsAlerts checks the detector's promises: a rule firing
// becomes an alert.fired record and an alert for delivery; it resolves
// with the same alert id; and a restart — also one that comes between
// recording an alert and saving the state — neither loses nor repeats one.
func TestDetectorRecordsAlerts(t *testing.T) {
	ctx := context.Background()
	log, send, store := &memLog{ids: map[string]bool{}}, &memSender{}, &memStore{}
	d := newDetector(t, 0, log, send, store)

	// Three denials fire; the state save fails once, as a crash would
	// interrupt it, and the follower delivers the batch again.
	batch := entries(t, 0, denied(0), denied(1), denied(2))
	store.failSaves = 1
	if err := d.Apply(ctx, batch); err == nil {
		t.Fatal("Apply succeeded although the state could not be saved")
	}
	d = newDetector(t, 0, log, send, store) // restart: nothing was saved
	if c, _ := d.Cursor(ctx); c != 0 {
		t.Fatalf("cursor after a failed save: %d; want 0", c)
	}
	if err := d.Apply(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if len(log.events) != 1 || log.events[0].Type != "alert.fired" || log.events[0].Tenant != "acme" {
		t.Fatalf("recorded %+v; want one alert.fired in acme", log.events)
	}
	fired := log.events[0]
	if fired.Resource.Type != "alert" || fired.Attributes["alert.rule"] != "denied-burst" || fired.Attributes["alert.trigger_ids"] != "d0,d1,d2" {
		t.Errorf("alert record %+v", fired)
	}

	// A restart after the save: the same batch again records nothing new.
	d = newDetector(t, 0, log, send, store)
	if c, _ := d.Cursor(ctx); c != 3 {
		t.Fatalf("cursor after restart: %d; want 3", c)
	}
	if err := d.Apply(ctx, batch); err != nil || len(log.events) != 1 {
		t.Fatalf("replayed batch: %v, %d records; want still 1", err, len(log.events))
	}

	// The window empties: the alert resolves, with the same id.
	if err := d.Advance(ctx, t0.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if len(log.events) != 2 || log.events[1].Type != "alert.resolved" || log.events[1].Resource.ID != fired.Resource.ID {
		t.Fatalf("after the window: %+v", log.events)
	}
	last := send.alerts[len(send.alerts)-1]
	if last.Labels["alertname"] != "denied-burst" || last.Labels["tenant"] != "acme" || last.Labels["actor_id"] != "hmac-sha256:aa" ||
		last.EndsAt.IsZero() || last.Annotations["alert_id"] != fired.Resource.ID {
		t.Errorf("delivered %+v", last)
	}

	// A match rule fires once per record and never resolves.
	at := t0.Add(10 * time.Minute)
	if err := d.Apply(ctx, entries(t, 3, event.Record{ID: "a1", Type: "admin.change", Tenant: "globex", Time: at, ReceivedAt: at})); err != nil {
		t.Fatal(err)
	}
	if len(log.events) != 3 || log.events[2].Tenant != "globex" || len(d.state.Firing) != 0 {
		t.Errorf("match rule: %d records, last %+v, %d firing", len(log.events), log.events[len(log.events)-1], len(d.state.Firing))
	}
}

// TestDetectorStartsAtTheLogsEnd: a new detector watches what happens from
// now on, not the history before it.
func TestDetectorStartsAtTheLogsEnd(t *testing.T) {
	ctx := context.Background()
	log := &memLog{ids: map[string]bool{}}
	d := newDetector(t, 3, log, &memSender{}, &memStore{})
	if c, _ := d.Cursor(ctx); c != 3 {
		t.Fatalf("cursor %d; want the log size 3", c)
	}
	if err := d.Apply(ctx, entries(t, 0, denied(0), denied(1), denied(2))); err != nil || len(log.events) != 0 {
		t.Fatalf("history alerted: %v %+v", err, log.events)
	}
}

// TestRuleChangesAreRecorded: each change to the rules in force is
// recorded once; the first start only remembers them.
func TestRuleChangesAreRecorded(t *testing.T) {
	ctx := context.Background()
	log, store := &memLog{ids: map[string]bool{}}, &memStore{}
	load := func(y string) []*detect.Rule {
		rs, err := detect.LoadFiles(false, detect.File{Name: "r.yaml", Data: []byte(y)})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	first := load(rules)
	d := newDetector(t, 0, log, &memSender{}, store)
	if err := d.RecordRules(ctx, first); err != nil {
		t.Fatal(err)
	}
	if len(log.events) != 0 {
		t.Fatalf("first start recorded %+v; a new log starts empty", log.events)
	}
	d = newDetector(t, 0, log, &memSender{}, store)
	if err := d.RecordRules(ctx, first); err != nil || len(log.events) != 0 {
		t.Fatalf("an unchanged rule set was recorded again: %v %d", err, len(log.events))
	}
	changed := load(strings.Replace(rules, "threshold: 3", "threshold: 4", 1) + `  - id: extra
    kind: match
    condition: "true"
`)
	if err := d.RecordRules(ctx, changed); err != nil {
		t.Fatal(err)
	}
	a := log.events[len(log.events)-1].Attributes
	if len(log.events) != 1 || a["rules.changed"] != "denied-burst" || a["rules.added"] != "extra" || a["rules.removed"] != "" {
		t.Fatalf("change recorded as %+v", log.events[len(log.events)-1])
	}
}

var testIDKey = []byte("a secret only the server holds..")

// TestRecordIDsCannotBeTakenFirst: the log stores one record per id, so a
// producer that could predict an alert's id (from the public rule pack,
// its own events and the public checkpoint) could send an event with that
// id first and keep the alert out of the log. The ids are HMACs under the
// server's key: what anyone can compute without it is taken in vain.
func TestRecordIDsCannotBeTakenFirst(t *testing.T) {
	ctx := context.Background()
	run := func(key []byte, log *memLog) []event.Event {
		rs, err := detect.LoadFiles(false, detect.File{Name: "rules.yaml", Data: []byte(rules)})
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(rs, 0, log, &memSender{}, &memStore{}, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.RecordRules(ctx, rs); err != nil {
			t.Fatal(err)
		}
		if err := d.RecordRules(ctx, rs[:1]); err != nil { // a rule change: recorded
			t.Fatal(err)
		}
		if err := d.Apply(ctx, entries(t, 0, denied(0), denied(1), denied(2))); err != nil {
			t.Fatal(err)
		}
		return log.events
	}
	// What an outsider computes: the ids without the key.
	predicted := run(nil, &memLog{ids: map[string]bool{}})
	if len(predicted) != 2 {
		t.Fatalf("%d records without the key, want a rule change and an alert: %+v", len(predicted), predicted)
	}
	// Those ids, taken first by a producer's events.
	squatted := &memLog{ids: map[string]bool{}}
	for _, e := range predicted {
		squatted.ids[e.Tenant+"/"+e.ID] = true
	}
	got := run(testIDKey, squatted)
	var types []string
	for _, e := range got {
		types = append(types, e.Type)
	}
	if strings.Join(types, ",") != "admin.change,alert.fired" {
		t.Fatalf("records written with ids taken first: %v, want the rule change and the alert", types)
	}
	// The same key gives the same ids in every run (a record written
	// again after a crash is stored once).
	again := run(testIDKey, &memLog{ids: map[string]bool{}})
	for i := range got {
		if got[i].ID != again[i].ID {
			t.Fatalf("ids differ between runs with one key: %s, %s", got[i].ID, again[i].ID)
		}
	}
}

// TestEveryRuleChangeIsRecorded: a rule set that returns to one it had
// before (a rule removed, restored, removed again) is recorded at every
// change: the n-th change's record has an id of its own.
func TestEveryRuleChangeIsRecorded(t *testing.T) {
	ctx := context.Background()
	log := &memLog{ids: map[string]bool{}}
	load := func(y string) []*detect.Rule {
		rs, err := detect.LoadFiles(false, detect.File{Name: "r.yaml", Data: []byte(y)})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	a, b := load(rules+"  - id: extra\n    kind: match\n    condition: \"true\"\n"), load(rules)
	d := newDetector(t, 0, log, &memSender{}, &memStore{})
	for _, rs := range [][]*detect.Rule{a, b, a, b} {
		if err := d.RecordRules(ctx, rs); err != nil {
			t.Fatal(err)
		}
	}
	var removed []string
	for _, e := range log.events {
		removed = append(removed, e.Attributes["rules.removed"].(string))
	}
	if strings.Join(removed, "|") != "extra||extra" {
		t.Fatalf("changes recorded, by the rules they removed: %q; want extra, none, extra", removed)
	}
}
