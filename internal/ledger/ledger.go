// Package ledger is aitrail's sequencer and log storage: it appends records
// durably with group commit, grows the Merkle tree over them, publishes C2SP
// tiles and signed checkpoints, recovers after a crash, and serves the
// committed log to readers and followers.
//
// The ledger never acknowledges a record before it is fsynced, never repairs
// silently what disagrees with its last signed checkpoint, and never knows
// what a record means: it sees opaque bytes, an optional blob stored beside
// them, and an optional idempotency key.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dchest/siphash"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sys/unix"

	"github.com/aitrail/aitrail/internal/merkle"
)

// Errors callers act on.
var (
	// ErrPushback means the ledger's queue is full. Nothing was stored; the
	// caller should retry later. HTTP maps it to 503 with Retry-After.
	ErrPushback = errors.New("ledger is at capacity; retry later")
	// ErrClosed means the ledger has been closed.
	ErrClosed = errors.New("ledger is closed")
	// ErrFailed means a write or fsync failed and the ledger stopped
	// accepting appends; what it acknowledged before is safe. Restart the
	// process to recover.
	ErrFailed = errors.New("ledger stopped after a storage failure")
	// ErrTampered means stored data disagrees with the signed tree.
	ErrTampered = errors.New("log data does not match its signed tree")
	// ErrNotFound means a requested index, tile or bundle is not in the log.
	ErrNotFound = errors.New("not in the log")
	// ErrTooLarge means a record or blob exceeds the ledger's limits.
	ErrTooLarge = errors.New("record too large")
	// ErrUnsynced means the tiles and checkpoint file could not be made
	// durable for longer than Options.SyncGrace: appends are refused until
	// they can, so that what the checkpoint file does not cover stays
	// bounded. Nothing was stored; retry later.
	ErrUnsynced = errors.New("the log's tiles and checkpoint cannot be made durable")
)

// maxRecordBytes is the largest record: one C2SP entry.
const maxRecordBytes = 65535

// Defaults for Options.
const (
	DefaultSegmentSize    = 256 << 20
	DefaultMaxPending     = 200_000
	DefaultMaxBatchBytes  = 64 << 20
	DefaultMaxBlobSize    = 16 << 20
	DefaultSyncInterval   = time.Second
	DefaultSyncGrace      = 10 * time.Second
	DefaultTailEntries    = 16384
	DefaultPageCacheBytes = 64 << 20
	DefaultKeyFilterBytes = 128 << 20
	DefaultSnapshotEvery  = 1 << 20
	defaultForgetInterval = 50_000
)

