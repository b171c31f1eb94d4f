package ledger

import (
	"fmt"
	"sync"

	"github.com/aitrail/aitrail/internal/merkle"
)

// tileWriter writes the full tiles commits complete, on its own goroutine:
// creating a tile file took 100-300 µs of the sequencer's time, which is
// serial, for every 256 records (docs/BENCHMARKS.md, eleventh round). Until
// a tile's file is written it is served from memory, so readers of a
// published tree always find its tiles; the sync loop waits for the tiles
// of the tree it makes durable (flush), and after a tile failed to be
// written it makes nothing durable again. A tile that cannot be written
// stops the ledger, as it did when commits wrote them.
type tileWriter struct {
	l *Ledger

	mu      sync.Mutex
	pending map[merkle.TileID][]byte // queued, not yet written
	err     error                    // the first tile that could not be written

	jobs chan tileJob
	done chan struct{}
}

// tileJob is tiles to write, or, with flushed set, a marker to close once
// every tile queued before it is written.
type tileJob struct {
	tiles   []merkle.Tile
	flushed chan struct{}
}

func newTileWriter(l *Ledger) *tileWriter {
	w := &tileWriter{l: l, pending: map[merkle.TileID][]byte{}, jobs: make(chan tileJob, 1024), done: make(chan struct{})}
	go w.run()
	return w
}

// add queues tiles. It must be called before the tree that holds them is
// published.
func (w *tileWriter) add(tiles []merkle.Tile) {
	if len(tiles) == 0 {
		return
	}
	w.mu.Lock()
	for _, t := range tiles {
		w.pending[t.ID] = t.Data
	}
	w.mu.Unlock()
	w.jobs <- tileJob{tiles: tiles}
}

// get returns a tile queued but not yet written.
func (w *tileWriter) get(id merkle.TileID) ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, ok := w.pending[id]
	return data, ok
}

// flush waits until every tile queued so far is written. It returns an
// error if any tile could not be.
func (w *tileWriter) flush() error {
	ch := make(chan struct{})
	w.jobs <- tileJob{flushed: ch}
	<-ch
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// close writes what is queued and stops the writer. Nothing may be added
// after.
func (w *tileWriter) close() {
	close(w.jobs)
	<-w.done
}

func (w *tileWriter) run() {
	defer close(w.done)
	for j := range w.jobs {
		if j.flushed != nil {
			close(j.flushed)
			continue
		}
		for _, t := range j.tiles {
			err := w.l.writeTile(t)
			w.mu.Lock()
			if err == nil {
				delete(w.pending, t.ID)
			} else if w.err == nil {
				// Still served from memory; rebuilt from the segments at
				// the next start.
				w.err = fmt.Errorf("couldn't write tile %s: %w", t.ID.Path(), err)
				w.l.fail(w.err)
			}
			w.mu.Unlock()
		}
	}
}
