package pooler_test

import (
	"context"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

// consoleErr runs q and returns the error's SQLSTATE and message ("" when
// it succeeded).
func consoleErr(conn *pgx.Conn, q string) (string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, q)
	if err == nil {
		return "", ""
	}
	return pgCode(err), pgMessage(err)
}

func consoleOK(t *testing.T, conn *pgx.Conn, q string) {
	t.Helper()
	if code, msg := consoleErr(conn, q); msg != "" {
		t.Fatalf("%s: %s %s", q, code, msg)
	}
}

func stateOf(t *testing.T, admin *pgx.Conn) string {
	t.Helper()
	_, _, rows := consoleResult(t, admin, "SHOW STATE")
	var out []string
	for _, r := range rows {
		if r["value"] == "yes" {
			out = append(out, r["key"])
		}
	}
	return strings.Join(out, ",")
}

// TestConsoleErrorTexts checks PgBouncer's error texts and who may run
// what: stats users only SHOW (not FDS), and the argument checks that come
// before the rights check.
func TestConsoleErrorTexts(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\nstats_users = alice")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	stats := in.connect(t, "alice", "alice-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	for _, q := range []string{"PAUSE", "PAUSE app", "RESUME", "SUSPEND", "RELOAD", "RECONNECT", "KILL app", "KILL",
		"KILL_CLIENT 1", "WAIT_CLOSE", "DISABLE app", "ENABLE app", "SHUTDOWN", "SHUTDOWN WAIT_FOR_CLIENTS",
		"SET default_pool_size = 5", "SHOW FDS"} {
		if code, msg := consoleErr(stats, q); code != "08P01" || msg != "admin access needed" {
			t.Errorf("%s as a stats user: %s %q", q, code, msg)
		}
	}
	// What a stats user may do.
	for _, q := range []string{"SHOW POOLS", "SHOW HELP", "SHOW CONFIG", "SET client_encoding = 'UTF8'", "SHOW SIGNINS"} {
		if code, msg := consoleErr(stats, q); msg != "" {
			t.Errorf("%s as a stats user: %s %q", q, code, msg)
		}
	}
	for q, want := range map[string]string{
		"bogus":                            "invalid command 'bogus', use SHOW HELP;",
		"SHOW nope":                        "invalid command 'SHOW nope', use SHOW HELP;",
		"SUSPEND now":                      "invalid command 'SUSPEND now', use SHOW HELP;",
		"RELOAD app":                       "invalid command 'RELOAD app', use SHOW HELP;",
		"SHUTDOWN later":                   "invalid command 'SHUTDOWN later', use SHOW HELP;",
		"show pools; show x":               "invalid command 'show pools; show x', use SHOW HELP;",
		"PAUSE pgbouncer":                  "cannot pause admin db: pgbouncer",
		"KILL pgbouncer":                   "cannot kill admin db: pgbouncer",
		"RECONNECT pgbouncer":              "cannot reconnect admin db: pgbouncer",
		"WAIT_CLOSE pgbouncer":             "cannot wait in admin db: pgbouncer",
		"DISABLE pgbouncer":                "cannot disable admin db: pgbouncer",
		"ENABLE pgbouncer":                 "cannot enable admin db: pgbouncer",
		"PAUSE nosuch":                     "no such database: nosuch",
		"KILL nosuch":                      "no such database: nosuch",
		"RESUME nosuch":                    "no such database: nosuch",
		"RESUME":                           "pooler is not paused/suspended",
		"RESUME app":                       "database app is not paused",
		"KILL_CLIENT x":                    "invalid client pointer supplied",
		"PAUSE " + strings.Repeat("x", 64): "bad arguments",
	} {
		// A stats user gets the same syntax errors.
		for who, conn := range map[string]*pgx.Conn{"admin": admin, "stats": stats} {
			if who == "stats" && !strings.HasPrefix(want, "invalid command") {
				continue
			}
			if code, msg := consoleErr(conn, q); code != "08P01" || msg != want {
				t.Errorf("%s (%s): %s %q, want %q", q, who, code, msg, want)
			}
		}
	}
	// The connection stays usable after errors.
	consoleResult(t, admin, "SHOW VERSION")
}

