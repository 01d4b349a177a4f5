package pooler

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/jackc/puddle/v2"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// The relay. The client's session goroutine reads client bytes, walks the
// message headers, attaches a server when a request needs one and forwards
// whole runs of messages with one write. In transaction and statement mode
// the same goroutine then reads the server's answer (driveInline), watching
// ReadyForQuery and ParameterStatus, forwards it in runs, and hands the
// server back to its pool at the first ReadyForQuery that leaves nothing in
// flight. Where the client must be able to receive without sending
// (session mode, a Flush before Sync), a pump goroutine reads the server
// instead. No message is decoded unless the pooler acts on it; an idle
// client holds only a 512-byte read buffer of its own, and an idle server
// none.

// attachment is a server connection lent to one client. res is owned by the
// pump goroutine, which alone releases or destroys it. The counters are
// guarded by the client's mu.
type attachment struct {
	res  *puddle.Resource[*serverConn]
	sc   *serverConn
	pool *pool
	mode config.PoolMode // the pool's mode when attached
	// inFlight counts requests (Query, Sync, FunctionCall) sent and not yet
	// answered by ReadyForQuery; partial is set while extended-protocol
	// messages were sent after the last Sync.
	inFlight int
	partial  bool
	txStatus byte
	// copyIn is set from the server's CopyInResponse until the client's
	// CopyDone or CopyFail. copyEnds counts CopyDone/CopyFail the client
	// sent before the server's CopyInResponse arrived (clients may stream
	// COPY data without waiting for it).
	copyIn   bool
	copyEnds int
	// prep is set when the client's named prepared statements are
	// tracked and rewritten on this server (prepared.go).
	prep bool
	// clientGone is set when the client ended its session; the pump then
	// releases (if clean) or destroys the server and exits.
	clientGone bool
	xactStart  time.Time
	// pumped is set once a pump goroutine owns the server side; before
	// that the session goroutine drives the server inline and owns res.
	pumped bool
	done   chan struct{} // made with pumped, closed when the pump ends

	// ss holds server bytes read but not yet forwarded; it belongs to
	// whoever drives the server side.
	ss serverStream
}

// serverStream is the read side of a server connection: a pooled buffer
// taken while the server is being read, the unscanned bytes [r:w], and the
// body bytes of a message still to forward.
type serverStream struct {
	bufp      *[]byte
	r, w      int
	remaining int
	// splice is what replaces the skip bytes at r after a scanSplice.
	splice []byte
	skip   int
}

func (ss *serverStream) buf() []byte {
	if ss.bufp == nil {
		ss.bufp = getBuf()
	}
	return *ss.bufp
}

func (ss *serverStream) free() {
	if ss.bufp != nil && ss.r == ss.w {
		putBuf(ss.bufp)
		ss.bufp = nil
		ss.r, ss.w = 0, 0
	}
}

func (a *attachment) clean() bool { return a.inFlight == 0 && !a.partial && a.txStatus == 'I' }

