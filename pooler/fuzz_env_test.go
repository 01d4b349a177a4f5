package pooler

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// The wire-level fuzz targets share this environment: configurations
// loaded from real pgbouncer.ini files, a TLS certificate, a listener the
// fuzz client connects through (each accepted connection is served by a
// Server built for that one input, as its accept loop would serve it), and
// a hostile server that PostgreSQL connections of the pooler reach. No
// PostgreSQL is involved: the other end of every socket is the fuzz input.

// Passwords of the fuzz users (userlist.txt): alice has a plain-text entry,
// bob an md5 secret, carol a SCRAM secret.
const (
	fuzzAlicePw = "alice-pw"
	fuzzBobPw   = "bob-pw"
	fuzzCarolPw = "carol-pw"
)

// fuzzReadTimeout bounds every wait of a fuzz harness for the pooler; the
// pooler's own timeouts (client_login_timeout, query_timeout) are below
// it, so reaching it means the pooler hangs.
const fuzzReadTimeout = 20 * time.Second

// maxFuzzAlloc bounds what the pooler may allocate for one fuzz input.
// Inputs are at most a few hundred kilobytes; the largest buffer a length
// field may make the pooler allocate before the bytes arrive is 1 MiB
// (maxDecodedMessage). A message header claiming more must be refused, or
// streamed, without the buffer that size.
const maxFuzzAlloc = 48 << 20

type fuzzEnv struct {
	dir       string
	certFile  string
	keyFile   string
	serverTLS *tls.Config  // for the hostile server's side of a TLS handshake
	ln        net.Listener // the fuzz clients' way in
	quiet     *slog.Logger
}

func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	e := &fuzzEnv{dir: tb.TempDir(), quiet: slog.New(slog.DiscardHandler)}
	if os.Getenv("PGWARDEN_FUZZ_LOG") != "" {
		// For replaying one input: the pooler's log on stderr.
		e.quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	certPEM, keyPEM := fuzzCert(tb)
	e.certFile = filepath.Join(e.dir, "server.crt")
	e.keyFile = filepath.Join(e.dir, "server.key")
	must(tb, os.WriteFile(e.certFile, certPEM, 0o600))
	must(tb, os.WriteFile(e.keyFile, keyPEM, 0o600))
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	must(tb, err)
	e.serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	carol := authn.NewSCRAMSecret(fuzzCarolPw, []byte("pgwarden-fuzz-salt"), 4096)
	users := fmt.Sprintf("\"alice\" \"%s\"\n\"bob\" \"%s\"\n\"carol\" \"%s\"\n\"admin\" \"admin-pw\"\n\"stats\" \"stats-pw\"\n",
		fuzzAlicePw, authn.MD5Secret("bob", fuzzBobPw), carol.String())
	must(tb, os.WriteFile(filepath.Join(e.dir, "userlist.txt"), []byte(users), 0o600))
	e.ln, err = net.Listen("tcp", "127.0.0.1:0")
	must(tb, err)
	tb.Cleanup(func() { e.ln.Close() })
	return e
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// fuzzCert makes a self-signed ECDSA certificate for localhost.
func fuzzCert(tb testing.TB) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(tb, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(tb, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	must(tb, err)
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// config writes a pgbouncer.ini (name) with the given sections and loads
// it. {dir}, {cert} and {key} in ini are replaced.
func (e *fuzzEnv) config(tb testing.TB, name, ini string) *config.Config {
	tb.Helper()
	ini = strings.NewReplacer("{dir}", e.dir, "{cert}", e.certFile, "{key}", e.keyFile).Replace(ini)
	path := filepath.Join(e.dir, name)
	must(tb, os.WriteFile(path, []byte(ini), 0o600))
	cfg, err := config.Load(path)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return cfg
}

// server builds the Server that serves one fuzz input. Its pools and
// remaining goroutines are ended when the input is done.
func (e *fuzzEnv) server(t *testing.T, cfg *config.Config) *Server {
	t.Helper()
	s, err := New(cfg, Options{Logger: e.quiet, AuditLogger: e.quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.wg.Wait()
		s.pools.closeAll()
	})
	return s
}

// client opens a connection to s as its listener would hand it over: a
// TCP socket served by serveConn.
func (e *fuzzEnv) client(t *testing.T, s *Server) *net.TCPConn {
	t.Helper()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := e.ln.Accept()
		ch <- accepted{c, err}
	}()
	c, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		t.Fatal(a.err)
	}
	s.serveConn(a.c, false)
	tc := c.(*net.TCPConn)
	t.Cleanup(func() { tc.Close() })
	return tc
}

// allocGuard fails the test if more than maxFuzzAlloc bytes were allocated
// between its call and the call of the function it returns (the whole
// process counts: the fuzz harness allocates little).
func allocGuard(t *testing.T) func() {
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	return func() {
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > maxFuzzAlloc {
			t.Fatalf("%d MiB allocated for one input (limit %d MiB): a length field drives an allocation", d>>20, maxFuzzAlloc>>20)
		}
	}
}

// ---- reading what the pooler sends ----

// wireReader reads messages from the pooler, with a deadline per read.
type wireReader struct {
	t    *testing.T
	conn net.Conn
	buf  []byte
	// eof is set when the pooler closed the connection: clean (io.EOF) or
	// reset (the pooler closed with unread bytes from us).
	eof, reset bool
	// tailOK, when set, accepts a stream that ends inside a message (the
	// server's own message, cut short by the server, passed on).
	tailOK func(tail []byte) bool
}

func newWireReader(t *testing.T, c net.Conn) *wireReader { return &wireReader{t: t, conn: c} }

// fill reads more bytes; false at the end of the stream.
func (r *wireReader) fill() bool {
	if r.eof {
		return false
	}
	_ = r.conn.SetReadDeadline(time.Now().Add(fuzzReadTimeout))
	var b [4096]byte
	n, err := r.conn.Read(b[:])
	r.buf = append(r.buf, b[:n]...)
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			r.t.Fatalf("the pooler neither answered nor closed within %s (buffered %q)", fuzzReadTimeout, r.buf)
		case errors.Is(err, io.EOF):
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
			r.reset = true
		default:
			// tls: a close without close_notify, and the like.
			r.reset = true
		}
		r.eof = true
	}
	return n > 0 || !r.eof
}