// TestConsoleSuspend: SUSPEND stops reading from clients (the next request
// of a connected client, and new clients' startup) until RESUME, lets the
// console work, and ends when the console that ran it disconnects.
func TestConsoleSuspend(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	ctx := context.Background()
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, app, "SELECT 1")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	consoleOK(t, admin, "SUSPEND")
	if st := stateOf(t, admin); st != "suspended" {
		t.Fatalf("SHOW STATE after SUSPEND: %s", st)
	}
	for q, want := range map[string]string{
		"SUSPEND":   "already suspended/paused",
		"PAUSE":     "already suspended/paused",
		"KILL app":  "already suspended/paused",
		"PAUSE app": "already suspended/paused",
	} {
		if _, msg := consoleErr(admin, q); msg != want {
			t.Errorf("%s while suspended: %q", q, msg)
		}
	}
	// Another console still gets in.
	other := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	consoleResult(t, other, "SHOW CLIENTS")
	blockedUntil(t, "a query while suspended", func() error { _, err := app.Exec(ctx, "SELECT 1"); return err }, func() {
		consoleOK(t, admin, "RESUME")
	})
	if st := stateOf(t, admin); st != "active" {
		t.Fatalf("SHOW STATE after RESUME: %s", st)
	}

	consoleOK(t, admin, "SUSPEND")
	blockedUntil(t, "a new client while suspended", func() error {
		c, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app"))
		if err == nil {
			c.Close(ctx)
		}
		return err
	}, func() { consoleOK(t, admin, "RESUME") })

	// The console that ran SUSPEND leaves: the pooler resumes.
	consoleOK(t, other, "SUSPEND")
	blockedUntil(t, "a query while suspended", func() error { _, err := app.Exec(ctx, "SELECT 1"); return err }, func() {
		other.Close(ctx)
	})
	waitFor(t, 5*time.Second, "the pooler to resume", func() bool { return stateOf(t, admin) == "active" })

	// SUSPEND with a paused database is refused, as in PgBouncer.
	consoleOK(t, admin, "PAUSE app")
	if _, msg := consoleErr(admin, "SUSPEND"); msg != "cannot suspend with paused databases" {
		t.Errorf("SUSPEND with app paused: %q", msg)
	}
	consoleOK(t, admin, "RESUME app")
}

