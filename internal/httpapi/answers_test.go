package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
