// Package pooler is pgwarden's data plane: listeners, the startup and sign-in
// phases, per-(database, role) pools of server connections, the relay that
// moves bytes between clients and servers, cancel routing, and the admin
// console. It consumes a validated *config.Config and, for sign-in, the
// ClientAuthenticator interface; it knows nothing about Entra ID or
// Prometheus.
package pooler

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// Version is pgwarden's version, reported by SHOW VERSION and --version.
var Version = "0.1.0"

// Options are the parts of a Server that do not come from the config file.
type Options struct {
	// Logger receives the pooler's log lines; nil means slog.Default().
	Logger *slog.Logger
	// Authenticators, when set, may claim a sign-in before the built-in
	// password methods (the Entra ID method plugs in here).
	Authenticators []ClientAuthenticator
	// Observer receives sign-in events and error codes; may be nil.
	Observer Observer
	// AuditLogger receives one structured line per sign-in attempt
	// (success or failure, with its reason); nil means JSON on stderr.
	AuditLogger *slog.Logger
	// Resolver looks up the host names of [databases] and [peers]
	// entries, at each server connection and cancel request; nil means
	// net.DefaultResolver.
	Resolver *net.Resolver
}

// Observer is told about events the metrics and audit sinks care about.
// Its methods are called synchronously, possibly from many goroutines at
// once, and must not block. Embed [NopObserver] to implement only some.
type Observer interface {
	// Observer's authn part receives the Entra ID validator's events:
	// key set fetches, keys loaded, token cache lookups, Graph lookups.
	authn.Observer
	SignIn(ev SignInEvent)
	// ClientError is called for every ErrorResponse the pooler itself
	// sends a client: code is the pooler's name for the error (see the
	// README), sqlstate the SQLSTATE the client got.
	ClientError(code, sqlstate string)
	// Pool is called once for each pool, when it is created. The
	// returned PoolObserver (nil for none) receives the pool's data-path
	// figures.
	Pool(database, user string) PoolObserver
	// BackendTokenRefresh reports one refresh of pgwarden's own Entra
	// token (server_auth with a token provider, and Graph's token).
	BackendTokenRefresh(ev authn.RefreshEvent)
	// SessionsRevoked reports n client sessions ended because their Entra
	// principal was removed (entra disconnect_on_revoke).
	SessionsRevoked(n int)
}

// PoolObserver receives one pool's data-path figures where the pooler
// accounts the SHOW STATS totals. It is called on the hot path: it must
// neither block nor allocate.
type PoolObserver interface {
	// ClientWait: a client waited d for a server and was assigned one.
	ClientWait(d time.Duration)
	// Query: a query took d, from the client's request to ReadyForQuery.
	Query(d time.Duration)
	// Transaction: a transaction ended after d (idle in transaction
	// included, as SHOW STATS xact_time).
	Transaction(d time.Duration)
	// ServerLoginFailed: a server connection could not be opened; reason
	// is one of the ServerFail* values.
	ServerLoginFailed(reason string)
}

// Reasons a server connection could not be opened, given to
// [PoolObserver.ServerLoginFailed].
const (
	// ServerFailConnect: the TCP or Unix socket connection failed.
	ServerFailConnect = "connect"
	// ServerFailTimeout: server_connect_timeout passed.
	ServerFailTimeout = "timeout"
	// ServerFailTLS: server TLS could not be set up.
	ServerFailTLS = "tls"
	// ServerFailAuth: the server refused the credentials (SQLSTATE class 28).
	ServerFailAuth = "auth"
	// ServerFailServerError: the server sent another error during login
	// (no such database, too many connections, starting up, ...).
	ServerFailServerError = "server_error"
	// ServerFailLogin: the login exchange failed on pgwarden's side (no
	// usable password, unsupported method, connection lost).
	ServerFailLogin = "login"
	// ServerFailBackendToken: no Entra token to log in with.
	ServerFailBackendToken = "backend_token"
	// ServerFailConnectQuery: connect_query broke the connection.
	ServerFailConnectQuery = "connect_query"
)

