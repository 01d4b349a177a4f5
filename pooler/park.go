package pooler

import (
	"errors"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Parking idle clients. A signed-in client between transactions would
// otherwise cost a goroutine blocked in Read: its stack (4 KiB and more)
// and a read buffer, most of the pooler's memory at ten thousand idle
// clients. Once a client has been idle for parkAfter, the parker pokes its
// read deadline; the session goroutine wakes from Read, hands the socket to
// the parker's watcher (one epoll instance for the whole server) and exits.
// When the client sends again (or goes away, or is killed), a new goroutine
// resumes the session: between transactions the relay keeps no state on the
// stack, so resuming is entering runSession again.
//
// Ownership: the session goroutine owns the client until it stores
// parkParked; from then on whoever moves parkState from parkParked back to
// parkRunning (the watcher when the socket turns readable, or kill) owns it
// and starts the goroutine that resumes the session. The goroutine that
// parked touches nothing of the client after that store but the socket's
// registration.
//
// TLS clients are never parked: crypto/tls may hold decrypted bytes that
// the socket's readiness does not show. Console sessions are not parked
// either.

const (
	// parkAfter is how long a client must be idle between transactions
	// before it is parked. Clients that send more often never are, so the
	// parking costs nothing on a busy connection.
	parkAfter = time.Second
	// parkScanInterval is how often the parker looks for idle clients and
	// enforces client_idle_timeout on parked ones.
	parkScanInterval = 500 * time.Millisecond
	// trimAfterParked: when this many more clients are parked than at the
	// last trim, the freed stacks and buffers are given back to the
	// operating system (at most once per trimInterval), so that the
	// resident size follows the idle clients down after a sign-in storm.
	trimAfterParked = 512
	trimInterval    = time.Second
)

// Client park states (clientConn.parkState).
const (
	parkRunning  int32 = iota // a goroutine runs the session, not in an idle read
	parkIdleRead              // the session goroutine waits in readIdle
	parkPoked                 // the parker set a past read deadline to make it park
	parkParked                // no goroutine: the watcher (or the event loop) waits for the socket
	parkLoop                  // the event loop serves a request of the client (loopclient.go)
)

// errParked ends runSession when the client was parked: the goroutine
// unwinds without touching the client.
var errParked = errors.New("client parked")

// aLongTimeAgo is a read deadline in the past: it makes a blocked Read
// return at once.
var aLongTimeAgo = time.Unix(1, 0)

// idleBufPool holds the small buffers that idle, unparked clients read into.
var idleBufPool = sync.Pool{New: func() any { return new([idleBufSize]byte) }}

// parker parks idle clients of one Server and resumes them. It is created
// by Serve (nil where the platform has no watcher) and closed when Serve
// returns.
type parker struct {
	srv *Server
	w   watcher

	mu sync.Mutex
	// registered are the clients whose sockets the watcher knows, by
	// client id, from their first park until finish.
	registered map[uint64]*clientConn

	parked    atomic.Int64 // clients parked now
	trimBase  int64        // parked at the last trim; owned by the scan loop
	lastTrim  time.Time    // owned by the scan loop
	stop      chan struct{}
	loopsDone sync.WaitGroup
}

// watcher is the platform's readiness notifier for parked sockets.
type watcher interface {
	// watch arms a one-shot readiness watch of conn for id; again says the
	// socket was watched before (and still is, disarmed).
	watch(conn net.Conn, id uint64, again bool) error
	// forget removes conn's watch.
	forget(conn net.Conn)
	// run calls ready with the id of each socket that turns readable (or
	// is closed by its peer) until close.
	run(ready func(id uint64))
	close()
}

func newParker(s *Server) *parker {
	w, err := newWatcher()
	if err != nil {
		if err != errNoWatcher {
			s.log.Warn("idle clients will not be parked", "err", err)
		}
		return nil
	}
	p := &parker{srv: s, w: w, registered: map[uint64]*clientConn{}, stop: make(chan struct{}), lastTrim: time.Now()}
	p.loopsDone.Add(2)
	go func() {
		defer p.loopsDone.Done()
		w.run(p.ready)
	}()
	go func() {
		defer p.loopsDone.Done()
		p.scanLoop()
	}()
	return p
}

// close stops the parker's goroutines. Serve calls it once every client
// has finished, so no client is parked any more.
func (p *parker) close() {
	if p == nil {
		return
	}
	close(p.stop)
	p.w.close()
	p.loopsDone.Wait()
}

// ready is called by the watcher when a parked client's socket is readable.
func (p *parker) ready(id uint64) {
	p.mu.Lock()
	c := p.registered[id]
	p.mu.Unlock()
	if c != nil {
		c.resumeIfParked()
	}
}

func (p *parker) scanLoop() {
	t := time.NewTicker(parkScanInterval)
	defer t.Stop()
	var scratch []*clientConn
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			scratch = p.scan(now, scratch[:0])
			clear(scratch)
		}
	}
}

