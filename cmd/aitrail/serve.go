package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"

	"github.com/aitrail/aitrail/internal/alerting"
	"github.com/aitrail/aitrail/internal/apierr"
	"github.com/aitrail/aitrail/internal/authz"
	"github.com/aitrail/aitrail/internal/capture/otlp"
	"github.com/aitrail/aitrail/internal/capture/proxy"
	"github.com/aitrail/aitrail/internal/config"
	"github.com/aitrail/aitrail/internal/crypto"
	"github.com/aitrail/aitrail/internal/detect"
	"github.com/aitrail/aitrail/internal/event"
	"github.com/aitrail/aitrail/internal/httpapi"
	"github.com/aitrail/aitrail/internal/httpbody"
	"github.com/aitrail/aitrail/internal/index"
	"github.com/aitrail/aitrail/internal/ingest"
	"github.com/aitrail/aitrail/internal/ledger"
	"github.com/aitrail/aitrail/internal/notify"
	"github.com/aitrail/aitrail/internal/privacy"
	"github.com/aitrail/aitrail/internal/registry"
	sqlitestore "github.com/aitrail/aitrail/internal/store/sqlite"
)

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfgPath := fs.String("config", "", "YAML configuration file (strict; flags override it)")
	addr := fs.String("addr", config.DefaultAddr, "listen address")
	opsAddr := fs.String("ops-addr", "", "if set, also serve /healthz, /readyz and /metrics on this address, in plain HTTP and outside limits.max_connections")
	data := fs.String("data", config.DefaultDataDir, "data directory")
	logName := fs.String("log-name", config.DefaultLogName, "the log's origin name (fixed at first start)")
	src := addKeyFlags(fs)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	tlsCert := fs.String("tls-cert", "", "PEM certificate (chain) to serve TLS with; needs --tls-key")
	tlsKey := fs.String("tls-key", "", "PEM key of --tls-cert")
	tlsClientCA := fs.String("tls-client-ca", "", "PEM CA file: require client certificates it signed (mutual TLS)")
	debugAddr := fs.String("debug-addr", "", "if set, serve Go's pprof profiles on this address (keep it on loopback)")
	openaiUp := fs.String("openai-upstream", "", "base URL the OpenAI-compatible proxy forwards to, ending in /v1 (default: $AITRAIL_OPENAI_UPSTREAM)")
	anthropicUp := fs.String("anthropic-upstream", "", "base URL the Anthropic proxy forwards to (default: $AITRAIL_ANTHROPIC_UPSTREAM)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			return usageError{err.Error()}
		}
	}
	cfg.ApplyEnv(os.Getenv)
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "addr":
			cfg.Addr = *addr
		case "ops-addr":
			cfg.OpsAddr = *opsAddr
		case "data":
			cfg.DataDir = *data
		case "log-name":
			cfg.LogName = *logName
		case "master-key-file":
			cfg.MasterKeyFile = src.file
		case "vault-transit-key":
			cfg.VaultTransitKey = src.vault
		case "log-level":
			cfg.LogLevel = *logLevel
		case "tls-cert":
			cfg.TLS.CertFile = *tlsCert
		case "tls-key":
			cfg.TLS.KeyFile = *tlsKey
		case "tls-client-ca":
			cfg.TLS.ClientCAFile = *tlsClientCA
		case "openai-upstream":
			cfg.Capture.OpenAI.URL = *openaiUp
		case "anthropic-upstream":
			cfg.Capture.Anthropic.URL = *anthropicUp
		}
	})
	if cfg.MasterKeyFile == "" && cfg.VaultTransitKey == "" {
		cfg.VaultTransitKey = os.Getenv(vaultKeyEnv)
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err.Error()}
	}
	tlsConfig, err := serverTLS(cfg.TLS)
	if err != nil {
		return err
	}
	rules, err := loadRules(cfg.Detect)
	if err != nil {
		return usageError{err.Error()}
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *debugAddr != "" {
		go func() {
			mux := http.NewServeMux()
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			logger.Error("debug server stopped", "err", http.ListenAndServe(*debugAddr, mux))
		}()
	}
	tuneRuntime()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, cfg, tlsConfig, rules, logger, stderr)
}

