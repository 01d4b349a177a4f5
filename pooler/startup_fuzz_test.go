package pooler

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// FuzzStartup is a client that says anything before it is signed in: the
// input is the byte stream it sends, through SSLRequest, GSSENCRequest and
// CancelRequest, the startup packet (options, _pq_ parameters, protocol
// versions) and the sign-in messages of every method, on to the console
// when it gets there (trust for admin). The harness behaves as a client
// would: it sends one packet or message at a time, splitting the input by
// its own length fields, and sends the next one only when the pooler
// waits for it; it takes TLS when the pooler answers 'S' to an SSLRequest
// (or when the input starts with 0x16: direct TLS) and goes on inside it;
// "{nonce}" in a SASL message becomes the server nonce of the exchange.
// variant picks the configuration (auth_type, client TLS mode).
//
// Checked: no panic, no hang (every wait is bounded); what the pooler
// sends is whole messages of the kinds a server sends during sign-in; its
// errors carry a severity, a well-formed SQLSTATE and a message, and a
// FATAL one is the last thing before the close; no more than maxFuzzAlloc
// is allocated per input, whatever the length fields say.
//
//	go test -run '^$' -fuzz '^FuzzStartup$' ./pooler/
func FuzzStartup(f *testing.F) {
	env := newStartupEnv(f)
	for _, s := range startupSeeds() {
		f.Add(s.data, s.variant)
	}
	f.Fuzz(func(t *testing.T, data []byte, variant uint8) {
		defer fuzzwatch.Watchdog(0, "FuzzStartup")()
		cfg := env.cfgs[int(variant)%len(env.cfgs)]
		done := allocGuard(t)
		s := env.server(t, cfg)
		c := env.client(t, s)
		runStartupClient(t, c, data, cfg.ClientTLS.Mode != config.TLSDisable, nil)
		s.wg.Wait()
		done()
	})
}

type startupEnv struct {
	*fuzzEnv
	cfgs []*config.Config
	peer *Server
}

var startupVariants = []string{
	"auth_type = scram-sha-256\nclient_tls_sslmode = disable\n",
	"auth_type = md5\nclient_tls_sslmode = allow\nignore_startup_parameters = extra_float_digits, options\n",
	"auth_type = plain\nclient_tls_sslmode = require\napplication_name_add_host = 1\ntrack_extra_parameters = search_path\n",
	"auth_type = hba\nauth_hba_file = {dir}/hba.conf\nclient_tls_sslmode = prefer\n",
	"auth_type = trust\nclient_tls_sslmode = disable\nmax_client_conn = 3\n",
}

const startupHBA = `
local   all        all                       trust
hostssl all        carol      127.0.0.1/32   scram-sha-256
host    pgbouncer  admin      127.0.0.1/32   trust
host    all        bob        0.0.0.0/0      md5
host    all        alice      ::1/128        reject
host    all        alice      127.0.0.0/8    password
host    all        all        all            reject
`

func newStartupEnv(tb testing.TB) *startupEnv {
	e := &startupEnv{fuzzEnv: newFuzzEnv(tb)}
	must(tb, os.WriteFile(filepath.Join(e.dir, "hba.conf"), []byte(startupHBA), 0o600))
	// A peer (a second pgwarden on a Unix socket) for the cancel keys
	// that carry its peer_id.
	peerDir := filepath.Join(e.dir, "peer")
	must(tb, os.Mkdir(peerDir, 0o700))
	peerCfg := e.config(tb, "peer.ini", "[databases]\n[pgbouncer]\nlisten_addr =\nunix_socket_dir = "+peerDir+
		"\nlisten_port = 7777\nauth_file = {dir}/userlist.txt\npeer_id = 2\n[peers]\n1 = host=/nonexistent\n")
	peer, err := New(peerCfg, Options{Logger: e.quiet, AuditLogger: e.quiet})
	must(tb, err)
	must(tb, peer.Listen())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = peer.Serve(context.Background())
	}()
	tb.Cleanup(func() {
		peer.Shutdown(ShutdownImmediate)
		<-served
	})
	e.peer = peer
	for i, v := range startupVariants {
		ini := "[databases]\napp = host={dir}/nowhere dbname=app\n* = host={dir}/nowhere\n" +
			"[pgbouncer]\nlisten_addr = 127.0.0.1\nunix_socket_dir =\nauth_file = {dir}/userlist.txt\n" +
			"admin_users = admin\nstats_users = stats\nclient_login_timeout = 10\n" +
			"client_tls_cert_file = {cert}\nclient_tls_key_file = {key}\npeer_id = 1\n" + v +
			"[peers]\n2 = host=" + peerDir + " port=7777\n"
		e.cfgs = append(e.cfgs, e.config(tb, fmt.Sprintf("startup%d.ini", i), ini))
	}
	return e
}