// TestConsoleKill: KILL db drops the database's clients, with a query in
// progress, and its server connections at once, and pauses it until
// RESUME.
func TestConsoleKill(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	ctx := context.Background()
	busy := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	idle := in.connect(t, "bob", "bob-pw", "app", "default_query_exec_mode=exec")
	other := in.connect(t, "alice", "alice-pw", "postgres", "default_query_exec_mode=exec")
	queryInt(t, idle, "SELECT 1")
	queryInt(t, other, "SELECT 1")
	queryInt(t, busy, "SELECT 1")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	direct, err := pg.Connect(ctx, "alice", "alice-pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)

	sleeping := make(chan error, 1)
	go func() { _, err := busy.Exec(ctx, "SELECT pg_sleep(60)"); sleeping <- err }()
	waitFor(t, 10*time.Second, "pg_sleep to run", func() bool {
		return queryInt(t, direct, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'") == 1
	})
	start := time.Now()
	consoleOK(t, admin, "KILL app")
	select {
	case err := <-sleeping:
		if err == nil || !strings.Contains(err.Error(), "database removed") && !busy.IsClosed() {
			t.Errorf("the client in pg_sleep got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client in pg_sleep was not dropped")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("KILL took %v", d)
	}
	if _, err := idle.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("an idle client of app survived KILL")
	}
	waitFor(t, 10*time.Second, "app's server connections to close", func() bool {
		return queryInt(t, direct, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND pid <> pg_backend_pid() AND backend_type = 'client backend'") == 0
	})
	// Other databases carry on; app is paused until RESUME.
	queryInt(t, other, "SELECT 1")
	_, _, dbs := consoleResult(t, admin, "SHOW DATABASES")
	for _, r := range dbs {
		if want := map[string]string{"app": "1", "postgres": "0"}[r["name"]]; want != "" && r["paused"] != want {
			t.Errorf("SHOW DATABASES %s paused=%s", r["name"], r["paused"])
		}
	}
	// A new client waits (its sign-in needs a server) until RESUME.
	blockedUntil(t, "a new client of a killed database", func() error {
		c, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app"))
		if err == nil {
			_, err = c.Exec(ctx, "SELECT 1")
			c.Close(ctx)
		}
		return err
	}, func() { consoleOK(t, admin, "RESUME app") })

	// KILL without a database: everything, and a plain RESUME undoes it.
	consoleOK(t, admin, "KILL")
	if _, err := other.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("a client of postgres survived KILL")
	}
	if _, msg := consoleErr(admin, "KILL"); msg != "already suspended/paused" && msg != "" {
		t.Errorf("second KILL: %q", msg)
	}
	consoleOK(t, admin, "RESUME")
	again := in.connect(t, "alice", "alice-pw", "postgres", "default_query_exec_mode=exec")
	queryInt(t, again, "SELECT 1")
}

// TestConsoleWaitClose: WAIT_CLOSE returns once the servers RECONNECT
// marked are closed; one lent to a client in a transaction closes when the
// transaction ends.
func TestConsoleWaitClose(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	ctx := context.Background()
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	consoleOK(t, admin, "WAIT_CLOSE") // nothing to wait for
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := queryInt(t, app, "SELECT pg_backend_pid()")
	consoleOK(t, admin, "RECONNECT app")
	_, _, servers := consoleResult(t, admin, "SHOW SERVERS")
	for _, r := range servers {
		if r["remote_pid"] == strconv.Itoa(pid) && r["close_needed"] != "1" {
			t.Errorf("server in a transaction after RECONNECT: %v", r)
		}
	}
	// Ctrl-C (a cancel request) ends the wait. (Sent until the command
	// returns: one sent before the wait starts does nothing.)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
				_ = admin.PgConn().CancelRequest(ctx)
			}
		}
	}()
	_, msg := consoleErr(admin, "WAIT_CLOSE app")
	close(done)
	<-stopped // no cancel request left in flight for the next command
	if msg != "WAIT_CLOSE canceled" {
		t.Errorf("canceled WAIT_CLOSE: %q", msg)
	}
	blockedUntil(t, "WAIT_CLOSE app", func() error {
		_, err := admin.Exec(ctx, "WAIT_CLOSE app")
		return err
	}, func() {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if got := queryInt(t, app, "SELECT pg_backend_pid()"); got == pid {
		t.Errorf("the server RECONNECT marked was reused (pid %d)", pid)
	}
}

// TestConsoleSet: SET changes a reloadable key live; restart-only and
// unknown keys and bad values are refused with PostgreSQL's SQLSTATEs.
func TestConsoleSet(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	admin, notices := connectNotices(t, in.dsn("admin", "admin-pw", "pgbouncer"))
	ctx := context.Background()
	tag, err := admin.PgConn().Exec(ctx, "SET default_pool_size = 3").ReadAll()
	if err != nil || len(tag) != 1 || tag[0].CommandTag.String() != "SET default_pool_size=3" {
		t.Fatalf("SET default_pool_size: %v %v", tag, err)
	}
	config := func(key string) string {
		_, _, rows := consoleResult(t, admin, "SHOW CONFIG")
		for _, r := range rows {
			if r["key"] == key {
				return r["value"]
			}
		}
		t.Fatalf("no %s in SHOW CONFIG", key)
		return ""
	}
	if v := config("default_pool_size"); v != "3" {
		t.Errorf("SHOW CONFIG default_pool_size = %s", v)
	}
	_, _, dbs := consoleResult(t, admin, "SHOW DATABASES")
	for _, r := range dbs {
		if r["name"] == "app" && r["pool_size"] != "3" {
			t.Errorf("SHOW DATABASES app pool_size = %s", r["pool_size"])
		}
	}
	// The pool follows: at most three servers.
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, app, "SELECT 1")
	// A quoted value, and TO.
	consoleOK(t, admin, "SET query_timeout TO '2.5'")
	if v := config("query_timeout"); v != "2.5" {
		t.Errorf("query_timeout = %s", v)
	}
	if _, err := app.Exec(ctx, "SELECT pg_sleep(5)"); err == nil || !strings.Contains(err.Error(), "query timeout") {
		t.Errorf("a 5 s query with query_timeout = 2.5 after SET: %v", err)
	}
	// The server may still be sleeping; later tests count alice's
	// backends.
	direct, err := pg.Connect(ctx, "alice", "alice-pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	waitFor(t, 10*time.Second, "pg_sleep to end on the server", func() bool {
		return queryInt(t, direct, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' AND state = 'active'") == 0
	})
	for q, want := range map[string]string{
		"SET listen_port = 7000":       "55P02",
		"SET unix_socket_dir = '/tmp'": "55P02",
		"SET no_such_key = 1":          "42704",
		"SET default_pool_size = many": "22023",
		"SET pool_mode = 'sometimes'":  "22023",
		"SET max_client_conn = -5":     "22023",
	} {
		code, msg := consoleErr(admin, q)
		if code != want || !strings.HasPrefix(msg, "SET failed: ") {
			t.Errorf("%s: %s %q, want %s", q, code, msg, want)
		}
	}
	if v := config("listen_port"); v != strconv.Itoa(in.port) {
		t.Errorf("listen_port changed to %s", v)
	}
	notices()
	// A key PgBouncer has and pgwarden only accepts: kept, with a notice.
	consoleOK(t, admin, "SET dns_max_ttl = 30")
	if ns := notices(); len(ns) != 1 || !strings.Contains(ns[0].Message, "no effect") {
		t.Errorf("notices %v", ns)
	}
	if v := config("dns_max_ttl"); v != "30" {
		t.Errorf("dns_max_ttl = %s", v)
	}
	// The settings drivers send: ignored, for anyone.
	consoleOK(t, admin, "SET client_encoding = 'UTF8'")
	if ns := notices(); len(ns) != 1 || ns[0].Message != "SET ignored" {
		t.Errorf("notices %v", ns)
	}
	// RELOAD reads the file again: SET changes are gone.
	consoleOK(t, admin, "RELOAD")
	if v := config("default_pool_size"); v != "20" {
		t.Errorf("default_pool_size after RELOAD = %s", v)
	}
}