// runSession relays until the client terminates or an error occurs.
func (c *clientConn) runSession() (err error) {
	defer func() {
		if err != errParked { // a parked client may already run elsewhere
			c.detachOnExit()
		}
	}()
	var bufp *[]byte
	defer func() {
		if bufp != nil {
			putBuf(bufp)
		}
	}()
	var buf []byte
	r, w := 0, 0
	remaining := 0 // body bytes of the current message still to forward
	sawFlush := false
	// needMore is set when prepared-statement rewriting needs more of a
	// message than has arrived.
	needMore, noted := false, false
	// att is the attachment the current message was counted on; it
	// carries over reads while a long message's body is still arriving.
	var att *attachment
	for {
		if c.srv.pools.pause.suspended.Load() {
			if err := c.suspendGate(); err != nil {
				return err
			}
		}
		idleRead := false
		if r == w && c.ls != nil && c.ls.in != nil {
			// Bytes the event loop read and handed over.
			if bufp == nil {
				bufp = getBuf()
				buf = *bufp
			}
			r, w = 0, c.takeLoopInput(buf)
			idleRead = true
		}
		if r == w && !idleRead {
			r, w = 0, 0
			c.mu.Lock()
			c.armIdleDeadlineLocked()
			idle := c.mu.att == nil
			c.mu.Unlock()
			if remaining == 0 && idle {
				// Idle between transactions: give the relay buffer back
				// and wait with the client's small one, which holds a
				// typical request whole.
				if bufp != nil {
					putBuf(bufp)
					bufp, buf = nil, nil
				}
				req, err := c.readIdle()
				if err != nil {
					return err
				}
				bufp = getBuf()
				buf = *bufp
				w = copy(buf, req)
				idleRead = true
			}
		}
		if !idleRead {
			if bufp == nil {
				bufp = getBuf()
				buf = *bufp
			}
			n, err := c.read(buf[w:])
			if n == 0 && err != nil {
				return c.readError(err)
			}
			w += n
		}
		start := r
		for r < w {
			if remaining > 0 {
				take := min(remaining, w-r)
				r += take
				remaining -= take
				continue
			}
			if w-r < 5 {
				break
			}
			typ := buf[r]
			l := int(binary.BigEndian.Uint32(buf[r+1:]))
			if l < 4 {
				return newError(codeProtocolViolation, "invalid message length")
			}
			if cfgMax := c.cfg.MaxPacketSize; cfgMax > 0 && l > cfgMax {
				return newError(codeMessageTooLarge, "message exceeds max_packet_size")
			}
			if !noted && l+1 > w-r && l+1 <= len(buf) {
				// Not all here yet, and it will fit: wait for the
				// rest before taking a server for it, so that a
				// client that stops halfway through a message holds
				// none (as in PgBouncer). Larger messages are
				// streamed; query_timeout bounds a stall in those.
				break
			}
			if typ == 'X' {
				if err := c.forwardRun(att, buf[start:r]); err != nil {
					return err
				}
				return nil
			}
			if !noted {
				a, err := c.noteRequest(typ)
				if err != nil {
					return err
				}
				att = a
			}
			noted = false
			if typ == 'H' {
				sawFlush = true
			}
			if att.prep {
				if want := prepWant(typ, l, buf[r:w]); want > w-r {
					// Wait for more of the message (it was counted).
					needMore, noted = true, true
					break
				} else if want > 0 {
					if typ != 'S' && typ != 'F' && typ != 'Q' && c.prepBarrier(att) {
						// What this message means depends on how
						// an earlier batch of this pipeline ends:
						// let the server answer it first.
						if err := c.forwardRun(att, buf[start:r]); err != nil {
							return err
						}
						start = r
						if err := c.driveInline(att); err != nil {
							return err
						}
					}
					c.mu.Lock()
					repl, n := c.ps.rewrite(c.psRepl[:0], typ, l, buf[r:w])
					c.ps.takeStats(&att.pool.stats)
					c.mu.Unlock()
					c.psRepl = repl
					if n > 0 {
						c.psOut = append(c.psOut, buf[start:r]...)
						c.psOut = append(c.psOut, repl...)
						r += n
						start = r
						remaining = l + 1 - n
						continue
					}
				}
			}
			r += 5
			remaining = l - 4
		}
		if r > start || len(c.psOut) > 0 {
			if err := c.forwardRun(att, buf[start:r]); err != nil {
				return err
			}
		}
		if r < w && r > 0 {
			copy(buf, buf[r:w])
			w -= r
			r = 0
		} else if r == w {
			r, w = 0, 0
		}
		if needMore {
			needMore = false
			if w == len(buf) {
				// A message the rewriting needs whole is larger
				// than the buffer.
				buf = growBuf(buf, w, 2*len(buf))
			}
			continue
		}
		if att != nil && remaining == 0 {
			if err := c.afterForward(att, sawFlush); err != nil {
				return err
			}
		}
		sawFlush = false
	}
}

// afterForward decides who reads the server's answer to what was just
// forwarded. In transaction and statement mode the session goroutine reads
// it inline, up to the ReadyForQuery that ends the requests in flight: no
// second goroutine and no hand-off per transaction. A pump goroutine takes
// over when the client must be able to receive without sending (session
// mode, or a Flush that asks for results before Sync).
func (c *clientConn) afterForward(att *attachment, sawFlush bool) error {
	c.mu.Lock()
	if att.pumped || c.mu.att != att {
		c.mu.Unlock()
		return nil
	}
	inline := att.inFlight > 0 && !att.copyIn
	needPump := !inline && sawFlush && att.partial
	if needPump {
		att.pumped = true
		att.done = make(chan struct{})
	}
	c.mu.Unlock()
	switch {
	case inline:
		return c.driveInline(att)
	case needPump:
		go c.pump(att)
	}
	return nil
}

// readError turns a client read error into the session's end reason: a
// read deadline is the idle or idle-transaction timeout.
func (c *clientConn) readError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && c.killErr.Load() == nil {
		c.mu.Lock()
		_, code := c.idleTimeoutLocked()
		c.mu.Unlock()
		return newError(code, "")
	}
	return err
}

