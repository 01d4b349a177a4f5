package pooler_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/internal/faultproxy"
	"github.com/pgwarden/pgwarden/pooler"
)

// Faults on the server side: between pgwarden and PostgreSQL (see
// faults_test.go for what each scenario records).

func bg(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// countRows runs sql and counts the rows it returns.
func countRows(ctx context.Context, c *pgx.Conn, sql string) (int, error) {
	rows, err := c.Query(ctx, sql)
	if err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	return n, rows.Err()
}

// TestFaultServerReset: server connections reset (TCP RST) in the middle
// of a DataRow stream, in the middle of a large query on its way to the
// server, and while idle in the pool.
func TestFaultServerReset(t *testing.T) {
	e := newFaultEnv(t, "server connection reset", faultSetup{
		extra: "pool_mode = transaction\ndefault_pool_size = 2\nserver_login_retry = 0.5",
	})
	e.baseline()

	// A 20 MB result cut inside a DataRow, 10 bytes before its end
	// (simple protocol: a 32-byte RowDescription, then 1,011-byte
	// DataRows). The client must get every row before the cut intact and
	// then lose the connection: pgwarden cannot put an ErrorResponse in
	// the middle of a message, where the client would take its bytes for
	// the rest of the row.
	a := e.mustConnect()
	e.proxy.ResetAfter(faultproxy.Downstream, 32+200*1011+1001)
	start := time.Now()
	rows, err := a.Query(bg(t, 30*time.Second), "SELECT repeat('x', 1000) FROM generate_series(1, 20000)", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	want, n, corrupt := strings.Repeat("x", 1000), 0, 0
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil || v != want {
			corrupt++
		}
		n++
	}
	rows.Close()
	err = rows.Err()
	if err == nil {
		t.Fatalf("the result arrived whole (%d rows) through a reset connection", n)
	}
	if corrupt > 0 || n != 200 {
		t.Errorf("the client got %d rows (want the 200 before the cut), %d of them not what the server sent", n, corrupt)
	}
	e.observe("client reading a 20 MB result when the server connection is reset inside a DataRow", err, time.Since(start))
	if !a.IsClosed() {
		t.Error("the client's connection is still open after its server connection broke mid-result")
	}
	e.recoverAfter(time.Now(), 10*time.Second)

	// A 1 MiB query text, cut 100,000 bytes in on its way to the server.
	b := e.mustConnect()
	e.proxy.ResetAfter(faultproxy.Upstream, 100_000)
	start = time.Now()
	_, err = b.Exec(bg(t, 30*time.Second), "SELECT length('"+strings.Repeat("y", 1<<20)+"')")
	if err == nil {
		t.Fatal("a query cut in two on its way to the server succeeded")
	}
	e.observe("client sending a 1 MiB query when the server connection is reset 100,000 bytes in", err, time.Since(start))
	e.recoverAfter(time.Now(), 10*time.Second)

	// The server connection of an idle client is reset while it sits
	// idle in the pool.
	c := e.mustConnect()
	if _, err := c.Exec(bg(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	e.proxy.ResetAll()
	healed := time.Now()
	// Idle a little longer than pgwarden trusts an idle server without
	// looking at its socket (1 ms).
	waitFor(t, 5*time.Second, "the reset to land", func() bool { return e.proxy.Links() == 0 })
	time.Sleep(5 * time.Millisecond)
	start = time.Now()
	_, err = c.Exec(bg(t, 10*time.Second), "SELECT 1")
	e.observe("idle client's next query after its pooled server connection was reset", err, time.Since(start))
	if err != nil {
		t.Errorf("the reset of an idle server reached its client: %v", err)
	}
	e.recoverAfter(healed, 10*time.Second)

	for _, x := range []*pgx.Conn{a, b, c} {
		x.Close(context.Background())
	}
	e.checkLeaks()
}

// TestFaultServerHalfOpen: the network to PostgreSQL goes silent (no data,
// no FIN, no RST) while a server connection is idle in the pool and while
// new ones are being opened; then it heals.
func TestFaultServerHalfOpen(t *testing.T) {
	e := newFaultEnv(t, "server connection half-open (blackhole)", faultSetup{
		extra: "pool_mode = transaction\ndefault_pool_size = 2\nquery_timeout = 1\nserver_connect_timeout = 1\nserver_login_retry = 0.5\nquery_wait_timeout = 3",
	})
	e.baseline()
	a := e.mustConnect()
	if _, err := a.Exec(bg(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	e.proxy.Blackhole(true)
	start := time.Now()
	_, err := a.Exec(bg(t, 10*time.Second), "SELECT 1")
	el := time.Since(start)
	e.observe("query on the pooled (now half-open) server connection, query_timeout = 1", err, el)
	if err == nil || el > 3*time.Second {
		t.Errorf("query over a half-open server connection: %v after %v (query_timeout = 1)", err, el)
	}
	// The pool now has no server: a new one must be opened, and its login
	// goes unanswered.
	start = time.Now()
	err = e.query("SELECT 1", 10*time.Second)
	el = time.Since(start)
	e.observe("new client while server logins go unanswered, server_connect_timeout = 1", err, el)
	if err == nil || el > 3*time.Second {
		t.Errorf("new client during the blackhole: %v after %v (server_connect_timeout = 1)", err, el)
	}
	e.proxy.Heal()
	e.recoverAfter(time.Now(), 10*time.Second)
	a.Close(context.Background())
	e.checkLeaks()
}

// TestFaultServerLatency: added latency on the server connections: small
// (queries slow down, nothing fails), then larger than a server login can
// absorb within server_connect_timeout.
func TestFaultServerLatency(t *testing.T) {
	e := newFaultEnv(t, "server latency", faultSetup{
		extra: "pool_mode = transaction\nserver_connect_timeout = 1\nserver_login_retry = 0.5",
	})
	e.baseline()
	a := e.mustConnect()
	if _, err := a.Exec(bg(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	e.proxy.SetLatency(faultproxy.Upstream, 50*time.Millisecond)
	e.proxy.SetLatency(faultproxy.Downstream, 50*time.Millisecond)
	start := time.Now()
	_, err := a.Exec(bg(t, 10*time.Second), "SELECT 1")
	el := time.Since(start)
	e.observe("query with 50 ms latency each way", err, el)
	if err != nil || el < 100*time.Millisecond {
		t.Errorf("query with 100 ms round trip: %v in %v", err, el)
	}
	// 400 ms each way: a SCRAM login takes three round trips, 2.4 s.
	e.proxy.SetLatency(faultproxy.Upstream, 400*time.Millisecond)
	e.proxy.SetLatency(faultproxy.Downstream, 400*time.Millisecond)
	a.Close(context.Background())
	e.console("RECONNECT")
	start = time.Now()
	err = e.query("SELECT 1", 10*time.Second)
	el = time.Since(start)
	e.observe("new server login with 800 ms round trips, server_connect_timeout = 1", err, el)
	if err == nil || el > 3*time.Second {
		t.Errorf("server login with 800 ms round trips: %v after %v (server_connect_timeout = 1)", err, el)
	}
	e.proxy.Heal()
	e.recoverAfter(time.Now(), 10*time.Second)
	e.checkLeaks()
}

// TestFaultServerBandwidth: the server connections are capped at 2 MB/s:
// a 1 MB result arrives whole and slower; a 4 MB one outlasts
// query_timeout.
func TestFaultServerBandwidth(t *testing.T) {
	e := newFaultEnv(t, "server bandwidth cap", faultSetup{
		extra: "pool_mode = transaction\nquery_timeout = 1.5\nserver_login_retry = 0.5",
	})
	e.baseline()
	a := e.mustConnect()
	if _, err := a.Exec(bg(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	e.proxy.SetBandwidth(faultproxy.Downstream, 2<<20)
	start := time.Now()
	n, err := countRows(bg(t, 30*time.Second), a, "SELECT repeat('x', 1000) FROM generate_series(1, 1000)")
	el := time.Since(start)
	e.observe("1 MB result at 2 MB/s", err, el)
	if err != nil || n != 1000 || el < 300*time.Millisecond {
		t.Errorf("1 MB at 2 MB/s: %d rows, %v, in %v", n, err, el)
	}
	start = time.Now()
	_, err = countRows(bg(t, 30*time.Second), a, "SELECT repeat('x', 1000) FROM generate_series(1, 4000)")
	el = time.Since(start)
	e.observe("4 MB result at 2 MB/s, query_timeout = 1.5", err, el)
	if err == nil || el > 4*time.Second {
		t.Errorf("4 MB at 2 MB/s with query_timeout 1.5: %v in %v", err, el)
	}
	e.proxy.Heal()
	e.recoverAfter(time.Now(), 10*time.Second)
	a.Close(context.Background())
	e.checkLeaks()
}

// TestFaultTerminateBackend: pg_terminate_backend of a pooled server
// connection, first while it is idle in the pool, then while it runs a
// query.
func TestFaultTerminateBackend(t *testing.T) {
	e := newFaultEnv(t, "pg_terminate_backend of a pooled server", faultSetup{
		extra: "pool_mode = transaction\ndefault_pool_size = 2",
	})
	e.baseline()
	ctx := bg(t, 30*time.Second)
	su, err := e.cluster.Connect(ctx, e.cluster.SuperUser, e.cluster.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(context.Background())
	terminate := func(pid int) {
		t.Helper()
		var ok bool
		if err := su.QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
		}
	}

	a := e.mustConnect()
	pid := queryInt(t, a, "SELECT pg_backend_pid()")
	terminate(pid) // returns once the backend has exited
	healed := time.Now()
	// Idle a little longer than pgwarden trusts an idle server without
	// looking at its socket (1 ms).
	time.Sleep(5 * time.Millisecond)
	start := time.Now()
	_, err = a.Exec(ctx, "SELECT 1")
	e.observe("idle client's next query after its pooled server was terminated", err, time.Since(start))

	b := e.mustConnect()
	var bpid int
	if err := b.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&bpid); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Exec(ctx, "SELECT pg_sleep(10)")
		done <- err
	}()
	waitFor(t, 10*time.Second, "pg_sleep to run", func() bool {
		var n int
		_ = su.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query = 'SELECT pg_sleep(10)' AND state = 'active'", bpid).Scan(&n)
		return n == 1
	})
	start = time.Now()
	terminate(bpid)
	err = <-done
	e.observe("client whose query was running when its server was terminated", err, time.Since(start))
	if err == nil {
		t.Error("the query of a terminated server succeeded")
	}
	e.recoverAfter(healed, 10*time.Second)
	a.Close(context.Background())
	b.Close(context.Background())
	su.Close(context.Background())
	e.checkLeaks()
}

// tlsLeaf issues a server certificate for the IP address ip, signed by ca.
func tlsLeaf(t *testing.T, ca *testCA, ip string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: ip},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// freshQuery runs SELECT 1 on new connections until the outcome is not
// server_login_retry's cached error (so that it comes from a server login
// of its own), and returns that outcome and how long its attempt took.
func (e *faultEnv) freshQuery() (time.Duration, error) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		start := time.Now()
		err := e.query("SELECT 1", 10*time.Second)
		el := time.Since(start)
		if _, msg := errState(err); err == nil || !strings.Contains(msg, "(server_login_retry)") {
			return el, err
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("still the cached login error after 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFaultServerTLS: with server_tls_sslmode = verify-full, the server
// (here the proxy, which terminates TLS and forwards in clear) first shows
// a certificate from another CA, then answers the SSLRequest with 'S' and
// garbage, then behaves again.
func TestFaultServerTLS(t *testing.T) {
	ca, wrong := newTestCA(t, "pgwarden fault CA"), newTestCA(t, "some other CA")
	good, bad := tlsLeaf(t, ca, "127.0.0.1"), tlsLeaf(t, wrong, "127.0.0.1")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	const (
		serveGood = iota
		serveWrongCA
		serveGarbage
	)
	var mode atomic.Int32
	var handshakes atomic.Int64
	front := func(c net.Conn) (net.Conn, error) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return nil, err
		}
		if binary.BigEndian.Uint32(req[4:]) != 80877103 {
			return nil, errors.New("no SSLRequest")
		}
		if mode.Load() == serveGarbage {
			_, _ = c.Write([]byte("Sthis is not a TLS handshake\r\n"))
			return nil, errors.New("garbage sent")
		}
		cert := good
		if mode.Load() == serveWrongCA {
			cert = bad
		}
		if _, err := c.Write([]byte{'S'}); err != nil {
			return nil, err
		}
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		handshakes.Add(1)
		_ = c.SetDeadline(time.Time{})
		return tc, nil
	}
	e := newFaultEnv(t, "TLS handshake failure to the server", faultSetup{
		extra:  "pool_mode = transaction\nserver_tls_sslmode = verify-full\nserver_tls_ca_file = " + caFile + "\nserver_login_retry = 0.2",
		before: func(e *faultEnv) { e.proxy.SetFront(front) },
	})
	e.baseline()
	if handshakes.Load() == 0 {
		t.Fatal("the server connections did not use TLS")
	}
	mode.Store(serveWrongCA)
	el, err := e.freshQuery()
	e.observe("new client, server certificate from another CA (verify-full)", err, el)
	if _, msg := errState(err); err == nil || !strings.Contains(msg, "certificate signed by unknown authority") {
		t.Errorf("server certificate from another CA: %v", err)
	}
	mode.Store(serveGarbage)
	el, err = e.freshQuery()
	e.observe("new client, server answers the SSLRequest with 'S' and garbage", err, el)
	if _, msg := errState(err); err == nil || !strings.Contains(msg, "TLS handshake failed") {
		t.Errorf("garbage after 'S': %v", err)
	}
	mode.Store(serveGood)
	e.recoverAfter(time.Now(), 10*time.Second)
	e.checkLeaks()
}

// TestFaultServerDNS: the [databases] host is a name, looked up through a
// DNS server of the test's (pooler.Options.Resolver). It stops resolving
// (NXDOMAIN), then the DNS server stops answering, then all is well again.
func TestFaultServerDNS(t *testing.T) {
	dns, err := faultproxy.NewDNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dns.Set("pg.faults.test", net.IPv4(127, 0, 0, 1))
	e := newFaultEnv(t, "database host name stops resolving", faultSetup{
		host:  "pg.faults.test",
		extra: "pool_mode = transaction\nserver_connect_timeout = 1\nserver_login_retry = 0.2",
		opts:  []func(*pooler.Options){func(o *pooler.Options) { o.Resolver = dns.Resolver() }},
	})
	e.baseline()
	if dns.Queries() == 0 {
		t.Fatal("pgwarden did not use the test's resolver")
	}
	a := e.mustConnect()
	if _, err := a.Exec(bg(t, 10*time.Second), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	dns.SetMode(faultproxy.DNSNXDomain)
	start := time.Now()
	_, err = a.Exec(bg(t, 10*time.Second), "SELECT 1")
	e.observe("client with a server already connected, name no longer resolving", err, time.Since(start))
	if err != nil {
		t.Errorf("an open server connection was affected by DNS: %v", err)
	}
	a.Close(context.Background())
	e.console("RECONNECT")
	el, err := e.freshQuery()
	e.observe("new client, host name answers NXDOMAIN", err, el)
	if _, msg := errState(err); err == nil || !strings.Contains(msg, "no such host") {
		t.Errorf("NXDOMAIN: %v", err)
	}
	dns.SetMode(faultproxy.DNSSilent)
	el, err = e.freshQuery()
	e.observe("new client, DNS server not answering, server_connect_timeout = 1", err, el)
	if err == nil || el > 3*time.Second {
		t.Errorf("silent DNS: %v after %v (server_connect_timeout = 1)", err, el)
	}
	dns.SetMode(faultproxy.DNSAnswer)
	e.recoverAfter(time.Now(), 10*time.Second)
	e.checkLeaks()
}
