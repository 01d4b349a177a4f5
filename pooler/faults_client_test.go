package pooler_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Misbehaving clients (see faults_test.go for what each scenario records).
// These talk to pgwarden over raw sockets, or take the socket of a pgx
// connection over once it is signed in.

// dialPooler opens a raw TCP connection to pgwarden.
func (e *faultEnv) dialPooler() (net.Conn, error) {
	return net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", e.in.port), 5*time.Second)
}

// TestFaultSilentClients: thousands of clients connect and never send a
// startup packet. They cost a goroutine each until client_login_timeout
// closes them; meanwhile other clients sign in and run queries as usual.
func TestFaultSilentClients(t *testing.T) {
	n := 2000
	if longFaults() {
		n = 5000
	}
	e := newFaultEnv(t, "clients that never send a startup packet", faultSetup{
		extra: "pool_mode = transaction\nclient_login_timeout = 2",
	})
	// Each silent client is two descriptors here (both ends are in this
	// process); leave room for the rest.
	if max := noFileLimit(t)/2 - 256; n > max {
		t.Logf("RLIMIT_NOFILE allows %d silent clients, not %d", max, n)
		n = max
	}
	e.baseline()
	var ms0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	opened := time.Now()
	for i := 0; i < n; i++ {
		c, err := e.dialPooler()
		if err != nil {
			t.Fatalf("silent client %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	t.Logf("%d silent clients connected in %v", n, time.Since(opened).Round(time.Millisecond))
	// Everyone else carries on.
	start := time.Now()
	err := e.query("SELECT 1", 5*time.Second)
	e.observe(fmt.Sprintf("a normal client while %d silent ones are connected", n), err, time.Since(start))
	if err != nil {
		t.Fatal(err)
	}
	var ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	perConn := (int64(ms1.HeapInuse+ms1.StackInuse) - int64(ms0.HeapInuse+ms0.StackInuse)) / int64(n)
	// Each is closed with client_login_timeout.
	var wg sync.WaitGroup
	var worst atomic.Int64
	errs := make(chan error, n)
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			err := readUntilError(c, time.Now().Add(10*time.Second))
			if el := time.Since(opened); int64(el) > worst.Load() {
				worst.Store(int64(el))
			}
			errs <- err
		}(c)
	}
	wg.Wait()
	close(errs)
	var first error
	byErr := map[string]int{}
	for err := range errs {
		code, msg := errState(err)
		byErr[code+" "+msg]++
		if first == nil {
			first = err
		}
	}
	e.observe(fmt.Sprintf("%d silent clients, client_login_timeout = 2 (the slowest was closed this long after the first connected)", n), first, time.Duration(worst.Load()))
	if len(byErr) != 1 {
		t.Errorf("silent clients were closed in different ways: %v", byErr)
	}
	var we *wireError
	if !errors.As(first, &we) || we.code != "08P01" || we.msg != "client_login_timeout" {
		t.Errorf("silent client got %v, want 08P01 client_login_timeout", first)
	}
	if time.Duration(worst.Load()) > 8*time.Second {
		t.Errorf("the last silent client was closed %v after they connected (client_login_timeout = 2)", time.Duration(worst.Load()))
	}
	e.res.Notes = fmt.Sprintf("heap+stack per pending connection ≈ %d bytes (goroutine, socket, buffers; client and pooler share the process)", perConn)
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	e.checkLeaks()
}

// TestFaultStalledClients: clients that send part of a message and stop:
// half a startup packet; half a query that fits pgwarden's relay buffer
// (it waits for the rest before taking a server, so the stall holds none
// and client_idle_timeout ends it); and half of a query too large for the
// buffer, which is streamed to a server as it comes and holds that server
// until query_timeout.
func TestFaultStalledClients(t *testing.T) {
	e := newFaultEnv(t, "clients that send half a message and stall", faultSetup{
		extra: "pool_mode = transaction\ndefault_pool_size = 1\nclient_login_timeout = 1\nclient_idle_timeout = 2\nquery_timeout = 1\nquery_wait_timeout = 5",
	})
	e.baseline()

	c, err := e.dialPooler()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pkt := startupPacket("user", e.role, "database", "app")
	if _, err := c.Write(pkt[:len(pkt)/2]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = readUntilError(c, time.Now().Add(10*time.Second))
	el := time.Since(start)
	e.observe("half a startup packet, then nothing; client_login_timeout = 1", err, el)
	if code, _ := errState(err); code != "08P01" || el > 3*time.Second {
		t.Errorf("half a startup packet: %v after %v", err, el)
	}
	c.Close()

	for _, tc := range []struct {
		what      string
		size, cut int
		code      string
	}{
		{"half of a 100-byte query after signing in, then nothing; client_idle_timeout = 2", 100, 15, "08P01"},
		{"half of a 100 kB query (larger than the relay buffer) after signing in, then nothing; query_timeout = 1", 100_000, 50_000, "57014"},
	} {
		a := e.mustConnect()
		if _, err := a.Exec(bg(t, 10*time.Second), "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		raw := takeOver(a)
		q := appendQueryMsg("SELECT 1 /*" + strings.Repeat("-", tc.size-16) + "*/")
		if _, err := raw.Write(q[:tc.cut]); err != nil {
			t.Fatal(err)
		}
		stalled := time.Now()
		// Another client wants the pool's only server meanwhile.
		other := make(chan error, 1)
		var otherTook atomic.Int64
		go func() {
			err := e.query("SELECT 1", 10*time.Second)
			otherTook.Store(int64(time.Since(stalled)))
			other <- err
		}()
		err = readUntilError(raw, time.Now().Add(10*time.Second))
		el = time.Since(stalled)
		e.observe(tc.what, err, el)
		if code, _ := errState(err); code != tc.code || el > 4*time.Second {
			t.Errorf("%s: %v after %v", tc.what, err, el)
		}
		err = <-other
		e.observe("another client wanting the pool's only server meanwhile", err, time.Duration(otherTook.Load()))
		if err != nil {
			t.Errorf("the client queued behind a stalled one: %v", err)
		}
		raw.Close()
		a.Close(context.Background())
	}
	e.checkLeaks()
}

// TestFaultSlowReader: a client asks for a large result and stops reading.
// pgwarden must stop reading the server too (backpressure), so its memory
// stays flat, and query_timeout must still end the query.
func TestFaultSlowReader(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			e := newFaultEnv(t, "client stops reading a large result ("+mode+" mode)", faultSetup{
				extra: "pool_mode = " + mode + "\ndefault_pool_size = 2\nquery_timeout = 2",
			})
			e.baseline()
			a := e.mustConnect()
			if _, err := a.Exec(bg(t, 10*time.Second), "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			raw := takeOver(a)
			runtime.GC()
			var ms0 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			// 400 MB of rows, of which the client reads none.
			if _, err := raw.Write(appendQueryMsg("SELECT repeat('x', 8192) FROM generate_series(1, 50000)")); err != nil {
				t.Fatal(err)
			}
			sent := func() int64 {
				for _, r := range e.console("SHOW STATS") {
					if r["database"] == "app" {
						return atoi(t, r["total_sent"])
					}
				}
				return -1
			}
			// Wait until the flow stops: the socket buffers are full.
			prev := int64(-1)
			waitFor(t, 10*time.Second, "the result to stop flowing", func() bool {
				time.Sleep(100 * time.Millisecond)
				cur := sent()
				stuck := cur > 0 && cur == prev
				prev = cur
				return stuck
			})
			var ms1 runtime.MemStats
			runtime.ReadMemStats(&ms1)
			growth := int64(ms1.HeapInuse) - int64(ms0.HeapInuse)
			t.Logf("forwarded %d bytes before backpressure held the server; heap grew %d bytes", prev, growth)
			if prev > 64<<20 {
				t.Errorf("pgwarden forwarded %d bytes to a client that reads nothing", prev)
			}
			if growth > 32<<20 {
				t.Errorf("heap grew %d bytes while a client did not read its result", growth)
			}
			e.res.Notes = fmt.Sprintf("forwarded %d bytes of a 400 MB result before the flow stopped; heap grew %d bytes", prev, growth)
			// query_timeout (2 s from the query's start) ends it.
			start := time.Now()
			waitFor(t, 10*time.Second, "the server connection to be closed", func() bool { return e.backends() == 0 })
			e.observe("client not reading a 400 MB result: time until its server connection was closed, query_timeout = 2", nil, time.Since(start))
			// What the client finds once it reads again: the rows that
			// were in the socket buffers, then the end of the
			// connection (no ErrorResponse can follow a row cut short).
			err := readUntilError(raw, time.Now().Add(10*time.Second))
			e.observe("the stalled client, reading again after its server was closed", err, time.Since(start))
			if err == nil {
				t.Error("the stalled client's connection did not end")
			}
			raw.Close()
			a.Close(context.Background())
			e.checkLeaks()
		})
	}
}

// TestFaultClientVanishes: clients disappear (TCP RST, no Terminate) inside
// a transaction: while idle in it, and while a query of it runs. The
// server connection must be closed or cleaned, never handed on dirty.
func TestFaultClientVanishes(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			e := newFaultEnv(t, "client disappears mid-transaction ("+mode+" mode)", faultSetup{
				extra: "pool_mode = " + mode + "\ndefault_pool_size = 1\nquery_wait_timeout = 10",
			})
			e.baseline()
			ctx := bg(t, 30*time.Second)
			check := func(what string, vanished time.Time) {
				t.Helper()
				b := e.mustConnect()
				var temp *string
				err := b.QueryRow(ctx, "SELECT to_regclass('pg_temp.dirty')::text").Scan(&temp)
				e.observe(what+": next client on the pool's only server", err, time.Since(vanished))
				if err != nil {
					t.Fatal(err)
				}
				// The server's own ReadyForQuery status after that query.
				if st := b.PgConn().TxStatus(); st != 'I' || temp != nil {
					t.Errorf("%s: the next client got a dirty server (transaction status %q, temp table: %v)", what, st, temp != nil)
				}
				b.Close(context.Background())
			}

			a := e.mustConnect()
			if _, err := a.Exec(ctx, "BEGIN; CREATE TEMP TABLE dirty (x int); INSERT INTO dirty VALUES (1)"); err != nil {
				t.Fatal(err)
			}
			rst(takeOver(a))
			check("vanished while idle in a transaction", time.Now())

			a = e.mustConnect()
			if _, err := a.Exec(ctx, "BEGIN; CREATE TEMP TABLE dirty (x int)"); err != nil {
				t.Fatal(err)
			}
			raw := takeOver(a)
			if _, err := raw.Write(appendQueryMsg("SELECT pg_sleep(0.5)")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // let the query reach the server
			rst(raw)
			check("vanished while a query of its transaction ran (pg_sleep(0.5))", time.Now())
			e.recoverAfter(time.Now(), 10*time.Second)
			e.checkLeaks()
		})
	}
}

