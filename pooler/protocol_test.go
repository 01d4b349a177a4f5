package pooler_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestCopyInAndOut(t *testing.T) {
	for _, mode := range []string{"session", "transaction", "statement"} {
		t.Run(mode, func(t *testing.T) {
			// Pool of 2: psql below needs a server while conn holds one
			// in session mode.
			in := startPooler(t, "auth_type = scram-sha-256\npool_mode = "+mode+"\ndefault_pool_size = 2")
			ctx := context.Background()
			conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
			table := "copy_" + mode
			if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id int, payload text)"); err != nil {
				t.Fatal(err)
			}
			// 2,000 rows of 1 KiB: several relay buffers' worth.
			payload := strings.Repeat("x", 1024)
			rows := make([][]any, 2000)
			for i := range rows {
				rows[i] = []any{i, payload}
			}
			n, err := conn.CopyFrom(ctx, pgx.Identifier{table}, []string{"id", "payload"}, pgx.CopyFromRows(rows))
			if err != nil || n != 2000 {
				t.Fatalf("CopyFrom: %d, %v", n, err)
			}
			// A failing COPY leaves the connection usable.
			_, err = conn.CopyFrom(ctx, pgx.Identifier{table}, []string{"id", "payload"}, pgx.CopyFromRows([][]any{{"not an int", "x"}}))
			if err == nil {
				t.Fatal("bad COPY succeeded")
			}
			var buf strings.Builder
			tag, err := conn.PgConn().CopyTo(ctx, &buf, "COPY "+table+" TO STDOUT")
			if err != nil || tag.RowsAffected() != 2000 {
				t.Fatalf("CopyTo: %v %v", tag, err)
			}
			if buf.Len() < 2000*1024 {
				t.Fatalf("CopyTo returned %d bytes", buf.Len())
			}
			// COPY FROM STDIN through the simple protocol, with CopyFail.
			_, err = conn.PgConn().CopyFrom(ctx, &failingReader{}, "COPY "+table+" FROM STDIN")
			if err == nil {
				t.Fatal("CopyFail did not fail the COPY")
			}
			if c := queryInt(t, conn, "SELECT count(*)::int FROM "+table); c != 2000 {
				t.Fatalf("%d rows", c)
			}
			// psql \copy both ways.
			file := filepath.Join(in.dir, "rows.csv")
			if err := os.WriteFile(file, []byte("1,a\n2,b\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := runCmd(t, 30*time.Second, []string{"PGPASSWORD=alice-pw"}, psqlPath(), "-X", "-v", "ON_ERROR_STOP=1",
				"-h", "127.0.0.1", "-p", fmt.Sprint(in.port), "-U", "alice", "-d", "app",
				"-c", `\copy `+table+` FROM '`+file+`' CSV`, "-c", `\copy (SELECT count(*) FROM `+table+`) TO STDOUT`)
			if err != nil || !strings.Contains(out, "2002") {
				t.Fatalf("psql \\copy: %v\n%s", err, out)
			}
		})
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		return 0, fmt.Errorf("the application gave up")
	}
	r.n++
	return copy(p, "1\tx\n"), nil
}

// TestLargeMessages: a statement and a result larger than the relay
// buffers pass through intact.
func TestLargeMessages(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	big := strings.Repeat("abcdefgh", 300_000) // 2.4 MB
	var got string
	if err := conn.QueryRow(context.Background(), "SELECT $1::text", big).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != big {
		t.Fatalf("round trip of %d bytes returned %d bytes", len(big), len(got))
	}
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT length(repeat('x', 5000000) || $1)", "y").Scan(&n); err != nil || n != 5000001 {
		t.Fatalf("%d %v", n, err)
	}
}

