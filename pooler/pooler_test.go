package pooler_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestAuthTypes(t *testing.T) {
	for _, tc := range []struct {
		authType string
		user, pw string
	}{
		{"scram-sha-256", "alice", "alice-pw"},
		{"scram-sha-256", "carol", "carol-pw"}, // SCRAM secret in userlist: passthrough to the server
		{"md5", "alice", "alice-pw"},
		{"md5", "bob", "bob-pw"},
		{"md5", "carol", "carol-pw"}, // md5 with a SCRAM secret falls back to SCRAM
		{"plain", "alice", "alice-pw"},
		{"plain", "carol", "carol-pw"},
		{"trust", "alice", "whatever"},
	} {
		t.Run(tc.authType+"/"+tc.user, func(t *testing.T) {
			in := startPooler(t, "auth_type = "+tc.authType+"\npool_mode = transaction")
			conn := in.connect(t, tc.user, tc.pw, "app", "default_query_exec_mode=exec")
			if got := queryString(t, conn, "SELECT current_user"); got != tc.user {
				t.Fatalf("current_user = %q, want %q", got, tc.user)
			}
			if tc.authType == "trust" {
				return
			}
			ctx := context.Background()
			_, err := pgx.Connect(ctx, in.dsn(tc.user, "wrong", "app"))
			if err == nil || !strings.Contains(pgMessage(err), "password authentication failed") {
				t.Fatalf("wrong password: got %v", err)
			}
			_, err = pgx.Connect(ctx, in.dsn("nosuchuser", "x", "app"))
			if err == nil || !strings.Contains(pgMessage(err), "password authentication failed") {
				t.Fatalf("unknown user: got %v", err)
			}
		})
	}
}

func TestUnknownDatabase(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256")
	_, err := pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "nodb"))
	if err == nil || !strings.Contains(pgMessage(err), "no such database: nodb") {
		t.Fatalf("got %v", err)
	}
	// A wrong password is reported first, without saying whether the
	// database exists.
	_, err = pgx.Connect(context.Background(), in.dsn("alice", "bad", "nodb"))
	if err == nil || !strings.Contains(pgMessage(err), "password authentication failed") {
		t.Fatalf("got %v", err)
	}
}

func TestPoolModesBasic(t *testing.T) {
	for _, mode := range []string{"session", "transaction", "statement"} {
		t.Run(mode, func(t *testing.T) {
			in := startPooler(t, "auth_type = scram-sha-256\npool_mode = "+mode+"\ndefault_pool_size = 2")
			for _, qm := range []string{"simple_protocol", "exec"} {
				conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode="+qm)
				for i := 0; i < 20; i++ {
					if n := queryInt(t, conn, "SELECT $1::int + 1", i); n != i+1 {
						t.Fatalf("got %d", n)
					}
				}
				var ok bool
				if err := conn.QueryRow(context.Background(), "SELECT generate_series(1,1000) = 1000").Scan(&ok); err != nil && !strings.Contains(err.Error(), "more than one row") {
					// QueryRow reads the first row only; the rest must be discarded cleanly.
					t.Fatal(err)
				}
				if n := queryInt(t, conn, "SELECT count(*)::int FROM generate_series(1, 100000)"); n != 100000 {
					t.Fatalf("got %d", n)
				}
			}
		})
	}
}

func TestStatementModeRefusesTransactions(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = statement")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol")
	_, err := conn.Exec(context.Background(), "BEGIN")
	if err == nil || !strings.Contains(pgMessage(err), "transaction blocks not allowed in statement pooling mode") {
		t.Fatalf("got %v", err)
	}
	// The pooler stays healthy for others.
	conn2 := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol")
	if n := queryInt(t, conn2, "SELECT 1"); n != 1 {
		t.Fatal(n)
	}
}

// TestTransactionModeParamIsolation: with one server connection shared by
// two clients, a SET of a tracked parameter by one is not seen by the other,
// and each client keeps its own value across transactions.
func TestTransactionModeParamIsolation(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol", "application_name=client-a")
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol", "application_name=client-b")
	if _, err := a.Exec(ctx, "SET TimeZone = 'Asia/Tokyo'"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET DateStyle = 'German'"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if got := queryString(t, b, "SHOW TimeZone"); got == "Asia/Tokyo" {
			t.Fatalf("client b sees client a's TimeZone")
		}
		if got := queryString(t, b, "SHOW DateStyle"); strings.Contains(got, "German") {
			t.Fatalf("client b sees client a's DateStyle %q", got)
		}
		if got := queryString(t, b, "SELECT current_setting('application_name')"); got != "client-b" {
			t.Fatalf("client b application_name = %q", got)
		}
		if got := queryString(t, a, "SHOW TimeZone"); got != "Asia/Tokyo" {
			t.Fatalf("client a lost its TimeZone: %q", got)
		}
		if got := queryString(t, a, "SELECT current_setting('application_name')"); got != "client-a" {
			t.Fatalf("client a application_name = %q", got)
		}
	}
	// Both share one server connection.
	pa := queryInt(t, a, "SELECT pg_backend_pid()")
	pb := queryInt(t, b, "SELECT pg_backend_pid()")
	if pa != pb {
		t.Fatalf("expected one shared server connection, got pids %d and %d", pa, pb)
	}
}

