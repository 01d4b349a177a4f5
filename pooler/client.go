package pooler

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// clientConn is one client connection from accept to close. Its serve
// goroutine owns the connection, the login and the session loop; while a
// server connection is attached, one more goroutine (the server pump in
// relay.go) reads from that server and writes to this client. Fields under
// mu are shared between the two.
type clientConn struct {
	srv  *Server
	cfg  *config.Config // config at accept; timeouts are re-read per use
	conn net.Conn       // the client socket, TLS-wrapped after SSLRequest
	// sio is conn's raw reader and writer when conn is a plain socket
	// (rawio_linux.go), made by the session goroutine when it first
	// reads and dropped when the client parks; set and read by others
	// under writeMu.
	sio    *sockIO
	raw    net.Conn // the socket under TLS
	unix   bool
	tls    bool
	remote string
	// raddr and laddr are the socket's addresses, kept for SHOW CLIENTS.
	raddr, laddr net.Addr
	// ls is the client's part of the event loop's relay (loopclient.go),
	// set once after sign-in for clients that live on the loop.
	ls *loopState

	tlsDesc     string
	connectTime time.Time
	id          uint64

	st       *startup
	identity *Identity
	// throttle is the sign-in's way through the sign-in throttle (nil
	// when it is off); owned by the login.
	throttle *throttleTicket
	pool     *pool         // set under mu once at sign-in; read freely by the owner
	admin    *adminSession // set under mu at sign-in for the console
	key      [8]byte
	// repl is a replication client's dedicated server connection
	// (replication.go), set at sign-in and owned by the session; mu.repl
	// is the same, for others to see.
	repl *replLink

	// vars are the values of the tracked session parameters this client
	// expects (params.go): shared with the clients that expect the same,
	// replaced, never modified, when they change. Set at welcome; then
	// replaced by the session or its pump under mu.
	vars *paramSet
	// ps holds the client's named prepared statements (transaction and
	// statement mode, max_prepared_statements > 0; prepared.go); its
	// client map is guarded by mu, the rest belongs to the attachment.
	// psOut and psRepl are the session goroutine's scratch buffers for
	// rewritten messages.
	ps     prepState
	psOut  []byte
	psRepl []byte
	// idleBufp is what an idle client waits on: a small pooled buffer
	// instead of a relay buffer, held while a goroutine runs the session
	// (park.go).
	idleBufp *[idleBufSize]byte
	// parkable is set at session start for clients that may be parked
	// when idle; parkRegistered while the parker's watcher knows the
	// socket. Both belong to whoever runs the session.
	parkable       bool
	parkRegistered bool
	// parkState and idleSince are shared with the parker (park.go).
	parkState atomic.Int32
	idleSince atomic.Int64 // UnixNano when the client last went idle
	// expiry ends the session at the token's exp (entra
	// disconnect_on_token_expiry); stopped when the session ends.
	expiry *time.Timer

	// writeMu serialises writes to the client socket (server pumps and the
	// session goroutine may both write), and changes of its write
	// deadline.
	writeMu sync.Mutex
	// outMid is set, under writeMu, while the server bytes written to
	// the client end inside a message (or a write failed part-way): an
	// ErrorResponse now would be read as part of that message, so the
	// client is closed without one (sendFatal).
	outMid bool

	mu struct {
		sync.Mutex
		att      *attachment // the attached server, nil when none
		repl     *replLink   // a replication client's server
		state    clientState
		waitFrom time.Time
		closing  ShutdownMode
		wantStop bool
		stopErr  *pgError // why wantStop was set, if not a shutdown
		deadline bool     // a read deadline is set on conn
	}
	killErr atomic.Pointer[pgError]
	// killed is closed by kill.
	killed   chan struct{}
	killOnce sync.Once
	// requestTime is the start of the current request (UnixNano).
	requestTime atomic.Int64
}

type clientState int

const (
	stateLogin clientState = iota
	stateIdle
	stateWaiting
	stateActive
)

var clientIDs atomic.Uint64

func (s *Server) newClientConn(conn net.Conn, unix bool) *clientConn {
	c := &clientConn{
		srv:         s,
		cfg:         s.cfg.Load(),
		conn:        conn,
		raw:         conn,
		unix:        unix,
		connectTime: time.Now(),
		id:          clientIDs.Add(1),
		killed:      make(chan struct{}),
		raddr:       conn.RemoteAddr(),
		laddr:       conn.LocalAddr(),
	}
	if unix {
		c.remote = "unix"
	} else {
		c.remote = c.raddr.String()
		if tc, ok := conn.(*net.TCPConn); ok {
			tuneTCP(tc, c.cfg)
		}
	}
	return c
}

