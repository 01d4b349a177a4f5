package pooler_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// cancelKey is the 8-byte key a client got in BackendKeyData.
func cancelKey(conn *pgx.Conn) [8]byte {
	var k [8]byte
	binary.BigEndian.PutUint32(k[:4], conn.PgConn().PID())
	copy(k[4:], conn.PgConn().SecretKey())
	return k
}

// sendCancelKey sends a plaintext CancelRequest with key to port and waits
// until the pooler closes the connection.
func sendCancelKey(t *testing.T, port int, key [8]byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	b := binary.BigEndian.AppendUint32(nil, 16)
	b = binary.BigEndian.AppendUint32(b, 80877102)
	b = append(b, key[:]...)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	_, _ = c.Read(one[:])
}

// startSleep runs pg_sleep(30) on conn; the channel gets its result.
func startSleep(conn *pgx.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)")
		done <- err
	}()
	return done
}

// waitActive waits until PostgreSQL shows n pg_sleep queries running.
func waitActive(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=alice password=alice-pw dbname=app sslmode=disable", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var k int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'").Scan(&k); err != nil {
			t.Fatal(err)
		}
		if k >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isCanceled(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "57014"
}

// TestCancelKeyCarriesPeerID: with peer_id set, the cancel key has it in
// bytes 1 and 2 and a TTL of 3 in the low bits of byte 7 (PgBouncer 1.21's
// layout); byte 0's sign bit is clear.
func TestCancelKeyCarriesPeerID(t *testing.T) {
	in := startPooler(t, "pool_mode = transaction\npeer_id = 300")
	for range 5 {
		conn := in.connect(t, "alice", "alice-pw", "app")
		k := cancelKey(conn)
		if k[1] != 300&0xff || k[2] != 300>>8 || k[7]&3 != 3 || k[0]&0x80 != 0 {
			t.Fatalf("cancel key % x does not carry peer_id 300", k)
		}
	}
}

