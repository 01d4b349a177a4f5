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
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// ---- certificates ----

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate; dns empty means no subjectAltName at all.
func (ca *testCA) issue(t *testing.T, cn string, dns []string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dns,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// tlsFixture is a set of PEM files in one directory.
type tlsFixture struct {
	ca      string // the CA everything below is signed by, unless noted
	otherCA string // an unrelated CA
	// serverCert: CN=localhost, subjectAltName DNS:localhost only (no IP).
	serverCert, serverKey string
	// clientCert: CN=alice, for client authentication.
	clientCert, clientKey string
	// strangerCert: CN=alice, signed by otherCA.
	strangerCert, strangerKey string
	// cnOnlyCert: CN=localhost and no subjectAltName.
	cnOnlyCert, cnOnlyKey string
}

// newTLSFixture writes a fixture into dir. With owner set (running as root,
// for a PostgreSQL that runs as another user), the files are chowned to it:
// PostgreSQL wants its key owned by itself with mode 0600.
func newTLSFixture(t *testing.T, dir string, owner *[2]int) *tlsFixture {
	t.Helper()
	ca := newTestCA(t, "pgwarden test CA")
	other := newTestCA(t, "some other CA")
	f := &tlsFixture{}
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if owner != nil {
			if err := os.Chown(p, owner[0], owner[1]); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	pair := func(name string, c, k []byte) (string, string) {
		return write(name+".crt", c, 0o644), write(name+".key", k, 0o600)
	}
	f.ca = write("ca.crt", ca.pem, 0o644)
	f.otherCA = write("other-ca.crt", other.pem, 0o644)
	c, k := ca.issue(t, "localhost", []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	f.serverCert, f.serverKey = pair("server", c, k)
	c, k = ca.issue(t, "alice", nil, x509.ExtKeyUsageClientAuth)
	f.clientCert, f.clientKey = pair("client", c, k)
	c, k = other.issue(t, "alice", nil, x509.ExtKeyUsageClientAuth)
	f.strangerCert, f.strangerKey = pair("stranger", c, k)
	c, k = ca.issue(t, "localhost", nil, x509.ExtKeyUsageServerAuth)
	f.cnOnlyCert, f.cnOnlyKey = pair("cn-only", c, k)
	return f
}

// clientTLS returns [pgbouncer] lines for the listener side.
func (f *tlsFixture) clientTLS(mode string, extra ...string) string {
	lines := []string{
		"client_tls_sslmode = " + mode,
		"client_tls_key_file = " + f.serverKey,
		"client_tls_cert_file = " + f.serverCert,
	}
	return strings.Join(append(lines, extra...), "\n")
}

// pgReadableDir returns a fresh directory the test PostgreSQL's OS user can
// read (t.TempDir's parents are 0700), and that user's uid and gid when
// they are not ours.
func pgReadableDir(t *testing.T) (string, *[2]int) {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Dir(pg.DataDir), "tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(pg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) == os.Geteuid() {
		return dir, nil
	}
	return dir, &[2]int{int(st.Uid), int(st.Gid)}
}

// ---- connecting ----

// tlsDSN is a keyword/value DSN for the pooler with the given TLS settings.
func (in *instance) tlsDSN(host, user, password, db string, params ...string) string {
	s := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s connect_timeout=10", host, in.port, user, password, db)
	for _, p := range params {
		s += " " + p
	}
	return s
}

func tryConnect(t *testing.T, dsn string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %q: %v", dsn, err)
	}
	return tryConnectConfig(t, cfg)
}

func tryConnectConfig(t *testing.T, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

func mustConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := tryConnect(t, dsn)
	if err != nil {
		t.Fatalf("connect (%s): %v", dsn, err)
	}
	return conn
}

// tlsState returns the TLS state of a pgx connection, failing the test if
// it is not encrypted.
func tlsState(t *testing.T, conn *pgx.Conn) tls.ConnectionState {
	t.Helper()
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("connection is %T, not TLS", conn.PgConn().Conn())
	}
	return tc.ConnectionState()
}

func mustFail(t *testing.T, what, dsn string, want ...string) {
	t.Helper()
	conn, err := tryConnect(t, dsn)
	if err == nil {
		conn.Close(context.Background())
		t.Fatalf("%s: connected, want an error", what)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: error %q does not mention %q", what, err, w)
		}
	}
}