// serve runs the connection to its end. It always closes the socket.
func (c *clientConn) serve() {
	s := c.srv
	// Tracked by serveConn. During a shutdown the connection is still
	// read: it may carry a CancelRequest for a query that is draining.
	err := c.login()
	if err != nil {
		if !errors.Is(err, errCancelHandled) {
			c.reportError(err)
		}
		c.finish()
		return
	}
	// The session runs on a fresh goroutine, not on this worker: sign-in
	// (TLS handshake, SCRAM, token checks, log lines) grows a stack that
	// an idle client would otherwise keep until it is parked (or for
	// good, with TLS).
	s.wg.Add(1)
	go func() {
		if !c.session() {
			s.wg.Done()
		}
	}()
}

// session runs a signed-in client until it leaves, then cleans up. It
// returns true when the client was parked instead (park.go): the session
// then keeps its place in the server's WaitGroup and resumes later.
func (c *clientConn) session() (parked bool) {
	if t := c.identity.Token; t != nil && c.cfg.Entra.DisconnectOnTokenExpiry && !t.Exp.IsZero() {
		// entra disconnect_on_token_expiry: the session ends at the
		// token's exp, at the next transaction boundary.
		c.expiry = time.AfterFunc(time.Until(t.Exp), func() { c.endSession(newError(codeEntraTokenExpired, "")) })
	}
	if c.admin != nil {
		c.endOfSession(c.admin.run())
		return false
	}
	if c.repl != nil {
		err := c.replSession()
		c.srv.nclients.Add(-1)
		c.endOfSession(err)
		return false
	}
	c.parkable = !c.tls && c.srv.parker.Load() != nil
	c.adoptClient()
	return c.relay()
}

// relay runs (or resumes) a signed-in client's relay and cleans up when the
// session ends; it returns true when the client was parked instead.
func (c *clientConn) relay() (parked bool) {
	err := c.runSession()
	if err == errParked {
		return true
	}
	c.srv.nclients.Add(-1)
	c.endOfSession(err)
	return false
}

// endOfSession reports why the session ended and releases the client.
func (c *clientConn) endOfSession(err error) {
	defer c.finish()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.releaseIdleBuf()
	c.dropLoopServer()
	if err != nil {
		c.reportError(err)
	}
	if c.cfg.LogDisconnections && c.st != nil {
		c.srv.log.Info("closing because: client disconnect", "db", c.st.database, "user", c.st.user, "client", c.remote, "age", time.Since(c.connectTime).Round(time.Second).String())
	}
}

// finish releases what a client holds once it is gone: its cancel key,
// its socket and its place in the server's client set.
func (c *clientConn) finish() {
	if c.key != ([8]byte{}) {
		c.srv.cancels.unregister(c.key)
	}
	if c.repl != nil {
		c.repl.close()
	}
	c.unregisterPark()
	c.conn.Close()
	c.srv.trackClient(c, false)
}

// reportError sends a client-facing error as FATAL when err carries one,
// and logs anything unexpected.
func (c *clientConn) reportError(err error) {
	if ke := c.killErr.Load(); ke != nil {
		c.sendFatal(ke)
		return
	}
	if pe := asPgError(err); pe != nil {
		c.sendFatal(pe)
		if c.cfg.LogPoolerErrors {
			c.srv.log.Warn("pooler error: "+pe.clientMessage(), "client", c.remote, "cause", pe.cause)
		}
		return
	}
	var se *serverError
	if errors.As(err, &se) {
		// A server login failure: the client sees PostgreSQL's own
		// error, as PgBouncer forwards it.
		c.sendFatal(&pgError{code: codeServerLoginFailed, sqlstate: se.code, msg: se.msg})
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.sendFatal(newError(codeClientLoginTimeout, ""))
		return
	}
	c.srv.log.Debug("client connection ended", "client", c.remote, "err", err)
}