// NopObserver implements [Observer] with methods that do nothing.
type NopObserver struct{ authn.NopObserver }

// SignIn does nothing.
func (NopObserver) SignIn(SignInEvent) {}

// ClientError does nothing.
func (NopObserver) ClientError(string, string) {}

// Pool returns nil.
func (NopObserver) Pool(string, string) PoolObserver { return nil }

// BackendTokenRefresh does nothing.
func (NopObserver) BackendTokenRefresh(authn.RefreshEvent) {}

// SessionsRevoked does nothing.
func (NopObserver) SessionsRevoked(int) {}

// SignInEvent describes one sign-in attempt.
type SignInEvent struct {
	Time     time.Time
	Client   string
	Database string
	User     string // the role asked for
	Method   string // entra, scram, md5, plain, trust, cert, peer, any
	TLS      bool
	OK       bool
	Reason   string // empty on success; see the README for the codes
	Latency  time.Duration
	// Entra sign-ins only (empty otherwise): the principal type matched
	// (user, group, service), the token's oid, tid, upn (or appid for
	// app tokens), uti and exp. The token itself is never recorded.
	PrincipalType string
	OID           string
	TID           string
	UPN           string
	AppID         string
	UTI           string
	TokenExp      time.Time
	// Throttle is "address" or "role" when the sign-in throttle held the
	// attempt (ThrottleDelay is for how long) or refused it (Reason
	// "throttled", RetryAfter is when its budget comes back); empty
	// otherwise.
	Throttle      string
	ThrottleDelay time.Duration
	RetryAfter    time.Duration
}

// Server is one pgwarden process's data plane. Create it with New, open its
// listeners with Listen, run it with Serve; Reload swaps the configuration
// in place; Shutdown drains. All methods are safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	cfg atomic.Pointer[config.Config]
	// scramPlain holds the SCRAM secrets derived from cleartext
	// passwords, one derivation per user and password.
	scramPlain *authn.SCRAMPlainCache
	clientTLS  atomic.Pointer[tls.Config] // nil when client TLS is off
	serverTLS  atomic.Pointer[tls.Config] // nil when server TLS is off

	pools   *poolSet
	cancels *cancelRegistry
	// entra is the Entra ID sign-in method, nil when [entra] is absent.
	entra atomic.Pointer[entraSignIn]
	// audit receives one JSON line per sign-in attempt.
	audit *slog.Logger
	// tokens are the providers of pgwarden's own Entra tokens.
	tokens tokenProviders
	// principalsRefresh runs entra principal_query.
	principalsRefresh principalRefresher
	// workers run the clients' sign-ins and sessions (workers.go).
	workers *workers
	// paramSets interns the clients' tracked parameter values (params.go).
	paramSets paramSets
	// signins are the last sign-in attempts (SHOW SIGNINS).
	signins signinRing
	// throttle limits failed sign-ins per address and role (throttle.go).
	throttle *signinThrottle

	nclients atomic.Int64 // signed-in and signing-in clients, admin excluded
	// parker parks idle clients (park.go); set by Serve before the first
	// accept, nil where the platform cannot.
	parker atomic.Pointer[parker]
	// loop drives plain-socket clients of transaction and statement pools
	// and their servers (eventloop_linux.go, loopclient.go); set by Serve
	// before the first client, nil where the platform has none (or
	// event_loop is off). A server connection opened before that (a
	// principal refresh at start) simply stays with Go's poller.
	loop atomic.Pointer[eventLoop]

	mu struct {
		sync.Mutex
		listeners []*listener
		clients   map[*clientConn]struct{}
		shutdown  bool
		// mode is the shutdown mode in force (it only escalates).
		mode ShutdownMode
		// cutting: clients are being closed at their next transaction
		// boundary, and new sign-ins are refused.
		cutting bool
		// tcpStopping and tcpClosed: the TCP listeners are being, or
		// have been, drained and closed (the Unix socket stays open for
		// cancels and the console until the end).
		tcpStopping, tcpClosed bool
	}
	// shutdownCh is closed when Shutdown starts.
	shutdownCh chan struct{}
	shutOnce   sync.Once
	// stopMu serialises stopAccepting (a drain, then an escalation).
	stopMu sync.Mutex
	// doneCh is closed when the server has stopped: no clients left, or
	// forced.
	doneCh   chan struct{}
	doneOnce sync.Once
	wg       sync.WaitGroup
	// reloadHook is called by the console's RELOAD; set by the binary.
	reloadHook atomic.Pointer[func() error]
	startTime  time.Time

	// setHook applies the console's SET; set by the binary (admin.go).
	setHook atomic.Pointer[func(*config.Config) ([]string, error)]
}