// psql runs psql with conninfo and extra arguments, with an empty HOME so
// that no ~/.postgresql certificate or ~/.psqlrc gets in the way.
func psql(t *testing.T, conninfo, password string, args ...string) (string, error) {
	t.Helper()
	bin := psqlPath()
	if bin == "" {
		t.Fatal("psql not found")
	}
	env := []string{"PGPASSWORD=" + password, "HOME=" + t.TempDir(), "PGCONNECT_TIMEOUT=10"}
	return runCmd(t, 30*time.Second, env, bin, append([]string{"-X", "-v", "ON_ERROR_STOP=1", conninfo}, args...)...)
}

// ---- client leg ----

// bulkOverTLS moves a few megabytes each way through conn, in many TLS
// records.
func bulkOverTLS(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, "SELECT i, repeat('x', 100) FROM generate_series(1, 50000) i")
	if err != nil {
		t.Fatal(err)
	}
	n, sum := 0, 0
	for rows.Next() {
		var i int
		var s string
		if err := rows.Scan(&i, &s); err != nil {
			t.Fatal(err)
		}
		n++
		sum += i
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 50000 || sum != 50000*50001/2 {
		t.Fatalf("got %d rows, sum %d", n, sum)
	}
	big := strings.Repeat("y", 4<<20)
	var l int
	if err := conn.QueryRow(ctx, "SELECT length($1::text)", big).Scan(&l); err != nil {
		t.Fatal(err)
	}
	if l != len(big) {
		t.Fatalf("length %d", l)
	}
}

func TestTLSClientRequire(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS("require"))

	t.Run("pgx sslmode=require", func(t *testing.T) {
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"))
		if n := queryInt(t, conn, "SELECT 1"); n != 1 {
			t.Fatalf("SELECT 1 = %d", n)
		}
		st := tlsState(t, conn)
		if st.Version != tls.VersionTLS13 {
			t.Errorf("negotiated %s, want TLS 1.3 (default protocols are secure)", tls.VersionName(st.Version))
		}
		bulkOverTLS(t, conn)
	})
	t.Run("pgx sslmode=prefer", func(t *testing.T) {
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=prefer"))
		tlsState(t, conn)
		queryInt(t, conn, "SELECT 1")
	})
	t.Run("pgx sslmode=disable", func(t *testing.T) {
		_, err := tryConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=disable"))
		if err == nil || pgMessage(err) != "SSL required" || pgCode(err) != "28000" {
			t.Fatalf("got %v (code %q), want FATAL 28000 SSL required", err, pgCode(err))
		}
	})
	t.Run("psql sslmode=require", func(t *testing.T) {
		ci := in.tlsDSN("127.0.0.1", "alice", "", "app", "sslmode=require")
		ci = strings.Replace(ci, " password=", "", 1)
		out, err := psql(t, ci, "alice-pw", "-Atc", "SELECT 41 + 1", "-c", `\conninfo`)
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if !strings.Contains(out, "42") || !strings.Contains(out, "SSL connection (protocol: TLSv1.3") {
			t.Fatalf("psql output:\n%s", out)
		}
	})
	t.Run("psql sslmode=disable", func(t *testing.T) {
		ci := strings.Replace(in.tlsDSN("127.0.0.1", "alice", "", "app", "sslmode=disable"), " password=", "", 1)
		out, err := psql(t, ci, "alice-pw", "-Atc", "SELECT 1")
		if err == nil || !strings.Contains(out, "SSL required") {
			t.Fatalf("psql without TLS: err %v, output:\n%s", err, out)
		}
	})
	t.Run("psql over the Unix socket", func(t *testing.T) {
		// Unix sockets are exempt from require (libpq never asks for TLS
		// on them, whatever sslmode says).
		ci := fmt.Sprintf("host=%s port=%d user=alice dbname=app sslmode=require", in.dir, in.port)
		out, err := psql(t, ci, "alice-pw", "-Atc", "SELECT 41 + 1", "-c", `\conninfo`)
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if !strings.Contains(out, "42") || !strings.Contains(out, `via socket in "`+in.dir+`"`) || strings.Contains(out, "SSL connection") {
			t.Fatalf("psql output:\n%s", out)
		}
	})
	t.Run("pgx over the Unix socket", func(t *testing.T) {
		conn := mustConnect(t, fmt.Sprintf("host=%s port=%d user=alice password=alice-pw dbname=app sslmode=disable", in.dir, in.port))
		queryInt(t, conn, "SELECT 1")
	})
}

