package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentIngestKeepsEachContent: requests arriving together, of
// different sizes (the server reads bodies into buffers it reuses), each
// keep their own content: every event's content reads back as sent.
func TestConcurrentIngestKeepsEachContent(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.stop()
	const workers, requests = 8, 12
	prompt := func(id string) string { return strings.Repeat(id+" ", 10+len(id)%7*5) }
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ids []string
	for w := range workers {
		wg.Go(func() {
			for r := range requests {
				var body bytes.Buffer
				var sent []string
				for j := range 5 + (w+r)%11 { // bodies of different sizes
					id := fmt.Sprintf("c-%d-%d-%d", w, r, j)
					json.NewEncoder(&body).Encode(map[string]any{"id": id, "type": "ai.inference",
						"actor": map[string]any{"id": fmt.Sprintf("user-%d", w)}, "content": map[string]any{"prompt": prompt(id)}})
					sent = append(sent, id)
				}
				if _, err := postNDJSON(http.DefaultClient, s.url, &body); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ids = append(ids, sent...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, id := range ids {
		var ev struct {
			Content struct {
				Prompt string `json:"prompt"`
			} `json:"decrypted_content"`
		}
		s.getJSON("/v1/events/"+id, &ev)
		if ev.Content.Prompt != prompt(id) {
			t.Fatalf("event %s: content reads back as %.60q..., not its own", id, ev.Content.Prompt)
		}
	}
}
