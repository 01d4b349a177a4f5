package pooler_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler"
)

// TestNoGoroutineLeak: after clients come and go in every pool mode (and
// some vanish mid-transaction), the pooler's goroutines return to their
// baseline, and a shutdown leaves none behind.
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	for _, mode := range []string{"session", "transaction", "statement"} {
		in := startPooler(t, "auth_type = scram-sha-256\npool_mode = "+mode+"\ndefault_pool_size = 3")
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				conn, err := pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "app", "default_query_exec_mode=exec"))
				if err != nil {
					t.Error(err)
					return
				}
				for j := 0; j < 5; j++ {
					if _, err := conn.Exec(context.Background(), "SELECT 1"); err != nil {
						t.Error(err)
					}
				}
				if i%3 == 0 && mode != "statement" {
					// Vanish inside a transaction.
					_, _ = conn.Exec(context.Background(), "BEGIN")
					conn.PgConn().Conn().Close()
					return
				}
				conn.Close(context.Background())
			}(i)
		}
		wg.Wait()
		in.srv.Shutdown(pooler.ShutdownImmediate)
		select {
		case <-in.srv.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("server did not stop")
		}
	}
	waitFor(t, 10*time.Second, "goroutines to return to the baseline", func() bool {
		return runtime.NumGoroutine() <= base+2
	})
}