// idleTimeoutLocked returns the read timeout for the client while it is
// quiet: while a request is in flight, what is left of query_timeout (none
// without one), idle_transaction_timeout inside a transaction,
// client_idle_timeout otherwise.
func (c *clientConn) idleTimeoutLocked() (time.Duration, errorCode) {
	cfg := c.srv.cfg.Load()
	att := c.mu.att
	u := cfg.Users[c.st.user]
	switch {
	case att != nil && att.inFlight > 0:
		// A client waiting for its answer owes nothing; one that stops
		// halfway through a message (or a COPY) holds its server, and
		// query_timeout bounds that as it bounds the query.
		if qt := c.queryTimeout(); qt > 0 {
			return max(time.Until(time.Unix(0, c.requestTime.Load()).Add(qt)), time.Nanosecond), codeQueryTimeout
		}
		return 0, codeClientIdleTimeout
	case att != nil && (att.txStatus == 'T' || att.txStatus == 'E'):
		if u != nil && u.IdleTransactionTimeout >= 0 {
			return u.IdleTransactionTimeout, codeIdleTransactionTimeout
		}
		return cfg.IdleTransactionTimeout, codeIdleTransactionTimeout
	default:
		if u != nil && u.ClientIdleTimeout >= 0 {
			return u.ClientIdleTimeout, codeClientIdleTimeout
		}
		return cfg.ClientIdleTimeout, codeClientIdleTimeout
	}
}

// armIdleDeadlineLocked sets (or clears) the client's read deadline for its
// current state. Both the session goroutine and the pump call it under mu
// whenever the state changes, so the last writer always reflects the
// latest state.
func (c *clientConn) armIdleDeadlineLocked() {
	t, _ := c.idleTimeoutLocked()
	if t > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(t))
		c.mu.deadline = true
	} else if c.mu.deadline {
		_ = c.conn.SetReadDeadline(time.Time{})
		c.mu.deadline = false
	}
}

// requestStart is when a request starts (UnixNano): now, or, for one that
// just got its server, when it got it.
func requestStart(att *attachment, justAttached bool) int64 {
	if justAttached {
		return att.xactStart.UnixNano()
	}
	return time.Now().UnixNano()
}

// noteRequest accounts for one client message about to be forwarded,
// attaching a server first when none is attached.
func (c *clientConn) noteRequest(typ byte) (*attachment, error) {
	c.mu.Lock()
	att := c.mu.att
	justAttached := att == nil
	if justAttached {
		c.mu.Unlock()
		var err error
		att, err = c.attach()
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
	}
	c.noteLocked(att, typ, justAttached)
	c.mu.Unlock()
	return att, nil
}

// noteLocked counts one client message on att (under mu).
func (c *clientConn) noteLocked(att *attachment, typ byte, justAttached bool) {
	switch typ {
	case 'Q', 'F':
		att.inFlight++
		c.requestTime.Store(requestStart(att, justAttached))
	case 'S':
		att.inFlight++
		att.partial = false
		c.requestTime.Store(requestStart(att, justAttached))
	case 'P', 'B', 'D', 'E', 'C', 'H':
		att.partial = true
	case 'c', 'f':
		if att.copyIn {
			att.copyIn = false
		} else {
			att.copyEnds++
		}
	}
	if c.mu.deadline {
		c.armIdleDeadlineLocked()
	}
}

// prepBarrier reports whether Parses or Closes of an earlier batch (before
// a Sync already sent) are still unanswered, so that a statement they
// create or drop might not exist after all if the server skips them after
// an error. The session goroutine then reads the server's answers to those
// batches before it rewrites the next message. (With a pump reading the
// server, after a Flush, it does not wait.)
func (c *clientConn) prepBarrier(att *attachment) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !att.pumped && c.ps.srv.unsettledBefore()
}

// forwardRun forwards the messages rewritten so far (if any) followed by
// the unchanged run b.
func (c *clientConn) forwardRun(att *attachment, b []byte) error {
	if len(c.psOut) == 0 {
		return c.forward(att, b)
	}
	c.psOut = append(c.psOut, b...)
	err := c.forward(att, c.psOut)
	if cap(c.psOut) > relayBufSize {
		c.psOut = nil
	} else {
		c.psOut = c.psOut[:0]
	}
	return err
}

// growBuf returns a larger copy of buf's first w bytes (a message the
// prepared-statement rewriting needs whole does not fit). The copy is not
// pooled; the session drops it when it next goes idle.
func growBuf(buf []byte, w, size int) []byte {
	nb := make([]byte, max(size, 2*len(buf)))
	copy(nb, buf[:w])
	return nb
}

func (c *clientConn) forward(att *attachment, b []byte) error {
	if len(b) == 0 || att == nil {
		return nil
	}
	if _, err := c.writeServer(att.sc, b); err != nil {
		// The pump sees the broken server and ends the client.
		return newError(codeServerConnCrashed, "")
	}
	att.pool.stats.recv.Add(int64(len(b)))
	return nil
}

