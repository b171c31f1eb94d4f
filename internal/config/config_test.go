package config

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/aitrail/aitrail/internal/detect"
)

func write(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "aitrail.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	c, err := Load(write(t, "addr: 127.0.0.1:9999\nledger:\n  sync_interval: 250ms\nindex:\n  full_text: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9999" || c.Ledger.SyncInterval != 250*time.Millisecond || !c.FullText() {
		t.Fatalf("loaded %+v", c)
	}
	if c.DataDir != DefaultDataDir || c.Limits.MaxBodyBytes != DefaultMaxBodyBytes || c.Index.MaxLag != DefaultIndexMaxLag {
		t.Fatal("unset keys lost their defaults")
	}
	if c, err := Load(write(t, "index:\n  max_lag: 20000\n")); err != nil || c.Index.MaxLag != 20000 {
		t.Fatalf("index.max_lag: 20000 loaded as %d, %v", c.Index.MaxLag, err)
	}
	if c, err := Load(write(t, "index:\n  max_lag: 0\n")); err != nil || c.Index.MaxLag != 0 {
		t.Fatalf("index.max_lag: 0 (no limit) loaded as %d, %v", c.Index.MaxLag, err)
	}
	if c, err := Load(write(t, "ledger:\n  page_cache_bytes: -1\n")); err != nil || c.Ledger.PageCacheBytes != -1 {
		t.Fatalf("ledger.page_cache_bytes: -1 loaded as %d, %v", c.Ledger.PageCacheBytes, err)
	}
	refused(t, "ledger:\n  page_cache_bytes: 4096\n", "page_cache_bytes")
	if c, err := Load(write(t, "ledger:\n  preallocate_bytes: 0\n")); err != nil || c.Ledger.PreallocateBytes != 0 || c.Validate() != nil {
		t.Fatalf("ledger.preallocate_bytes: 0 (commits append) loaded as %d, %v", c.Ledger.PreallocateBytes, err)
	}
	refused(t, "ledger:\n  preallocate_bytes: 4096\n", "preallocate_bytes")
	if c, err := Load(write(t, "ledger:\n  key_filter_bytes: -1\n")); err != nil || c.Ledger.KeyFilterBytes != -1 || c.Validate() != nil {
		t.Fatalf("ledger.key_filter_bytes: -1 (no limit) loaded as %d, %v", c.Ledger.KeyFilterBytes, err)
	}
	for _, bad := range []string{"0", "4096", "-2"} {
		refused(t, "ledger:\n  key_filter_bytes: "+bad+"\n", "key_filter_bytes")
	}
	for _, ok := range []int64{-1, 1000, DefaultSnapshotRecords} {
		c, err := Load(write(t, fmt.Sprintf("ledger:\n  snapshot_records: %d\n", ok)))
		if err != nil || c.Ledger.SnapshotRecords != ok || c.Validate() != nil {
			t.Fatalf("ledger.snapshot_records: %d loaded as %d, %v", ok, c.Ledger.SnapshotRecords, err)
		}
	}
	for _, bad := range []string{"0", "999", "-2"} {
		refused(t, "ledger:\n  snapshot_records: "+bad+"\n", "snapshot_records")
	}
	refused(t, "limits:\n  max_body_bytes: 134217728\n", "max_body_memory_bytes")
	if c, err := Load(write(t, "limits:\n  max_body_bytes: 134217728\n  max_body_memory_bytes: 268435456\n")); err != nil || c.Validate() != nil {
		t.Fatalf("limits.max_body_memory_bytes twice max_body_bytes: %v", err)
	}
	for _, bad := range []string{"-1", "99"} {
		refused(t, "detect:\n  max_groups: "+bad+"\n", "max_groups")
	}
	refused(t, "limits:\n  max_connections: -1\n", "max_connections")
	refused(t, "ops_addr: 9090\n", "ops_addr")
	refused(t, "ops_addr: "+DefaultAddr+"\n", "ops_addr")
	if c, err := Load(write(t, "ops_addr: 127.0.0.1:9090\n")); err != nil || c.OpsAddr != "127.0.0.1:9090" || c.Validate() != nil {
		t.Fatalf("ops_addr: 127.0.0.1:9090 loaded as %q, %v", c.OpsAddr, err)
	}
	if c, err := Load(write(t, "")); err != nil || c.Ledger.MinFreeBytes != DefaultMinFreeBytes {
		t.Fatalf("ledger.min_free_bytes defaults to %d, %v; want %d", c.Ledger.MinFreeBytes, err, DefaultMinFreeBytes)
	}
	for _, ok := range []int64{0, 1 << 20, 50 << 30} {
		c, err := Load(write(t, fmt.Sprintf("ledger:\n  min_free_bytes: %d\n", ok)))
		if err != nil || c.Ledger.MinFreeBytes != ok || c.Validate() != nil {
			t.Fatalf("ledger.min_free_bytes: %d loaded as %d, %v", ok, c.Ledger.MinFreeBytes, err)
		}
	}
	for _, bad := range []string{"1", "1048575", "-1"} {
		refused(t, "ledger:\n  min_free_bytes: "+bad+"\n", "min_free_bytes")
	}
	c, err = Load(write(t, "capture:\n  otlp:\n    keep_other_spans: true\n"))
	if err != nil || !c.Capture.OTLP.KeepOtherSpans || c.Capture.OTLP.KeepOtherLogs {
		t.Fatalf("capture.otlp: %+v, %v", c.Capture, err)
	}
	if c, err := Load(write(t, "")); err != nil || c.Addr != DefaultAddr {
		t.Fatalf("empty file: %v", err)
	}
}

