package pooler

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// serverConn is one logged-in connection to PostgreSQL. It belongs to its
// pool; whoever holds its puddle resource (a session, the janitor or the
// welcome fetch) owns it exclusively and must either Release or Destroy it.
type serverConn struct {
	conn net.Conn
	// sio is conn's raw reader when conn is a plain socket
	// (rawio_linux.go): the hot path's reads go through it, and its
	// holder's writes name it (clientConn.writeServer).
	sio *sockIO
	// probe looks at the socket under conn (under TLS too) while the
	// connection is idle in its pool (closedWhileIdle); nil where the
	// platform has no sockIO.
	probe   *sockIO
	pool    *pool
	target  string // network address, for cancels
	network string
	tlsOn   bool
	// key is the server's own BackendKeyData (pid and secret).
	key [8]byte
	pid uint32
	// params are the server session's parameter values as far as the
	// pooler knows them (reported by the server or SET by the pooler),
	// keyed by lower-case name.
	params map[string]string
	// welcome is the ParameterStatus set seen at login, in order.
	welcome []param
	// paramsFP is the fingerprint of the tracked parameters of the client
	// this server was last brought in line with; "" when unknown.
	paramsFP string

	created  time.Time
	lifetime time.Duration // 0 = unlimited; includes jitter
	// gen is the pool's generation when the connection was made; an older
	// one than the pool's is closed at release (RECONNECT, KILL, resize).
	gen uint64
	// broken is set when the connection must not be reused.
	broken bool
	// interrupted is set by kill when it woke the session goroutine
	// reading this server's answer (with a read deadline in the past):
	// the connection is not reused.
	interrupted atomic.Bool
	// stmts are the statements the pooler prepared on this server
	// (prepared.go). The pointer is set at creation and never changes.
	stmts *serverStmts
	// cancelling counts cancel requests in flight against this server; it
	// is not returned to the pool before they finish.
	cancelling sync.WaitGroup
	// cancels is the same count, for the event loop, which must not
	// wait for them (loopclient.go).
	cancels atomic.Int32

	// lc is conn when the server lives on the event loop; own makes the
	// server its own readiness handler, which passes the readiness on to
	// loopClient, the client the loop serves a request of on it (loop
	// thread only).
	lc         *loopConn
	own        loopOwner
	loopClient *clientConn
}

type param struct{ name, value string }

// serverLogin holds what is needed to log in to the server as one role.
type serverLogin struct {
	user     string
	database string
	// secret is the stored secret (plain, md5 or SCRAM) used for the
	// server's challenge; clientKey/serverKey allow SCRAM passthrough.
	secret    authn.Secret
	hasSecret bool
	clientKey []byte
	serverKey []byte
	startup   []param
}

// dialServer connects and logs in a server connection for the pool. The
// returned connection is idle (ReadyForQuery seen). On error nothing is
// left open.
func (p *pool) dialServer(ctx context.Context) (*serverConn, error) {
	return p.dialWith(ctx, nil)
}

// dialWith is dialServer; repl, when not nil, makes it a replication
// client's dedicated connection: repl's parameters go into the
// StartupMessage over the database's own (replication=…, the client's
// tracked parameters and options), and connect_query is not run.
func (p *pool) dialWith(ctx context.Context, repl []param) (*serverConn, error) {
	cfg := p.srv.cfg.Load()
	db := p.database()
	login, err := p.loginInfo(ctx)
	if err != nil {
		return nil, &loginFailure{ServerFailBackendToken, err}
	}
	if repl != nil {
		login.startup = mergeParams(login.startup, repl)
	}
	network, addr := serverAddress(cfg, db, p.nextHost())
	// KeepAlive -1: tuneTCP sets it from the configuration.
	d := net.Dialer{KeepAlive: -1, Resolver: p.srv.opts.Resolver}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &loginFailure{ServerFailConnect, fmt.Errorf("connect to %s: %w", addr, err)}
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tuneTCP(tc, cfg)
	}
	sc := &serverConn{conn: conn, pool: p, target: addr, network: network, params: map[string]string{}, created: time.Now(), stmts: newServerStmts()}
	raw := conn
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if err := sc.startTLS(cfg, db, network); err != nil {
		conn.Close()
		return nil, &loginFailure{ServerFailTLS, err}
	}
	if err := sc.login(login); err != nil {
		sc.conn.Close()
		return nil, &loginFailure{ServerFailLogin, err}
	}
	_ = sc.conn.SetDeadline(time.Time{})
	if lt := cfg.EffectiveServerLifetime(db); lt > 0 {
		// Up to 10% jitter so that a pool's connections do not all
		// expire together.
		sc.lifetime = lt - time.Duration(rand.Int64N(int64(lt)/10+1))
	}
	if db.ConnectQuery != "" && repl == nil {
		if err := sc.simpleExec(db.ConnectQuery); err != nil {
			p.srv.log.Warn("connect_query failed", "db", db.Name, "err", err)
			if errors.Is(err, errServerBroken) {
				sc.conn.Close()
				return nil, &loginFailure{ServerFailConnectQuery, err}
			}
		}
	}
	if l := p.srv.loop.Load(); l != nil && !sc.tlsOn && repl == nil && p.poolMode() != config.PoolSession {
		// Transaction and statement pools' servers live on the event
		// loop (loopclient.go).
		lc, err := l.adopt(sc.conn)
		if err == nil {
			sc.conn, sc.lc = lc, lc
			sc.own.h = sc
			return sc, nil
		}
		if err != errLoopTableFull {
			return nil, &loginFailure{ServerFailConnect, errors.New("server connection lost")}
		}
	}
	if !sc.tlsOn {
		sc.sio = newSockIO(sc.conn)
		sc.probe = sc.sio
	} else {
		sc.probe = newSockIO(raw)
	}
	return sc, nil
}