// Options configure a Ledger. Signer, Verifier and Origin are required.
type Options struct {
	// Origin is the log's name: the first line of every checkpoint and the
	// name of its signing key.
	Origin string
	// Signer signs checkpoints; Verifier checks the stored checkpoint at
	// start. Both come from the log's key pair.
	Signer   note.Signer
	Verifier note.Verifier
	// SegmentSize is the size at which the active segment is sealed and a
	// new one started.
	SegmentSize int64
	// MaxPending bounds the records queued but not yet committed; beyond it
	// Append returns ErrPushback.
	MaxPending int
	// MaxBatchBytes bounds the bytes committed in one group commit.
	MaxBatchBytes int
	// MaxBlobSize bounds one blob appended (at most 1 GiB). Blobs already
	// stored are read whatever the current limit.
	MaxBlobSize int64
	// SyncInterval is how often tiles and the checkpoint are made durable.
	// Until then they can be rebuilt from the segments.
	SyncInterval time.Duration
	// SyncGrace is how long making them durable may keep failing before
	// Append refuses with ErrUnsynced (default the larger of ten
	// SyncIntervals and DefaultSyncGrace).
	SyncGrace time.Duration
	// Lookup finds where already committed records are by their
	// idempotency keys, for keys the ledger no longer keeps in memory (see
	// Forget); keys it does not know are absent from the result. Nil means
	// keys are only remembered in memory. What it finds is not trusted: the
	// record there is read back, checked against the tree, and must carry
	// the key, or the append fails with ErrTampered (an append answered as
	// a duplicate of a record that is not its own would be lost).
	Lookup func(ctx context.Context, keys []string) (map[string]Loc, error)
	// KeyOf extracts the idempotency key from a stored record. At start
	// the ledger reads the key of every record, to know which keys are
	// certainly new (then Lookup is not asked) and to remember those from
	// RecentFrom on. Required with Lookup.
	KeyOf func(record []byte) (string, error)
	// RecentFrom is the first index whose key Lookup may not find (the query
	// index's cursor).
	RecentFrom uint64
	// Seal says how complete files are protected (default SealOff).
	Seal SealMode
	// KeyFilterBytes bounds the memory of the filter of every key in the
	// log, which spares appends of new keys a Lookup (3 to 6 bytes a key;
	// default DefaultKeyFilterBytes, negative for no limit). Past it, the
	// filter goes on taking keys at a rising false-positive rate, so that
	// more appends ask Lookup.
	KeyFilterBytes int64
	// TailEntries is how many of the newest records the ledger keeps in
	// memory, with their Item.Value, for followers (see Entries); default
	// DefaultTailEntries, negative for none.
	TailEntries int
	// PageCacheBytes is how much of the newest log the ledger leaves in
	// the operating system's page cache: once durable, the pages of the
	// active segment older than that are dropped from it (and a segment's
	// remaining pages when the next one starts), so writing the log reuses
	// the same few pages of memory instead of taking fresh ones. Default
	// DefaultPageCacheBytes; negative leaves caching to the kernel.
	PageCacheBytes int64
	// Preallocate is how far ahead of its end the active segment is kept
	// filled with zeros, so that commits overwrite zeros instead of growing
	// the file (see prealloc.go). Default DefaultPreallocate; negative
	// appends instead, which lets SealImmutable keep the active segment
	// append-only (chattr +a), at a cost in commit time.
	Preallocate int64
	// SnapshotEvery is how far the log grows between start-up snapshots
	// (and at least an eighth of its size): the state a start would
	// otherwise rebuild from every record, written by the syncs and at
	// Close (see snapshot.go). Default DefaultSnapshotEvery records;
	// negative writes and reads none, so that every start reads every
	// record.
	SnapshotEvery int64
	// OnCommit, if set, is called after every group commit with its size.
	OnCommit func(records int, bytes int, took time.Duration)
	// Logger receives operational messages; default slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Origin == "" || o.Signer == nil || o.Verifier == nil {
		return errors.New("ledger: Origin, Signer and Verifier are required")
	}
	if o.Signer.Name() != o.Origin || o.Verifier.Name() != o.Origin {
		return fmt.Errorf("ledger: key name %q does not match origin %q", o.Signer.Name(), o.Origin)
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.MaxBlobSize <= 0 {
		o.MaxBlobSize = DefaultMaxBlobSize
	}
	if o.MaxBlobSize > maxFrameBlob {
		return fmt.Errorf("ledger: MaxBlobSize %d exceeds the format's limit of %d bytes", o.MaxBlobSize, int64(maxFrameBlob))
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.SyncGrace <= 0 {
		o.SyncGrace = max(10*o.SyncInterval, DefaultSyncGrace)
	}
	if o.PageCacheBytes == 0 {
		o.PageCacheBytes = DefaultPageCacheBytes
	}
	if o.TailEntries == 0 {
		o.TailEntries = DefaultTailEntries
	}
	if o.KeyFilterBytes == 0 {
		o.KeyFilterBytes = DefaultKeyFilterBytes
	}
	if o.Preallocate == 0 {
		o.Preallocate = DefaultPreallocate
	}
	if o.SnapshotEvery == 0 {
		o.SnapshotEvery = DefaultSnapshotEvery
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Lookup != nil && o.KeyOf == nil {
		return errors.New("ledger: Lookup needs KeyOf")
	}
	return nil
}

// Item is one record to append.
type Item struct {
	// Key makes the append idempotent: an item whose key was committed
	// before is not stored again. Empty means no key.
	Key string
	// Record is stored verbatim and is the Merkle leaf; at most 65,535 bytes.
	Record []byte
	// Blob is stored beside the record, outside the tree (the record should
	// commit to its digest). May be empty.
	Blob []byte
	// Value, if set, is the caller's decoded form of Record. The ledger
	// keeps it with the record among the recent entries it serves to
	// followers from memory (Entry.Value), so that a follower close to the
	// head need not read the files or decode the record again. It must be
	// exactly what decoding Record gives, and neither it nor Record may be
	// changed after Append.
	Value any
}

// Result says where an item is in the log.
type Result struct {
	Index uint64
	// Duplicate is true when the item's key was already committed: nothing
	// was stored and Index is the original record's.
	Duplicate bool
}

// Receipt acknowledges an Append.
type Receipt struct {
	Results []Result
	// Checkpoint is a signed checkpoint whose tree covers every result.
	Checkpoint []byte
}

// segment is one segment file. count and size are the committed (published)
// values; they only grow.
type segment struct {
	first uint64
	path  string
	f     *os.File // read handle
	count atomic.Uint64
	size  atomic.Int64
}

// published is the state readers see: everything in it is durable.
type published struct {
	size       uint64
	checkpoint []byte
	root       merkle.Hash
	partial    []merkle.Tile // partial tiles of the tree of this size
}

// Ledger is the log. Its methods are safe for concurrent use.
type Ledger struct {
	dir  string
	opts Options
	log  *slog.Logger

	pub atomic.Pointer[published]

	mu      sync.RWMutex // guards segs, bundles, sizeCh and tail
	segs    []*segment
	bundles []bundleLoc // location of record 256*i
	sizeCh  chan struct{}
	tail    tail

	queue   chan *request
	pending atomic.Int64
	epoch   atomic.Uint64 // bumped whenever keys are forgotten
	forget  atomic.Uint64 // keys of records below this may be forgotten
	lookups atomic.Int64  // appends that asked Options.Lookup

	// Owned by the sequencer goroutine.
	builder    *merkle.Builder
	active     *os.File
	activeSize int64
	fill       *filler // nil when commits append
	tiles      *tileWriter
	uncached   int64 // the active segment's pages below this were dropped from the page cache
	recent     map[keyHash]uint64
	seen       *keyFilter // every key in the log
	hasher     keyHasher
	recentQ    []keyAt
	forgot     uint64
	wbuf       []byte
	failedErr  atomic.Value // the storage failure that stopped appends
	// syncFailing is, while making tiles and the checkpoint durable
	// fails, since when and why; syncFailures counts the failed attempts.
	syncFailing  atomic.Pointer[syncFailure]
	syncFailures atomic.Uint64
	madeDirs     map[string]bool
	packs        map[int]*openPack // by level; owned by the tile writer once open

	seal   *sealer
	sealMu sync.Mutex
	toSeal []tileFile // complete tile packs to seal once durable

	cacheMu   sync.Mutex
	tileCache map[merkle.TileID][]byte
	hashes    merkle.HashCache

	syncMu       sync.Mutex
	unsynced     atomic.Int64 // full tiles written since the last sync
	partialFiles []string     // partial tile files to remove once the next sync's are durable

	snapKey    []byte                    // authenticates start-up snapshots
	secretRoot []byte                    // what Secret derives from (logSecrets)
	snapSize   atomic.Uint64             // records the newest start-up snapshot covers
	snapWant   atomic.Bool               // the sequencer is to capture its state after its next commit
	snapReady  atomic.Pointer[snapState] // the state it captured
	checked    chan struct{}             // closed when the check of the records below the start's snapshot ends
	checkErr   error                     // what it found; read after checked is closed

	stop     chan struct{}
	done     chan struct{}
	syncDone chan struct{}
	closeErr error
	closing  sync.Once
}

type tileFile struct {
	path string
	end  uint64 // the tree size from which the pack is complete
}

type bundleLoc struct {
	seg *segment
	off int64
}

type keyAt struct {
	key   keyHash
	index uint64
}

// keyHash stands for an idempotency key in the keys the sequencer
// remembers and in the key filter: its 128-bit SipHash-2-4 under a key of
// the log's own (keyHasher). Unlike the keys themselves it holds no
// pointer, so the hundreds of thousands remembered while the query index
// catches up cost the garbage collector nothing to scan and a third of the
// memory. Two keys share a hash with a probability of about 2^-128: far
// below that of a disk error; SipHash is a keyed pseudorandom function and
// its key is secret (see logSecrets), so ids cannot be chosen to collide.
// The key is the same in every run, so that the key filter can be kept in
// a start-up snapshot. Appenders hash their keys, so that the sequencer does
// not.
type keyHash struct{ a, b uint64 }

// keyHasher hashes idempotency keys under a secret SipHash key.
type keyHasher struct{ k0, k1 uint64 }

func (h keyHasher) hash(k string) keyHash {
	a, b := siphash.Hash128(h.k0, h.k1, []byte(k))
	return keyHash{a, b}
}

type request struct {
	items   []Item
	keys    []keyHash     // of the items' keys (zero for none)
	leaves  []merkle.Hash // of the items' records
	epoch   uint64
	results []Result
	cp      []byte
	err     error
	done    chan struct{}
}

// errRecheck asks Append to look its keys up again: keys were forgotten
// between its lookup and its commit.
var errRecheck = errors.New("recheck keys")

// Files and directories in the ledger directory.
const (
	segDir         = "segments"
	checkpointFile = "checkpoint"
	watermarkFile  = "tiles-durable"
)

// Open opens (creating if needed) the ledger in dir, recovering from a crash
// if there was one: an incomplete tail that was never acknowledged is cut
// off, tiles are rebuilt from the segments, and the result is checked against
// the last signed checkpoint. Anything else that disagrees is an error
// wrapping ErrTampered that names the record; Open never repairs it.
func Open(dir string, opts Options) (*Ledger, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	l := &Ledger{
		dir:      dir,
		opts:     opts,
		log:      opts.Logger,
		sizeCh:   make(chan struct{}),
		queue:    make(chan *request, 4096),
		recent:   map[keyHash]uint64{},
		seen:     newKeyFilter(0, max(0, opts.KeyFilterBytes)),
		madeDirs: map[string]bool{},
		packs:    map[int]*openPack{},
		seal:     newSealer(opts.Seal, opts.Preallocate < 0),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	var err error
	if l.hasher, l.snapKey, l.secretRoot, err = logSecrets(opts.Signer); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, segDir), 0o700); err != nil {
		return nil, fmt.Errorf("couldn't create ledger directory: %w", err)
	}
	below, err := l.recover()
	if err != nil {
		l.closeFiles()
		return nil, err
	}
	if err := l.loadTail(); err != nil {
		l.closeFiles()
		return nil, err
	}
	if below != nil {
		if err := l.rememberKeys(below.size); err != nil {
			l.closeFiles()
			return nil, err
		}
	}
	l.tiles = newTileWriter(l)
	if opts.Preallocate > 0 {
		l.fill = newFiller(opts.Preallocate, opts.SegmentSize, l.log)
		l.fill.attach(l.active, l.activeSize)
	}
	l.forgot = opts.RecentFrom
	l.checked = make(chan struct{})
	if below != nil {
		go l.checkBelow(*below)
	} else {
		close(l.checked)
	}
	go l.sequence()
	l.syncDone = make(chan struct{})
	go l.syncLoop()
	return l, nil
}

// loadTail fills the tail with the newest records of the log, read back
// from the segment files: a read of an event acknowledged before a restart
// then finds it while the query index catches up, as it would have before,
// and followers close to the head get them without reading the files.
// Records served from the tail are not checked again, so these are checked
// against their leaf hashes here, as any record read from a file is.
func (l *Ledger) loadTail() error {
	size := l.pub.Load().size
	from := size - min(size, uint64(max(l.opts.TailEntries, 0)))
	l.tail = newTail(l.opts.TailEntries, from)
	err := l.readChecked(from, size, func(entries []Entry) error {
		l.tail.add(entries)
		return nil
	})
	if err != nil {
		return fmt.Errorf("couldn't read the newest records: %w", err)
	}
	return nil
}

// readChecked reads the published records from to to-1 from the files and
// passes them to fn in order, a batch at a time, each checked against its
// leaf hash.
func (l *Ledger) readChecked(from, to uint64, fn func([]Entry) error) error {
	p := l.pub.Load()
	hr := merkle.TileHashReader(p.size, l.tileReader(p.size, p.partial), nil)
	for next := from; next < to; {
		entries, err := l.Entries(context.Background(), next, int(to-next))
		if err == nil && len(entries) == 0 {
			err = fmt.Errorf("no record at index %d of %d", next, p.size)
		}
		if err != nil {
			return err
		}
		hashIdx := make([]int64, len(entries))
		for i, e := range entries {
			hashIdx[i] = tlog.StoredHashIndex(0, int64(e.Index))
		}
		leaves, err := hr.ReadHashes(hashIdx)
		if err != nil {
			return fmt.Errorf("couldn't read leaf hashes: %w", err)
		}
		for i, e := range entries {
			if merkle.LeafHash(e.Data) != leaves[i] {
				return &RecordError{Index: e.Index, Offset: e.Offset, Problem: "does not match its leaf hash"}
			}
		}
		if err := fn(entries); err != nil {
			return err
		}
		next += uint64(len(entries))
	}
	return nil
}

// KeyFilterStats describes the filter of the log's keys.
type KeyFilterStats struct {
	// Bytes is the memory it takes; Full is true once it has reached
	// Options.KeyFilterBytes and takes keys beyond its design.
	Bytes int64
	Full  bool
	// Lookups counts the appends that asked Options.Lookup about keys the
	// filter may have seen.
	Lookups int64
}

// KeyFilter reports on the filter of the log's keys.
func (l *Ledger) KeyFilter() KeyFilterStats {
	bytes, full := l.seen.Bytes()
	return KeyFilterStats{Bytes: bytes, Full: full, Lookups: l.lookups.Load()}
}

// Size returns the number of committed records.
func (l *Ledger) Size() uint64 { return l.pub.Load().size }

// Checkpoint returns the newest signed checkpoint.
func (l *Ledger) Checkpoint() []byte { return l.pub.Load().checkpoint }

// Append commits items durably, in order and atomically with respect to a
// crash (either all of a call's new records are acknowledged or none), and
// returns their indexes with a checkpoint covering them. Items whose key was
// committed before are not stored again. If Append returns an error other
// than a context error, nothing was stored. If ctx ends while the items are
// being committed, they may still be committed.
func (l *Ledger) Append(ctx context.Context, items []Item) (Receipt, error) {
	if err := l.syncRefusal(); err != nil {
		return Receipt{}, err
	}
	for _, it := range items {
		if len(it.Record) == 0 || len(it.Record) > maxRecordBytes {
			return Receipt{}, fmt.Errorf("%w: record of %d bytes (limit %d)", ErrTooLarge, len(it.Record), maxRecordBytes)
		}
		if int64(len(it.Blob)) > l.opts.MaxBlobSize {
			return Receipt{}, fmt.Errorf("%w: blob of %d bytes (limit %d)", ErrTooLarge, len(it.Blob), l.opts.MaxBlobSize)
		}
	}
	for {
		r, err := l.append(ctx, items)
		if err != errRecheck {
			return r, err
		}
	}
}

func (l *Ledger) append(ctx context.Context, items []Item) (Receipt, error) {
	epoch := l.epoch.Load()
	hashes := make([]keyHash, len(items))
	for i, it := range items {
		if it.Key != "" {
			hashes[i] = l.hasher.hash(it.Key)
		}
	}
	var known map[string]uint64
	if l.opts.Lookup != nil {
		var keys []string
		for i, it := range items {
			// Keys the filter has never seen are new: no query needed.
			if it.Key != "" && l.seen.MayContain(hashes[i]) {
				keys = append(keys, it.Key)
			}
		}
		if len(keys) > 0 {
			l.lookups.Add(1)
			found, err := l.opts.Lookup(ctx, keys)
			if err != nil {
				return Receipt{}, fmt.Errorf("couldn't look up keys: %w", err)
			}
			if known, err = l.checkFound(found); err != nil {
				return Receipt{}, err
			}
		}
	}
	// Every item is sent unless its key is in the log already; results and
	// pos, where each sent item's result goes, are needed only then.
	send, sendKeys := items, hashes
	var results []Result
	var pos []int
	if len(known) > 0 {
		results = make([]Result, len(items))
		send, sendKeys = nil, nil
		for i, it := range items {
			if idx, ok := known[it.Key]; ok && it.Key != "" {
				results[i] = Result{Index: idx, Duplicate: true}
				continue
			}
			send = append(send, it)
			sendKeys = append(sendKeys, hashes[i])
			pos = append(pos, i)
		}
	}
	if len(send) == 0 {
		if results == nil {
			results = []Result{}
		}
		return Receipt{Results: results, Checkpoint: l.Checkpoint()}, nil
	}
	if n := l.pending.Add(int64(len(send))); n > int64(l.opts.MaxPending) && n != int64(len(send)) {
		l.pending.Add(-int64(len(send)))
		return Receipt{}, ErrPushback
	}
	// Leaf hashes are computed here, on the appenders' goroutines, not in
	// the sequencer, whose work is serial.
	leaves := make([]merkle.Hash, len(send))
	for i, it := range send {
		leaves[i] = merkle.LeafHash(it.Record)
	}
	req := &request{items: send, keys: sendKeys, leaves: leaves, epoch: epoch, done: make(chan struct{})}
	select {
	case l.queue <- req:
	case <-l.stop:
		l.pending.Add(-int64(len(send)))
		return Receipt{}, ErrClosed
	case <-ctx.Done():
		l.pending.Add(-int64(len(send)))
		return Receipt{}, ctx.Err()
	default:
		l.pending.Add(-int64(len(send)))
		return Receipt{}, ErrPushback
	}
	<-req.done
	if req.err != nil {
		return Receipt{}, req.err
	}
	if results == nil {
		return Receipt{Results: req.results, Checkpoint: req.cp}, nil
	}
	for j, i := range pos {
		results[i] = req.results[j]
	}
	return Receipt{Results: results, Checkpoint: req.cp}, nil
}

// checkFound reads back the records Lookup found and checks that each is
// intact and carries the key it was found by, and returns their indexes by
// key.
func (l *Ledger) checkFound(found map[string]Loc) (map[string]uint64, error) {
	if len(found) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(found))
	locs := make([]Loc, 0, len(found))
	for k, loc := range found {
		keys = append(keys, k)
		locs = append(locs, loc)
	}
	recs, err := l.ReadRecords(locs, nil)
	if errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("%w: the lookup of keys found a record beyond the log: %w", ErrTampered, err)
	}
	if err != nil {
		return nil, fmt.Errorf("couldn't check a record found by its key: %w", err)
	}
	known := make(map[string]uint64, len(found))
	for i, rec := range recs {
		if key, err := l.opts.KeyOf(rec); err != nil || key != keys[i] {
			return nil, &RecordError{Index: locs[i].Index, Offset: locs[i].Offset,
				Problem: "was found by an idempotency key it does not carry (the lookup's source, the query index, was altered)"}
		}
		known[keys[i]] = locs[i].Index
	}
	return known, nil
}