// TestTransactionSpansStatements: a transaction keeps its server until it
// ends; another client waits meanwhile.
func TestTransactionSpansStatements(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "CREATE TEMP TABLE tt (x int) ON COMMIT DROP"); err != nil {
		t.Fatal(err)
	}
	blockedUntil(t, "client b's query (a's transaction holds the only server)", func() error {
		if n := queryIntE(b, "SELECT 42"); n != 42 {
			return fmt.Errorf("got %d", n)
		}
		return nil
	}, func() {
		if _, err := tx.Exec(ctx, "INSERT INTO tt VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// blockedUntil runs query in the background, checks that it is still
// waiting after 300 ms (a negative check: the wait is the thing tested),
// calls release, and then expects query to finish without error within 10 s.
func blockedUntil(t *testing.T, what string, query func() error, release func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- query() }()
	select {
	case err := <-done:
		t.Fatalf("%s did not wait (%v)", what, err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never ran", what)
	}
}

func queryIntE(conn *pgx.Conn, sql string) int {
	var n int
	_ = conn.QueryRow(context.Background(), sql).Scan(&n)
	return n
}

func TestErrorsInsideTransaction(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	for _, qm := range []string{"simple_protocol", "exec"} {
		a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode="+qm)
		if _, err := a.Exec(ctx, "SELECT 1/0"); pgCode(err) != "22012" {
			t.Fatalf("%s: got %v", qm, err)
		}
		tx, _ := a.Begin(ctx)
		if _, err := tx.Exec(ctx, "SELECT 1/0"); pgCode(err) != "22012" {
			t.Fatalf("%s: got %v", qm, err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); pgCode(err) != "25P02" {
			t.Fatalf("%s: got %v", qm, err)
		}
		_ = tx.Rollback(ctx)
		if n := queryInt(t, a, "SELECT 7"); n != 7 {
			t.Fatal(n)
		}
	}
}

func TestCancel(t *testing.T) {
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			in := startPooler(t, "auth_type = scram-sha-256\npool_mode = "+mode+"\ndefault_pool_size = 2")
			conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
			other := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
			// other runs a short sleep concurrently: it must not be hit.
			otherErr := make(chan error, 1)
			go func() {
				_, err := other.Exec(context.Background(), "SELECT pg_sleep(1.5)")
				otherErr <- err
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
			if err == nil {
				t.Fatal("expected the query to be cancelled")
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("cancel took %v", time.Since(start))
			}
			if err := <-otherErr; err != nil {
				t.Fatalf("the other client's query was hit: %v", err)
			}
		})
	}
}

func TestCancelWithPgconn(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	errCh := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(20)")
		errCh <- err
	}()
	// Wait until the query runs on the server.
	admin := pg
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := admin.Connect(context.Background(), admin.SuperUser, admin.SuperPassword, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		var n int
		_ = c.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(20)%' AND state = 'active'").Scan(&n)
		c.Close(context.Background())
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("query never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := conn.PgConn().CancelRequest(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errCh:
		if pgCode(err) != "57014" {
			t.Fatalf("got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not reach the query")
	}
	if n := queryInt(t, conn, "SELECT 5"); n != 5 {
		t.Fatal(n)
	}
}

func TestMaxClientConn(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\nmax_client_conn = 2")
	in.connect(t, "alice", "alice-pw", "app")
	in.connect(t, "alice", "alice-pw", "app")
	_, err := pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "app"))
	if err == nil || !strings.Contains(pgMessage(err), "no more connections allowed (max_client_conn)") {
		t.Fatalf("got %v", err)
	}
	// The admin console is exempt.
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	if _, err := admin.Exec(context.Background(), "SHOW POOLS"); err != nil {
		t.Fatal(err)
	}
}

func TestQueryWaitTimeout(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 1")
	ctx := context.Background()
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	start := time.Now()
	_, err = b.Exec(ctx, "SELECT 1")
	if err == nil || !strings.Contains(pgMessage(err), "query_wait_timeout") {
		t.Fatalf("got %v", err)
	}
	if el := time.Since(start); el < 900*time.Millisecond || el > 5*time.Second {
		t.Fatalf("timeout after %v", el)
	}
}

func TestPoolSizeLimit(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 3")
	c, err := pg.Connect(context.Background(), pg.SuperUser, pg.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	// Earlier tests' poolers share this PostgreSQL, and a backend they
	// closed may still be listed while it exits: count only backends
	// started from here on.
	var since time.Time
	if err := c.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&since); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "app", "default_query_exec_mode=exec"))
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			for j := 0; j < 10; j++ {
				if _, err := conn.Exec(context.Background(), "SELECT pg_sleep(0.01)"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE usename = 'alice' AND datname = 'app' AND backend_start >= $1", since).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 3 {
		t.Fatalf("%d server connections for a pool of 3", n)
	}
}

