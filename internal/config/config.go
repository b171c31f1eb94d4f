// Package config is the reference for aitrail's process settings: one
// documented struct, loaded from strict YAML (unknown keys are errors),
// overridden by flags, with defaults in named constants and one Validate
// that reports every problem at once.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/aitrail/aitrail/internal/detect"
	"github.com/aitrail/aitrail/internal/notify"
)

// Defaults.
const (
	DefaultAddr            = "127.0.0.1:8080"
	DefaultDataDir         = "./data"
	DefaultLogName         = "aitrail.local/log"
	DefaultMaxBodyBytes    = 64 << 20
	DefaultBodyMemoryBytes = 128 << 20
	DefaultMaxContentBytes = 16 << 20
	DefaultMaxBatchEvents  = 10_000
	DefaultSegmentBytes    = 256 << 20
	DefaultMaxPending      = 200_000
	DefaultSyncInterval    = time.Second
	DefaultPageCacheBytes  = 64 << 20
	DefaultPreallocate     = 16 << 20
	DefaultKeyFilterBytes  = 128 << 20
	DefaultSnapshotRecords = 1 << 20
	DefaultMinFreeBytes    = 1 << 30
	DefaultSeal            = "immutable"
	DefaultShutdownTimeout = 30 * time.Second
	DefaultAccessWindow    = 10 * time.Second
	DefaultDetectInterval  = time.Second
	DefaultDetectMaxGroups = 20_000
	// DefaultIndexMaxLag keeps the query index within the records the log
	// holds in memory (its newest 16,384), with room for the requests in
	// flight past the limit: an index further behind reads and decodes
	// records from the segment files again, which costs more CPU than the
	// few producers held back.
	DefaultIndexMaxLag = 12_000
	// DefaultUpstreamTimeout is how long a recording proxy waits, by
	// default, for its provider to send anything. It matches the providers'
	// SDKs, since a model may think for minutes before its first byte.
	DefaultUpstreamTimeout = 10 * time.Minute
)

// Config holds every setting of `aitrail serve`. YAML keys are the
// snake_case names given in the tags.
type Config struct {
	// Addr is the listen address of the HTTP API.
	Addr string `yaml:"addr"`
	// OpsAddr, if set, is a second listen address serving only /healthz,
	// /readyz and /metrics, in plain HTTP and outside limits.max_connections,
	// so that probes and scrapes are answered while the API is flooded.
	OpsAddr string `yaml:"ops_addr"`
	// DataDir holds the ledger, keys, catalog and index.
	DataDir string `yaml:"data"`
	// LogName is the log's origin: the first line of its checkpoints and the
	// name of its signing key. It is fixed when the key is created on first
	// start; later changes are refused.
	LogName string `yaml:"log_name"`
	// MasterKeyFile is a file holding the base64 master key. Default: the
	// environment variable AITRAIL_MASTER_KEY, else <data>/master.key,
	// generated on first start.
	MasterKeyFile string `yaml:"master_key_file"`
	// VaultTransitKey, "<mount>/<key>" such as "transit/aitrail", keeps the
	// master key in HashiCorp Vault's transit engine instead (Vault's
	// address and token from VAULT_ADDR and VAULT_TOKEN). Default: the
	// environment variable AITRAIL_VAULT_TRANSIT_KEY.
	VaultTransitKey string `yaml:"vault_transit_key"`
	// TLS for the listener; off unless a certificate is given.
	TLS TLS `yaml:"tls"`
	// Limits on requests.
	Limits Limits `yaml:"limits"`
	// Ledger tuning.
	Ledger Ledger `yaml:"ledger"`
	// Index settings.
	Index Index `yaml:"index"`
	// Capture configures the receivers that turn other formats into events.
	Capture Capture `yaml:"capture"`
	// Detect configures the detector: which rules run (docs/rules.md).
	Detect Detect `yaml:"detect"`
	// Alerting lists where alerts are delivered (docs/alerts.md).
	Alerting notify.Config `yaml:"alerting"`
	// AccessWindow is how often counted accesses — refused requests per
	// source, entry bundle downloads per token — are recorded in the log.
	AccessWindow time.Duration `yaml:"access_window"`
	// ShutdownTimeout bounds the graceful stop on SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
}

