package pooler_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const txPool2 = "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2"

func directDSN(extra ...string) string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d user=alice password=alice-pw dbname=app sslmode=disable", pg.Port)
	for _, e := range extra {
		s += " " + e
	}
	return s
}

func pgconnTo(t *testing.T, dsn string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(context.Background()) })
	return pc
}

// TestPreparedPgxModes: pgx in every QueryExecMode, 10 workers through a
// pool of 2 servers, twice (the second run finds a warm pool whose servers
// hold the first run's statements).
func TestPreparedPgxModes(t *testing.T) {
	in := startPooler(t, txPool2)
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	for run := 0; run < 2; run++ {
		for _, mode := range modes {
			t.Run(fmt.Sprintf("%v/run%d", mode, run), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				var wg sync.WaitGroup
				errs := make(chan error, 10)
				for w := 0; w < 10; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						cfg, err := pgx.ParseConfig(in.dsn("alice", "alice-pw", "app"))
						if err != nil {
							errs <- err
							return
						}
						cfg.DefaultQueryExecMode = mode
						conn, err := pgx.ConnectConfig(ctx, cfg)
						if err != nil {
							errs <- err
							return
						}
						defer conn.Close(ctx)
						for i := 0; i < 50; i++ {
							var a int32
							var b int64
							var s string
							// Each worker also has statements of its own.
							q := fmt.Sprintf("select $1::int4, $2::int8, $3::text /* worker %d */", w)
							if i%2 == 0 {
								q = "select $1::int4, $2::int8, $3::text"
							}
							if err := conn.QueryRow(ctx, q, int32(i), int64(w), "hi").Scan(&a, &b, &s); err != nil {
								errs <- fmt.Errorf("worker %d query %d: %w", w, i, err)
								return
							}
							if a != int32(i) || b != int64(w) || s != "hi" {
								errs <- fmt.Errorf("worker %d got %d %d %q", w, a, b, s)
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})
		}
	}
}

// TestPreparedSameNameDifferentTexts: two clients on one server connection
// prepare the same name for different statements; each runs its own.
func TestPreparedSameNameDifferentTexts(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	a := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	b := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	if _, err := a.Prepare(ctx, "s1", "SELECT 'a:' || $1::text", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Prepare(ctx, "s1", "SELECT 'b:' || $1::int::text || ':' || $2::text", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		ra := a.ExecPrepared(ctx, "s1", [][]byte{[]byte("x")}, nil, nil).Read()
		if ra.Err != nil || string(ra.Rows[0][0]) != "a:x" {
			t.Fatalf("client a: %v %q", ra.Err, ra.Rows)
		}
		rb := b.ExecPrepared(ctx, "s1", [][]byte{[]byte("7"), []byte("y")}, nil, nil).Read()
		if rb.Err != nil || string(rb.Rows[0][0]) != "b:7:y" {
			t.Fatalf("client b: %v %q", rb.Err, rb.Rows)
		}
	}
	// A name neither prepared is unknown, as in PostgreSQL.
	rr := a.ExecPrepared(ctx, "nope", nil, nil, nil).Read()
	if pgCode(rr.Err) != "26000" {
		t.Fatalf("unknown statement: %v", rr.Err)
	}
}

// TestPreparedEviction: with max_prepared_statements = 10, a client uses
// 250 distinct statements twice over; each server keeps at most 10.
func TestPreparedEviction(t *testing.T) {
	in := startPooler(t, txPool2+"\nmax_prepared_statements = 10")
	ctx := context.Background()
	pc := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	for round := 0; round < 2; round++ {
		for i := 0; i < 250; i++ {
			name := fmt.Sprintf("st%d", i)
			if round == 0 {
				if _, err := pc.Prepare(ctx, name, fmt.Sprintf("SELECT $1::int + %d", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			r := pc.ExecPrepared(ctx, name, [][]byte{[]byte("1")}, nil, nil).Read()
			if r.Err != nil || string(r.Rows[0][0]) != fmt.Sprint(i+1) {
				t.Fatalf("round %d %s: %v %q", round, name, r.Err, r.Rows)
			}
		}
	}
	r, err := pc.Exec(ctx, "SELECT count(*) FROM pg_prepared_statements").ReadAll()
	if err != nil || len(r) != 1 || len(r[0].Rows) != 1 {
		t.Fatalf("%v %v", r, err)
	}
	if n, err := strconv.Atoi(string(r[0].Rows[0][0])); err != nil || n > 10 {
		t.Fatalf("%d statements on a server (%v), want at most 10", n, err)
	}
}

// transcript runs the extended-protocol scenario on pc and renders what
// the client sees.
func transcript(ctx context.Context, pc *pgconn.PgConn, run func(p *pgconn.Pipeline)) string {
	p := pc.StartPipeline(ctx)
	run(p)
	if err := p.Sync(); err != nil {
		return "sync: " + err.Error()
	}
	var out []string
	for {
		res, err := p.GetResults()
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				out = append(out, "error "+pe.Code+" "+pe.Message)
				continue
			}
			out = append(out, "fail "+err.Error())
			break
		}
		switch r := res.(type) {
		case nil:
			out = append(out, "end")
			_ = p.Close()
			return strings.Join(out, "\n")
		case *pgconn.StatementDescription:
			out = append(out, fmt.Sprintf("described %s %d params %d fields", r.Name, len(r.ParamOIDs), len(r.Fields)))
		case *pgconn.ResultReader:
			rd := r.Read()
			if rd.Err != nil {
				var pe *pgconn.PgError
				if errors.As(rd.Err, &pe) {
					out = append(out, "error "+pe.Code+" "+pe.Message)
				} else {
					out = append(out, "fail "+rd.Err.Error())
				}
				continue
			}
			var rows []string
			for _, row := range rd.Rows {
				rows = append(rows, string(row[0]))
			}
			out = append(out, "rows "+strings.Join(rows, ","))
		case *pgconn.PipelineSync:
			out = append(out, "sync")
		case *pgconn.CloseComplete:
			out = append(out, "closed")
		default:
			out = append(out, fmt.Sprintf("%T", r))
		}
	}
	_ = p.Close()
	return strings.Join(out, "\n")
}

// TestPreparedMatchesPostgres runs protocol scenarios (pipelines with
// errors in the middle, re-Parse of a name in use, Close, DEALLOCATE ALL)
// directly against PostgreSQL and through pgwarden, and expects the client
// to see the same answers.
func TestPreparedMatchesPostgres(t *testing.T) {
	for _, mode := range []string{"transaction", "statement"} {
		t.Run(mode, func(t *testing.T) { testPreparedMatchesPostgres(t, mode) })
	}
}

func testPreparedMatchesPostgres(t *testing.T, mode string) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = "+mode+"\ndefault_pool_size = 1\nmax_prepared_statements = 3")
	ctx := context.Background()
	scenarios := []struct {
		name  string
		steps []func(p *pgconn.Pipeline)
	}{
		{"pipeline error in the middle", []func(p *pgconn.Pipeline){
			func(p *pgconn.Pipeline) {
				p.SendPrepare("s1", "SELECT $1::int * 2", nil)
				p.SendQueryPrepared("s1", [][]byte{[]byte("21")}, nil, nil)
				p.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
				p.SendPrepare("s2", "SELECT 'never'", nil)
				p.SendQueryPrepared("s1", [][]byte{[]byte("5")}, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				// s2's Parse was skipped: it does not exist; s1 does.
				p.SendQueryPrepared("s2", nil, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendQueryPrepared("s1", [][]byte{[]byte("4")}, nil, nil)
				p.SendPrepare("s2", "SELECT 'now'", nil)
				p.SendQueryPrepared("s2", nil, nil, nil)
			},
		}},
		{"several syncs in one pipeline", []func(p *pgconn.Pipeline){
			func(p *pgconn.Pipeline) {
				p.SendPrepare("m1", "SELECT $1::int + 1", nil)
				p.SendPipelineSync()
				p.SendQueryPrepared("m1", [][]byte{[]byte("1")}, nil, nil)
				p.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
				p.SendPrepare("m2", "SELECT 'skipped'", nil)
				p.SendQueryPrepared("m1", [][]byte{[]byte("2")}, nil, nil)
				p.SendPipelineSync()
				p.SendPrepare("m3", "SELECT 'm3'", nil)
				p.SendQueryPrepared("m3", nil, nil, nil)
				p.SendPipelineSync()
				p.SendQueryPrepared("m2", nil, nil, nil)
				p.SendPipelineSync()
				p.SendPrepare("m2", "SELECT 'm2 now'", nil)
				p.SendQueryPrepared("m2", nil, nil, nil)
				p.SendQueryPrepared("m1", [][]byte{[]byte("3")}, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendQueryPrepared("m1", [][]byte{[]byte("4")}, nil, nil)
				p.SendQueryPrepared("m2", nil, nil, nil)
				p.SendQueryPrepared("m3", nil, nil, nil)
			},
		}},
		{"evictions undone after an error", []func(p *pgconn.Pipeline){
			func(p *pgconn.Pipeline) {
				for i := 0; i < 3; i++ {
					p.SendPrepare(fmt.Sprintf("h%d", i), fmt.Sprintf("SELECT 'h%d'", i), nil)
				}
			},
			func(p *pgconn.Pipeline) {
				// g1 fails to parse; g2..g4 would evict it and h0..h2.
				p.SendPrepare("g1", "SELECT count(*) FROM pg_temp.later", nil)
				p.SendPrepare("g2", "SELECT 'g2'", nil)
				p.SendPrepare("g3", "SELECT 'g3'", nil)
				p.SendPrepare("g4", "SELECT 'g4'", nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendQueryParams("CREATE TEMP TABLE IF NOT EXISTS later (x int)", nil, nil, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendPrepare("g1", "SELECT count(*) FROM pg_temp.later", nil)
				p.SendQueryPrepared("g1", nil, nil, nil)
				p.SendQueryPrepared("g2", nil, nil, nil)
				p.SendQueryPrepared("h0", nil, nil, nil)
				p.SendQueryPrepared("h2", nil, nil, nil)
			},
		}},
		{"re-parse and close", []func(p *pgconn.Pipeline){
			func(p *pgconn.Pipeline) {
				p.SendPrepare("d1", "SELECT 1", nil)
				p.SendPrepare("d1", "SELECT 2", nil)
				p.SendQueryPrepared("d1", nil, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendQueryPrepared("d1", nil, nil, nil)
				p.SendDeallocate("d1")
				p.SendDeallocate("d1")
				p.SendPrepare("d1", "SELECT 3", nil)
				p.SendQueryPrepared("d1", nil, nil, nil)
			},
		}},
		{"more statements than the cache holds", []func(p *pgconn.Pipeline){
			func(p *pgconn.Pipeline) {
				for i := 0; i < 6; i++ {
					p.SendPrepare(fmt.Sprintf("e%d", i), fmt.Sprintf("SELECT %d", i), nil)
				}
				for i := 5; i >= 0; i-- {
					p.SendQueryPrepared(fmt.Sprintf("e%d", i), nil, nil, nil)
				}
			},
			func(p *pgconn.Pipeline) {
				for i := 0; i < 6; i++ {
					p.SendQueryPrepared(fmt.Sprintf("e%d", i), nil, nil, nil)
				}
			},
		}},
		{"deallocate all", []func(p *pgconn.Pipeline){
			func(p *pgconn.Pipeline) {
				p.SendPrepare("f1", "SELECT 'f1'", nil)
				p.SendQueryPrepared("f1", nil, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendQueryParams("DEALLOCATE ALL", nil, nil, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendQueryPrepared("f1", nil, nil, nil)
			},
			func(p *pgconn.Pipeline) {
				p.SendPrepare("f1", "SELECT 'again'", nil)
				p.SendQueryPrepared("f1", nil, nil, nil)
			},
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			direct := pgconnTo(t, directDSN())
			pooled := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
			// Another client shares the pooled server and uses the same
			// names for other texts.
			other := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
			for i, step := range sc.steps {
				want := transcript(ctx, direct, step)
				got := transcript(ctx, pooled, step)
				if got != want {
					t.Fatalf("step %d:\npostgres:\n%s\n\npgwarden:\n%s", i, want, got)
				}
				for _, n := range []string{"s1", "d1", "e0", "f1"} {
					_ = other.Deallocate(ctx, n)
					if _, err := other.Prepare(ctx, n, "SELECT 'other client'", nil); err != nil {
						t.Fatal(err)
					}
					r := other.ExecPrepared(ctx, n, nil, nil, nil).Read()
					if r.Err != nil || string(r.Rows[0][0]) != "other client" {
						t.Fatalf("other client: %v %q", r.Err, r.Rows)
					}
				}
			}
		})
	}
}

// TestSQLPrepareRefused: SQL PREPARE in transaction mode gets a clear
// error (inside a transaction block it aborts the block like any error);
// EXECUTE of a name nobody prepared fails as in PostgreSQL.
func TestSQLPrepareRefused(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol")
	_, err := conn.Exec(ctx, "  /* c */ prepare p1 AS SELECT 1")
	if pgCode(err) != "0A000" || !strings.Contains(pgMessage(err), "transaction pooling mode") {
		t.Fatalf("PREPARE: %v", err)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.Contains(pe.Hint, "pool_mode = session") {
		t.Fatalf("hint: %+v", pe)
	}
	if _, err := conn.Exec(ctx, "EXECUTE p1"); pgCode(err) != "26000" {
		t.Fatalf("EXECUTE: %v", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "PREPARE p2 AS SELECT 2"); pgCode(err) != "0A000" {
		t.Fatalf("PREPARE in a block: %v", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); pgCode(err) != "25P02" {
		t.Fatalf("after the refusal: %v", err)
	}
	_ = tx.Rollback(ctx)
	// Words that merely start like PREPARE pass.
	if _, err := conn.Exec(ctx, "SELECT 1 AS prepared"); err != nil {
		t.Fatal(err)
	}
	// A PREPARE that slips through (not the first statement of a
	// query) never reaches another client: its server is closed after.
	pid := queryInt(t, conn, "SELECT pg_backend_pid()")
	if _, err := conn.Exec(ctx, "SELECT 1; PREPARE p3 AS SELECT 3"); err != nil {
		t.Fatal(err)
	}
	if pid2 := queryInt(t, conn, "SELECT pg_backend_pid()"); pid2 == pid {
		t.Fatal("the server that ran PREPARE was reused")
	}
}

// TestPreparedSessionModeUntouched: in session mode nothing is rewritten
// (SQL PREPARE works, names reach the server as sent).
func TestPreparedSessionModeUntouched(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = session")
	ctx := context.Background()
	conn := in.connect(t, "alice", "alice-pw", "app")
	if _, err := conn.Exec(ctx, "PREPARE p1 AS SELECT 41 + $1", pgx.QueryExecModeSimpleProtocol, 1); err == nil {
		// (pgx sends the argument inline in simple protocol.)
		t.Log("PREPARE with an argument accepted")
	}
	if _, err := conn.Exec(ctx, "PREPARE p2 AS SELECT 42", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, conn, "EXECUTE p2", pgx.QueryExecModeSimpleProtocol); n != 42 {
		t.Fatal(n)
	}
	pc := conn.PgConn()
	if _, err := pc.Prepare(ctx, "raw", "SELECT name FROM pg_prepared_statements WHERE name = 'raw'", nil); err != nil {
		t.Fatal(err)
	}
	r := pc.ExecPrepared(ctx, "raw", nil, nil, nil).Read()
	if r.Err != nil || len(r.Rows) != 1 {
		t.Fatalf("%v %q", r.Err, r.Rows)
	}
}

// TestPgbenchProtocols: pgbench in transaction mode, 50 clients, a pool of
// 5, with each query protocol, select-only and TPC-B-like; no transaction
// may fail.
//
// The TPC-B-like runs use one pgbench thread per client: pgbench prepares
// a statement with a blocking PQprepare at its first use, inside the
// transaction, which stalls every other client of the same thread; when
// those hold all the servers of the pool in open transactions, nobody can
// go on (any transaction pooler, PgBouncer included, deadlocks there).
func TestPgbenchProtocols(t *testing.T) {
	if testing.Short() {
		t.Skip("pgbench runs skipped in -short mode")
	}
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 5\nmax_client_conn = 200")
	env := []string{"PGPASSWORD=alice-pw"}
	pgbench := pgtestPgbench()
	out, err := runCmd(t, 2*time.Minute, env, pgbench, "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", fmt.Sprint(pg.Port), "-U", "alice", "app")
	if err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	for _, proto := range []string{"prepared", "extended", "simple"} {
		for _, script := range [][]string{{"-S", "-j", "2"}, {"-j", "50"}} {
			for run := 0; run < 2; run++ { // the second run finds a warm pool
				args := append([]string{"-c", "50", "-T", "2", "-M", proto, "-h", "127.0.0.1", "-p", fmt.Sprint(in.port), "-U", "alice"}, script...)
				out, err := runCmd(t, time.Minute, env, pgbench, append(args, "app")...)
				if err != nil {
					t.Fatalf("pgbench %v: %v\n%s", args, err, out)
				}
				if !strings.Contains(out, "number of failed transactions: 0 ") {
					t.Fatalf("pgbench %v reported failures:\n%s", args, out)
				}
				for _, line := range strings.Split(out, "\n") {
					if strings.HasPrefix(line, "tps") {
						t.Logf("-M %s %v run %d: %s", proto, script, run, line)
					}
				}
			}
		}
	}
}

// TestPgxPgbouncerSuite runs pgx's own PgBouncer compatibility tests
// (pgbouncer_test.go in github.com/jackc/pgx/v5, and pgconn's cancel test)
// against pgwarden configured like pgx's testsetup/pgbouncer.ini:
// transaction mode, default_pool_size = 2, max_prepared_statements = 200.
func TestPgxPgbouncerSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("pgx's suite skipped in -short mode")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	in := startPooler(t, "auth_type = md5\npool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 100\nmax_prepared_statements = 200")
	env := []string{
		"PGX_TEST_PGBOUNCER_CONN_STRING=" + in.dsn("bob", "bob-pw", "app"),
	}
	for _, pkg := range []struct{ path, run string }{
		{"github.com/jackc/pgx/v5", "Pgbouncer"},
		{"github.com/jackc/pgx/v5/pgconn", "TestConnContextCanceledCancelsRunningQueryOnServer/pgbouncer"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, goBin, "test", "-count=1", "-v", "-run", pkg.run, pkg.path)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("go test %s: %v\n%s", pkg.path, err, out)
		}
		if strings.Contains(string(out), "SKIP") || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("go test %s ran nothing:\n%s", pkg.path, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "--- ") {
				t.Log(strings.TrimSpace(line))
			}
		}
	}
}

// TestSearchPathTracked: search_path is tracked by default
// (track_extra_parameters): a client that starts with its own keeps it on
// whichever server it lands on, and another client never sees it.
func TestSearchPathTracked(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol", "search_path='pg_catalog,\"$user\"'")
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol")
	def := queryString(t, b, "SHOW search_path")
	for i := 0; i < 3; i++ {
		if got := queryString(t, a, "SHOW search_path"); got != `pg_catalog, "$user"` {
			t.Fatalf("client a: search_path %q", got)
		}
		if got := queryString(t, b, "SHOW search_path"); got != def {
			t.Fatalf("client b: search_path %q, want %q", got, def)
		}
	}
}

// TestPreparedLargeMessages: a named statement whose Parse is larger than
// the relay buffers, and Binds of it with a 2.4 MB parameter, which is
// streamed behind the rewritten statement name.
func TestPreparedLargeMessages(t *testing.T) {
	in := startPooler(t, txPool2)
	ctx := context.Background()
	pc := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	query := "SELECT length($1::text) /* " + strings.Repeat("padding ", 40_000) + " */"
	if _, err := pc.Prepare(ctx, "big", query, nil); err != nil {
		t.Fatal(err)
	}
	arg := strings.Repeat("abcdefgh", 300_000)
	for i := 0; i < 3; i++ {
		r := pc.ExecPrepared(ctx, "big", [][]byte{[]byte(arg)}, nil, nil).Read()
		if r.Err != nil || string(r.Rows[0][0]) != fmt.Sprint(len(arg)) {
			t.Fatalf("%v %q", r.Err, r.Rows)
		}
	}
	// Another client lands on a server without the statement: the
	// large Parse is injected there.
	other := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	if _, err := other.Prepare(ctx, "big2", query, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, c := range []*pgconn.PgConn{pc, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "big"
			if c == other {
				name = "big2"
			}
			for i := 0; i < 5; i++ {
				r := c.ExecPrepared(ctx, name, [][]byte{[]byte("xyz")}, nil, nil).Read()
				if r.Err != nil || string(r.Rows[0][0]) != "3" {
					t.Errorf("%s: %v %q", name, r.Err, r.Rows)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestPreparedConsoleCounts: SHOW STATS counts Parses and Binds, SHOW
// CLIENTS and SHOW SERVERS the statements a client and a server hold.
func TestPreparedConsoleCounts(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	pc := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	for i := 0; i < 3; i++ {
		if _, err := pc.Prepare(ctx, fmt.Sprintf("c%d", i), fmt.Sprintf("SELECT %d", i), nil); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 2; j++ {
			if r := pc.ExecPrepared(ctx, fmt.Sprintf("c%d", i), nil, nil, nil).Read(); r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	st := statsRow(t, admin, "SHOW STATS", "app")
	if st["total_client_parse_count"] != "3" || st["total_server_parse_count"] != "3" || st["total_bind_count"] != "6" {
		t.Fatalf("SHOW STATS: %v", st)
	}
	_, _, clients := consoleResult(t, admin, "SHOW CLIENTS")
	found := false
	for _, c := range clients {
		if c["database"] == "app" {
			found = true
			if c["prepared_statements"] != "3" {
				t.Fatalf("SHOW CLIENTS: %v", c)
			}
		}
	}
	_, _, servers := consoleResult(t, admin, "SHOW SERVERS")
	if !found || len(servers) != 1 || servers[0]["prepared_statements"] != "3" {
		t.Fatalf("SHOW SERVERS: %v", servers)
	}
}

// TestCopyLargeMessages: in every pool mode, a COPY FROM STDIN whose
// CopyData messages are 2 MiB each, a COPY TO STDOUT that returns a 2 MiB
// row, and a COPY that fails in the middle of a large message stream.
func TestCopyLargeMessages(t *testing.T) {
	for _, mode := range []string{"session", "transaction", "statement"} {
		t.Run(mode, func(t *testing.T) {
			in := startPooler(t, "auth_type = scram-sha-256\npool_mode = "+mode+"\ndefault_pool_size = 1")
			ctx := context.Background()
			pc := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
			table := "bigcopy_" + mode
			if _, err := pc.Exec(ctx, "DROP TABLE IF EXISTS "+table+"; CREATE TABLE "+table+" (id int, payload text)").ReadAll(); err != nil {
				t.Fatal(err)
			}
			hc, err := pc.Hijack()
			if err != nil {
				t.Fatal(err)
			}
			conn := hc.Conn
			defer conn.Close()
			payload := strings.Repeat("y", 2<<20)
			copyData := func(row string) []byte {
				return msg('d', []byte(row))
			}
			// Two 2 MiB rows, each in one CopyData message.
			req := appendQueryMsg("COPY " + table + " FROM STDIN")
			req = append(req, copyData("1\t"+payload+"\n")...)
			req = append(req, copyData("2\t"+payload+"\n")...)
			req = append(req, 'c', 0, 0, 0, 4)
			if got := roundTrip(t, conn, req); !strings.Contains(got, "C:COPY 2") || strings.Contains(got, "E:") {
				t.Fatalf("COPY FROM STDIN: %s", got)
			}
			// A large row with a bad id: the server fails the COPY.
			req = appendQueryMsg("COPY " + table + " FROM STDIN")
			req = append(req, copyData("x\t"+payload+"\n")...)
			req = append(req, 'c', 0, 0, 0, 4)
			if got := roundTrip(t, conn, req); !strings.Contains(got, "E:22P02") {
				t.Fatalf("bad COPY: %s", got)
			}
			// The client gives up in the middle (CopyFail).
			req = appendQueryMsg("COPY " + table + " FROM STDIN")
			req = append(req, copyData("3\t"+payload+"\n")...)
			req = append(req, msg('f', []byte("the application gave up\x00"))...)
			if got := roundTrip(t, conn, req); !strings.Contains(got, "E:57014") {
				t.Fatalf("CopyFail: %s", got)
			}
			got := roundTrip(t, conn, appendQueryMsg("COPY (SELECT payload FROM "+table+" ORDER BY id) TO STDOUT"))
			if !strings.Contains(got, "C:COPY 2") || !strings.Contains(got, fmt.Sprintf("d:%d", len(payload)+1)) {
				t.Fatalf("COPY TO STDOUT: %s", got)
			}
			if got := roundTrip(t, conn, appendQueryMsg("SELECT count(*) FROM "+table)); !strings.Contains(got, "D") {
				t.Fatalf("after COPY: %s", got)
			}
		})
	}
}

func appendQueryMsg(sql string) []byte { return msg('Q', []byte(sql+"\x00")) }

func msg(typ byte, body []byte) []byte {
	m := make([]byte, 5, 5+len(body))
	m[0] = typ
	binary.BigEndian.PutUint32(m[1:], uint32(4+len(body)))
	return append(m, body...)
}

// roundTrip writes req and reads up to ReadyForQuery, rendering each
// message as its type (CommandComplete with its tag, ErrorResponse with its
// SQLSTATE, CopyData with its length).
func roundTrip(t *testing.T, conn net.Conn, req []byte) string {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	var out []string
	hdr := make([]byte, 5)
	for {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			t.Fatalf("%v after %v", err, out)
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
		if _, err := io.ReadFull(conn, body); err != nil {
			t.Fatal(err)
		}
		switch hdr[0] {
		case 'C':
			out = append(out, "C:"+strings.TrimRight(string(body), "\x00"))
		case 'E':
			code := ""
			for _, f := range strings.Split(string(body), "\x00") {
				if strings.HasPrefix(f, "C") {
					code = f[1:]
				}
			}
			out = append(out, "E:"+code)
		case 'd':
			out = append(out, fmt.Sprintf("d:%d", len(body)))
		case 'Z':
			return strings.Join(out, " ")
		default:
			out = append(out, string(hdr[0]))
		}
	}
}

// TestPreparedReload: max_prepared_statements is reloadable; a lower bound
// applies from the next transaction, and 0 turns tracking off for new
// clients while clients that have statements keep them working.
func TestPreparedReload(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	pc := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	run := func(name string, n int) {
		t.Helper()
		r := pc.ExecPrepared(ctx, name, nil, nil, nil).Read()
		if r.Err != nil || string(r.Rows[0][0]) != fmt.Sprint(n) {
			t.Fatalf("%s: %v %q", name, r.Err, r.Rows)
		}
	}
	serverCount := func() int {
		r, err := pc.Exec(ctx, "SELECT count(*) FROM pg_prepared_statements").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(string(r[0].Rows[0][0]))
		return n
	}
	for i := 0; i < 8; i++ {
		if _, err := pc.Prepare(ctx, fmt.Sprintf("r%d", i), fmt.Sprintf("SELECT %d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := serverCount(); n != 8 {
		t.Fatalf("%d statements on the server, want 8", n)
	}
	in.reload(t, "max_prepared_statements = 3")
	for i := 8; i < 12; i++ {
		if _, err := pc.Prepare(ctx, fmt.Sprintf("r%d", i), fmt.Sprintf("SELECT %d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := serverCount(); n > 3 {
		t.Fatalf("%d statements on the server after the reload, want at most 3", n)
	}
	for i := 0; i < 12; i++ {
		run(fmt.Sprintf("r%d", i), i)
	}
	in.reload(t, "max_prepared_statements = 0")
	run("r1", 1) // still tracked for this client
	fresh := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	if _, err := fresh.Prepare(ctx, "untracked", "SELECT 'as sent'", nil); err != nil {
		t.Fatal(err)
	}
	r, err := fresh.Exec(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'untracked'").ReadAll()
	if err != nil || string(r[0].Rows[0][0]) != "1" {
		t.Fatalf("with max_prepared_statements = 0 the name should reach the server as sent: %v %v", r, err)
	}
}

// TestPreparedWithFlush: named statements in a pipeline that asks for
// results with Flush before its Sync (the pump reads the server then).
func TestPreparedWithFlush(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	ctx := context.Background()
	pc := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	other := pgconnTo(t, in.dsn("alice", "alice-pw", "app"))
	for round := 0; round < 3; round++ {
		p := pc.StartPipeline(ctx)
		name := fmt.Sprintf("fl%d", round)
		p.SendPrepare(name, "SELECT $1::int * 3", nil)
		p.SendFlushRequest()
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		res, err := p.GetResults()
		if sd, ok := res.(*pgconn.StatementDescription); err != nil || !ok || len(sd.ParamOIDs) != 1 {
			t.Fatalf("round %d: %v %v", round, res, err)
		}
		p.SendQueryPrepared(name, [][]byte{[]byte("14")}, nil, nil)
		p.SendFlushRequest()
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		res, err = p.GetResults()
		rr, ok := res.(*pgconn.ResultReader)
		if err != nil || !ok {
			t.Fatalf("round %d: %v %v", round, res, err)
		}
		if r := rr.Read(); r.Err != nil || string(r.Rows[0][0]) != "42" {
			t.Fatalf("round %d: %v %q", round, r.Err, r.Rows)
		}
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		if res, err := p.GetResults(); err != nil {
			t.Fatalf("round %d sync: %v %v", round, res, err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		// The server went back to the pool: the other client uses it
		// with the same name for another statement.
		if _, err := other.Prepare(ctx, name, "SELECT 'other'", nil); err != nil {
			t.Fatal(err)
		}
		if r := other.ExecPrepared(ctx, name, nil, nil, nil).Read(); r.Err != nil || string(r.Rows[0][0]) != "other" {
			t.Fatalf("other: %v %q", r.Err, r.Rows)
		}
		if r := pc.ExecPrepared(ctx, name, [][]byte{[]byte("2")}, nil, nil).Read(); r.Err != nil || string(r.Rows[0][0]) != "6" {
			t.Fatalf("again: %v %q", r.Err, r.Rows)
		}
	}
}
