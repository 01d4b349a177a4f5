package pooler

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/puddle/v2"
)

// Clients waiting for a server of a full pool. When every server of a pool
// is in use, a client joins the pool's serverQueue and the next clean
// server released is handed straight to the oldest waiter: one buffered
// channel send, no trip through puddle's idle stack and semaphore, and no
// context, timer or select allocated per wait. Under load (more clients than
// pool_size) nearly every transaction waits, so this is on the hot path.
//
// puddle still owns the servers: it opens them, counts them against
// pool_size and keeps the idle ones. A client takes the queue only when the
// pool is full and has nothing idle; otherwise, and while its database is
// paused or the pool has a reserve pool, it waits in puddle as before
// (pool.acquireRaw). Clients waiting in puddle come first: release hands a
// server to the queue only when none waits there.
//
// No wake-up is lost: a waiter joins the queue before it looks at the pool
// once more, and whoever returns a server to puddle (release) or frees a
// slot (discard) looks at the queue after doing so. One of the two sees the
// other. The janitor looks again every second all the same.

// serverQueue is one pool's queue of waiting clients, oldest first.
type serverQueue struct {
	n  atomic.Int32 // waiters queued; read without mu on the release path
	mu sync.Mutex
	// head and tail of a doubly linked list of waiters, guarded by mu.
	head, tail *serverWaiter
}

// serverWaiter is one client's place in a serverQueue. Whoever takes it off
// the queue (handOff, kick) sends exactly one value on ch: a server, or nil
// for "look again". Waiters are pooled, so a client holds one only while
// it waits.
type serverWaiter struct {
	prev, next *serverWaiter
	queued     bool // guarded by the queue's mu
	ch         chan *puddle.Resource[*serverConn]
	timer      *time.Timer

	// loopc, when set, is a client on the event loop (loopclient.go):
	// instead of a send on ch, the value goes into loopRes and the
	// client's loop is asked to run its delivered function.
	loopc   *clientConn
	loopRes *puddle.Resource[*serverConn]
}

// deliver hands the waiter, just taken off its queue, its one value.
func (w *serverWaiter) deliver(res *puddle.Resource[*serverConn]) {
	if c := w.loopc; c != nil {
		w.loopRes = res
		c.ls.loop.post(c.ls.delivered)
		return
	}
	w.ch <- res
}

// release gives a loop waiter, off its queue and delivered (or expired),
// back to the pool of waiters.
func (w *serverWaiter) release() {
	w.loopc, w.loopRes = nil, nil
	serverWaiters.Put(w)
}

var serverWaiters = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &serverWaiter{ch: make(chan *puddle.Resource[*serverConn], 1), timer: t}
}}

// push queues w: at the back, or at the front for a waiter that was told to
// look again and keeps its turn.
func (q *serverQueue) push(w *serverWaiter, front bool) {
	q.mu.Lock()
	w.queued = true
	if q.head == nil {
		w.prev, w.next = nil, nil
		q.head, q.tail = w, w
	} else if front {
		w.prev, w.next = nil, q.head
		q.head.prev = w
		q.head = w
	} else {
		w.prev, w.next = q.tail, nil
		q.tail.next = w
		q.tail = w
	}
	q.n.Add(1)
	q.mu.Unlock()
}

// unlinkLocked takes w off the queue.
func (q *serverQueue) unlinkLocked(w *serverWaiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	q.n.Add(-1)
}

// remove takes w off the queue if it is still there. False means someone
// took it off and has sent, or is about to send, its one value on w.ch.
func (q *serverQueue) remove(w *serverWaiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return false
	}
	q.unlinkLocked(w)
	return true
}

// pop takes the oldest waiter off the queue, nil if there is none.
func (q *serverQueue) pop() *serverWaiter {
	if q.n.Load() == 0 {
		return nil
	}
	q.mu.Lock()
	w := q.head
	if w != nil {
		q.unlinkLocked(w)
	}
	q.mu.Unlock()
	return w
}

