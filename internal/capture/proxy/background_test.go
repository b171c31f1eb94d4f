package proxy

import (
	"sync/atomic"
	"testing"
	"time"
)

// Go must not wait for busy workers: an outcome append stuck on a slow
// ledger would otherwise hold up the next call's answer.
func TestBackgroundNeverBlocks(t *testing.T) {
	b := newBackground()
	release := make(chan struct{})
	var ran atomic.Int64
	const n = 20
	queued := make(chan struct{})
	go func() {
		for range n {
			b.Go(func() { <-release; ran.Add(1) })
		}
		close(queued)
	}()
	select {
	case <-queued:
	case <-time.After(10 * time.Second):
		t.Fatal("Go blocked while every worker was busy")
	}
	if got := b.workers.Load(); got != n {
		t.Errorf("%d workers for %d blocked jobs, want %d", got, n, n)
	}
	close(release)
	b.Wait()
	if ran.Load() != n {
		t.Fatalf("Wait returned after %d of %d jobs", ran.Load(), n)
	}
}

// A job that comes while a worker waits runs on it: no goroutine is
// started per job.
func TestBackgroundReusesWorkers(t *testing.T) {
	b := newBackground()
	const n = 100
	for range n {
		b.Go(func() {})
		b.Wait()
		// Time for the worker to get back to waiting for work.
		time.Sleep(time.Millisecond)
	}
	if got := b.workers.Load(); got > n/10 {
		t.Fatalf("%d jobs one after another started %d workers, want a few at most", n, got)
	}
}
