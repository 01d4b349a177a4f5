// Package pgcluster starts throwaway PostgreSQL clusters: for pgwarden's
// tests (through package pgtest, which adds the testing helpers), for
// `pgwarden demo` and for the benchmarks.
//
// A Cluster is a real postmaster, made with initdb in a fresh temporary
// directory and started with pg_ctl on a free 127.0.0.1 port and a private
// unix socket directory. Authentication is scram-sha-256 for every local and
// host line (plus any lines the caller puts in front, see Options.HBA), the
// superuser has a random SCRAM password, and durability is switched off
// (fsync, synchronous_commit, full_page_writes) for speed. Readiness is
// checked by connecting, never by sleeping a fixed time.
//
// # Binaries
//
// initdb, pg_ctl and postgres are taken from, in order: $PGTEST_BINDIR; the
// directory of initdb found on $PATH (symlinks resolved) if pg_ctl and
// postgres are beside it; the highest-versioned /usr/lib/postgresql/*/bin
// (Debian's layout). If none is found, Start returns an error (and pgtest.Main exits
// with status 1): CI installs PostgreSQL, so a missing server is a failure,
// not a reason to skip.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the test process's euid is 0,
// initdb, pg_ctl and postgres are run as an unprivileged user instead:
// $PGTEST_USER if set, else the "postgres" system user (created by Debian's
// postgresql packages), else "nobody". pgcluster never creates users. The
// cluster's directory (data directory, socket directory, log) is made with
// os.MkdirTemp under $TMPDIR (or /tmp when $TMPDIR is not traversable by that
// user, or too long for a unix socket path) and chowned to that user. Root
// itself can still read the log and connect on the socket.
//
// # Cleanup
//
// Stop stops the server (pg_ctl stop -m immediate) and removes the
// directory. Main stops its cluster when the tests end, and StartT registers
// Stop with t.Cleanup. If the test process dies without calling Stop
// (killed, go test -timeout panic, os.Exit), a small watchdog shell started
// with each cluster, in its own session, notices that its stdin pipe from the
// test process was closed and stops the server and removes the directory.
package pgcluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// DefaultMaxConnections is used when Options.MaxConnections is 0.
	DefaultMaxConnections = 200
	// DefaultSuperUser is the name of the superuser role made by initdb.
	DefaultSuperUser = "pgtest_super"

	readyTimeout   = 30 * time.Second // connect polling after pg_ctl start
	pgCtlWaitSecs  = "60"             // pg_ctl -t
	startAttempts  = 5                // new ports tried when the port was taken
	logFileName    = "postgres.log"   // in the data directory
	confFileName   = "pgtest.conf"    // in the data directory, included last
	maxSockDirLen  = 80               // unix socket paths are limited to 107 bytes
	readyPollDelay = 50 * time.Millisecond
)

// Options configure Start.
type Options struct {
	// MaxConnections is the server's max_connections; 0 means 200.
	MaxConnections int
	// ExtraConf holds postgresql.conf settings, written after (so
	// overriding) pgtest's own. Values are written single-quoted, which
	// PostgreSQL accepts for every parameter type: give them unquoted
	// ("64MB", "on", "1000").
	ExtraConf map[string]string
	// HBA holds pg_hba.conf lines put BEFORE the default scram-sha-256
	// lines, e.g. "host all md5user 127.0.0.1/32 md5".
	HBA []string
}

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	Host          string // "127.0.0.1"
	Port          int
	SocketDir     string // unix socket directory (.s.PGSQL.<Port> inside)
	SuperUser     string // a superuser role created at init with a SCRAM password
	SuperPassword string
	DataDir       string
	BinDir        string

	baseDir string     // holds DataDir, SocketDir; removed by Stop
	runAs   *osUser    // nil: run PostgreSQL as ourselves
	wd      *watchdog  // cleans up if the test process dies
	stopMu  sync.Mutex // serialises Stop and Restart
	stopped bool
}

// osUser is the unprivileged account PostgreSQL runs as when we are root.
type osUser struct {
	name     string
	uid, gid uint32
}

