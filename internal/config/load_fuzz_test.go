package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad: no config file makes Load, Validate or ApplyEnv panic, and a
// file Load refuses is named in the error.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{"", "addr: \":8080\"\n", "limits:\n  max_body_bytes: 2048\n", "ledger:\n  sync_interval: 10ms\n  seal: off\n",
		"detect:\n  content_patterns:\n    - name: x\n      regexp: \"(\"\n", "capture:\n  openai:\n    url: http://x\n    timeout: 1s\n", "alerting:\n  webhooks: [{}]\n", "a: &a [*a]\n"} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "aitrail.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v does not name the file", err)
			}
			return
		}
		_ = c.Validate()
		c.ApplyEnv(func(string) string { return "" })
		_ = c.Validate()
	})
}
