package pooler_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgwarden/pgwarden/authn/devidp"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// The replication tests run against a PostgreSQL of their own, with
// wal_level = logical: alice has the REPLICATION attribute and owns
// database app (table t); bob has not. pgtest's pg_hba.conf has
// replication lines (scram-sha-256) for physical connections; logical ones
// use the database lines.
type replEnv struct {
	pg *pgtest.Cluster
	// dbs are [databases] lines for it: rapp (app), replication (the
	// database name pg_basebackup and pg_receivewal send), norepl
	// (allow_replication=none) and logonly (allow_replication=logical).
	dbs string
}

func startReplPG(t *testing.T) *replEnv {
	t.Helper()
	c := pgtest.StartT(t, pgtest.Options{ExtraConf: map[string]string{
		"wal_level": "logical", "max_wal_senders": "10", "max_replication_slots": "10",
	}})
	ctx := context.Background()
	for _, err := range []error{
		c.CreateRole(ctx, "alice", "alice-pw", "scram-sha-256"),
		c.CreateRole(ctx, "bob", "bob-pw", "scram-sha-256"),
		c.Exec(ctx, "ALTER ROLE alice REPLICATION", "CREATE DATABASE app OWNER alice", "GRANT ALL ON DATABASE app TO bob"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	conn, err := c.Connect(ctx, "alice", "alice-pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (a int)"); err != nil {
		t.Fatal(err)
	}
	dbs := fmt.Sprintf(`[databases]
rapp = host=127.0.0.1 port=%[1]d dbname=app
replication = host=127.0.0.1 port=%[1]d dbname=postgres
norepl = host=127.0.0.1 port=%[1]d dbname=app allow_replication=none
logonly = host=127.0.0.1 port=%[1]d dbname=app allow_replication=logical
`, c.Port)
	return &replEnv{pg: c, dbs: dbs}
}

// exec runs SQL directly on the replication tests' PostgreSQL, in app.
func (e *replEnv) exec(t *testing.T, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := e.pg.Connect(ctx, e.pg.SuperUser, e.pg.SuperPassword, "app")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// walSenders counts the walsender processes of the PostgreSQL.
func (e *replEnv) walSenders(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := e.pg.Connect(ctx, e.pg.SuperUser, e.pg.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// pgBin returns the path of a PostgreSQL client program, skipping the
// test when it is not installed.
func (e *replEnv) pgBin(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(e.pg.BinDir, name)
	if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Skipf("%s is not installed", name)
	return ""
}

func replConnect(t *testing.T, in *instance, user, pw, db, mode string, extra ...string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, in.dsn(user, pw, db, append([]string{"replication=" + mode}, extra...)...))
	if err != nil {
		t.Fatalf("replication=%s connection to %s: %v", mode, db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func execText(t *testing.T, conn *pgconn.PgConn, sql string) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var out [][]string
	for _, r := range res {
		for _, row := range r.Rows {
			var s []string
			for _, v := range row {
				s = append(s, string(v))
			}
			out = append(out, s)
		}
	}
	return out
}

// rowsWhere returns the console rows whose column col is val.
func rowsWhere(rows []map[string]string, col, val string) []map[string]string {
	var out []map[string]string
	for _, r := range rows {
		if r[col] == val {
			out = append(out, r)
		}
	}
	return out
}

func TestReplication(t *testing.T) {
	env := startReplPG(t)
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nlog_connections = 1\n"+env.dbs)
	dsn := func(db string, extra ...string) string {
		s := fmt.Sprintf("host=127.0.0.1 port=%d user=alice password=alice-pw dbname=%s sslmode=disable", in.port, db)
		for _, e := range extra {
			s += " " + e
		}
		return s
	}

	t.Run("PhysicalBaseBackup", func(t *testing.T) {
		// pg_basebackup -X stream: a replication connection for the
		// base backup and a second one streaming WAL beside it. (Both
		// send database "replication".)
		dir := filepath.Join(t.TempDir(), "backup")
		out, err := runCmd(t, 2*time.Minute, nil, env.pgBin(t, "pg_basebackup"), "-d", dsn("app"), "-D", dir, "-X", "stream", "-c", "fast", "--no-sync", "-w")
		if err != nil {
			t.Fatalf("pg_basebackup: %v\n%s", err, out)
		}
		for _, f := range []string{"PG_VERSION", "backup_label", "global/pg_control"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("backup lacks %s: %v", f, err)
			}
		}
		wal, _ := os.ReadDir(filepath.Join(dir, "pg_wal"))
		if len(wal) == 0 {
			t.Fatal("backup has no WAL")
		}
		if !strings.Contains(in.logs.String(), `msg="login attempt" db=replication user=alice client=127.0.0.1`) ||
			!strings.Contains(in.logs.String(), "replication=yes") {
			t.Fatalf("no login attempt logged with replication=yes:\n%s", in.logs.String())
		}
	})

	t.Run("PhysicalReceiveWAL", func(t *testing.T) {
		env.exec(t, "INSERT INTO t SELECT generate_series(1, 1000)")
		ctx := context.Background()
		conn, err := env.pg.Connect(ctx, env.pg.SuperUser, env.pg.SuperPassword, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		var lsn string
		err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		out, err := runCmd(t, time.Minute, nil, env.pgBin(t, "pg_receivewal"), "-d", dsn("replication"), "-D", dir, "--endpos="+lsn, "--no-loop", "-w")
		if err != nil {
			t.Fatalf("pg_receivewal: %v\n%s", err, out)
		}
		files, _ := os.ReadDir(dir)
		if len(files) == 0 {
			t.Fatal("pg_receivewal wrote nothing")
		}
	})

	t.Run("PhysicalStartupParameters", func(t *testing.T) {
		// The client's parameters and raw options reach the walsender
		// in its startup packet (it accepts no SET); enable_seqscan is
		// not one pgwarden tracks, and for an ordinary connection
		// options with it would be refused.
		c := replConnect(t, in, "alice", "alice-pw", "replication", "true", "application_name=abc", "options='-c enable_seqscan=off'")
		if got := execText(t, c, "SHOW enable_seqscan"); len(got) != 1 || got[0][0] != "off" {
			t.Fatalf("enable_seqscan: %v", got)
		}
		if got := execText(t, c, "SHOW application_name"); len(got) != 1 || got[0][0] != "abc" {
			t.Fatalf("application_name: %v", got)
		}
		id := execText(t, c, "IDENTIFY_SYSTEM")
		if len(id) != 1 || len(id[0]) != 4 || id[0][3] != "" {
			t.Fatalf("IDENTIFY_SYSTEM on a physical connection: %v", id)
		}
		// A physical walsender runs no SQL: PostgreSQL's own error.
		_, err := c.Exec(context.Background(), "SELECT 1").ReadAll()
		if pgCode(err) != "0A000" {
			t.Fatalf("SQL on a physical connection: %v", err)
		}
	})

	t.Run("LogicalIdentifySystem", func(t *testing.T) {
		out, err := runCmd(t, time.Minute, nil, psqlPath(), dsn("rapp", "replication=database"), "-Atc", "IDENTIFY_SYSTEM")
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if f := strings.Split(strings.TrimSpace(out), "|"); len(f) != 4 || f[3] != "app" {
			t.Fatalf("IDENTIFY_SYSTEM: %q", out)
		}
	})

	t.Run("LogicalStreaming", func(t *testing.T) {
		recv := env.pgBin(t, "pg_recvlogical")
		// The slot is made through pgwarden too (CREATE_REPLICATION_SLOT).
		if out, err := runCmd(t, time.Minute, nil, recv, "-d", dsn("rapp"), "--slot=s1", "--create-slot", "-P", "test_decoding", "-w"); err != nil {
			t.Fatalf("pg_recvlogical --create-slot: %v\n%s", err, out)
		}
		r := startRecvLogical(t, recv, dsn("rapp"), "s1")
		// Changes made directly on PostgreSQL arrive through pgwarden.
		env.exec(t, "INSERT INTO t VALUES (4242)")
		r.waitLines(t, "INSERT: a[integer]:4242")

		admin, err := simpleConnect(in, "admin", "admin-pw", "pgbouncer")
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(context.Background())
		cl := rowsWhere(showRows(t, admin, "SHOW CLIENTS"), "replication", "logical")
		if len(cl) != 1 || cl[0]["database"] != "rapp" || cl[0]["state"] != "active" || cl[0]["link"] == "" {
			t.Fatalf("SHOW CLIENTS: logical replication client %v", cl)
		}
		sv := rowsWhere(showRows(t, admin, "SHOW SERVERS"), "replication", "logical")
		if len(sv) != 1 || sv[0]["ptr"] != cl[0]["link"] || sv[0]["link"] != cl[0]["ptr"] || sv[0]["state"] != "active" {
			t.Fatalf("SHOW SERVERS: logical replication server %v (client %v)", sv, cl)
		}
		// RECONNECT closes a replication connection at once, with a FATAL
		// between two messages of the stream.
		showRows(t, admin, "RECONNECT rapp")
		out, err := r.wait(t)
		if err == nil || !strings.Contains(out, "terminating replication connection due to administrator command") {
			t.Fatalf("pg_recvlogical after RECONNECT: %v\n%s", err, out)
		}
		waitFor(t, 20*time.Second, "the walsender to exit", func() bool { return env.walSenders(t) == 0 })
		waitFor(t, 20*time.Second, "the replication server to leave SHOW SERVERS", func() bool {
			return len(rowsWhere(showRows(t, admin, "SHOW SERVERS"), "replication", "logical")) == 0
		})
	})

	t.Run("Cancel", func(t *testing.T) {
		c := replConnect(t, in, "alice", "alice-pw", "rapp", "database")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := c.Exec(ctx, "SELECT pg_sleep(60)").ReadAll()
			done <- err
		}()
		waitFor(t, 20*time.Second, "pg_sleep to run", func() bool {
			conn, err := env.pg.Connect(ctx, env.pg.SuperUser, env.pg.SuperPassword, "postgres")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var n int
			_ = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'").Scan(&n)
			return n == 1
		})
		if err := c.CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; pgCode(err) != "57014" {
			t.Fatalf("cancelled query: %v", err)
		}
		if id := execText(t, c, "IDENTIFY_SYSTEM"); len(id) != 1 || id[0][3] != "app" {
			t.Fatalf("IDENTIFY_SYSTEM after the cancel: %v", id)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		connErr := func(user, pw, db string, extra ...string) error {
			c, err := pgconn.Connect(ctx, in.dsn(user, pw, db, extra...))
			if err == nil {
				c.Close(ctx)
			}
			return err
		}
		for _, tc := range []struct {
			db, mode, code, msg string
		}{
			{"norepl", "database", "28000", `logical replication connections to database "norepl" are not allowed (allow_replication = none)`},
			{"norepl", "true", "28000", `physical replication connections to database "norepl" are not allowed (allow_replication = none)`},
			{"logonly", "on", "28000", `physical replication connections to database "logonly" are not allowed (allow_replication = logical)`},
			{"rapp", "maybe", "22023", `invalid value for parameter "replication": "maybe"`},
			{"rapp", "Database", "22023", `invalid value for parameter "replication": "Database"`},
			{"pgbouncer", "database", "0A000", "the admin console does not accept replication connections"},
		} {
			err := connErr("alice", "alice-pw", tc.db, "replication="+tc.mode)
			if pgCode(err) != tc.code || pgMessage(err) != tc.msg {
				t.Errorf("replication=%s to %s: %v", tc.mode, tc.db, err)
			}
			var pe *pgconn.PgError
			if tc.code == "22023" && (!errors.As(err, &pe) || !strings.Contains(pe.Hint, `"database"`)) {
				t.Errorf("replication=%s: no hint in %v", tc.mode, err)
			}
		}
		// The database's refusal comes after the sign-in, so that it
		// tells nothing to someone without the password.
		if err := connErr("alice", "wrong", "norepl", "replication=database"); pgCode(err) != "28P01" {
			t.Errorf("wrong password: %v", err)
		}
		// A database accepting logical replication still takes them,
		// and false values mean an ordinary connection.
		replConnect(t, in, "alice", "alice-pw", "logonly", "database").Close(ctx)
		for _, v := range []string{"off", "0", "no", "f", "FALSE"} {
			c, err := pgconn.Connect(ctx, in.dsn("alice", "alice-pw", "norepl", "replication="+v))
			if err != nil {
				t.Fatalf("replication=%s: %v", v, err)
			}
			if got := execText(t, c, "SELECT 1"); len(got) != 1 {
				t.Fatalf("replication=%s: %v", v, got)
			}
			c.Close(ctx)
		}
		// A role without REPLICATION: PostgreSQL's refusal is the
		// client's login error.
		if err := connErr("bob", "bob-pw", "rapp", "replication=database"); pgCode(err) != "42501" {
			t.Errorf("bob: %v", err)
		}
	})

	t.Run("TransactionPoolUndisturbed", func(t *testing.T) {
		// A logical stream holds its own server connection while pooled
		// clients of the same pool (transaction mode) share theirs;
		// what they write arrives in the stream.
		recv := env.pgBin(t, "pg_recvlogical")
		if out, err := runCmd(t, time.Minute, nil, recv, "-d", dsn("rapp"), "--slot=s2", "--create-slot", "-P", "test_decoding", "-w"); err != nil {
			t.Fatalf("pg_recvlogical --create-slot: %v\n%s", err, out)
		}
		r := startRecvLogical(t, recv, dsn("rapp"), "s2")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				mode := "default_query_exec_mode=cache_statement"
				if i%2 == 1 {
					mode = "default_query_exec_mode=simple_protocol"
				}
				ctx := context.Background()
				conn, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "rapp", mode))
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close(ctx)
				for j := 0; j < 25; j++ {
					err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
						_, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", 10000+i*100+j)
						return err
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var wants []string
		for i := 0; i < 4; i++ {
			for j := 0; j < 25; j++ {
				wants = append(wants, fmt.Sprintf("INSERT: a[integer]:%d", 10000+i*100+j))
			}
		}
		r.waitLines(t, wants...)
		admin, err := simpleConnect(in, "admin", "admin-pw", "pgbouncer")
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(context.Background())
		sv := showRows(t, admin, "SHOW SERVERS")
		if n := len(rowsWhere(sv, "replication", "logical")); n != 1 {
			t.Fatalf("SHOW SERVERS: %d logical servers: %v", n, sv)
		}
		for _, p := range showRows(t, admin, "SHOW POOLS") {
			if p["database"] == "rapp" && p["user"] == "alice" && p["sv_active"] != "1" {
				t.Fatalf("SHOW POOLS rapp: %v (sv_active should be the stream's server only)", p)
			}
		}
		r.stop(t)
		waitFor(t, 20*time.Second, "the walsender to exit", func() bool { return env.walSenders(t) == 0 })
	})

	t.Run("Entra", func(t *testing.T) {
		// A replication client may sign in with an Entra token like any
		// other.
		idp, tid := entraIdP(t)
		ein, _ := entraPooler(t, idp.BaseURL(), tid, env.dbs)
		tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID, UPN: "alice@contoso.com"})
		c := replConnect(t, ein, "alice", tok, "rapp", "database")
		if id := execText(t, c, "IDENTIFY_SYSTEM"); len(id) != 1 || id[0][3] != "app" {
			t.Fatalf("IDENTIFY_SYSTEM: %v", id)
		}
	})
}

// TestReplicationHBA: with auth_type = hba the replication keyword matches
// physical replication connections only, as in PostgreSQL; logical ones
// match their database's rules.
func TestReplicationHBA(t *testing.T) {
	env := startReplPG(t)
	dir := t.TempDir()
	hba := filepath.Join(dir, "hba.conf")
	rules := "host replication alice 127.0.0.1/32 scram-sha-256\nhost rapp alice 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hba, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	in := startPooler(t, "auth_type = hba\nauth_hba_file = "+hba+"\n"+env.dbs)
	c := replConnect(t, in, "alice", "alice-pw", "rapp", "true")
	if id := execText(t, c, "IDENTIFY_SYSTEM"); len(id) != 1 {
		t.Fatalf("IDENTIFY_SYSTEM: %v", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, extra := range []string{"replication=database", "replication=false"} {
		_, err := pgconn.Connect(ctx, in.dsn("alice", "alice-pw", "rapp", extra))
		if pgCode(err) != "28000" || pgMessage(err) != "login rejected" {
			t.Fatalf("%s: %v", extra, err)
		}
	}
}

// TestReplicationLimits: a replication connection counts against
// max_client_conn and max_db_connections (and is shown in SHOW
// DATABASES); it takes no pooled server's place, but idle ones are closed
// to make room for it.
func TestReplicationLimits(t *testing.T) {
	env := startReplPG(t)
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nquery_wait_timeout = 1\nmax_client_conn = 2\n"+env.dbs+
		fmt.Sprintf("limited = host=127.0.0.1 port=%d dbname=app max_db_connections=1\n", env.pg.Port))
	admin, err := simpleConnect(in, "admin", "admin-pw", "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	current := func() string {
		for _, d := range showRows(t, admin, "SHOW DATABASES") {
			if d["name"] == "limited" {
				return d["current_connections"]
			}
		}
		return ""
	}
	// A pooled client's idle server is closed to make room for the
	// replication connection.
	pooled := in.connect(t, "alice", "alice-pw", "limited")
	if queryInt(t, pooled, "SELECT 1") != 1 || current() != "1" {
		t.Fatalf("current_connections %s", current())
	}
	c := replConnect(t, in, "alice", "alice-pw", "limited", "database")
	if current() != "1" {
		t.Fatalf("current_connections with the replication connection: %s", current())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := pgconn.Connect(ctx, in.dsn("alice", "alice-pw", "rapp", "replication=database")); pgCode(err) != "53300" {
		t.Fatalf("a third client with max_client_conn = 2: %v", err)
	}
	// Now the pooled client waits, in vain.
	_, err = pooled.Exec(context.Background(), "SELECT 1")
	if !strings.Contains(pgMessage(err), "query_wait_timeout") {
		t.Fatalf("pooled client while the database is full: %v", err)
	}
	c.Close(context.Background())
	waitFor(t, 20*time.Second, "the replication connection to close", func() bool {
		return len(rowsWhere(showRows(t, admin, "SHOW SERVERS"), "replication", "logical")) == 0
	})
	// A pooled client gets in again. (The server that the timed-out
	// client's acquisition went on opening in the background may take the
	// freed slot first, so on a loaded machine one try may still hit the
	// 1 s query_wait_timeout.)
	waitFor(t, 20*time.Second, "a pooled client to get a server after the replication connection left", func() bool {
		pooled2, err := simpleConnect(in, "alice", "alice-pw", "limited")
		if err != nil {
			return false
		}
		defer pooled2.Close(context.Background())
		var n int
		return pooled2.QueryRow(context.Background(), "SELECT 2").Scan(&n) == nil && n == 2
	})
}

// TestReplicationClosed: KILL, and a RELOAD after which the database no
// longer accepts the connection's kind of replication, end a replication
// client with a FATAL it can read; other replication clients stay.
func TestReplicationClosed(t *testing.T) {
	env := startReplPG(t)
	in := startPooler(t, "auth_type = scram-sha-256\n"+env.dbs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fatal := func(c *pgconn.PgConn) *pgconn.PgError {
		t.Helper()
		_, err := c.ReceiveMessage(ctx)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Severity != "FATAL" {
			t.Fatalf("expected a FATAL, got %v", err)
		}
		return pe
	}
	logical := replConnect(t, in, "alice", "alice-pw", "rapp", "database")
	physical := replConnect(t, in, "alice", "alice-pw", "rapp", "true")
	in.reload(t, fmt.Sprintf("[databases]\nrapp = host=127.0.0.1 port=%d dbname=app allow_replication=physical", env.pg.Port))
	if pe := fatal(logical); pe.Code != "28000" || !strings.Contains(pe.Message, "allow_replication = physical") {
		t.Fatalf("logical connection after the RELOAD: %v", pe)
	}
	if id := execText(t, physical, "IDENTIFY_SYSTEM"); len(id) != 1 {
		t.Fatalf("physical connection after the RELOAD: %v", id)
	}

	admin, err := simpleConnect(in, "admin", "admin-pw", "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	showRows(t, admin, "KILL rapp")
	if pe := fatal(physical); pe.Code != "57P01" || pe.Message != "database removed" {
		t.Fatalf("after KILL: %v", pe)
	}
	waitFor(t, 20*time.Second, "the walsenders to exit", func() bool { return env.walSenders(t) == 0 })
}

// recvLogical is a running pg_recvlogical --start.
type recvLogical struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	done   chan error
}

func startRecvLogical(t *testing.T, bin, dsn, slot string) *recvLogical {
	t.Helper()
	cmd := exec.Command(bin, "-d", dsn, "--slot="+slot, "--start", "-f", "-", "--no-loop", "-s", "1", "-F", "1", "-w")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &recvLogical{cmd: cmd, lines: make(chan string, 1000), stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
		close(r.lines)
		r.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for range r.lines {
		}
	})
	return r
}

// waitLines waits for lines of output ending with each of wants, in any
// order.
func (r *recvLogical) waitLines(t *testing.T, wants ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, w := range wants {
		left[w] = true
	}
	timeout := time.After(30 * time.Second)
	for len(left) > 0 {
		select {
		case l, ok := <-r.lines:
			if !ok {
				t.Fatalf("pg_recvlogical ended before %v: %s", left, r.stderr.String())
			}
			for w := range left {
				if strings.HasSuffix(l, w) {
					delete(left, w)
				}
			}
		case <-timeout:
			t.Fatalf("no %v from pg_recvlogical: %s", left, r.stderr.String())
		}
	}
}

// wait waits for pg_recvlogical to end by itself and returns its stderr.
func (r *recvLogical) wait(t *testing.T) (string, error) {
	t.Helper()
	go func() {
		for range r.lines {
		}
	}()
	select {
	case err := <-r.done:
		return r.stderr.String(), err
	case <-time.After(30 * time.Second):
		t.Fatalf("pg_recvlogical did not end: %s", r.stderr.String())
	}
	return "", nil
}

// stop ends pg_recvlogical as a user would (SIGINT), which it takes as a
// clean end.
func (r *recvLogical) stop(t *testing.T) {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	if out, err := r.wait(t); err != nil {
		t.Fatalf("pg_recvlogical after SIGINT: %v\n%s", err, out)
	}
}
