package client_test

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aitrail/aitrail/client"
)

// serveRecorded serves h behind HTTPMiddleware and returns the app's URL and
// the aitrail stand-in that receives the events.
func serveRecorded(t *testing.T, opts client.HTTPOptions, h http.Handler) (app *httptest.Server, audit *fakeServer, rec *client.Recorder) {
	t.Helper()
	audit = newFakeServer(t)
	rec = newRecorder(t, audit, fastRetry)
	app = httptest.NewUnstartedServer(client.HTTPMiddleware(rec, opts)(h))
	app.Config.ErrorLog = log.New(io.Discard, "", 0) // the panics tests make on purpose
	app.Start()
	t.Cleanup(app.Close)
	return app, audit, rec
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("User-Agent", "test-agent/1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHTTPMiddlewareCapturesTheStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		status  int
		size    int64
		outcome string
	}{
		{"writes nothing", func(w http.ResponseWriter, r *http.Request) {}, 200, 0, "success"},
		{"writes without WriteHeader", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }, 200, 5, "success"},
		{"not found", http.NotFound, 404, 19, "failure"},
		{"forbidden", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(403) }, 403, 0, "denied"},
		{"second WriteHeader ignored", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201); w.WriteHeader(500) }, 201, 0, "success"},
		{"early hints first", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(103); w.WriteHeader(202) }, 202, 0, "success"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, audit, rec := serveRecorded(t, client.HTTPOptions{}, tc.handler)
			resp, _ := get(t, app.URL+"/x")
			if resp.StatusCode != tc.status {
				t.Fatalf("client got %d, want %d: the middleware changed the response", resp.StatusCode, tc.status)
			}
			if err := rec.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			evs := audit.all()
			if len(evs) != 1 {
				t.Fatalf("%d events recorded, want 1", len(evs))
			}
			a := evs[0].Attributes
			if a["http.response.status_code"] != float64(tc.status) || a["http.response.body.size"] != float64(tc.size) || evs[0].Outcome != tc.outcome {
				t.Errorf("recorded status %v size %v outcome %s, want %d %d %s", a["http.response.status_code"], a["http.response.body.size"], evs[0].Outcome, tc.status, tc.size, tc.outcome)
			}
		})
	}
}

func TestHTTPMiddlewareRecordsTheCall(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		r.Body.Close()
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	app, audit, rec := serveRecorded(t, client.HTTPOptions{
		Tenant:    "acme",
		API:       &client.API{Name: "inventory", Version: "v2"},
		SkipPaths: []string{"/healthz", "/static/"},
		Principal: func(r *http.Request) client.Actor {
			return client.Actor{ID: r.Header.Get("X-User"), Type: "user"}
		},
	}, mux)
	req, _ := http.NewRequest("POST", app.URL+"/items/42", strings.NewReader(`{"secret":"do not record"}`))
	req.Header.Set("X-User", "u-7")
	req.Header.Set("User-Agent", "test-agent/1")
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	get(t, app.URL+"/healthz")
	get(t, app.URL+"/static/app.js")
	if err := rec.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := audit.all()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1 (skipped paths are not recorded): %+v", len(evs), evs)
	}
	e := evs[0]
	if e.Type != "api.call" || e.Tenant != "acme" || e.Action != "POST /items/{id}" || e.Outcome != "success" || e.ID == "" || e.Time == "" {
		t.Errorf("event %+v", e)
	}
	if *e.Actor != (client.Actor{ID: "u-7", Type: "user", IP: "127.0.0.1", UserAgent: "test-agent/1"}) {
		t.Errorf("actor %+v", *e.Actor)
	}
	if *e.API != (client.API{Name: "inventory", Version: "v2"}) {
		t.Errorf("api %+v", e.API)
	}
	if e.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || e.SpanID != "00f067aa0ba902b7" {
		t.Errorf("trace %s span %s", e.TraceID, e.SpanID)
	}
	a := e.Attributes
	if a["http.route"] != "POST /items/{id}" || a["url.path"] != "/items/42" || a["http.request.method"] != "POST" || a["http.response.status_code"] != float64(201) {
		t.Errorf("attributes %v", a)
	}
	if d, ok := a["http.server.request.duration"].(float64); !ok || d <= 0 {
		t.Errorf("duration %v", a["http.server.request.duration"])
	}
	if e.Content != nil {
		t.Errorf("content %s recorded; request bodies must not be", e.Content)
	}
}

func TestHTTPMiddlewareKeepsFlushing(t *testing.T) {
	release := make(chan struct{})
	app, audit, rec := serveRecorded(t, client.HTTPOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release // the client must see the first event before the handler ends
		io.WriteString(w, "data: second\n\n")
	}))
	resp, err := http.Get(app.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "data: first\n" {
		t.Fatalf("first line %q", line)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: second\n\n" {
		t.Errorf("rest %q", rest)
	}
	rec.Flush(context.Background())
	if evs := audit.all(); len(evs) != 1 || evs[0].Attributes["http.response.body.size"] != float64(27) {
		t.Errorf("events %+v", evs)
	}
}

