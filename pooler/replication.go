package pooler

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// Replication connections (replication=true for physical, replication=
// database for logical), as PgBouncer 1.23 and later serve them. The client
// signs in like any other, then gets a server connection of its own,
// opened for it with the pool's server credentials and with replication=…,
// the client's tracked parameters and its raw options in the
// StartupMessage (a physical walsender accepts no SET). That connection is
// never pooled: it is the client's for its whole session, whatever
// pool_mode says, and is closed when the client leaves. After the welcome
// both directions are relayed as bytes (START_REPLICATION's CopyBoth
// stream, standby status updates, the SQL a logical connection may run);
// only message boundaries are followed, so that a FATAL from pgwarden never
// lands in the middle of a message.
//
// The server connection is opened while the client signs in, so that the
// server's refusal (no replication line in pg_hba.conf, a role without
// REPLICATION) is the client's login error, as when it connects to
// PostgreSQL, and the welcome is that server's own ParameterStatus set.
// It counts against max_db_connections and max_user_connections (idle
// pooled servers are closed to make room, as for any new server) but takes
// none of the pool's pool_size slots: those are for pooled servers, and a
// stream that never ends would hold one for good.

// replKind is the kind of replication a client asked for.
type replKind uint8

const (
	replNone replKind = iota
	replLogical
	replPhysical
)

// String is the SHOW CLIENTS / SHOW SERVERS spelling.
func (k replKind) String() string {
	switch k {
	case replLogical:
		return "logical"
	case replPhysical:
		return "physical"
	}
	return "none"
}

// param is the value sent to the server and logged, as PgBouncer logs
// it: no, database or yes.
func (k replKind) param() string {
	switch k {
	case replLogical:
		return "database"
	case replPhysical:
		return "yes"
	}
	return "no"
}

// parseReplication reads the replication startup parameter as PostgreSQL
// does: "database" (exactly) for logical, else a boolean.
func parseReplication(v string) (replKind, bool) {
	if v == "database" {
		return replLogical, true
	}
	b, ok := parsePGBool(v)
	if !ok {
		return replNone, false
	}
	if b {
		return replPhysical, true
	}
	return replNone, true
}

// parsePGBool is PostgreSQL's parse_bool: any case-insensitive prefix of
// true, false, yes or no, "on", "off" or a prefix of it of two letters at
// least, "1" and "0".
func parsePGBool(v string) (bool, bool) {
	if v == "" {
		return false, false
	}
	prefixOf := func(word string) bool {
		return len(v) <= len(word) && strings.EqualFold(v, word[:len(v)])
	}
	switch v[0] | 0x20 {
	case 't':
		return true, prefixOf("true")
	case 'f':
		return false, prefixOf("false")
	case 'y':
		return true, prefixOf("yes")
	case 'n':
		return false, prefixOf("no")
	case 'o':
		switch {
		case len(v) >= 2 && prefixOf("on"):
			return true, true
		case len(v) >= 2 && prefixOf("off"):
			return false, true
		}
		return false, false
	}
	switch v {
	case "1":
		return true, true
	case "0":
		return false, true
	}
	return false, false
}

// replNotAllowed is the refusal of a kind of replication by a database's
// allow_replication.
func replNotAllowed(k replKind, db string, allow config.ReplicationAllow) *pgError {
	return &pgError{code: codeReplicationNotAllowed, arg: db,
		msg:  fmt.Sprintf("%s replication connections to database %q are not allowed (allow_replication = %s)", k, db, allow),
		hint: "Ask the pooler's administrator to allow them with allow_replication in the database's entry, or connect to PostgreSQL directly."}
}

// replLink is a replication client's dedicated server connection.
type replLink struct {
	sc   *serverConn
	pool *pool
	kind replKind
	// clientGone is set when the client ended the session (Terminate, or
	// its socket closed): the server's end is then no news to report.
	clientGone atomic.Bool
	// done is closed when the server-to-client relay ends.
	done      chan struct{}
	closeOnce sync.Once
}

// close closes the server connection and gives back its places in the
// connection limits. It may be called more than once.
func (r *replLink) close() {
	r.closeOnce.Do(func() {
		r.sc.conn.Close()
		r.pool.replServers.Add(-1)
		r.pool.dbLimit.release()
		r.pool.userLimit.release()
	})
}