// TestCancelForwardedToPeer: a CancelRequest sent to the wrong process is
// forwarded to the peer that handed out the key; [peers] is re-read on
// RELOAD; a key that was already forwarded once is never sent on.
func TestCancelForwardedToPeer(t *testing.T) {
	a := startPooler(t, "pool_mode = transaction\npeer_id = 1")
	b := startPooler(t, "pool_mode = transaction\npeer_id = 2")

	conn := a.connect(t, "alice", "alice-pw", "app")
	key := cancelKey(conn)
	// B does not know peer 1 yet: the cancel is dropped there.
	done := startSleep(conn)
	waitActive(t, 1)
	sendCancelKey(t, b.port, key)
	// (B may close the cancel connection before its log line is written.)
	waitFor(t, 5*time.Second, "B to log the unknown peer", func() bool {
		return strings.Contains(b.logs.String(), "no such peer in [peers]")
	})
	// RELOAD with [peers]: now it is forwarded to A, which cancels.
	b.reload(t, fmt.Sprintf("[peers]\n1 = host=%s port=%d\n2 = host=127.0.0.1 port=%d", a.dir, a.port, b.port))
	sendCancelKey(t, b.port, key)
	select {
	case err := <-done:
		if !isCanceled(err) {
			t.Fatalf("query ended with %v, want 57014", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancel forwarded through the peer did not reach the query")
	}
	waitFor(t, 5*time.Second, "B to log the forward", func() bool {
		return strings.Contains(b.logs.String(), "cancel request forwarded to peer")
	})
	// The console lists the peers.
	admin := b.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	var peers []string
	rows, err := admin.Query(context.Background(), "SHOW PEERS")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, port, size int
		var host string
		if err := rows.Scan(&id, &host, &port, &size); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, fmt.Sprintf("%d %s %d", id, host, port))
	}
	if want := []string{fmt.Sprintf("1 %s %d", a.dir, a.port), fmt.Sprintf("2 127.0.0.1 %d", b.port)}; !slices.Equal(peers, want) {
		t.Errorf("SHOW PEERS = %q, want %q", peers, want)
	}

	// A key of peer 3, which both list at the other one: A forwards it
	// to B once (TTL 0), B drops it instead of sending it back.
	a.reload(t, fmt.Sprintf("[peers]\n3 = host=127.0.0.1 port=%d", b.port))
	b.reload(t, fmt.Sprintf("3 = host=127.0.0.1 port=%d", a.port)) // appended to B's [peers]
	stray := [8]byte{0x12, 3, 0, 0x34, 0x56, 0x78, 0x9a, 0xbf}
	sendCancelKey(t, a.port, stray)
	deadline := time.Now().Add(5 * time.Second)
	// A logs its forward after the send, so B may have dropped the key
	// before A's line is written: wait for both.
	for !strings.Contains(b.logs.String(), "TTL exhausted") || !strings.Contains(a.logs.String(), "cancel request forwarded to peer") {
		if time.Now().After(deadline) {
			t.Fatal("the stray key was not forwarded by A and dropped by B")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(a.logs.String(), "cancel request forwarded to peer"); n != 1 {
		t.Errorf("A forwarded %d times, want once", n)
	}
	if n := strings.Count(b.logs.String(), "cancel request forwarded to peer"); n != 1 {
		t.Errorf("B forwarded %d times in all, want once (the first test only)", n)
	}
}

// TestSOReuseport: two servers with so_reuseport = 1 share one TCP port,
// each with its own Unix socket; without it the second cannot bind.
func TestSOReuseport(t *testing.T) {
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("so_reuseport = 1\nlisten_port = %d", port)
	a := startPooler(t, extra)
	b := startPooler(t, extra)
	a.port, b.port = port, port
	if len(a.srv.Addrs()) != 2 || len(b.srv.Addrs()) != 2 {
		t.Fatalf("addrs %v and %v, want a TCP and a Unix listener each", a.srv.Addrs(), b.srv.Addrs())
	}
	for range 10 {
		conn := a.connect(t, "alice", "alice-pw", "app")
		var one int
		if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
	}
	// Without so_reuseport, a third one cannot bind the port.
	in := startPooler(t, "pool_mode = transaction")
	cfg := *in.srv.Config()
	cfg.ListenPort = port
	srv, err := pooler.New(&cfg, pooler.Options{Logger: nil})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Listen without so_reuseport on a shared port: %v", err)
		srv.Shutdown(pooler.ShutdownImmediate)
	}
}

// TestShutdownTimeout: during SHUTDOWN WAIT_FOR_CLIENTS a transaction-mode
// client goes on running transactions until shutdown_timeout has passed;
// then an idle one is closed with 57P01 and one inside a transaction can
// still COMMIT before it is closed. /readyz is false from the start; the
// console still works on the Unix socket, other sign-ins there are refused.
func TestShutdownTimeout(t *testing.T) {
	in := startPooler(t, "pool_mode = transaction\nshutdown_timeout = 2")
	idle := in.connect(t, "alice", "alice-pw", "app")
	busy := in.connect(t, "alice", "alice-pw", "app")
	ctx := context.Background()
	start := time.Now()
	in.srv.Shutdown(pooler.ShutdownWaitForClients)
	if in.srv.Ready() {
		t.Error("Ready() is true during a shutdown")
	}
	if _, err := idle.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a query within shutdown_timeout failed: %v", err)
	}
	if _, err := busy.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	unix := fmt.Sprintf("host=%s port=%d user=alice password=alice-pw dbname=app", in.dir, in.srv.Config().ListenPort)
	if c, err := pgx.Connect(ctx, unix); err == nil {
		c.Close(ctx)
		t.Error("a new sign-in on the Unix socket was accepted during the drain")
	} else if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Errorf("sign-in on the Unix socket during the drain: %v, want 57P01", err)
	}
	console, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=admin password=admin-pw dbname=pgbouncer", in.dir, in.srv.Config().ListenPort))
	if err != nil {
		t.Fatalf("console on the Unix socket during the drain: %v", err)
	}
	defer console.Close(ctx)
	// After shutdown_timeout the idle client is closed.
	var err2 error
	for time.Since(start) < 10*time.Second {
		if _, err2 = idle.Exec(ctx, "SELECT 1"); err2 != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var pe *pgconn.PgError
	if !errors.As(err2, &pe) || pe.Code != "57P01" {
		t.Fatalf("idle client after shutdown_timeout: %v, want 57P01", err2)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("the idle client was closed after %v, before shutdown_timeout", el)
	}
	select {
	case <-in.srv.Done():
		t.Fatal("the drain ended with a client inside a transaction")
	default:
	}
	// A cancel reaches a draining query through the Unix socket (where
	// peers send it).
	done := startSleep(busy)
	waitActive(t, 1)
	sock := filepath.Join(in.dir, ".s.PGSQL."+strconv.Itoa(in.srv.Config().ListenPort))
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the Unix socket is closed during the drain: %v", err)
	}
	key := cancelKey(busy)
	msg := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 16), 80877102)
	_, _ = c.Write(append(msg, key[:]...))
	c.Close()
	select {
	case err := <-done:
		if !isCanceled(err) {
			t.Fatalf("query during the drain ended with %v, want 57014", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancel sent to the Unix socket during the drain did not reach the query")
	}
	if _, err := busy.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("COMMIT after shutdown_timeout: %v", err)
	}
	select {
	case <-in.srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not end once the last client's transaction was over")
	}
}

// TestShutdownAcceptGrace: for shutdown_accept_grace after a drain starts,
// /readyz is false but new clients are still accepted and served; then the
// TCP listener closes.
func TestShutdownAcceptGrace(t *testing.T) {
	in := startPooler(t, "pool_mode = transaction\nshutdown_accept_grace = 1.5\nshutdown_timeout = 5")
	start := time.Now()
	in.srv.Shutdown(pooler.ShutdownWaitForClients)
	if in.srv.Ready() {
		t.Error("Ready() is true during the grace")
	}
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol")
	if _, err := conn.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatalf("a client accepted during the grace failed: %v", err)
	}
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Skipf("the machine is too slow for this check (%v)", el)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(in.port)), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the TCP listener is still open 10s after the grace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Errorf("the TCP listener closed after %v, before shutdown_accept_grace", el)
	}
}
