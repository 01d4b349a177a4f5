package pooler_test

// Fault-injection tests (TestFault*): pgwarden in-process, real PostgreSQL
// behind it, and faults put in between (internal/faultproxy carries
// pgwarden's server connections: [databases] points at the proxy) or made
// by the clients themselves (raw sockets, or pgx connections whose socket
// the test then takes over).
//
// Each scenario records, and checks where there is a right answer:
//
//   - what the clients saw: the SQLSTATE and message of the error (an
//     empty SQLSTATE means the connection ended without an ErrorResponse,
//     the message then being the client library's);
//   - the recovery time: from the moment the fault is removed to the first
//     successful query on a new connection (for the restarts: from the
//     moment PostgreSQL accepts connections again to the first transaction
//     of a client under load); -1 where nothing needs recovering;
//   - the leak check: once the test's clients are gone and the console's
//     RECONNECT has closed the idle servers, the process's goroutines
//     (runtime.NumGoroutine) and file descriptors (/proc/self/fd) are back
//     at or below what they were at the same point before the fault, and
//     PostgreSQL shows no backend of the scenario's role (pg_stat_activity)
//     and SHOW SERVERS none for its pool. The check polls until these hold
//     or 15 s pass; settle_ms is how long it took.
//
// Results are written as one line per scenario:
//
//	FAULT-RESULT {"fault":"…","setup":"…","clients":[{"case":"…","sqlstate":"…","message":"…","elapsed_ms":…}],"recovery_ms":…,"leak":{…},"notes":"…"}
//
// in the test log (go test -v), and appended as JSON lines to the file
// named by PGWARDEN_RELIABILITY_OUT when that is set, for a report
// generator to collect.
//
// Ephemeral port numbers and the system's name server address in the
// messages are replaced by <port> and <nameserver>, so that runs compare.
//
// Timeouts are set low (fractions of a second to 2 s) so that the whole set
// runs in well under a minute; the figures scale with them. With
// PGWARDEN_FAULTS_LONG=1 the crowd scenarios are larger (5,000 silent
// clients instead of 2,000, 20,000 random-key cancels instead of 3,000).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgwarden/pgwarden/internal/faultproxy"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// faultResult is one scenario's FAULT-RESULT line.
type faultResult struct {
	Fault      string      `json:"fault"`
	Setup      string      `json:"setup"`
	Clients    []clientObs `json:"clients"`
	RecoveryMS float64     `json:"recovery_ms"`
	Leak       leakResult  `json:"leak"`
	Notes      string      `json:"notes,omitempty"`
}

// clientObs is what one client saw.
type clientObs struct {
	Case      string  `json:"case"`
	SQLState  string  `json:"sqlstate"`
	Message   string  `json:"message"`
	ElapsedMS float64 `json:"elapsed_ms"`
}

// leakResult is the leak check's before and after.
type leakResult struct {
	GoroutinesBase  int     `json:"goroutines_base"`
	GoroutinesEnd   int     `json:"goroutines_end"`
	FDsBase         int     `json:"fds_base"`
	FDsEnd          int     `json:"fds_end"`
	ServerConnsBase int     `json:"server_conns_base"`
	ServerConnsEnd  int     `json:"server_conns_end"`
	ShowServersEnd  int     `json:"show_servers_end"`
	ProxyLinksEnd   int     `json:"proxy_links_end"`
	SettleMS        float64 `json:"settle_ms"`
	OK              bool    `json:"ok"`
}

// faultEnv is one scenario: a PostgreSQL cluster, a role of its own, an
// optional fault proxy and a pgwarden whose [databases] entry reaches the
// cluster through the proxy.
type faultEnv struct {
	t       *testing.T
	cluster *pgtest.Cluster
	role    string
	pw      string
	dbname  string
	proxy   *faultproxy.Proxy // nil when pgwarden connects directly
	in      *instance
	res     faultResult
	base    struct{ goroutines, fds int }
	emitted bool
}

const faultPassword = "fault-pw"

// faultSetup describes a scenario's environment.
type faultSetup struct {
	cluster *pgtest.Cluster // nil: the package's shared cluster
	dbname  string          // "" means app
	noProxy bool
	// host replaces 127.0.0.1 in the [databases] entry (the port is the
	// proxy's, or the cluster's with noProxy).
	host  string
	extra string // [pgbouncer] lines
	opts  []func(*pooler.Options)
	// before runs after the proxy starts and before pgwarden does.
	before func(e *faultEnv)
}