func (c *clientConn) sendFatal(pe *pgError) {
	if c.srv.opts.Observer != nil {
		c.srv.opts.Observer.ClientError(pe.code.String(), pe.clientSQLState())
	}
	b := appendErrorResponseHint(nil, 'E', "FATAL", pe.clientSQLState(), pe.clientMessage(), pe.hint)
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.outMid {
		// The client is inside a message relayed from the server (a
		// DataRow cut short): it can only be told by the close.
		c.srv.log.Debug("client closed without an error message: it was sent part of a server message", "client", c.remote, "error", pe.clientMessage())
		return
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.conn.Write(b)
}

// setWriteDeadline sets the client socket's write deadline (the zero time
// clears it). It takes writeMu, so that it cannot undo sendFatal's own
// deadline in the middle of sendFatal's write.
func (c *clientConn) setWriteDeadline(t time.Time) {
	c.writeMu.Lock()
	_ = c.conn.SetWriteDeadline(t)
	c.writeMu.Unlock()
}

// kill closes the client with err as its FATAL message (admin KILL,
// immediate shutdown, database removed).
func (c *clientConn) kill(pe *pgError) {
	c.killErr.CompareAndSwap(nil, pe)
	c.killOnce.Do(func() { close(c.killed) })
	if c.stopReplication() {
		return // the relay tells the client at a message boundary
	}
	c.sendFatal(pe)
	c.writeMu.Lock()
	raw, ls := c.raw, c.ls // (set once for the event loop, under writeMu)
	c.writeMu.Unlock()
	raw.Close()
	c.interruptServerRead()
	// A parked client has no goroutine to notice: start one, which finds
	// the socket closed and ends the session.
	c.resumeIfParked()
	if ls != nil && c.parkState.Load() == parkLoop {
		// The loop serves a request of the client: if it is queued
		// for a server, it stops waiting.
		ls.loop.post(ls.killed)
	}
}

// interruptServerRead wakes a session goroutine that waits for its
// server's answer (driveInline), so that a killed session ends now rather
// than when a long query finishes; the server, in the middle of a request,
// is closed (pool.release sees interrupted). Under c.mu, so that the
// server is still the client's: once clearAttachment has run, it may be
// another client's.
func (c *clientConn) interruptServerRead() {
	c.mu.Lock()
	if att := c.mu.att; att != nil && !att.pumped && att.inFlight > 0 {
		att.sc.interrupted.Store(true)
		_ = att.sc.conn.SetReadDeadline(aLongTimeAgo)
	}
	c.mu.Unlock()
}

// suspendGate holds the session while the pooler is suspended (SUSPEND)
// and returns an error when the client is killed or the pooler shuts down
// meanwhile.
func (c *clientConn) suspendGate() error {
	if !c.srv.pools.pause.waitUnsuspended(c.killed, c.srv.shutdownCh) {
		if pe := c.killErr.Load(); pe != nil {
			return pe
		}
		return newError(codeShuttingDown, "")
	}
	return nil
}

// requestClose asks the session to end at its next transaction boundary.
func (c *clientConn) requestClose(mode ShutdownMode) {
	c.mu.Lock()
	c.mu.wantStop = true
	c.mu.closing = mode
	idle := c.mu.att == nil && c.mu.state != stateLogin
	waiting := c.mu.state == stateWaiting
	admin := c.admin != nil
	c.mu.Unlock()
	if idle || (waiting && mode == ShutdownWaitForServers) || admin {
		c.kill(newError(codeShuttingDown, ""))
	}
}

// login runs startup and sign-in, picks the pool and sends the welcome.
func (c *clientConn) login() error {
	s := c.srv
	cfg := c.cfg
	setLoginDeadline(c.conn, cfg.ClientLoginTimeout)
	st, err := s.readStartup(c)
	if err != nil {
		return err
	}
	c.st = st
	if st.database != "pgbouncer" && s.pools.pause.suspended.Load() {
		// SUSPEND: new clients wait (the console does not, or nobody
		// could RESUME).
		if err := c.suspendGate(); err != nil {
			return err
		}
	}
	setLoginDeadline(c.conn, cfg.ClientLoginTimeout)
	if cfg.LogConnections {
		s.log.Info("login attempt", "db", st.database, "user", st.user, "client", c.remote, "tls", c.tls, "replication", st.repl.param())
	}
	isAdminDB := st.database == "pgbouncer"
	if isAdminDB && st.repl != replNone {
		return newError(codeReplicationConsole, "")
	}
	if s.refusesLogin(c, st.database) {
		return newError(codeShuttingDown, "")
	}
	started := time.Now()
	if !c.isOwnerConsole(st) {
		// Before the client takes a max_client_conn slot: a held or
		// refused sign-in should not crowd out others.
		var deadline time.Time
		if cfg.ClientLoginTimeout > 0 {
			deadline = started.Add(cfg.ClientLoginTimeout)
		}
		c.throttle, err = s.throttle.begin(throttleAddressKey(c), st.user, deadline, c.killed, s.shutdownCh)
		if err != nil {
			c.audit(st, nil, err, started)
			var af *AuthFailure
			if errors.As(err, &af) {
				return af.Public
			}
			return err
		}
	}
	if !isAdminDB {
		if cfg.MaxClientConn > 0 && s.nclients.Add(1) > int64(cfg.MaxClientConn) {
			s.nclients.Add(-1)
			return newError(codeMaxClientConn, "")
		}
		if cfg.MaxClientConn <= 0 {
			s.nclients.Add(1)
		}
	}
	id, err := c.authenticate(cfg, st)
	var af *AuthFailure
	c.throttle.end(errors.As(err, &af) && af.Reason != ReasonThrottled)
	c.audit(st, id, err, started)
	if err != nil {
		if !isAdminDB {
			s.nclients.Add(-1)
		}
		if af != nil {
			return af.Public
		}
		return err
	}
	c.mu.Lock()
	c.identity = id
	c.mu.Unlock()
	if isAdminDB {
		if err := c.startAdmin(); err != nil {
			return err
		}
		// A drain ends when only console sessions are left.
		s.checkDone()
		return c.conn.SetDeadline(time.Time{})
	}
	p, err := s.pools.forClient(cfg, st, id)
	if err != nil {
		s.nclients.Add(-1)
		return err
	}
	c.mu.Lock()
	c.pool = p
	c.mu.Unlock()
	if st.repl != replNone {
		if err := c.replLogin(cfg, p); err != nil {
			s.nclients.Add(-1)
			return err
		}
		return c.conn.SetDeadline(time.Time{})
	}
	if err := c.welcome(); err != nil {
		s.nclients.Add(-1)
		return err
	}
	return c.conn.SetDeadline(time.Time{})
}

func (c *clientConn) authenticate(cfg *config.Config, st *startup) (*Identity, error) {
	ex := &AuthExchange{User: st.user, Database: st.database, TLS: c.tls, Unix: c.unix, Client: c.remote, c: c, rd: msgReader{r: c, max: maxAuthMessage}, gate: c.throttle,
		physical: st.repl == replPhysical}
	ctx, cancel := context.WithTimeout(context.Background(), max(cfg.ClientLoginTimeout, time.Second))
	defer cancel()
	if c.isOwnerConsole(st) {
		// The process owner on the Unix socket: admin without a
		// password (PgBouncer's own_user), as "pgbouncer" or under its
		// own login name (what psql sends by default).
		if cfg.LogConnections {
			c.srv.log.Info("pgbouncer access from unix socket", "user", st.user)
		}
		return &Identity{Method: "peer", processOwner: true}, nil
	}
	// With auth_type = hba the rules decide, tokens included (method
	// entra); otherwise the database's Entra auth mode does.
	if cfg.AuthType != config.AuthHBA {
		if mode := entraAuthMode(cfg, st.database); mode != config.AuthModePassword {
			return c.srv.entraAuth(ctx, cfg, ex, mode)
		}
	}
	for _, a := range c.srv.opts.Authenticators {
		if a.Claims(ex) {
			return a.Authenticate(ctx, ex)
		}
	}
	return c.srv.passwordAuth(ctx, cfg, ex)
}

// isOwnerConsole reports whether the client is the process owner asking
// for the console on the Unix socket, who signs in without a password.
func (c *clientConn) isOwnerConsole(st *startup) bool {
	return st.database == "pgbouncer" && (st.user == "pgbouncer" || st.user == ownUserName()) && c.unix && peerIsSelf(c.raw)
}

// ownUserName is the login name of the user pgwarden runs as ("" if
// unknown).
var ownUserName = sync.OnceValue(func() string {
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		return ""
	}
	return u.Username
})

