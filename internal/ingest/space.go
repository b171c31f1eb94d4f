package ingest

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aitrail/aitrail/internal/apierr"
)

// ErrLowSpace refuses an append while the disk holding the data directory
// has less free space than the reserve (SpaceReserve). It is a 503, which
// producers retry after Retry-After.
var ErrLowSpace = apierr.New(http.StatusServiceUnavailable, "insufficient_storage",
	"the server is short of disk space; writes resume once space is freed")

// spaceCheckEvery is how long a measure of free space is used before it is
// taken again: a few statfs calls a second, whatever the load.
const spaceCheckEvery = 250 * time.Millisecond

// SpaceReserve refuses appends while the file system holding Dir has fewer
// than Min bytes available, and admits them again as soon as it has more.
// A disk that fills up stops the log for good (a failed write may have
// left part of a commit, which only recovery at start cuts off); refusing
// writes before that keeps room for what is under way — the query index
// and the other followers catching up, tiles, snapshots, the server's own
// records — and needs no restart once space is freed. Its Admit is a
// Pipeline.Admit, which the server's own appends (records of reads, alerts)
// do not go through: they take their few bytes from the reserve.
type SpaceReserve struct {
	// Dir is a path on the file system to watch.
	Dir string
	// Min is the fewest bytes that must be available; 0 turns the reserve
	// off.
	Min uint64
	// OnChange, if set, is called when appends start or stop being
	// refused, with the bytes available then.
	OnChange func(refusing bool, free uint64)

	checked  atomic.Int64 // when free was last measured, in Unix nanoseconds
	free     atomic.Uint64
	refusing atomic.Bool
	err      atomic.Pointer[error] // the last measure's error, if it failed
}

// Admit returns ErrLowSpace while the file system has fewer than Min bytes
// available, else nil. If free space cannot be measured, appends are
// admitted (the log itself reports failing writes).
func (s *SpaceReserve) Admit(context.Context) error {
	if s.Min == 0 {
		return nil
	}
	s.measure(false)
	if s.refusing.Load() {
		return ErrLowSpace
	}
	return nil
}

// Status returns the bytes available when last measured (measuring again
// if that was long ago), whether appends are being refused, and the error
// of the last measure, if any.
func (s *SpaceReserve) Status() (free uint64, refusing bool, err error) {
	s.measure(false)
	if p := s.err.Load(); p != nil {
		err = *p
	}
	return s.free.Load(), s.refusing.Load(), err
}

// Check measures at once: for the start, which reports a disk already
// short of space before the first request.
func (s *SpaceReserve) Check() { s.measure(true) }

// measure takes the free space again if the last measure is older than
// spaceCheckEvery (or now), on one caller while the others go on with the
// last one.
func (s *SpaceReserve) measure(now bool) {
	t := time.Now().UnixNano()
	last := s.checked.Load()
	if !now && t-last < int64(spaceCheckEvery) || !s.checked.CompareAndSwap(last, t) {
		return
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.Dir, &st); err != nil {
		err = fmt.Errorf("couldn't measure the free space of the data directory: %w", err)
		s.err.Store(&err)
		return
	}
	s.err.Store(nil)
	free := st.Bavail * uint64(st.Bsize)
	s.free.Store(free)
	refusing := s.Min > 0 && free < s.Min
	if s.refusing.Swap(refusing) != refusing && s.OnChange != nil {
		s.OnChange(refusing, free)
	}
}
