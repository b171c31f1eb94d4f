package proxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// background runs the appends of outcome events on goroutines kept between
// calls. A goroutine started for each call would begin with a small stack
// and grow it again through the whole ingest path every time, which cost
// about 2 % of the server's CPU under proxy load.
type background struct {
	jobs    chan func() // unbuffered: a send succeeds only if a worker waits
	pending sync.WaitGroup
	workers atomic.Int64 // workers started so far
}

func newBackground() *background { return &background{jobs: make(chan func())} }

// workerIdle is how long a worker with nothing to do waits for more work
// before it ends.
const workerIdle = 5 * time.Second

// Go runs f on a waiting worker, or on a new one if none waits; it never
// blocks on f.
func (b *background) Go(f func()) {
	b.pending.Add(1)
	select {
	case b.jobs <- f:
	default:
		b.workers.Add(1)
		go b.work(f)
	}
}

// Wait returns once every function given to Go has returned.
func (b *background) Wait() { b.pending.Wait() }

func (b *background) work(f func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		b.pending.Done()
		idle.Reset(workerIdle)
		select {
		case f = <-b.jobs:
		case <-idle.C:
			return
		}
	}
}