// Limits bound what one request may carry.
type Limits struct {
	// MaxBodyBytes bounds a request body, after gzip decompression.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxBodyMemoryBytes bounds the memory of the bodies of the ingest and
	// capture requests being handled at once; a request that would pass it
	// is answered 503 pushback.
	MaxBodyMemoryBytes int64 `yaml:"max_body_memory_bytes"`
	// MaxConnections bounds the client connections open at once; past it
	// new ones wait to be accepted. 0: half the process's limit of open
	// files, between 64 and 10,000.
	MaxConnections int `yaml:"max_connections"`
	// MaxContentBytes bounds the content of one event.
	MaxContentBytes int64 `yaml:"max_content_bytes"`
	// MaxBatchEvents bounds the events in one request.
	MaxBatchEvents int `yaml:"max_batch_events"`
	// TokenEventsPerSecond bounds the events each token may append, on
	// average; 0 (the default) sets no bound. TokenBurstEvents is how many
	// it may append at once; 0 takes MaxBatchEvents, or a second's worth
	// if that is more.
	TokenEventsPerSecond float64 `yaml:"token_events_per_second"`
	TokenBurstEvents     int     `yaml:"token_burst_events"`
}

// Ledger tunes the sequencer.
type Ledger struct {
	// SegmentBytes is the size at which a segment file is sealed.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// MaxPending bounds events queued for commit; beyond it ingest answers
	// 503 with Retry-After.
	MaxPending int `yaml:"max_pending"`
	// SyncInterval is how often tiles and the checkpoint file are made
	// durable (they are rebuilt from the segments after a crash).
	SyncInterval time.Duration `yaml:"sync_interval"`
	// PageCacheBytes is how much of the newest log is left in the
	// operating system's page cache; older pages are dropped from it once
	// durable. -1 leaves caching to the kernel.
	PageCacheBytes int64 `yaml:"page_cache_bytes"`
	// PreallocateBytes is how far ahead of its records the active segment
	// is kept filled with zeros, so that a commit's fsync writes only its
	// data. 0 makes commits append, which lets seal: immutable keep the
	// active segment append-only.
	PreallocateBytes int64 `yaml:"preallocate_bytes"`
	// KeyFilterBytes bounds the memory of the filter of every event id in
	// the log, which spares ingest of new ids a query of the index; -1
	// for no limit. Past it, more requests query the index.
	KeyFilterBytes int64 `yaml:"key_filter_bytes"`
	// SnapshotRecords is how far the log grows between start-up snapshots
	// (at least an eighth of its size too), which let a start read only
	// the records after the newest; -1 for none: every start reads every
	// record.
	SnapshotRecords int64 `yaml:"snapshot_records"`
	// MinFreeBytes is the free space the file system holding the data
	// directory must keep: with less, ingest is refused with 503 until
	// space is freed. 0 turns the reserve off.
	MinFreeBytes int64 `yaml:"min_free_bytes"`
	// Seal protects complete segments and full tiles: immutable (read-only
	// plus the immutable attribute where the process may set it), read-only,
	// or off.
	Seal string `yaml:"seal"`
}

// TLS configures the listener's TLS (1.2 or later).
type TLS struct {
	// CertFile and KeyFile are the server's PEM certificate (chain) and key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, if set, makes client certificates mandatory: each
	// connection must present one signed by a CA in this PEM file. Bearer
	// tokens are still required.
	ClientCAFile string `yaml:"client_ca_file"`
}