// Forget lets the ledger drop from memory the keys of records below index:
// from now on Options.Lookup finds them. The query index calls it as its
// cursor advances.
func (l *Ledger) Forget(below uint64) {
	for {
		cur := l.forget.Load()
		if below <= cur || l.forget.CompareAndSwap(cur, below) {
			return
		}
	}
}

// Close stops accepting appends, commits what is queued, makes tiles and the
// checkpoint durable and closes the files.
func (l *Ledger) Close() error {
	l.closing.Do(func() {
		close(l.stop)
		<-l.done
		<-l.syncDone
		<-l.checked
		if err := l.syncTiles(); err != nil && l.closeErr == nil {
			l.closeErr = err
		}
		if l.closeErr == nil && l.failedErr.Load() == nil {
			// Nothing is appended any more: the sequencer's state is the
			// published one.
			l.snapshotAtClose()
		}
		l.tiles.close()
		if l.fill != nil {
			l.fill.close()
		}
		// Leave no zeros behind: the file ends with its records. (A roll
		// that failed halfway leaves no active segment.)
		if l.fill != nil && l.active != nil {
			if err := l.cutZeros(); err != nil && l.closeErr == nil {
				l.closeErr = err
			}
		}
		l.closeFiles()
	})
	return l.closeErr
}

