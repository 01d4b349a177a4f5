package pooler_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// One throwaway PostgreSQL per package run, with these roles:
//
//	alice   SCRAM password "alice-pw"   (owner of database app)
//	bob     md5 password   "bob-pw"
//	carol   SCRAM password "carol-pw"   (userlist holds her SCRAM secret: passthrough)
var pg *pgtest.Cluster

func TestMain(m *testing.M) {
	opts := pgtest.Options{HBA: []string{
		"host all bob 127.0.0.1/32 md5",
	}}
	pgtest.Main(m, opts, func(c *pgtest.Cluster) int {
		pg = c
		ctx := context.Background()
		must := func(err error) {
			if err != nil {
				fmt.Fprintln(os.Stderr, "test setup:", err)
				os.Exit(1)
			}
		}
		must(c.CreateRole(ctx, "alice", "alice-pw", "scram-sha-256"))
		must(c.CreateRole(ctx, "bob", "bob-pw", "md5"))
		must(c.CreateRole(ctx, "carol", "carol-pw", "scram-sha-256"))
		must(c.CreateRole(ctx, "idler", "idler-pw", "scram-sha-256"))
		must(c.CreateRole(ctx, "writers", "writers-pw", "scram-sha-256"))
		must(c.Exec(ctx, "CREATE DATABASE app OWNER alice", "GRANT ALL ON DATABASE app TO bob, carol, idler, writers"))
		return m.Run()
	})
}

// instance is a pgwarden Server running in-process for one test.
type instance struct {
	srv     *pooler.Server
	port    int
	dir     string
	iniPath string
	logs    *syncBuffer
}

// userlist is the default auth file: plaintext for alice and bob, carol's
// real SCRAM secret (filled in at start), and an admin.
func defaultUserlist(t testing.TB) string {
	sec, err := pg.RoleSecret(context.Background(), "carol")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("\"alice\" \"alice-pw\"\n\"bob\" \"bob-pw\"\n\"carol\" \"%s\"\n\"admin\" \"admin-pw\"\n\"idler\" \"idler-pw\"\n\"writers\" \"writers-pw\"\n", sec)
}

// startPooler writes a pgbouncer.ini whose [pgbouncer] section is base
// settings plus extra lines, and starts pgwarden on a free port.
func startPooler(t testing.TB, extra string, opts ...func(*pooler.Options)) *instance {
	t.Helper()
	dir := t.TempDir()
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	userlist := defaultUserlist(t)
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist), 0o600); err != nil {
		t.Fatal(err)
	}
	ini := fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app
postgres = host=127.0.0.1 port=%d dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_file = %s
admin_users = admin
stats_users = stats
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
%s
`, pg.Port, pg.Port, port, dir, filepath.Join(dir, "userlist.txt"), extra)
	if v := os.Getenv("PGWARDEN_TEST_EVENT_LOOP"); v != "" {
		// make test runs the pooler's tests once more with the event
		// loop off (event_loop = off): both relays stay tested on any
		// machine.
		ini = strings.Replace(ini, "[pgbouncer]\n", "[pgbouncer]\nevent_loop = "+v+"\n", 1)
	}
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
		AuditLogger: slog.New(slog.NewJSONHandler(logs, nil)),
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
	srv.SetReloadHook(func() error {
		ncfg, err := config.Load(iniPath)
		if err != nil {
			return err
		}
		_, err = srv.Reload(ncfg)
		return err
	})
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
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Errorf("pgwarden did not stop within 10s; goroutines:\n%s", stacks.String())
		}
		if t.Failed() {
			t.Logf("pgwarden log:\n%s", logs.String())
		}
	})
	return &instance{srv: srv, port: port, dir: dir, iniPath: iniPath, logs: logs}
}

func (in *instance) dsn(user, password, db string, extra ...string) string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable connect_timeout=10", in.port, user, password, db)
	for _, e := range extra {
		s += " " + e
	}
	return s
}

func (in *instance) connect(t testing.TB, user, password, db string, extra ...string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, in.dsn(user, password, db, extra...))
	if err != nil {
		t.Fatalf("connect as %s to %s: %v", user, db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// rewriteConfig replaces the [pgbouncer] extra lines and reloads.
func (in *instance) reload(t *testing.T, extra string) {
	t.Helper()
	b, err := os.ReadFile(in.iniPath)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b) + "\n" + extra + "\n"
	if err := os.WriteFile(in.iniPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(in.iniPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
}

func runCmd(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// syncBuffer is a goroutine-safe log sink.
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

var _ io.Writer = (*syncBuffer)(nil)

func pgtestPgbench() string { return pgtest.PgbenchPath() }

func psqlPath() string { return pgtest.PsqlPath() }