// byte reads one byte (an SSLRequest answer); ok false at the end.
func (r *wireReader) byte() (byte, bool) {
	for len(r.buf) == 0 {
		if !r.fill() {
			return 0, false
		}
	}
	b := r.buf[0]
	r.buf = r.buf[1:]
	return b, true
}

// message reads one whole message; ok false at the end of the stream. A
// stream that ends inside a message, after a clean close, is a failure: the
// pooler must not leave a client with half a message.
func (r *wireReader) message() (typ byte, body []byte, ok bool) {
	for {
		if len(r.buf) >= 5 {
			n := int(binary.BigEndian.Uint32(r.buf[1:5]))
			if n < 4 {
				r.t.Fatalf("the pooler sent a message %q with length %d", r.buf[0], n)
			}
			if len(r.buf) >= 1+n {
				typ, body = r.buf[0], append([]byte(nil), r.buf[5:1+n]...)
				r.buf = r.buf[1+n:]
				return typ, body, true
			}
		}
		if !r.fill() {
			if len(r.buf) > 0 && !r.reset && (r.tailOK == nil || !r.tailOK(r.buf)) {
				r.t.Fatalf("the pooler closed the connection inside a message: %q", r.buf)
			}
			return 0, nil, false
		}
	}
}

// rest reads to the end of the stream and returns what came.
func (r *wireReader) rest() []byte {
	for r.fill() {
	}
	out := r.buf
	r.buf = nil
	return out
}

// checkPoolerError checks an ErrorResponse the pooler sent on its own
// (during sign-in): severity, a well-formed SQLSTATE and a message.
func checkPoolerError(t *testing.T, body []byte) (sqlstate, msg string) {
	t.Helper()
	sev, code, msg := parseErrorFields(body)
	if sev != "FATAL" && sev != "ERROR" {
		t.Fatalf("ErrorResponse with severity %q: %q", sev, body)
	}
	if !validSQLState(code) {
		t.Fatalf("ErrorResponse with SQLSTATE %q: %q", code, body)
	}
	if msg == "" {
		t.Fatalf("ErrorResponse without a message: %q", body)
	}
	return code, msg
}

// nextFrame splits the next message the fuzz input holds for the other
// side: a type byte and a length that counts itself. When the length is
// bad or runs past the input, the rest of the input is one "message" (it is
// sent as it is, and then the write side is closed).
func nextFrame(in []byte) (frame, rest []byte) {
	if len(in) >= 5 {
		n := int(binary.BigEndian.Uint32(in[1:5]))
		if n >= 4 && n <= len(in)-1 {
			return in[:1+n], in[1+n:]
		}
	}
	return in, nil
}

// substitute replaces every "{nonce}" in a frame and fixes its length field
// when it was right.
func substitute(frame []byte, marker, with string) []byte {
	k := bytes.Count(frame, []byte(marker))
	if k == 0 {
		return frame
	}
	fixLen := len(frame) >= 5 && int(binary.BigEndian.Uint32(frame[1:5])) == len(frame)-1
	out := bytes.ReplaceAll(frame, []byte(marker), []byte(with))
	if fixLen {
		binary.BigEndian.PutUint32(out[1:5], uint32(len(out)-1))
	}
	return out
}

// closeWrite ends what the harness sends (TCP or TLS).
func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case *net.TCPConn:
		_ = c.CloseWrite()
	case *tls.Conn:
		_ = c.CloseWrite()
	}
}

// writeQuiet writes to the pooler; errors (it closed already) are what the
// reads then see.
func writeQuiet(c net.Conn, b []byte) {
	_ = c.SetWriteDeadline(time.Now().Add(fuzzReadTimeout))
	_, _ = c.Write(b)
}

// fuzzMessage builds a message of type typ.
func fuzzMessage(typ byte, parts ...[]byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	for _, p := range parts {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return b
}

// startupPacket builds a v3 StartupMessage from name, value pairs.
func startupPacket(kv ...string) []byte {
	b := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func be32(v int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
