package ledger

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/aitrail/aitrail/internal/merkle"
)

// A start-up snapshot (the file start-snapshot) holds what a start would
// otherwise rebuild by reading and hashing every record of the log: the
// Merkle builder's state at a size S whose tiles are durable, where every
// segment holding records below S ends and where every 256th record below S
// starts (entry bundles and reads), and the filter of every key in the log.
// A start that can use one reads only the records from S on, so its time
// follows how far the log grew since the snapshot, not the log's size.
//
// The records below S are then read and checked in the background instead
// (checkBelow): re-hashed into a new tree whose full tiles must match the
// stored ones and whose state at S must be the snapshot's. Until that ends,
// damage to them is found by reads, which check every record against its
// leaf hash, and by `aitrail verify`; when it ends, damage stops the ledger
// as it would have stopped the start. The snapshot's own tree is checked
// at start: the tree grown from it must give the root of the last signed
// checkpoint.
//
// A snapshot is written at Close and, by the syncs, whenever the durable
// log has grown by Options.SnapshotEvery records and by an eighth since the
// last one. It is authenticated with HMAC-SHA256 under a key derived from
// the log's signing key (logSecrets); one that does not verify, or does not
// fit the log on disk, is not used (a warning says why) and the start reads
// every record. Only ledgers that read keys (Options.KeyOf) write one, so
// that a snapshot's key filter holds every key.
const snapshotFile = "start-snapshot"

const snapMagic = "aitrail start-up snapshot 1\n"

// snapState is the sequencer's state at a commit boundary, as a snapshot
// records it.
type snapState struct {
	size    uint64
	builder []byte    // merkle.Builder state at size
	segs    []snapSeg // every segment, the last holding record size's start
	bundles []int64   // offset of record 256*i in its segment, for 256*i < size
}

type snapSeg struct {
	first uint64
	end   int64 // where its records end; in the last, where record size starts
}

// startSnapshot is a snapshot read back.
type startSnapshot struct {
	snapState
	tree   *merkle.Builder
	filter *keyFilter
}

// logSecrets derives the ledger's secrets from the log's signing key: the
// SipHash key of key hashes and the key that authenticates start-up
// snapshots. Its input is an Ed25519 signature of a fixed text, which only
// the holder of the log's key can make and which is the same in every run
// (Ed25519 signatures are deterministic); the text is not a checkpoint, so
// the log never publishes that signature.
func logSecrets(s note.Signer) (keyHasher, []byte, []byte, error) {
	sig, err := s.Sign([]byte("aitrail ledger secrets\n"))
	if err != nil {
		return keyHasher{}, nil, nil, fmt.Errorf("ledger: couldn't derive the log's secrets: %w", err)
	}
	hk, err := hkdf.Key(sha256.New, sig, nil, "aitrail key hashes", 16)
	if err != nil {
		return keyHasher{}, nil, nil, err
	}
	mk, err := hkdf.Key(sha256.New, sig, nil, "aitrail start-up snapshot", 32)
	if err != nil {
		return keyHasher{}, nil, nil, err
	}
	return keyHasher{binary.LittleEndian.Uint64(hk), binary.LittleEndian.Uint64(hk[8:])}, mk, sig, nil
}

// Secret returns a 32-byte secret for purpose, derived from the log's
// signing key like the ledger's own secrets: the same in every run, and
// known only to the holder of that key. The server makes the ids of the
// records it writes itself with such a secret, so that nobody can take
// one first.
func (l *Ledger) Secret(purpose string) []byte {
	k, err := hkdf.Key(sha256.New, l.secretRoot, nil, purpose, 32)
	if err != nil {
		panic(err) // only for a length HKDF cannot give
	}
	return k
}

// captureState copies the sequencer's state for a snapshot. It runs on the
// sequencer goroutine (or once it has stopped), after a commit.
func (l *Ledger) captureState() *snapState {
	state, _ := l.builder.MarshalBinary()
	st := &snapState{size: l.builder.Size(), builder: state}
	l.mu.RLock()
	for _, s := range l.segs {
		st.segs = append(st.segs, snapSeg{s.first, s.size.Load()})
	}
	st.bundles = make([]int64, len(l.bundles))
	for i, b := range l.bundles {
		st.bundles[i] = b.off
	}
	l.mu.RUnlock()
	return st
}

