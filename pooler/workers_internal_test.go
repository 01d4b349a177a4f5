package pooler

import (
	"sync"
	"testing"
	"time"
)

// The worker that finished last runs the next function; a worker stays
// on the stack while it waits; stop makes the waiting ones exit.
func TestWorkersReuseLastIdle(t *testing.T) {
	w := &workers{}
	// Three at once: three workers.
	var started sync.WaitGroup
	release := make(chan struct{})
	for range 3 {
		started.Add(1)
		w.run(func() { started.Done(); <-release })
	}
	started.Wait()
	close(release)
	waitIdle := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for w.idleCount() != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d idle workers, want %d", w.idleCount(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitIdle(3)
	w.mu.Lock()
	top := w.idle[len(w.idle)-1]
	w.mu.Unlock()
	done := make(chan struct{})
	w.run(func() {
		w.mu.Lock()
		for _, wk := range w.idle {
			if wk == top {
				t.Error("the worker running is still on the idle stack")
			}
		}
		w.mu.Unlock()
		close(done)
	})
	<-done
	waitIdle(3)
	w.stop()
	waitIdle(0)
	// After stop, run still runs.
	ran := make(chan struct{})
	w.run(func() { close(ran) })
	<-ran
}