// LogFile is the server's log (stderr of the postmaster and its children).
func (c *Cluster) LogFile() string { return filepath.Join(c.DataDir, logFileName) }

// ConnString returns a keyword/value DSN (for pgx and psql) reaching the
// cluster over TCP on 127.0.0.1, with sslmode=disable.
func (c *Cluster) ConnString(user, password, dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable",
		dsnQuote(c.Host), c.Port, dsnQuote(user), dsnQuote(password), dsnQuote(dbname))
}

// Connect opens a pgx connection as user to dbname over TCP.
func (c *Cluster) Connect(ctx context.Context, user, password, dbname string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.ConnString(user, password, dbname))
}

// Exec runs each SQL string, in order, as the superuser in database
// "postgres". Each string goes through the simple query protocol, so it may
// hold several statements.
func (c *Cluster) Exec(ctx context.Context, sqls ...string) error {
	conn, err := c.Connect(ctx, c.SuperUser, c.SuperPassword, "postgres")
	if err != nil {
		return fmt.Errorf("pgtest: connect as superuser: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, sql := range sqls {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("pgtest: exec %q: %w", sql, err)
		}
	}
	return nil
}

// CreateRole creates a LOGIN role with the given password, or, if it exists,
// alters it to LOGIN with that password. method is the password_encryption
// used to store the secret: "scram-sha-256" (or "") or "md5".
func (c *Cluster) CreateRole(ctx context.Context, name, password, method string) error {
	switch method {
	case "":
		method = "scram-sha-256"
	case "scram-sha-256", "md5":
	default:
		return fmt.Errorf("pgtest: CreateRole %q: unknown method %q (want scram-sha-256 or md5)", name, method)
	}
	conn, err := c.Connect(ctx, c.SuperUser, c.SuperPassword, "postgres")
	if err != nil {
		return fmt.Errorf("pgtest: connect as superuser: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SET password_encryption = "+sqlLiteral(method)); err != nil {
		return fmt.Errorf("pgtest: set password_encryption: %w", err)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("pgtest: look up role %q: %w", name, err)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	sql := verb + " ROLE " + pgx.Identifier{name}.Sanitize() + " LOGIN PASSWORD " + sqlLiteral(password)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: %s ROLE %q: %w", verb, name, err)
	}
	return nil
}

// RoleSecret returns pg_authid.rolpassword of the role: "md5…" or
// "SCRAM-SHA-256$…", or "" when the role has no password. A missing role is
// an error.
func (c *Cluster) RoleSecret(ctx context.Context, name string) (string, error) {
	conn, err := c.Connect(ctx, c.SuperUser, c.SuperPassword, "postgres")
	if err != nil {
		return "", fmt.Errorf("pgtest: connect as superuser: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var secret *string
	err = conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", name).Scan(&secret)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("pgtest: role %q does not exist", name)
	}
	if err != nil {
		return "", fmt.Errorf("pgtest: read secret of %q: %w", name, err)
	}
	if secret == nil {
		return "", nil
	}
	return *secret, nil
}

// Restart restarts the server with pg_ctl restart -m mode ("fast",
// "immediate" or "smart") and returns once it accepts connections again.
func (c *Cluster) Restart(mode string) error {
	switch mode {
	case "fast", "immediate", "smart":
	default:
		return fmt.Errorf("pgtest: Restart: unknown mode %q", mode)
	}
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.stopped {
		return errors.New("pgtest: Restart: cluster is stopped")
	}
	if out, err := c.pgCtl("restart", "-m", mode, "-w", "-t", pgCtlWaitSecs, "-l", c.LogFile()); err != nil {
		return fmt.Errorf("pgtest: pg_ctl restart -m %s: %w\n%s%s", mode, err, out, c.logTail())
	}
	return c.waitReady()
}

// Stop stops the server (pg_ctl stop -m immediate) and removes its
// directories. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); err == nil {
		out, err := c.pgCtl("stop", "-m", "immediate", "-w", "-t", pgCtlWaitSecs)
		// A stale postmaster.pid (the server died) is not an error here.
		if err != nil && !strings.Contains(string(out), "Is server running?") {
			errs = append(errs, fmt.Errorf("pgtest: pg_ctl stop: %w\n%s", err, out))
		}
	}
	if err := os.RemoveAll(c.baseDir); err != nil {
		errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", c.baseDir, err))
	}
	if c.wd != nil {
		c.wd.dismiss()
	}
	return errors.Join(errs...)
}