func (l *Ledger) closeFiles() {
	if l.active != nil {
		l.active.Close()
	}
	l.closePacks()
	l.mu.Lock()
	for _, s := range l.segs {
		s.f.Close()
	}
	l.mu.Unlock()
}

// sequence is the group-commit loop: it takes whatever requests are queued,
// commits them with one write and one fsync, and replies. Under load the
// queue fills while the previous fsync runs, so batches grow by themselves;
// at low load each request is committed at once.
func (l *Ledger) sequence() {
	defer close(l.done)
	var batch []*request
	for {
		batch = batch[:0]
		select {
		case r := <-l.queue:
			batch = append(batch, r)
		case <-l.stop:
			// Commit what was queued before Close.
			for {
				select {
				case r := <-l.queue:
					l.commit([]*request{r})
				default:
					return
				}
			}
		}
		bytes := 0
		for _, it := range batch[0].items {
			bytes += len(it.Record) + len(it.Blob)
		}
		for more := true; more && bytes < l.opts.MaxBatchBytes; {
			select {
			case r := <-l.queue:
				batch = append(batch, r)
				for _, it := range r.items {
					bytes += len(it.Record) + len(it.Blob)
				}
			default:
				more = false
			}
		}
		l.commit(batch)
		l.forgetKeys()
	}
}