// TestConsoleProcessOwner: over the Unix socket, the process owner gets
// the console without a password, as "pgbouncer" or as its own user name;
// over TCP it does not.
func TestConsoleProcessOwner(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256")
	for _, u := range ownerNames(t) {
		admin := mustConnect(t, in.unixDSN(u, "wrong", "pgbouncer")+" default_query_exec_mode=simple_protocol")
		consoleOK(t, admin, "SHOW FDS") // admin only
		consoleOK(t, admin, "RECONNECT")
		admin.Close(context.Background())
	}
	if _, err := pgx.Connect(context.Background(), in.dsn("pgbouncer", "wrong", "pgbouncer")); err == nil {
		t.Fatal("pgbouncer over TCP without a password got in")
	}
}

func ownerNames(t *testing.T) []string {
	names := []string{"pgbouncer"}
	if me, err := user.Current(); err == nil && me.Username != "" && !strings.ContainsAny(me.Username, " ='\\") {
		names = append(names, me.Username)
	}
	return names
}

// TestConsolePsql drives the console with psql over the Unix socket, as
// an operator does.
func TestConsolePsql(t *testing.T) {
	psql := psqlPath()
	if psql == "" {
		t.Skip("psql not found")
	}
	in := startPooler(t, "auth_type = scram-sha-256")
	out, err := runCmd(t, 20*time.Second, nil, psql, "-X", "-h", in.dir, "-p", strconv.Itoa(in.port), "-U", "pgbouncer", "pgbouncer",
		"-c", "SHOW HELP", "-c", "SUSPEND", "-c", "SHOW STATE", "-c", "RESUME", "-c", "SET default_pool_size = 7", "-c", "SHOW CONFIG")
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	for _, want := range []string{"NOTICE:  Console usage", "DETAIL:  \n\tSHOW HELP|CONFIG|DATABASES", "WAIT_CLOSE [<db>]",
		" suspended | yes", "SUSPEND", "RESUME", "SET default_pool_size=7", " default_pool_size  ", " 7  "} {
		if !strings.Contains(out, want) {
			t.Errorf("psql output lacks %q:\n%s", want, out)
		}
	}
}

// TestConsoleEntraAdmin: an Entra principal marked admin=1 gets the full
// console with its token even when its role is in neither admin_users nor
// stats_users; other principals are not allowed in.
func TestConsoleEntraAdmin(t *testing.T) {
	idp, tid := entraIdP(t)
	in, _ := entraPooler(t, idp.BaseURL(), tid, "admin_users = nobody\nstats_users = nobody")
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID, UPN: "alice@contoso.com"})
	if cfg := in.srv.Config(); len(cfg.AdminUsers) != 1 || cfg.AdminUsers[0] != "nobody" {
		t.Fatalf("admin_users %v", cfg.AdminUsers)
	}
	adm := in.connect(t, "admin", tok, "pgbouncer", "default_query_exec_mode=simple_protocol")
	consoleOK(t, adm, "PAUSE")
	consoleOK(t, adm, "RESUME")
	consoleOK(t, adm, "SHOW FDS")
	// alice's principal is not admin, and alice is in neither list.
	c, err := pgx.Connect(context.Background(), in.dsn("alice", tok, "pgbouncer"))
	if err == nil {
		c.Close(context.Background())
		t.Fatal("a principal without admin=1 got the console")
	}
	if !strings.Contains(pgMessage(err), "not allowed") {
		t.Fatalf("got %v", err)
	}
}
