package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aitrail/aitrail/client"
	"github.com/aitrail/aitrail/internal/capture/otlp"
	"github.com/google/uuid"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// runBench drives a running server with concurrent clients and reports
// durable events per second and acknowledgement latency percentiles.
func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "server URL")
	token := tokenFlag(fs, "`token` with the ingest role (default $AITRAIL_TOKEN)")
	clients := fs.Int("clients", 8, "concurrent clients")
	batch := fs.Int("batch", 100, "events per request")
	size := fs.Int("size", 1024, "approximate size of one event in bytes")
	content := fs.Bool("content", false, "put the event's payload in content (encrypted) instead of attributes")
	actor := fs.Bool("actor", true, "give each event one of 1,000 user actors (the server pseudonymises them)")
	actorType := fs.String("actor-type", "user", "type of those actors: user (pseudonymised) or service (stored as sent)")
	otlp := fs.Bool("otlp", false, "send each batch as GenAI spans in one OTLP/HTTP protobuf request to /otlp/v1/traces")
	randomIDs := fs.Bool("random-ids", false, "give every event an id in no order (a UUIDv4), as OTLP span ids and many producers' ids are, instead of time-ordered UUIDv7s")
	duration := fs.Duration("duration", 10*time.Second, "how long to run")
	rate := fs.Int("rate", 0, "target requests per second over all clients (0 = as fast as possible)")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	watchLag := fs.Duration("watch-lag", 0, "read the server's /metrics this often during the run and report the query index's largest lag behind the log, and how long after the run it took to catch up (0 = don't)")
	tf := addTLSFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *token == "" {
		return usageError{"--token (or $AITRAIL_TOKEN) is required"}
	}
	if *clients < 1 || *batch < 1 || *size < 64 || *duration <= 0 || *watchLag < 0 || *rate < 0 {
		return usageError{"--clients and --batch must be ≥ 1, --size ≥ 64, --duration > 0, --watch-lag and --rate ≥ 0"}
	}
	if *randomIDs && *otlp {
		return usageError{"--random-ids is for NDJSON events: the spans --otlp sends have ids in no order already"}
	}
	if *actorType != "user" && *actorType != "service" {
		return usageError{"--actor-type must be user or service"}
	}
	if os.Getenv("GOGC") == "" {
		// The load generator holds little; collecting less often leaves
		// more of the machine to the server it measures.
		debug.SetGCPercent(400)
	}
	tc, err := tf.config()
	if err != nil {
		return err
	}
	p := &poster{
		c: &fasthttp.Client{
			MaxConnsPerHost: *clients * 2, TLSConfig: tc, NoDefaultUserAgentHeader: true,
			ReadTimeout: time.Minute, WriteTimeout: time.Minute,
		},
		url: strings.TrimRight(*url, "/"), auth: "Bearer " + *token,
	}
	bodies := make([]func(int) []byte, *clients)
	for i := range bodies {
		bodies[i] = benchBodies(i, *batch, *size, *content, *actor, *actorType, *randomIDs)
	}
	send := func(i, seq int) error {
		return p.post("/v1/events", "application/x-ndjson", bodies[i](seq), checkReceipt)
	}
	if *otlp {
		bodies := make([]func() []byte, *clients)
		for i := range bodies {
			bodies[i] = otlpBodies(*batch, *size, *content)
		}
		send = func(i, _ int) error {
			return p.post("/otlp/v1/traces", "application/x-protobuf", bodies[i](), checkOTLP)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var events, requests, pushbacks, failures atomic.Int64
	lat := make([][]time.Duration, *clients)
	var interval time.Duration
	if *rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(*clients) / float64(*rate))
	}
	what := "events"
	if *otlp {
		what = "OTLP spans"
	}
	fmt.Fprintf(stderr, "bench: %d clients × %d %s of ~%d bytes for %s against %s\n", *clients, *batch, what, *size, *duration, *url)
	var lag *lagWatch
	if *watchLag > 0 {
		lag = &lagWatch{c: &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}, url: p.url + "/metrics"}
		go lag.watch(ctx, *watchLag)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			next := time.Now()
			for seq := 0; ctx.Err() == nil; seq++ {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(d):
						}
					}
					next = next.Add(interval)
				}
				t0 := time.Now()
				err := send(i, seq)
				d := time.Since(t0)
				var ae *client.APIError
				switch {
				case err == nil:
					events.Add(int64(*batch))
					requests.Add(1)
					lat[i] = append(lat[i], d)
				case errors.As(err, &ae) && isPushback(ae):
					pushbacks.Add(1)
					time.Sleep(10 * time.Millisecond)
				default:
					if failures.Add(1) <= 3 {
						fmt.Fprintf(stderr, "bench: %v\n", err)
					}
					time.Sleep(10 * time.Millisecond) // not a tight loop against a failing server
				}
			}
		}(i)
	}
	wg.Wait()
	took := time.Since(start)
	var caughtUp time.Duration
	if lag != nil {
		fmt.Fprintf(stderr, "bench: waiting for the query index to catch up\n")
		if caughtUp, err = lag.catchUp(); err != nil {
			return err
		}
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	res := map[string]any{
		"clients": *clients, "batch": *batch, "otlp": *otlp, "event_bytes": *size, "content": *content, "seconds": took.Seconds(),
		"events": events.Load(), "requests": requests.Load(), "events_per_sec": float64(events.Load()) / took.Seconds(),
		"p50_ms": pct(.50), "p90_ms": pct(.90), "p99_ms": pct(.99), "max_ms": pct(1),
		"pushbacks": pushbacks.Load(), "failures": failures.Load(),
	}
	if lag != nil {
		res["max_index_lag"], res["index_caught_up_s"] = lag.max.Load(), caughtUp.Seconds()
	}
	if *jsonOut {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%.0f events/s (%d events in %d requests, %.1fs); ack latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f; %d pushbacks, %d failures",
			res["events_per_sec"], events.Load(), requests.Load(), took.Seconds(), pct(.5), pct(.9), pct(.99), pct(1), pushbacks.Load(), failures.Load())
		if lag != nil {
			fmt.Fprintf(stdout, "; index lag up to %d records, caught up %.2f s after the run", lag.max.Load(), caughtUp.Seconds())
		}
		fmt.Fprintln(stdout)
	}
	if failures.Load() > 0 {
		return exitError{1, "bench: some requests failed"}
	}
	return nil
}