func TestTLSClientOptional(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	for _, mode := range []string{"allow", "prefer"} {
		t.Run(mode, func(t *testing.T) {
			in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS(mode))
			conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"))
			tlsState(t, conn)
			queryInt(t, conn, "SELECT 1")
			conn = mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=disable"))
			if _, ok := conn.PgConn().Conn().(*tls.Conn); ok {
				t.Fatal("sslmode=disable got TLS")
			}
			queryInt(t, conn, "SELECT 1")
		})
	}
}

func TestTLSClientDisable(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\nclient_tls_sslmode = disable")
	// SSLRequest is answered 'N': sslmode=prefer falls back to plaintext,
	// require gives up.
	conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=prefer"))
	if _, ok := conn.PgConn().Conn().(*tls.Conn); ok {
		t.Fatal("TLS negotiated with client_tls_sslmode = disable")
	}
	queryInt(t, conn, "SELECT 1")
	mustFail(t, "sslmode=require", in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"), "server refused TLS connection")
}

func TestTLSClientVerifyFull(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS("require"))

	// The certificate names localhost only.
	conn := mustConnect(t, in.tlsDSN("localhost", "alice", "alice-pw", "app", "sslmode=verify-full", "sslrootcert="+f.ca))
	tlsState(t, conn)
	queryInt(t, conn, "SELECT 1")
	conn = mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=verify-ca", "sslrootcert="+f.ca))
	tlsState(t, conn)

	mustFail(t, "wrong CA", in.tlsDSN("localhost", "alice", "alice-pw", "app", "sslmode=verify-full", "sslrootcert="+f.otherCA), "certificate signed by unknown authority")
	mustFail(t, "name mismatch", in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=verify-full", "sslrootcert="+f.ca), "certificate for 127.0.0.1")

	// psql does the same checks with OpenSSL.
	ci := fmt.Sprintf("host=localhost port=%d user=alice dbname=app sslmode=verify-full sslrootcert=%s", in.port, f.ca)
	if out, err := psql(t, ci, "alice-pw", "-Atc", "SELECT 1"); err != nil {
		t.Fatalf("psql verify-full: %v\n%s", err, out)
	}
	ci = fmt.Sprintf("host=localhost port=%d user=alice dbname=app sslmode=verify-full sslrootcert=%s", in.port, f.otherCA)
	if out, err := psql(t, ci, "alice-pw", "-Atc", "SELECT 1"); err == nil || !strings.Contains(out, "certificate verify failed") {
		t.Fatalf("psql verify-full with the wrong CA: err %v\n%s", err, out)
	}
}

func TestTLSClientCertificate(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	for _, mode := range []string{"verify-ca", "verify-full"} {
		t.Run(mode, func(t *testing.T) {
			in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS(mode, "client_tls_ca_file = "+f.ca))
			dsn := func(params ...string) string {
				return in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", append([]string{"sslmode=require"}, params...)...)
			}
			mustFail(t, "no client certificate", dsn())
			mustFail(t, "certificate from another CA", dsn("sslcert="+f.strangerCert, "sslkey="+f.strangerKey))
			mustFail(t, "plaintext", in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=disable"), "SSL required")

			conn := mustConnect(t, dsn("sslcert="+f.clientCert, "sslkey="+f.clientKey))
			st := tlsState(t, conn)
			if len(st.PeerCertificates) == 0 {
				t.Fatal("no server certificate")
			}
			queryInt(t, conn, "SELECT 1")

			ci := fmt.Sprintf("host=127.0.0.1 port=%d user=alice dbname=app sslmode=require", in.port)
			if out, err := psql(t, ci, "alice-pw", "-Atc", "SELECT 1"); err == nil {
				t.Fatalf("psql without a client certificate connected:\n%s", out)
			}
			out, err := psql(t, ci+" sslcert="+f.clientCert+" sslkey="+f.clientKey, "alice-pw", "-Atc", "SELECT 1")
			if err != nil || strings.TrimSpace(out) != "1" {
				t.Fatalf("psql with a client certificate: %v\n%s", err, out)
			}
		})
	}
	t.Run("require with a CA checks a certificate if one is sent", func(t *testing.T) {
		in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS("require", "client_tls_ca_file = "+f.ca))
		dsn := func(params ...string) string {
			return in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", append([]string{"sslmode=require"}, params...)...)
		}
		queryInt(t, mustConnect(t, dsn()), "SELECT 1")
		queryInt(t, mustConnect(t, dsn("sslcert="+f.clientCert, "sslkey="+f.clientKey)), "SELECT 1")
		// pgx (Go) would not even send a certificate the server's CA list
		// does not cover; libpq sends it, and it is refused.
		ci := fmt.Sprintf("host=127.0.0.1 port=%d user=alice dbname=app sslmode=require", in.port)
		if out, err := psql(t, ci+" sslcert="+f.strangerCert+" sslkey="+f.strangerKey, "alice-pw", "-Atc", "SELECT 1"); err == nil {
			t.Fatalf("psql with a certificate from another CA connected:\n%s", out)
		}
		if out, err := psql(t, ci+" sslcert="+f.clientCert+" sslkey="+f.clientKey, "alice-pw", "-Atc", "SELECT 1"); err != nil {
			t.Fatalf("psql with a client certificate: %v\n%s", err, out)
		}
	})
}