// New builds a Server from a validated configuration.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = NopObserver{}
	}
	s := &Server{
		opts:       opts,
		log:        opts.Logger,
		scramPlain: authn.NewSCRAMPlainCache(4096),
		shutdownCh: make(chan struct{}),
		doneCh:     make(chan struct{}),
		startTime:  time.Now(),
		workers:    &workers{},
	}
	s.mu.clients = map[*clientConn]struct{}{}
	s.audit = opts.AuditLogger
	if s.audit == nil {
		s.audit = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	s.pools = newPoolSet(s)
	s.cancels = newCancelRegistry(s)
	s.throttle = newSigninThrottle(throttleMaxKeys, time.Now)
	if err := s.applyConfig(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Config returns the configuration in force.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// SetReloadHook sets the function the console's RELOAD calls (the binary
// re-reads the config file and calls Reload).
func (s *Server) SetReloadHook(f func() error) { s.reloadHook.Store(&f) }

// applyConfig installs cfg: TLS material, then the config pointer, then the
// pools' limits.
func (s *Server) applyConfig(cfg *config.Config) error {
	if err := CheckHBA(cfg); err != nil {
		return err
	}
	ctls, err := buildClientTLS(cfg)
	if err != nil {
		return err
	}
	stls, err := buildServerTLS(cfg)
	if err != nil {
		return err
	}
	if err := s.applyEntra(cfg); err != nil {
		return err
	}
	s.clientTLS.Store(ctls)
	s.serverTLS.Store(stls)
	s.cfg.Store(cfg)
	s.throttle.configure(cfg.SignInThrottle)
	return nil
}

// Reload installs a new configuration without dropping clients: pool sizes,
// timeouts, databases, users and TLS files change in place. Keys that need a
// restart (listen_addr, listen_port, unix_socket_dir, …) keep their old
// values; the returned warnings name them.
func (s *Server) Reload(cfg *config.Config) ([]string, error) {
	old := s.cfg.Load()
	var warnings []string
	if !equalStrings(old.ListenAddrs, cfg.ListenAddrs) || old.ListenPort != cfg.ListenPort || old.UnixSocketDir != cfg.UnixSocketDir {
		warnings = append(warnings, "listen_addr, listen_port and unix_socket_dir need a restart; keeping the old values")
		c := *cfg
		c.ListenAddrs, c.ListenPort, c.UnixSocketDir = old.ListenAddrs, old.ListenPort, old.UnixSocketDir
		cfg = &c
	}
	if err := s.applyConfig(cfg); err != nil {
		return warnings, err
	}
	s.pools.reconfigure(cfg)
	s.maybeRefreshPrincipals(time.Now(), true)
	if old.ServerTLS != cfg.ServerTLS {
		// As PgBouncer ≥ 1.24: changed server TLS settings recycle the
		// server connections (idle ones now, busy ones at release).
		for _, p := range s.pools.list() {
			p.reconnect()
		}
	}
	s.log.Info("configuration reloaded", "file", cfg.Path)
	return warnings, nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s *Server) clientTLSConfig() *tls.Config { return s.clientTLS.Load() }

// Listen opens the TCP listeners of listen_addr and the Unix socket in
// unix_socket_dir, or adopts the sockets a service manager passed (systemd
// socket activation: LISTEN_FDS, LISTEN_PID), in which case listen_addr and
// unix_socket_dir are not used. It returns an error naming the address that
// failed.
func (s *Server) Listen() error {
	cfg := s.cfg.Load()
	inherited, err := activationListeners()
	if err != nil {
		return err
	}
	if len(inherited) > 0 {
		if len(cfg.ListenAddrs) > 0 || cfg.UnixSocketDir != "" {
			s.log.Warn("sockets passed by the service manager: listen_addr and unix_socket_dir are not used", "sockets", len(inherited))
		}
		s.mu.Lock()
		s.mu.listeners = append(s.mu.listeners, inherited...)
		s.mu.Unlock()
		return nil
	}
	var lns []*listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	// SO_REUSEPORT on TCP only, as PgBouncer: each process of a group
	// has its own unix_socket_dir, which is how peers reach each other.
	// KeepAlive -1: Go's default keepalive at accept would be set again
	// by tuneTCP from the configuration (two rounds of setsockopt per
	// connection).
	tcp := net.ListenConfig{KeepAlive: -1}
	if cfg.SOReuseport {
		tcp.Control = reusePortControl
	}
	for _, a := range cfg.ListenAddrs {
		hosts := []string{a}
		switch {
		case a == "*":
			hosts = []string{""}
		case net.ParseIP(a) == nil:
			// A host name: listen on every address it has, as
			// PgBouncer does (localhost is 127.0.0.1 and ::1).
			ips, err := net.DefaultResolver.LookupHost(context.Background(), a)
			if err != nil {
				closeAll()
				return fmt.Errorf("listen_addr %s: %w", a, err)
			}
			hosts = ips
		}
		for _, host := range hosts {
			addr := net.JoinHostPort(host, strconv.Itoa(cfg.ListenPort))
			ln, err := tcp.Listen(context.Background(), "tcp", addr)
			if err != nil {
				if len(hosts) > 1 && isAddrNotAvail(err) {
					continue // e.g. ::1 on a host without IPv6
				}
				closeAll()
				if cfg.SOReuseport && errors.Is(err, syscall.EADDRINUSE) {
					return fmt.Errorf("listen on %s: %w (with so_reuseport = 1, every process on this port must set it, and run as the same user)", addr, err)
				}
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			lns = append(lns, &listener{Listener: ln})
		}
	}
	if cfg.UnixSocketDir != "" {
		path := filepath.Join(cfg.UnixSocketDir, ".s.PGSQL."+strconv.Itoa(cfg.ListenPort))
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			// A stale socket from a previous run; refuse if something
			// still answers on it.
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				closeAll()
				hint := ""
				if cfg.SOReuseport {
					hint = " (processes sharing a port with so_reuseport need a unix_socket_dir each)"
				}
				return fmt.Errorf("listen on %s: another process is listening there%s", path, hint)
			}
			os.Remove(path)
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(context.Background(), "unix", path)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen on %s: %w", path, err)
		}
		mode := cfg.UnixSocketMode
		if mode == 0 {
			mode = 0o777
		}
		_ = os.Chmod(path, os.FileMode(mode))
		lns = append(lns, &listener{Listener: ln, unix: true})
	}
	if len(lns) == 0 {
		return errors.New("nothing to listen on: listen_addr is empty and unix_socket_dir is empty")
	}
	s.mu.Lock()
	s.mu.listeners = append(s.mu.listeners, lns...)
	s.mu.Unlock()
	return nil
}

func reusePortControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// Addrs returns the addresses being listened on.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.mu.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// Serve accepts clients on every listener until Shutdown, then waits for the
// drain to finish. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	lns := append([]*listener(nil), s.mu.listeners...)
	s.mu.Unlock()
	if len(lns) == 0 {
		return errors.New("Serve called before Listen")
	}
	s.parker.Store(newParker(s))
	if s.parker.Load() != nil && s.cfg.Load().EventLoopOn(runtime.GOMAXPROCS(0)) {
		if l, err := newEventLoop(); err == nil {
			s.loop.Store(l)
		} else if err != errNoWatcher {
			s.log.Warn("no event loop: every client gets a goroutine", "err", err)
		}
	}
	s.pools.startJanitor()
	s.maybeRefreshPrincipals(time.Now(), true)
	loops := make(chan struct{}, len(lns))
	for _, ln := range lns {
		go func(ln *listener) {
			s.acceptLoop(ln)
			loops <- struct{}{}
		}(ln)
	}
	stop := context.AfterFunc(ctx, func() { s.Shutdown(ShutdownImmediate) })
	defer stop()
	<-s.doneCh
	// What is left: the Unix socket (kept for cancels and the console
	// during a drain) and console sessions.
	s.mu.Lock()
	rest := s.mu.listeners
	s.mu.listeners = nil
	s.mu.Unlock()
	for _, l := range rest {
		l.Close()
	}
	for range lns {
		<-loops
	}
	for _, c := range s.clientList() {
		c.kill(newError(codeShuttingDown, ""))
	}
	s.wg.Wait()
	s.workers.stop()
	s.parker.Load().close()
	s.pools.closeAll()
	if l := s.loop.Load(); l != nil {
		l.close()
	}
	if es := s.entra.Swap(nil); es != nil {
		es.close()
	}
	return nil
}