// closedWhileIdle reports whether the server closed the connection, reset
// it or sent something unasked while it sat idle in the pool: after
// pg_terminate_backend, a restart, a network reset, or a server-side
// timeout such as idle_session_timeout (PostgreSQL sends its FATAL, then
// closes). Such a connection is closed rather than handed to a client,
// who would get the dead connection's error for a query it never ran
// there (PgBouncer watches its idle servers for the same reason: "idle
// server got dirty").
func (sc *serverConn) closedWhileIdle() bool {
	if sc.lc != nil {
		return sc.lc.readable()
	}
	return sc.probe != nil && sc.probe.readable()
}

// loginFailure tags an error of dialServer with the step that failed, for
// [PoolObserver.ServerLoginFailed]; splitLoginFailure removes the tag.
type loginFailure struct {
	reason string
	err    error
}

func (e *loginFailure) Error() string { return e.err.Error() }
func (e *loginFailure) Unwrap() error { return e.err }

// splitLoginFailure returns why dialServer failed (a ServerFail* reason,
// refined by the error: a timeout, the server's SQLSTATE) and the error
// itself without the tag.
func splitLoginFailure(err error) (string, error) {
	reason := ServerFailLogin
	if lf, ok := err.(*loginFailure); ok {
		reason, err = lf.reason, lf.err
	}
	var se *serverError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		if strings.HasPrefix(se.code, "28") {
			reason = ServerFailAuth
		} else {
			reason = ServerFailServerError
		}
	case reason == ServerFailBackendToken:
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		reason = ServerFailTimeout
	}
	return reason, err
}

// serverAddress picks the network and address for a database entry.
func serverAddress(cfg *config.Config, db *config.Database, host string) (string, string) {
	port := db.Port
	if port == 0 {
		port = 5432
	}
	if host == "" {
		host = cfg.UnixSocketDir
		if host == "" {
			host = "/tmp"
		}
	}
	if strings.HasPrefix(host, "/") || strings.HasPrefix(host, "@") {
		return "unix", filepath.Join(host, ".s.PGSQL."+strconv.Itoa(port))
	}
	return "tcp", net.JoinHostPort(host, strconv.Itoa(port))
}

// startTLS sends an SSLRequest on a fresh TCP connection when
// server_tls_sslmode is above disable, as PgBouncer does (allow behaves like
// prefer), and runs the handshake on 'S'. 'N' is accepted below require.
// Only the one reply byte is read before the handshake, so bytes a
// man-in-the-middle slips in behind it go to the TLS layer and fail it.
func (sc *serverConn) startTLS(cfg *config.Config, db *config.Database, network string) error {
	conn, on, err := negotiateServerTLS(sc.pool.srv, sc.conn, cfg.ServerTLS.Mode, network, sc.target)
	if err != nil {
		return err
	}
	sc.conn, sc.tlsOn = conn, on
	return nil
}