func TestTLSClientProtocols(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	t.Run("tlsv1.3", func(t *testing.T) {
		in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS("require", "client_tls_protocols = tlsv1.3"))
		ci := fmt.Sprintf("host=127.0.0.1 port=%d user=alice dbname=app sslmode=require", in.port)
		out, err := psql(t, ci+" ssl_max_protocol_version=TLSv1.2", "alice-pw", "-Atc", "SELECT 1")
		if err == nil {
			t.Fatalf("psql limited to TLS 1.2 connected:\n%s", out)
		}
		out, err = psql(t, ci+" ssl_min_protocol_version=TLSv1.3", "alice-pw", "-Atc", "SELECT 1")
		if err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("psql with TLS 1.3: %v\n%s", err, out)
		}

		cfg, err := pgx.ParseConfig(in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLSConfig.MaxVersion = tls.VersionTLS12
		if conn, err := tryConnectConfig(t, cfg); err == nil {
			t.Fatalf("pgx limited to TLS 1.2 connected with %s", tls.VersionName(tlsState(t, conn).Version))
		}
	})
	t.Run("libtls list syntax", func(t *testing.T) {
		// "secure" less TLS 1.3 leaves TLS 1.2 only.
		in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS("require", "client_tls_protocols = secure:!tlsv1.3"))
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"))
		if v := tlsState(t, conn).Version; v != tls.VersionTLS12 {
			t.Fatalf("negotiated %s, want TLS 1.2", tls.VersionName(v))
		}
	})
}

func TestTLSClientDirect(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS("require"))

	// PostgreSQL 17's sslnegotiation=direct: the ClientHello comes first,
	// with ALPN "postgresql".
	conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require", "sslnegotiation=direct"))
	if st := tlsState(t, conn); st.NegotiatedProtocol != "postgresql" {
		t.Fatalf("ALPN %q", st.NegotiatedProtocol)
	}
	queryInt(t, conn, "SELECT 1")
	cancelAndCheck(t, pg, conn, "direct", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return conn.PgConn().CancelRequest(ctx)
	})

	// Direct TLS without ALPN is refused, as PostgreSQL does.
	raw, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(raw)
	if len(b) == 0 || b[0] != 'E' || !strings.Contains(string(b), "ALPN") {
		t.Fatalf("direct TLS without ALPN: got %q", b)
	}

	// A client offering some other protocol fails the handshake.
	_, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.port), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil {
		t.Fatal("direct TLS with ALPN h2 was accepted")
	}
}

// ---- cancel requests ----