func (s *Server) acceptLoop(ln *listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ln.draining.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of file descriptors and similar: back off briefly
			// rather than spin.
			s.log.Warn("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.serveConn(conn, ln.unix)
	}
}

// serveConn runs a freshly accepted client on its own goroutine. The client
// is counted before serveConn returns, so that a drain cannot end between
// an accept and the client's start.
func (s *Server) serveConn(conn net.Conn, unix bool) {
	c := s.newClientConn(conn, unix)
	s.trackClient(c, true)
	s.wg.Add(1)
	s.workers.run(func() {
		defer s.wg.Done()
		c.serve()
	})
}

func (s *Server) trackClient(c *clientConn, add bool) {
	s.mu.Lock()
	if add {
		s.mu.clients[c] = struct{}{}
	} else {
		delete(s.mu.clients, c)
	}
	shutdown := s.mu.shutdown
	s.mu.Unlock()
	if !add && shutdown {
		s.checkDone()
	}
}

func (s *Server) clientList() []*clientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*clientConn, 0, len(s.mu.clients))
	for c := range s.mu.clients {
		out = append(out, c)
	}
	return out
}

// checkDone ends a shutdown once the TCP listeners are closed and no client
// but console sessions is left; those are closed.
func (s *Server) checkDone() {
	s.mu.Lock()
	ready := s.mu.shutdown && s.mu.tcpClosed
	s.mu.Unlock()
	if !ready {
		return
	}
	clients := s.clientList()
	for _, c := range clients {
		c.mu.Lock()
		admin := c.admin != nil
		c.mu.Unlock()
		if !admin {
			return
		}
	}
	for _, c := range clients {
		c.kill(newError(codeShuttingDown, ""))
	}
	s.finish()
}