// TestPipelineWithFlush: a client that sends Flush and waits for results
// before Sync (the server is read by the pump in transaction mode), and a
// pipeline of several Syncs.
func TestPipelineWithFlush(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	conn := in.connect(t, "alice", "alice-pw", "app")
	pc := conn.PgConn()
	for round := 0; round < 3; round++ {
		p := pc.StartPipeline(ctx)
		p.SendQueryParams("SELECT $1::int", [][]byte{[]byte("41")}, nil, nil, nil)
		p.SendFlushRequest()
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		res, err := p.GetResults()
		if err != nil {
			t.Fatal(err)
		}
		rr := res.(*pgconn.ResultReader)
		r := rr.Read()
		if r.Err != nil || len(r.Rows) != 1 || string(r.Rows[0][0]) != "41" {
			t.Fatalf("round %d: %+v", round, r)
		}
		p.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
		p.SendPipelineSync()
		p.SendQueryParams("SELECT $1::int", [][]byte{[]byte("43")}, nil, nil, nil)
		p.SendPipelineSync()
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		var vals []string
		var errs []string
		for {
			res, err := p.GetResults()
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if res == nil {
				break
			}
			switch r := res.(type) {
			case *pgconn.ResultReader:
				rd := r.Read()
				if rd.Err != nil {
					errs = append(errs, rd.Err.Error())
				}
				for _, row := range rd.Rows {
					vals = append(vals, string(row[0]))
				}
			case *pgconn.PipelineSync:
			}
		}
		if err := p.Close(); err != nil && !strings.Contains(err.Error(), "division by zero") {
			t.Fatal(err)
		}
		if strings.Join(vals, ",") != "43" {
			t.Fatalf("round %d: values %v errors %v", round, vals, errs)
		}
	}
	// The server was released: another client can use it.
	other := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, other, "SELECT 1")
}

func TestListenNotifySession(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = session")
	ctx := context.Background()
	listener := in.connect(t, "alice", "alice-pw", "app")
	if _, err := listener.Exec(ctx, "LISTEN chan1"); err != nil {
		t.Fatal(err)
	}
	notifier := in.connect(t, "alice", "alice-pw", "app")
	got := make(chan *pgconn.Notification, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		if err == nil {
			got <- n
		}
		close(got)
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := notifier.Exec(ctx, "NOTIFY chan1, 'hello'"); err != nil {
		t.Fatal(err)
	}
	n, ok := <-got
	if !ok || n.Payload != "hello" {
		t.Fatalf("notification not delivered to an idle session-mode client: %v", n)
	}
}

func TestSessionResetQuery(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = session\ndefault_pool_size = 1")
	ctx := context.Background()
	a, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "CREATE TEMP TABLE session_tmp (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET work_mem = '7MB'"); err != nil {
		t.Fatal(err)
	}
	pid := queryInt(t, a, "SELECT pg_backend_pid()")
	a.Close(ctx)
	b := in.connect(t, "alice", "alice-pw", "app")
	if p := queryInt(t, b, "SELECT pg_backend_pid()"); p != pid {
		t.Fatalf("expected the same server connection (pid %d), got %d", pid, p)
	}
	var reg *string
	if err := b.QueryRow(ctx, "SELECT to_regclass('pg_temp.session_tmp')::text").Scan(&reg); err != nil {
		t.Fatal(err)
	}
	if reg != nil {
		t.Fatal("temp table survived the session: server_reset_query did not run")
	}
	if wm := queryString(t, b, "SHOW work_mem"); wm == "7MB" {
		t.Fatal("work_mem survived the session")
	}
}

func TestForcedUserAndFallbackDatabase(t *testing.T) {
	in := startPooler(t, fmt.Sprintf("auth_type = scram-sha-256\npool_mode = transaction\n[databases]\nforced = host=127.0.0.1 port=%d dbname=app user=alice password=alice-pw\n* = host=127.0.0.1 port=%d", pg.Port, pg.Port))
	// bob signs in as himself but the server session runs as alice.
	conn := in.connect(t, "bob", "bob-pw", "forced", "default_query_exec_mode=exec")
	if u := queryString(t, conn, "SELECT current_user"); u != "alice" {
		t.Fatalf("forced user: current_user = %q", u)
	}
	// An unlisted database goes through the * entry.
	if err := pg.Exec(context.Background(), "CREATE DATABASE fallbackdb OWNER carol"); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	conn2 := in.connect(t, "carol", "carol-pw", "fallbackdb", "default_query_exec_mode=exec")
	if db := queryString(t, conn2, "SELECT current_database()"); db != "fallbackdb" {
		t.Fatalf("fallback: current_database = %q", db)
	}
}