// Index configures the query index.
type Index struct {
	// FullText keeps a full-text index for the `q` search parameter. It
	// cuts the rate at which the index keeps up with ingest to a third or a
	// quarter, so it is off
	// by default; without it `q` still works, by a slower scan.
	FullText bool `yaml:"full_text"`
	// MaxLag is the most records the index may fall behind the log before
	// producers' appends wait for it (default DefaultIndexMaxLag; 0: no
	// limit). Past it, an append waits until the index is back within it,
	// for up to 5 seconds, and is then refused with 503 and Retry-After. It
	// keeps queries close behind the log under sustained load, at the price
	// of ingesting at the rate the index keeps up with.
	MaxLag uint64 `yaml:"max_lag"`
}

// Detect configures the detector.
type Detect struct {
	// Rules are rule files loaded besides (or, with DisableBuiltin, instead
	// of) the built-in pack. A rule with a built-in's id replaces it.
	Rules []string `yaml:"rules"`
	// DisableBuiltin turns the built-in pack off.
	DisableBuiltin bool `yaml:"disable_builtin"`
	// Interval is how often rules that time alone moves (absence, windows
	// emptying) are evaluated.
	Interval time.Duration `yaml:"interval"`
	// ContentPatterns are the regular expressions content is scanned for
	// before it is encrypted (prompt-injection markers); empty means
	// detect.DefaultPatterns.
	ContentPatterns []detect.Pattern `yaml:"content_patterns"`
	// MaxGroups bounds the groups each rule keeps (one per actor, for the
	// rules grouped by actor); past it, those seen least recently are
	// forgotten. 0 for no bound.
	MaxGroups int `yaml:"max_groups"`
}

// Capture configures the receivers and recording proxies that turn other
// formats into events.
type Capture struct {
	// OTLP configures the OTLP/HTTP receiver under /otlp/.
	OTLP OTLP `yaml:"otlp"`
	// OpenAI is the upstream of the OpenAI-compatible proxy at /openai/v1/.
	// Its URL ends in /v1, like OpenAI's base URL.
	OpenAI Upstream `yaml:"openai"`
	// Anthropic is the upstream of the Anthropic proxy at /anthropic/v1/.
	// Its URL is a base URL without /v1, like Anthropic's.
	Anthropic Upstream `yaml:"anthropic"`
}

// OTLP configures the OTLP/HTTP receiver. GenAI spans and log events are
// always recorded; other spans and log records are accepted and dropped
// unless kept here.
type OTLP struct {
	// KeepOtherSpans records spans without gen_ai.* attributes as
	// trace.span events.
	KeepOtherSpans bool `yaml:"keep_other_spans"`
	// KeepOtherLogs records log records that are not GenAI events as
	// log.record events.
	KeepOtherLogs bool `yaml:"keep_other_logs"`
}

// Upstream is a model provider a recording proxy forwards to.
type Upstream struct {
	// URL is the provider's base URL; empty leaves the proxy off (its
	// paths answer 404 not_configured). Default: the environment variable
	// AITRAIL_OPENAI_UPSTREAM or AITRAIL_ANTHROPIC_UPSTREAM.
	URL string `yaml:"upstream"`
	// APIKey is the provider key sent upstream. Default: the environment
	// variable AITRAIL_OPENAI_API_KEY or AITRAIL_ANTHROPIC_API_KEY.
	APIKey string `yaml:"api_key"`
	// Timeout is the longest wait for the provider to send anything: the
	// response headers or the next piece of the body.
	Timeout time.Duration `yaml:"timeout"`
}

