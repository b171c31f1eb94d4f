package httpbody

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/apierr"
)

// TestRead: bodies come back whole whatever their size and whether their
// length is announced, also in buffers given back by earlier requests;
// bodies over the limit are refused before and after gzip.
func TestRead(t *testing.T) {
	const limit = 1 << 16
	zip := func(b []byte) []byte {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(b)
		w.Close()
		return z.Bytes()
	}
	for round := 0; round < 3; round++ { // later rounds reuse released buffers
		for _, n := range []int{0, 1, 511, 512, 513, 4096, 40_000, limit} {
			want := bytes.Repeat([]byte{byte('a' + n%26)}, n)
			for _, tt := range []struct {
				name    string
				body    []byte
				gzip    bool
				unknown bool // no Content-Length
			}{{"plain", want, false, false}, {"chunked", want, false, true}, {"gzip", zip(want), true, false}} {
				r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(tt.body))
				r.Header.Set("Content-Type", "application/json")
				if tt.gzip {
					r.Header.Set("Content-Encoding", "gzip")
				}
				if tt.unknown {
					r.ContentLength = -1
				}
				got, mt, err := Read(httptest.NewRecorder(), r, limit, "application/json")
				if err != nil || mt != "application/json" || !bytes.Equal(got, want) {
					t.Fatalf("%s body of %d bytes: got %d bytes (%q...), %q, %v", tt.name, n, len(got), got[:min(len(got), 8)], mt, err)
				}
				Release(got)
			}
		}
	}
	for _, tt := range []struct {
		name string
		body []byte
		gzip bool
	}{
		{"plain", bytes.Repeat([]byte("x"), limit+1), false},
		{"gzip", zip(bytes.Repeat([]byte("x"), limit+1)), true},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(tt.body))
		r.Header.Set("Content-Type", "application/json")
		if tt.gzip {
			r.Header.Set("Content-Encoding", "gzip")
		}
		_, _, err := Read(httptest.NewRecorder(), r, limit, "application/json")
		var ae *apierr.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("%s body over the limit: %v", tt.name, err)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("{}"))
	r.Header.Set("Content-Type", "text/plain")
	if _, _, err := Read(httptest.NewRecorder(), r, limit, "application/json"); err == nil {
		t.Error("a text/plain body was read")
	}
}