// forgetKeys drops remembered keys below the forget watermark, in coarse
// steps so that the epoch, which makes in-flight appends recheck, rarely
// changes.
func (l *Ledger) forgetKeys() {
	target := l.forget.Load()
	if target < l.forgot+defaultForgetInterval {
		return
	}
	i := 0
	for ; i < len(l.recentQ) && l.recentQ[i].index < target; i++ {
		k := l.recentQ[i]
		if l.recent[k.key] == k.index {
			delete(l.recent, k.key)
		}
	}
	l.recentQ = append(l.recentQ[:0:0], l.recentQ[i:]...)
	l.forgot = target
	l.epoch.Add(1)
}

func (l *Ledger) commit(batch []*request) {
	start := time.Now()
	var n int
	for _, r := range batch {
		n += len(r.items)
	}
	defer l.pending.Add(-int64(n))
	reply := func(err error) {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
			close(r.done)
		}
	}
	if l.failedErr.Load() != nil {
		reply(ErrFailed)
		return
	}
	if l.activeSize >= l.opts.SegmentSize {
		if err := l.roll(); err != nil {
			l.fail(fmt.Errorf("couldn't start a new segment: %w", err))
			reply(ErrFailed)
			return
		}
	}

	// Requests that looked their keys up before keys were last forgotten
	// must look again, unless every key is still remembered here.
	epoch := l.epoch.Load()
	live := batch[:0:0]
	for _, r := range batch {
		if r.epoch != epoch {
			for i, it := range r.items {
				if _, ok := l.recent[r.keys[i]]; it.Key != "" && !ok {
					r.err = errRecheck
					break
				}
			}
		}
		if r.err == nil {
			live = append(live, r)
		}
	}

	// Assign indexes, skipping keys already committed or earlier in the
	// batch. New keys go into recent at once: should the commit fail, the
	// ledger fails, and nothing is ever committed after it.
	next := l.builder.Size()
	buf := l.wbuf[:0]
	added := make([]Entry, 0, n) // the records this commit stores, as followers get them
	leaves := make([]merkle.Hash, 0, n)
	newKeys := make([]keyAt, 0, n)
	var bundleOffs []int64 // where each record starting an entry bundle is
	lastFrame := 0
	for _, r := range live {
		r.results = make([]Result, len(r.items))
		for i, it := range r.items {
			h := r.keys[i]
			if it.Key != "" {
				if idx, ok := l.recent[h]; ok {
					r.results[i] = Result{Index: idx, Duplicate: true}
					continue
				}
			}
			if next%merkle.TileWidth == 0 {
				bundleOffs = append(bundleOffs, l.activeSize+int64(len(buf)))
			}
			lastFrame = len(buf)
			buf = appendFrame(buf, it.Record, it.Blob)
			added = append(added, Entry{Index: next, Data: it.Record, Value: it.Value, Offset: l.activeSize + int64(lastFrame)})
			leaves = append(leaves, r.leaves[i])
			r.results[i] = Result{Index: next}
			if it.Key != "" {
				l.recent[h] = next
				newKeys = append(newKeys, keyAt{h, next})
			}
			next++
		}
	}
	if len(added) > 0 {
		markCommitEnd(buf, lastFrame)
	}
	l.wbuf = buf

	if len(added) > 0 {
		if err := l.writeActive(buf); err != nil {
			l.fail(fmt.Errorf("couldn't write segment: %w", err))
			reply(ErrFailed)
			return
		}
		// Synced here, not on another goroutine while this one hashes:
		// that goroutine waited for a P until this one blocked, so the
		// sync started late (the appenders hash now).
		if err := unix.Fdatasync(int(l.active.Fd())); err != nil {
			l.fail(fmt.Errorf("couldn't fsync segment: %w", err))
			reply(ErrFailed)
			return
		}
		var tiles []merkle.Tile
		for _, h := range leaves {
			full, err := l.builder.Append(h)
			if err != nil {
				l.fail(fmt.Errorf("couldn't extend the tree: %w", err))
				reply(ErrFailed)
				return
			}
			tiles = append(tiles, full...)
		}
		l.tiles.add(tiles)
	}
	pub := l.pub.Load()
	if len(added) > 0 {
		var err error
		if pub, err = l.sign(); err != nil {
			l.fail(err)
			reply(ErrFailed)
			return
		}
	}
	l.activeSize += int64(len(buf))
	if len(added) > 0 {
		l.dropCached(l.activeSize-l.opts.PageCacheBytes, false)
	}
	for _, k := range newKeys {
		l.seen.Add(k.key)
	}
	l.recentQ = append(l.recentQ, newKeys...)

	l.mu.Lock()
	seg := l.segs[len(l.segs)-1]
	for _, off := range bundleOffs {
		l.bundles = append(l.bundles, bundleLoc{seg, off})
	}
	seg.count.Add(uint64(len(added)))
	seg.size.Store(l.activeSize)
	l.tail.add(added)
	l.pub.Store(pub)
	close(l.sizeCh)
	l.sizeCh = make(chan struct{})
	l.mu.Unlock()

	for _, r := range batch {
		r.cp = pub.checkpoint
	}
	reply(nil)
	if l.opts.OnCommit != nil {
		l.opts.OnCommit(len(added), len(buf), time.Since(start))
	}
	if l.snapWant.Load() {
		l.snapWant.Store(false)
		l.snapReady.Store(l.captureState())
	}
}