// serve runs the server until ctx ends, then stops gracefully: it stops
// accepting requests, lets in-flight commits finish and closes the stores.
func serve(ctx context.Context, cfg config.Config, tlsConfig *tls.Config, rules []*detect.Rule, log *slog.Logger, stderr io.Writer) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("couldn't create data directory: %w", err)
	}
	lock, err := lockData(cfg.DataDir, true)
	if err != nil {
		return err
	}
	defer lock.Close()

	catalog, err := openCatalog(cfg.DataDir)
	if err != nil {
		return err
	}
	defer catalog.Close()
	// Finish (or undo) a key rotation that stopped half way, before the
	// keys are read.
	if err := settleRotation(ctx, cfg.DataDir, catalog); err != nil {
		return err
	}
	kek, err := masterKey(cfg.DataDir, keySource{file: cfg.MasterKeyFile, vault: cfg.VaultTransitKey}, true)
	if err != nil {
		return err
	}
	keyring := crypto.NewKeyring(kek, catalog)
	if err := keyring.CheckKEK(ctx); err != nil {
		return err
	}
	signer, verifier, vkey, err := logKeys(cfg.DataDir, cfg.LogName, kek, true)
	if err != nil {
		return err
	}
	if verifier.Name() != cfg.LogName && cfg.LogName != config.DefaultLogName {
		return fmt.Errorf("this log is named %q; its name cannot change to %q", verifier.Name(), cfg.LogName)
	}

	auth := authz.NewAuthenticator(catalog)
	envToken := os.Getenv("AITRAIL_ADMIN_TOKEN")
	token, created, err := auth.Bootstrap(ctx, envToken)
	if err != nil {
		return fmt.Errorf("couldn't create the admin token: %w", err)
	}
	if created && envToken == "" {
		path := filepath.Join(cfg.DataDir, adminTokenFile)
		if err := writeNew(path, []byte(token+"\n"), 0o600); err != nil {
			return fmt.Errorf("couldn't save the admin token: %w", err)
		}
		fmt.Fprintf(stderr, "Admin token (shown once; also saved in %s):\n  %s\n", path, token)
	}

	link := new(ledgerLink)
	idx, err := openIndex(cfg.DataDir, link, index.Options{FullText: cfg.FullText(), Logger: log})
	if err != nil {
		return fmt.Errorf("couldn't open the query index: %w (the index is derived from the log: `aitrail reindex --data %s` rebuilds it)", err, cfg.DataDir)
	}
	defer idx.Close()
	cursor, err := idx.Cursor(ctx)
	if err != nil {
		return fmt.Errorf("couldn't read the index cursor: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	commitRecords := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "aitrail_ledger_commit_records", Help: "Records per group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 9),
	})
	commitSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "aitrail_ledger_commit_seconds", Help: "Time of one group commit (write, fsync, tree, signature).",
		Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1},
	})
	commitBytes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "aitrail_ledger_written_bytes_total", Help: "Bytes appended to segment files.",
	})
	reg.MustRegister(commitRecords, commitSeconds, commitBytes)

	sealMode, err := ledger.ParseSealMode(cfg.Ledger.Seal)
	if err != nil {
		return err
	}
	openLedger := func(cursor uint64) (*ledger.Ledger, error) {
		return ledger.Open(filepath.Join(cfg.DataDir, ledgerDir), ledger.Options{
			Origin:         verifier.Name(),
			Signer:         signer,
			Verifier:       verifier,
			SegmentSize:    cfg.Ledger.SegmentBytes,
			MaxPending:     cfg.Ledger.MaxPending,
			MaxBlobSize:    cfg.Limits.MaxContentBytes + 1024, // ciphertext overhead
			SyncInterval:   cfg.Ledger.SyncInterval,
			PageCacheBytes: cfg.Ledger.PageCacheBytes,
			Preallocate:    preallocate(cfg.Ledger.PreallocateBytes),
			KeyFilterBytes: cfg.Ledger.KeyFilterBytes,
			SnapshotEvery:  cfg.Ledger.SnapshotRecords,
			Seal:           sealMode,
			Lookup: func(ctx context.Context, keys []string) (map[string]ledger.Loc, error) {
				ks := make([]index.Key, len(keys))
				for i, key := range keys {
					ks[i].Tenant, ks[i].ID = splitKey(key)
				}
				found, err := idx.LookupIDs(ctx, ks)
				if err != nil {
					return nil, err
				}
				out := make(map[string]ledger.Loc, len(found))
				for k, i := range found {
					out[ingest.Key(k.Tenant, k.ID)] = i
				}
				return out, nil
			},
			KeyOf:      recordKey,
			RecentFrom: cursor,
			OnCommit: func(records, bytes int, took time.Duration) {
				commitRecords.Observe(float64(records))
				commitSeconds.Observe(took.Seconds())
				commitBytes.Add(float64(bytes))
			},
			Logger: log,
		})
	}
	led, err := openLedger(cursor)
	if err == nil {
		// The ledger resumes from the index's cursor (RecentFrom): an index
		// that does not describe this log is emptied first, and the
		// ledger opened again from 0.
		var why string
		if why, err = indexMismatch(ctx, idx, led, cursor); err != nil {
			led.Close()
		} else if why != "" {
			log.Warn("the query index does not match the log (was the log restored from a copy?): rebuilding it", "reason", why)
			led.Close()
			if err = idx.Reset(ctx); err != nil {
				return err
			}
			cursor = 0
			led, err = openLedger(cursor)
		}
	}
	if err != nil {
		return fmt.Errorf("couldn't open the log: %w", err)
	}
	link.led.Store(led)
	if st := led.SealStatus(); sealMode == ledger.SealImmutable && !st.Attributes {
		log.Warn("complete log files are sealed read-only, without the immutable attribute", "reason", st.Reason)
	} else {
		log.Info("complete log files are sealed", "mode", st.Mode, "attributes", st.Attributes)
	}
	defer led.Close()

	openRegistry := func() (*sqlitestore.RegistryStore, *registry.Registry, error) {
		st, err := sqlitestore.OpenRegistry(filepath.Join(cfg.DataDir, registryFile))
		if err != nil {
			return nil, nil, fmt.Errorf("couldn't open the model registry: %w (it is derived from the log: delete %s with the server stopped to rebuild it)", err, registryFile)
		}
		r, err := registry.Open(ctx, st)
		if err != nil {
			st.Close()
			return nil, nil, fmt.Errorf("couldn't load the model registry: %w (it is derived from the log: delete %s with the server stopped to rebuild it)", err, registryFile)
		}
		return st, r, nil
	}
	regStore, models, err := openRegistry()
	if err == nil {
		// A registry that has seen more records than the log holds, or
		// whose last deployment is not the log's record there, knows
		// deployments the log does not: it is rebuilt from the log.
		if why := registryMismatch(ctx, models, led); why != "" {
			log.Warn("the model registry does not match the log (was the log restored from a copy?): rebuilding it", "reason", why)
			regStore.Close()
			for _, suffix := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(filepath.Join(cfg.DataDir, registryFile+suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("couldn't remove the model registry to rebuild it: %w", err)
				}
			}
			regStore, models, err = openRegistry()
		}
	}
	if err != nil && ctx.Err() != nil {
		return nil // stopped while loading: nothing is wrong with the file
	}
	if err != nil {
		return err
	}
	defer regStore.Close()

	// The index's lag is measured to its cursor as of its last committed
	// transaction (idx.Visible), which queries see in full.
	var registryCursor atomic.Uint64
	// behind returns how many records a follower whose cursor is c has yet
	// to process. The cursor is read first: it never passes the size read
	// after it.
	behind := func(c func() uint64) uint64 {
		cur := c()
		return led.Size() - min(cur, led.Size()) // a registry restored ahead of the log: 0
	}
	// lag publishes how far a follower, whose cursor is c, is behind.
	lag := func(follower string, c func() uint64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_follower_lag_records", Help: "Records committed but not yet processed by a follower.",
			ConstLabels: prometheus.Labels{"follower": follower}},
			func() float64 { return float64(behind(c)) })
	}
	// flag is a gauge of 1 while f reports true, else 0.
	flag := func(name, help string, f func() bool) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if f() {
				return 1
			}
			return 0
		})
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_ledger_records", Help: "Records in the log."},
			func() float64 { return float64(led.Size()) }),
		lag("index", idx.Visible), lag("registry", registryCursor.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_index_id_filter_bytes", Help: "Memory of the query index's filters of the event ids of each part and group of parts of the log."},
			func() float64 { return float64(idx.IDFilterBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_ledger_snapshot_records", Help: "Records the newest start-up snapshot covers (0: none)."},
			func() float64 { return float64(led.Snapshot().Records) }),
		flag("aitrail_ledger_start_check_running", "1 while the records below the start-up snapshot the server started from are being checked.",
			func() bool { return led.Snapshot().Checking }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_ledger_key_filter_bytes", Help: "Memory of the filter of the event ids in the log."},
			func() float64 { return float64(led.KeyFilter().Bytes) }),
		flag("aitrail_ledger_key_filter_full", "1 once the filter of event ids has reached ledger.key_filter_bytes: more ingest requests then query the index.",
			func() bool { return led.KeyFilter().Full }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_ledger_key_lookups_total", Help: "Ingest requests that queried the index about ids the filter may have seen."},
			func() float64 { return float64(led.KeyFilter().Lookups) }),
		flag("aitrail_ledger_healthy", "1 while the log accepts writes.", func() bool {
			_, _, _, refusing := led.SyncStatus()
			return led.Err() == nil && !refusing
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_ledger_sync_failures_total", Help: "Failed attempts to make tiles and the checkpoint file durable (ledger.sync_interval); writes are refused once they fail for longer than the grace."},
			func() float64 { failures, _, _, _ := led.SyncStatus(); return float64(failures) }),
	)

	followCtx, stopFollow := context.WithCancel(context.Background())
	defer stopFollow()
	var followers sync.WaitGroup
	follow := func(name string, h ledger.Handler, batch int, onApply func(cursor uint64)) {
		followers.Go(func() {
			ledger.Follow(followCtx, led, h, ledger.FollowOptions{
				Name: name, Logger: log, Linger: indexLinger, BatchSize: batch, OnApply: onApply,
			})
		})
	}
	stopFollowers := func() {
		stopFollow()
		followers.Wait()
	}
	follow("index", idx, indexBatchFor(cfg.Index.MaxLag), led.Forget)
	// Erasures recorded in the log stay in force in a key catalog restored
	// from a backup older than them: put in force again before any request
	// is served.
	guardStart, guardCaughtUp, guardOnce := led.Size(), make(chan struct{}), sync.Once{}
	var guardCursor atomic.Uint64
	reg.MustRegister(lag("erasures", guardCursor.Load))
	guard := &privacy.Guard{Keys: keyring, Start: guardStart, Logger: log}
	follow("erasures", guard, followBatch, func(c uint64) {
		guardCursor.Store(c)
		if c >= guardStart {
			guardOnce.Do(func() { close(guardCaughtUp) })
		}
	})
	// The registry follows the log to persist what ingest taught it and to
	// learn what it missed (records committed when the server stopped).
	// Versions are resolved only once it has caught up with the log as it
	// was at start, so the server does not accept events before then.
	caughtUp := make(chan struct{})
	startSize := led.Size()
	var once sync.Once
	if c, _ := models.Cursor(ctx); c < startSize {
		log.Info("model registry catching up with the log before accepting requests", "from", c, "to", startSize)
	}
	follow("registry", models, followBatch, func(c uint64) {
		registryCursor.Store(c)
		if c >= startSize {
			once.Do(func() { close(caughtUp) })
		}
	})
	for _, ready := range []chan struct{}{caughtUp, guardCaughtUp} {
		select {
		case <-ready:
		case <-ctx.Done():
			stopFollowers()
			return nil
		}
	}

	// Content is scanned for prompt-injection markers before it is
	// encrypted: the marker names are all the rules ever see of it.
	patterns := cfg.Detect.ContentPatterns
	if len(patterns) == 0 {
		patterns = detect.DefaultPatterns
	}
	scanner, err := detect.NewScanner(patterns)
	if err != nil {
		stopFollowers()
		return err
	}
	pipeline := &ingest.Pipeline{
		Ledger:   led,
		Sealer:   keyring,
		Limits:   event.Limits{MaxContentBytes: cfg.Limits.MaxContentBytes, MaxBatchEvents: cfg.Limits.MaxBatchEvents},
		Registry: models,
		Subjects: keyring,
		ScanContent: func(tenant string, content []byte) string {
			return detect.MarkerNames(scanner.ScanContent(tenant, content))
		},
	}
	indexWaits := prometheus.NewCounter(prometheus.CounterOpts{Name: "aitrail_ingest_index_waits_total",
		Help: "Appends that waited for the query index and the detector to come back within index.max_lag."})
	reg.MustRegister(indexWaits)
	// Producers wait while the index's committed cursor (what queries see),
	// or the detector's, is more than index.max_lag behind the log. Either
	// follower, once further behind than the records the log holds in
	// memory, reads and decodes records from the files, which costs it
	// several times the CPU: the detector, which nothing held back, then
	// fell ever further behind under sustained OTLP ingest (2 million
	// records after two minutes), taking CPU from ingest and delaying
	// alerts by as much.
	var detectorCursor atomic.Uint64
	detectorCursor.Store(led.Size()) // until the detector's own is known
	lagLimit := &ingest.LagLimit{Lag: func() uint64 { return max(behind(idx.Visible), behind(detectorCursor.Load)) },
		Max: cfg.Index.MaxLag, OnWait: indexWaits.Inc}
	// Many large requests at once must not take the server's memory.
	bodyBudget := httpbody.NewBudget(cfg.Limits.MaxBodyMemoryBytes)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_http_body_memory_bytes", Help: "Memory taken by the bodies of the ingest and capture requests being handled (limits.max_body_memory_bytes)."},
			func() float64 { return float64(bodyBudget.Used()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_http_body_memory_refused_total", Help: "Requests answered 503 pushback because their body would have taken the bodies being handled past limits.max_body_memory_bytes."},
			func() float64 { return float64(bodyBudget.Refused.Load()) }))
	// Ingest stops short of a full disk, which would stop the log until a
	// restart, and goes on by itself once space is freed.
	space := &ingest.SpaceReserve{Dir: cfg.DataDir, Min: uint64(cfg.Ledger.MinFreeBytes),
		OnChange: func(refusing bool, free uint64) {
			if refusing {
				log.Warn("refusing ingest: the data directory's file system is short of space (ledger.min_free_bytes)",
					"free_bytes", free, "min_free_bytes", cfg.Ledger.MinFreeBytes)
			} else {
				log.Info("taking ingest again: the data directory's file system has space", "free_bytes", free)
			}
		}}
	space.Check()
	// Tokens may have limits of their own, whether or not the server sets
	// one for all.
	pipeline.Rate = &ingest.TokenRate{Rate: cfg.Limits.TokenEventsPerSecond, Burst: cfg.Limits.TokenBurstEvents, MinBurst: cfg.Limits.MaxBatchEvents}
	pipeline.Admit = func(ctx context.Context) error {
		if err := space.Admit(ctx); err != nil {
			return err
		}
		return lagLimit.Admit(ctx)
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_storage_free_bytes", Help: "Bytes available on the file system holding the data directory, as last measured."},
			func() float64 { free, _, _ := space.Status(); return float64(free) }),
		flag("aitrail_storage_writes_refused", "1 while ingest is refused because the data directory's file system has less free space than ledger.min_free_bytes.",
			func() bool { _, refusing, _ := space.Status(); return refusing }))
	notifier, err := notify.New(cfg.Alerting, notify.Options{Logger: log, Registerer: reg})
	if err != nil {
		stopFollowers()
		return fmt.Errorf("couldn't set up alert delivery: %w", err)
	}
	// The detector follows the log like the index, and records alerts
	// through the same pipeline as every event.
	detector, err := alerting.New(rules, led.Size(), pipeline, notifier, fileState(filepath.Join(cfg.DataDir, detectorFile)),
		led.Secret("aitrail detector record ids"), log)
	if err != nil {
		stopFollowers()
		return fmt.Errorf("%w (the detector's state is derived: delete %s with the server stopped to start the detector afresh at the end of the log)", err, detectorFile)
	}
	// Before the detector records a change of its rules, so that it sees
	// that record too.
	if c, _ := detector.Cursor(ctx); c > led.Size() {
		log.Warn("the detector has seen more records than the log holds (was the log restored from a copy?): it goes on from the log's end", "detector_cursor", c, "records", led.Size())
		detector.Rewind(led.Size())
	}
	if err := detector.RecordRules(ctx, rules); err != nil {
		stopFollowers()
		return err
	}
	c, _ := detector.Cursor(ctx)
	detectorCursor.Store(c)
	reg.MustRegister(lag("detector", detectorCursor.Load))
	alertLatency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "aitrail_alert_latency_seconds",
		Help:    "Time from the receipt of the record that fired an alert to the alert being recorded.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	reg.MustRegister(alertLatency)
	detector.OnRecorded = func(d time.Duration) { alertLatency.Observe(d.Seconds()) }
	detector.SetMaxGroups(cfg.Detect.MaxGroups)
	follow("detector", detector, followBatch, func(c uint64) { detectorCursor.Store(c) })
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_detector_records_total", Help: "Records the detection rules were evaluated on."},
			func() float64 { return float64(detector.Stats().Records) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_detector_evaluation_seconds_total", Help: "Time spent evaluating the detection rules."},
			func() float64 { return detector.Stats().EvaluationSeconds }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_alerts_recorded_total", Help: "Alert transitions recorded in the log.",
			ConstLabels: prometheus.Labels{"state": "fired"}}, func() float64 { return float64(detector.Stats().Fired) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_alerts_recorded_total", Help: "Alert transitions recorded in the log.",
			ConstLabels: prometheus.Labels{"state": "resolved"}}, func() float64 { return float64(detector.Stats().Resolved) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_detector_groups", Help: "Groups (and new_value values) the detection rules keep; each rule keeps at most detect.max_groups."},
			func() float64 { return float64(detector.Stats().Groups) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "aitrail_detector_groups_evicted_total", Help: "Groups the detection rules forgot, those seen least recently, to keep within detect.max_groups."},
			func() float64 { return float64(detector.Stats().GroupsEvicted) }),
	)
	api := &httpapi.Server{
		AccessWindow: cfg.AccessWindow,
		Ledger:       led,
		Index:        idx,
		Opener:       keyring,
		Subjects:     keyring,
		Scrubber:     idx,
		Ingest:       pipeline,
		Models:       models,
		Auth:         auth,
		PublicKey:    vkey,
		MaxBodyBytes: cfg.Limits.MaxBodyBytes,
		BodyBudget:   bodyBudget,
		OTLP: otlp.New(otlp.Options{
			Ingest:         pipeline,
			MaxBodyBytes:   cfg.Limits.MaxBodyBytes,
			MaxBatchEvents: cfg.Limits.MaxBatchEvents,
			KeepOtherSpans: cfg.Capture.OTLP.KeepOtherSpans,
			KeepOtherLogs:  cfg.Capture.OTLP.KeepOtherLogs,
			Registerer:     reg,
			Logger:         log,
		}),
		Registry: reg,
		Logger:   log,
		Ready: func() (bool, map[string]any) {
			err := led.Err()
			d := map[string]any{"ledger_records": led.Size(), "index_lag": behind(idx.Visible), "registry_lag": behind(registryCursor.Load),
				"sealing": led.SealStatus(), "alert_delivery": notifier.Status()}
			if err != nil {
				d["ledger_error"] = err.Error()
			}
			if _, since, serr, refusing := led.SyncStatus(); serr != nil {
				d["checkpoint_sync"] = map[string]any{"failing_since": since.UTC().Format(time.RFC3339), "error": serr.Error(), "writes_refused": refusing}
				if refusing && err == nil {
					err = serr
				}
			}
			free, refusing, serr := space.Status()
			st := map[string]any{"free_bytes": free, "min_free_bytes": cfg.Ledger.MinFreeBytes, "writes_refused": refusing}
			if serr != nil {
				st["error"] = serr.Error()
			}
			d["storage"] = st
			return err == nil && !refusing, d
		},
	}
	openaiProxy, anthropicProxy, err := captureProxies(cfg, pipeline, api.WriteError, log)
	if err != nil {
		stopFollowers()
		return err
	}
	api.OpenAI, api.Anthropic = openaiProxy, anthropicProxy
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		stopFollowers()
		return fmt.Errorf("couldn't listen: %w", err)
	}
	// Connections past the limit wait to be accepted: a flood of them
	// would otherwise take every file descriptor the process may open, and
	// the log, the index and the key store open files as they go.
	maxConns := connectionLimit(cfg.Limits.MaxConnections)
	ln = netutil.LimitListener(ln, maxConns)
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	var conns atomic.Int64
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_http_connections", Help: "Client connections open."},
			func() float64 { return float64(conns.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "aitrail_http_max_connections", Help: "Most client connections open at once (limits.max_connections); more wait to be accepted."},
			func() float64 { return float64(maxConns) }))
	handler := api.Handler()
	rateLimited := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "aitrail_ingest_rate_limited_total",
		Help: "Requests refused with 429 because their token had appended limits.token_events_per_second, by token id."}, []string{"token_id"})
	reg.MustRegister(rateLimited)
	pipeline.Rate.OnRefuse = func(tokenID string, events int) {
		rateLimited.WithLabelValues(tokenID).Inc()
		api.CountRateLimited(tokenID, events)
	}
	// Erasures whose records a stop, or a log refusing writes, kept out of
	// the log are recorded before anything is served.
	if err := api.RecordErasures(ctx); err != nil {
		log.Warn("couldn't record erasures whose keys are destroyed; tried again every access window", "err", err)
	}
	// The operational endpoints on a listener of their own, if configured:
	// probes and scrapes are then answered while the API's connections are
	// all taken.
	var ops *http.Server
	var opsLn net.Listener
	if cfg.OpsAddr != "" {
		if opsLn, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
			ln.Close()
			stopFollowers()
			return fmt.Errorf("couldn't listen on ops_addr: %w", err)
		}
		ops = &http.Server{Handler: opsHandler(handler, api.WriteError), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Add(-1)
			}
		},
	}
	fmt.Fprintf(stderr, "Log public key: %s\n", vkey)
	log.Info("aitrail serving", "addr", ln.Addr().String(), "tls", tlsConfig != nil,
		"client_certificates", tlsConfig != nil && tlsConfig.ClientCAs != nil, "data", cfg.DataDir, "log", verifier.Name(),
		"records", led.Size(), "public_key", vkey, "version", version,
		"openai_upstream", cfg.Capture.OpenAI.URL, "anthropic_upstream", cfg.Capture.Anthropic.URL,
		"max_connections", maxConns, "ops_addr", addrOf(opsLn), "token_events_per_second", cfg.Limits.TokenEventsPerSecond)

	// Counted accesses are recorded every window, and once more after the
	// listener has stopped.
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{}, 3)
	go func() { api.Run(runCtx); runDone <- struct{}{} }()
	go func() { notifier.Run(runCtx); runDone <- struct{}{} }()
	go func() { detector.Run(runCtx, cfg.Detect.Interval); runDone <- struct{}{} }()
	stopAPI := func() {
		stopRun()
		<-runDone
		<-runDone
		<-runDone
		stopFollowers()
		if err := detector.Save(); err != nil {
			log.Warn("couldn't save the detector state; the next start observes the last records again", "err", err)
		}
		if err := guard.Save(context.Background()); err != nil {
			log.Warn("couldn't store the erasure guard's cursor; the next start goes over the last records again", "err", err)
		}
	}

	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	if ops != nil {
		go func() {
			if err := ops.Serve(opsLn); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("ops_addr: %w", err)
			}
		}()
	}
	// A start from the log's start-up snapshot checks the records below it
	// while the server runs; damage there stops the server as it would
	// have stopped a start that read them.
	damaged := make(chan error, 1)
	go func() {
		if err := led.WaitChecked(runCtx); errors.Is(err, ledger.ErrTampered) {
			damaged <- err
		}
	}()
	var stopErr error
	select {
	case err := <-serveErr:
		stopAPI()
		return fmt.Errorf("server stopped: %w", err)
	case err := <-damaged:
		log.Error("stopping: the log does not match its signed tree", "err", err)
		stopErr = fmt.Errorf("the log does not match its signed tree: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("graceful shutdown timed out", "err", err)
	}
	if ops != nil {
		ops.Shutdown(shutCtx)
	}
	openaiProxy.Wait() // outcome events of the last proxied calls
	anthropicProxy.Wait()
	stopAPI()
	if err := led.Close(); err != nil && stopErr == nil {
		return fmt.Errorf("couldn't close the log cleanly: %w", err)
	}
	if stopErr != nil {
		return stopErr
	}
	log.Info("stopped", "records", led.Size())
	return nil
}