// replStartup is what goes into the server StartupMessage besides user
// and database: replication, the client's tracked parameters and options.
func (c *clientConn) replStartup() []param {
	ps := []param{{"replication", c.st.repl.param()}}
	for k, v := range c.st.params {
		ps = append(ps, param{canonicalName(k), v})
	}
	if c.st.options != "" {
		ps = append(ps, param{"options", c.st.options})
	}
	return ps
}

// mergeParams returns base with over's parameters added, each replacing a
// base parameter of the same name (case-insensitively).
func mergeParams(base, over []param) []param {
	out := make([]param, 0, len(base)+len(over))
	for _, b := range base {
		replaced := false
		for _, o := range over {
			if strings.EqualFold(b.name, o.name) {
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, b)
		}
	}
	return append(out, over...)
}

// replLogin opens the replication client's server connection and sends the
// welcome: AuthenticationOk, that server's ParameterStatus set, pgwarden's
// BackendKeyData and ReadyForQuery. Waiting for a PAUSE to end and for a
// place under max_db_connections / max_user_connections is bounded by
// query_wait_timeout, the login itself by server_connect_timeout.
func (c *clientConn) replLogin(cfg *config.Config, p *pool) error {
	kind := c.st.repl
	db := p.database()
	if !db.AllowReplication.Allows(kind == replPhysical) {
		return replNotAllowed(kind, c.st.database, db.AllowReplication)
	}
	// Every wait ends when the client is killed (KILL, shutdown).
	kctx, kcancel := context.WithCancel(context.Background())
	defer kcancel()
	go func() {
		select {
		case <-c.killed:
			kcancel()
		case <-kctx.Done():
		}
	}()
	killed := func(err error) error {
		if pe := c.killErr.Load(); pe != nil {
			return pe
		}
		return err
	}
	wctx := kctx
	if cfg.QueryWaitTimeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(kctx, cfg.QueryWaitTimeout)
		defer cancel()
	}
	if err := p.waitResumed(wctx); err != nil {
		return killed(err)
	}
	ps := c.srv.pools
	if err := p.dbLimit.acquire(wctx, func() { ps.evictIdle(p, true, true) }); err != nil {
		return killed(wrapError(codeQueryWaitTimeout, "", err))
	}
	if err := p.userLimit.acquire(wctx, func() { ps.evictIdle(p, false, true) }); err != nil {
		p.dbLimit.release()
		return killed(wrapError(codeQueryWaitTimeout, "", err))
	}
	dctx, dcancel := context.WithTimeout(kctx, cfg.ServerConnectTimeout)
	sc, err := p.dialWith(dctx, c.replStartup())
	dcancel()
	if err != nil {
		p.dbLimit.release()
		p.userLimit.release()
		reason, err := splitLoginFailure(err)
		if p.obs != nil {
			p.obs.ServerLoginFailed(reason)
		}
		if pe := c.killErr.Load(); pe != nil {
			return pe
		}
		// Not cached for the pool (server_login_retry): a replication
		// login can fail where ordinary ones succeed (pg_hba.conf, the
		// REPLICATION attribute).
		c.srv.log.Warn("server login failed", "db", p.key.db, "user", p.key.user, "replication", kind.param(), "err", err)
		var se *serverError
		if errors.As(err, &se) || asPgError(err) != nil {
			return err
		}
		return wrapError(codeServerLoginFailed, err.Error(), err)
	}
	sc.gen = p.gen.Load()
	p.replServers.Add(1)
	r := &replLink{sc: sc, pool: p, kind: kind}
	c.repl = r // closed by finish, whatever happens from here
	c.key = c.srv.cancels.register(c)
	b := appendAuthRequest(nil, 0, nil)
	for _, prm := range sc.welcome {
		b = appendParameterStatus(b, prm.name, prm.value)
	}
	b = append(b, 'K', 0, 0, 0, 12)
	b = append(b, c.key[:]...)
	b = appendReadyForQuery(b, 'I')
	c.mu.Lock()
	stop := c.mu.wantStop
	why := c.stopReasonLocked()
	c.mu.repl = r
	c.mu.state = stateActive
	c.mu.Unlock()
	if stop {
		// Shutdown began (or the token ran out) while this client was
		// signing in.
		return why
	}
	return writeAll(c.conn, b)
}

