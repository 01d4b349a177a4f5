package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// poolerKind is one pooler program under test.
type poolerKind struct {
	name       string // "pgwarden", "pgwarden-goroutines", "pgbouncer", "pgbouncer-upstream"
	label      string // for the report, e.g. "PgBouncer 1.18.0"
	binary     string
	version    string
	isPgwarden bool
	// ownSettings are lines of the [pgbouncer] section that this kind
	// alone gets (pgwarden's event_loop = off). The harness's check that
	// the poolers read the same file leaves them out.
	ownSettings string
	// selectOnly: the kind runs in the select-only section only.
	selectOnly bool
}

// goroutineKindName is pgwarden with event_loop = off: the same binary,
// relaying on goroutines, measured in the same rounds as with its event
// loop, so that the comparison of the two is free of the machine's drift
// between runs.
const goroutineKindName = "pgwarden-goroutines"

func goroutineKind(pw *poolerKind) *poolerKind {
	return &poolerKind{name: goroutineKindName, label: "pgwarden, event_loop = off", binary: pw.binary, version: pw.version,
		isPgwarden: true, ownSettings: "event_loop = off\n", selectOnly: true}
}

// withOwnSettings adds kind's own settings to ini, at the top of its
// [pgbouncer] section.
func withOwnSettings(ini string, kind *poolerKind) string {
	if kind.ownSettings == "" {
		return ini
	}
	return strings.Replace(ini, "[pgbouncer]\n", "[pgbouncer]\n"+kind.ownSettings, 1)
}

// iniOptions are what differs between the pooler configurations of the
// sections; every pooler of a section gets the same options.
type iniOptions struct {
	authType string // scram-sha-256 or plain
	tls      bool   // client_tls_sslmode = require
	// entra, when set, adds pgwarden's own [entra] and [entra_principals]
	// sections (PgBouncer refuses them), so that the bench role signs in
	// with an Entra access token; only pgwarden runs with it.
	entra *entraSetup
	// extra is appended to pgwarden's file (the reliability run's
	// [metrics] section); pgwarden only.
	extra string
}

func (o iniOptions) String() string {
	s := o.authType
	if o.entra != nil {
		s = "Entra tokens (auth_type " + s + " for the rest)"
	}
	if o.tls {
		s += ", TLS"
	}
	return s
}

// password is what the bench user signs in with: the Entra token when
// tokens are configured, else the password.
func (o iniOptions) password() string {
	if o.entra != nil {
		return o.entra.token
	}
	return benchPassword
}

// target is one thing pgbench connects to: a pooler instance, or
// PostgreSQL directly.
type target struct {
	name   string // "pgwarden", "pgbouncer", "pgbouncer-upstream", "direct"
	port   int
	pooler *poolerInstance // nil for direct
}

// poolerInstance is a running pooler with its own directory and config.
type poolerInstance struct {
	kind    *poolerKind
	dir     string
	port    int
	iniPath string
	ini     string
	opts    iniOptions
	proc    *child
}