// snapshots reports whether the ledger writes start-up snapshots.
func (l *Ledger) snapshots() bool { return l.opts.SnapshotEvery > 0 && l.opts.KeyOf != nil }

// snapshotDurable runs after each sync, durable being the size whose tiles
// are durable: it writes the state the sequencer captured once its tiles
// are, or asks for one when the log has grown enough since the last.
func (l *Ledger) snapshotDurable(durable uint64) {
	if !l.snapshots() {
		return
	}
	if st := l.snapReady.Load(); st != nil {
		if st.size <= durable {
			l.snapReady.Store(nil)
			l.saveSnapshot(st)
		}
		return
	}
	if grown := durable - min(durable, l.snapSize.Load()); grown >= uint64(l.opts.SnapshotEvery) && grown >= durable/8 {
		l.snapWant.Store(true)
	}
}

// snapshotAtClose writes a snapshot of the final state, if the log grew
// since the last one. The sequencer has stopped and every tile is durable.
func (l *Ledger) snapshotAtClose() {
	if l.snapshots() && l.builder != nil && l.builder.Size() > l.snapSize.Load() {
		l.saveSnapshot(l.captureState())
	}
}

func (l *Ledger) saveSnapshot(st *snapState) {
	start := time.Now()
	n, err := l.writeSnapshot(st)
	if err != nil {
		l.log.Warn("couldn't write the start-up snapshot; the next start may read more of the log", "err", err)
		return
	}
	l.snapSize.Store(st.size)
	l.log.Info("wrote the start-up snapshot", "records", st.size, "bytes", n, "seconds", time.Since(start).Seconds())
}

// writeSnapshot writes st and the key filter as the start-up snapshot,
// through a temporary file, and returns its size.
func (l *Ledger) writeSnapshot(st *snapState) (int64, error) {
	path := filepath.Join(l.dir, snapshotFile)
	f, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	mac := hmac.New(sha256.New, l.snapKey)
	w := bufio.NewWriterSize(io.MultiWriter(f, mac), 1<<20)
	head := make([]byte, 0, len(snapMagic)+16+len(st.builder)+16*len(st.segs)+8*len(st.bundles))
	head = append(head, snapMagic...)
	head = binary.LittleEndian.AppendUint64(head, st.size)
	head = binary.LittleEndian.AppendUint32(head, uint32(len(st.builder)))
	head = append(head, st.builder...)
	head = binary.LittleEndian.AppendUint32(head, uint32(len(st.segs)))
	for _, s := range st.segs {
		head = binary.LittleEndian.AppendUint64(head, s.first)
		head = binary.LittleEndian.AppendUint64(head, uint64(s.end))
	}
	head = binary.LittleEndian.AppendUint64(head, uint64(len(st.bundles)))
	for _, off := range st.bundles {
		head = binary.LittleEndian.AppendUint64(head, uint64(off))
	}
	if _, err := w.Write(head); err != nil {
		return 0, err
	}
	if err := l.seen.writeTo(w); err != nil {
		return 0, err
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	if _, err := f.Write(mac.Sum(nil)); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return 0, err
	}
	return fi.Size(), syncDir(l.dir)
}

// maxBuilderState bounds the Merkle builder's state: its size, 64 hashes
// and eight partial tiles.
const maxBuilderState = 8 + 64*merkle.HashSize + 8*merkle.TileWidth*merkle.HashSize

