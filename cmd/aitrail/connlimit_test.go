package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestConnectionLimit: with limits.max_connections open, a further client
// waits to be accepted instead of being served, and is served as soon as
// one of them closes; /metrics shows the limit. The operational endpoints
// on ops_addr are answered meanwhile, and nothing else is served there.
func TestConnectionLimit(t *testing.T) {
	const limit = 6
	ops := "http://" + freeAddr(t)
	s := startServer(t, t.TempDir(), "--config", writeConfig(t, "limits:\n  max_connections: 6\n"),
		"--ops-addr", strings.TrimPrefix(ops, "http://"))
	http.DefaultTransport.(*http.Transport).CloseIdleConnections() // the harness's own
	get := func(tr *http.Transport, timeout time.Duration) error {
		resp, err := (&http.Client{Transport: tr, Timeout: timeout}).Get(s.url + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body) // so that the connection stays open
			resp.Body.Close()
		}
		return err
	}
	// Each transport keeps its connection open, idle, once its request is
	// answered.
	var held []*http.Transport
	for i := range limit {
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		if err := get(tr, 10*time.Second); err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, limit, err)
		}
		held = append(held, tr)
	}
	if err := get(&http.Transport{}, time.Second); err == nil {
		t.Fatalf("a connection past the limit of %d was served\n%s", limit, s.stderr.String())
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/events": 404, "/log/checkpoint": 404} {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(ops + path)
		if err != nil {
			t.Fatalf("%s on ops_addr while the API's connections are taken: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || path == "/metrics" && !strings.Contains(string(body), "aitrail_http_connections 6") {
			t.Errorf("%s on ops_addr: %d %.300s, want %d", path, resp.StatusCode, body, want)
		}
	}
	held[0].CloseIdleConnections()
	late := &http.Transport{}
	t.Cleanup(late.CloseIdleConnections)
	if err := get(late, 10*time.Second); err != nil {
		t.Fatalf("no connection was served after one of %d closed: %v", limit, err)
	}
	for _, tr := range held {
		tr.CloseIdleConnections()
	}
	if v := s.metric("aitrail_http_max_connections"); v != limit {
		t.Errorf("aitrail_http_max_connections = %v, want %d", v, limit)
	}
	if v := s.metric("aitrail_http_connections"); v < 1 || v > limit {
		t.Errorf("aitrail_http_connections = %v, want 1 to %d", v, limit)
	}
}