// peerIsSelf reports whether a Unix-socket peer runs as our own user.
func peerIsSelf(conn net.Conn) bool {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *syscall.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	return cred != nil && int(cred.Uid) == os.Geteuid()
}

func (c *clientConn) audit(st *startup, id *Identity, err error, started time.Time) {
	ev := SignInEvent{Time: started, Client: c.remote, Database: st.database, User: st.user, TLS: c.tls, OK: err == nil, Latency: time.Since(started)}
	if err != nil {
		var af *AuthFailure
		if errors.As(err, &af) {
			ev.Reason = af.Reason
			if id == nil {
				id = af.Identity
			}
		} else {
			ev.Reason = "aborted"
		}
	}
	if id != nil {
		ev.Method = id.Method
		if t := id.Token; t != nil {
			ev.OID, ev.TID, ev.UTI, ev.TokenExp, ev.AppID = t.OID, t.TID, t.UTI, t.Exp, t.AppID
			ev.UPN = firstNonEmpty(t.UPN, t.PreferredUsername, t.UniqueName)
		}
		if p := id.Principal; p != nil {
			ev.PrincipalType = p.Type
		}
	}
	if ev.Method == "" {
		ev.Method = string(c.cfg.AuthType)
		if ev.Method == string(config.AuthSCRAM) {
			ev.Method = "scram" // as successes name it
		}
		if entraAuthMode(c.cfg, st.database) != config.AuthModePassword {
			ev.Method = "entra"
		}
	}
	if tk := c.throttle; tk != nil && tk.scope != "" {
		ev.Throttle, ev.ThrottleDelay = tk.scope, tk.delayed
		if ev.Reason == ReasonThrottled {
			ev.RetryAfter = tk.retryAfter
		}
	}
	c.srv.signins.add(ev)
	if obs := c.srv.opts.Observer; obs != nil {
		obs.SignIn(ev)
	}
	result := "ok"
	if !ev.OK {
		result = "refused"
	}
	attrs := []slog.Attr{
		slog.String("event", "signin"), slog.String("result", result), slog.String("client", ev.Client),
		slog.String("database", ev.Database), slog.String("role", ev.User), slog.String("method", ev.Method),
		slog.Bool("tls", ev.TLS), slog.Float64("latency_ms", float64(ev.Latency.Microseconds())/1000),
	}
	if ev.Reason != "" {
		attrs = append(attrs, slog.String("reason", ev.Reason))
	}
	if ev.Throttle != "" {
		attrs = append(attrs, slog.String("throttle", ev.Throttle))
		if ev.ThrottleDelay > 0 {
			attrs = append(attrs, slog.Float64("throttle_delay_ms", float64(ev.ThrottleDelay.Microseconds())/1000))
		}
		if ev.RetryAfter > 0 {
			attrs = append(attrs, slog.Int64("retry_after_s", int64(math.Ceil(ev.RetryAfter.Seconds()))))
		}
	}
	if ev.OID != "" {
		attrs = append(attrs, slog.String("principal_type", ev.PrincipalType), slog.String("oid", ev.OID), slog.String("tid", ev.TID),
			slog.String("upn", ev.UPN), slog.String("appid", ev.AppID), slog.String("uti", ev.UTI), slog.Time("token_exp", ev.TokenExp))
	}
	c.srv.audit.LogAttrs(context.Background(), slog.LevelInfo, "sign-in", attrs...)
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// welcome sends AuthenticationOk, the pool's ParameterStatus set overlaid
// with the client's own values, our BackendKeyData and ReadyForQuery.
func (c *clientConn) welcome() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ClientLoginTimeout)
	defer cancel()
	ws, err := c.pool.welcome(ctx)
	if err != nil {
		return err
	}
	vars := make(map[string]string, len(c.st.params)+4)
	maps.Copy(vars, c.st.params)
	b := appendAuthRequest(nil, 0, nil)
	seen := make([]string, 0, 16) // the pool's names (PostgreSQL reports about 14)
	for _, p := range ws {
		lk := strings.ToLower(p.name)
		v := p.value
		if cv, ok := vars[lk]; ok {
			v = cv
		} else if c.srv.isTracked(c.cfg, lk) {
			vars[lk] = v
		}
		seen = append(seen, lk)
		b = appendParameterStatus(b, p.name, v)
	}
	for k, v := range c.st.params {
		if !slices.Contains(seen, k) && isReported(k) {
			b = appendParameterStatus(b, canonicalName(k), v)
		}
	}
	c.vars = c.srv.paramSets.intern(vars)
	c.key = c.srv.cancels.register(c)
	b = append(b, 'K', 0, 0, 0, 12)
	b = append(b, c.key[:]...)
	b = appendReadyForQuery(b, 'I')
	c.mu.Lock()
	stop := c.mu.wantStop
	c.mu.state = stateIdle
	// The startup values live on in vars; an idle client keeps only
	// what SHOW CLIENTS shows.
	c.st.params = nil
	c.mu.Unlock()
	if stop {
		// Shutdown began while this client was signing in.
		return newError(codeShuttingDown, "")
	}
	return writeAll(c, b)
}

