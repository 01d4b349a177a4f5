package pooler_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler"
)

// Idle clients are parked (no goroutine) after a second between
// transactions and resume transparently when they send again.
func TestIdleClientsParkAndResume(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("idle clients are parked on Linux only")
	}
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2")
	const n = 20
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		conns[i] = in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
		queryInt(t, conns[i], "SELECT 1")
	}
	waitFor(t, 10*time.Second, "every idle client to be parked", func() bool { return in.srv.ParkedClients() == n })

	// Every parked client resumes: plain queries, a transaction, and many
	// at once through a pool of two servers.
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx, err := c.Begin(context.Background())
			if err != nil {
				t.Errorf("client %d: begin: %v", i, err)
				return
			}
			var got int
			if err := tx.QueryRow(context.Background(), "SELECT $1::int", i).Scan(&got); err != nil || got != i {
				t.Errorf("client %d: got %d, %v", i, got, err)
			}
			if err := tx.Commit(context.Background()); err != nil {
				t.Errorf("client %d: commit: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if got := in.srv.ParkedClients(); got > n {
		t.Fatalf("ParkedClients = %d with %d clients", got, n)
	}

	// Parked again, then closed by the client: the server forgets them.
	waitFor(t, 10*time.Second, "the clients to be parked again", func() bool { return in.srv.ParkedClients() == n })
	for _, c := range conns[:n/2] {
		c.Close(context.Background())
	}
	waitFor(t, 10*time.Second, "closed clients to leave", func() bool { return in.srv.ParkedClients() == n-n/2 })
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	waitFor(t, 10*time.Second, "SHOW CLIENTS to list only the open clients", func() bool {
		rows, err := admin.Query(context.Background(), "SHOW CLIENTS")
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for rows.Next() {
			k++
		}
		return rows.Err() == nil && k == n-n/2+1 // and the console session itself
	})
}

// client_idle_timeout still closes a parked client, with its error.
func TestParkedClientIdleTimeout(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("idle clients are parked on Linux only")
	}
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nclient_idle_timeout = 3")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, conn, "SELECT 1")
	waitFor(t, 10*time.Second, "the client to be parked", func() bool { return in.srv.ParkedClients() == 1 })
	waitFor(t, 10*time.Second, "the parked client to be closed", func() bool { return in.srv.ParkedClients() == 0 })
	_, err := conn.Exec(context.Background(), "SELECT 1")
	if err == nil {
		t.Fatal("idle client was not disconnected")
	}
	if !strings.Contains(pgMessage(err), "client_idle_timeout") && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("got %v", err)
	}
}

// A shutdown closes parked clients too, and Serve returns.
func TestShutdownWithParkedClients(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("idle clients are parked on Linux only")
	}
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	for range 5 {
		c := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
		queryInt(t, c, "SELECT 1")
	}
	waitFor(t, 10*time.Second, "the clients to be parked", func() bool { return in.srv.ParkedClients() == 5 })
	in.srv.Shutdown(pooler.ShutdownWaitForClients)
	select {
	case <-in.srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not finish with parked clients")
	}
}