// iniText is the pgbouncer.ini every pooler reads: byte for byte the same
// for pgwarden and PgBouncer apart from the port and the directory. With
// opts.entra (pgwarden only) it ends with the [entra] and
// [entra_principals] sections, and without them (sharedINI) it is the file
// PgBouncer reads with the same auth_type and TLS.
func iniText(pgPort, port, maxClientConn int, dir string, opts iniOptions, tls tlsFiles) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[databases]
%s = host=127.0.0.1 port=%d dbname=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = %s
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = %d
server_tls_sslmode = disable
logfile = %s
`, benchDB, pgPort, benchDB, port, opts.authType, filepath.Join(dir, "userlist.txt"), poolSize, maxClientConn, filepath.Join(dir, "pooler.log"))
	if opts.tls {
		fmt.Fprintf(&b, "client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n", tls.cert, tls.key)
	}
	if e := opts.entra; e != nil {
		b.WriteString(e.iniSections(opts.tls))
	}
	b.WriteString(opts.extra)
	return b.String()
}

// pgwardenOnlySections are the pgbouncer.ini sections of pgwarden's own.
var pgwardenOnlySections = []string{"entra", "entra_principals", "metrics"}

// sharedINI removes pgwarden's own sections (and the blank lines before
// them) from ini: what is left is what PgBouncer can read too.
func sharedINI(ini string) string {
	var out []string
	skip := false
	for _, line := range strings.SplitAfter(ini, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
			skip = slices.Contains(pgwardenOnlySections, strings.ToLower(strings.TrimSpace(t[1:len(t)-1])))
			if skip {
				for len(out) > 0 && strings.TrimSpace(out[len(out)-1]) == "" {
					out = out[:len(out)-1]
				}
			}
		}
		if !skip && line != "" {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// userlistText holds the bench user's plain password, which serves both
// auth_type plain and scram-sha-256 (and lets the pooler sign in to
// PostgreSQL with SCRAM).
func userlistText() string {
	return fmt.Sprintf("%q %q\n", benchUser, benchPassword)
}

// startPooler starts one pooler with the given options, in its own
// directory under the workspace, on a free port, and waits until a client
// can sign in through it and run a query.
func (h *harness) startPooler(ctx context.Context, kind *poolerKind, label string, opts iniOptions, env []string) (*poolerInstance, error) {
	dir := filepath.Join(h.ws.dir, label+"-"+kind.name)
	if err := h.ws.mkdirOwned(dir); err != nil {
		return nil, err
	}
	if err := h.ws.writeOwned(filepath.Join(dir, "userlist.txt"), userlistText(), 0o600); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p := &poolerInstance{kind: kind, dir: dir, port: port, opts: opts,
			iniPath: filepath.Join(dir, "pgbouncer.ini"),
			ini:     withOwnSettings(iniText(h.pg.Port, port, h.maxClientConn, dir, opts, h.tls), kind)}
		if err := h.ws.writeOwned(p.iniPath, p.ini, 0o600); err != nil {
			return nil, err
		}
		// -q: log to the logfile only, for both poolers.
		cmd := h.ws.serverCmd(kind.binary, "-q", p.iniPath)
		cmd.Dir = dir
		penv := env
		if kind.isPgwarden && h.cfg.gomaxprocs > 0 {
			penv = append(penv[:len(penv):len(penv)], "GOMAXPROCS="+strconv.Itoa(h.cfg.gomaxprocs))
		}
		cmd.Env = cleanEnv(penv...)
		p.proc, err = startChild(label+"/"+kind.name, cmd, filepath.Join(dir, "stderr.log"))
		if err != nil {
			return nil, err
		}
		err = waitReady(ctx, port, opts.tls, opts.password(), p.proc)
		if err == nil {
			return p, nil
		}
		_ = p.proc.stop(syscall.SIGKILL, time.Second)
		tail := p.proc.logTail() + "\n" + fileTail(filepath.Join(dir, "pooler.log"), 10)
		lastErr = fmt.Errorf("%s (%s): %w\n%s", kind.name, label, err, tail)
		if !strings.Contains(tail, "in use") && !strings.Contains(tail, "bind") {
			break
		}
	}
	return nil, lastErr
}

// stop stops the pooler with SIGINT, which both poolers answer by waiting
// until no server connection is in use (none is, at this point) and
// exiting 0. (PgBouncer before 1.23 takes SIGTERM as an immediate shutdown
// and exits 1.)
func (p *poolerInstance) stop() error {
	return p.proc.stop(syscall.SIGINT, 15*time.Second)
}

// connString is a libpq/pgx keyword=value string for the bench user.
func connString(port int, tls bool) string {
	mode := "disable"
	if tls {
		mode = "require"
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=%s connect_timeout=10",
		port, benchUser, benchPassword, benchDB, mode)
}

// waitReady polls, for at most 30 s, until the bench user can sign in on
// port with password (or an Entra token) and run a query. It gives up at
// once if proc exits. With a token, this first sign-in is the one that
// validates it in full (key set fetched, signature checked); the measured
// sign-ins then find it in pgwarden's validated-token cache.
func waitReady(ctx context.Context, port int, tls bool, password string, proc *child) error {
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if proc != nil && proc.exited() {
			return fmt.Errorf("exited (%v) before accepting connections", proc.err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		cc, err := pgconn.ParseConfig(connString(port, tls))
		if err != nil {
			cancel()
			return err
		}
		cc.Password = password
		conn, err := pgconn.ConnectConfig(cctx, cc)
		if err == nil {
			_, err = conn.Exec(cctx, "SELECT 1").ReadAll()
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready on port %d after 30s: %w", port, lastErr)
}

func freePort() (int, error) { return pgtest.FreePort() }

// rss reads the pooler's resident memory in KiB.
func (p *poolerInstance) rss() (int64, error) { return procRSS(p.proc.pid()) }

var rePGPort = regexp.MustCompile(`host=127\.0\.0\.1 port=\d+ `)

// normalizeINI replaces an instance's port and paths with $PORT, $DIR and
// $WORK, and PostgreSQL's port with $PGPORT, so that the configurations of
// the poolers can be compared and shown once.
func normalizeINI(ini, dir string, port int, work string) string {
	ini = strings.ReplaceAll(ini, dir, "$DIR")
	ini = strings.ReplaceAll(ini, work, "$WORK")
	ini = rePGPort.ReplaceAllLiteralString(ini, "host=127.0.0.1 port=$PGPORT ")
	return strings.Replace(ini, fmt.Sprintf("listen_port = %d\n", port), "listen_port = $PORT\n", 1)
}