// startupClient is the fuzz client's state, for checks after the run.
type startupClient struct {
	authOK   bool   // AuthenticationOk seen
	ready    bool   // ReadyForQuery seen
	fatal    string // SQLSTATE of the FATAL error, if any
	fatalMsg string
	nonce    string // server nonce of the SCRAM exchange
}

// runStartupClient sends data to the pooler as described at FuzzStartup.
// proof, when set, is called for a message whose body is "{proof}" with
// the server-first-message and returns the client-final-message to send.
func runStartupClient(t *testing.T, c net.Conn, data []byte, tlsOffered bool, proof func(serverFirst []byte) []byte) *startupClient {
	t.Helper()
	st := &startupClient{}
	var conn net.Conn = c
	inTLS := false
	rest := data
	upgrade := func(alpn []string) bool {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: alpn})
		_ = tc.SetDeadline(time.Now().Add(fuzzReadTimeout))
		if err := tc.Handshake(); err != nil {
			return false
		}
		_ = tc.SetDeadline(time.Time{})
		conn, inTLS = tc, true
		return true
	}
	if tlsOffered && len(rest) >= 2 && rest[0] == tlsRecordHandshake {
		// Direct TLS (sslnegotiation=direct): a real handshake, with the
		// postgresql ALPN protocol unless the second byte is odd.
		var alpn []string
		if rest[1]&1 == 0 {
			alpn = []string{alpnPostgres}
		}
		rest = rest[2:]
		if !upgrade(alpn) {
			t.Fatal("direct TLS handshake failed")
		}
	}
	r := newWireReader(t, conn)
	// The packets before the startup packet.
	for {
		if len(rest) < 8 {
			break
		}
		n := int(binary.BigEndian.Uint32(rest[:4]))
		code := binary.BigEndian.Uint32(rest[4:8])
		// As in PostgreSQL, a request may carry a body (it is ignored).
		if n < 8 || n > maxStartupPacket || n > len(rest) || (code != codeSSLRequest && code != codeGSSENCRequest) || (code == codeSSLRequest && inTLS) {
			break
		}
		writeQuiet(conn, rest[:n])
		rest = rest[n:]
		b, ok := r.byte()
		if !ok {
			r.rest()
			return st
		}
		switch {
		case b == 'N':
		case b == 'S' && code == codeSSLRequest && tlsOffered:
			if !upgrade([]string{alpnPostgres}) {
				t.Fatal("TLS handshake after SSLRequest failed")
			}
			r = newWireReader(t, conn)
		default:
			t.Fatalf("answer %q to a %d request", b, code)
		}
	}
	// The startup packet, or whatever stands in its place.
	frame := rest
	if len(rest) >= 4 {
		if n := int(binary.BigEndian.Uint32(rest[:4])); n >= 8 && n <= len(rest) {
			frame = rest[:n]
		}
	}
	rest = rest[len(frame):]
	writeQuiet(conn, frame)
	if len(rest) == 0 {
		closeWrite(conn)
	}
	var serverFirst []byte
	for {
		typ, body, ok := r.message()
		if !ok {
			return st
		}
		needInput := false
		switch typ {
		case 'E':
			code, msg := checkPoolerError(t, body)
			if sev, _, _ := parseErrorFields(body); sev == "FATAL" {
				st.fatal, st.fatalMsg = code, msg
				if extra := r.rest(); len(extra) > 0 {
					t.Fatalf("%q after a FATAL error", extra)
				}
				return st
			}
			// An ERROR (the console) leaves the session open.
		case 'R':
			if len(body) < 4 {
				t.Fatalf("authentication request %q", body)
			}
			switch kind := binary.BigEndian.Uint32(body); kind {
			case 0:
				st.authOK = true
			case 3, 5, 10:
				needInput = true
			case 11:
				needInput = true
				serverFirst = body[4:]
				if i := bytes.Index(serverFirst, []byte("r=")); i >= 0 {
					n := serverFirst[i+2:]
					if j := bytes.IndexByte(n, ','); j >= 0 {
						n = n[:j]
					}
					st.nonce = string(n)
				}
			case 12:
			default:
				t.Fatalf("authentication request of kind %d", kind)
			}
		case 'Z':
			st.ready = true
			needInput = true
		case 'S', 'K', 'v', 'N', 'T', 'D', 'C', 'I':
		default:
			t.Fatalf("message %q during sign-in: %q", typ, body)
		}
		if !needInput || len(rest) == 0 {
			continue
		}
		frame, rest = nextFrame(rest)
		if st.nonce != "" {
			frame = substitute(frame, "{nonce}", st.nonce)
		}
		if proof != nil && len(frame) > 5 && string(frame[5:]) == "{proof}" {
			frame = fuzzMessage('p', proof(serverFirst))
		}
		writeQuiet(conn, frame)
		if len(rest) == 0 {
			closeWrite(conn)
		}
	}
}