// negotiateServerTLS sends an SSLRequest on a fresh server connection when
// server_tls_sslmode asks for one and returns the connection to use
// (TLS-wrapped when the server agreed). Cancel connections go through it
// too, so that a server's cancel key never crosses the network in clear
// text where its sessions are encrypted.
func negotiateServerTLS(s *Server, conn net.Conn, mode config.TLSMode, network, target string) (net.Conn, bool, error) {
	if network == "unix" || mode == config.TLSDisable || mode == "" {
		return conn, false, nil
	}
	base := s.serverTLS.Load()
	if base == nil {
		// A RELOAD has just switched server TLS off; the newer
		// setting wins.
		return conn, false, nil
	}
	if _, err := conn.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
		return nil, false, fmt.Errorf("send SSLRequest: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return nil, false, fmt.Errorf("read SSL response: %w", err)
	}
	switch b[0] {
	case 'S':
		// The host as written in [databases] (not the address it
		// resolved to) is what verify-full checks and SNI names.
		host, _, _ := net.SplitHostPort(target)
		tc := tls.Client(conn, serverTLSFor(base, mode, host))
		if err := tc.Handshake(); err != nil {
			return nil, false, newError(codeServerLoginFailed, "TLS handshake failed: "+tlsErrorText(err))
		}
		return tc, true, nil
	case 'N':
		if mode == config.TLSRequire || mode == config.TLSVerifyCA || mode == config.TLSVerifyFull {
			return nil, false, newError(codeServerLoginFailed, "server refused SSL")
		}
		return conn, false, nil
	}
	return nil, false, newError(codeServerLoginFailed, "bad SSL response from server")
}

// tlsErrorText shortens a handshake error for a client-facing message.
func tlsErrorText(err error) string {
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		err = ve.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return strings.TrimPrefix(err.Error(), "tls: ")
}

// errServerBroken marks errors after which a server connection is unusable.
var errServerBroken = errors.New("server connection broken")

// serverError is an ErrorResponse from PostgreSQL during login or a
// pooler-issued query.
type serverError struct {
	severity, code, msg string
}

func (e *serverError) Error() string { return e.severity + ": " + e.msg + " (SQLSTATE " + e.code + ")" }