// TestFaultCancelFlood: thousands of CancelRequests with random keys. None
// may reach a server (no connection to PostgreSQL is opened for them), a
// running query is not cancelled, and a real cancel still works after.
func TestFaultCancelFlood(t *testing.T) {
	n, workers := 3000, 100
	if longFaults() {
		n = 20000
	}
	e := newFaultEnv(t, "CancelRequest flood with random keys", faultSetup{
		extra: "pool_mode = transaction\ndefault_pool_size = 2",
	})
	e.baseline()
	ctx := bg(t, 60*time.Second)
	a := e.mustConnect()
	running := make(chan error, 1)
	var ranFor atomic.Int64
	go func() {
		t0 := time.Now()
		_, err := a.Exec(ctx, "SELECT pg_sleep(1)")
		ranFor.Store(int64(time.Since(t0)))
		running <- err
	}()
	before := e.proxy.Accepted()
	start := time.Now()
	var wg sync.WaitGroup
	var slowest atomic.Int64
	var failed atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/workers; i++ {
				var key [8]byte
				_, _ = rand.Read(key[:])
				t0 := time.Now()
				c, err := e.dialPooler()
				if err != nil {
					failed.Add(1)
					continue
				}
				b := binary.BigEndian.AppendUint32(nil, 16)
				b = binary.BigEndian.AppendUint32(b, 80877102)
				b = append(b, key[:]...)
				_, _ = c.Write(b)
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					failed.Add(1)
				}
				c.Close()
				if d := time.Since(t0); int64(d) > slowest.Load() {
					slowest.Store(int64(d))
				}
			}
		}()
	}
	wg.Wait()
	flood := time.Since(start)
	t.Logf("%d random-key cancels in %v, slowest %v, %d not closed cleanly", n, flood.Round(time.Millisecond), time.Duration(slowest.Load()).Round(time.Millisecond), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d cancel connections were not closed with EOF", failed.Load())
	}
	if got := e.proxy.Accepted() - before; got != 0 {
		t.Errorf("random-key cancels opened %d connections to PostgreSQL", got)
	}
	err := <-running
	e.observe(fmt.Sprintf("pg_sleep(1) running during %d random-key cancels", n), err, time.Duration(ranFor.Load()))
	if err != nil {
		t.Errorf("a query was disturbed by random-key cancels: %v", err)
	}
	// A real cancel still works.
	done := make(chan error, 1)
	go func() {
		_, err := a.Exec(ctx, "SELECT pg_sleep(10)")
		done <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep(10) to run", func() bool {
		rows := e.console("SHOW SERVERS")
		for _, r := range rows {
			if r["user"] == e.role && r["state"] == "active" {
				return true
			}
		}
		return false
	})
	t0 := time.Now()
	if err := a.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-done
	e.observe("a genuine cancel after the flood", err, time.Since(t0))
	if code, _ := errState(err); code != "57014" {
		t.Errorf("genuine cancel: %v", err)
	}
	e.res.Notes = fmt.Sprintf("%d cancels with random keys from %d connections at once in %v, each closed with EOF within %v; no connection opened to PostgreSQL", n, workers, flood.Round(time.Millisecond), time.Duration(slowest.Load()).Round(time.Millisecond))
	a.Close(context.Background())
	e.checkLeaks()
}