func TestLoadRefusesUnknownKeys(t *testing.T) {
	_, err := Load(write(t, "addr: 127.0.0.1:1\nlimts:\n  max_body_bytes: 5\n"))
	if err == nil || !strings.Contains(err.Error(), "limts") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("got %v, want an error naming the unknown key and its line", err)
	}
	if _, err := Load(write(t, "addr: [1, 2]\n")); err == nil {
		t.Fatal("a list for addr was accepted")
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Addr = "nonsense"
	c.Limits.MaxBatchEvents = 0
	c.Ledger.SyncInterval = time.Microsecond
	c.LogLevel = "loud"
	c.Ledger.Seal = "forever"
	c.Detect.ContentPatterns = []detect.Pattern{{Name: "bad", Regexp: "(unclosed"}}
	err := c.Validate()
	for _, want := range []string{"addr", "max_batch_events", "sync_interval", "log_level", "ledger.seal", "detect.content_patterns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %s", err, want)
		}
	}
}

func TestCapture(t *testing.T) {
	c, err := Load(write(t, "capture:\n  openai:\n    upstream: https://api.openai.com/v1\n    timeout: 2m\n  anthropic:\n    api_key: from-file\n"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AITRAIL_OPENAI_UPSTREAM": "http://ignored", "AITRAIL_OPENAI_API_KEY": "sk-env",
		"AITRAIL_ANTHROPIC_UPSTREAM": "https://api.anthropic.com", "AITRAIL_ANTHROPIC_API_KEY": "ignored"}
	c.ApplyEnv(func(k string) string { return env[k] })
	want := Capture{
		OpenAI:    Upstream{URL: "https://api.openai.com/v1", APIKey: "sk-env", Timeout: 2 * time.Minute},
		Anthropic: Upstream{URL: "https://api.anthropic.com", APIKey: "from-file", Timeout: DefaultUpstreamTimeout},
	}
	if c.Capture != want {
		t.Fatalf("capture %+v, want %+v (the file first, then the environment)", c.Capture, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Capture.OpenAI.URL = "ftp://x"
	c.Capture.Anthropic.URL = "api.anthropic.com"
	c.Capture.Anthropic.Timeout = 0
	err = c.Validate()
	for _, want := range []string{"capture.openai.upstream", "capture.anthropic.upstream", "capture.anthropic.timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a problem with %s", err, want)
		}
	}
}

// TestDocumentedDefaults holds docs/configuration.md's "complete file with
// the defaults" to the code: read alone, over nothing, it gives exactly
// Default(), so it names every setting with its default value.
func TestDocumentedDefaults(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "A complete file with the defaults:\n\n```yaml\n")
	sample, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("docs/configuration.md has no YAML block after \"A complete file with the defaults:\"")
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(sample))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("the documented defaults do not load: %v", err)
	}
	// Compared as YAML, in which a missing list and an empty one are alike.
	code, err := yaml.Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	if loaded, _ := yaml.Marshal(c); string(loaded) != string(code) {
		t.Errorf("the documented defaults load as\n%s\nthe code's are\n%s", loaded, code)
	}
	if doc, code := settingNames(t, []byte(sample)), settingNames(t, code); !reflect.DeepEqual(doc, code) {
		t.Errorf("the documented file names the settings\n %v\nthe code has\n %v", doc, code)
	}
}

// settingNames returns the dotted names of the settings a YAML file sets.
func settingNames(t *testing.T, data []byte) []string {
	t.Helper()
	var root map[string]any
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var names []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			names = append(names, prefix+k)
		}
	}
	walk("", root)
	slices.Sort(names)
	return names
}

// refused checks that yaml loads and that Validate refuses it, naming field.
func refused(t *testing.T, yaml, field string) {
	t.Helper()
	c, err := Load(write(t, yaml))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
		t.Fatalf("%q validated as %v, want an error naming %s", yaml, err, field)
	}
}

func TestTokenRateLimitSettings(t *testing.T) {
	c := Default()
	if c.Limits.TokenEventsPerSecond != 0 || c.Validate() != nil {
		t.Fatalf("the default sets a token rate (%v) or does not validate", c.Limits.TokenEventsPerSecond)
	}
	for _, bad := range []Limits{
		{TokenEventsPerSecond: -1},
		{TokenEventsPerSecond: math.NaN()},
		{TokenEventsPerSecond: 10, TokenBurstEvents: DefaultMaxBatchEvents - 1},
		{TokenBurstEvents: -5},
	} {
		c := Default()
		c.Limits.TokenEventsPerSecond, c.Limits.TokenBurstEvents = bad.TokenEventsPerSecond, bad.TokenBurstEvents
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "limits.token_") {
			t.Errorf("%+v: Validate() = %v, want it to name the setting", bad, err)
		}
	}
}