// Start makes and starts a new cluster. The caller must Stop it.
func Start(opts Options) (_ *Cluster, err error) {
	if opts.MaxConnections == 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxConnections < 0 {
		return nil, fmt.Errorf("pgtest: MaxConnections %d < 0", opts.MaxConnections)
	}
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	runAs, err := pgOSUser()
	if err != nil {
		return nil, err
	}
	parent, err := tempParent(runAs)
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp(parent, "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{
		Host:      "127.0.0.1",
		SocketDir: filepath.Join(base, "sock"),
		SuperUser: DefaultSuperUser,
		DataDir:   filepath.Join(base, "data"),
		BinDir:    bin,
		baseDir:   base,
		runAs:     runAs,
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	// base is 0755 so any local user may reach the socket; the data
	// directory inside is 0700 (initdb) and the password file 0600.
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := c.chown(base); err != nil {
		return nil, err
	}
	if c.wd, err = startWatchdog(c); err != nil {
		return nil, err
	}
	if err := os.Mkdir(c.SocketDir, 0o755); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := c.chown(c.SocketDir); err != nil {
		return nil, err
	}
	if c.SuperPassword, err = randomPassword(); err != nil {
		return nil, err
	}
	if err := c.initdb(); err != nil {
		return nil, err
	}
	if err := c.writeHBA(opts.HBA); err != nil {
		return nil, err
	}
	if err := c.includeConf(); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		if c.Port, err = FreePort(); err != nil {
			return nil, err
		}
		if err := c.writeConf(opts); err != nil {
			return nil, err
		}
		out, err := c.pgCtl("start", "-w", "-t", pgCtlWaitSecs, "-l", c.LogFile())
		if err == nil {
			break
		}
		// The port FreePort found may have been taken before postgres
		// bound it; then try another.
		log := c.logTail()
		if attempt < startAttempts && strings.Contains(log, "could not bind") {
			continue
		}
		return nil, fmt.Errorf("pgtest: pg_ctl start (port %d): %w\n%s%s", c.Port, err, out, log)
	}
	if err := c.waitReady(); err != nil {
		return nil, err
	}
	return c, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// PsqlPath returns the path of psql (beside the server binaries if there,
// else on $PATH), or "" if it cannot be found.
func PsqlPath() string { return clientPath("psql") }

// PgbenchPath returns the path of pgbench (beside the server binaries if
// there, else on $PATH), or "" if it cannot be found.
func PgbenchPath() string { return clientPath("pgbench") }

func clientPath(name string) string {
	if dir, err := FindBinDir(); err == nil {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

// FindBinDir returns the directory holding initdb, pg_ctl and postgres (see
// the package doc for where it looks), or an error saying where it looked.
func FindBinDir() (string, error) {
	complete := func(dir string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if !isExecutable(filepath.Join(dir, b)) {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv("PGTEST_BINDIR"); dir != "" {
		if complete(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("pgtest: PGTEST_BINDIR=%s lacks initdb, pg_ctl or postgres", dir)
	}
	var looked []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		if dir := filepath.Dir(p); complete(dir) {
			return dir, nil
		}
		looked = append(looked, filepath.Dir(p))
	} else {
		looked = append(looked, "$PATH")
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersionKey(dirs[i]) > pgVersionKey(dirs[j]) })
	for _, dir := range dirs {
		if complete(dir) {
			return dir, nil
		}
	}
	looked = append(looked, "/usr/lib/postgresql/*/bin")
	return "", fmt.Errorf("pgtest: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in %s; "+
		"install them (Debian: apt-get install postgresql) or set PGTEST_BINDIR", strings.Join(looked, ", "))
}

// pgVersionKey orders /usr/lib/postgresql/<version>/bin numerically
// ("9.6" < "10" < "16").
func pgVersionKey(dir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// pgOSUser picks the account PostgreSQL runs as: nil (ourselves) unless we
// are root.
func pgOSUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	names := []string{"postgres", "nobody"}
	if n := os.Getenv("PGTEST_USER"); n != "" {
		names = []string{n}
	}
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &osUser{name: n, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("pgtest: running as root, and none of the users %s exists to run PostgreSQL as; "+
		"create one (useradd --system postgres) or set PGTEST_USER", strings.Join(names, ", "))
}

// tempParent returns the directory to make the cluster's directory in:
// $TMPDIR if the PostgreSQL user can traverse it and the socket path stays
// short, else /tmp.
func tempParent(u *osUser) (string, error) {
	for _, dir := range []string{os.TempDir(), "/tmp"} {
		abs, err := filepath.Abs(dir)
		if err != nil || len(abs) > maxSockDirLen-len("/pgtest-1234567890/sock") {
			continue
		}
		if u == nil || traversable(abs, u) {
			return abs, nil
		}
	}
	return "", fmt.Errorf("pgtest: neither $TMPDIR (%s) nor /tmp can be used for the cluster", os.TempDir())
}

// traversable reports whether u may search dir and each of its ancestors
// (judged by the mode bits and u's primary group only).
func traversable(dir string, u *osUser) bool {
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if err := syscall.Stat(d, &st); err != nil {
			return false
		}
		var bit uint32 = 0o001
		switch {
		case st.Uid == u.uid:
			bit = 0o100
		case st.Gid == u.gid:
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return false
		}
		if d == "/" || d == filepath.Dir(d) {
			return true
		}
	}
}

func (c *Cluster) chown(path string) error {
	if c.runAs == nil {
		return nil
	}
	if err := os.Chown(path, int(c.runAs.uid), int(c.runAs.gid)); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// command builds a command that runs a PostgreSQL binary as the PostgreSQL
// user, in the cluster's directory (the test's working directory may not be
// readable by that user), with PG* variables removed from its environment.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.BinDir, name), args...)
	cmd.Dir = c.baseDir
	env := []string{"LC_ALL=C", "LANG=C", "PATH=" + c.BinDir + string(os.PathListSeparator) + os.Getenv("PATH")}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "PATH" {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	if c.runAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: c.runAs.uid, Gid: c.runAs.gid, Groups: []uint32{}},
		}
		cmd.Env = append(cmd.Env, "USER="+c.runAs.name, "LOGNAME="+c.runAs.name)
	}
	return cmd
}

func (c *Cluster) pgCtl(args ...string) ([]byte, error) {
	args = append([]string{"-D", c.DataDir}, args...)
	// pg_ctl start hands the postmaster the -l file as its stdout/stderr,
	// so the postmaster does not hold this pipe open.
	return c.command("pg_ctl", args...).CombinedOutput()
}

func (c *Cluster) initdb() error {
	pwfile := filepath.Join(c.baseDir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.SuperPassword+"\n"), 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer os.Remove(pwfile)
	if err := c.chown(pwfile); err != nil {
		return err
	}
	out, err := c.command("initdb",
		"-D", c.DataDir,
		"-U", c.SuperUser,
		"--auth=scram-sha-256",
		"--pwfile="+pwfile,
		"--no-locale", "--encoding=UTF8",
		"--no-sync",
	).CombinedOutput()
	if err != nil {
		who := "this user"
		if c.runAs != nil {
			who = "user " + c.runAs.name
		}
		return fmt.Errorf("pgtest: initdb (as %s): %w\n%s", who, err, out)
	}
	return nil
}

func (c *Cluster) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return c.chown(path)
}

func (c *Cluster) writeHBA(extra []string) error {
	var b strings.Builder
	b.WriteString("# Written by pgwarden's pgtest.\n")
	if len(extra) > 0 {
		b.WriteString("# Options.HBA:\n")
		for _, l := range extra {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("# Defaults:\n" +
		"local all         all                scram-sha-256\n" +
		"host  all         all  127.0.0.1/32  scram-sha-256\n" +
		"host  all         all  ::1/128       scram-sha-256\n" +
		"local replication all                scram-sha-256\n" +
		"host  replication all  127.0.0.1/32  scram-sha-256\n")
	return c.writeFile(filepath.Join(c.DataDir, "pg_hba.conf"), b.String())
}

// includeConf makes postgresql.conf include pgtest.conf at its end, so that
// pgtest's settings (and then Options.ExtraConf) win.
func (c *Cluster) includeConf() error {
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by pgwarden's pgtest.\ninclude '%s'\n", confFileName)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

func (c *Cluster) writeConf(opts Options) error {
	settings := [][2]string{
		{"listen_addresses", c.Host},
		{"port", strconv.Itoa(c.Port)},
		{"unix_socket_directories", c.SocketDir},
		{"unix_socket_permissions", "0777"},
		{"max_connections", strconv.Itoa(opts.MaxConnections)},
		{"password_encryption", "scram-sha-256"},
		{"fsync", "off"},
		{"synchronous_commit", "off"},
		{"full_page_writes", "off"},
		{"shared_buffers", "32MB"},
		{"logging_collector", "off"},
		{"log_destination", "stderr"},
		{"log_min_messages", "warning"},
		{"log_line_prefix", "%m [%p] %q%u@%d "},
		{"ssl", "off"},
	}
	keys := make([]string, 0, len(opts.ExtraConf))
	for k := range opts.ExtraConf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		settings = append(settings, [2]string{k, opts.ExtraConf[k]})
	}
	var b strings.Builder
	b.WriteString("# Written by pgwarden's pgtest; Options.ExtraConf comes last.\n")
	for _, kv := range settings {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], confQuote(kv[1]))
	}
	return c.writeFile(filepath.Join(c.DataDir, confFileName), b.String())
}

// waitReady polls until the superuser can connect over TCP and run a query,
// or readyTimeout passes.
func (c *Cluster) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		lastErr = c.Exec(ctx, "SELECT 1")
		cancel()
		if lastErr == nil {
			return nil
		}
		time.Sleep(readyPollDelay)
	}
	return fmt.Errorf("pgtest: server on port %d not ready after %v: %w\n%s", c.Port, readyTimeout, lastErr, c.logTail())
}