func TestHTTPMiddlewareRecordsPanics(t *testing.T) {
	for _, tc := range []struct {
		name      string
		handler   http.HandlerFunc
		status    float64
		errorType string
	}{
		{"before writing", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }, 500, "aborted"},
		// The client saw a 200 and then a cut connection: still a failure.
		{"after writing", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("handler bug")
		}, 200, "panic"},
	} {
		app, audit, rec := serveRecorded(t, client.HTTPOptions{}, tc.handler)
		if resp, err := http.Get(app.URL + "/boom"); err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Fatalf("%s: the panic did not reach net/http", tc.name)
			}
		}
		rec.Flush(context.Background())
		if evs := audit.all(); len(evs) != 1 || evs[0].Attributes["http.response.status_code"] != tc.status ||
			evs[0].Outcome != "failure" || evs[0].Attributes["error.type"] != tc.errorType {
			t.Errorf("%s: events %+v", tc.name, evs)
		}
	}
}

// TestHTTPMiddlewareHEAD: a HEAD request a GET pattern serves is recorded
// as a HEAD, with no body sent.
func TestHTTPMiddlewareHEAD(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	app, audit, rec := serveRecorded(t, client.HTTPOptions{}, mux)
	resp, err := http.Head(app.URL + "/items/7")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	rec.Flush(context.Background())
	evs := audit.all()
	if len(evs) != 1 || evs[0].Action != "HEAD /items/{id}" || evs[0].Attributes["http.response.body.size"] != float64(0) {
		t.Errorf("events %+v", evs)
	}
}

// TestHTTPMiddlewareSyncSendsTheHeaderAsWritten: holding the answer back
// until it is recorded does not send headers the handler set after
// writing the status, which net/http would not send either.
func TestHTTPMiddlewareSyncSendsTheHeaderAsWritten(t *testing.T) {
	for _, sync := range []bool{false, true} {
		app, _, _ := serveRecorded(t, client.HTTPOptions{Sync: sync}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Early", "yes")
			w.WriteHeader(http.StatusCreated)
			w.Header().Set("X-Late", "yes")
		}))
		resp, _ := get(t, app.URL+"/late")
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Early") != "yes" || resp.Header.Get("X-Late") != "" {
			t.Errorf("Sync %v: %d %v, want 201 with X-Early and without X-Late", sync, resp.StatusCode, resp.Header)
		}
	}
}

// TestHTTPMiddlewareSyncSendsTrailers: trailers, declared or set with
// http.TrailerPrefix after the body, arrive as they do without the
// middleware (gRPC carries its status in them).
func TestHTTPMiddlewareSyncSendsTrailers(t *testing.T) {
	for _, sync := range []bool{false, true} {
		app, _, _ := serveRecorded(t, client.HTTPOptions{Sync: sync}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Checksum")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc123")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
			w.Header().Set("X-Not-A-Trailer", "no")
		}))
		resp, err := http.Get(app.URL + "/t")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Trailer.Get("X-Checksum") != "abc123" || resp.Trailer.Get("X-Late") != "late" ||
			resp.Header.Get("X-Not-A-Trailer") != "" || resp.Trailer.Get("X-Not-A-Trailer") != "" {
			t.Errorf("Sync %v: header %v, trailer %v; want X-Checksum and X-Late as trailers only", sync, resp.Header, resp.Trailer)
		}
	}
}

func TestHTTPMiddlewareSyncFailsClosed(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Handler", "yes")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "the answer")
	})
	var lost []string
	audit := newFakeServer(t)
	opts := fastRetry
	opts.OnError = func(ids []string, err error) { lost = append(lost, ids...) }
	rec := newRecorder(t, audit, opts)
	app := httptest.NewServer(client.HTTPMiddleware(rec, client.HTTPOptions{Sync: true})(handler))
	defer app.Close()

	// Recorded: the answer arrives unchanged, and only after the event is stored.
	resp, body := get(t, app.URL+"/ok")
	if resp.StatusCode != http.StatusAccepted || body != "the answer" || resp.Header.Get("X-Handler") != "yes" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if evs := audit.all(); len(evs) != 1 || evs[0].Attributes["http.response.status_code"] != float64(202) {
		t.Fatalf("when the answer arrived the log had %+v", evs)
	}

	// Not recordable: the caller gets 503, never the handler's answer.
	audit.fault = func(n int, evs []client.Event, w http.ResponseWriter, store func() client.Receipt) bool {
		writeError(w, http.StatusForbidden, "forbidden")
		return true
	}
	resp, body = get(t, app.URL+"/refused")
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(body, "the answer") || resp.Header.Get("X-Handler") != "" {
		t.Fatalf("got %d %q %v, want 503 without the handler's answer", resp.StatusCode, body, resp.Header)
	}
	if len(lost) != 1 || rec.Stats().Failed != 1 {
		t.Errorf("OnError saw %v, stats %+v", lost, rec.Stats())
	}
}

func TestHTTPMiddlewareKeepsHijacking(t *testing.T) {
	app, audit, rec := serveRecorded(t, client.HTTPOptions{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		bw.Flush()
	}))
	conn, err := net.Dial("tcp", strings.TrimPrefix(app.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answer %v, %v", resp, err)
	}
	// The connection closes before the handler returns and the event is
	// recorded, so wait for it.
	for rec.Stats().Sent == 0 {
		rec.Flush(context.Background())
		time.Sleep(time.Millisecond)
	}
	if evs := audit.all(); len(evs) != 1 || evs[0].Attributes["http.response.status_code"] != float64(101) {
		t.Errorf("events %+v", evs)
	}
}