// newFaultEnv creates the role (named after the test), starts the proxy
// and pgwarden, and registers the cleanup.
func newFaultEnv(t *testing.T, fault string, s faultSetup) *faultEnv {
	t.Helper()
	raiseNoFile(t)
	e := &faultEnv{t: t, cluster: s.cluster, pw: faultPassword, dbname: s.dbname}
	if e.cluster == nil {
		e.cluster = pg
	}
	if e.dbname == "" {
		e.dbname = "app"
	}
	e.role = "fault_" + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(strings.TrimPrefix(t.Name(), "TestFault")))
	e.res.Fault = fault
	e.res.RecoveryMS = -1
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.cluster.CreateRole(ctx, e.role, e.pw, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	port := e.cluster.Port
	if !s.noProxy {
		p, err := faultproxy.New(fmt.Sprintf("127.0.0.1:%d", e.cluster.Port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.proxy = p
		port = p.Port()
	}
	if s.before != nil {
		s.before(e)
	}
	host := s.host
	if host == "" {
		host = "127.0.0.1"
	}
	e.res.Setup = describeSetup(s.extra)
	e.in = startFaultPooler(t, fmt.Sprintf("app = host=%s port=%d dbname=%s", host, port, e.dbname), e.role, e.pw, s.extra, s.opts...)
	t.Cleanup(func() {
		if !e.emitted {
			e.emit()
		}
	})
	return e
}

// describeSetup turns [pgbouncer] lines into one line for the results,
// with file paths left out.
func describeSetup(extra string) string {
	var parts []string
	for _, l := range strings.Split(strings.TrimSpace(extra), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(strings.TrimSpace(v), "/") {
			l = strings.TrimSpace(k) + " = <file>"
		}
		parts = append(parts, strings.TrimSpace(l))
	}
	return strings.Join(parts, "; ")
}

// startFaultPooler is startPooler with a [databases] section of the
// caller's and a userlist of role and admin.
func startFaultPooler(t *testing.T, databases, role, pw, extra string, opts ...func(*pooler.Options)) *instance {
	t.Helper()
	dir := t.TempDir()
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	userlist := fmt.Sprintf("%q %q\n\"admin\" \"admin-pw\"\n", role, pw)
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist), 0o600); err != nil {
		t.Fatal(err)
	}
	ini := fmt.Sprintf(`[databases]
%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_file = %s
auth_type = scram-sha-256
admin_users = admin
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
%s
`, databases, port, dir, filepath.Join(dir, "userlist.txt"), extra)
	iniPath := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(iniPath, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(iniPath)
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	logs := &syncBuffer{}
	o := pooler.Options{
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AuditLogger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	for _, f := range opts {
		f(&o)
	}
	srv, err := pooler.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(context.Background())
	}()
	t.Cleanup(func() {
		srv.Shutdown(pooler.ShutdownImmediate)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("pgwarden did not stop within 10s")
		}
		if t.Failed() {
			t.Logf("pgwarden log:\n%s", logs.String())
		}
	})
	return &instance{srv: srv, port: port, dir: dir, iniPath: iniPath, logs: logs}
}

// dsn is a pgx DSN for the scenario's role through pgwarden.
func (e *faultEnv) dsn(extra ...string) string {
	return e.in.dsn(e.role, e.pw, "app", append([]string{"default_query_exec_mode=exec"}, extra...)...)
}

// connect opens a pgx connection through pgwarden or returns the error.
func (e *faultEnv) connect(timeout time.Duration) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return pgx.Connect(ctx, e.dsn())
}

// mustConnect opens a pgx connection; the test closes it (or the cleanup
// does).
func (e *faultEnv) mustConnect() *pgx.Conn {
	e.t.Helper()
	c, err := e.connect(10 * time.Second)
	if err != nil {
		e.t.Fatalf("connect: %v", err)
	}
	e.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// observe records what a client saw (err nil: success).
func (e *faultEnv) observe(what string, err error, elapsed time.Duration) clientObs {
	o := clientObs{Case: what, ElapsedMS: ms(elapsed)}
	if err != nil {
		o.SQLState, o.Message = errState(err)
		o.Message = portRE.ReplaceAllString(o.Message, "${1}:<port>")
		o.Message = nameserverRE.ReplaceAllString(o.Message, "on <nameserver>")
	} else {
		o.Message = "ok"
	}
	e.res.Clients = append(e.res.Clients, o)
	e.t.Logf("%s: sqlstate=%q message=%q after %v", what, o.SQLState, o.Message, elapsed.Round(time.Millisecond))
	return o
}

// errState is the SQLSTATE and message of a client error: a PostgreSQL
// ErrorResponse's, or "" and the error text when the connection ended
// without one.
func errState(err error) (string, string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.Message
	}
	var we *wireError
	if errors.As(err, &we) {
		return we.code, we.msg
	}
	return "", err.Error()
}