// isReported says whether PostgreSQL reports the parameter in
// ParameterStatus (GUC_REPORT), so that the client expects to see it.
func isReported(lower string) bool {
	switch lower {
	case "client_encoding", "datestyle", "timezone", "intervalstyle", "application_name", "standard_conforming_strings",
		"integer_datetimes", "server_version", "server_encoding", "is_superuser", "session_authorization",
		"default_transaction_read_only", "in_hot_standby", "scram_iterations":
		return true
	}
	return false
}

// newCancelKey returns 8 random bytes with the sign bit of the first one
// cleared (some clients treat the process id as signed).
func newCancelKey() [8]byte {
	var k [8]byte
	_, _ = rand.Read(k[:])
	k[0] &= 0x7f
	return k
}

func isAdminName(cfg *config.Config, user string) (admin, stats bool) {
	return slices.Contains(cfg.AdminUsers, user), slices.Contains(cfg.StatsUsers, user)
}

// tuneTCP applies keepalive and tcp_user_timeout to a TCP connection on
// either leg (Go has already set TCP_NODELAY on every accepted and dialed
// TCP connection).
func tuneTCP(tc *net.TCPConn, cfg *config.Config) {
	if cfg.TCPKeepalive {
		_ = tc.SetKeepAliveConfig(keepAliveConfig(cfg))
	} else {
		_ = tc.SetKeepAlive(false)
	}
	if cfg.TCPUserTimeout > 0 {
		if raw, err := tc.SyscallConn(); err == nil {
			ms := int(cfg.TCPUserTimeout / time.Millisecond)
			_ = raw.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x12 /* TCP_USER_TIMEOUT */, ms)
			})
		}
	}
}

