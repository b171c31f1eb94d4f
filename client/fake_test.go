package client_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/aitrail/aitrail/client"
)

// fakeServer is a stand-in for POST /v1/events: it stores events by id
// (idempotently, like the real server) and lets a test break chosen
// requests.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	events   []client.Event // in the order stored
	index    map[string]int
	requests [][]string // ids of each request, in arrival order
	// fault, if set, may answer request n (0-based) itself; it returns
	// whether it did. store stores the request's events and returns the
	// receipt, so a fault can store and then lose the answer.
	fault func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool
}

func newFakeServer(t *testing.T) *fakeServer {
	f := startFake()
	t.Cleanup(f.Close)
	return f
}

// startFake starts a fakeServer; the caller closes it.
func startFake() *fakeServer {
	f := &fakeServer{index: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/events" {
		http.NotFound(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var evs []client.Event
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var e client.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		evs = append(evs, e)
	}
	f.mu.Lock()
	n := len(f.requests)
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	f.requests = append(f.requests, ids)
	fault := f.fault
	f.mu.Unlock()
	store := func() client.Receipt {
		f.mu.Lock()
		defer f.mu.Unlock()
		var rc client.Receipt
		for _, e := range evs {
			idx, dup := f.index[e.ID]
			if !dup {
				idx = len(f.events)
				f.index[e.ID] = idx
				f.events = append(f.events, e)
			}
			rc.Results = append(rc.Results, client.Result{ID: e.ID, Index: uint64(idx), Duplicate: dup})
		}
		rc.Checkpoint = fmt.Sprintf("fake/log\n%d\n", len(f.events))
		return rc
	}
	if fault != nil && fault(n, evs, w, store) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(store())
}

// stored returns the ids stored, in order.
func (f *fakeServer) stored() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, len(f.events))
	for i, e := range f.events {
		ids[i] = e.ID
	}
	return ids
}

// requestIDs returns the ids of every request received.
func (f *fakeServer) requestIDs() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.requests...)
}

// writeError answers like the real server's error writer.
func writeError(w http.ResponseWriter, status int, code string, details ...any) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	body := map[string]any{"code": code, "message": code}
	if len(details) > 0 {
		body["details"] = details
	}
	json.NewEncoder(w).Encode(map[string]any{"error": body})
}

// loseAnswer drops the connection without an answer, as a crash after the
// commit would.
func loseAnswer(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// all returns the events stored, in order.
func (f *fakeServer) all() []client.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]client.Event(nil), f.events...)
}
