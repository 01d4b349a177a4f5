package pooler_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestLoopHandOffs: clients of a transaction pool on the event loop (and,
// under make test's second pass, without it) get every kind of request
// answered while they share two servers: simple and extended queries,
// prepared statements, transactions over several requests, COPY in both
// directions (handed to a goroutine), and an answer larger than the socket
// buffers read slowly (the loop hands the rest to a goroutine). Afterwards
// every server is back in the pool.
func TestLoopHandOffs(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2\nquery_wait_timeout = 30")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	setup, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Exec(ctx, "CREATE TABLE IF NOT EXISTS loop_copy (id int, v text)"); err != nil {
		t.Fatal(err)
	}
	setup.Close(ctx)

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loopClientWork(ctx, in.dsn("alice", "alice-pw", "app"), i); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	admin, err := pgx.Connect(ctx, in.dsn("admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	waitFor(t, 10*time.Second, "servers back in the pool", func() bool {
		var active, idle int
		rows, err := admin.Query(ctx, "SHOW POOLS")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, _ := rows.Values()
			desc := rows.FieldDescriptions()
			var db string
			a, id := 0, 0
			for j, f := range desc {
				switch f.Name {
				case "database":
					db = fmt.Sprint(vals[j])
				case "sv_active":
					fmt.Sscan(fmt.Sprint(vals[j]), &a)
				case "sv_idle":
					fmt.Sscan(fmt.Sprint(vals[j]), &id)
				}
			}
			if db == "app" {
				active, idle = a, id
			}
		}
		rows.Close()
		return active == 0 && idle > 0
	})
}

func loopClientWork(ctx context.Context, dsn string, i int) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for round := range 5 {
		// Extended protocol with a named prepared statement.
		var n int
		if err := conn.QueryRow(ctx, "SELECT $1::int + 1", round).Scan(&n); err != nil || n != round+1 {
			return fmt.Errorf("prepared: %d, %v", n, err)
		}
		// Simple protocol.
		if _, err := conn.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("simple: %w", err)
		}
		// A transaction over several requests.
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO loop_copy VALUES ($1, 'tx')", i); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		// COPY FROM STDIN, then COPY TO STDOUT.
		rows := [][]any{{i, "a"}, {i, "b"}}
		if c, err := conn.CopyFrom(ctx, pgx.Identifier{"loop_copy"}, []string{"id", "v"}, pgx.CopyFromRows(rows)); err != nil || c != 2 {
			return fmt.Errorf("copy from: %d, %v", c, err)
		}
		if _, err := conn.PgConn().CopyTo(ctx, discard{}, "COPY (SELECT * FROM loop_copy LIMIT 10) TO STDOUT"); err != nil {
			return fmt.Errorf("copy to: %w", err)
		}
		// An error, then the connection still works.
		if _, err := conn.Exec(ctx, "SELECT 1/0"); err == nil {
			return fmt.Errorf("division by zero succeeded")
		}
	}
	// About 30 MB of answer, read slowly at first: the client's socket
	// fills up while the loop relays it.
	r, err := conn.Query(ctx, "SELECT repeat('x', 1000) FROM generate_series(1, 30000)", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return fmt.Errorf("big: %w", err)
	}
	got := 0
	for r.Next() {
		if got == 0 {
			time.Sleep(200 * time.Millisecond)
		}
		got++
	}
	if err := r.Err(); err != nil || got != 30000 {
		return fmt.Errorf("big: %d rows, %v", got, err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT 42").Scan(&n); err != nil || n != 42 {
		return fmt.Errorf("after big: %d, %v", n, err)
	}
	return nil
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// TestLoopKillInFlight: a client killed while its request runs at the
// server ends at once, and so does one whose server is closed under it
// (KILL closes the servers of the database); neither waits for the answer.
// On the event loop the closed sockets give no readiness, so the loop has
// to be told.
func TestLoopKillInFlight(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	ctx := context.Background()
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	for _, how := range []string{"KILL_CLIENT", "KILL"} {
		app := in.connect(t, "bob", "bob-pw", "app", "default_query_exec_mode=exec")
		queryInt(t, app, "SELECT 1")
		var id string
		_, _, clients := consoleResult(t, admin, "SHOW CLIENTS")
		for _, r := range clients {
			if r["user"] == "bob" {
				id = r["id"]
			}
		}
		sleeping := make(chan error, 1)
		go func() { _, err := app.Exec(ctx, "SELECT pg_sleep(30)"); sleeping <- err }()
		waitFor(t, 10*time.Second, "bob's query to be at the server", func() bool {
			_, _, clients := consoleResult(t, admin, "SHOW CLIENTS")
			for _, r := range clients {
				if r["user"] == "bob" && r["state"] == "active" {
					return true
				}
			}
			return false
		})
		start := time.Now()
		if how == "KILL" {
			consoleOK(t, admin, "KILL app")
		} else {
			consoleOK(t, admin, "KILL_CLIENT "+id)
		}
		select {
		case err := <-sleeping:
			if err == nil {
				t.Errorf("%s: the query in pg_sleep succeeded", how)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the client in pg_sleep was not dropped", how)
		}
		waitClientsGone(t, admin, "bob", 10*time.Second)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", how, d)
		}
		if how == "KILL" {
			consoleOK(t, admin, "RESUME app")
		}
	}
}