// ApplyEnv fills the capture upstreams and keys the file left empty from
// the environment, read through getenv.
func (c *Config) ApplyEnv(getenv func(string) string) {
	for _, u := range []struct {
		up  *Upstream
		env string
	}{{&c.Capture.OpenAI, "OPENAI"}, {&c.Capture.Anthropic, "ANTHROPIC"}} {
		if u.up.URL == "" {
			u.up.URL = getenv("AITRAIL_" + u.env + "_UPSTREAM")
		}
		if u.up.APIKey == "" {
			u.up.APIKey = getenv("AITRAIL_" + u.env + "_API_KEY")
		}
	}
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		Addr:    DefaultAddr,
		DataDir: DefaultDataDir,
		LogName: DefaultLogName,
		Limits: Limits{
			MaxBodyBytes:       DefaultMaxBodyBytes,
			MaxBodyMemoryBytes: DefaultBodyMemoryBytes,
			MaxContentBytes:    DefaultMaxContentBytes,
			MaxBatchEvents:     DefaultMaxBatchEvents,
		},
		Ledger: Ledger{
			SegmentBytes:     DefaultSegmentBytes,
			MaxPending:       DefaultMaxPending,
			SyncInterval:     DefaultSyncInterval,
			PageCacheBytes:   DefaultPageCacheBytes,
			PreallocateBytes: DefaultPreallocate,
			KeyFilterBytes:   DefaultKeyFilterBytes,
			SnapshotRecords:  DefaultSnapshotRecords,
			MinFreeBytes:     DefaultMinFreeBytes,
			Seal:             DefaultSeal,
		},
		Capture: Capture{
			OpenAI:    Upstream{Timeout: DefaultUpstreamTimeout},
			Anthropic: Upstream{Timeout: DefaultUpstreamTimeout},
		},
		ShutdownTimeout: DefaultShutdownTimeout,
		AccessWindow:    DefaultAccessWindow,
		Detect:          Detect{Interval: DefaultDetectInterval, MaxGroups: DefaultDetectMaxGroups},
		Index:           Index{MaxLag: DefaultIndexMaxLag},
		LogLevel:        "info",
	}
}