// dropCacheStep is the least the ledger drops from the page cache at once,
// but for a segment's last pages: each drop is a system call that walks the
// pages dropped.
const dropCacheStep = 8 << 20

// dropCached lets the kernel drop the page cache of the active segment
// below offset end, which must be durable; all drops the rest of the
// segment, and is for a complete segment. Writing a page the cache does not
// hold takes a free page of memory, and on a virtual machine whose host
// takes back the memory the guest leaves idle, a fresh page costs several
// times what one just dropped does: without this, writing the log cost 5-10
// times the CPU once a few GiB had been written (docs/BENCHMARKS.md,
// eighth round). Records read back after they have left the cache
// (queries, proofs, followers far behind) are read from disk.
func (l *Ledger) dropCached(end int64, all bool) {
	if l.opts.PageCacheBytes < 0 {
		return
	}
	if !all {
		end &^= pageSize - 1
		if end-l.uncached < dropCacheStep {
			return
		}
	}
	if end <= l.uncached {
		return
	}
	// Advice only: if it fails, the pages stay cached.
	_ = unix.Fadvise(int(l.active.Fd()), l.uncached, end-l.uncached, unix.FADV_DONTNEED)
	l.uncached = end
}

// pageSize is the unit of the page cache dropCached works in (4 KiB pages
// or a multiple of them: dropping less than a page drops nothing).
const pageSize = 4096

