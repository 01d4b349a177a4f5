package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgw is one pgwarden process started from a config file in its own
// directory (which is also its unix_socket_dir).
type pgw struct {
	*proc
	format   string // "ini" or "yaml"
	dir      string
	path     string // the config file
	port     int
	poolSize int
}

// writeConfig (re)writes the config file in p.format with p's settings.
func (p *pgw) writeConfig(t *testing.T) {
	t.Helper()
	var s string
	switch p.format {
	case "ini":
		s = fmt.Sprintf(`; written by pgwarden's cmd tests
[databases]
app = host=127.0.0.1 port=%d dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
default_pool_size = %d
admin_users = %s
server_tls_sslmode = disable
`, pg.Port, p.port, p.dir, filepath.Join(p.dir, "userlist.txt"), p.poolSize, adminUser)
	case "yaml":
		s = fmt.Sprintf(`# written by pgwarden's cmd tests
listen:
  addresses: ["127.0.0.1"]
  port: %d
  unix_socket_dir: %q
auth:
  type: scram-sha-256
  file: %q
admin_users: [%s]
pool:
  mode: transaction
  default_pool_size: %d
tls:
  server:
    sslmode: disable
databases:
  app:
    host: 127.0.0.1
    port: %d
    dbname: app
`, p.port, p.dir, filepath.Join(p.dir, "userlist.txt"), adminUser, p.poolSize, pg.Port)
	default:
		t.Fatalf("unknown format %q", p.format)
	}
	writeFile(t, p.path, s)
}

// startPooler writes a config in format and runs pgwarden with it, waiting
// until it answers queries.
func startPooler(t *testing.T, format string) *pgw {
	t.Helper()
	dir := t.TempDir()
	name := "pgbouncer.ini"
	if format == "yaml" {
		name = "pooler.yaml"
	}
	p := &pgw{format: format, dir: dir, path: filepath.Join(dir, name), port: freePort(t), poolSize: 20}
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist)
	p.writeConfig(t)
	p.proc = startPgwarden(t, dir, p.path)
	waitReady(t, p.proc, p.port)
	return p
}

func (p *pgw) socketPath() string {
	return filepath.Join(p.dir, ".s.PGSQL."+strconv.Itoa(p.port))
}

func (p *pgw) tcpDSN() string { return dsn(p.port, appUser, alicePassword, "app") }

func (p *pgw) unixDSN() string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=app connect_timeout=5", p.dir, p.port, appUser, alicePassword)
}

func (p *pgw) adminDSN() string { return dsn(p.port, adminUser, adminPassword, "pgbouncer") }