// isPushback reports whether an answer asks the client to slow down (429,
// or a 503 pushback), which the load generator waits out and retries.
// Other 503s (a full disk, a stopped log) are failures: the server is not
// measuring load.
func isPushback(ae *client.APIError) bool {
	return ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusServiceUnavailable && ae.Code == "pushback"
}

// otlpError reads the code and message of an OTLP error answer in
// protobuf, a google.rpc.Status whose ErrorInfo detail names the code.
func otlpError(body []byte) (code, message string) {
	var st statuspb.Status
	if proto.Unmarshal(body, &st) != nil {
		return "", ""
	}
	return otlp.ErrorCode(&st), st.GetMessage()
}

// lagWatch follows the query index's lag behind the log
// (aitrail_follower_lag_records{follower="index"} in /metrics) from inside
// the load generator: a script that started curl ten times a second to do
// it took 4-8 % of the machine from the server it measured.
type lagWatch struct {
	c   *http.Client
	url string
	max atomic.Int64
}

// watch reads the lag every interval until ctx is done, keeping the
// largest.
func (w *lagWatch) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := w.read(); err == nil && n > w.max.Load() {
			w.max.Store(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// catchUp waits until the lag is 0 and returns how long that took. It gives
// up after a minute.
func (w *lagWatch) catchUp() (time.Duration, error) {
	start := time.Now()
	for {
		n, err := w.read()
		switch {
		case err != nil:
			return 0, err
		case n == 0:
			return time.Since(start), nil
		case time.Since(start) > time.Minute:
			return 0, fmt.Errorf("bench: the query index is still %d records behind a minute after the run", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lagMetric and lagFollower name the gauge in /metrics that holds the lag.
const (
	lagMetric   = "aitrail_follower_lag_records"
	lagFollower = "index"
)

func (w *lagWatch) read() (int64, error) {
	resp, err := w.c.Get(w.url)
	if err != nil {
		return 0, fmt.Errorf("bench: reading the index lag: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("bench: reading the index lag: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("bench: reading the index lag: %w", err)
	}
	for _, m := range families[lagMetric].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "follower" && l.GetValue() == lagFollower {
				return int64(m.GetGauge().GetValue()), nil
			}
		}
	}
	return 0, errors.New("bench: the server's /metrics has no index lag (is it aitrail?)")
}

// poster sends the load generator's requests with fasthttp's client,
// which takes about a third of the CPU per request that net/http's client
// and the SDK's receipt decoding take (18 against 49 µs, one event per
// request): the load generator shares the machine with the server it
// measures.
type poster struct {
	c         *fasthttp.Client
	url, auth string
}

// post sends body to path and hands a 200 answer to check. Any other
// answer is a *client.APIError, so that pushback is told apart from
// failure.
func (p *poster) post(path, contentType string, body []byte, check func([]byte) error) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(p.url + path)
	req.Header.SetMethod(http.MethodPost)
	req.Header.Set("Authorization", p.auth)
	req.Header.SetContentType(contentType)
	req.SetBodyRaw(body)
	if err := p.c.Do(req, resp); err != nil {
		return err
	}
	if resp.StatusCode() != http.StatusOK {
		ae := &client.APIError{Status: resp.StatusCode(), Code: "http_error", Message: http.StatusText(resp.StatusCode())}
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(resp.Body(), &eb) == nil && eb.Error.Code != "" {
			ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
		} else if code, msg := otlpError(resp.Body()); code != "" {
			ae.Code, ae.Message = code, msg
		}
		return ae
	}
	return check(resp.Body())
}

// checkReceipt checks that an answer to an append is a receipt: it names
// the checkpoint that covers the events. (The SDK's tests check receipts
// whole; decoding each here would cost the load generator more than the
// rest of the request.)
func checkReceipt(body []byte) error {
	if !bytes.Contains(body, []byte(`"checkpoint":"`)) {
		return fmt.Errorf("the answer is not a receipt: %.200q", body)
	}
	return nil
}

// benchBodies returns a function that gives client's requests, one NDJSON
// body of n events of about size bytes per call. The body is built once;
// each call only writes a new UUIDv7 into every event id (a new UUIDv4
// into each if randomIDs) and the next actor numbers, so that the load
// generator spends its share of the machine on sending, not on
// formatting. The returned slice is reused.
func benchBodies(client, n, size int, content, actor bool, actorType string, randomIDs bool) func(seq int) []byte {
	var b bytes.Buffer
	var runAt, actorAt []int
	for j := 0; j < n; j++ {
		b.WriteString(`{"id":"bench-`)
		runAt = append(runAt, b.Len())
		fmt.Fprintf(&b, `%s-%d-%d","type":"ai.inference","tenant":"bench",`, uuid.Nil, client, j)
		if actor {
			b.WriteString(`"actor":{"id":"user-`)
			actorAt = append(actorAt, b.Len())
			fmt.Fprintf(&b, `000","type":%q},`, actorType)
		}
		b.WriteString(`"action":"chat.completions.create","outcome":"success","model":{"provider":"openai","name":"gpt-4o","version":"2024-08-06"},`)
		pad := max(0, size-b.Len()%size-60)
		if content {
			fmt.Fprintf(&b, `"content":{"prompt":"%s"}}`+"\n", strings.Repeat("x", pad))
		} else {
			fmt.Fprintf(&b, `"attributes":{"gen_ai.usage.input_tokens":%d,"note":"%s"}}`+"\n", j, strings.Repeat("x", pad))
		}
	}
	body := b.Bytes()
	return func(seq int) []byte {
		// Time-ordered, like the ids the SDK and the server make, one per
		// request; or one in no order per event.
		var run string
		if !randomIDs {
			run = uuid.Must(uuid.NewV7()).String()
		}
		for j, at := range runAt {
			if randomIDs {
				run = uuid.NewString()
			}
			copy(body[at:], run)
			if actor {
				// One of 1,000 users, in turn.
				u := (seq*n + j) % 1000
				body[actorAt[j]], body[actorAt[j]+1], body[actorAt[j]+2] = byte('0'+u/100), byte('0'+u/10%10), byte('0'+u%10)
			}
		}
		return body
	}
}

// runBenchDisk is the reference for ingest benchmarks: the rate at which one
// writer can append records to one file with group-committed fsync, with
// nothing else in the way.
func runBenchDisk(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench-disk", stderr)
	dir := fs.String("dir", ".", "directory on the disk to measure")
	size := fs.Int("size", 1024, "record size in bytes")
	batch := fs.Int("batch", 800, "records per fsync")
	duration := fs.Duration("duration", 5*time.Second, "how long to run")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	f, err := os.CreateTemp(*dir, "aitrail-bench-disk-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := bytes.Repeat([]byte{'r'}, *size**batch)
	var records, syncs int64
	start := time.Now()
	for time.Since(start) < *duration {
		if _, err := f.Write(buf); err != nil {
			return err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return err
		}
		records += int64(*batch)
		syncs++
	}
	took := time.Since(start)
	rps := float64(records) / took.Seconds()
	if *jsonOut {
		return json.NewEncoder(stdout).Encode(map[string]any{"records_per_sec": rps, "fsyncs_per_sec": float64(syncs) / took.Seconds(),
			"mb_per_sec": rps * float64(*size) / 1e6, "record_bytes": *size, "batch": *batch, "dir": filepath.Base(*dir)})
	}
	fmt.Fprintf(stdout, "%.0f records/s (%.1f MB/s, %.0f fsyncs/s) appending %d-byte records %d per fsync\n",
		rps, rps*float64(*size)/1e6, float64(syncs)/took.Seconds(), *size, *batch)
	return nil
}

// benchReceipt is what bench-http answers: the size and shape of a real
// receipt for one event.
const benchReceipt = `{"checkpoint":"aitrail.local/log\n1000000\n/KGvItx0md4pue94rQsauBizIq3ANF4LpGpc7f6WtUE=\n\n` +
	`— aitrail.local/log n4MYRl+1ZxjmcEn2jG2Yhs7cNPGhNeVDeTYmz99hBWZZzyatmTQQ7OW6Zw1v+19QeXiDP/xNa44i2qqXuYQxZImvdAs=\n",` +
	`"results":[{"id":"bench-0-0000000000","index":999999}]}`

// benchHTTPMaxBody bounds what bench-http reads of a request, as the
// server's limits do.
const benchHTTPMaxBody = 16 << 20

// runBenchHTTP serves the reference for single-event ingest: the same
// requests bench sends, their bodies read and answered with a receipt by
// net/http alone, nothing checked, stored or signed. bench against it
// measures the rate the machine's HTTP path (the load generator, loopback
// TCP and net/http) allows before aitrail does any work.
func runBenchHTTP(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench-http", stderr)
	addr := fs.String("addr", "127.0.0.1:8099", "address to listen on")
	if err := parse(fs, args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	receipt := []byte(benchReceipt)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, benchHTTPMaxBody)); err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		w.Write(receipt)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ready\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(stdout, "bench-http: answering POST /v1/events on http://%s until stopped\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