// TestBudget: bodies read under a budget are charged as their buffers grow,
// announced or not, and given back when the handler returns; a body that
// would pass the budget is refused with ErrBusy and counted, and a body read
// outside any budget is not charged.
func TestBudget(t *testing.T) {
	const limit = 1 << 20
	b := NewBudget(2 * limit)
	read := func(body []byte, announced bool, during func()) error {
		var err error
		h := b.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var got []byte
			got, _, err = Read(w, r, limit, "application/json")
			if err == nil && !bytes.Equal(got, body) {
				t.Errorf("a body of %d bytes came back as %d", len(body), len(got))
			}
			if during != nil {
				during()
			}
		}))
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if !announced {
			r.ContentLength = -1
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		return err
	}
	big := bytes.Repeat([]byte("b"), limit-100)
	// Two announced bodies of the limit fit a budget of twice it; a third
	// big body does not, a small one does.
	err := read(big, true, func() {
		if err := read(big, true, func() {
			for _, announced := range []bool{true, false} {
				if err := read(big, announced, nil); !errors.Is(err, ErrBusy) {
					t.Errorf("a third big body (announced %v): %v, want ErrBusy", announced, err)
				}
			}
			if err := read([]byte("{}"), true, nil); err != nil {
				t.Errorf("a small body beside two big ones: %v", err)
			}
		}); err != nil {
			t.Errorf("a second big body: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// A body of unannounced length is charged for the buffer it grows,
	// which may be larger than the body.
	if err := read(big, false, func() {
		if used := b.Used(); used < int64(len(big)) {
			t.Errorf("%d bytes charged for a body of %d", used, len(big))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if used := b.Used(); used != 0 {
		t.Fatalf("%d bytes still charged after the handlers returned", used)
	}
	// A body announced large but sent slowly holds what has come, not what
	// it announced.
	huge := NewBudget(64 << 20)
	pr, pw := io.Pipe()
	r := httptest.NewRequest(http.MethodPost, "/", pr)
	r.Header.Set("Content-Type", "application/json")
	r.ContentLength = 32 << 20
	done := make(chan struct{})
	go func() {
		defer close(done)
		huge.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			Read(w, r, 32<<20, "application/json")
		})).ServeHTTP(httptest.NewRecorder(), r)
	}()
	pw.Write(bytes.Repeat([]byte("s"), 3<<20))
	if used := huge.Used(); used < 3<<20 || used > 8<<20 {
		t.Errorf("%d bytes charged for 3 MiB of a body announced as 32 MiB", used)
	}
	pw.Close()
	<-done
	if used := huge.Used(); used != 0 {
		t.Errorf("%d bytes still charged after the handler returned", used)
	}
	if b.Refused.Load() == 0 {
		t.Fatal("no request was counted as refused")
	}
	// What a handler Keeps stays charged after it returns, until released.
	var release func()
	huge.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Charge(r.Context(), 5<<20); err != nil {
			t.Error(err)
		}
		release = Keep(r.Context())
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/", nil))
	if used := huge.Used(); used != 5<<20 {
		t.Errorf("%d bytes charged after a handler that kept 5 MiB returned", used)
	}
	release()
	if used := huge.Used(); used != 0 {
		t.Errorf("%d bytes still charged after the kept charge was released", used)
	}
	// Answers take at most half the budget in all, one answer at most
	// half of it: unread answers always leave ingest the other half.
	answers := NewBudget(8 << 20)
	serve := func(during func(r *http.Request)) {
		answers.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			during(r)
		})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	}
	serve(func(r *http.Request) {
		if err := ChargeAnswer(r.Context(), 100<<20); err != nil || answers.Used() != 4<<20 {
			t.Errorf("an answer larger than the budget: %v, %d bytes charged; want half the budget", err, answers.Used())
		}
		serve(func(r *http.Request) {
			if err := ChargeAnswer(r.Context(), 1); !errors.Is(err, ErrBusy) {
				t.Errorf("an answer beside answers holding half the budget: %v, want ErrBusy", err)
			}
			if err := Charge(r.Context(), 4<<20); err != nil {
				t.Errorf("a body of the other half, beside answers holding half: %v", err)
			}
		})
	})
	if used := answers.Used(); used != 0 {
		t.Errorf("%d bytes still charged after answers and bodies were done", used)
	}
	// Outside any budget nothing is charged or refused.
	Keep(context.Background())()
	if err := ChargeAnswer(context.Background(), 1<<40); err != nil {
		t.Errorf("ChargeAnswer outside any budget: %v", err)
	}
	r = httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(big))
	r.Header.Set("Content-Type", "application/json")
	if _, _, err := Read(httptest.NewRecorder(), r, limit, "application/json"); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedBodiesAreAnswered: a client that sends its whole body before
// it reads the answer, as most do, gets the refusal of a body too large or
// over the memory budget, not a connection reset.
func TestRefusedBodiesAreAnswered(t *testing.T) {
	const limit = 16 << 20
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := Read(w, r, limit, "application/json"); err != nil {
			ae := err.(*apierr.Error)
			http.Error(w, ae.Code, ae.Status)
		}
	})
	for _, tc := range []struct {
		size   int
		budget *Budget
		want   string
	}{
		{limit * 3 / 4, NewBudget(512 << 10), "503"}, // over the budget (less than a body's first charge)
		{3 * limit, nil, "413"},                      // over the limit
	} {
		h := handler
		if tc.budget != nil {
			h = tc.budget.Wrap(handler)
		}
		srv := httptest.NewServer(h)
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		// More than the sockets buffer: without the refused body read on,
		// the server closes with unread data and the writes fail.
		if _, err := fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: aitrail\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", tc.size); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(bytes.Repeat([]byte("x"), tc.size)); err != nil {
			t.Fatalf("a body of %d bytes, refused: %v while sending it", tc.size, err)
		}
		status, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.Contains(status, " "+tc.want+" ") {
			t.Fatalf("a body of %d bytes: answered %q (%v), want %s", tc.size, status, err, tc.want)
		}
		conn.Close()
		srv.Close()
	}
	// A client that waits for 100 Continue, refused before anything was
	// read, is answered at once, not after the server has waited for a
	// body it will not send.
	srv := httptest.NewServer(NewBudget(512 << 10).Wrap(handler))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(drainTime / 2))
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: aitrail\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", limit/2)
	if status, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.Contains(status, " 503 ") {
		t.Fatalf("a body waiting for 100 Continue: answered %q (%v), want 503", status, err)
	}
}
