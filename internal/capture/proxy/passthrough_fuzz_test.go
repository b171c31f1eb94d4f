package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/authz/authztest"
	"github.com/aitrail/aitrail/internal/capture/proxy"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/crypto/cryptotest"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpapi"
	"github.com/aitrail/aitrail/internal/ingest"
)

// FuzzPassThrough: whatever the caller sends and whatever the provider
// answers, the proxy either refuses the call (then the provider saw
// nothing), or passes the provider's status and bytes through unchanged
// and records a request and an outcome event, both canonical records.
func FuzzPassThrough(f *testing.F) {
	var (
		mu       sync.Mutex
		answer   []byte
		status   int
		stream   bool
		upCalled atomic.Int32
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upCalled.Add(1)
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		a, s, st := answer, status, stream
		mu.Unlock()
		if st {
			w.Header().Set("Content-Type", "text/event-stream")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(s)
		// In two writes, flushed, as a stream comes.
		h := len(a) / 2
		w.Write(a[:h])
		w.(http.Flusher).Flush()
		w.Write(a[h:])
	}))
	defer up.Close()
	led := &fakeLedger{}
	kek, err := crypto.NewLocalKEK("", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	auth := authz.NewAuthenticator(&authztest.MemTokenStore{})
	if _, _, err := auth.Bootstrap(context.Background(), rootToken); err != nil {
		f.Fatal(err)
	}
	pipeline := &ingest.Pipeline{Ledger: led, Sealer: crypto.NewKeyring(kek, &cryptotest.MemKeyStore{})}
	api := &httpapi.Server{Ingest: pipeline, Auth: auth, MaxBodyBytes: 1 << 20}
	upstream, _ := url.Parse(up.URL)
	c := proxy.Config{Timeout: 10 * time.Second, MaxBodyBytes: 1 << 20, Ingest: pipeline, WriteError: api.WriteError}
	c.Upstream = &url.URL{Scheme: upstream.Scheme, Host: upstream.Host, Path: "/v1"}
	if api.OpenAI, err = proxy.OpenAI(c); err != nil {
		f.Fatal(err)
	}
	c.Upstream = upstream
	if api.Anthropic, err = proxy.Anthropic(c); err != nil {
		f.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()

	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), []byte(`{"id":"c","model":"m","choices":[{"finish_reason":"stop"}]}`), uint16(200), false, uint8(0))
	f.Add([]byte(`{"model":"m","stream":true,"messages":[]}`), []byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"), uint16(200), true, uint8(0))
	f.Add([]byte(`{"model":"claude","max_tokens":5,"stream":true,"messages":[]}`), []byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), uint16(200), true, uint8(2))
	f.Add([]byte(`{"model":"m","input":"hi"}`), []byte(`{"error":{"type":"x"}}`), uint16(429), false, uint8(1))
	f.Add([]byte(`not json`), []byte(``), uint16(200), false, uint8(0))
	paths := []string{"/openai/v1/chat/completions", "/openai/v1/responses", "/anthropic/v1/messages"}
	f.Fuzz(func(t *testing.T, req, ans []byte, st uint16, isStream bool, which uint8) {
		s := int(st)%500 + 100
		if s < 200 || s == 204 || s == 304 {
			s = 200 // no body allowed
		}
		mu.Lock()
		answer, status, stream = ans, s, isStream
		mu.Unlock()
		led.mu.Lock()
		led.records = nil
		led.mu.Unlock()
		upCalled.Store(0)
		path := paths[int(which)%len(paths)]
		hr, _ := http.NewRequest("POST", srv.URL+path, bytes.NewReader(req))
		hr.Header.Set("Authorization", "Bearer "+rootToken)
		hr.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if upCalled.Load() == 0 {
			if resp.StatusCode < 400 {
				t.Fatalf("%s: status %d without calling the provider", path, resp.StatusCode)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: reading the answer: %v", path, err)
		}
		if resp.StatusCode != s || !bytes.Equal(got, ans) {
			t.Fatalf("%s: provider answered %d %q; caller got %d %q", path, s, ans, resp.StatusCode, got)
		}
		// The request and the outcome event (appended in the background).
		var recs [][]byte
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			led.mu.Lock()
			recs = append(recs[:0], led.records...)
			led.mu.Unlock()
			if len(recs) >= 2 || time.Now().After(deadline) {
				break
			}
		}
		if len(recs) != 2 {
			t.Fatalf("%s: %d records for a forwarded call, want 2", path, len(recs))
		}
		for _, b := range recs {
			r, err := event.ParseRecord(b)
			if err != nil {
				t.Fatalf("%s: record %s: %v", path, b, err)
			}
			if strings.HasPrefix(r.Type, "") && r.Tenant == "" {
				t.Fatalf("record without a tenant: %s", b)
			}
		}
	})
}