func TestAuthQuery(t *testing.T) {
	ctx := context.Background()
	if err := pg.CreateRole(ctx, "dave", "dave-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := pg.CreateRole(ctx, "authq", "authq-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx,
		"GRANT ALL ON DATABASE app TO dave",
		`CREATE OR REPLACE FUNCTION public.user_lookup(i_username text, OUT uname name, OUT phash text)
		 RETURNS record AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = i_username $$
		 LANGUAGE sql SECURITY DEFINER`,
		"GRANT EXECUTE ON FUNCTION public.user_lookup(text) TO authq",
	); err != nil {
		t.Fatal(err)
	}
	// The function lives in "postgres"; use it as the auth database.
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nauth_user = authq\nauth_dbname = postgres\nauth_query = SELECT uname, phash FROM public.user_lookup($1)")
	// authq's own password comes from the userlist.
	b, err := os.ReadFile(filepath.Join(in.dir, "userlist.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.dir, "userlist.txt"), append(b, []byte("\"authq\" \"authq-pw\"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	in.reload(t, "")
	conn := in.connect(t, "dave", "dave-pw", "app", "default_query_exec_mode=exec")
	if u := queryString(t, conn, "SELECT current_user"); u != "dave" {
		t.Fatal(u)
	}
	_, err = pgx.Connect(ctx, in.dsn("dave", "wrong", "app"))
	if err == nil || !strings.Contains(pgMessage(err), "password authentication failed") {
		t.Fatalf("wrong password through auth_query: %v", err)
	}
	_, err = pgx.Connect(ctx, in.dsn("nobody_here", "x", "app"))
	if err == nil {
		t.Fatal("unknown user signed in through auth_query")
	}
}

func TestMaxDBConnections(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 5\nmax_db_connections = 2\nquery_wait_timeout = 20")
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	peak := 0
	stop := make(chan struct{})
	monitorDone := make(chan struct{})
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	go func() {
		// pgwarden's own view of its server connections to app, from
		// SHOW POOLS (pg_stat_activity lags behind closed sockets).
		defer close(monitorDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			rows, err := admin.Query(context.Background(), "SHOW POOLS")
			if err != nil {
				return
			}
			n := 0
			for rows.Next() {
				v, _ := rows.Values()
				if v[0] == "app" {
					n += int(v[6].(int32) + v[9].(int32))
				}
			}
			rows.Close()
			peak = max(peak, n)
		}
	}()
	for i := 0; i < 8; i++ {
		user, pw := "alice", "alice-pw"
		if i%2 == 1 {
			user, pw = "carol", "carol-pw"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(context.Background(), in.dsn(user, pw, "app", "default_query_exec_mode=exec"))
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			for j := 0; j < 5; j++ {
				if _, err := conn.Exec(context.Background(), "SELECT pg_sleep(0.02)"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-monitorDone
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if peak > 2 {
		t.Fatalf("saw %d server connections to app with max_db_connections = 2", peak)
	}
}

func TestReservePool(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.2")
	ctx := context.Background()
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	queryIntTx(t, tx, "SELECT 1")
	start := time.Now()
	if n := queryInt(t, b, "SELECT 2"); n != 2 {
		t.Fatal(n)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("reserve used after %v, before reserve_pool_timeout", el)
	}
	if !strings.Contains(in.logs.String(), "taking connection from reserve_pool") {
		t.Fatal("no reserve_pool log line")
	}
}

func queryIntTx(t *testing.T, tx pgx.Tx, sql string) int {
	t.Helper()
	var n int
	if err := tx.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReloadAddsAndRemovesDatabases(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = session")
	ctx := context.Background()
	_, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app2"))
	if err == nil {
		t.Fatal("app2 exists before reload")
	}
	in.reload(t, fmt.Sprintf("[databases]\napp2 = host=127.0.0.1 port=%d dbname=app", pg.Port))
	conn := in.connect(t, "alice", "alice-pw", "app2")
	queryInt(t, conn, "SELECT 1")
	// Remove it again: its clients are disconnected.
	b, err := os.ReadFile(in.iniPath)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), fmt.Sprintf("app2 = host=127.0.0.1 port=%d dbname=app", pg.Port), "", 1)
	if err := os.WriteFile(in.iniPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	in.reload(t, "")
	_, err = conn.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatal("client of a removed database still works")
	}
	if !strings.Contains(err.Error(), "database removed") && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("got %v", err)
	}
}

func TestConsoleReload(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	b, _ := os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "default_pool_size = 1", "default_pool_size = 7", 1)), 0o600)
	if _, err := admin.Exec(context.Background(), "RELOAD"); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := admin.QueryRow(context.Background(), "SHOW CONFIG").Scan(new(string), &v, new(string), new(string)); err != nil {
		// SHOW CONFIG returns many rows; scan the one we want below.
		_ = err
	}
	rows, err := admin.Query(context.Background(), "SHOW CONFIG")
	if err != nil {
		t.Fatal(err)
	}
	found := ""
	for rows.Next() {
		var k, val, def, ch string
		if err := rows.Scan(&k, &val, &def, &ch); err != nil {
			t.Fatal(err)
		}
		if k == "default_pool_size" {
			found = val
		}
	}
	if found != "7" {
		t.Fatalf("default_pool_size after RELOAD = %q", found)
	}
	// A broken file: RELOAD fails with F0000 and the old config stays.
	_ = os.WriteFile(in.iniPath, []byte("[pgbouncer]\nbogus_key = 1\n"), 0o600)
	_, err = admin.Exec(context.Background(), "RELOAD")
	if pgCode(err) != "F0000" {
		t.Fatalf("got %v", err)
	}
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, app, "SELECT 1")
}