// sign computes the root of the current tree and signs a checkpoint for it.
func (l *Ledger) sign() (*published, error) {
	root, err := l.builder.Root()
	if err != nil {
		return nil, fmt.Errorf("couldn't compute tree root: %w", err)
	}
	cp := merkle.Checkpoint{Origin: l.opts.Origin, Size: l.builder.Size(), Hash: root}
	signed, err := cp.Sign(l.opts.Signer)
	if err != nil {
		return nil, fmt.Errorf("couldn't sign checkpoint: %w", err)
	}
	return &published{size: cp.Size, checkpoint: signed, root: root, partial: l.builder.Partial()}, nil
}

func (l *Ledger) fail(err error) {
	l.log.Error("ledger stopped accepting writes", "err", err)
	l.failedErr.Store(err)
}

// Err returns nil while the ledger accepts appends, ErrClosed after Close,
// and an error wrapping ErrFailed after a storage failure.
func (l *Ledger) Err() error {
	select {
	case <-l.stop:
		return ErrClosed
	default:
	}
	if err, _ := l.failedErr.Load().(error); err != nil {
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	return nil
}

// writeActive writes buf at the end of the active segment's records.
func (l *Ledger) writeActive(buf []byte) error {
	if l.fill == nil {
		// Open for appending only (it may be append-only on disk too):
		// each write lands at the file's end, activeSize.
		_, err := l.active.Write(buf)
		return err
	}
	l.fill.reserve(l.activeSize + int64(len(buf)))
	_, err := l.active.WriteAt(buf, l.activeSize)
	return err
}

// cutZeros cuts the zeros ahead of the active segment's records off, once
// the filler is detached, and makes the new size durable.
func (l *Ledger) cutZeros() error {
	if err := l.active.Truncate(l.activeSize); err != nil {
		return fmt.Errorf("couldn't cut the zeros after segment's records: %w", err)
	}
	return l.active.Sync()
}

// roll seals the active segment and starts a new one.
func (l *Ledger) roll() error {
	if l.fill != nil {
		l.fill.detach()
		if err := l.cutZeros(); err != nil {
			return err
		}
	} else if err := l.active.Sync(); err != nil {
		return err
	}
	l.dropCached(l.activeSize, true)
	if err := l.active.Close(); err != nil {
		return err
	}
	l.active = nil
	l.mu.RLock()
	done := l.segs[len(l.segs)-1].path
	l.mu.RUnlock()
	if err := l.seal.seal(done); err != nil {
		l.log.Warn("couldn't seal a complete segment", "err", err)
	}
	seg, f, err := l.createSegment(l.builder.Size())
	if err != nil {
		return err
	}
	l.active, l.activeSize, l.uncached = f, segHeaderSize, 0
	l.mu.Lock()
	l.segs = append(l.segs, seg)
	l.mu.Unlock()
	if l.fill != nil {
		l.fill.attach(f, segHeaderSize)
	}
	return nil
}

// createSegment creates a segment file durably and returns it with a
// write handle.
func (l *Ledger) createSegment(first uint64) (*segment, *os.File, error) {
	path := filepath.Join(l.dir, segDir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|l.appendFlag(), 0o600)
	if err != nil {
		return nil, nil, err
	}
	if _, err := f.Write(segHeader(first)); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, nil, err
	}
	l.seal.appendOnly(path)
	r, err := os.Open(path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	seg := &segment{first: first, path: path, f: r}
	seg.size.Store(segHeaderSize)
	return seg, f, nil
}

// appendFlag is the flag the active segment is opened with for writing:
// O_APPEND, unless commits write over zeros at an offset.
func (l *Ledger) appendFlag() int {
	if l.opts.Preallocate > 0 {
		return 0
	}
	return os.O_APPEND
}

// sealDurableTiles seals the complete tile packs that the durable
// watermark, now size, covers: recovery never rewrites those.
func (l *Ledger) sealDurableTiles(size uint64) {
	l.sealMu.Lock()
	var ready []string
	keep := l.toSeal[:0]
	for _, t := range l.toSeal {
		if t.end <= size {
			ready = append(ready, t.path)
		} else {
			keep = append(keep, t)
		}
	}
	l.toSeal = keep
	l.sealMu.Unlock()
	for _, path := range ready {
		if err := l.seal.seal(path); err != nil {
			l.log.Warn("couldn't seal a complete tile pack", "err", err)
		}
	}
}

// SealStatus reports how the ledger's complete files are protected.
func (l *Ledger) SealStatus() SealStatus { return l.seal.status() }

// syncLoop makes tiles and the checkpoint durable every SyncInterval.
func (l *Ledger) syncLoop() {
	defer close(l.syncDone)
	t := time.NewTicker(l.opts.SyncInterval)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if p := l.pub.Load(); p.size != last {
				if err := l.syncTiles(); err != nil {
					l.syncFailed(err)
					continue
				}
				if f := l.syncFailing.Swap(nil); f != nil {
					l.log.Info("tiles and checkpoint are durable again", "after", time.Since(f.since).Round(time.Millisecond))
				}
				last = p.size
			}
			l.snapshotDurable(last)
		}
	}
}

