package pooler_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// These tests wait past a configured timeout on purpose: the waits are the
// thing under test, not readiness polling.

func serverConnCount(t *testing.T, user string) int {
	t.Helper()
	c, err := pg.Connect(context.Background(), pg.SuperUser, pg.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'", user).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClientIdleTimeout(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nclient_idle_timeout = 1")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, conn, "SELECT 1")
	time.Sleep(1500 * time.Millisecond)
	_, err := conn.Exec(context.Background(), "SELECT 1")
	if err == nil {
		t.Fatal("idle client was not disconnected")
	}
	if !strings.Contains(pgMessage(err), "client_idle_timeout") && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("got %v", err)
	}
}

func TestIdleTransactionTimeout(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nidle_transaction_timeout = 1\ndefault_pool_size = 1")
	ctx := context.Background()
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	_, err := conn.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatal("idle transaction was not ended")
	}
	if !strings.Contains(pgMessage(err), "idle transaction timeout") && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("got %v", err)
	}
	// The pool's only server was closed, not handed on dirty.
	other := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	var inTx bool
	if err := other.QueryRow(ctx, "SELECT clock_timestamp() - now() > interval '1 second'").Scan(&inTx); err != nil {
		t.Fatal(err)
	}
	if inTx {
		t.Fatal("the next client landed inside the abandoned transaction")
	}
}