func (s *Server) finish() { s.doneOnce.Do(func() { close(s.doneCh) }) }

// ShutdownMode says how Shutdown treats connected clients.
type ShutdownMode int

const (
	// ShutdownWaitForClients stops accepting (after shutdown_accept_grace)
	// and exits when every client has disconnected; after shutdown_timeout,
	// transaction-pooled clients are closed at their next transaction
	// boundary (SIGTERM, SHUTDOWN WAIT_FOR_CLIENTS).
	ShutdownWaitForClients ShutdownMode = iota
	// ShutdownWaitForServers stops accepting, drops clients waiting for a
	// server and exits once every server connection is released (SIGINT,
	// SHUTDOWN WAIT_FOR_SERVERS).
	ShutdownWaitForServers
	// ShutdownImmediate closes everything now (console SHUTDOWN, a second
	// signal).
	ShutdownImmediate
)

// Shutdown starts a shutdown in the given mode and returns at once; Serve
// returns when it completes. /readyz turns false at once. A later call may
// escalate the mode (WAIT_FOR_CLIENTS, then WAIT_FOR_SERVERS, then
// immediate), never soften it.
//
// The TCP listeners are handed over with care, because Linux resets the
// connections still queued on a listening socket when it closes: after
// shutdown_accept_grace, each listener's queue is emptied with non-blocking
// accepts and the socket leaves its SO_REUSEPORT group in the same step, so
// that the kernel sends new connections to the other processes; the
// connections taken from the queue are served like any other.
func (s *Server) Shutdown(mode ShutdownMode) {
	first := false
	s.shutOnce.Do(func() { close(s.shutdownCh); first = true })
	s.mu.Lock()
	s.mu.shutdown = true
	if !first && mode <= s.mu.mode {
		s.mu.Unlock()
		return // nothing new
	}
	s.mu.mode = mode
	s.mu.Unlock()
	if first {
		// Clients queued for a server on the event loop look again
		// and see the shutdown (queued goroutines watch shutdownCh).
		s.pools.kickQueues()
	}
	cfg := s.cfg.Load()
	switch mode {
	case ShutdownImmediate:
		s.stopAccepting(false)
		s.cut(mode)
	case ShutdownWaitForServers:
		s.stopAccepting(true)
		s.cut(mode)
	default:
		if g := cfg.ShutdownAcceptGrace; g > 0 {
			time.AfterFunc(g, func() { s.stopAccepting(true) })
		} else {
			s.stopAccepting(true)
		}
		if t := cfg.ShutdownTimeout; t > 0 {
			time.AfterFunc(t, func() { s.cut(ShutdownWaitForClients) })
		} else {
			s.cut(mode)
		}
	}
	s.checkDone()
}