// opsHandler serves the operational endpoints of api, the API's handler,
// and answers anything else 404 as the API answers its errors.
func opsHandler(api http.Handler, writeError func(http.ResponseWriter, *http.Request, error)) http.Handler {
	mux := http.NewServeMux()
	for _, path := range []string{"GET /healthz", "GET /readyz", "GET /metrics"} {
		mux.Handle(path, api)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, apierr.New(http.StatusNotFound, "not_found", "this address serves only /healthz, /readyz and /metrics"))
	})
	return mux
}

// addrOf is l's address, or "" for none.
func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// captureProxies returns the recording proxies. One whose upstream is not
// configured answers every call 404 not_configured.
func captureProxies(cfg config.Config, pipeline *ingest.Pipeline, writeError func(http.ResponseWriter, *http.Request, error),
	log *slog.Logger) (openai, anthropic *proxy.Proxy, err error) {
	build := func(up config.Upstream, newProxy func(proxy.Config) (*proxy.Proxy, error)) (*proxy.Proxy, error) {
		c := proxy.Config{APIKey: up.APIKey, Timeout: up.Timeout, MaxBodyBytes: cfg.Limits.MaxBodyBytes,
			Ingest: pipeline, WriteError: writeError, Logger: log}
		if up.URL != "" {
			u, err := url.Parse(up.URL) // checked by Validate
			if err != nil {
				return nil, err
			}
			c.Upstream = u
		}
		return newProxy(c)
	}
	if openai, err = build(cfg.Capture.OpenAI, proxy.OpenAI); err != nil {
		return nil, nil, fmt.Errorf("couldn't set up the OpenAI proxy: %w", err)
	}
	if anthropic, err = build(cfg.Capture.Anthropic, proxy.Anthropic); err != nil {
		return nil, nil, fmt.Errorf("couldn't set up the Anthropic proxy: %w", err)
	}
	return openai, anthropic, nil
}

