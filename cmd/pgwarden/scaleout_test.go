package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// scaleGroup is a set of pgwarden processes sharing one TCP port with
// so_reuseport, peered by their Unix sockets. Peer ids 1..slots are the
// first generation; a restarted slot comes back as id+slots (its own
// directory), so that the draining process and its successor never share
// an id. Every config lists every id.
type scaleGroup struct {
	t        *testing.T
	port     int
	slots    int
	dirs     map[int]string // by peer id
	cert     string
	key      string
	userlist string
	procs    map[int]*proc // running, by peer id
}

func newScaleGroup(t *testing.T, slots int) *scaleGroup {
	t.Helper()
	base := t.TempDir()
	cert, key, err := writeSelfSignedCert(base)
	if err != nil {
		t.Fatal(err)
	}
	g := &scaleGroup{t: t, port: freePort(t), slots: slots, dirs: map[int]string{}, cert: cert, key: key,
		userlist: filepath.Join(base, "userlist.txt"), procs: map[int]*proc{}}
	writeFile(t, g.userlist, userlist)
	for id := 1; id <= 2*slots; id++ {
		dir := filepath.Join(base, fmt.Sprintf("peer%d", id))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		g.dirs[id] = dir
	}
	return g
}

// start runs the process with peer id id and waits until it answers on its
// own Unix socket.
func (g *scaleGroup) start(id int) *proc {
	t := g.t
	t.Helper()
	var peers strings.Builder
	for pid := 1; pid <= 2*g.slots; pid++ {
		fmt.Fprintf(&peers, "%d = host=%s port=%d\n", pid, g.dirs[pid], g.port)
	}
	path := filepath.Join(g.dirs[id], "pgbouncer.ini")
	writeFile(t, path, fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
so_reuseport = 1
peer_id = %d
auth_type = scram-sha-256
auth_file = %s
admin_users = %s
pool_mode = transaction
default_pool_size = 12
max_client_conn = 1000
server_tls_sslmode = disable
client_tls_sslmode = require
client_tls_cert_file = %s
client_tls_key_file = %s
shutdown_timeout = 2
log_connections = 0
log_disconnections = 0
verbose = 1

[peers]
%s`, pg.Port, g.port, g.dirs[id], id, g.userlist, adminUser, g.cert, g.key, peers.String()))
	p := startPgwarden(t, g.dirs[id], path)
	p.name = fmt.Sprintf("pgwarden peer %d", id)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.output())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := connect(ctx, g.unixDSN(id))
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", p.name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.procs[id] = p
	return p
}

func (g *scaleGroup) unixDSN(id int) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=app connect_timeout=5", g.dirs[id], g.port, appUser, alicePassword)
}

// tcpDSN is the shared port, TLS required.
func (g *scaleGroup) tcpDSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=app sslmode=require connect_timeout=5", g.port, appUser, alicePassword)
}

// connectOutcome sorts a failed connection attempt.
func connectOutcome(err error) string {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		return "sqlstate " + pe.Code
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return "reset"
	}
	return "other: " + err.Error()
}

// counters is a goroutine-safe tally by name.
type counters struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counters) add(k string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
	c.mu.Unlock()
}

func (c *counters) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *counters) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.m)
}

// TestRollingRestart: three pgwarden processes on one port (so_reuseport,
// TLS required, transaction pooling, peered) under pgbench -C -c 20 load
// are restarted one by one, each new process started beside the old one
// before the old one gets SIGTERM. Nothing may fail: pgbench reports no
// failed transaction and no aborted client; a prober opening a connection
// per query sees no refused or reset connection; persistent clients lose
// no transaction (they are closed between transactions once
// shutdown_timeout has passed, which is counted). Then 300 pg_sleep queries
// are cancelled, each by one CancelRequest sent to the shared port (so to
// whichever process the kernel picks), in plaintext or over TLS: every one
// must reach its query.
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the rolling restart under load")
	}
	// The processes' logs are long; this repeats what failed after them.
	var failures []string
	var failMu sync.Mutex
	t.Cleanup(func() {
		switch {
		case len(failures) > 0:
			t.Logf("TestRollingRestart failed:\n- %s", strings.Join(failures, "\n- "))
		case t.Failed():
			t.Log("TestRollingRestart failed in its cancels or with a data race in a process: see the errors and race reports above")
		}
	})
	fail := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		failMu.Lock()
		failures = append(failures, msg)
		failMu.Unlock()
		t.Error(msg)
	}
	pgbench := pgtest.PgbenchPath()
	if pgbench == "" {
		t.Fatal("pgbench not found (install postgresql-client)")
	}
	createTable(t, "rolling_pgbench")
	createTable(t, "rolling_clients")
	const slots = 3
	g := newScaleGroup(t, slots)
	for id := 1; id <= slots; id++ {
		g.start(id)
	}

	// pgbench: a new connection (TLS, SCRAM) for every transaction.
	script := filepath.Join(t.TempDir(), "tx.sql")
	writeFile(t, script, "BEGIN;\nINSERT INTO rolling_pgbench VALUES (:client_id);\nSELECT count(*) FROM rolling_pgbench WHERE id = :client_id;\nEND;\n")
	const benchSeconds = 30
	bench := exec.Command(pgbench, "-n", "-C", "-c", "20", "-j", "2", "-T", strconv.Itoa(benchSeconds), "-f", script,
		"-h", "127.0.0.1", "-p", strconv.Itoa(g.port), "-U", appUser, "app")
	bench.Env = cleanEnv("PGPASSWORD="+alicePassword, "PGSSLMODE=require", "PGCONNECT_TIMEOUT=10")
	benchProc := startProc(t, "pgbench", bench)
	benchStart := time.Now()

	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	// The prober: one connection per query, sorted by outcome.
	var probe counters
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := connect(cctx, g.tcpDSN())
			if err == nil {
				_, err = conn.Exec(cctx, "SELECT 1")
				conn.Close(context.Background())
			}
			cancel()
			if err != nil {
				probe.add(connectOutcome(err))
			} else {
				probe.add("ok")
			}
		}
	}()
	// Persistent clients: transactions back to back on one connection,
	// reconnecting when pgwarden closes it between transactions.
	var clients counters
	var committed atomic.Int64
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for ctx.Err() == nil {
				if conn == nil {
					cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					c, err := connect(cctx, g.tcpDSN())
					cancel()
					if err != nil {
						clients.add("connect failed: " + connectOutcome(err))
						continue
					}
					conn = c
				}
				qctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := conn.Exec(qctx, "BEGIN")
				if err != nil {
					// Closed between transactions: shutdown_timeout.
					cancel()
					clients.add("closed between transactions: " + connectOutcome(err))
					conn.Close(context.Background())
					conn = nil
					continue
				}
				_, err = conn.Exec(qctx, fmt.Sprintf("INSERT INTO rolling_clients VALUES (%d)", i))
				if err == nil {
					_, err = conn.Exec(qctx, "COMMIT")
				}
				cancel()
				if err != nil {
					clients.add("failed in a transaction: " + connectOutcome(err))
					conn.Close(context.Background())
					conn = nil
					continue
				}
				committed.Add(1)
			}
		}()
	}

	// The rolling restart: for each slot, start the successor beside the
	// old process, then SIGTERM the old one and wait for it to exit.
	time.Sleep(3 * time.Second) // let the load run before the first restart
	for slot := 1; slot <= slots; slot++ {
		old := g.procs[slot]
		began := time.Now()
		g.start(slot + slots)
		old.signal(syscall.SIGTERM)
		if code := old.wait(30 * time.Second); code != 0 {
			fail("%s exited %d after SIGTERM", old.name, code)
		}
		delete(g.procs, slot)
		queued := 0
		for _, m := range regexp.MustCompile(`queued_connections=(\d+)`).FindAllStringSubmatch(old.output(), -1) {
			k, _ := strconv.Atoi(m[1])
			queued += k
		}
		t.Logf("slot %d restarted in %v (peer %d -> %d); %d queued connections taken over and served by the draining process",
			slot, time.Since(began).Round(time.Millisecond), slot, slot+slots, queued)
	}
	if time.Since(benchStart) > benchSeconds*time.Second-3*time.Second {
		fail("the restarts took too long to happen under load (%v)", time.Since(benchStart))
	}
	code := benchProc.wait(benchSeconds*time.Second + time.Minute)
	stopLoad()
	wg.Wait()

	out := benchProc.output()
	m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("pgbench output has no transaction count:\n%s", out)
	}
	txs, _ := strconv.Atoi(m[1])
	failed := -1
	if m := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out); m != nil {
		failed, _ = strconv.Atoi(m[1])
	}
	aborted := strings.Count(out, "aborted")
	rows := countRows(t, "rolling_pgbench")
	t.Logf("pgbench -C -c 20: %d transactions, %d failed, exit %d, %d 'aborted' lines; %d rows", txs, failed, code, aborted, rows)
	t.Logf("prober (a connection per query): %s", probe.String())
	t.Logf("persistent clients: %d transactions committed; %s", committed.Load(), clients.String())
	if code != 0 || failed != 0 || aborted != 0 {
		fail("pgbench saw failures (exit %d, failed %d):\n%s", code, failed, out)
	}
	if rows != txs {
		fail("pgbench counted %d transactions but %d rows were committed", txs, rows)
	}
	if probe.get("ok") == 0 {
		fail("the prober never got through")
	}
	for k := range probe.m {
		if k != "ok" {
			fail("prober: %d connection attempts ended %s", probe.get(k), k)
		}
	}
	for k, n := range clients.m {
		if !strings.HasPrefix(k, "closed between transactions: ") {
			fail("persistent clients: %d × %s", n, k)
		}
	}
	if n := countRows(t, "rolling_clients"); int64(n) != committed.Load() {
		fail("persistent clients committed %d transactions, the table has %d rows", committed.Load(), n)
	}

	g.cancelMany(t, 300)
}

// cancelMany runs n pg_sleep queries through the shared port, a few at a
// time, and cancels each with exactly one CancelRequest sent to the shared
// port (plaintext for even ones, TLS for odd ones) once PostgreSQL shows
// the query running. Every query must end with 57014 at once.
func (g *scaleGroup) cancelMany(t *testing.T, n int) {
	t.Helper()
	direct, err := connect(context.Background(), dsn(pg.Port, appUser, alicePassword, "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	var directMu sync.Mutex
	running := func(tag string) bool {
		directMu.Lock()
		defer directMu.Unlock()
		var k int
		err := direct.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()", tag).Scan(&k)
		return err == nil && k > 0
	}
	before := g.forwardedCancels()
	var reached, missed atomic.Int64
	var fails counters
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := connect(ctx, g.tcpDSN())
			if err != nil {
				fails.add("connect: " + connectOutcome(err))
				return
			}
			defer conn.Close(context.Background())
			tag := fmt.Sprintf("cancel_me_%d_%d", i, rand.Int64())
			done := make(chan error, 1)
			go func() {
				_, err := conn.Exec(ctx, "SELECT pg_sleep(20) /* "+tag+" */")
				done <- err
			}()
			for !running(tag) {
				select {
				case err := <-done:
					fails.add("query ended before the cancel: " + fmt.Sprint(err))
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			if err := sendCancel(g.port, conn.PgConn().PID(), conn.PgConn().SecretKey(), i%2 == 1); err != nil {
				fails.add("send cancel: " + err.Error())
				return
			}
			select {
			case err := <-done:
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == "57014" {
					reached.Add(1)
				} else {
					fails.add(fmt.Sprintf("query ended with %v", err))
				}
			case <-time.After(10 * time.Second):
				missed.Add(1)
				<-done
			}
		}()
	}
	wg.Wait()
	forwarded := g.forwardedCancels() - before
	t.Logf("cancels: %d of %d reached their query in %v (%d forwarded to the owning peer; %d missed; %s)",
		reached.Load(), n, time.Since(start).Round(time.Millisecond), forwarded, missed.Load(), fails.String())
	if reached.Load() != int64(n) {
		t.Errorf("%d of %d cancels reached their query", reached.Load(), n)
	}
	if forwarded == 0 {
		t.Error("no cancel was forwarded to a peer; the kernel should have spread them")
	}
}

// forwardedCancels counts the forwards the running processes logged.
func (g *scaleGroup) forwardedCancels() int {
	n := 0
	for _, p := range g.procs {
		n += strings.Count(p.output(), "cancel request forwarded to peer")
	}
	return n
}

// sendCancel sends a CancelRequest for (pid, key) to 127.0.0.1:port, in
// plaintext (libpq before 17, pgJDBC, node-postgres) or after an SSLRequest
// over TLS (libpq 17), and waits for the pooler to close the connection.
func sendCancel(port int, pid uint32, key []byte, useTLS bool) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var conn net.Conn = c
	if useTLS {
		req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
		if _, err := c.Write(req); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'S' {
			return fmt.Errorf("SSLRequest answered %q, %v", b[:], err)
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test against a self-signed certificate
		if err := tc.Handshake(); err != nil {
			return err
		}
		conn = tc
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(12+len(key)))
	msg = binary.BigEndian.AppendUint32(msg, 80877102)
	msg = binary.BigEndian.AppendUint32(msg, pid)
	msg = append(msg, key...)
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	var b [1]byte
	_, _ = conn.Read(b[:])
	return nil
}