// attach acquires a server for this client, brings its session parameters
// in line with the client's, and starts the server pump.
func (c *clientConn) attach() (*attachment, error) {
	c.mu.Lock()
	if c.mu.wantStop {
		why := c.stopReasonLocked()
		c.mu.Unlock()
		c.dropLoopServer()
		return nil, why
	}
	c.mu.Unlock()
	p := c.pool
	c.mu.Lock()
	c.mu.state = stateWaiting
	start := time.Now()
	c.mu.waitFrom = start
	c.mu.Unlock()
	var res *puddle.Resource[*serverConn]
	var ready time.Time
	if ls := c.ls; ls != nil && ls.res != nil {
		// The loop took a server for this request (loopclient.go).
		res, ready = ls.res, time.Now()
		check := ls.check
		ls.res, ls.check = nil, false
		if check {
			if err := p.check(res); err != nil {
				p.discard(res)
				res = nil
			}
		}
	}
	if res == nil {
		var err error
		res, ready, err = p.acquire(start)
		if err != nil {
			return nil, err
		}
	}
	return c.attachServer(res, ready)
}

// attachServer makes res, just acquired, this client's attachment.
func (c *clientConn) attachServer(res *puddle.Resource[*serverConn], ready time.Time) (*attachment, error) {
	p := c.pool
	sc := res.Value()
	if err := c.syncParams(sc); err != nil {
		if errors.Is(err, errServerBroken) {
			p.discard(res)
		} else {
			p.release(res)
		}
		return nil, err
	}
	att := &attachment{res: res, sc: sc, pool: p, mode: p.poolMode(), txStatus: 'I', xactStart: ready}
	c.mu.Lock()
	if max := c.srv.cfg.Load().MaxPreparedStatements; att.mode != config.PoolSession && (max > 0 || len(c.ps.client) > 0) {
		// Track named prepared statements (prepared.go). A client
		// that has some keeps being tracked if a reload sets
		// max_prepared_statements to 0; its server's set is then
		// unbounded until the client leaves.
		if c.ps.client == nil {
			c.ps.client = map[string]*clientStmt{}
		}
		c.ps.srv, c.ps.max = sc.stmts, max
		att.prep = true
	}
	c.mu.att = att
	c.mu.state = stateActive
	if att.mode == config.PoolSession {
		// In session mode the client must receive notifications
		// while it is quiet: a pump reads the server all along.
		att.pumped = true
		att.done = make(chan struct{})
	}
	c.mu.Unlock()
	if att.pumped {
		go c.pump(att)
	}
	return att, nil
}

// syncParams sends one SET/RESET query when the server's tracked parameter
// values differ from the client's (PgBouncer's varcache).
func (c *clientConn) syncParams(sc *serverConn) error {
	vars := c.vars
	if sc.paramsFP != "" && sc.paramsFP == vars.fp {
		// This server already has exactly this client's values.
		return nil
	}
	var q strings.Builder
	var set []string
	for k, want := range vars.m {
		have := sc.params[k]
		if strings.EqualFold(have, want) {
			continue
		}
		name := canonicalName(k)
		if want == "" {
			q.WriteString("RESET " + name + ";")
		} else {
			q.WriteString("SET " + name + "=" + setValue(k, want) + ";")
		}
		set = append(set, k)
	}
	// Parameters another client set that this client never did.
	for k, have := range sc.params {
		if _, ok := vars.m[k]; ok || have == "" || isReported(k) {
			continue
		}
		if c.srv.isTracked(c.cfg, k) {
			q.WriteString("RESET " + canonicalName(k) + ";")
			set = append(set, k)
		}
	}
	if q.Len() == 0 {
		sc.paramsFP = vars.fp
		return nil
	}
	if err := sc.simpleExec(q.String()); err != nil {
		var se *serverError
		if errors.As(err, &se) {
			return &pgError{code: codeProtocolViolation, sqlstate: se.code, msg: se.msg}
		}
		return err
	}
	var respelled map[string]string
	for _, k := range set {
		if v, ok := vars.m[k]; ok {
			if reported, ok := sc.params[k]; ok && isReported(k) {
				// Keep the server's canonical spelling.
				if reported != v {
					if respelled == nil {
						respelled = make(map[string]string)
					}
					respelled[k] = reported
				}
			} else {
				sc.params[k] = v
			}
		} else {
			delete(sc.params, k)
		}
	}
	if respelled != nil {
		vars = c.srv.paramSets.with(vars, respelled)
		c.mu.Lock()
		c.vars = vars
		c.mu.Unlock()
	}
	sc.paramsFP = vars.fp
	return nil
}

// setValue renders a tracked parameter's value for SET: quoted as a
// literal, except search_path, which is a list whose elements are already
// quoted as identifiers where needed (as PgBouncer sends it).
func setValue(lower, v string) string {
	if lower == "search_path" {
		return v
	}
	return quoteLiteral(v)
}