func TestQueryTimeout(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nquery_timeout = 1")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	start := time.Now()
	_, err := conn.Exec(context.Background(), "SELECT pg_sleep(10)")
	if err == nil || !strings.Contains(pgMessage(err), "query timeout") {
		t.Fatalf("got %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("query_timeout took %v", el)
	}
	other := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	if n := queryInt(t, other, "SELECT 3"); n != 3 {
		t.Fatal(n)
	}
}

func TestServerIdleTimeout(t *testing.T) {
	// idler is used by this test only, so other tests' connections do not
	// count.
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nserver_idle_timeout = 1")
	conn := in.connect(t, "idler", "idler-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, conn, "SELECT 1")
	if n := serverConnCount(t, "idler"); n != 1 {
		t.Fatalf("%d server connections after a query, want 1", n)
	}
	waitFor(t, 10*time.Second, "the idle server connection to close", func() bool { return serverConnCount(t, "idler") == 0 })
	// And the client carries on with a new one.
	queryInt(t, conn, "SELECT 1")
}

func TestServerLifetime(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nserver_lifetime = 1\ndefault_pool_size = 1")
	conn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	pid1 := queryInt(t, conn, "SELECT pg_backend_pid()")
	time.Sleep(1200 * time.Millisecond)
	pid2 := queryInt(t, conn, "SELECT pg_backend_pid()")
	if pid1 == pid2 {
		t.Fatal("server connection outlived server_lifetime")
	}
}

// blackhole accepts TCP connections and never answers.
func blackhole(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestServerConnectTimeout(t *testing.T) {
	port := blackhole(t)
	in := startPooler(t, fmt.Sprintf("auth_type = scram-sha-256\npool_mode = transaction\nserver_connect_timeout = 1\n[databases]\nhole = host=127.0.0.1 port=%d dbname=x", port))
	start := time.Now()
	_, err := pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "hole"))
	if err == nil {
		t.Fatal("connected to a server that never answers")
	}
	if el := time.Since(start); el > 8*time.Second {
		t.Fatalf("took %v", el)
	}
	t.Logf("client saw: %v", pgMessage(err))
	// Others are unaffected.
	conn := in.connect(t, "alice", "alice-pw", "app")
	queryInt(t, conn, "SELECT 1")
}

func TestServerLoginFailure(t *testing.T) {
	in := startPooler(t, "auth_type = trust\npool_mode = transaction\nserver_login_retry = 30\n[databases]\nbad = host=127.0.0.1 dbname=app user=alice password=wrong-password port="+fmt.Sprint(pg.Port))
	_, err := pgx.Connect(context.Background(), in.dsn("alice", "x", "bad"))
	if err == nil || pgCode(err) != "28P01" || !strings.Contains(pgMessage(err), "password authentication failed") {
		t.Fatalf("first client: got %v", err)
	}
	_, err = pgx.Connect(context.Background(), in.dsn("alice", "x", "bad"))
	if err == nil || !strings.Contains(pgMessage(err), "server login has been failing, cached error: password authentication failed") {
		t.Fatalf("second client: got %v", err)
	}
}

func TestServerDiesMidQuery(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2")
	ctx := context.Background()
	victim := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	bystander := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	errCh := make(chan error, 1)
	go func() {
		_, err := victim.Exec(ctx, "SELECT pg_sleep(30) /* victim */")
		errCh <- err
	}()
	c, err := pg.Connect(ctx, pg.SuperUser, pg.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	waitFor(t, 10*time.Second, "the victim query to start", func() bool {
		var n int
		_ = c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%/* victim */' AND state = 'active'").Scan(&n)
		return n == 1
	})
	if _, err := c.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%/* victim */' AND state = 'active'"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errCh:
		if err == nil {
			t.Fatal("victim query succeeded")
		}
		t.Logf("victim saw: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("victim never saw the failure")
	}
	if n := queryInt(t, bystander, "SELECT 11"); n != 11 {
		t.Fatal(n)
	}
	fresh := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	if n := queryInt(t, fresh, "SELECT 12"); n != 12 {
		t.Fatal(n)
	}
}

// rawStartup sends a raw startup packet and returns what the pooler
// answered until it closed (or 2s passed).
func rawExchange(t *testing.T, port int, payload []byte) []byte {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(conn)
	return out
}

func startupPacket(params ...string) []byte {
	b := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	for _, p := range params {
		b = append(b, p...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

func TestBadStartupInput(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256")
	big := make([]byte, 20000)
	binary.BigEndian.PutUint32(big, 20000)
	for _, tc := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "bad packet header"},
		{"oversized startup", big, "bad packet header"},
		{"v2 protocol", func() []byte { b := startupPacket("user", "alice"); b[5] = 2; return b }(), "old V2 protocol not supported"},
		{"no user", startupPacket("database", "app"), "no username supplied"},
		{"unknown param", startupPacket("user", "alice", "frobnicate", "1"), "unsupported startup parameter: frobnicate"},
		{"missing terminator", func() []byte { b := startupPacket("user", "alice"); return b[:len(b)-1] }(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := tc.payload
			if tc.name == "missing terminator" {
				binary.BigEndian.PutUint32(payload, uint32(len(payload)))
			}
			out := rawExchange(t, in.port, payload)
			if tc.want != "" && !strings.Contains(string(out), tc.want) {
				t.Fatalf("reply %q, want %q", out, tc.want)
			}
			if len(out) > 0 && out[0] != 'E' {
				t.Fatalf("reply does not start with ErrorResponse: %q", out)
			}
		})
	}
	// Still serving.
	conn := in.connect(t, "alice", "alice-pw", "app")
	queryInt(t, conn, "SELECT 1")
}

func TestNegotiateProtocolVersion(t *testing.T) {
	in := startPooler(t, "auth_type = trust")
	b := startupPacket("user", "alice", "database", "app", "_pq_.test_protocol_negotiation", "x")
	b[7] = 2 // protocol 3.2
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 'v' {
		t.Fatalf("first reply %q, want NegotiateProtocolVersion", hdr[0])
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	if minor := binary.BigEndian.Uint32(body); minor != 0 {
		t.Fatalf("newest minor %d", minor)
	}
	if !strings.Contains(string(body), "_pq_.test_protocol_negotiation") {
		t.Fatalf("unrecognised options not listed: %q", body)
	}
	// Then AuthenticationOk.
	if _, err := io.ReadFull(conn, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 'R' {
		t.Fatalf("then %q, want AuthenticationOk", hdr[0])
	}
}

func TestBadMessageAfterLogin(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	conn := in.connect(t, "alice", "alice-pw", "app")
	raw := conn.PgConn().Conn()
	if _, err := raw.Write([]byte{'Q', 0, 0, 0, 2}); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	out, _ := io.ReadAll(raw)
	if !strings.Contains(string(out), "invalid message length") {
		t.Fatalf("got %q", out)
	}
	other := in.connect(t, "alice", "alice-pw", "app")
	queryInt(t, other, "SELECT 1")
}

func TestExtraFloatDigitsAccepted(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1")
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol", "extra_float_digits=2")
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=simple_protocol")
	if got := queryString(t, a, "SHOW extra_float_digits"); got != "2" {
		t.Fatalf("a: extra_float_digits = %q", got)
	}
	if got := queryString(t, b, "SHOW extra_float_digits"); got == "2" {
		t.Fatal("b sees a's extra_float_digits")
	}
}

func TestUnixSocket(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=alice password=alice-pw dbname=app", in.dir, in.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	queryInt(t, conn, "SELECT 1")
	out, err := runCmd(t, 30*time.Second, []string{"PGPASSWORD=alice-pw"}, psqlPath(), "-X", "-h", in.dir, "-p", fmt.Sprint(in.port), "-U", "alice", "-d", "app", "-tAc", "SELECT 40+2")
	if err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("psql over the Unix socket: %v\n%s", err, out)
	}
	out, err = runCmd(t, 30*time.Second, []string{"PGPASSWORD=alice-pw"}, psqlPath(), "-X", "-h", "127.0.0.1", "-p", fmt.Sprint(in.port), "-U", "alice", "-d", "app", "-tAc", "SELECT 40+3")
	if err != nil || strings.TrimSpace(out) != "43" {
		t.Fatalf("psql over TCP: %v\n%s", err, out)
	}
}

func TestClientLoginTimeout(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\nclient_login_timeout = 1")
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Say nothing: the pooler gives up after client_login_timeout.
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, _ := io.ReadAll(conn)
	if el := time.Since(start); el < 900*time.Millisecond || el > 5*time.Second {
		t.Fatalf("closed after %v", el)
	}
	if !strings.Contains(string(out), "client_login_timeout") {
		t.Fatalf("got %q", out)
	}
}

func TestMaxUserConnections(t *testing.T) {
	// alice in two databases shares max_user_connections = 1.
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nmax_user_connections = 1\nquery_wait_timeout = 20")
	ctx := context.Background()
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	b := in.connect(t, "alice", "alice-pw", "postgres", "default_query_exec_mode=exec")
	for i := 0; i < 5; i++ {
		queryInt(t, a, "SELECT 1")
		queryInt(t, b, "SELECT 1")
	}
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	queryIntTx(t, tx, "SELECT 1")
	blockedUntil(t, "alice's second server connection past max_user_connections = 1",
		func() error { _, err := b.Exec(ctx, "SELECT 1"); return err },
		func() {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		})
}

func TestServerResetQueryAlways(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1\nserver_reset_query_always = 1\nserver_reset_query = RESET work_mem")
	ctx := context.Background()
	a, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app", "default_query_exec_mode=exec"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET work_mem = '9MB'"); err != nil {
		t.Fatal(err)
	}
	a.Close(ctx)
	b := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	if wm := queryString(t, b, "SHOW work_mem"); wm == "9MB" {
		t.Fatal("server_reset_query_always did not run at the end of the session in transaction mode")
	}
}