// replSession relays a replication client's session: this goroutine
// forwards what the client sends, replPump what the server sends. It
// returns when both have ended; the server connection is closed by then.
// It returns nil: whatever the client had to be told was told by replPump
// at a message boundary.
func (c *clientConn) replSession() error {
	r := c.repl
	r.done = make(chan struct{})
	go c.replPump(r)
	bufp := getBuf()
	defer putBuf(bufp)
	buf := *bufp
	var w msgWalk
	for {
		n, err := c.read(buf)
		if n > 0 {
			w.walk(buf[:n])
			if w.boundary() && w.last == 'X' {
				r.clientGone.Store(true) // the server closes next
			}
			if _, err := c.writeServer(r.sc, buf[:n]); err != nil {
				break // replPump reports the server's end
			}
			r.pool.stats.recv.Add(int64(n))
		}
		if err != nil {
			if c.killErr.Load() == nil {
				r.clientGone.Store(true)
			}
			break
		}
	}
	if r.clientGone.Load() {
		// replPump may be blocked writing to a client that is gone.
		_ = c.conn.SetWriteDeadline(time.Now())
	}
	r.sc.conn.Close()
	<-r.done
	r.close()
	return nil
}

// replPump relays the server's messages to the client until the server
// connection ends. Then, at a message boundary, it tells the client why
// (the kill reason, or that the server connection broke, unless the
// server said so itself or the client had left), and closes the client.
func (c *clientConn) replPump(r *replLink) {
	defer close(r.done)
	defer c.raw.Close()
	bufp := getBuf()
	defer putBuf(bufp)
	buf := *bufp
	var w msgWalk
	for {
		n, err := r.sc.read(buf)
		if n > 0 {
			w.walk(buf[:n])
			if err := c.writeClient(buf[:n], r.pool, !w.boundary()); err != nil {
				return // the client is gone (or was killed and stopped reading)
			}
		}
		if err == nil {
			continue
		}
		if r.clientGone.Load() {
			return
		}
		pe := c.killErr.Load()
		if pe == nil {
			if w.boundary() && w.last == 'E' {
				return // the server's own FATAL was the last word
			}
			pe = wrapError(codeServerConnCrashed, "", err)
			if c.cfg.LogPoolerErrors {
				c.srv.log.Warn("pooler error: "+pe.clientMessage(), "client", c.remote, "replication", r.kind.param(), "cause", err)
			}
		}
		if w.boundary() {
			c.sendFatal(pe)
		}
		return
	}
}

// stopReplication ends a replication client's relay for kill: the server
// connection is closed, and replPump tells the client why at the next
// message boundary, then closes it. It returns false for other clients.
func (c *clientConn) stopReplication() bool {
	c.mu.Lock()
	r := c.mu.repl
	c.mu.Unlock()
	if r == nil {
		return false
	}
	// replPump may be blocked writing to a client that does not read.
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	r.sc.conn.Close()
	return true
}

// killReplication kills the replication clients of pool p for which why
// returns an error.
func (s *Server) killReplication(p *pool, why func(replKind) *pgError) {
	type victim struct {
		c  *clientConn
		pe *pgError
	}
	var vs []victim
	s.mu.Lock()
	for c := range s.mu.clients {
		c.mu.Lock()
		if r := c.mu.repl; r != nil && r.pool == p {
			if pe := why(r.kind); pe != nil {
				vs = append(vs, victim{c, pe})
			}
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	for _, v := range vs {
		v.c.kill(v.pe)
	}
}

// msgWalk follows message boundaries in a protocol byte stream without
// decoding the messages.
type msgWalk struct {
	hdr  [5]byte
	nhdr int // header bytes of the current message seen so far
	rem  int // body bytes of the current message still to come
	last byte
}

func (m *msgWalk) walk(b []byte) {
	for len(b) > 0 {
		if m.rem > 0 {
			n := min(m.rem, len(b))
			m.rem -= n
			b = b[n:]
			continue
		}
		n := copy(m.hdr[m.nhdr:], b)
		m.nhdr += n
		b = b[n:]
		if m.nhdr == len(m.hdr) {
			m.last = m.hdr[0]
			m.rem = max(int(binary.BigEndian.Uint32(m.hdr[1:]))-4, 0)
			m.nhdr = 0
		}
	}
}

// boundary reports whether the bytes walked so far end with a whole
// message.
func (m *msgWalk) boundary() bool { return m.nhdr == 0 && m.rem == 0 }