// detachOnExit runs when the session loop ends: a clean server goes back to
// its pool (after server_reset_query in session mode), anything else is
// closed. It waits for the pump to finish.
func (c *clientConn) detachOnExit() {
	c.mu.Lock()
	att := c.mu.att
	pumped, clean := false, false
	if att != nil {
		att.clientGone = true
		pumped = att.pumped
		if pumped {
			// Wake the pump: it may be blocked reading the server. (The
			// pump owns att.ss and decides what to do with the server.)
			_ = att.sc.conn.SetReadDeadline(time.Now())
		} else {
			c.mu.att = nil
			clean = att.clean() && !att.copyIn && att.ss.r == att.ss.w
		}
	}
	c.mu.Unlock()
	if att == nil {
		return
	}
	if !pumped {
		// The session goroutine owns the server: hand it back clean or
		// close it.
		if clean {
			c.releaseAfterSession(att)
		} else {
			att.pool.discard(att.res)
		}
		att.ss.r, att.ss.w = 0, 0
		att.ss.free()
		return
	}
	// It may also be blocked writing to a client that stopped reading.
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	<-att.done
	_ = c.conn.SetWriteDeadline(time.Time{})
}

// scanEvent is why scanServer stopped.
type scanEvent int

const (
	scanNeedRead scanEvent = iota // no complete message left to look at
	scanReady                     // a ReadyForQuery was consumed
	scanCopyIn                    // a CopyInResponse/CopyBothResponse was consumed
	scanBad                       // the server broke the protocol
	scanSplice                    // ss.skip bytes at r are to be replaced by ss.splice
)

// scanServer walks the server messages buffered in att.ss from r, acting on
// ReadyForQuery, ParameterStatus and CopyIn/CopyBoth responses, and stops
// after a ReadyForQuery or a copy response so the caller can act on it. The
// bytes between the old and new r are to be forwarded to the client.
func (c *clientConn) scanServer(att *attachment) (scanEvent, readyAction) {
	ss := &att.ss
	buf := *ss.bufp
	for ss.r < ss.w {
		if ss.remaining > 0 {
			take := min(ss.remaining, ss.w-ss.r)
			ss.r += take
			ss.remaining -= take
			continue
		}
		if ss.w-ss.r < 5 {
			return scanNeedRead, readyKeep
		}
		typ := buf[ss.r]
		l := int(binary.BigEndian.Uint32(buf[ss.r+1:]))
		if l < 4 {
			return scanBad, readyKeep
		}
		switch typ {
		case '1', '3':
			if att.prep {
				if l != 4 {
					return scanBad, readyKeep
				}
				c.mu.Lock()
				var a psAnswer
				if typ == '1' {
					a = att.sc.stmts.onParseComplete()
				} else {
					a = att.sc.stmts.onCloseComplete()
				}
				c.mu.Unlock()
				switch a {
				case psSwallow:
					ss.splice, ss.skip = nil, l+1
					return scanSplice, readyKeep
				case psAsParse:
					buf[ss.r] = '1'
				}
			}
		case 'E':
			if att.prep && l+1 <= len(buf) {
				if ss.w-ss.r < l+1 {
					return scanNeedRead, readyKeep
				}
				c.mu.Lock()
				repl, ok := att.sc.stmts.onError(buf[ss.r+5 : ss.r+1+l])
				c.mu.Unlock()
				if ok {
					ss.splice, ss.skip = repl, l+1
					return scanSplice, readyKeep
				}
			}
		case 'C':
			if l == 4+8 || l == 4+12 || l == 4+15 {
				if ss.w-ss.r < l+1 {
					return scanNeedRead, readyKeep
				}
				if att.prep && l == 4+8 && c.deallocPrepareTag(att, buf[ss.r+5:ss.r+1+l]) {
					// The first half of a client DEALLOCATE's
					// replacement (dealloc.go).
					ss.splice, ss.skip = nil, l+1
					return scanSplice, readyKeep
				}
				c.commandTag(att, buf[ss.r+5:ss.r+1+l])
			}
		case 'Z':
			if l != 5 {
				// Acting on it would take 6 bytes of a longer
				// message and leave the client and the pooler out of
				// step with the server.
				return scanBad, readyKeep
			}
			if ss.w-ss.r < 6 {
				return scanNeedRead, readyKeep
			}
			if att.prep {
				c.mu.Lock()
				att.sc.stmts.onReady(c.ps.client)
				c.mu.Unlock()
			}
			status := buf[ss.r+5]
			act := c.onReady(att, status, att.mode)
			if act != readyStatementTx {
				// (In statement mode the client gets a FATAL
				// instead of this ReadyForQuery.)
				ss.r += 6
			}
			return scanReady, act
		case 'S':
			if l+1 <= len(buf) {
				if ss.w-ss.r < l+1 {
					return scanNeedRead, readyKeep
				}
				if name, value, ok := parseParameterStatus(buf[ss.r+5 : ss.r+1+l]); ok {
					lk := strings.ToLower(name)
					c.mu.Lock()
					att.sc.params[lk] = value
					if have, tracked := c.vars.m[lk]; tracked || c.srv.isTracked(c.cfg, lk) {
						if have != value {
							c.vars = c.srv.paramSets.with(c.vars, map[string]string{lk: value})
						}
						// Both sides changed together.
						att.sc.paramsFP = c.vars.fp
					}
					c.mu.Unlock()
				}
				ss.r += l + 1
				continue
			}
			// Too large to inspect: forward it as it is.
		case 'G', 'W':
			// Forward the whole (small) message before handing the
			// turn back to the client.
			if l+1 > len(buf) {
				return scanBad, readyKeep
			}
			if ss.w-ss.r < l+1 {
				return scanNeedRead, readyKeep
			}
			ss.r += l + 1
			c.mu.Lock()
			ended := att.copyEnds > 0
			if ended {
				// The client already finished this COPY.
				att.copyEnds--
			} else {
				att.copyIn = true
			}
			c.mu.Unlock()
			if ended {
				continue
			}
			return scanCopyIn, readyKeep
		}
		ss.r += 5
		ss.remaining = l - 4
	}
	return scanNeedRead, readyKeep
}