// cut closes the clients: all of them now (immediate), or each at its next
// transaction boundary (idle ones now); new sign-ins are refused from here.
func (s *Server) cut(mode ShutdownMode) {
	s.mu.Lock()
	if mode < s.mu.mode {
		mode = s.mu.mode // escalated meanwhile
	}
	s.mu.cutting = true
	s.mu.Unlock()
	for _, c := range s.clientList() {
		if mode == ShutdownImmediate {
			c.kill(newError(codeShuttingDown, ""))
		} else {
			c.requestClose(mode)
		}
	}
}

// stopAccepting closes the TCP listeners, draining their queues first when
// drain is set (see Shutdown); Unix sockets stay open unless drain is false.
func (s *Server) stopAccepting(drain bool) {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	s.mu.Lock()
	var stop, keep []*listener
	for _, l := range s.mu.listeners {
		if l.unix && drain {
			keep = append(keep, l)
		} else {
			stop = append(stop, l)
		}
	}
	s.mu.listeners = keep
	s.mu.tcpStopping = true
	s.mu.Unlock()
	for _, l := range stop {
		if drain {
			s.drainListener(l)
		} else {
			l.Close()
		}
	}
	s.mu.Lock()
	s.mu.tcpClosed = true
	s.mu.Unlock()
	s.checkDone()
}

// refusesLogin says whether a sign-in to database must be refused because
// of a shutdown: once clients are being closed, in WAIT_FOR_SERVERS, or on
// the Unix socket once the TCP listeners are closed. The console is always
// let in.
func (s *Server) refusesLogin(c *clientConn, database string) bool {
	if database == "pgbouncer" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.shutdown && (s.mu.cutting || s.mu.mode != ShutdownWaitForClients || c.unix && s.mu.tcpStopping)
}

// Stopping is closed when a shutdown starts (a signal, or SHUTDOWN on the
// console).
func (s *Server) Stopping() <-chan struct{} { return s.shutdownCh }

// Done is closed when the server has finished shutting down.
func (s *Server) Done() <-chan struct{} { return s.doneCh }

// shuttingDown reports whether Shutdown has started.
func (s *Server) shuttingDown() bool {
	select {
	case <-s.shutdownCh:
		return true
	default:
		return false
	}
}

func isAddrNotAvail(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// CheckHBA reads auth_hba_file when auth_type = hba and returns every
// problem in it (nil otherwise), so that a start, a RELOAD and
// check-config refuse a broken file up front.
func CheckHBA(cfg *config.Config) error {
	if cfg.AuthType != config.AuthHBA {
		return nil
	}
	if _, err := LoadHBA(cfg.AuthHBAFile); err != nil {
		return fmt.Errorf("auth_hba_file: %w", err)
	}
	return nil
}