func TestAdminConsole(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, app, "SELECT 1")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	rows, err := admin.Query(context.Background(), "SHOW POOLS")
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	found := false
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		if vals[0] == "app" && vals[1] == "alice" {
			found = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := "database,user,cl_active,cl_waiting,cl_active_cancel_req,cl_waiting_cancel_req,sv_active,sv_active_cancel,sv_being_canceled,sv_idle,sv_used,sv_tested,sv_login,maxwait,maxwait_us,pool_mode,load_balance_hosts"
	if strings.Join(cols, ",") != want {
		t.Fatalf("columns %v", cols)
	}
	if !found {
		t.Fatal("no app/alice row in SHOW POOLS")
	}
	if v := queryString(t, admin, "SHOW VERSION"); !strings.HasPrefix(v, "PgBouncer") {
		t.Fatalf("version %q", v)
	}
	if _, err := admin.Exec(context.Background(), "bogus"); err == nil || !strings.Contains(pgMessage(err), "invalid command 'bogus', use SHOW HELP;") {
		t.Fatalf("got %v", err)
	}
	// A non-admin is refused.
	_, err = pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "pgbouncer"))
	if err == nil || !strings.Contains(pgMessage(err), "not allowed") {
		t.Fatalf("got %v", err)
	}
}

func TestPauseResume(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	ctx := context.Background()
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, app, "SELECT 1")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	if _, err := admin.Exec(ctx, "PAUSE"); err != nil {
		t.Fatal(err)
	}
	blockedUntil(t, "a query while paused", func() error { _, err := app.Exec(ctx, "SELECT 1"); return err }, func() {
		if _, err := admin.Exec(ctx, "RESUME"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestClientDisappearsMidTransaction(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	a, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app", "default_query_exec_mode=exec"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "BEGIN; CREATE TEMP TABLE leak (x int)"); err != nil {
		t.Fatal(err)
	}
	// Drop the socket without Terminate.
	a.PgConn().Conn().Close()
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	var status string
	if err := b.QueryRow(ctx, "SELECT CASE WHEN to_regclass('pg_temp.leak') IS NULL THEN 'clean' ELSE 'dirty' END").Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != "clean" {
		t.Fatal("client b got the server connection left dirty by client a")
	}
}

func TestReloadChangesPoolSize(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failures, ok int64
	var mu sync.Mutex
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "app", "default_query_exec_mode=exec"))
			if err != nil {
				mu.Lock()
				failures++
				mu.Unlock()
				return
			}
			defer conn.Close(context.Background())
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := conn.Exec(context.Background(), "SELECT 1")
				mu.Lock()
				if err != nil {
					failures++
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	in.reload(t, "default_pool_size = 4")
	time.Sleep(300 * time.Millisecond)
	in.reload(t, "default_pool_size = 2")
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures > 0 {
		t.Fatalf("%d failed queries during reload (%d ok)", failures, ok)
	}
	if ok == 0 {
		t.Fatal("no queries ran")
	}
	t.Logf("%d queries, 0 failed across two reloads", ok)
}

func TestPgbench(t *testing.T) {
	if testing.Short() {
		t.Skip("pgbench run skipped in -short mode")
	}
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 20\nmax_client_conn = 200")
	env := []string{"PGPASSWORD=alice-pw"}
	pgbench := pgtestPgbench()
	out, err := runCmd(t, 2*time.Minute, env, pgbench, "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", fmt.Sprint(pg.Port), "-U", "alice", "app")
	if err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	for _, proto := range []string{"simple", "extended"} {
		out, err := runCmd(t, 2*time.Minute, env, pgbench, "-S", "-c", "50", "-j", "2", "-T", "5", "-M", proto, "-h", "127.0.0.1", "-p", fmt.Sprint(in.port), "-U", "alice", "app")
		if err != nil {
			t.Fatalf("pgbench -M %s: %v\n%s", proto, err, out)
		}
		if !strings.Contains(out, "number of failed transactions: 0") && strings.Contains(out, "failed transactions") {
			t.Fatalf("pgbench -M %s reported failures:\n%s", proto, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "tps") || strings.Contains(line, "failed") {
				t.Logf("%s: %s", proto, line)
			}
		}
	}
}
