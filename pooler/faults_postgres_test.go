package pooler_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// Faults of PostgreSQL itself, on a cluster of the test's own (it is
// restarted, and its max_connections is small): pg_ctl restart -m fast and
// -m immediate under load, and every connection slot taken.

// loadResult is what a load run saw.
type loadResult struct {
	mu       sync.Mutex
	ok       int
	errs     map[string]int // "SQLSTATE message" → count
	firstErr map[string]error
	// after is each worker's first success after mark (PostgreSQL
	// ready again).
	after map[int]time.Time
	mark  time.Time
}

// runLoad runs workers clients through pgwarden, each doing short
// transactions in a loop and reconnecting after any error, until stop is
// closed.
func runLoad(e *faultEnv, workers int, stop <-chan struct{}) (*loadResult, *sync.WaitGroup) {
	lr := &loadResult{errs: map[string]int{}, firstErr: map[string]error{}, after: map[int]time.Time{}}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var c *pgx.Conn
			defer func() {
				if c != nil {
					c.Close(context.Background())
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if c == nil {
					c, err = e.connect(5 * time.Second)
				}
				if err == nil {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err = c.Exec(ctx, "SELECT pg_sleep(0.005)")
					cancel()
				}
				now := time.Now()
				lr.mu.Lock()
				if err == nil {
					lr.ok++
					if !lr.mark.IsZero() && now.After(lr.mark) {
						if _, seen := lr.after[w]; !seen {
							lr.after[w] = now
						}
					}
				} else {
					code, msg := errState(err)
					phase := "before PostgreSQL was ready again"
					if !lr.mark.IsZero() && now.After(lr.mark) {
						phase = "after PostgreSQL was ready again"
					}
					k := phase + "\x00" + code + " " + msg
					if lr.errs[k] == 0 {
						lr.firstErr[k] = err
					}
					lr.errs[k]++
				}
				lr.mu.Unlock()
				if err != nil {
					if c != nil {
						c.Close(context.Background())
						c = nil
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}(w)
	}
	return lr, &wg
}

func TestFaultPostgres(t *testing.T) {
	cluster := pgtest.StartT(t, pgtest.Options{
		MaxConnections: 10,
		ExtraConf:      map[string]string{"superuser_reserved_connections": "2"},
	})
	for _, mode := range []string{"fast", "immediate"} {
		t.Run("restart_"+mode, func(t *testing.T) { testRestartUnderLoad(t, cluster, mode) })
	}
	t.Run("max_connections", func(t *testing.T) { testMaxConnections(t, cluster) })
}

// testRestartUnderLoad restarts PostgreSQL (pg_ctl restart -m mode) while
// six clients run transactions through a pool of three.
func testRestartUnderLoad(t *testing.T, cluster *pgtest.Cluster, mode string) {
	const workers = 6
	e := newFaultEnv(t, "pg_ctl restart -m "+mode+" under load", faultSetup{
		cluster: cluster, dbname: "postgres", noProxy: true,
		extra: "pool_mode = transaction\ndefault_pool_size = 3\nserver_login_retry = 0.5\nserver_connect_timeout = 2\nquery_wait_timeout = 5",
	})
	e.baseline()
	stop := make(chan struct{})
	lr, wg := runLoad(e, workers, stop)
	waitFor(t, 10*time.Second, "the load to get going", func() bool {
		lr.mu.Lock()
		defer lr.mu.Unlock()
		return lr.ok >= 50
	})
	start := time.Now()
	if err := cluster.Restart(mode); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	ready := time.Now()
	t.Logf("pg_ctl restart -m %s took %v", mode, ready.Sub(start).Round(time.Millisecond))
	lr.mu.Lock()
	lr.mark = ready
	lr.mu.Unlock()
	waitFor(t, 15*time.Second, "every client to run a transaction after the restart", func() bool {
		lr.mu.Lock()
		defer lr.mu.Unlock()
		return len(lr.after) == workers
	})
	close(stop)
	wg.Wait()
	var first, last time.Time
	for _, at := range lr.after {
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	e.res.RecoveryMS = ms(first.Sub(ready))
	keys := make([]string, 0, len(lr.errs))
	for k := range lr.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		phase, _, _ := strings.Cut(k, "\x00")
		o := e.observe(fmt.Sprintf("load client error %s (%d times)", phase, lr.errs[k]), lr.firstErr[k], 0)
		if o.SQLState == "57P03" {
			// Starting up, recovering, shutting down: clients wait
			// for that (query_wait_timeout = 5) rather than fail.
			t.Errorf("a client got PostgreSQL's 57P03 instead of waiting: %s", o.Message)
		}
	}
	e.res.Notes = fmt.Sprintf("pg_ctl restart took %v; %d transactions succeeded in all; after PostgreSQL was ready, the first client succeeded in %v and all %d in %v",
		ready.Sub(start).Round(time.Millisecond), lr.ok, first.Sub(ready).Round(time.Millisecond), workers, last.Sub(ready).Round(time.Millisecond))
	t.Log(e.res.Notes)
	e.checkLeaks()
}

// testMaxConnections fills every connection slot PostgreSQL has for
// ordinary roles, then frees them.
func testMaxConnections(t *testing.T, cluster *pgtest.Cluster) {
	e := newFaultEnv(t, "PostgreSQL at max_connections", faultSetup{
		cluster: cluster, dbname: "postgres", noProxy: true,
		extra: "pool_mode = transaction\ndefault_pool_size = 3\nserver_login_retry = 0.5",
	})
	e.baseline()
	ctx := bg(t, 60*time.Second)
	// A keeps the pool's one server busy-able; it exists before the
	// slots run out.
	a := e.mustConnect()
	if _, err := a.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CreateRole(ctx, "hog", "hog-pw", ""); err != nil {
		t.Fatal(err)
	}
	var hogs []*pgx.Conn
	defer func() {
		for _, h := range hogs {
			h.Close(context.Background())
		}
	}()
	for {
		h, err := cluster.Connect(ctx, "hog", "hog-pw", "postgres")
		if err != nil {
			if code, _ := errState(err); code != "53300" {
				t.Fatalf("hog %d: %v", len(hogs), err)
			}
			break
		}
		hogs = append(hogs, h)
		if len(hogs) > 20 {
			t.Fatal("max_connections does not seem to apply")
		}
	}
	t.Logf("%d hogs took the free slots", len(hogs))
	// The pool's existing server carries on.
	start := time.Now()
	_, err := a.Exec(ctx, "SELECT 1")
	e.observe("client whose pool already has a server, PostgreSQL full", err, time.Since(start))
	if err != nil {
		t.Errorf("query on an existing server while PostgreSQL is full: %v", err)
	}
	// A second server is needed while A holds the first.
	if _, err := a.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err = e.query("SELECT 1", 10*time.Second)
	e.observe("client needing a new server while PostgreSQL is full", err, time.Since(start))
	if code, _ := errState(err); code != "53300" {
		t.Errorf("new server while PostgreSQL is full: %v, want SQLSTATE 53300", err)
	}
	start = time.Now()
	err = e.query("SELECT 1", 10*time.Second)
	e.observe("next client within server_login_retry", err, time.Since(start))
	if _, err := a.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hogs {
		h.Close(context.Background())
	}
	hogs = nil
	freed := time.Now()
	// Recovery: two servers at once again.
	if _, err := a.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	e.recoverAfter(freed, 10*time.Second)
	if _, err := a.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	a.Close(context.Background())
	e.checkLeaks()
}