// startupSeed is one seed input.
type startupSeed struct {
	data    []byte
	variant uint8
}

func sslRequest() []byte    { return append(be32(8), be32(codeSSLRequest)...) }
func gssencRequest() []byte { return append(be32(8), be32(codeGSSENCRequest)...) }

func cancelRequest(key [8]byte) []byte {
	return append(append(be32(16), be32(codeCancelRequest)...), key[:]...)
}

func saslInitial(mech, data string) []byte {
	return fuzzMessage('p', cstr(mech), be32(len(data)), []byte(data))
}

// The startup packets real drivers send (psql 16, pgx 5, pgJDBC 42, the
// .NET driver), as they send them.
var (
	psqlStartup = startupPacket("user", "alice", "database", "app", "application_name", "psql", "client_encoding", "UTF8")
	pgxStartup  = startupPacket("database", "app", "user", "bob")
	jdbcStartup = startupPacket("user", "carol", "database", "app", "client_encoding", "UTF8", "DateStyle", "ISO",
		"TimeZone", "UTC", "extra_float_digits", "2")
	npgsqlStartup = startupPacket("user", "carol", "client_encoding", "UTF8", "database", "app", "application_name", "Npgsql")
)

func startupSeeds() []startupSeed {
	zeros := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	var key [8]byte
	peerKey := [8]byte{0x11, 2, 0, 0x22, 0x33, 0x44, 0x55, 0x67} // peer_id 2, TTL 3
	v3_2 := startupPacket("user", "alice", "database", "app", "_pq_.command_trace", "on")
	binary.BigEndian.PutUint32(v3_2[4:], 3<<16|2)
	v2 := startupPacket("user", "alice")
	binary.BigEndian.PutUint32(v2[4:], 2<<16)
	return []startupSeed{
		// psql: SSLRequest refused, then a password.
		{cat(sslRequest(), psqlStartup, fuzzMessage('p', cstr("wrong"))), 2},
		{cat(sslRequest(), psqlStartup, fuzzMessage('p', cstr(fuzzAlicePw))), 2},
		// SCRAM: a first message, then a final one with a wrong proof.
		{cat(jdbcStartup, saslInitial("SCRAM-SHA-256", "n,,n=,r=fyko+d2lbbFgONRv9qkxdawL"),
			fuzzMessage('p', []byte("c=biws,r={nonce},p="+zeros))), 0},
		{cat(npgsqlStartup, saslInitial("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc")), 0},
		{cat(startupPacket("user", "nobody", "database", "app"), saslInitial("SCRAM-SHA-256", "n,,n=,r=abc"),
			fuzzMessage('p', []byte("c=biws,r={nonce},p="+zeros))), 0},
		// md5 with a made-up response; bob over md5; trust as admin, then
		// console commands.
		{cat(pgxStartup, fuzzMessage('p', cstr("md5"+"0123456789abcdef0123456789abcdef"))), 1},
		{cat(startupPacket("user", "admin", "database", "pgbouncer"), fuzzMessage('Q', cstr("SHOW POOLS")),
			fuzzMessage('Q', cstr("SHOW HELP")), fuzzMessage('P', cstr(""), cstr("SELECT 1"), []byte{0, 0})), 4},
		{cat(startupPacket("user", "stats", "database", "pgbouncer"), fuzzMessage('Q', cstr("PAUSE")), fuzzMessage('X')), 4},
		// options, protocol 3.2 with _pq_ options, version 2, no user.
		{cat(startupPacket("user", "alice", "database", "app", "options", "-c search_path=x --DateStyle=ISO -c\\ x=1")), 2},
		{cat(startupPacket("user", "alice", "options", "-c extra_float_digits=3 --geqo=off")), 1},
		{v3_2, 0},
		{v2, 0},
		{startupPacket("database", "app"), 0},
		{startupPacket("user", "alice", "replication", "database"), 0},
		// GSSENC, then SSL, over TLS a second SSLRequest.
		{cat(gssencRequest(), sslRequest(), sslRequest(), psqlStartup), 1},
		// Direct TLS (first byte 0x16; the second picks ALPN).
		{cat([]byte{tlsRecordHandshake, 0}, psqlStartup, fuzzMessage('p', cstr("x"))), 3},
		{cat([]byte{tlsRecordHandshake, 1}, psqlStartup), 1},
		// Cancel requests: unknown key, a peer's key, a short one.
		{cancelRequest(key), 0},
		{cancelRequest(peerKey), 0},
		{cat(be32(12), be32(codeCancelRequest), []byte{1, 2, 3, 4}), 0},
		// HBA: carol over TLS, bob md5, alice password.
		{cat(sslRequest(), jdbcStartup, saslInitial("SCRAM-SHA-256", "n,,n=carol,r=abc")), 3},
		{cat(pgxStartup, fuzzMessage('p', cstr("md5x"))), 3},
		// Bad lengths: 1 GiB, too short, too long for the startup packet.
		{cat(be32(1<<30), be32(protocolV3)), 0},
		{cat(be32(4), be32(protocolV3)), 0},
		{cat(be32(10001), be32(protocolV3), make([]byte, 10000)), 0},
		{cat(psqlStartup, []byte{'p'}, be32(1<<30)), 2},
		{cat(psqlStartup, []byte{'p', 0, 0, 0, 3}), 2},
		// Unterminated strings in the startup packet.
		{cat(be32(13), be32(protocolV3), []byte("user\x00")), 0},
	}
}

