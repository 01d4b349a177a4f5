package main

// Binary-level tests: TestMain builds the pgwarden binary once and starts one
// throwaway PostgreSQL (pooler/pgtest); the tests run the binary as a user
// would, with config files, psql, pgbench and signals.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

var (
	// pgwardenBin is the binary built by TestMain.
	pgwardenBin string
	// pg is the PostgreSQL behind every pgwarden the tests start. Role
	// alice (SCRAM, password alicePassword) owns database app.
	pg *pgtest.Cluster
)

const (
	appUser       = "alice"
	alicePassword = "alice-pw"
	adminUser     = "admin"
	adminPassword = "admin-pw"
	// userlist is the auth_file of every config: plaintext passwords, so
	// that pgwarden (and PgBouncer) can sign in to PostgreSQL with SCRAM.
	userlist = `"alice" "alice-pw"` + "\n" + `"admin" "admin-pw"` + "\n"
)

func TestMain(m *testing.M) {
	pgtest.Main(m, pgtest.Options{}, func(c *pgtest.Cluster) int {
		pg = c
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.CreateRole(ctx, appUser, alicePassword, "scram-sha-256"); err != nil {
			fmt.Fprintln(os.Stderr, "test setup:", err)
			return 1
		}
		if err := c.Exec(ctx, "CREATE DATABASE app OWNER alice"); err != nil {
			fmt.Fprintln(os.Stderr, "test setup:", err)
			return 1
		}
		dir, err := os.MkdirTemp("", "pgwarden-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "test setup:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		pgwardenBin = filepath.Join(dir, "pgwarden")
		if err := buildBinary(pgwardenBin); err != nil {
			fmt.Fprintln(os.Stderr, "test setup:", err)
			return 1
		}
		return m.Run()
	})
}

// buildBinary runs go build for this package (with -race when the tests
// have it).
func buildBinary(out string) error {
	goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, ".")
	cmd := exec.Command(goTool, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// syncBuffer is a goroutine-safe output sink for exec.Cmd.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a started process whose output is collected.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, once done
	// raceOK: a race detector report in the output does not fail the
	// test (a test that skips on a known race sets it).
	raceOK bool
}

// startProc starts cmd (stdout and stderr are taken over) and makes sure it
// is gone when the test ends; on failure its output is logged.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = &p.stdout
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if !p.raceOK && strings.Contains(p.output(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in %s", name)
		}
		if t.Failed() {
			// The tail only, and every race report in full: a busy
			// process's sign-in lines would otherwise push the test's own
			// failure messages out of a CI log's visible end.
			t.Logf("%s stdout:\n%s", name, tailLines(p.stdout.String(), 40))
			t.Logf("%s stderr:\n%s", name, tailLines(p.stderr.String(), 60))
			for _, r := range raceReports(p.output()) {
				t.Logf("%s race report:\n%s", name, r)
			}
		}
	})
	return p
}

// tailLines is the last n lines of s, with a note of how many were left
// out.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[%d earlier lines left out]\n%s", len(lines)-n, strings.Join(lines[len(lines)-n:], "\n"))
}

// raceReports are the race detector's reports in out.
func raceReports(out string) []string {
	const sep = "=================="
	var reports []string
	for {
		i := strings.Index(out, "WARNING: DATA RACE")
		if i < 0 {
			return reports
		}
		end := strings.Index(out[i:], sep)
		if end < 0 {
			end = len(out) - i
		}
		reports = append(reports, out[i:i+end])
		out = out[i+end:]
	}
}

// startPgwarden runs the pgwarden binary with args in dir.
func startPgwarden(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(pgwardenBin, args...)
	cmd.Dir = dir
	cmd.Env = binEnv()
	return startProc(t, "pgwarden", cmd)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code; on timeout it kills the process and fails the test.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("%s did not exit within %v", p.name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	default:
		p.t.Fatalf("%s: %v", p.name, p.err)
		return -1
	}
}

// output is stdout and stderr together.
func (p *proc) output() string { return p.stdout.String() + p.stderr.String() }

// waitOutput waits until the output contains s, failing the test if the
// process exits first or timeout passes.
func (p *proc) waitOutput(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.output(), s) {
		if p.exited() {
			if strings.Contains(p.output(), s) {
				return
			}
			p.t.Fatalf("%s exited (%v) before printing %q", p.name, p.err, s)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not print %q within %v", p.name, s, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanEnv is the environment without libpq's PG* variables.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// binEnv is the environment for the pgwarden binary: cleanEnv, and no
// one-second pause at exit when it is built with -race.
func binEnv() []string {
	return cleanEnv(strings.TrimSpace("GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0"))
}

// dsn is a keyword/value connection string for 127.0.0.1:port.
func dsn(port int, user, password, db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable connect_timeout=5", port, user, password, db)
}

// connect opens a pgx connection that uses only the simple query protocol
// (so it behaves the same through any pooler mode).
func connect(ctx context.Context, connString string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return pgx.ConnectConfig(ctx, cfg)
}

// mustConnect connects as alice to app through the pooler on port.
func mustConnect(t *testing.T, port int) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := connect(ctx, dsn(port, appUser, alicePassword, "app"))
	if err != nil {
		t.Fatalf("connect through port %d: %v", port, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// exec runs sql on conn with a timeout.
func execSQL(conn *pgx.Conn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, sql)
	return err
}

// waitReady polls, by connecting and running SELECT 1, until a pooler
// answers on port; it fails the test if p exits first or 30 s pass.
func waitReady(t *testing.T, p *proc, port int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("%s exited (%v) before accepting connections", p.name, p.err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := connect(ctx, dsn(port, appUser, alicePassword, "app"))
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready on port %d after 30s: %v", p.name, port, lastErr)
}

// psql runs psql -c sql against the connection string and returns its
// trimmed output.
func psql(t *testing.T, connString, sql string) (string, error) {
	t.Helper()
	return psqlEnv(t, nil, connString, sql)
}

// psqlEnv is psql with extra environment variables (such as PGPASSWORD).
func psqlEnv(t *testing.T, env []string, connString, sql string) (string, error) {
	t.Helper()
	bin := pgtest.PsqlPath()
	if bin == "" {
		t.Fatal("psql not found (install postgresql-client)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, connString)
	cmd.Env = cleanEnv(env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// writeFile writes a test file.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// refused reports whether a new client is turned away: the connection (or
// the sign-in) fails.
func refused(port int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := connect(ctx, dsn(port, appUser, alicePassword, "app"))
	if err != nil {
		return true
	}
	_, err = conn.Exec(ctx, "SELECT 1")
	conn.Close(context.Background())
	return err != nil
}

// processGone reports whether pid no longer runs (or is a zombie nobody
// reaps).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}