// indexLinger lets the query index apply records in batches even when they
// arrive one at a time; queries see new events at most this much later.
const indexLinger = 50 * time.Millisecond

// indexBatch is the most records the index applies in one transaction (the
// ledger hands out at most 32 MiB of records at once). Each transaction
// rewrites every index page it touches, and the id index and the postings
// of busy values (actors) are touched all over, so large transactions index
// a backlog much faster: with an index per filter, after batched load the
// index caught up at about 30,000 records/s with 5,000, 41,000 with 20,000
// and 44,000-67,000 with 50,000.
const indexBatch = 50_000

// followBatch is the most records the other followers (detector, model
// registry) take at once.
const followBatch = 5000

// indexBatchFor is indexBatch, or with index.max_lag set a quarter of that
// lag (at least followBatch): producers held back by the limit are then
// released in small steps rather than after one long transaction.
func indexBatchFor(maxLag uint64) int {
	if maxLag == 0 {
		return indexBatch
	}
	return int(min(indexBatch, max(followBatch, maxLag/4)))
}

// Garbage collector defaults for the server, unless GOGC or GOMEMLIMIT say
// otherwise: ingest allocates briskly but holds little, so collecting less
// often saves a sizeable share of CPU; the soft limit keeps the heap bounded.
const (
	serverGCPercent   = 400
	serverMemoryLimit = 384 << 20
)

