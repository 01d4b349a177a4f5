package pooler

import (
	"context"
	"encoding/binary"
	"io"
	"time"

	"github.com/jackc/puddle/v2"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// The relay's loop path. A plain-TCP (or Unix socket) client of a
// transaction- or statement-mode pool lives on the event loop
// (eventloop_linux.go) together with its pool's servers. Between
// transactions it holds no goroutine, as a parked client (park.go). When
// it sends a request that the loop can serve whole, the loop thread takes
// a server (or queues the client for one), forwards the request, relays
// the answer and releases the server at its ReadyForQuery, with no
// goroutine switch. Everything else the relay knows how to do (COPY, a
// Flush before Sync, a request in pieces, query_timeout, waiting in puddle
// for a server to be opened, SET queries to bring a server in line) is
// handed to a goroutine that runs the ordinary relay from that point, and
// the client comes back to the loop when it is next idle.
//
// Ownership: the loop owns the client while parkState is parkLoop (it
// serves a request) and may claim it while parkState is parkParked (idle
// on the loop). The fields below marked "loop" are touched only by the
// loop thread while it owns the client; a hand-off to a goroutine stores
// parkRunning before the goroutine starts.

// loopState is a client's part of the loop path.
type loopState struct {
	loop *eventLoop
	lc   *loopConn // the client socket
	own  loopOwner
	// posted is loopRequest bound once, for posting.
	posted func()
	// delivered is loopDelivered, expired loopWaitExpired and killed
	// loopKilled, bound once: a server (or a "look again") was handed to
	// the client's queue place, query_wait_timeout passed, or the client
	// was killed.
	delivered, expired, killed func()

	// in: bytes the loop read and a goroutine is to relay first.
	in  *[]byte
	inN int
	// res: a server the loop took and a goroutine is to attach, with
	// server_check_query still due when check is set.
	res   *puddle.Resource[*serverConn]
	check bool
	// out: bytes for the client that its socket did not take; the
	// goroutine the client is handed to writes them first.
	out []byte
	// rel: a server, of pool relPool, that the goroutine the client is
	// handed to releases before it writes out (a cancel is in flight on
	// it, and release waits for that).
	rel     *puddle.Resource[*serverConn]
	relPool *pool

	// loop: the request being served and the client's queue place.
	req     *[]byte
	reqN    int
	waiter  *serverWaiter
	waitAt  time.Time
	timer   *time.Timer // query_wait_timeout; posts expired
	att     *attachment
	pending bool // the client turned readable while a request was served
	hup     bool // the client closed its end (readiness said so)
	gone    bool // it did so while its request was at the server
	// serverHup: the server closed its end (readiness said so), so an
	// answer read short is not the end of what there is to read.
	serverHup bool
}

// adoptClient moves a signed-in plain-socket client of a transaction- or
// statement-mode pool onto the event loop. The session goroutine calls it
// before its first read.
func (c *clientConn) adoptClient() {
	l := c.srv.loop.Load()
	if l == nil || c.tls || !c.parkable || c.pool == nil || c.pool.poolMode() == config.PoolSession {
		return
	}
	lc, err := l.adopt(c.conn)
	if err != nil {
		return // the socket is closed: the first read says so
	}
	ls := &loopState{loop: l, lc: lc}
	ls.own.h = c
	ls.posted = c.loopRequest
	ls.delivered = c.loopDelivered
	ls.expired = c.loopWaitExpired
	ls.killed = c.loopKilled
	c.writeMu.Lock()
	c.conn, c.raw, c.sio, c.ls = lc, lc, nil, ls
	c.writeMu.Unlock()
}

// loopServes reports whether the loop may serve this client's requests
// itself under the current configuration.
func (c *clientConn) loopServes() bool {
	cfg := c.srv.cfg.Load()
	return c.pool.poolMode() != config.PoolSession && c.queryTimeout() == 0 && !cfg.ServerResetQueryAlways
}

// loopPark hands an idle client to the loop; the calling goroutine then
// unwinds with errParked without touching the client.
func (c *clientConn) loopPark() {
	ls := c.ls
	if c.idleBufp != nil {
		idleBufPool.Put(c.idleBufp)
		c.idleBufp = nil
	}
	c.idleSince.Store(time.Now().UnixNano())
	c.srv.parker.Load().parked.Add(1)
	ls.lc.setOwner(&ls.own)
	c.parkState.Store(parkParked)
	// Readiness seen before the loop became the owner is not reported
	// to it: it looks at the socket once.
	ls.loop.post(ls.posted)
}

// loopEvent receives the client socket's readiness on the loop thread.
func (c *clientConn) loopEvent(_ *loopConn, hup bool) {
	if hup {
		// The client closed its end: after the request read with this
		// readiness, if any, its socket is read again for the end.
		c.ls.hup = true
	}
	switch c.parkState.Load() {
	case parkParked:
		c.loopRequest()
	case parkLoop:
		c.ls.pending = true
		if hup && c.ls.att != nil {
			// Gone while its request runs: the answer is still
			// awaited (a cancel may be on its way), and then the
			// server is closed, as PgBouncer closes it.
			c.ls.gone = true
		}
		if hup && c.ls.waiter != nil {
			// Gone while queued for a server: its request is
			// never sent (a cancel finds no server to go to).
			c.loopStopWaiting(io.EOF)
		}
	}
}

// loopRequest reads the client's next request and serves it, or hands the
// client to a goroutine.
func (c *clientConn) loopRequest() {
	ls := c.ls
	if !c.parkState.CompareAndSwap(parkParked, parkLoop) {
		return // resumed elsewhere (killed), or already being served
	}
	ls.pending = false
	bufp := getBuf()
	buf := *bufp
	n, err := ls.lc.readNB(buf)
	if err == errWouldBlock {
		putBuf(bufp)
		c.loopIdle()
		return
	}
	if err != nil {
		// The client went away (io.EOF) or its socket failed.
		putBuf(bufp)
		c.loopFail(nil, err)
		return
	}
	ls.req, ls.reqN = bufp, n
	if ls.hup {
		ls.pending, ls.hup = true, false
	}
	c.mu.Lock()
	att := c.mu.att
	c.mu.Unlock()
	if n == len(buf) || !c.loopCanServe(att, buf[:n]) {
		c.loopResume()
		return
	}
	if att != nil {
		c.loopSend(att, false)
		return
	}
	c.loopAcquire(false)
}

// loopCanServe reports whether req, the bytes of one read, is a request
// the loop serves whole: complete messages of the simple or extended query
// protocol ending with a Query or Sync, on a client with nothing in flight.
func (c *clientConn) loopCanServe(att *attachment, req []byte) bool {
	if !c.loopServes() || c.srv.pools.pause.suspended.Load() {
		return false
	}
	c.mu.Lock()
	stop := c.mu.wantStop
	prep := c.srv.cfg.Load().MaxPreparedStatements > 0 || len(c.ps.client) > 0
	if att != nil {
		prep = att.prep
		stop = stop || att.pumped || att.copyIn || att.copyEnds > 0 || att.inFlight > 0 || att.partial
	}
	c.mu.Unlock()
	if stop {
		return false
	}
	maxPacket := c.cfg.MaxPacketSize
	syncs := 0
	var last byte
	for r := 0; r < len(req); {
		if len(req)-r < 5 {
			return false
		}
		typ := req[r]
		l := int(binary.BigEndian.Uint32(req[r+1:]))
		if l < 4 || (maxPacket > 0 && l > maxPacket) || l+1 > len(req)-r {
			return false
		}
		switch typ {
		case 'Q', 'S':
			syncs++
		case 'P', 'B', 'D', 'E', 'C':
			if prep && syncs > 0 {
				// Statements of a later batch may depend on how an
				// earlier one ends (relay.go, prepBarrier).
				return false
			}
		default:
			return false
		}
		last = typ
		r += l + 1
	}
	return last == 'Q' || last == 'S'
}

// loopAcquire takes a server for the request: an idle one, or a place in
// the pool's queue. again is set when the client was told to look again
// and keeps its turn.
func (c *clientConn) loopAcquire(again bool) {
	ls := c.ls
	p := c.pool
	if !again {
		start := time.Now()
		ls.waitAt = start
		c.mu.Lock()
		c.mu.state = stateWaiting
		c.mu.waitFrom = start
		c.mu.Unlock()
		p.waiting.Add(1)
		p.waitStartMin.CompareAndSwap(0, start.UnixNano())
	}
	res, check := p.loopTryIdle()
	if res != nil {
		c.loopGotServer(res, check)
		return
	}
	p.mu.Lock()
	main, reserve := p.mu.main, p.mu.reserve
	p.mu.Unlock()
	if reserve != nil || p.srv.pools.pause.blockedFor(p.key.db) != nil {
		c.loopWaitOver(false)
		c.loopResume()
		return
	}
	w := serverWaiters.Get().(*serverWaiter)
	w.loopc = c
	p.queue.push(w, again)
	if st := main.Stat(); st.IdleResources() > 0 || st.TotalResources() < st.MaxResources() {
		if p.queue.remove(w) {
			// A server is idle after all, or one may be opened: a
			// goroutine does that (it may take a while).
			w.loopc = nil
			serverWaiters.Put(w)
			c.loopWaitOver(false)
			c.loopResume()
			return
		}
		// Taken off the queue meanwhile: what was sent is on its way.
	}
	ls.waiter = w
	if wait := p.srv.cfg.Load().QueryWaitTimeout; wait > 0 {
		d := max(wait-time.Since(ls.waitAt), time.Nanosecond)
		if ls.timer == nil {
			ls.timer = time.AfterFunc(d, func() { ls.loop.post(ls.expired) })
		} else {
			ls.timer.Reset(d)
		}
	}
}

// loopWaitOver ends the client's wait for a server in the pool's figures;
// assigned says it got one.
func (c *clientConn) loopWaitOver(assigned bool) time.Time {
	p := c.pool
	if p.waiting.Add(-1) == 0 {
		p.waitStartMin.Store(0)
	}
	now := time.Now()
	wait := now.Sub(c.ls.waitAt)
	p.stats.waitTime.Add(wait.Microseconds())
	if assigned {
		p.stats.assignCnt.Add(1)
		if p.obs != nil {
			p.obs.ClientWait(wait)
		}
	}
	return now
}

// loopDelivered runs on the loop thread when a server, or a "look again",
// was handed to the client's place in the queue.
func (c *clientConn) loopDelivered() {
	ls := c.ls
	w := ls.waiter
	if w == nil {
		return
	}
	res := w.loopRes
	ls.waiter = nil
	w.release()
	if ls.timer != nil {
		ls.timer.Stop()
	}
	if res == nil {
		if c.srv.shuttingDown() {
			c.loopWaitOver(false)
			c.loopFail(nil, newError(codeShuttingDown, ""))
			return
		}
		c.loopAcquire(true)
		return
	}
	if sc := res.Value(); c.pool.stale(sc) || sc.expired() {
		c.pool.discard(res)
		c.loopAcquire(true)
		return
	}
	c.loopGotServer(res, false)
}

// loopWaitExpired runs on the loop thread when the client's
// query_wait_timeout timer fires.
func (c *clientConn) loopWaitExpired() {
	ls := c.ls
	w := ls.waiter
	if w == nil || c.parkState.Load() != parkLoop {
		return // a timer of an earlier wait
	}
	if wait := c.srv.cfg.Load().QueryWaitTimeout; wait <= 0 || time.Since(ls.waitAt) < wait {
		return // (the same)
	}
	if !c.pool.queue.remove(w) {
		return // a server is on its way: it is kept, since the client waited for it
	}
	ls.waiter = nil
	w.release()
	c.loopWaitOver(false)
	c.loopFail(nil, newError(codeQueryWaitTimeout, ""))
}

// loopKilled runs on the loop thread after kill: a client queued for a
// server stops waiting; one whose request is at the server ends now, and
// that server, in the middle of the request, is closed (as when a
// goroutine's session is killed).
func (c *clientConn) loopKilled() {
	pe := c.killErr.Load()
	if pe == nil || c.parkState.Load() != parkLoop {
		return
	}
	if att := c.ls.att; att != nil {
		c.loopFail(att, pe)
		return
	}
	c.loopStopWaiting(pe)
}

// loopStopWaiting takes a queued client off its pool's queue and ends it
// with err; nothing happens if a server is already on its way.
func (c *clientConn) loopStopWaiting(err error) {
	ls := c.ls
	w := ls.waiter
	if w == nil || !c.pool.queue.remove(w) {
		return
	}
	ls.waiter = nil
	w.release()
	if ls.timer != nil {
		ls.timer.Stop()
	}
	c.loopWaitOver(false)
	c.loopFail(nil, err)
}

// loopGotServer attaches res and sends the request, or hands both to a
// goroutine when the server needs a SET first or server_check_query is due.
func (c *clientConn) loopGotServer(res *puddle.Resource[*serverConn], check bool) {
	ls := c.ls
	ready := c.loopWaitOver(true)
	sc := res.Value()
	if check || sc.lc == nil || sc.lc.l != ls.loop || sc.paramsFP == "" || sc.paramsFP != c.vars.fp {
		ls.res, ls.check = res, check
		c.loopResume()
		return
	}
	att, err := c.attachServer(res, ready)
	if err != nil {
		c.loopFail(nil, err)
		return
	}
	c.loopSend(att, true)
}

// loopSend forwards the request to att's server, rewriting prepared
// statements as the relay does, and waits for the answer.
func (c *clientConn) loopSend(att *attachment, justAttached bool) {
	ls := c.ls
	buf := (*ls.req)[:ls.reqN]
	start := 0
	c.mu.Lock()
	for r := 0; r < len(buf); {
		typ := buf[r]
		l := int(binary.BigEndian.Uint32(buf[r+1:]))
		c.noteLocked(att, typ, justAttached)
		if att.prep {
			if want := prepWant(typ, l, buf[r:]); want > 0 {
				repl, n := c.ps.rewrite(c.psRepl[:0], typ, l, buf[r:])
				c.ps.takeStats(&att.pool.stats)
				c.psRepl = repl
				if n > 0 {
					c.psOut = append(c.psOut, buf[start:r]...)
					c.psOut = append(c.psOut, repl...)
					start = r + n
				}
			}
		}
		r += l + 1
	}
	c.mu.Unlock()
	out := buf[start:]
	if len(c.psOut) > 0 {
		c.psOut = append(c.psOut, out...)
		out = c.psOut
	}
	sc := att.sc
	n, err := sc.lc.writeNB(out)
	if err == nil {
		att.pool.stats.recv.Add(int64(n))
	}
	if len(c.psOut) > 0 {
		if cap(c.psOut) > relayBufSize {
			c.psOut = nil
		} else {
			c.psOut = c.psOut[:0]
		}
	}
	if err != nil && err != errWouldBlock {
		putBuf(ls.req)
		ls.req = nil
		c.loopFail(att, newError(codeServerConnCrashed, ""))
		return
	}
	if err == errWouldBlock {
		// The server is not reading: a goroutine writes the rest
		// and reads the answer.
		rest := append([]byte(nil), out[n:]...)
		putBuf(ls.req)
		ls.req = nil
		c.loopHandOff(att, rest)
		return
	}
	putBuf(ls.req)
	ls.req = nil
	ls.att = att
	sc.loopClient = c
	sc.lc.setOwner(&sc.own)
	// The answer's arrival turns the socket readable after this write,
	// and the loop reports that to the new owner.
}

// loopEvent receives a server socket's readiness on the loop thread.
func (sc *serverConn) loopEvent(_ *loopConn, hup bool) {
	if c := sc.loopClient; c != nil {
		c.ls.serverHup = hup
		c.loopAnswer()
	}
}

// loopAnswer reads and relays the server's answer, as driveInline does.
func (c *clientConn) loopAnswer() {
	ls := c.ls
	att := ls.att
	ss := &att.ss
	sc := att.sc
	p := att.pool
	buf := ss.buf()
	needRead := ss.r == ss.w
	// drained is set when the last read left the socket empty: bytes
	// that arrive later turn it readable again, so the loop waits for
	// that instead of trying another read (edge-triggered readiness).
	drained := false
	for {
		if needRead {
			if len(ls.out) > 0 {
				// The client is slow to read: a goroutine takes over,
				// so that its answer does not pile up here.
				c.loopHandOff(att, nil)
				return
			}
			if drained {
				ss.free()
				return
			}
			ss.compact()
			n, err := sc.lc.readNB(buf[ss.w:])
			if err == errWouldBlock {
				ss.free()
				return
			}
			if err != nil {
				c.loopFail(att, wrapError(codeServerConnCrashed, "", err))
				return
			}
			drained = n < len(buf)-ss.w && !ls.serverHup
			ss.w += n
		}
		start := ss.r
		ev, act := c.scanServer(att)
		if ev == scanReady && act == readyRelease {
			// The server goes back to its pool before the client
			// reads the ReadyForQuery that ends its transaction: a
			// client that has its answer finds it idle (SHOW POOLS).
			c.loopRelease(att, buf[start:ss.r])
			return
		}
		if ss.r > start {
			if err := c.loopWriteClient(buf[start:ss.r], p, ss.remaining > 0); err != nil {
				c.loopFail(att, err)
				return
			}
		}
		switch ev {
		case scanBad:
			c.loopFail(att, newError(codeServerConnCrashed, ""))
			return
		case scanSplice:
			if b := ss.takeSplice(); len(b) > 0 {
				if err := c.loopWriteClient(b, p, false); err != nil {
					c.loopFail(att, err)
					return
				}
			}
			needRead = ss.r == ss.w
			continue
		case scanCopyIn:
			// COPY FROM STDIN: the client's data is relayed by a
			// goroutine.
			c.loopHandOff(att, nil)
			return
		case scanNeedRead:
			needRead = true
			continue
		}
		if act == readyStatementTx {
			c.loopFail(att, newError(codeStatementModeTx, ""))
			return
		}
		c.mu.Lock()
		done := att.inFlight == 0
		c.mu.Unlock()
		if done {
			// Inside a transaction, waiting for the client.
			c.loopDetachServer(att)
			ss.free()
			c.loopDone()
			return
		}
		needRead = ss.r == ss.w
	}
}

// loopRelease ends a request whose final ReadyForQuery leaves att's server
// clean: the server goes back to its pool, then last (the answer's final
// bytes, kept in the attachment's buffer) goes to the client.
func (c *clientConn) loopRelease(att *attachment, last []byte) {
	ss := &att.ss
	sc := att.sc
	p := att.pool
	if ss.r < ss.w || c.ls.gone {
		// Bytes after the final ReadyForQuery (see driveInline), or a
		// client that left in the middle: not reused.
		sc.broken = true
	}
	c.loopDetachServer(att)
	c.clearAttachment(att)
	if sc.cancels.Load() > 0 {
		// release waits for the cancel to be taken by the server; the
		// loop must not. A goroutine releases the server and then
		// gives the client the end of its answer: a client that has
		// its answer finds the server back in the pool, as always.
		c.writeMu.Lock()
		c.ls.out = append(c.ls.out, last...)
		c.outMid = true
		c.writeMu.Unlock()
		p.stats.sent.Add(int64(len(last)))
		ss.r, ss.w = 0, 0
		ss.free()
		c.ls.rel, c.ls.relPool = att.res, p
		c.loopHandOff(nil, nil)
		return
	}
	p.release(att.res)
	err := c.loopWriteClient(last, p, false)
	ss.r, ss.w = 0, 0
	ss.free()
	if err != nil {
		c.loopFail(nil, err)
		return
	}
	if why := c.stopReason(); why != nil {
		c.loopFail(nil, why)
		return
	}
	c.loopDone()
}

// loopWriteClient writes server bytes to the client without waiting; what
// the socket does not take is kept in ls.out for a goroutine.
func (c *clientConn) loopWriteClient(b []byte, p *pool, mid bool) error {
	ls := c.ls
	c.writeMu.Lock()
	if len(ls.out) > 0 {
		ls.out = append(ls.out, b...)
	} else if n, err := ls.lc.writeNB(b); err == errWouldBlock {
		ls.out = append(ls.out, b[n:]...)
	} else if err != nil {
		c.outMid = true
		c.writeMu.Unlock()
		return &clientWriteError{err}
	}
	// Bytes still to write count as a message cut short: a FATAL now
	// would land inside them.
	c.outMid = mid || len(ls.out) > 0
	c.writeMu.Unlock()
	p.stats.sent.Add(int64(len(b)))
	return nil
}

// loopDetachServer takes the server's readiness back from the client.
func (c *clientConn) loopDetachServer(att *attachment) {
	att.sc.loopClient = nil
	att.sc.lc.setOwner(nil)
	c.ls.att = nil
}

// loopDone: the request is answered; the client is idle (or inside a
// transaction) on the loop again.
func (c *clientConn) loopDone() {
	ls := c.ls
	if len(ls.out) > 0 {
		// The end of the answer did not fit in the client's socket:
		// a goroutine writes it, then waits for the next request.
		c.loopHandOff(nil, nil)
		return
	}
	c.idleSince.Store(time.Now().UnixNano())
	c.parkState.Store(parkParked)
	if c.killErr.Load() != nil {
		// Killed meanwhile: kill could not resume a client the loop
		// was serving.
		c.resumeIfParked()
		return
	}
	if ls.pending {
		c.loopRequest()
	}
}

// loopIdle: nothing to read after all.
func (c *clientConn) loopIdle() {
	c.parkState.Store(parkParked)
	if c.killErr.Load() != nil {
		c.resumeIfParked()
	}
}

// loopResume hands the client, with the request read so far, to a
// goroutine that runs the ordinary relay.
func (c *clientConn) loopResume() {
	ls := c.ls
	if ls.req != nil {
		ls.in, ls.inN = ls.req, ls.reqN
		ls.req = nil
	}
	c.loopHandOff(nil, nil)
}

// loopHandOff gives the client to a goroutine. With att, a request is in
// flight on att's server: the goroutine writes fwd (the rest of the
// request) to it, then relays the answer (driveInline) before it goes on.
func (c *clientConn) loopHandOff(att *attachment, fwd []byte) {
	ls := c.ls
	if att != nil && ls.att == att {
		c.loopDetachServer(att)
	}
	ls.lc.setOwner(nil)
	c.srv.parker.Load().parked.Add(-1)
	c.parkState.Store(parkRunning)
	c.srv.workers.run(func() {
		if err := c.loopTakeOver(att, fwd); err != nil {
			c.detachOnExit()
			c.srv.nclients.Add(-1)
			c.endOfSession(err)
			c.srv.wg.Done()
			return
		}
		if !c.relay() {
			c.srv.wg.Done()
		}
	})
}

// loopTakeOver finishes, on a goroutine, what the loop handed over: the
// client's pending bytes, the rest of a request and its answer.
func (c *clientConn) loopTakeOver(att *attachment, fwd []byte) error {
	ls := c.ls
	released := false
	if res := ls.rel; res != nil {
		p := ls.relPool
		ls.rel, ls.relPool = nil, nil
		p.release(res)
		released = true
	}
	if len(ls.out) > 0 {
		c.writeMu.Lock()
		_, err := c.write(ls.out)
		ls.out = nil
		c.outMid = err != nil
		c.writeMu.Unlock()
		if err != nil {
			if att != nil {
				c.clearAttachment(att)
				att.pool.discard(att.res)
			}
			return &clientWriteError{err}
		}
	}
	if released {
		// The end of a transaction: a client asked to stop stops
		// here (as loopRelease does).
		if why := c.stopReason(); why != nil {
			return why
		}
	}
	if att == nil {
		return nil
	}
	if len(fwd) > 0 {
		if err := c.forward(att, fwd); err != nil {
			c.clearAttachment(att)
			att.pool.discard(att.res)
			return err
		}
	}
	c.mu.Lock()
	inline := c.mu.att == att && att.inFlight > 0 && !att.copyIn
	c.mu.Unlock()
	if inline {
		return c.driveInline(att)
	}
	return nil
}

// loopFail ends the client with err on a goroutine; the server of att, in
// the middle of a request, is closed.
func (c *clientConn) loopFail(att *attachment, err error) {
	ls := c.ls
	if ls.req != nil {
		putBuf(ls.req)
		ls.req = nil
	}
	if att != nil {
		if ls.att == att {
			c.loopDetachServer(att)
		}
		c.clearAttachment(att)
		att.pool.discard(att.res)
		att.ss.r, att.ss.w = 0, 0
		att.ss.free()
	}
	ls.out = nil
	ls.lc.setOwner(nil)
	c.srv.parker.Load().parked.Add(-1)
	c.parkState.Store(parkRunning)
	c.srv.workers.run(func() {
		// A transaction left open (the client went away inside one)
		// gives its server back, as when the relay's session ends.
		c.detachOnExit()
		c.srv.nclients.Add(-1)
		c.endOfSession(err)
		c.srv.wg.Done()
	})
}

// dropLoopServer returns a server the loop took for a request that will
// not be relayed after all.
func (c *clientConn) dropLoopServer() {
	if ls := c.ls; ls != nil && ls.res != nil {
		c.pool.release(ls.res)
		ls.res, ls.check = nil, false
	}
}

// takeLoopInput moves the bytes the loop read into buf, for the relay.
func (c *clientConn) takeLoopInput(buf []byte) int {
	ls := c.ls
	if ls == nil || ls.in == nil {
		return 0
	}
	n := copy(buf, (*ls.in)[:ls.inN])
	putBuf(ls.in)
	ls.in, ls.inN = nil, 0
	return n
}

// loopTryIdle is tryIdle for the loop thread, which must not wait: it
// runs no server_check_query, but says when one is due.
func (p *pool) loopTryIdle() (*puddle.Resource[*serverConn], bool) {
	for {
		if p.srv.pools.pause.blockedFor(p.key.db) != nil {
			return nil, false
		}
		p.mu.Lock()
		main := p.mu.main
		p.mu.Unlock()
		if main.Stat().IdleResources() == 0 {
			return nil, false
		}
		res, err := main.TryAcquire(context.Background())
		if err != nil {
			return nil, false
		}
		if p.usableNoCheck(res) {
			return res, p.checkDue(res)
		}
	}
}
