package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aitrail/aitrail/internal/ledger/ledgertest"
)

// TestPageCacheSetting runs the real server with ledger.page_cache_bytes
// at 1 MiB and writes 12 MiB of content: what it wrote first has left the
// page cache, what it wrote last is still there.
func TestPageCacheSetting(t *testing.T) {
	data := ledgertest.DroppableDir(t)
	cfg := writeConfig(t, "ledger:\n  page_cache_bytes: 1048576\n")
	s := startServer(t, data, "--config", cfg)
	big := strings.Repeat("x", 1<<20)
	for i := range 12 {
		s.post(map[string]any{"type": "data.upload", "id": fmt.Sprintf("big%d", i), "content": big})
	}
	segs, err := filepath.Glob(filepath.Join(data, ledgerDir, "segments", "*.seg"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v; want one", segs, err)
	}
	if c := ledgertest.CachedShare(t, segs[0], 0, 8<<20); c > 0 {
		t.Errorf("%.0f%% of the first 8 MiB of the log still cached with page_cache_bytes 1 MiB, want none", 100*c)
	}
	if c := ledgertest.CachedShare(t, segs[0], 11<<20, 12<<20); c < 0.5 {
		t.Errorf("%.0f%% of the twelfth MiB of the log cached, want the newest kept", 100*c)
	}
}