func (sc *serverConn) login(l serverLogin) error {
	b := make([]byte, 4, 256)
	b = appendInt32(b, protocolV3)
	b = appendCString(b, "user")
	b = appendCString(b, l.user)
	b = appendCString(b, "database")
	b = appendCString(b, l.database)
	for _, p := range l.startup {
		b = appendCString(b, p.name)
		b = appendCString(b, p.value)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	if _, err := sc.conn.Write(b); err != nil {
		return fmt.Errorf("send startup: %w", err)
	}
	rd := msgReader{r: sc.conn, max: maxAuthMessage}
	var scram *authn.SCRAMClient
	for {
		t, body, err := rd.readMessage()
		if err != nil {
			return fmt.Errorf("server login: %w", err)
		}
		switch t {
		case 'R':
			if len(body) < 4 {
				return newError(codeServerLoginFailed, "bad authentication message")
			}
			kind := binary.BigEndian.Uint32(body)
			var reply []byte
			switch kind {
			case 0: // AuthenticationOk
				continue
			case 3: // cleartext
				pw, ok := l.plainPassword()
				if !ok {
					return newError(codeServerLoginFailed, "wrong password type")
				}
				reply = passwordMessage(pw)
			case 5: // md5
				if len(body) < 8 {
					return newError(codeServerLoginFailed, "bad md5 request")
				}
				var salt [4]byte
				copy(salt[:], body[4:8])
				var secret string
				switch {
				case !l.hasSecret:
					return newError(codeServerLoginFailed, "no password for user")
				case l.secret.Kind == authn.SecretPlain:
					secret = authn.MD5Secret(l.user, l.secret.Plain)
				case l.secret.Kind == authn.SecretMD5:
					secret = l.secret.MD5
				default:
					return newError(codeServerLoginFailed, "wrong password type")
				}
				reply = passwordMessage(authn.MD5Response(secret, salt))
			case 10: // SASL
				mechs := strings.Split(strings.TrimRight(string(body[4:]), "\x00"), "\x00")
				if !containsString(mechs, "SCRAM-SHA-256") {
					return newError(codeServerLoginFailed, "none of the server's SASL authentication mechanisms are supported")
				}
				switch {
				case l.hasSecret && l.secret.Kind == authn.SecretPlain:
					scram = authn.NewSCRAMClient(l.secret.Plain)
				case len(l.clientKey) > 0 && len(l.serverKey) > 0:
					scram = authn.NewSCRAMClientFromKeys(l.clientKey, l.serverKey)
				default:
					return newError(codeServerLoginFailed, "wrong password type")
				}
				first := scram.ClientFirst()
				m, p := appendMsg(nil, 'p')
				m = appendCString(m, "SCRAM-SHA-256")
				m = appendInt32(m, int32(len(first)))
				m = append(m, first...)
				reply = finishMsg(m, p)
			case 11: // SASL continue
				if scram == nil {
					return newError(codeServerLoginFailed, "unexpected SASL message")
				}
				final, err := scram.ClientFinal(body[4:])
				if err != nil {
					return wrapError(codeServerLoginFailed, "SCRAM exchange failed", err)
				}
				m, p := appendMsg(nil, 'p')
				m = append(m, final...)
				reply = finishMsg(m, p)
			case 12: // SASL final
				if scram == nil {
					return newError(codeServerLoginFailed, "unexpected SASL message")
				}
				if err := scram.VerifyServerFinal(body[4:]); err != nil {
					return newError(codeServerLoginFailed, "invalid server signature")
				}
				continue
			default:
				return newError(codeServerLoginFailed, "unknown/unsupported auth method")
			}
			if _, err := sc.conn.Write(reply); err != nil {
				return fmt.Errorf("server login: %w", err)
			}
		case 'S':
			name, value, ok := parseParameterStatus(body)
			if ok {
				sc.welcome = append(sc.welcome, param{name, value})
				sc.params[strings.ToLower(name)] = value
			}
		case 'K':
			if len(body) >= 8 {
				copy(sc.key[:], body[:8])
				sc.pid = binary.BigEndian.Uint32(body[:4])
			}
		case 'E':
			sev, code, msg := parseErrorFields(body)
			return &serverError{severity: sev, code: code, msg: msg}
		case 'N':
		case 'v': // NegotiateProtocolVersion: we asked for 3.0, ignore
		case 'Z':
			return nil
		default:
			return newError(codeServerLoginFailed, fmt.Sprintf("unexpected message %q during login", t))
		}
	}
}

func (l serverLogin) plainPassword() (string, bool) {
	if l.hasSecret && l.secret.Kind == authn.SecretPlain {
		return l.secret.Plain, true
	}
	return "", false
}

func passwordMessage(pw string) []byte {
	m, p := appendMsg(nil, 'p')
	m = appendCString(m, pw)
	return finishMsg(m, p)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// simpleExec runs sql with the simple protocol and waits for ReadyForQuery,
// collecting ParameterStatus updates. A server ErrorResponse is returned as
// *serverError (the connection is still usable); I/O and protocol errors
// wrap errServerBroken.
func (sc *serverConn) simpleExec(sql string) error {
	if _, err := sc.conn.Write(appendQuery(nil, sql)); err != nil {
		return fmt.Errorf("%w: %v", errServerBroken, err)
	}
	return sc.drainToReady()
}

// drainToReady reads and discards server messages up to ReadyForQuery,
// tracking ParameterStatus, and returns the first ErrorResponse if any.
func (sc *serverConn) drainToReady() error {
	// Whatever ran may have changed session parameters.
	sc.paramsFP = ""
	rd := msgReader{r: sc.conn, max: maxDecodedMessage}
	var first error
	for {
		t, body, err := rd.readMessage()
		if err != nil {
			return fmt.Errorf("%w: %v", errServerBroken, err)
		}
		switch t {
		case 'S':
			if name, value, ok := parseParameterStatus(body); ok {
				sc.params[strings.ToLower(name)] = value
			}
		case 'C':
			if deallocatesAll(body) {
				sc.stmts.forget()
			}
		case 'E':
			if first == nil {
				sev, code, msg := parseErrorFields(body)
				first = &serverError{severity: sev, code: code, msg: msg}
			}
		case 'Z':
			if len(body) != 1 {
				return fmt.Errorf("%w: ReadyForQuery of %d bytes", errServerBroken, len(body))
			}
			if body[0] != 'I' {
				return fmt.Errorf("%w: server left in transaction state %q", errServerBroken, body[0])
			}
			return first
		case 'G', 'H', 'W':
			return fmt.Errorf("%w: unexpected COPY", errServerBroken)
		}
	}
}

// read reads from the server (the hot path's reads).
func (sc *serverConn) read(b []byte) (int, error) {
	if sc.sio != nil {
		return sc.sio.read(b)
	}
	return sc.conn.Read(b)
}