// commandTag acts on the tags that change what the pooler knows of the
// server's prepared statements: DISCARD ALL and DEALLOCATE ALL drop them
// all (and the client's own), and a SQL PREPARE that got past the check on
// simple queries makes the server unfit for other clients.
func (c *clientConn) commandTag(att *attachment, body []byte) {
	switch {
	case deallocatesAll(body):
		c.mu.Lock()
		att.sc.stmts.forget()
		clear(c.ps.client)
		c.mu.Unlock()
	case att.mode != config.PoolSession && string(body) == "PREPARE\x00":
		// The statement stays on this server: close it at release
		// rather than let another client run it.
		att.sc.broken = true
	}
}

// deallocPrepareTag reports whether a CommandComplete body is the PREPARE
// tag of a client DEALLOCATE's replacement query, which the client must
// not see.
func (c *clientConn) deallocPrepareTag(att *attachment, body []byte) bool {
	if string(body) != "PREPARE\x00" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return att.sc.stmts.onPrepareTag()
}

// takeSplice skips the server message scanServer asked to replace and
// returns its replacement, to be written to the client in its place.
func (ss *serverStream) takeSplice() []byte {
	ss.r += ss.skip
	b := ss.splice
	ss.splice, ss.skip = nil, 0
	return b
}

// compact moves unscanned bytes to the front of the buffer before a read.
func (ss *serverStream) compact() {
	if ss.r == ss.w {
		ss.r, ss.w = 0, 0
	} else if ss.r > 0 {
		buf := *ss.bufp
		copy(buf, buf[ss.r:ss.w])
		ss.w -= ss.r
		ss.r = 0
	}
}

// queryTimeout is query_timeout for this client (per-user override first).
func (c *clientConn) queryTimeout() time.Duration {
	cfg := c.srv.cfg.Load()
	if u, ok := cfg.Users[c.st.user]; ok && u.QueryTimeout >= 0 {
		return u.QueryTimeout
	}
	return cfg.QueryTimeout
}