// handOff gives res to the oldest waiter; false if nobody waits.
func (q *serverQueue) handOff(res *puddle.Resource[*serverConn]) bool {
	w := q.pop()
	if w == nil {
		return false
	}
	w.deliver(res)
	return true
}

// kick tells the oldest waiter to look at the pool again: a server went
// back to puddle or a slot became free.
func (q *serverQueue) kick() {
	if w := q.pop(); w != nil {
		w.deliver(nil)
	}
}

// kickAll tells every waiter to look again (resume, resize, shutdown).
func (q *serverQueue) kickAll() {
	for w := q.pop(); w != nil; w = q.pop() {
		w.deliver(nil)
	}
}

// acquireQueued waits for a server of a pool that had none idle, up to
// query_wait_timeout (wait; 0 for no limit). It queues the client while the
// pool is full and leaves the rest to acquireRaw.
func (p *pool) acquireQueued(wait time.Duration) (*puddle.Resource[*serverConn], error) {
	var deadline time.Time
	if wait > 0 {
		deadline = time.Now().Add(wait)
	}
	front := false
	for {
		if front {
			if res := p.tryIdle(); res != nil {
				return res, nil
			}
		}
		p.mu.Lock()
		main, reserve := p.mu.main, p.mu.reserve
		p.mu.Unlock()
		if reserve != nil || p.srv.pools.pause.blockedFor(p.key.db) != nil {
			return p.acquireUntil(deadline)
		}
		w := serverWaiters.Get().(*serverWaiter)
		p.queue.push(w, front)
		// Queued first, then one more look: a server released or a slot
		// freed before we were queued did not see us.
		if st := main.Stat(); st.IdleResources() > 0 || st.TotalResources() < st.MaxResources() {
			if p.queue.remove(w) {
				serverWaiters.Put(w)
				return p.acquireUntil(deadline)
			}
			// Someone took us off the queue meanwhile: wait for what
			// they send.
		}
		res, err := p.await(w, deadline)
		if err != nil || res == nil {
			if err != nil {
				return nil, err
			}
			front = true // told to look again
			continue
		}
		// It was in use a moment ago: no idle probe or server_check_query
		// (pool.usable), only the marks that close it.
		if sc := res.Value(); !p.stale(sc) && !sc.expired() {
			return res, nil
		}
		p.discard(res)
		front = true
	}
}

// acquireUntil waits in puddle (acquireRaw) up to deadline.
func (p *pool) acquireUntil(deadline time.Time) (*puddle.Resource[*serverConn], error) {
	if deadline.IsZero() {
		return p.acquireRaw(context.Background())
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return p.acquireRaw(ctx)
}

// await waits on w, which is queued, for a server, for nil (look again),
// for the deadline or for shutdown. It gives w back to the pool of waiters.
func (p *pool) await(w *serverWaiter, deadline time.Time) (*puddle.Resource[*serverConn], error) {
	var expired <-chan time.Time
	if !deadline.IsZero() {
		w.timer.Reset(max(time.Until(deadline), time.Nanosecond))
		expired = w.timer.C
	}
	var err *pgError
	select {
	case res := <-w.ch:
		if expired != nil {
			w.timer.Stop()
		}
		serverWaiters.Put(w)
		return res, nil
	case <-expired:
		err = newError(codeQueryWaitTimeout, "")
	case <-p.srv.shutdownCh:
		err = newError(codeShuttingDown, "")
		w.timer.Stop()
	}
	if !p.queue.remove(w) {
		// A server (or a "look again") was sent at the last moment: a
		// server is kept, since the client waited for it.
		res := <-w.ch
		if res != nil && err.code == codeQueryWaitTimeout {
			serverWaiters.Put(w)
			return res, nil
		}
		if res != nil {
			p.release(res)
		}
	}
	serverWaiters.Put(w)
	return nil, err
}