func TestMinPoolSize(t *testing.T) {
	if err := pg.CreateRole(context.Background(), "minpool", "minpool-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(context.Background(), "GRANT ALL ON DATABASE app TO minpool"); err != nil {
		t.Fatal(err)
	}
	// A forced-user database keeps min_pool_size servers even with no
	// client, as PgBouncer does.
	in := startPooler(t, fmt.Sprintf("auth_type = trust\nmin_pool_size = 3\n[databases]\nwarm = host=127.0.0.1 port=%d dbname=app user=minpool password=minpool-pw", pg.Port))
	_ = in
	waitFor(t, 15*time.Second, "min_pool_size servers to open", func() bool { return serverConnCount(t, "minpool") == 3 })
}

func TestServerCheckQuery(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1\nserver_check_delay = 0.1\nserver_check_query = select 1")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	pid1 := queryInt(t, conn, "SELECT pg_backend_pid()")
	// Kill the idle server behind the pooler's back: the check query
	// notices and the client gets a fresh connection, not an error.
	if err := pg.Exec(context.Background(), fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the server to exit", func() bool {
		c, err := pg.Connect(context.Background(), pg.SuperUser, pg.SuperPassword, "postgres")
		if err != nil {
			return false
		}
		defer c.Close(context.Background())
		var n int
		_ = c.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid1).Scan(&n)
		return n == 0
	})
	time.Sleep(150 * time.Millisecond) // past server_check_delay
	pid2 := queryInt(t, conn, "SELECT pg_backend_pid()")
	if pid2 == pid1 {
		t.Fatal("same server pid after it was terminated")
	}
}

func TestStatsUserIsReadOnly(t *testing.T) {
	in := startPooler(t, "auth_type = trust\nstats_users = stats")
	b, _ := os.ReadFile(filepath.Join(in.dir, "userlist.txt"))
	_ = os.WriteFile(filepath.Join(in.dir, "userlist.txt"), append(b, []byte("\"stats\" \"stats-pw\"\n")...), 0o600)
	in.reload(t, "")
	st := in.connect(t, "stats", "stats-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	if _, err := st.Exec(context.Background(), "SHOW POOLS"); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"PAUSE", "RESUME", "RELOAD", "SHUTDOWN"} {
		_, err := st.Exec(context.Background(), cmd)
		if err == nil || !strings.Contains(pgMessage(err), "admin access needed") {
			t.Fatalf("%s as stats user: %v", cmd, err)
		}
	}
}

func TestApplicationNameAddHost(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\napplication_name_add_host = 1")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol", "application_name=myapp")
	got := queryString(t, conn, "SELECT current_setting('application_name')")
	if !strings.HasPrefix(got, "myapp - 127.0.0.1:") {
		t.Fatalf("application_name = %q", got)
	}
}

func TestLogStats(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nstats_period = 1\nlog_stats = 1")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	for i := 0; i < 20; i++ {
		queryInt(t, conn, "SELECT 1")
	}
	waitFor(t, 5*time.Second, "a stats: log line", func() bool {
		return strings.Contains(in.logs.String(), "stats: ") && strings.Contains(in.logs.String(), "xacts/s")
	})
}

func TestListenAddrHostName(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\nlisten_addr = localhost")
	found := false
	for _, a := range in.srv.Addrs() {
		if strings.HasPrefix(a.String(), "127.0.0.1:") {
			found = true
		}
	}
	if !found {
		t.Fatalf("listen_addr = localhost did not bind 127.0.0.1: %v", in.srv.Addrs())
	}
}