// driveInline reads the server's answers on the session goroutine until
// the requests in flight are answered (or a COPY FROM STDIN starts), and
// releases the server at a clean ReadyForQuery in transaction and statement
// mode. The session goroutine owns att.res throughout. On error the server
// is destroyed and detached, and the error ends the session.
func (c *clientConn) driveInline(att *attachment) error {
	ss := &att.ss
	sc := att.sc
	p := att.pool
	qt := c.queryTimeout()
	buf := ss.buf()
	needRead := ss.r == ss.w
	fail := func(err error) error {
		c.clearAttachment(att)
		att.pool.discard(att.res)
		ss.r, ss.w = 0, 0
		ss.free()
		return err
	}
	if qt > 0 {
		// query_timeout also bounds the writes: a client that stops
		// reading its answer holds the server as surely as a slow
		// query does.
		c.setWriteDeadline(time.Unix(0, c.requestTime.Load()).Add(qt))
		defer c.setWriteDeadline(time.Time{})
	}
	for {
		if needRead {
			ss.compact()
			if qt > 0 {
				_ = sc.conn.SetReadDeadline(time.Unix(0, c.requestTime.Load()).Add(qt))
				if sc.interrupted.Load() {
					// kill's deadline came first: keep it.
					_ = sc.conn.SetReadDeadline(aLongTimeAgo)
				}
			}
			n, err := sc.read(buf[ss.w:])
			if n == 0 && err != nil {
				if pe := c.killErr.Load(); pe != nil && sc.interrupted.Load() {
					return fail(pe) // (interruptServerRead)
				}
				var ne net.Error
				if qt > 0 && errors.As(err, &ne) && ne.Timeout() {
					return fail(newError(codeQueryTimeout, ""))
				}
				return fail(wrapError(codeServerConnCrashed, "", err))
			}
			ss.w += n
		}
		start := ss.r
		ev, act := c.scanServer(att)
		if ss.r > start {
			if err := c.writeClient(buf[start:ss.r], p, ss.remaining > 0); err != nil {
				var ne net.Error
				if qt > 0 && errors.As(err, &ne) && ne.Timeout() {
					return fail(newError(codeQueryTimeout, ""))
				}
				return fail(err)
			}
		}
		switch ev {
		case scanBad:
			return fail(newError(codeServerConnCrashed, ""))
		case scanSplice:
			if err := c.splice(att); err != nil {
				return fail(err)
			}
			needRead = ss.r == ss.w
			continue
		case scanCopyIn:
			if qt > 0 {
				_ = sc.conn.SetReadDeadline(time.Time{})
			}
			return nil
		case scanNeedRead:
			needRead = true
			continue
		}
		// A ReadyForQuery.
		switch act {
		case readyStatementTx:
			return fail(newError(codeStatementModeTx, ""))
		case readyRelease:
			if ss.r < ss.w {
				// Bytes after the final ReadyForQuery: the server
				// sent something unsolicited. Do not reuse it.
				sc.broken = true
			}
			c.clearAttachment(att)
			ss.r, ss.w = 0, 0
			ss.free()
			if qt > 0 {
				_ = sc.conn.SetReadDeadline(time.Time{})
			}
			if c.srv.cfg.Load().ServerResetQueryAlways {
				c.releaseAfterSession(att)
			} else {
				p.release(att.res)
			}
			if why := c.stopReason(); why != nil {
				return why
			}
			return nil
		}
		c.mu.Lock()
		done := att.inFlight == 0
		c.mu.Unlock()
		if done {
			// Inside a transaction, waiting for the client.
			if qt > 0 {
				_ = sc.conn.SetReadDeadline(time.Time{})
			}
			ss.free()
			return nil
		}
		needRead = ss.r == ss.w
	}
}

// pump is the server→client half of an attachment when the session
// goroutine cannot read the server itself (session mode, or Flush before
// Sync). It owns att.res from its start.
func (c *clientConn) pump(att *attachment) {
	defer close(att.done)
	ss := &att.ss
	sc := att.sc
	p := att.pool
	buf := ss.buf()
	defer func() {
		ss.r, ss.w = 0, 0
		ss.free()
	}()
	qt := c.queryTimeout()
	needRead := ss.r == ss.w
	for {
		if needRead {
			ss.compact()
			if qt > 0 {
				// Under mu so that detachOnExit's wake-up deadline is
				// never overwritten.
				c.mu.Lock()
				if !att.clientGone {
					// The write deadline too: see driveInline.
					var dl time.Time
					if att.inFlight > 0 {
						dl = time.Unix(0, c.requestTime.Load()).Add(qt)
					}
					_ = sc.conn.SetReadDeadline(dl)
					c.setWriteDeadline(dl)
				}
				c.mu.Unlock()
			}
			n, err := sc.read(buf[ss.w:])
			if n == 0 && err != nil {
				c.pumpEnded(att, err, qt)
				return
			}
			ss.w += n
		}
		start := ss.r
		ev, act := c.scanServer(att)
		if ss.r > start {
			if err := c.writeClient(buf[start:ss.r], p, ss.remaining > 0); err != nil {
				c.pumpEnded(att, err, qt)
				return
			}
		}
		switch ev {
		case scanBad:
			c.pumpFatal(att, newError(codeServerConnCrashed, ""))
			return
		case scanSplice:
			if err := c.splice(att); err != nil {
				c.pumpEnded(att, err, 0)
				return
			}
			needRead = ss.r == ss.w
			continue
		case scanNeedRead:
			needRead = true
			continue
		case scanCopyIn:
			needRead = ss.r == ss.w
			continue
		}
		switch act {
		case readyStatementTx:
			c.pumpFatal(att, newError(codeStatementModeTx, ""))
			return
		case readyRelease:
			if c.tryDetach(att) {
				if ss.r < ss.w {
					sc.broken = true
				}
				_ = sc.conn.SetReadDeadline(time.Time{})
				c.mu.Lock()
				gone := att.clientGone
				c.mu.Unlock()
				if gone || c.srv.cfg.Load().ServerResetQueryAlways {
					c.releaseAfterSession(att)
				} else {
					p.release(att.res)
				}
				c.afterDetach()
				return
			}
		}
		needRead = ss.r == ss.w
	}
}