// waitQueryActive waits until a backend of cluster c runs sql, or errc
// (the query's outcome) delivers first.
func waitQueryActive(t *testing.T, c *pgtest.Cluster, sql string, errc <-chan error) {
	t.Helper()
	ctx := context.Background()
	sup, err := c.Connect(ctx, c.SuperUser, c.SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close(ctx)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := sup.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1", sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		select {
		case err := <-errc:
			t.Fatalf("query %q ended before it was seen running: %v", sql, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	var act []string
	rows, _ := sup.Query(ctx, "SELECT format('%s %s %s %s', pid, usename, state, query) FROM pg_stat_activity WHERE backend_type = 'client backend'")
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		act = append(act, s)
	}
	rows.Close()
	t.Fatalf("query %q never became active; backends:\n%s", sql, strings.Join(act, "\n"))
}

// cancelAndCheck runs a long query on conn (served by cluster c), cancels
// it with cancel once it runs on the server, and expects 57014, then a
// working connection.
func cancelAndCheck(t *testing.T, c *pgtest.Cluster, conn *pgx.Conn, tag string, cancel func() error) {
	t.Helper()
	sql := "SELECT pg_sleep(20) /* " + tag + " */"
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), sql)
		errc <- err
	}()
	waitQueryActive(t, c, sql, errc)
	start := time.Now()
	if err := cancel(); err != nil {
		t.Fatalf("send cancel: %v", err)
	}
	select {
	case err := <-errc:
		if pgCode(err) != "57014" {
			t.Fatalf("query ended with %v, want 57014", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("cancel took %v", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("query was not cancelled")
	}
	queryInt(t, conn, "SELECT 1")
}

// rawCancel sends a plaintext CancelRequest, as libpq before 17, pgJDBC and
// node-postgres do, and waits for the pooler to close the socket.
func rawCancel(addr string, pid uint32, secret []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	b := make([]byte, 12, 16)
	binary.BigEndian.PutUint32(b[0:], uint32(12+len(secret)))
	binary.BigEndian.PutUint32(b[4:], 80877102)
	binary.BigEndian.PutUint32(b[8:], pid)
	b = append(b, secret...)
	if _, err := c.Write(b); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("pooler answered a cancel request with %q", rest)
	}
	return nil
}

func TestTLSCancel(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	in := startPooler(t, "auth_type = scram-sha-256\n"+f.clientTLS("require"))
	addr := fmt.Sprintf("127.0.0.1:%d", in.port)

	t.Run("plaintext cancel request", func(t *testing.T) {
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"))
		tlsState(t, conn)
		pid, secret := conn.PgConn().PID(), conn.PgConn().SecretKey()
		if len(secret) != 4 {
			t.Fatalf("secret key of %d bytes", len(secret))
		}
		cancelAndCheck(t, pg, conn, "plaintext", func() error { return rawCancel(addr, pid, secret) })
	})
	t.Run("cancel request inside TLS", func(t *testing.T) {
		// pgx, like libpq 17, encrypts the cancel connection as it did
		// the main one: SSLRequest, handshake, then CancelRequest.
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"))
		cancelAndCheck(t, pg, conn, "tls", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return conn.PgConn().CancelRequest(ctx)
		})
	})
	t.Run("wrong key cancels nothing", func(t *testing.T) {
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"))
		pid, secret := conn.PgConn().PID(), conn.PgConn().SecretKey()
		errc := make(chan error, 1)
		go func() {
			_, err := conn.Exec(context.Background(), "SELECT pg_sleep(1) /* wrong key */")
			errc <- err
		}()
		waitQueryActive(t, pg, "SELECT pg_sleep(1) /* wrong key */", errc)
		if err := rawCancel(addr, pid^1, secret); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("query failed after a cancel with a wrong key: %v", err)
		}
	})
}

// ---- server leg ----

// serverCertificate returns the certificate a PostgreSQL server presents
// after an SSLRequest.
func serverCertificate(addr string) (*x509.Certificate, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
		return nil, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return nil, err
	}
	if b[0] != 'S' {
		return nil, fmt.Errorf("SSLRequest answered %q", b[0])
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0], nil
}

