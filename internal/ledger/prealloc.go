package ledger

import (
	"bytes"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Writing the active segment over zeros.
//
// A group commit that appends to a file grows it, and fdatasync must then
// commit the file system's journal as well as the data (the new size is
// metadata a read of the data needs). On ext4 that made each commit's sync
// three to ten times as long as writing the data alone, and the journal's
// own thread took CPU the server needed (docs/BENCHMARKS.md, eleventh
// round). The ledger therefore keeps the active segment filled with zeros,
// and their size made durable, some way ahead of its end, in the
// background: a commit then overwrites zeros, and its fdatasync writes only
// its data.
//
// The zeros are never part of the log. Recovery and verify treat an
// all-zero rest of the last segment as its end (frameScanner.zeroTail), and
// the segment is cut to its records when it is completed, at a clean stop,
// and at start.

// DefaultPreallocate is how far ahead of the active segment's end the
// ledger keeps it filled with zeros.
const DefaultPreallocate = 16 << 20

// zeroChunk is the most zeros written by one system call.
const zeroChunk = 1 << 20

var zeros = make([]byte, zeroChunk)

// filler keeps the active segment filled with zeros ahead of the commits.
// The sequencer tells it where its writes end (reserve); it fills from
// there on, never below, so the two never write the same bytes.
type filler struct {
	ahead int64 // how far ahead of the commits to fill
	limit int64 // fill no further than this offset
	log   *slog.Logger

	mu       sync.Mutex
	changed  *sync.Cond // writing or busy went false
	f        *os.File   // the segment being filled; nil when detached
	filled   int64      // zeros are written below this (and the file is at least this long)
	writeEnd int64      // the sequencer writes below this
	writing  bool       // zeros are being written from filled on
	busy     bool       // f is in use: zeros are being written or synced
	failed   bool       // the last fill failed; logged once until one succeeds

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newFiller(ahead, limit int64, log *slog.Logger) *filler {
	fl := &filler{ahead: ahead, limit: limit, log: log,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	fl.changed = sync.NewCond(&fl.mu)
	go fl.run()
	return fl
}

// attach makes f, whose records end at end, the file to fill. Filling
// starts with the first commit's reserve, so that a ledger opened and
// never appended to (reindex) writes no zeros.
func (fl *filler) attach(f *os.File, end int64) {
	fl.mu.Lock()
	fl.f, fl.filled, fl.writeEnd = f, end, end
	fl.mu.Unlock()
}

// detach stops filling the current file, waiting until the filler no
// longer uses it.
func (fl *filler) detach() {
	fl.mu.Lock()
	for fl.busy {
		fl.changed.Wait()
	}
	fl.f = nil
	fl.mu.Unlock()
}

// close stops the filler.
func (fl *filler) close() {
	fl.detach()
	close(fl.stop)
	<-fl.done
}

// reserve is called by the sequencer before it writes below end. If zeros
// are being written where it is about to write, it waits for them.
func (fl *filler) reserve(end int64) {
	fl.mu.Lock()
	for fl.writing && end > fl.filled {
		fl.changed.Wait()
	}
	fl.writeEnd = max(fl.writeEnd, end)
	low := fl.filled-fl.writeEnd < fl.ahead/2 && fl.filled < fl.limit
	fl.mu.Unlock()
	if low {
		fl.poke()
	}
}

func (fl *filler) poke() {
	select {
	case fl.wake <- struct{}{}:
	default:
	}
}

func (fl *filler) run() {
	defer close(fl.done)
	for {
		select {
		case <-fl.stop:
			return
		case <-fl.wake:
		}
		fl.fill()
	}
}

// fill writes zeros from where the sequencer's writes end (or the zeros
// already written) to ahead beyond it, then makes the file's new size
// durable.
func (fl *filler) fill() {
	fl.mu.Lock()
	f, from := fl.f, max(fl.filled, fl.writeEnd)
	to := min(fl.writeEnd+fl.ahead, fl.limit)
	if f == nil || to <= from {
		fl.mu.Unlock()
		return
	}
	fl.writing, fl.busy = true, true
	fl.mu.Unlock()

	off := from
	var err error
	for off < to && err == nil {
		var n int
		n, err = f.WriteAt(zeros[:min(to-off, zeroChunk)], off)
		off += int64(n)
	}

	// Commits may write up to here while the new size is synced.
	fl.mu.Lock()
	fl.filled, fl.writing = off, false
	fl.changed.Broadcast()
	fl.mu.Unlock()
	if err == nil {
		err = unix.Fdatasync(int(f.Fd()))
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.busy = false
	fl.changed.Broadcast()
	// Zeros are only an optimisation: without them commits grow the
	// file, which is slower but as safe. A full disk shows up there too.
	switch {
	case err != nil && !fl.failed:
		fl.failed = true
		fl.log.Warn("couldn't fill the active segment ahead with zeros; commits append instead", "err", err)
	case err == nil:
		fl.failed = false
	}
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}
