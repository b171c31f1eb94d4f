package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpbody"
)

// TestUnreadAnswersReleaseTheBudget: an answer holding large content is
// charged to the body memory budget, and a client that never reads it
// holds that charge only until the answer's write deadline, not for as
// long as it keeps its connection open (the budget is ingest's too).
func TestUnreadAnswersReleaseTheBudget(t *testing.T) {
	const writeTime = 300 * time.Millisecond
	budget := httpbody.NewBudget(256 << 20)
	api := newTestAPIWith(t, func(s *Server) {
		s.BodyBudget = budget
		s.AnswerWriteTime.Base, s.AnswerWriteTime.PerMiB = writeTime, time.Nanosecond
	})
	const size = 12 << 20 // far more than the sockets buffer
	content, _ := json.Marshal(strings.Repeat("x", size))
	if _, err := api.pl.Append(context.Background(), api.root, []event.Event{{ID: "big", Type: "ai.inference",
		Tenant: "acme", Content: content}}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", api.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/events/big?tenant=acme HTTP/1.1\r\nHost: aitrail\r\nAuthorization: Bearer root-token\r\n\r\n")
	// The answer is charged while it is written, and not read ...
	for deadline := time.Now().Add(10 * time.Second); budget.Used() < size; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes charged for an answer with %d bytes of content", budget.Used(), size)
		}
	}
	// ... until writing it times out.
	for deadline := time.Now().Add(10 * time.Second); budget.Used() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still charged for an answer its client does not read", budget.Used())
		}
	}
	// The deadline is the answer's, not the connection's: a later request
	// on the same connection, past it, is served.
	keep, err := net.Dial("tcp", api.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	rd := bufio.NewReader(keep)
	for i, path := range []string{"/v1/events?tenant=acme", "/healthz"} {
		if i == 1 {
			time.Sleep(2 * writeTime)
		}
		fmt.Fprintf(keep, "GET %s HTTP/1.1\r\nHost: aitrail\r\nAuthorization: Bearer root-token\r\n\r\n", path)
		resp, err := http.ReadResponse(rd, nil)
		if err != nil {
			t.Fatalf("%s, request %d on one connection: %v", path, i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s, request %d on one connection: %d %.200s (%v)", path, i+1, resp.StatusCode, body, err)
		}
	}
}

// TestClientsThatStopReadingLoseTheirConnection: every answer has a write
// deadline, not only those holding records or content. A client that
// sends requests on one connection without reading the answers (HTTP/1.1
// pipelining), or stops reading a stream, would otherwise hold its
// connection, one of limits.max_connections, for as long as it likes.
func TestClientsThatStopReadingLoseTheirConnection(t *testing.T) {
	const writeTime = 300 * time.Millisecond
	streamEnded := make(chan error, 1)
	api := newTestAPIWith(t, func(s *Server) {
		s.AnswerWriteTime.Base = writeTime
		s.OpenAI = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A stream that goes on for as long as it can be written.
			w.Header().Set("Content-Type", "text/event-stream")
			chunk := []byte("data: " + strings.Repeat("x", 32<<10) + "\n\n")
			rc := http.NewResponseController(w)
			if r.URL.Query().Has("think") {
				// Two chunks far apart, as from a model that thinks.
				for i := range 2 {
					time.Sleep(time.Duration(i) * 2 * writeTime)
					w.Write(chunk)
					rc.Flush()
				}
				return
			}
			for {
				time.Sleep(writeTime / 20) // a stream's chunks come apart
				if _, err := w.Write(chunk); err != nil {
					streamEnded <- err
					return
				}
				if err := rc.Flush(); err != nil {
					streamEnded <- err
					return
				}
			}
		})
	})
	addr := api.srv.Listener.Addr().String()
	for _, path := range []string{"/healthz", "/metrics", "/no-such-path"} {
		t.Run("pipelined "+path, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			reqs := []byte(strings.Repeat("GET "+path+" HTTP/1.1\r\nHost: aitrail\r\n\r\n", 1000))
			// Sending fails once the server has closed the connection; it
			// blocks if the server keeps it, reading nothing more.
			conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			for {
				if _, err = conn.Write(reqs); err != nil {
					break
				}
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the server kept a connection whose answers were not read for 30 s")
			}
		})
	}
	t.Run("stream", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := `{"model":"m","stream":true,"messages":[]}`
		fmt.Fprintf(conn, "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: aitrail\r\nAuthorization: Bearer root-token\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		select {
		case <-streamEnded:
		case <-time.After(30 * time.Second):
			t.Fatal("a stream nobody reads was still being written after 30 s")
		}
	})
	// The deadline runs only while an answer is written: a stream that is
	// read reaches its client whole however long its chunks take.
	req, _ := http.NewRequest("POST", api.srv.URL+"/openai/v1/chat/completions?think", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer root-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(got), "data: "); err != nil || n != 2 {
		t.Fatalf("a stream with chunks %v apart: %d of 2 chunks (%v)", 2*writeTime, n, err)
	}
}

// deadlineRecorder is a ResponseWriter that remembers its write deadline.
type deadlineRecorder struct {
	http.ResponseWriter
	deadline time.Time
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error { d.deadline = t; return nil }

// TestLargeWritesGetTheirTime: a large write has Base and a second more per
// MiB from when it starts, also right after a small one (whose deadline is
// not moved for every write).
func TestLargeWritesGetTheirTime(t *testing.T) {
	times := WriteTimes{time.Minute, time.Second}
	rec := &deadlineRecorder{ResponseWriter: httptest.NewRecorder()}
	w := &deadlineWriter{ResponseWriter: rec, times: &times}
	w.Write([]byte("small"))
	start := time.Now()
	w.Write(make([]byte, 20<<20))
	if want := start.Add(time.Minute + 20*time.Second); rec.deadline.Before(want) {
		t.Fatalf("a 20 MiB write after a small one has until %v, want at least %v", rec.deadline.Sub(start), want.Sub(start))
	}
}