// preallocate maps ledger.preallocate_bytes to the ledger's option, in
// which 0 means the default and a negative value none.
func preallocate(bytes int64) int64 {
	if bytes == 0 {
		return -1
	}
	return bytes
}

// extraProcs is how many Ps (goroutine run queues) the server runs with
// beyond Go's default of one per CPU, unless GOMAXPROCS says otherwise. The
// group commit's fdatasync and the query index's SQLite writes hold their
// thread in a system call for up to about a millisecond, and the runtime
// hands the P such a thread holds to other goroutines only after a delay;
// on a small machine a core is then idle while requests wait. With two
// spare Ps they run at once (2 vCPUs: single-event ingest 17k -> 19k
// events/s, with less CPU per request).
const extraProcs = 2

func tuneRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(serverMemoryLimit)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.SetDefaultGOMAXPROCS() // from the default, however often called
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + extraProcs)
	}
}

// recordKey extracts a stored record's idempotency key (tenant and id).
func recordKey(rec []byte) (string, error) {
	tenant, id, err := event.RecordKey(rec)
	if err != nil {
		return "", err
	}
	return ingest.Key(tenant, id), nil
}

func splitKey(key string) (tenant, id string) {
	for i := 0; i < len(key); i++ {
		if key[i] == 0 {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// connectionLimit is limits.max_connections, or for 0 half the process's
// limit of open files (which Go raises to its hard limit at start), between
// 64 and 10,000: the other half is left to the log's, the index's and the
// stores' files.
func connectionLimit(configured int) int {
	if configured > 0 {
		return configured
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	return int(min(max(rl.Cur/2, 64), 10_000))
}