// keepAliveConfig is tcp_keepalive's settings; a tcp_keepidle, keepintvl or
// keepcnt of 0 leaves the operating system's default, as in PgBouncer (Go
// would take 0 as its own defaults).
func keepAliveConfig(cfg *config.Config) net.KeepAliveConfig {
	kc := net.KeepAliveConfig{Enable: true, Idle: cfg.TCPKeepIdle, Interval: cfg.TCPKeepIntvl, Count: cfg.TCPKeepCnt}
	if kc.Idle == 0 {
		kc.Idle = -1
	}
	if kc.Interval == 0 {
		kc.Interval = -1
	}
	if kc.Count == 0 {
		kc.Count = -1
	}
	return kc
}

// endSession ends the client's session with pe: at once when it has no
// server, else at its next transaction boundary (a revoked principal, an
// expired token).
func (c *clientConn) endSession(pe *pgError) {
	c.mu.Lock()
	c.mu.wantStop = true
	c.mu.stopErr = pe
	idle := c.mu.att == nil && c.mu.state != stateLogin
	admin := c.admin != nil
	c.mu.Unlock()
	if idle || admin {
		c.kill(pe)
	}
}

// stopReason is the error to close the client with at a transaction
// boundary, or nil when it was not asked to stop.
func (c *clientConn) stopReason() *pgError {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.mu.wantStop {
		return nil
	}
	return c.stopReasonLocked()
}

// stopReasonLocked is the error a client that was asked to stop is closed
// with.
func (c *clientConn) stopReasonLocked() *pgError {
	if c.mu.stopErr != nil {
		return c.mu.stopErr
	}
	return newError(codeShuttingDown, "")
}

// Read and Write make the client socket an io.ReadWriter for the sign-in
// phase (through sockIO for a plain socket, like the relay).
func (c *clientConn) Read(b []byte) (int, error) { return c.read(b) }

func (c *clientConn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.write(b)
}

// read reads from the client: the session goroutine's reads.
func (c *clientConn) read(b []byte) (int, error) {
	s := c.sio
	if s == nil && !c.tls {
		s = newSockIO(c.conn)
		c.writeMu.Lock()
		c.sio = s
		c.writeMu.Unlock()
	}
	if s != nil {
		return s.read(b)
	}
	return c.conn.Read(b)
}

// writeServer writes all of b to sc, the server this client holds: the
// session goroutine's writes (the writer's state is the client's, see
// sockIO).
func (c *clientConn) writeServer(sc *serverConn, b []byte) (int, error) {
	if c.sio != nil && sc.sio != nil {
		return c.sio.forward(sc.sio, b)
	}
	return sc.conn.Write(b)
}

// write writes b to the client; the caller holds writeMu.
func (c *clientConn) write(b []byte) (int, error) {
	if c.sio != nil {
		return c.sio.write(b)
	}
	return c.conn.Write(b)
}
