package pooler_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Clients queued for a full pool keep being served while the pool's servers
// are terminated under them: each lost server frees a slot that a queued
// client fills, and nobody waits forever.
func TestQueuedClientsSurviveServerLoss(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2\nquery_wait_timeout = 30")
	super, err := pg.Connect(context.Background(), pg.SuperUser, pg.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(context.Background())

	const clients, rounds = 24, 40
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	hung := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for range rounds {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				if conn == nil {
					c, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app", "default_query_exec_mode=exec"))
					if err != nil {
						cancel()
						hung <- err
						return
					}
					conn = c
				}
				_, err := conn.Exec(ctx, "SELECT pg_sleep(0.002)")
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout"):
					hung <- err
					return
				default:
					// Our server was terminated mid-query: a new
					// connection, as an application would.
					failed.Add(1)
					conn.Close(context.Background())
					conn = nil
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for kill := 0; ; kill++ {
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
			if kill < 10 {
				_, _ = super.Exec(context.Background(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'alice' AND datname = 'app' AND pid <> pg_backend_pid()")
			}
			continue
		}
		break
	}
	close(hung)
	for err := range hung {
		t.Errorf("a client waited too long: %v", err)
	}
	if ok.Load() < clients*rounds/2 {
		t.Errorf("%d transactions succeeded (%d failed), want most of %d", ok.Load(), failed.Load(), clients*rounds)
	}
	t.Logf("%d transactions, %d lost with their server", ok.Load(), failed.Load())

	// Nobody is left waiting.
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	rows, err := admin.Query(context.Background(), "SHOW POOLS")
	if err != nil {
		t.Fatal(err)
	}
	vals, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vals {
		if v["database"] == "app" && v["user"] == "alice" && fmt.Sprint(v["cl_waiting"]) != "0" {
			t.Errorf("cl_waiting %v after the run", v["cl_waiting"])
		}
	}
}

// Several clients queued for a busy server all get query_wait_timeout on
// time, and the pool serves the next client normally afterwards.
func TestQueuedClientsTimeOut(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 1")
	ctx := context.Background()
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	start := time.Now()
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app", "default_query_exec_mode=exec"))
			if err != nil {
				errs <- err
				return
			}
			defer b.Close(ctx)
			_, err = b.Exec(ctx, "SELECT 1")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil || !strings.Contains(pgMessage(err), "query_wait_timeout") {
			t.Errorf("got %v, want query_wait_timeout", err)
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("timeouts after %v", el)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	c := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, c, "SELECT 1")
}