// logTail returns the last lines of the server log, for error messages.
func (c *Cluster) logTail() string {
	f, err := os.Open(c.LogFile())
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 30 {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "--- " + c.LogFile() + " (tail) ---\n" + strings.Join(lines, "\n") + "\n"
}

// watchdog is a shell, in its own session, whose stdin is a pipe from this
// process. Stop writes a line to it and it exits; if this process dies first,
// the shell reads EOF and stops the server and removes the directory.
type watchdog struct {
	cmd *exec.Cmd
	w   io.WriteCloser
}

const watchdogScript = `trap '' HUP INT
if read -r _; then exit 0; fi
"$1" -D "$2" stop -m immediate -w >/dev/null 2>&1
rm -rf "$3"`

func startWatchdog(c *Cluster) (*watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "pgtest-watchdog",
		filepath.Join(c.BinDir, "pg_ctl"), c.DataDir, c.baseDir)
	cmd.Stdin = r // Stdout, Stderr: /dev/null, so `go test` does not wait for it
	cmd.Dir = c.baseDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if c.runAs != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.runAs.uid, Gid: c.runAs.gid, Groups: []uint32{}}
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("pgtest: start watchdog: %w", err)
	}
	r.Close()
	return &watchdog{cmd: cmd, w: w}, nil
}

func (wd *watchdog) dismiss() {
	_, _ = io.WriteString(wd.w, "stopped\n")
	_ = wd.w.Close()
	_ = wd.cmd.Wait()
}

func randomPassword() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// dsnQuote quotes a value for a libpq keyword/value connection string.
func dsnQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\r\f\v'\\") {
		return s
	}
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `\'`)
	return "'" + s + "'"
}

// sqlLiteral quotes a string as an SQL literal (standard_conforming_strings
// is on).
func sqlLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// confQuote quotes a postgresql.conf value.
func confQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