// syncFailure is a run of failures to make tiles and the checkpoint
// durable.
type syncFailure struct {
	since  time.Time
	err    error
	logged time.Time // when the run was last logged
}

// syncFailed notes a failure to make tiles and the checkpoint durable, and
// logs it at the first failure of a run and every ten seconds after.
func (l *Ledger) syncFailed(err error) {
	l.syncFailures.Add(1)
	now := time.Now()
	f := &syncFailure{since: now, err: err}
	if prev := l.syncFailing.Load(); prev != nil {
		f.since, f.logged = prev.since, prev.logged
	}
	if now.Sub(f.logged) >= 10*time.Second {
		f.logged = now
		l.log.Error("couldn't make tiles and the checkpoint durable; appends are refused once this lasts longer than the grace",
			"err", err, "failing_for", now.Sub(f.since).Round(time.Millisecond), "grace", l.opts.SyncGrace)
	}
	l.syncFailing.Store(f)
}

// syncRefusal returns an error wrapping ErrUnsynced once tiles and the
// checkpoint have not been made durable for longer than SyncGrace.
func (l *Ledger) syncRefusal() error {
	f := l.syncFailing.Load()
	if f == nil || time.Since(f.since) < l.opts.SyncGrace {
		return nil
	}
	return fmt.Errorf("%w (failing for %v): %v", ErrUnsynced, time.Since(f.since).Round(time.Second), f.err)
}

// SyncStatus reports the failed attempts to make tiles and the checkpoint
// durable, and the current run of failures: since when and why (a zero
// time and nil while they succeed). Appends are refused (ErrUnsynced) while
// refusing is true.
func (l *Ledger) SyncStatus() (failures uint64, since time.Time, err error, refusing bool) {
	failures = l.syncFailures.Load()
	if f := l.syncFailing.Load(); f != nil {
		since, err = f.since, f.err
	}
	return failures, since, err, l.syncRefusal() != nil
}

// syncTiles makes the tiles of the current published tree durable: partial
// tiles are written, everything is flushed with one syncfs, then the
// watermark and checkpoint files record the size that is now safe.
func (l *Ledger) syncTiles() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	p := l.pub.Load()
	if l.tiles != nil {
		// The full tiles of p's tree are queued: written once this returns.
		if err := l.tiles.flush(); err != nil {
			return err
		}
	}
	var partialPaths []string
	for _, t := range p.partial {
		path := tileFilePath(l.dir, t.ID)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		if err := writeFileAtomic(path, t.Data, 0o600, false); err != nil {
			return err
		}
		partialPaths = append(partialPaths, path)
	}
	d, err := os.Open(l.dir)
	if err != nil {
		return err
	}
	err = unix.Syncfs(int(d.Fd()))
	d.Close()
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	// The checkpoint first: a crash between the two then leaves a
	// watermark at or below the checkpoint, which recovery accepts. The
	// other way round, a crash after the first watermark left a log whose
	// checkpoint was missing, which it must refuse.
	if err := writeFileAtomic(filepath.Join(l.dir, checkpointFile), p.checkpoint, 0o600, true); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(l.dir, watermarkFile), []byte(strconv.FormatUint(p.size, 10)+"\n"), 0o600, true); err != nil {
		return err
	}
	l.unsynced.Store(0)
	l.sealDurableTiles(p.size)
	keep := map[string]bool{}
	for _, p := range partialPaths {
		keep[p] = true
	}
	for _, p := range l.partialFiles {
		if !keep[p] {
			os.Remove(p)
			os.Remove(filepath.Dir(p)) // the N.p directory, once empty
		}
	}
	l.partialFiles = partialPaths
	return nil
}