// waitRefused waits until new clients are turned away (after a shutdown
// signal), both on TCP and on the Unix socket.
func (p *pgw) waitRefused(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !refused(p.port) {
		if time.Now().After(deadline) {
			t.Fatal("new connections are still accepted 10s after the shutdown signal")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := psql(t, p.unixDSN(), "SELECT 1"); err == nil {
		t.Errorf("a new client on the Unix socket was accepted during shutdown: %s", out)
	}
}

// waitAllDisconnected waits until pgwarden has logged the end of every
// client it logged in (log_connections and log_disconnections are on).
func (p *pgw) waitAllDisconnected(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := p.output()
		in := strings.Count(out, `msg="login attempt"`)
		gone := strings.Count(out, `msg="closing because: client disconnect"`) + strings.Count(out, `msg="sign-in refused"`)
		if in == gone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgwarden logged %d logins but only %d disconnects", in, gone)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// showConfig returns the value of key in the console's SHOW CONFIG.
func (p *pgw) showConfig(t *testing.T, key string) string {
	t.Helper()
	out, err := psql(t, p.adminDSN(), "SHOW CONFIG")
	if err != nil {
		t.Fatalf("SHOW CONFIG: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) >= 2 && f[0] == key {
			return f[1]
		}
	}
	t.Fatalf("SHOW CONFIG has no %s:\n%s", key, out)
	return ""
}

// createTable makes a fresh table in app, directly on PostgreSQL.
func createTable(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := connect(ctx, dsn(pg.Port, appUser, alicePassword, "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+name+"; CREATE TABLE "+name+" (id int)"); err != nil {
		t.Fatal(err)
	}
}

// countRows counts the rows of table in app, directly on PostgreSQL.
func countRows(t *testing.T, table string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := connect(ctx, dsn(pg.Port, appUser, alicePassword, "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestServe(t *testing.T) {
	for _, format := range []string{"ini", "yaml"} {
		t.Run(format, func(t *testing.T) {
			t.Run("psql-reload-stop", func(t *testing.T) { testPsqlReload(t, format) })
			t.Run("sigterm", func(t *testing.T) { testSIGTERM(t, format) })
			t.Run("sigint", func(t *testing.T) { testSIGINT(t, format) })
			t.Run("second-signal", func(t *testing.T) { testSecondSignal(t, format) })
			t.Run("sigquit", func(t *testing.T) { testSIGQUIT(t, format) })
			t.Run("console-shutdown", func(t *testing.T) { testConsoleShutdown(t, format) })
		})
	}
}

// testPsqlReload: psql over TCP and the Unix socket; SIGHUP reloads a
// changed default_pool_size; SIGTERM with no clients exits 0 and removes the
// socket.
func testPsqlReload(t *testing.T, format string) {
	p := startPooler(t, format)
	if out, err := psql(t, p.tcpDSN(), "SELECT 1"); err != nil || out != "1" {
		t.Errorf("psql over TCP: %v, output %q", err, out)
	}
	if _, err := os.Stat(p.socketPath()); err != nil {
		t.Errorf("Unix socket: %v", err)
	}
	if out, err := psql(t, p.unixDSN(), "SELECT 1"); err != nil || out != "1" {
		t.Errorf("psql over the Unix socket: %v, output %q", err, out)
	}
	if got := p.showConfig(t, "default_pool_size"); got != "20" {
		t.Errorf("default_pool_size before reload = %q, want 20", got)
	}
	if out, err := psql(t, p.adminDSN(), "SHOW VERSION"); err != nil || !strings.Contains(out, "pgwarden") {
		t.Errorf("SHOW VERSION: %v, output %q", err, out)
	}

	// A client connected across the reload keeps working.
	held := mustConnect(t, p.port)
	p.poolSize = 7
	p.writeConfig(t)
	p.signal(syscall.SIGHUP)
	p.waitOutput("configuration reloaded", 10*time.Second)
	if got := p.showConfig(t, "default_pool_size"); got != "7" {
		t.Errorf("default_pool_size after reload = %q, want 7", got)
	}
	if out, err := psql(t, p.tcpDSN(), "SELECT 1"); err != nil || out != "1" {
		t.Errorf("psql after reload: %v, output %q", err, out)
	}
	if err := execSQL(held, "SELECT 1"); err != nil {
		t.Errorf("client connected before the reload: %v", err)
	}

	// A broken file on reload is refused; the old config stays.
	writeFile(t, p.path, "this is not a config\n")
	p.signal(syscall.SIGHUP)
	p.waitOutput("RELOAD failed", 10*time.Second)
	if out, err := psql(t, p.tcpDSN(), "SELECT 1"); err != nil || out != "1" {
		t.Errorf("psql after a failed reload: %v, output %q", err, out)
	}
	if got := p.showConfig(t, "default_pool_size"); got != "7" {
		t.Errorf("default_pool_size after a failed reload = %q, want 7", got)
	}

	// The console's RELOAD re-reads the file too.
	p.poolSize = 9
	p.writeConfig(t)
	if out, err := psql(t, p.adminDSN(), "RELOAD"); err != nil || out != "RELOAD" {
		t.Errorf("console RELOAD: %v, output %q", err, out)
	}
	if got := p.showConfig(t, "default_pool_size"); got != "9" {
		t.Errorf("default_pool_size after console RELOAD = %q, want 9", got)
	}

	held.Close(context.Background())
	// Let pgwarden see every client go (admin console clients connected at
	// SIGTERM hit a known data race: see TestConsoleDuringShutdown).
	p.waitAllDisconnected(t)
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if _, err := os.Stat(p.socketPath()); !os.IsNotExist(err) {
		t.Errorf("Unix socket still there after exit: %v", err)
	}
}

// testSIGTERM: new clients are refused, an open transaction can still
// COMMIT, then that client is closed and the process exits 0.
func testSIGTERM(t *testing.T, format string) {
	table := "sigterm_" + format
	createTable(t, table)
	p := startPooler(t, format)
	conn := mustConnect(t, p.port)
	idle := mustConnect(t, p.port)
	if err := execSQL(conn, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if err := execSQL(conn, "INSERT INTO "+table+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGTERM)
	p.waitOutput("got SIGTERM", 10*time.Second)
	p.waitRefused(t)
	// An idle transaction-pooled client is closed at once.
	if err := execSQL(idle, "SELECT 1"); err == nil {
		t.Error("an idle client could still run a query after SIGTERM")
	}
	if p.exited() {
		t.Fatalf("pgwarden exited while a client was in a transaction: %v", p.err)
	}
	if err := execSQL(conn, "SELECT 2"); err != nil {
		t.Errorf("query inside the open transaction after SIGTERM: %v", err)
	}
	if err := execSQL(conn, "COMMIT"); err != nil {
		t.Fatalf("COMMIT after SIGTERM: %v", err)
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if n := countRows(t, table); n != 1 {
		t.Errorf("%d rows committed, want 1", n)
	}
	if err := execSQL(conn, "SELECT 1"); err == nil {
		t.Error("the client could still run a query after pgwarden exited")
	}
	if _, err := os.Stat(p.socketPath()); !os.IsNotExist(err) {
		t.Errorf("Unix socket still there after exit: %v", err)
	}
}

// testSIGINT: idle clients are closed, the process runs on while a server
// connection is in use, and exits 0 once it is released.
func testSIGINT(t *testing.T, format string) {
	table := "sigint_" + format
	createTable(t, table)
	p := startPooler(t, format)
	busy := mustConnect(t, p.port)
	idle := mustConnect(t, p.port)
	if err := execSQL(busy, "BEGIN; INSERT INTO "+table+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGINT)
	p.waitOutput("got SIGINT", 10*time.Second)
	p.waitRefused(t)
	if err := execSQL(idle, "SELECT 1"); err == nil {
		t.Error("an idle client could still run a query after SIGINT")
	}
	if p.exited() {
		t.Fatalf("pgwarden exited while a server connection was in use: %v", p.err)
	}
	if err := execSQL(busy, "COMMIT"); err != nil {
		t.Fatalf("COMMIT after SIGINT: %v", err)
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0", code)
	}
	if n := countRows(t, table); n != 1 {
		t.Errorf("%d rows committed, want 1", n)
	}
}

// testSecondSignal: SIGTERM then SIGTERM exits at once, even with a client
// inside a transaction (which is rolled back).
func testSecondSignal(t *testing.T, format string) {
	table := "second_" + format
	createTable(t, table)
	p := startPooler(t, format)
	conn := mustConnect(t, p.port)
	if err := execSQL(conn, "BEGIN; INSERT INTO "+table+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGTERM)
	p.waitOutput("got SIGTERM", 10*time.Second)
	p.waitRefused(t)
	if p.exited() {
		t.Fatalf("pgwarden exited after one SIGTERM with a client in a transaction: %v", p.err)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Errorf("exit code %d after a second SIGTERM, want 0", code)
	}
	if !strings.Contains(p.output(), "second signal, exiting now") {
		t.Error("no log line about the second signal")
	}
	if err := execSQL(conn, "COMMIT"); err == nil {
		t.Error("COMMIT succeeded after pgwarden exited")
	}
	// PostgreSQL rolls the transaction back when its connection closes.
	deadline := time.Now().Add(10 * time.Second)
	for countRows(t, table) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the open transaction was committed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testSIGQUIT: SIGQUIT exits at once.
func testSIGQUIT(t *testing.T, format string) {
	p := startPooler(t, format)
	conn := mustConnect(t, p.port)
	if err := execSQL(conn, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGQUIT)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGQUIT, want 0", code)
	}
}

// testConsoleShutdown: SHUTDOWN on the admin console stops the process.
func testConsoleShutdown(t *testing.T, format string) {
	p := startPooler(t, format)
	_, _ = psql(t, p.adminDSN(), "SHUTDOWN") // the console connection is closed
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SHUTDOWN, want 0", code)
	}
}

// TestDaemon: -d detaches once listening, writes the pidfile, refuses a
// second start with the same pidfile, logs to the logfile; SIGTERM stops it
// and removes the pidfile. A daemon that cannot start makes -d fail.
func TestDaemon(t *testing.T) {
	p := &pgw{format: "ini", dir: t.TempDir(), port: freePort(t), poolSize: 20}
	p.path = filepath.Join(p.dir, "pgbouncer.ini")
	writeFile(t, filepath.Join(p.dir, "userlist.txt"), userlist)
	p.writeConfig(t)
	logFile := filepath.Join(p.dir, "pgwarden.log")
	pidFile := filepath.Join(p.dir, "pgwarden.pid")
	b, _ := os.ReadFile(p.path)
	writeFile(t, p.path, string(b)+"logfile = "+logFile+"\npidfile = "+pidFile+"\n")

	stdout, stderr, code := runBinary(t, p.dir, "-d", p.path)
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("pgwarden -d: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	pidBytes, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidBytes)))
	if err != nil {
		t.Fatalf("pidfile holds %q", pidBytes)
	}
	t.Cleanup(func() {
		if !processGone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// -d returned after the daemon was listening: no polling needed.
	if out, err := psql(t, p.tcpDSN(), "SELECT 1"); err != nil || out != "1" {
		t.Errorf("psql to the daemon: %v, output %q", err, out)
	}

	// A second start with the same pidfile is refused.
	_, stderr, code = runBinary(t, p.dir, p.path)
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("names process %d, which is running", pid)) {
		t.Errorf("second start: exit %d, stderr %q", code, stderr)
	}

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := os.Stat(pidFile)
		if os.IsNotExist(err) && processGone(pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d did not exit and remove its pidfile within 15s", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logText, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listening", "got SIGTERM", "pgwarden stopped"} {
		if !strings.Contains(string(logText), want) {
			t.Errorf("logfile lacks %q:\n%s", want, logText)
		}
	}

	// The port is taken: the daemon cannot listen, and -d says so.
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.port))
	if err != nil {
		t.Skipf("cannot take port %d for the failure case: %v", p.port, err)
	}
	defer ln.Close()
	_, stderr, code = runBinary(t, p.dir, "-d", p.path)
	if code != 1 || !regexp.MustCompile(`daemon did not start: .*listen on 127\.0\.0\.1:`+strconv.Itoa(p.port)).MatchString(stderr) {
		t.Errorf("-d with the port taken: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pidfile left behind by a daemon that did not start: %v", err)
	}
}

// TestLogfileAndQuiet: with a logfile, the log goes there and to standard
// error; -q keeps it off standard error.
func TestLogfileAndQuiet(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		t.Run(fmt.Sprintf("quiet=%v", quiet), func(t *testing.T) {
			p := &pgw{format: "ini", dir: t.TempDir(), port: freePort(t), poolSize: 20}
			p.path = filepath.Join(p.dir, "pgbouncer.ini")
			writeFile(t, filepath.Join(p.dir, "userlist.txt"), userlist)
			p.writeConfig(t)
			logFile := filepath.Join(p.dir, "pgwarden.log")
			b, _ := os.ReadFile(p.path)
			writeFile(t, p.path, string(b)+"logfile = "+logFile+"\n")
			args := []string{p.path}
			if quiet {
				args = append([]string{"-q"}, args...)
			}
			p.proc = startPgwarden(t, p.dir, args...)
			waitReady(t, p.proc, p.port)
			// logrotate: move the file away, SIGHUP, a new file appears.
			if err := os.Rename(logFile, logFile+".1"); err != nil {
				t.Fatal(err)
			}
			p.signal(syscall.SIGHUP)
			deadline := time.Now().Add(10 * time.Second)
			for {
				b, _ := os.ReadFile(logFile)
				if strings.Contains(string(b), "configuration reloaded") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the reopened logfile did not get the reload line: %q", b)
				}
				time.Sleep(20 * time.Millisecond)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(15 * time.Second); code != 0 {
				t.Errorf("exit code %d", code)
			}
			old, _ := os.ReadFile(logFile + ".1")
			if !strings.Contains(string(old), "listening") {
				t.Errorf("rotated logfile lacks the start:\n%s", old)
			}
			stderr := p.stderr.String()
			if quiet && strings.Contains(stderr, "listening") {
				t.Errorf("-q: log on standard error:\n%s", stderr)
			}
			if !quiet && !strings.Contains(stderr, "listening") {
				t.Errorf("no log on standard error:\n%s", stderr)
			}
		})
	}
}

// TestRunAsUserRefused: a config "user" other than the current one is
// refused (pgwarden does not switch users).
func TestRunAsUserRefused(t *testing.T) {
	p := &pgw{format: "ini", dir: t.TempDir(), port: freePort(t), poolSize: 20}
	p.path = filepath.Join(p.dir, "pgbouncer.ini")
	writeFile(t, filepath.Join(p.dir, "userlist.txt"), userlist)
	p.writeConfig(t)
	b, _ := os.ReadFile(p.path)
	writeFile(t, p.path, string(b)+"user = pgwarden-no-such-user\n")
	_, stderr, code := runBinary(t, p.dir, p.path)
	if code != 1 || !strings.Contains(stderr, "pgwarden does not switch users") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// gatedConn holds back the client's second write (its first SASL message)
// until gate is closed: the client is then stuck in the middle of signing in.
type gatedConn struct {
	net.Conn
	writes int
	gate   chan struct{}
}

func (c *gatedConn) Write(b []byte) (int, error) {
	if c.writes == 1 {
		<-c.gate
	}
	c.writes++
	return c.Conn.Write(b)
}

// TestLoginDuringShutdown: a client that is signing in when SIGTERM comes
// must not be left connected and idle, keeping the process alive.
func TestLoginDuringShutdown(t *testing.T) {
	p := startPooler(t, "ini")
	cfg, err := pgx.ParseConfig(p.tcpDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	gate := make(chan struct{})
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &gatedConn{Conn: c, gate: gate}, nil
	}
	type result struct {
		conn *pgx.Conn
		err  error
	}
	done := make(chan result, 1)
	before := strings.Count(p.output(), `msg="login attempt"`)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.ConnectConfig(ctx, cfg)
		done <- result{c, err}
	}()
	// pgwarden has read the startup packet and asked for SASL.
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.output(), `msg="login attempt"`) == before {
		if time.Now().After(deadline) {
			close(gate)
			t.Fatal("no login attempt logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.signal(syscall.SIGTERM)
	p.waitOutput("got SIGTERM", 10*time.Second)
	close(gate)
	r := <-done
	if r.err == nil {
		t.Cleanup(func() { r.conn.Close(context.Background()) })
	}
	select {
	case <-p.done:
		if code := p.wait(time.Second); code != 0 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		if r.err == nil {
			err := execSQL(r.conn, "SELECT 1")
			r.conn.Close(context.Background())
			p.wait(10 * time.Second)
			t.Fatalf("a client signing in during a SIGTERM shutdown was let in (its next query got: %v) "+
				"and kept pgwarden running until it left", err)
		}
		t.Fatalf("pgwarden did not exit within 10s of SIGTERM (sign-in result: %v)", r.err)
	}
}

// TestConsoleDuringShutdown: an admin console client connected at SIGTERM is
// closed at once and the process exits 0.
//
// A data race between requestClose and startAdmin on c.admin once made the
// race-enabled binary exit 66 here.
func TestConsoleDuringShutdown(t *testing.T) {
	p := startPooler(t, "ini")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	console, err := connect(ctx, p.adminDSN())
	if err != nil {
		t.Fatalf("console: %v", err)
	}
	defer console.Close(context.Background())
	if _, err := console.Exec(ctx, "SHOW VERSION"); err != nil {
		t.Fatalf("SHOW VERSION: %v", err)
	}
	p.raceOK = true
	p.signal(syscall.SIGTERM)
	code := p.wait(10 * time.Second)
	if raceEnabled && strings.Contains(p.output(), "WARNING: DATA RACE") && strings.Contains(p.output(), "requestClose") {
		t.Fatal("data race between clientConn.requestClose and startAdmin on c.admin")
	}
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if _, err := console.Exec(ctx, "SHOW VERSION"); err == nil {
		t.Error("the console connection still works after pgwarden exited")
	}
}