// Load reads a YAML file over the defaults. Unknown keys are errors.
func Load(path string) (Config, error) {
	c := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("couldn't read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// FullText reports whether the full-text index is enabled.
func (c Config) FullText() bool { return c.Index.FullText }

// Validate returns every problem with the configuration, joined.
func (c Config) Validate() error {
	var errs []string
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Sprintf("addr %q: %v", c.Addr, err))
	}
	if c.OpsAddr != "" {
		if _, _, err := net.SplitHostPort(c.OpsAddr); err != nil {
			errs = append(errs, fmt.Sprintf("ops_addr %q: %v", c.OpsAddr, err))
		} else if c.OpsAddr == c.Addr {
			errs = append(errs, fmt.Sprintf("ops_addr %q: must differ from addr", c.OpsAddr))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, "data: must not be empty")
	}
	if c.LogName == "" || strings.ContainsAny(c.LogName, " +\n\t") {
		errs = append(errs, fmt.Sprintf("log_name %q: must be non-empty with no spaces or '+'", c.LogName))
	}
	if c.Limits.MaxBodyBytes < 1024 {
		errs = append(errs, "limits.max_body_bytes: must be at least 1024")
	}
	if c.Limits.MaxConnections < 0 {
		errs = append(errs, "limits.max_connections: must be 0 (half the open-file limit) or more")
	}
	if c.Limits.MaxBodyMemoryBytes < 2*c.Limits.MaxBodyBytes {
		errs = append(errs, "limits.max_body_memory_bytes: must be at least twice limits.max_body_bytes (a body of unannounced length is read into a buffer that grows past it)")
	}
	if c.Limits.MaxContentBytes < 1 || c.Limits.MaxContentBytes > 1<<30 {
		errs = append(errs, "limits.max_content_bytes: must be between 1 and 1 GiB")
	}
	if c.Limits.MaxBatchEvents < 1 {
		errs = append(errs, "limits.max_batch_events: must be at least 1")
	}
	if r := c.Limits.TokenEventsPerSecond; !(r >= 0 && r <= 1e9) {
		errs = append(errs, "limits.token_events_per_second: must be 0 (no limit) or a positive number of events a second, at most 1e9")
	}
	if b := c.Limits.TokenBurstEvents; b < 0 || b > 0 && b < c.Limits.MaxBatchEvents {
		errs = append(errs, fmt.Sprintf("limits.token_burst_events: must be 0 (limits.max_batch_events) or at least limits.max_batch_events (%d): a request that large could never be taken", c.Limits.MaxBatchEvents))
	}
	if c.Ledger.SegmentBytes < 1<<20 {
		errs = append(errs, "ledger.segment_bytes: must be at least 1 MiB")
	}
	if c.Ledger.MaxPending < 1 {
		errs = append(errs, "ledger.max_pending: must be at least 1")
	}
	if c.Ledger.SyncInterval < 10*time.Millisecond {
		errs = append(errs, "ledger.sync_interval: must be at least 10ms")
	}
	if c.Ledger.PageCacheBytes != -1 && c.Ledger.PageCacheBytes < 1<<20 {
		errs = append(errs, "ledger.page_cache_bytes: must be -1 (leave caching to the kernel) or at least 1 MiB")
	}
	if p := c.Ledger.PreallocateBytes; p != 0 && (p < 1<<20 || p > 1<<30) {
		errs = append(errs, "ledger.preallocate_bytes: must be 0 (commits append) or from 1 MiB to 1 GiB")
	}
	if k := c.Ledger.KeyFilterBytes; k != -1 && k < 1<<20 {
		errs = append(errs, "ledger.key_filter_bytes: must be -1 (no limit) or at least 1 MiB")
	}
	if s := c.Ledger.SnapshotRecords; s != -1 && s < 1000 {
		errs = append(errs, "ledger.snapshot_records: must be -1 (no start-up snapshots) or at least 1000")
	}
	if m := c.Ledger.MinFreeBytes; m != 0 && m < 1<<20 {
		errs = append(errs, "ledger.min_free_bytes: must be 0 (no reserve) or at least 1 MiB")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, "tls: cert_file and key_file go together")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		errs = append(errs, "tls.client_ca_file: needs tls.cert_file and tls.key_file")
	}
	if c.MasterKeyFile != "" && c.VaultTransitKey != "" {
		errs = append(errs, "master_key_file and vault_transit_key: give one master key, not both")
	}
	switch c.Ledger.Seal {
	case "immutable", "read-only", "off":
	default:
		errs = append(errs, fmt.Sprintf("ledger.seal %q: must be immutable, read-only or off", c.Ledger.Seal))
	}
	if m := c.Detect.MaxGroups; m != 0 && m < 100 {
		errs = append(errs, "detect.max_groups: must be 0 (no bound) or at least 100")
	}
	if c.Detect.Interval < 100*time.Millisecond {
		errs = append(errs, "detect.interval: must be at least 100ms")
	}
	if len(c.Detect.ContentPatterns) > 0 {
		if _, err := detect.NewScanner(c.Detect.ContentPatterns); err != nil {
			errs = append(errs, "detect.content_patterns: "+err.Error())
		}
	}
	if err := c.Alerting.WithDefaults().Validate(); err != nil {
		errs = append(errs, "alerting: "+err.Error())
	}
	if c.AccessWindow < 100*time.Millisecond {
		errs = append(errs, "access_window: must be at least 100ms")
	}
	for _, n := range []struct {
		name string
		u    Upstream
	}{{"openai", c.Capture.OpenAI}, {"anthropic", c.Capture.Anthropic}} {
		name, u := n.name, n.u
		if u.URL != "" {
			if p, err := url.Parse(u.URL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" ||
				p.RawQuery != "" || p.Fragment != "" || p.User != nil {
				errs = append(errs, fmt.Sprintf("capture.%s.upstream: must be an http:// or https:// URL with a host and no query, fragment or user", name))
			}
		}
		if u.Timeout <= 0 {
			errs = append(errs, fmt.Sprintf("capture.%s.timeout: must be positive", name))
		}
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, "shutdown_timeout: must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("log_level %q: must be debug, info, warn or error", c.LogLevel))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}