// Ephemeral ports and the system's name server are left out of the
// recorded messages.
var (
	portRE       = regexp.MustCompile(`(127\.0\.0\.1|localhost|[a-z.]+\.test):[0-9]+`)
	nameserverRE = regexp.MustCompile(`on [0-9a-f.:\[\]]+:53`)
)

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// query runs sql on a fresh connection (connect, query, close) within
// timeout.
func (e *faultEnv) query(sql string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := pgx.Connect(ctx, e.dsn())
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// recoverAfter polls with fresh connections until a query succeeds,
// starting when the fault was removed (healed), and records the time.
// Distinct errors seen on the way are recorded as observations.
func (e *faultEnv) recoverAfter(healed time.Time, limit time.Duration) time.Duration {
	e.t.Helper()
	seen := map[string]bool{}
	for {
		err := e.query("SELECT 1", 5*time.Second)
		if err == nil {
			d := time.Since(healed)
			e.res.RecoveryMS = ms(d)
			e.t.Logf("recovered %v after the fault was removed", d.Round(time.Millisecond))
			return d
		}
		code, msg := errState(err)
		if k := code + msg; !seen[k] {
			seen[k] = true
			e.observe("while recovering", err, time.Since(healed))
		}
		if time.Since(healed) > limit {
			e.t.Fatalf("no successful query %v after the fault was removed: %v", limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// longFaults says whether the larger variants run (PGWARDEN_FAULTS_LONG=1).
func longFaults() bool { return os.Getenv("PGWARDEN_FAULTS_LONG") == "1" }

// ---- the leak check ----

func fdCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// console runs one console command on a connection of its own.
func (e *faultEnv) console(sql string) []map[string]string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.in.dsn("admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol"))
	if err != nil {
		e.t.Fatalf("console: %v", err)
	}
	defer c.Close(context.Background())
	_, _, rows := consoleResult(e.t, c, sql)
	return rows
}

// showServers counts SHOW SERVERS rows of the scenario's role.
func (e *faultEnv) showServers() int {
	n := 0
	for _, r := range e.console("SHOW SERVERS") {
		if r["user"] == e.role {
			n++
		}
	}
	return n
}

// backends counts the role's client backends in PostgreSQL.
func (e *faultEnv) backends() int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.cluster.Connect(ctx, e.cluster.SuperUser, e.cluster.SuperPassword, "postgres")
	if err != nil {
		e.t.Fatalf("count backends: %v", err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'", e.role).Scan(&n); err != nil {
		e.t.Fatalf("count backends: %v", err)
	}
	return n
}

// settled closes the idle servers (RECONNECT) and polls until PostgreSQL,
// SHOW SERVERS and the proxy show none of the scenario's connections and
// the goroutine and descriptor counts satisfy ok. It returns the last
// counts and whether ok held.
func (e *faultEnv) settled(limit time.Duration, ok func(g, fds int) bool) (g, fds, backends, servers, links int, held bool) {
	e.console("RECONNECT")
	deadline := time.Now().Add(limit)
	for {
		backends, servers = e.backends(), e.showServers()
		if e.proxy != nil {
			links = e.proxy.Links()
		}
		// Idle workers wait a few seconds for the next client
		// (workers.go): not a leak.
		g, fds = runtime.NumGoroutine()-e.in.srv.IdleWorkers(), fdCount()
		if backends == 0 && servers == 0 && links == 0 && ok(g, fds) {
			return g, fds, backends, servers, links, true
		}
		if time.Now().After(deadline) {
			return g, fds, backends, servers, links, false
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// baseline warms the pool up (one query), then records the goroutine and
// descriptor counts at rest: no client, no server connection.
func (e *faultEnv) baseline() {
	e.t.Helper()
	if err := e.query("SELECT 1", 10*time.Second); err != nil {
		e.t.Fatalf("warm-up query: %v", err)
	}
	// At rest, and stable: the same counts twice in a row.
	prevG, prevF := -1, -1
	g, fds, _, _, _, ok := e.settled(15*time.Second, func(g, fds int) bool {
		stable := g == prevG && fds == prevF
		prevG, prevF = g, fds
		return stable
	})
	if !ok {
		e.t.Fatalf("no stable baseline: goroutines %d, fds %d", g, fds)
	}
	e.base.goroutines, e.base.fds = g, fds
	e.res.Leak.GoroutinesBase, e.res.Leak.FDsBase, e.res.Leak.ServerConnsBase = g, fds, 0
}

// checkLeaks runs the end-of-scenario leak check; the test's clients must
// be closed already.
func (e *faultEnv) checkLeaks() {
	e.t.Helper()
	start := time.Now()
	g, fds, backends, servers, links, ok := e.settled(15*time.Second, func(g, fds int) bool {
		return g <= e.base.goroutines && fds <= e.base.fds
	})
	l := &e.res.Leak
	l.GoroutinesEnd, l.FDsEnd, l.ServerConnsEnd, l.ShowServersEnd, l.ProxyLinksEnd = g, fds, backends, servers, links
	l.SettleMS, l.OK = ms(time.Since(start)), ok
	if !ok {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		e.t.Errorf("leak check: goroutines %d (base %d), fds %d (base %d), backends %d, SHOW SERVERS %d, proxy links %d\n%s",
			g, e.base.goroutines, fds, e.base.fds, backends, servers, links, pgwardenStacks(string(buf)))
	}
}

// pgwardenStacks keeps the goroutine stacks that run pgwarden or faultproxy
// code.
func pgwardenStacks(all string) string {
	var out []string
	for _, s := range strings.Split(all, "\n\n") {
		if strings.Contains(s, "pgwarden/pooler.") || strings.Contains(s, "faultproxy.") {
			out = append(out, s)
		}
	}
	return strings.Join(out, "\n\n")
}

// emit writes the FAULT-RESULT line.
func (e *faultEnv) emit() {
	e.emitted = true
	b, err := json.Marshal(e.res)
	if err != nil {
		e.t.Error(err)
		return
	}
	e.t.Logf("FAULT-RESULT %s", b)
	if path := os.Getenv("PGWARDEN_RELIABILITY_OUT"); path != "" {
		resultsMu.Lock()
		defer resultsMu.Unlock()
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			e.t.Errorf("PGWARDEN_RELIABILITY_OUT: %v", err)
			return
		}
		defer f.Close()
		if _, err := f.Write(append(b, '\n')); err != nil {
			e.t.Errorf("PGWARDEN_RELIABILITY_OUT: %v", err)
		}
	}
}

var resultsMu sync.Mutex

// noFileLimit is the soft descriptor limit.
func noFileLimit(t *testing.T) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	return int(min(rl.Cur, 1<<20))
}

// raiseNoFile lifts the soft descriptor limit to the hard one (the
// scenarios with thousands of sockets need several thousand).
func raiseNoFile(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Logf("raise RLIMIT_NOFILE: %v", err)
		}
	}
}

// ---- raw wire helpers ----

// wireError is an ErrorResponse read off a raw socket.
type wireError struct{ severity, code, msg string }

func (e *wireError) Error() string { return e.severity + " " + e.code + ": " + e.msg }

// readUntilError reads backend messages until an ErrorResponse (returned
// as *wireError), the end of the connection (its error), or the deadline.
func readUntilError(c net.Conn, deadline time.Time) error {
	_ = c.SetReadDeadline(deadline)
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
		if n < 0 || n > 1<<30 {
			return fmt.Errorf("bad message length %d", n)
		}
		if hdr[0] != 'E' {
			if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
				return err
			}
			continue
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c, body); err != nil {
			return err
		}
		we := &wireError{}
		for _, f := range strings.Split(string(body), "\x00") {
			if f == "" {
				continue
			}
			switch f[0] {
			case 'S':
				we.severity = f[1:]
			case 'C':
				we.code = f[1:]
			case 'M':
				we.msg = f[1:]
			}
		}
		return we
	}
}

// takeOver returns the socket of a signed-in pgx connection, for a test
// that goes on with raw bytes (pgx must not be used on it afterwards).
func takeOver(c *pgx.Conn) net.Conn { return c.PgConn().Conn() }

// rst closes c with a TCP RST.
func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}