func TestTLSServer(t *testing.T) {
	dir, owner := pgReadableDir(t)
	f := newTLSFixture(t, dir, owner)
	spg := pgtest.StartT(t, pgtest.Options{
		ExtraConf: map[string]string{
			"ssl":           "on",
			"ssl_cert_file": f.serverCert,
			"ssl_key_file":  f.serverKey,
			"ssl_ca_file":   f.ca,
		},
		// alice must use TLS; in certdb she also needs a client
		// certificate (CN=alice). The superuser pgtest uses stays on
		// plaintext.
		HBA: []string{
			"hostnossl all    alice 127.0.0.1/32 reject",
			"hostssl   certdb alice 127.0.0.1/32 scram-sha-256 clientcert=verify-full",
		},
	})
	ctx := context.Background()
	if err := spg.CreateRole(ctx, "alice", "alice-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := spg.Exec(ctx, "CREATE DATABASE certdb"); err != nil {
		t.Fatal(err)
	}

	// start runs a pooler with server TLS lines and [databases] entries
	// name = host on the TLS cluster's port.
	start := func(t *testing.T, serverTLS string, dbs ...string) *instance {
		t.Helper()
		ini := "auth_type = scram-sha-256\n" + serverTLS + "\n[databases]\n"
		for _, d := range dbs {
			name, rest, _ := strings.Cut(d, "=")
			host, dbname, _ := strings.Cut(rest, "/")
			ini += fmt.Sprintf("%s = host=%s port=%d dbname=%s\n", name, host, spg.Port, dbname)
		}
		return startPooler(t, ini)
	}
	// sslInfo reports pg_stat_ssl for the server session behind conn.
	sslInfo := func(t *testing.T, conn *pgx.Conn) (bool, string) {
		t.Helper()
		var ssl bool
		var dn string
		if err := conn.QueryRow(ctx, "SELECT ssl, coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &dn); err != nil {
			t.Fatal(err)
		}
		return ssl, dn
	}
	alice := func(in *instance, db string) string {
		return in.tlsDSN("127.0.0.1", "alice", "alice-pw", db, "sslmode=disable")
	}

	t.Run("disable is refused by the server", func(t *testing.T) {
		in := start(t, "server_tls_sslmode = disable", "s=127.0.0.1/postgres")
		mustFail(t, "plaintext to a hostssl-only server", alice(in, "s"), "no encryption")
	})
	for _, mode := range []string{"allow", "prefer", "require"} {
		t.Run(mode, func(t *testing.T) {
			in := start(t, "server_tls_sslmode = "+mode, "s=127.0.0.1/postgres")
			conn := mustConnect(t, alice(in, "s"))
			if ssl, _ := sslInfo(t, conn); !ssl {
				t.Fatal("pg_stat_ssl says the server connection is not encrypted")
			}
		})
	}
	t.Run("verify-ca", func(t *testing.T) {
		in := start(t, "server_tls_sslmode = verify-ca\nserver_tls_ca_file = "+f.ca, "s=127.0.0.1/postgres")
		conn := mustConnect(t, alice(in, "s"))
		if ssl, _ := sslInfo(t, conn); !ssl {
			t.Fatal("not encrypted")
		}
		in = start(t, "server_tls_sslmode = verify-ca\nserver_tls_ca_file = "+f.otherCA, "s=127.0.0.1/postgres")
		mustFail(t, "verify-ca with the wrong CA", alice(in, "s"), "server login failed", "certificate signed by unknown authority")
	})
	t.Run("verify-full", func(t *testing.T) {
		in := start(t, "server_tls_sslmode = verify-full\nserver_tls_ca_file = "+f.ca,
			"byname=localhost/postgres", "byaddr=127.0.0.1/postgres")
		conn := mustConnect(t, alice(in, "byname"))
		if ssl, _ := sslInfo(t, conn); !ssl {
			t.Fatal("not encrypted")
		}
		bulkOverTLS(t, conn)
		// The certificate names localhost, not 127.0.0.1.
		mustFail(t, "verify-full by address", alice(in, "byaddr"), "server login failed", "certificate for 127.0.0.1")
		// The pooler is still serving.
		queryInt(t, mustConnect(t, alice(in, "byname")), "SELECT 1")
	})
	t.Run("client certificate", func(t *testing.T) {
		in := start(t, "server_tls_sslmode = verify-full\nserver_tls_ca_file = "+f.ca,
			"c=localhost/certdb")
		mustFail(t, "certdb without a client certificate", alice(in, "c"), "certificate")

		in = start(t, fmt.Sprintf("server_tls_sslmode = verify-full\nserver_tls_ca_file = %s\nserver_tls_cert_file = %s\nserver_tls_key_file = %s", f.ca, f.clientCert, f.clientKey),
			"c=localhost/certdb")
		conn := mustConnect(t, alice(in, "c"))
		ssl, dn := sslInfo(t, conn)
		if !ssl || dn != "/CN=alice" {
			t.Fatalf("pg_stat_ssl: ssl=%v client_dn=%q", ssl, dn)
		}
		// Every server connection alice holds on the cluster is
		// encrypted, seen from the server's side.
		sup, err := spg.Connect(ctx, spg.SuperUser, spg.SuperPassword, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer sup.Close(ctx)
		var enc, plain int
		if err := sup.QueryRow(ctx, `SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
			FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'alice'`).Scan(&enc, &plain); err != nil {
			t.Fatal(err)
		}
		if enc == 0 || plain != 0 {
			t.Fatalf("alice's server connections: %d encrypted, %d plain", enc, plain)
		}
	})
	t.Run("cancel with TLS on both legs", func(t *testing.T) {
		in := start(t, fmt.Sprintf("server_tls_sslmode = verify-full\nserver_tls_ca_file = %s\n%s", f.ca, f.clientTLS("require")),
			"s=localhost/postgres")
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "s", "sslmode=require"))
		tlsState(t, conn)
		addr := fmt.Sprintf("127.0.0.1:%d", in.port)
		pid, secret := conn.PgConn().PID(), conn.PgConn().SecretKey()
		cancelAndCheck(t, spg, conn, "both legs, plaintext", func() error { return rawCancel(addr, pid, secret) })
		cancelAndCheck(t, spg, conn, "both legs, tls", func() error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return conn.PgConn().CancelRequest(ctx)
		})
	})
	t.Run("certificate without subjectAltName", func(t *testing.T) {
		// libpq and libtls match the Common Name when a certificate
		// has no subjectAltName; so does pgwarden. Switch the cluster
		// to such a certificate (SSL files are re-read on reload).
		if err := spg.Exec(ctx,
			"ALTER SYSTEM SET ssl_cert_file = '"+f.cnOnlyCert+"'",
			"ALTER SYSTEM SET ssl_key_file = '"+f.cnOnlyKey+"'",
			"SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = spg.Exec(ctx, "ALTER SYSTEM RESET ssl_cert_file", "ALTER SYSTEM RESET ssl_key_file", "SELECT pg_reload_conf()")
		})
		// The reload is asynchronous: wait until the server hands out
		// the new certificate.
		deadline := time.Now().Add(10 * time.Second)
		for {
			cert, err := serverCertificate(fmt.Sprintf("127.0.0.1:%d", spg.Port))
			if err != nil {
				t.Fatal(err)
			}
			if len(cert.DNSNames) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the server still presents its old certificate")
			}
			time.Sleep(50 * time.Millisecond)
		}
		in := start(t, "server_tls_sslmode = verify-full\nserver_tls_ca_file = "+f.ca,
			"byname=localhost/postgres", "byaddr=127.0.0.1/postgres")
		conn := mustConnect(t, alice(in, "byname"))
		if ssl, _ := sslInfo(t, conn); !ssl {
			t.Fatal("not encrypted")
		}
		mustFail(t, "CN-only certificate by address", alice(in, "byaddr"), "server login failed", "127.0.0.1")
	})
}

