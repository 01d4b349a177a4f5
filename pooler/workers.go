package pooler

import (
	"runtime"
	"slices"
	"sync"
	"time"
)

// Session workers. Every accepted client needs a goroutine for its
// sign-in, and in a connection storm (a new connection per transaction)
// making one per client costs more than the sign-in's own work: the fresh
// goroutine's small stack is grown and copied several times on the way
// through SCRAM, token checks and the log lines (about a tenth of the
// pooler's CPU in a plain-password storm). A worker goroutine that finished
// one client instead waits briefly for the next, keeping the stack it has
// grown, so that a steady stream of short connections runs on a few
// long-lived goroutines.
//
// The idle workers form a stack: the one that finished last is the next to
// run, so that when fewer are needed the others wait out workerIdle and
// exit (with a queue, a trickle of connections would keep every one of
// them alive). At most maxIdleWorkers wait: after a burst of sign-ins (ten
// thousand clients connecting), the goroutines that served it exit instead
// of keeping their stacks.

// workerIdle is how long a worker waits for the next client before it
// exits.
const workerIdle = 5 * time.Second

// maxIdleWorkers bounds the workers that wait: enough for the sign-ins in
// flight at once in a storm of short connections.
var maxIdleWorkers = max(32, 8*runtime.GOMAXPROCS(0))

// workers runs functions on idle worker goroutines, starting one when none
// is waiting. Owned by its Server; stop makes the idle ones exit.
type workers struct {
	mu      sync.Mutex
	idle    []*worker // the last to finish on top
	stopped bool
}

// worker is one worker goroutine; next takes its next function (nil:
// exit), sent by whoever takes it off the idle stack.
type worker struct {
	next chan func()
}

// run runs f on the idle worker that finished last, or on a new one.
func (w *workers) run(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		wk := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		wk.next <- f // buffered: never blocks
		return
	}
	w.mu.Unlock()
	go w.loop(f)
}

func (w *workers) loop(f func()) {
	wk := &worker{next: make(chan func(), 1)}
	var timer *time.Timer
	for f != nil {
		f()
		w.mu.Lock()
		if w.stopped || len(w.idle) >= maxIdleWorkers {
			w.mu.Unlock()
			return
		}
		w.idle = append(w.idle, wk)
		w.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(workerIdle)
		} else {
			timer.Reset(workerIdle)
		}
		select {
		case f = <-wk.next:
			timer.Stop()
		case <-timer.C:
			w.mu.Lock()
			if i := slices.Index(w.idle, wk); i >= 0 {
				w.idle = slices.Delete(w.idle, i, i+1)
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			// Taken off the stack at the same moment: its function
			// is on the way.
			f = <-wk.next
		}
	}
}

// idleCount is the number of workers waiting now.
func (w *workers) idleCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}

// stop makes the idle workers exit, and busy ones when they finish; run
// still works afterwards, on goroutines that exit when done.
func (w *workers) stop() {
	w.mu.Lock()
	w.stopped = true
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, wk := range idle {
		wk.next <- nil
	}
}
