package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/fakeprovider"
	"github.com/valyala/fasthttp"
)

// processCPU returns the CPU time (user and system) process pid has used,
// from /proc: the server's CPU per call is steadier than latency on a
// shared machine, where the clients and the fake provider compete with the
// server for the same cores.
func processCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after it. utime and stime are fields 14 and 15, in clock ticks.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is the unit of CPU times in /proc (USER_HZ), 100 on Linux.
const clockTicks = 100

// BenchmarkProxyOverhead measures what the OpenAI proxy adds to a call: the
// same chat completion is sent straight to a fake provider and through a
// real server in front of it, by 32 concurrent clients, b.N calls each way.
// It reports the latency percentiles of both and their difference, and the
// same for 1 client and for the time to the first chunk of a stream (1
// client).
//
// The fake provider answers at once, so with 32 clients the calls come as
// fast as the two cores of the machine can serve clients, provider and
// proxy together: the added latency is then mostly queueing for the CPU.
// A model takes time to think, and not the same time for every call; so
// the 32 clients are run again against a provider that answers each call
// after a think time spread evenly over 5-15 ms, and then over 50-150 ms,
// where the added latency is what one of 32 concurrent calls waits for.
// (Call i of a run thinks for the same time both ways. With one think time
// for all, the clients would move in step: each burst of 32 calls would
// reach the server at once.) For reference it also sends the calls through
// a reverse proxy that records nothing (startBareProxy), which shows what
// forwarding alone adds on the machine; times the durable append the proxy
// waits for, as POST /v1/events of one event by the same clients; and
// reports the CPU time per call of the server and the bare proxy, which,
// unlike latency, does not depend on what else the machine's cores are
// busy with. Run it with
// scripts/bench-proxy.sh, or:
//
//	go test ./cmd/aitrail -run '^$' -bench ProxyOverhead -benchtime 20000x
func BenchmarkProxyOverhead(b *testing.B) {
	up := fakeprovider.NewQuiet()
	defer up.Close()
	s := startServerEnv(b, b.TempDir(), []string{"AITRAIL_ADMIN_TOKEN=" + adminToken, "AITRAIL_OPENAI_API_KEY=sk-bench"},
		"--openai-upstream", up.URL+"/v1")
	defer s.stop()
	direct, proxied := up.URL+"/v1/chat/completions", s.url+"/openai/v1/chat/completions"
	bare, barePid := startBareProxy(b, up.URL)
	bare += "/v1/chat/completions"
	body := []byte(`{"model":"gpt-fake","temperature":0.2,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}]}`)
	stream := []byte(`{"model":"gpt-fake","stream":true,"messages":[{"role":"user","content":"Say hello."}]}`)

	ingestURL := s.url + "/v1/events"
	event := []byte(`{"type":"ai.inference","action":"chat.completions.create","model":{"provider":"openai","name":"gpt-fake"},"content":{"messages":[{"role":"user","content":"Say hello."}]}}`)
	// Whole answers are fetched with fasthttp's client, which costs the
	// benchmark's process about half the CPU per call of net/http's (the
	// clients share the two cores with the server they measure); streams
	// with net/http's, which hands over the first chunk as it comes.
	fast := &fasthttp.Client{MaxConnsPerHost: 64}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	// call sends one request and returns the time to the end of the answer
	// and, for a stream, to its first body byte.
	call := func(url string, body []byte, think time.Duration, first bool) time.Duration {
		if !first {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url)
			req.Header.SetMethod(http.MethodPost)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			req.Header.SetContentType("application/json")
			if think > 0 {
				req.Header.Set(fakeprovider.HeaderDelay, think.String())
			}
			req.SetBodyRaw(body)
			start := time.Now()
			if err := fast.Do(req, resp); err != nil || resp.StatusCode() != http.StatusOK {
				b.Fatalf("%s: %d %v", url, resp.StatusCode(), err)
			}
			return time.Since(start)
		}
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		if think > 0 {
			req.Header.Set(fakeprovider.HeaderDelay, think.String())
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 32<<10)
		n, err := resp.Body.Read(buf)
		took := time.Since(start)
		if n == 0 && err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d %v", url, resp.StatusCode, err)
		}
		io.Copy(io.Discard, resp.Body)
		return took
	}
	// thinkRun makes n calls from clients goroutines to a provider that
	// answers call i after think × (0.5 + the fractional part of i×φ), so
	// spread evenly over think/2 to 3×think/2, and returns the sorted
	// latencies: to the first byte if first, else to the end.
	thinkRun := func(url string, body []byte, n, clients int, first bool, think time.Duration) []time.Duration {
		lat := make([]time.Duration, n)
		var next atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
					_, frac := math.Modf(float64(i) * math.Phi)
					lat[i] = call(url, body, time.Duration(float64(think)*(0.5+frac)), first)
				}
			})
		}
		wg.Wait()
		slices.Sort(lat)
		return lat
	}
	run := func(url string, body []byte, n, clients int, first bool) []time.Duration {
		return thinkRun(url, body, n, clients, first, 0)
	}
	pct := func(lat []time.Duration, p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	const clients = 32
	// Warm up connections and caches; and the server's heap, which on a
	// fresh server grows for its first seconds of load to the size the
	// garbage collector settles at (a few hundred MiB at GOGC 400): the
	// pages it touches for the first time cost the kernel's page faults,
	// a quarter more server CPU per call in a run of 20,000 calls right
	// after start. The figures are those of a server that has been running.
	run(direct, body, 2000, clients, false)
	run(bare, body, 2000, clients, false)
	run(proxied, body, 20000, clients, false)
	b.ResetTimer()
	start := time.Now()
	d := run(direct, body, b.N, clients, false)
	directTook := time.Since(start)
	start = time.Now()
	bareCPU0 := processCPU(b, barePid)
	bp := run(bare, body, b.N, clients, false)
	bareTook := time.Since(start)
	bareCPU := processCPU(b, barePid) - bareCPU0
	start = time.Now()
	cpu0, own0 := processCPU(b, s.cmd.Process.Pid), processCPU(b, os.Getpid())
	p := run(proxied, body, b.N, clients, false)
	proxiedTook := time.Since(start)
	cpu1, own1 := processCPU(b, s.cmd.Process.Pid), processCPU(b, os.Getpid())
	ing := run(ingestURL, event, b.N, clients, false)
	cpu2 := processCPU(b, s.cmd.Process.Pid)
	d1 := run(direct, body, max(b.N/10, 100), 1, false)
	p1 := run(proxied, body, max(b.N/10, 100), 1, false)
	ds := run(direct, stream, max(b.N/10, 100), 1, true)
	ps := run(proxied, stream, max(b.N/10, 100), 1, true)
	thinks := []time.Duration{10 * time.Millisecond, 100 * time.Millisecond}
	var dt, pt [][]time.Duration
	for _, think := range thinks {
		// As many calls as take about 3 s each way at 32 clients.
		n := max(min(b.N/2, int(3*time.Second/think)*clients), 100)
		dt = append(dt, thinkRun(direct, body, n, clients, false, think))
		pt = append(pt, thinkRun(proxied, body, n, clients, false, think))
	}
	b.StopTimer()

	b.ReportMetric(pct(p, .5)-pct(d, .5), "added-p50-ms")
	b.ReportMetric(pct(p, .99)-pct(d, .99), "added-p99-ms")
	b.ReportMetric(pct(ps, .5)-pct(ds, .5), "added-ttfc-p50-ms")
	b.ReportMetric(pct(ps, .99)-pct(ds, .99), "added-ttfc-p99-ms")
	b.ReportMetric(pct(bp, .5)-pct(d, .5), "bare-added-p50-ms")
	b.ReportMetric(pct(bp, .99)-pct(d, .99), "bare-added-p99-ms")
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "server-cpu-us/call")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("non-streaming, %d clients, %d calls each way:\n", clients, b.N)
	fmt.Printf("  direct   p50 %.2f ms  p99 %.2f ms  %.0f calls/s\n", pct(d, .5), pct(d, .99), float64(b.N)/directTook.Seconds())
	fmt.Printf("  proxied  p50 %.2f ms  p99 %.2f ms  %.0f calls/s\n", pct(p, .5), pct(p, .99), float64(b.N)/proxiedTook.Seconds())
	fmt.Printf("  added    p50 %.2f ms  p99 %.2f ms\n", pct(p, .5)-pct(d, .5), pct(p, .99)-pct(d, .99))
	fmt.Printf("  reference: a bare reverse proxy (net/http/httputil, recording nothing, own process): p50 %.2f ms  p99 %.2f ms  %.0f calls/s; added p50 %.2f ms  p99 %.2f ms\n",
		pct(bp, .5), pct(bp, .99), float64(b.N)/bareTook.Seconds(), pct(bp, .5)-pct(d, .5), pct(bp, .99)-pct(d, .99))
	// CPU times come in 10 ms ticks: per call they mean something only
	// over many calls (the benchmark's first, 1-call round prints none).
	if b.N >= 1000 {
		fmt.Printf("  server CPU per proxied call: %.0f µs (clients and fake provider: %.0f µs; the bare reverse proxy: %.0f µs)\n",
			float64((cpu1-cpu0).Microseconds())/float64(b.N), float64((own1-own0).Microseconds())/float64(b.N), float64(bareCPU.Microseconds())/float64(b.N))
		fmt.Printf("  reference: POST /v1/events of one event with content, same clients: p50 %.2f ms  p99 %.2f ms, server CPU %.0f µs per request\n",
			pct(ing, .5), pct(ing, .99), float64((cpu2-cpu1).Microseconds())/float64(b.N))
	} else {
		fmt.Printf("  reference: POST /v1/events of one event with content, same clients: p50 %.2f ms  p99 %.2f ms\n", pct(ing, .5), pct(ing, .99))
	}
	fmt.Printf("non-streaming, 1 client, %d calls each way:\n", len(d1))
	fmt.Printf("  direct   p50 %.2f ms  p99 %.2f ms\n", pct(d1, .5), pct(d1, .99))
	fmt.Printf("  proxied  p50 %.2f ms  p99 %.2f ms\n", pct(p1, .5), pct(p1, .99))
	fmt.Printf("  added    p50 %.2f ms  p99 %.2f ms\n", pct(p1, .5)-pct(d1, .5), pct(p1, .99)-pct(d1, .99))
	fmt.Printf("streaming, 1 client, %d streams each way, time to first chunk:\n", len(ds))
	fmt.Printf("  direct   p50 %.2f ms  p99 %.2f ms\n", pct(ds, .5), pct(ds, .99))
	fmt.Printf("  proxied  p50 %.2f ms  p99 %.2f ms\n", pct(ps, .5), pct(ps, .99))
	fmt.Printf("  added    p50 %.2f ms  p99 %.2f ms\n", pct(ps, .5)-pct(ds, .5), pct(ps, .99)-pct(ds, .99))
	for i, think := range thinks {
		d, p := dt[i], pt[i]
		fmt.Printf("non-streaming, %d clients, provider thinking %s-%s, %d calls each way:\n", clients, think/2, think*3/2, len(d))
		fmt.Printf("  direct   p50 %.2f ms  p99 %.2f ms\n", pct(d, .5), pct(d, .99))
		fmt.Printf("  proxied  p50 %.2f ms  p99 %.2f ms\n", pct(p, .5), pct(p, .99))
		fmt.Printf("  added    p50 %.2f ms  p99 %.2f ms\n", pct(p, .5)-pct(d, .5), pct(p, .99)-pct(d, .99))
		unit := "-think" + strings.TrimSuffix(think.String(), "ms") + "ms"
		b.ReportMetric(pct(p, .5)-pct(d, .5), "added-p50"+unit)
		b.ReportMetric(pct(p, .99)-pct(d, .99), "added-p99"+unit)
	}
}

// The test binary runs as a bare reverse proxy with this variable set: see
// startBareProxy.
const bareProxyEnv = "AITRAIL_TEST_AS_BARE_PROXY"

// runBareProxy serves addr as net/http/httputil's reverse proxy to
// upstream, recording nothing.
func runBareProxy(addr, upstream string) int {
	u, err := url.Parse(upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256 // as the recording proxy's
	rp.Transport = t
	if err := http.ListenAndServe(addr, rp); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 1
}

// startBareProxy runs the reference for the recording proxy: a reverse
// proxy that records nothing (net/http/httputil's, as the recording proxy
// is built on it), in a process of its own, in front of upstream. It
// returns its URL and process id.
func startBareProxy(b *testing.B, upstream string) (string, int) {
	addr := freeAddr(b)
	cmd := exec.Command(os.Args[0], addr, upstream)
	cmd.Env = append(os.Environ(), bareProxyEnv+"=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr, cmd.Process.Pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("the bare proxy did not start")
	return "", 0
}