// readSnapshot reads the start-up snapshot: nil if there is none, an error
// saying why if it cannot be used.
func (l *Ledger) readSnapshot() (*startSnapshot, error) {
	f, err := os.Open(filepath.Join(l.dir, snapshotFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	body := fi.Size() - sha256.Size
	if body < int64(len(snapMagic)) {
		return nil, errors.New("it is too short")
	}
	mac := hmac.New(sha256.New, l.snapKey)
	r := bufio.NewReaderSize(io.TeeReader(io.LimitReader(f, body), mac), 1<<20)
	head := make([]byte, len(snapMagic)+12)
	if _, err := io.ReadFull(r, head); err != nil || string(head[:len(snapMagic)]) != snapMagic {
		return nil, errors.New("it is not a start-up snapshot of this version")
	}
	s := &startSnapshot{}
	s.size = binary.LittleEndian.Uint64(head[len(snapMagic):])
	n := binary.LittleEndian.Uint32(head[len(snapMagic)+8:])
	if n > maxBuilderState {
		return nil, errors.New("its tree state is too large")
	}
	s.builder = make([]byte, n)
	var nsegs [4]byte
	if _, err := io.ReadFull(r, s.builder); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, nsegs[:]); err != nil {
		return nil, err
	}
	segs := binary.LittleEndian.Uint32(nsegs[:])
	if int64(segs)*16 > body || segs == 0 {
		return nil, fmt.Errorf("it lists %d segments", segs)
	}
	seg := make([]byte, 16*int(segs)+8)
	if _, err := io.ReadFull(r, seg); err != nil {
		return nil, err
	}
	for i := range int(segs) {
		s.segs = append(s.segs, snapSeg{binary.LittleEndian.Uint64(seg[16*i:]), int64(binary.LittleEndian.Uint64(seg[16*i+8:]))})
	}
	bundles := binary.LittleEndian.Uint64(seg[16*segs:])
	if bundles != (s.size+merkle.TileWidth-1)/merkle.TileWidth || bundles > uint64(body)/8 {
		return nil, fmt.Errorf("it has %d entry bundles for %d records", bundles, s.size)
	}
	offs := make([]byte, 8*bundles)
	if _, err := io.ReadFull(r, offs); err != nil {
		return nil, err
	}
	s.bundles = make([]int64, bundles)
	for i := range s.bundles {
		s.bundles[i] = int64(binary.LittleEndian.Uint64(offs[8*i:]))
	}
	if s.filter, err = readKeyFilter(r, max(0, l.opts.KeyFilterBytes), body); err != nil {
		return nil, fmt.Errorf("its key filter: %w", err)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return nil, errors.New("it has data after its key filter")
	}
	tag := make([]byte, sha256.Size)
	if _, err := f.ReadAt(tag, body); err != nil {
		return nil, err
	}
	if !hmac.Equal(tag, mac.Sum(nil)) {
		return nil, errors.New("it is not authentic (it was changed, or written for another log key)")
	}
	s.tree = merkle.NewBuilder()
	if err := s.tree.UnmarshalBinary(s.builder); err != nil || s.tree.Size() != s.size {
		return nil, fmt.Errorf("its tree state is not one of %d records (%v)", s.size, err)
	}
	return s, nil
}

// fits says why s cannot be used with the log on disk, whose segments start
// at firsts and whose tiles are durable for durable records, or nil.
func (s *startSnapshot) fits(dir string, firsts []uint64, durable uint64) error {
	if s.size > durable {
		return fmt.Errorf("it covers %d records, but tiles are durable for %d", s.size, durable)
	}
	if len(s.segs) > len(firsts) {
		return fmt.Errorf("it lists %d segments, the log has %d", len(s.segs), len(firsts))
	}
	bundle := 0
	for i, sg := range s.segs {
		if firsts[i] != sg.first {
			return fmt.Errorf("segment %s is not in the log", segmentName(sg.first))
		}
		end := s.size // records of this segment below the snapshot end here
		if i+1 < len(s.segs) {
			end = s.segs[i+1].first
		}
		if sg.first > end || sg.end < segHeaderSize {
			return fmt.Errorf("segment %s does not fit its records", segmentName(sg.first))
		}
		fi, err := os.Stat(filepath.Join(dir, segDir, segmentName(sg.first)))
		if err != nil {
			return err
		}
		if last := i == len(s.segs)-1; !last && fi.Size() != sg.end || last && fi.Size() < sg.end {
			return fmt.Errorf("segment %s is %d bytes, its records end at byte %d", segmentName(sg.first), fi.Size(), sg.end)
		}
		prev := int64(-1)
		for ; bundle < len(s.bundles) && uint64(bundle)*merkle.TileWidth < end; bundle++ {
			if off := s.bundles[bundle]; off < segHeaderSize || off <= prev || off >= sg.end {
				return fmt.Errorf("record %d is outside segment %s", bundle*merkle.TileWidth, segmentName(sg.first))
			}
			prev = s.bundles[bundle]
		}
	}
	if bundle != len(s.bundles) {
		return fmt.Errorf("record %d is outside the segments it lists", bundle*merkle.TileWidth)
	}
	return nil
}

// bundlesIn returns the offsets of the entry bundles of records first to
// end-1 (a segment's records below the snapshot).
func (s *startSnapshot) bundlesIn(first, end uint64) []int64 {
	from := (first + merkle.TileWidth - 1) / merkle.TileWidth
	to := (end + merkle.TileWidth - 1) / merkle.TileWidth
	return s.bundles[from:to]
}

// belowSnapshot is what checkBelow checks: the records below size, which a
// start took from a snapshot whose tree state they must give.
type belowSnapshot struct {
	size  uint64
	state []byte
}

// checkBelow reads the records below the start's snapshot, in the
// background, and checks them as a start that read them would have: their
// frames and checksums, their leaf hashes grown into a tree whose full tiles
// must be the stored ones and whose state at the snapshot's size must be
// the snapshot's (which the start checked against the signed checkpoint),
// and where entry bundles start. Damage stops the ledger's appends, as a
// storage failure does, and is reported by WaitChecked.
func (l *Ledger) checkBelow(b belowSnapshot) {
	defer close(l.checked)
	started, lastReport := time.Now(), time.Now()
	tree := merkle.NewBuilder()
	l.mu.RLock()
	bundles := l.bundles
	l.mu.RUnlock()
	err := l.scan(0, b.size, false, func(idx uint64, fr frame) error {
		if idx%merkle.TileWidth == 0 {
			select {
			case <-l.stop:
				return ErrClosed
			default:
			}
			if fr.off != bundles[idx/merkle.TileWidth].off {
				return fmt.Errorf("%w: record %d: starts at offset %d, the start-up snapshot says %d",
					ErrTampered, idx, fr.off, bundles[idx/merkle.TileWidth].off)
			}
			if time.Since(lastReport) > 30*time.Second {
				l.log.Info("checking the records below the start-up snapshot", "records", idx, "of", b.size,
					"per_second", int(float64(idx)/time.Since(started).Seconds()))
				lastReport = time.Now()
			}
		}
		full, err := tree.Append(merkle.LeafHash(fr.record))
		if err != nil {
			return err
		}
		for _, t := range full {
			if err := l.compareTile(t.ID, t.Data); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		if state, _ := tree.MarshalBinary(); !bytes.Equal(state, b.state) {
			err = fmt.Errorf("%w: the first %d records do not give the tree of the start-up snapshot; run `aitrail verify --data` for details",
				ErrTampered, b.size)
		}
	}
	switch {
	case errors.Is(err, ErrClosed):
		l.checkErr = ErrClosed
	case err != nil:
		l.checkErr = err
		l.fail(err)
	default:
		l.log.Info("checked the records below the start-up snapshot", "records", b.size, "seconds", time.Since(started).Seconds())
	}
}

// SnapshotStats describes the ledger's start-up snapshots.
type SnapshotStats struct {
	// Records is how many records the newest snapshot, written or read at
	// start, covers (0: none).
	Records uint64
	// Checking is true while the records below the start's snapshot are
	// being checked (checkBelow).
	Checking bool
}

// Snapshot reports on the ledger's start-up snapshots.
func (l *Ledger) Snapshot() SnapshotStats {
	st := SnapshotStats{Records: l.snapSize.Load()}
	select {
	case <-l.checked:
	default:
		st.Checking = true
	}
	return st
}

// WaitChecked waits until the records that the start took from its start-up
// snapshot without reading them have been read and checked, and returns
// what that found: nil; an error wrapping ErrTampered, after which the
// ledger accepts no appends (Err reports ErrFailed), as a start that read
// them would have refused to open; ErrClosed if Close came first; or ctx's
// error. Without a snapshot the start read every record, and it returns nil
// at once.
func (l *Ledger) WaitChecked(ctx context.Context) error {
	select {
	case <-l.checked:
		return l.checkErr
	case <-ctx.Done():
		return ctx.Err()
	}
}