// scan pokes clients idle for parkAfter, closes parked clients that
// reached client_idle_timeout, and trims memory after many parked.
func (p *parker) scan(now time.Time, cands []*clientConn) []*clientConn {
	s := p.srv
	cutoff := now.Add(-parkAfter).UnixNano()
	s.mu.Lock()
	for c := range s.mu.clients {
		switch c.parkState.Load() {
		case parkIdleRead:
			if c.idleSince.Load() <= cutoff {
				cands = append(cands, c)
			}
		case parkParked:
			cands = append(cands, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cands {
		c.mu.Lock()
		if c.parkState.CompareAndSwap(parkIdleRead, parkPoked) {
			// Under mu, so that the session goroutine, which restores
			// its deadline under mu, always comes after this.
			_ = c.conn.SetReadDeadline(aLongTimeAgo)
			c.mu.deadline = true
			c.mu.Unlock()
			continue
		}
		var expired *pgError
		if c.parkState.Load() == parkParked {
			if t, code := c.idleTimeoutLocked(); t > 0 && now.Sub(time.Unix(0, c.idleSince.Load())) >= t {
				expired = newError(code, "")
			}
		}
		c.mu.Unlock()
		if expired != nil {
			c.kill(expired)
		}
	}
	if n := p.parked.Load(); n-p.trimBase >= trimAfterParked && now.Sub(p.lastTrim) >= trimInterval {
		debug.FreeOSMemory()
		p.trimBase, p.lastTrim = n, time.Now()
	} else if n < p.trimBase {
		p.trimBase = n
	}
	return cands
}

// readIdle waits for a client that is between transactions to send its
// next request, reading into the client's small idle buffer. It returns
// errParked when the client was parked instead: the caller must unwind
// without touching the client.
func (c *clientConn) readIdle() ([]byte, error) {
	if c.ls != nil && c.loopServes() && c.killErr.Load() == nil && !c.ls.lc.isClosed() {
		// The loop waits for the request, and serves it.
		c.loopPark()
		return nil, errParked
	}
	for {
		if c.idleBufp == nil {
			c.idleBufp = idleBufPool.Get().(*[idleBufSize]byte)
		}
		if c.parkable {
			c.idleSince.Store(time.Now().UnixNano())
			c.parkState.Store(parkIdleRead)
		}
		n, err := c.read(c.idleBufp[:])
		if !c.parkable || c.parkState.Swap(parkRunning) != parkPoked {
			if n == 0 && err != nil {
				return nil, c.readError(err)
			}
			return c.idleBufp[:n], nil
		}
		// The parker poked the read deadline: park, unless the read
		// brought bytes, failed otherwise, or client_idle_timeout is
		// due.
		var ne net.Error
		timedOut := n == 0 && errors.As(err, &ne) && ne.Timeout()
		c.mu.Lock()
		var expired *pgError
		if timedOut {
			if t, code := c.idleTimeoutLocked(); t > 0 && time.Since(time.Unix(0, c.idleSince.Load())) >= t {
				expired = newError(code, "")
			}
		}
		c.armIdleDeadlineLocked()
		c.mu.Unlock()
		switch {
		case expired != nil:
			return nil, expired
		case n > 0:
			return c.idleBufp[:n], nil
		case !timedOut:
			return nil, c.readError(err)
		}
		if c.park() {
			return nil, errParked
		}
	}
}

// park hands the client's socket to the watcher. It returns false when
// that failed and the calling goroutine still owns the client.
func (c *clientConn) park() bool {
	p := c.srv.parker.Load()
	if p == nil {
		return false
	}
	if c.ls != nil {
		// On the event loop, which hands each request back to a
		// goroutine while loopServes says no.
		c.writeMu.Lock()
		c.sio = nil
		c.writeMu.Unlock()
		c.loopPark()
		return true
	}
	idleBufPool.Put(c.idleBufp)
	c.idleBufp = nil
	c.writeMu.Lock()
	c.sio = nil // a parked client holds nothing; its next session makes a new one
	c.writeMu.Unlock()
	again := c.parkRegistered
	if !again {
		c.parkRegistered = true
		p.mu.Lock()
		p.registered[c.id] = c
		p.mu.Unlock()
	}
	p.parked.Add(1)
	c.parkState.Store(parkParked)
	// From here on another goroutine may own the client.
	if err := p.w.watch(c.raw, c.id, again); err != nil {
		if c.parkState.CompareAndSwap(parkParked, parkRunning) {
			p.parked.Add(-1)
			return false
		}
	}
	return true
}

// resumeIfParked has a worker resume the session of a parked
// client. Nothing happens when the client is not parked.
func (c *clientConn) resumeIfParked() {
	if !c.parkState.CompareAndSwap(parkParked, parkRunning) {
		return
	}
	if c.ls != nil {
		c.ls.lc.setOwner(nil)
	}
	c.srv.parker.Load().parked.Add(-1)
	// The parked session kept its place in the server's WaitGroup.
	c.srv.workers.run(func() {
		if !c.relay() {
			c.srv.wg.Done()
		}
	})
}

// unregisterPark removes the client's socket from the watcher; finish calls
// it before closing the socket.
func (c *clientConn) unregisterPark() {
	if !c.parkRegistered {
		return
	}
	p := c.srv.parker.Load()
	p.w.forget(c.raw)
	p.mu.Lock()
	delete(p.registered, c.id)
	p.mu.Unlock()
	c.parkRegistered = false
}

// releaseIdleBuf gives the idle buffer back when the session ends.
func (c *clientConn) releaseIdleBuf() {
	if c.idleBufp != nil {
		idleBufPool.Put(c.idleBufp)
		c.idleBufp = nil
	}
}

// IdleWorkers returns how many goroutines wait for the next client to
// sign in or resume (workers.go); they exit after a few seconds unused.
func (s *Server) IdleWorkers() int { return s.workers.idleCount() }

// ParkedClients returns how many idle clients are parked now: signed in,
// between transactions, and holding no goroutine.
func (s *Server) ParkedClients() int {
	p := s.parker.Load()
	if p == nil {
		return 0
	}
	return int(p.parked.Load())
}