func TestTLSServerRefused(t *testing.T) {
	// The package cluster runs with ssl = off and answers SSLRequest 'N'.
	t.Run("require", func(t *testing.T) {
		in := startPooler(t, "auth_type = scram-sha-256\nserver_tls_sslmode = require")
		mustFail(t, "require against ssl=off", in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=disable"), "server refused SSL")
		// The process keeps serving: the console still answers.
		admin := mustConnect(t, in.tlsDSN("127.0.0.1", "admin", "admin-pw", "pgbouncer", "sslmode=disable", "default_query_exec_mode=simple_protocol"))
		if v := queryString(t, admin, "SHOW VERSION"); v == "" {
			t.Fatal("empty SHOW VERSION")
		}
	})
	t.Run("prefer", func(t *testing.T) {
		in := startPooler(t, "auth_type = scram-sha-256\nserver_tls_sslmode = prefer")
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=disable"))
		var ssl bool
		if err := conn.QueryRow(context.Background(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
			t.Fatal(err)
		}
		if ssl {
			t.Fatal("encrypted against ssl=off?")
		}
	})
}

// TestAuthTypeCert: auth_type = cert signs a client in by its verified
// certificate; the Common Name must be the user name.
func TestAuthTypeCert(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	in := startPooler(t, "auth_type = cert\npool_mode = transaction\n"+f.clientTLS("verify-ca", "client_tls_ca_file = "+f.ca))
	// The certificate says alice: alice gets in without a password (the
	// server login uses alice's userlist password).
	conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "unused", "app", "sslmode=require", "sslcert="+f.clientCert, "sslkey="+f.clientKey))
	if u := queryString(t, conn, "SELECT current_user"); u != "alice" {
		t.Fatal(u)
	}
	// The same certificate does not make anyone bob.
	mustFail(t, "certificate for another user", in.tlsDSN("127.0.0.1", "bob", "unused", "app", "sslmode=require", "sslcert="+f.clientCert, "sslkey="+f.clientKey), "certificate authentication failed")
}