// splice replaces the server message at ss.r as scanServer asked.
func (c *clientConn) splice(att *attachment) error {
	if b := att.ss.takeSplice(); len(b) > 0 {
		return c.writeClient(b, att.pool, false)
	}
	return nil
}

type readyAction int

const (
	readyKeep readyAction = iota
	readyRelease
	readyStatementTx
)

// onReady accounts for a ReadyForQuery from the server.
func (c *clientConn) onReady(att *attachment, status byte, mode config.PoolMode) readyAction {
	c.mu.Lock()
	defer c.mu.Unlock()
	if att.inFlight > 0 {
		att.inFlight--
	}
	prev := att.txStatus
	att.txStatus = status
	now := time.Now()
	att.pool.queryDone(now.Sub(time.Unix(0, c.requestTime.Load())))
	if status == 'I' && (prev != 'I' || att.inFlight == 0) {
		att.pool.xactDone(now.Sub(att.xactStart))
		att.xactStart = now
	}
	if att.inFlight == 0 {
		c.armIdleDeadlineLocked()
	}
	if mode == config.PoolStatement && status != 'I' {
		return readyStatementTx
	}
	if mode != config.PoolSession && att.clean() {
		return readyRelease
	}
	if att.clientGone && att.clean() {
		return readyRelease
	}
	return readyKeep
}

// tryDetach detaches att if it is still clean after the final bytes were
// flushed to the client.
func (c *clientConn) tryDetach(att *attachment) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !att.clean() || (att.mode == config.PoolSession && !att.clientGone) {
		return false
	}
	if c.mu.att == att {
		c.mu.att = nil
		c.mu.state = stateIdle
		c.armIdleDeadlineLocked()
	}
	return true
}

// afterDetach closes a client that asked to stop at its next transaction
// boundary.
func (c *clientConn) afterDetach() {
	if why := c.stopReason(); why != nil {
		c.kill(why)
	}
}

// pumpEnded handles a failed server read or client write.
func (c *clientConn) pumpEnded(att *attachment, err error, qt time.Duration) {
	c.mu.Lock()
	gone := att.clientGone
	clean := att.clean()
	c.mu.Unlock()
	if gone {
		var ne net.Error
		if clean && errors.As(err, &ne) && ne.Timeout() {
			c.releaseAfterSession(att)
		} else {
			att.pool.discard(att.res)
		}
		c.clearAttachment(att)
		return
	}
	var ne net.Error
	if qt > 0 && errors.As(err, &ne) && ne.Timeout() {
		c.pumpFatal(att, newError(codeQueryTimeout, ""))
		return
	}
	if isClientWriteError(err) {
		// The client went away while results were streaming.
		att.pool.discard(att.res)
		c.clearAttachment(att)
		c.raw.Close()
		return
	}
	c.pumpFatal(att, wrapError(codeServerConnCrashed, "", err))
}

func isClientWriteError(err error) bool {
	var we *clientWriteError
	return errors.As(err, &we)
}

type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "write to client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

// pumpFatal destroys the server and ends the client with pe.
func (c *clientConn) pumpFatal(att *attachment, pe *pgError) {
	att.pool.discard(att.res)
	c.clearAttachment(att)
	c.kill(pe)
}

func (c *clientConn) clearAttachment(att *attachment) {
	c.mu.Lock()
	if c.mu.att == att {
		c.mu.att = nil
		c.mu.state = stateIdle
	}
	c.mu.Unlock()
}

// releaseAfterSession resets a clean server (server_reset_query: at the end
// of a session-mode session, and at every release with
// server_reset_query_always) and returns it to the pool.
func (c *clientConn) releaseAfterSession(att *attachment) {
	cfg := c.srv.cfg.Load()
	sc := att.sc
	_ = sc.conn.SetReadDeadline(time.Time{})
	if cfg.ServerResetQuery != "" && (att.mode == config.PoolSession || cfg.ServerResetQueryAlways) {
		_ = sc.conn.SetDeadline(time.Now().Add(cfg.ServerConnectTimeout))
		err := sc.simpleExec(cfg.ServerResetQuery)
		_ = sc.conn.SetDeadline(time.Time{})
		if err != nil {
			att.pool.discard(att.res)
			return
		}
		// DISCARD ALL resets every parameter to the server default.
		for k := range sc.params {
			if !isReported(k) {
				delete(sc.params, k)
			}
		}
	}
	att.pool.release(att.res)
}

// writeClient writes b, server bytes, to the client under writeMu; mid
// says that b ends inside a message (see outMid).
func (c *clientConn) writeClient(b []byte, p *pool, mid bool) error {
	c.writeMu.Lock()
	_, err := c.write(b)
	c.outMid = mid || err != nil
	c.writeMu.Unlock()
	if err != nil {
		return &clientWriteError{err}
	}
	p.stats.sent.Add(int64(len(b)))
	return nil
}