// TestStartupSeedsSane runs the seeds once more and checks what they are
// meant to show, so that a change in the harness does not turn them into
// seeds that stop early.
func TestStartupSeedsSane(t *testing.T) {
	env := newStartupEnv(t)
	run := func(data []byte, variant uint8) *startupClient {
		var st *startupClient
		t.Run("", func(t *testing.T) {
			cfg := env.cfgs[variant]
			s := env.server(t, cfg)
			st = runStartupClient(t, env.client(t, s), data, cfg.ClientTLS.Mode != config.TLSDisable, nil)
		})
		return st
	}
	seeds := startupSeeds()
	// The right password passes and the server login then fails (the
	// database is nowhere).
	if st := run(seeds[1].data, seeds[1].variant); st.fatal != "08P01" || !strings.HasPrefix(st.fatalMsg, "server login failed") {
		t.Errorf("alice with her password: %+v", st)
	}
	// A wrong proof is 28P01.
	if st := run(seeds[2].data, seeds[2].variant); st.nonce == "" || st.fatal != "28P01" {
		t.Errorf("wrong SCRAM proof: %+v", st)
	}
	// The console answers.
	if st := run(seeds[6].data, seeds[6].variant); !st.ready {
		t.Errorf("console: %+v", st)
	}
	// 1 GiB: bad packet header.
	if st := run(seeds[22].data, seeds[22].variant); st.fatal != "08P01" {
		t.Errorf("1 GiB startup packet: %+v", st)
	}
}
