package pooler

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// The backend targets: the server side of the pooler is a hostile or
// broken server that sends the fuzz input. The client side is a
// well-behaved client that signs in properly and runs a fixed request.

// backendEnv is the environment of FuzzServerLogin and FuzzServerRelay.
type backendEnv struct {
	*fuzzEnv
	hostile *hostileServer
	// cfgs[tls] for the login target; relay is the relay target's.
	cfgs  [2]*config.Config
	relay *config.Config
}

func newBackendEnv(tb testing.TB) *backendEnv {
	e := &backendEnv{fuzzEnv: newFuzzEnv(tb)}
	e.hostile = newHostileServer(tb, e.serverTLS)
	p := e.hostile.port()
	common := "listen_addr = 127.0.0.1\nunix_socket_dir =\nauth_file = {dir}/userlist.txt\n" +
		"client_login_timeout = 15\nserver_connect_timeout = 15\nquery_wait_timeout = 15\nquery_timeout = 5\n"
	for i, mode := range []string{"disable", "prefer"} {
		ini := fmt.Sprintf("[databases]\nfz = host=127.0.0.1 port=%d dbname=fz\nfzq = host=127.0.0.1 port=%d dbname=fz connect_query='SELECT 1'\n"+
			"[pgbouncer]\nauth_type = md5\nserver_tls_sslmode = %s\n%s", p, p, mode, common)
		e.cfgs[i] = e.config(tb, fmt.Sprintf("login%d.ini", i), ini)
	}
	e.relay = e.config(tb, "relay.ini", fmt.Sprintf("[databases]\n"+
		"fz_tx = host=127.0.0.1 port=%[1]d dbname=fz pool_mode=transaction\n"+
		"fz_session = host=127.0.0.1 port=%[1]d dbname=fz pool_mode=session\n"+
		"fz_stmt = host=127.0.0.1 port=%[1]d dbname=fz pool_mode=statement\n"+
		"[pgbouncer]\nauth_type = trust\nserver_tls_sslmode = disable\nmax_prepared_statements = 4\nserver_reset_query = DISCARD ALL\n%s", p, common))
	return e
}

// fuzzUsers are the users a backend target's client signs in as, with the
// kind of secret the pooler then logs in to the server with.
var fuzzUsers = []struct{ name, password string }{
	{"alice", fuzzAlicePw}, // plain: cleartext, md5 or SCRAM to the server
	{"bob", fuzzBobPw},     // md5 secret: md5 only
	{"carol", fuzzCarolPw}, // SCRAM secret: SCRAM passthrough
}

// signIn runs a proper sign-in as user with password to database and
// returns the reader positioned after it. ok is false when the pooler
// refused (a FATAL error, checked) or closed; fatal is the error's SQLSTATE.
func signIn(t *testing.T, c net.Conn, user, password, database string) (r *wireReader, ok bool, fatal string) {
	t.Helper()
	writeQuiet(c, startupPacket("user", user, "database", database))
	r = newWireReader(t, c)
	var scram *authn.SCRAMClient
	for {
		typ, body, more := r.message()
		if !more {
			return r, false, ""
		}
		switch typ {
		case 'E':
			code, msg := checkPoolerError(t, body)
			if extra := r.rest(); len(extra) > 0 {
				t.Fatalf("%q after a FATAL error", extra)
			}
			return r, false, code + " " + msg
		case 'R':
			if len(body) < 4 {
				t.Fatalf("authentication request %q", body)
			}
			switch binary.BigEndian.Uint32(body) {
			case 0, 12:
			case 3:
				writeQuiet(c, fuzzMessage('p', cstr(password)))
			case 5:
				var salt [4]byte
				copy(salt[:], body[4:])
				writeQuiet(c, fuzzMessage('p', cstr(authn.MD5Response(authn.MD5Secret(user, password), salt))))
			case 10:
				scram = authn.NewSCRAMClient(password)
				first := scram.ClientFirst()
				writeQuiet(c, fuzzMessage('p', cstr("SCRAM-SHA-256"), be32(len(first)), first))
			case 11:
				final, err := scram.ClientFinal(body[4:])
				if err != nil {
					t.Fatalf("SCRAM with the pooler: %v", err)
				}
				writeQuiet(c, fuzzMessage('p', final))
			default:
				t.Fatalf("authentication request %q", body)
			}
		case 'Z':
			return r, true, ""
		case 'S', 'K', 'N':
		default:
			t.Fatalf("message %q during sign-in", typ)
		}
	}
}

// FuzzServerLogin: the pooler logs in to a server that answers with the
// input: the answer to the SSLRequest (first byte, with server TLS on: 'S'
// starts a real TLS handshake), then authentication requests (cleartext,
// md5, SASL; "{nonce}" becomes the pooler's SCRAM nonce, so that the
// server-first-message gets through to the salt and iteration checks),
// ParameterStatus, BackendKeyData, errors, NegotiateProtocolVersion,
// ReadyForQuery, and for connect_query the query's answer. variant picks
// the client's user (and so the secret the pooler has: plain, md5 or SCRAM
// keys), server TLS and connect_query.
//
// Checked: no panic, no hang; the client gets the welcome or a FATAL
// error with a well-formed SQLSTATE and a message (whatever the server
// said); bounded allocation, whatever the server's length fields say.
//
//	go test -run '^$' -fuzz '^FuzzServerLogin$' ./pooler/
func FuzzServerLogin(f *testing.F) {
	env := newBackendEnv(f)
	for _, s := range serverLoginSeeds() {
		f.Add(s.data, s.variant)
	}
	f.Fuzz(func(t *testing.T, data []byte, variant uint8) {
		defer fuzzwatch.Watchdog(0, "FuzzServerLogin")()
		u := fuzzUsers[int(variant&3)%len(fuzzUsers)]
		tlsOn := variant&4 != 0
		db := "fz"
		if variant&8 != 0 {
			db = "fzq"
		}
		done := allocGuard(t)
		s := env.server(t, env.cfgs[boolIndex(tlsOn)])
		env.hostile.serve(t, func(c net.Conn) {
			script := data
			answer := byte(0)
			if tlsOn {
				if len(script) == 0 {
					return
				}
				answer, script = script[0], script[1:]
			}
			if hc := env.hostile.accept(c, tlsOn, answer); hc != nil {
				hc.play(script)
			}
		})
		c := env.client(t, s)
		r, ok, _ := signIn(t, c, u.name, u.password, db)
		if ok {
			writeQuiet(c, fuzzMessage('X'))
			r.rest()
		}
		c.Close()
		s.wg.Wait()
		done()
	})
}

type backendSeed struct {
	data    []byte
	variant uint8
}

// Server messages for seeds.
func authReq(kind int, extra ...byte) []byte { return fuzzMessage('R', be32(kind), extra) }
func paramStatus(k, v string) []byte         { return fuzzMessage('S', cstr(k), cstr(v)) }
func readyFor(status byte) []byte            { return fuzzMessage('Z', []byte{status}) }
func errResp(sev, code, msg string) []byte {
	return fuzzMessage('E', []byte("S"), cstr(sev), []byte("V"), cstr(sev), []byte("C"), cstr(code), []byte("M"), cstr(msg), []byte{0})
}

// loginOK is what PostgreSQL 16 sends after a successful authentication.
func loginOK() []byte {
	return bytes.Join([][]byte{
		authReq(0),
		paramStatus("application_name", ""), paramStatus("client_encoding", "UTF8"), paramStatus("DateStyle", "ISO, MDY"),
		paramStatus("default_transaction_read_only", "off"), paramStatus("in_hot_standby", "off"),
		paramStatus("integer_datetimes", "on"), paramStatus("IntervalStyle", "postgres"), paramStatus("is_superuser", "off"),
		paramStatus("server_encoding", "UTF8"), paramStatus("server_version", "16.4"), paramStatus("session_authorization", "alice"),
		paramStatus("standard_conforming_strings", "on"), paramStatus("TimeZone", "Etc/UTC"),
		fuzzMessage('K', be32(4242), be32(0x5eed)),
		readyFor('I'),
	}, nil)
}

func serverLoginSeeds() []backendSeed {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	sasl := authReq(10, []byte("SCRAM-SHA-256\x00\x00")...)
	saslPlus := authReq(10, []byte("SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00")...)
	cont := func(s string) []byte { return authReq(11, []byte(s)...) }
	fin := func(s string) []byte { return authReq(12, []byte(s)...) }
	first := "r={nonce}3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
	return []backendSeed{
		// Trust, md5 and cleartext requests, for each secret.
		{loginOK(), 0},
		{cat(authReq(5, 1, 2, 3, 4), loginOK()), 0},
		{cat(authReq(5, 1, 2, 3, 4), loginOK()), 1},
		{cat(authReq(3), loginOK()), 0},
		{cat(authReq(3), loginOK()), 1},
		// SCRAM: a server-first-message with the pooler's nonce, then a
		// bad signature; with SCRAM-SHA-256-PLUS offered too.
		{cat(sasl, cont(first), fin("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="), loginOK()), 0},
		{cat(saslPlus, cont(first), fin("e=invalid-proof")), 2},
		{cat(sasl, cont("r={nonce}x,s=QSXCR+Q6sek8bf92,i=99999999"), loginOK()), 0},
		{cat(sasl, cont("r=someoneelse,s=QSXCR+Q6sek8bf92,i=4096")), 2},
		{cat(authReq(10, []byte("OAUTHBEARER\x00\x00")...)), 0},
		{cat(authReq(11, []byte("r=x")...)), 0},
		{cat(authReq(7)), 0},
		// Errors during login, a server that is starting up, a notice,
		// NegotiateProtocolVersion.
		{errResp("FATAL", "28P01", `password authentication failed for user "alice"`), 0},
		{errResp("FATAL", "57P03", "the database system is starting up"), 0},
		{errResp("FATAL", "", ""), 0},
		{cat(fuzzMessage('N', []byte("SNOTICE\x00Mhello\x00\x00")), fuzzMessage('v', be32(0), be32(1), cstr("_pq_.x")), loginOK()), 0},
		// Server TLS: 'S' then a real handshake, 'N', and a bad answer.
		{cat([]byte{'S'}, loginOK()), 4},
		{cat([]byte{'N'}, authReq(5, 9, 9, 9, 9), loginOK()), 5},
		{cat([]byte{'E'}, errResp("FATAL", "08P01", "unsupported frontend protocol")), 4},
		// connect_query answered, with an error, and left in a
		// transaction.
		{cat(loginOK(), fuzzMessage('T', []byte{0, 1}, cstr("?column?"), make([]byte, 18)), fuzzMessage('D', []byte{0, 1}, be32(1), []byte("1")),
			fuzzMessage('C', cstr("SELECT 1")), readyFor('I')), 8},
		{cat(loginOK(), errResp("ERROR", "42601", "syntax error"), readyFor('I')), 8},
		{cat(loginOK(), fuzzMessage('C', cstr("BEGIN")), readyFor('T')), 9},
		{cat(loginOK(), fuzzMessage('G', []byte{0, 0, 0})), 8},
		// Lengths: a 1 GiB message, a short one, a truncated stream.
		{cat(authReq(5, 1, 2, 3, 4), []byte{'R'}, be32(1<<30)), 0},
		{cat([]byte{'S', 0, 0, 0, 2}), 0},
		{loginOK()[:40], 0},
		{cat(loginOK(), []byte{'D'}, be32(1<<20+5)), 8},
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// relayScript is what the client of FuzzServerRelay does once signed in.
type relayScript struct {
	name     string
	database string
	request  []byte // sent at once
	syncs    int    // ReadyForQuery messages the request asks for
	flush    bool   // request ends in Flush; a Sync follows the first answer
}

func relayScripts() []relayScript {
	parse := func(name, sql string) []byte { return fuzzMessage('P', cstr(name), cstr(sql), []byte{0, 0}) }
	bind := func(stmt string) []byte {
		return fuzzMessage('B', cstr(""), cstr(stmt), []byte{0, 0}, []byte{0, 0}, []byte{0, 0})
	}
	exec := fuzzMessage('E', cstr(""), be32(0))
	describe := fuzzMessage('D', []byte{'P'}, cstr(""))
	sync := fuzzMessage('S')
	query := fuzzMessage('Q', cstr("SELECT 1"))
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return []relayScript{
		{"simple query, transaction mode", "fz_tx", query, 1, false},
		{"named statements, two batches", "fz_tx", cat(parse("s1", "SELECT 1"), bind("s1"), describe, exec, sync, bind("s1"), exec, sync), 2, false},
		{"simple query, session mode", "fz_session", query, 1, false},
		{"simple query, statement mode", "fz_stmt", query, 1, false},
		{"Flush before Sync", "fz_tx", cat(parse("s2", "SELECT 2"), bind("s2"), exec, fuzzMessage('H')), 1, true},
		{"COPY FROM STDIN", "fz_tx", fuzzMessage('Q', cstr("COPY t FROM STDIN")), 1, false},
		{"unnamed statement, session mode", "fz_session", cat(parse("", "SELECT 1"), bind(""), exec, sync), 1, false},
		{"DEALLOCATE ALL and a named statement", "fz_tx", cat(fuzzMessage('Q', cstr("DEALLOCATE ALL")), parse("s3", "SELECT 3"), sync), 2, false},
	}
}

// FuzzServerRelay: a client signed in to a server that logged in
// properly sends a request (script picks one of relayScripts: simple and
// extended protocol, named prepared statements that the pooler renames,
// each pool mode, Flush, COPY), and the server answers with the input. The
// server is read by the relay's scanner, inline or by the pump.
//
// Checked: no panic, no hang; the client receives whole messages (the
// server's, forwarded, and the pooler's own) and the connection ends
// cleanly, or with a reset when the pooler closed with our bytes unread;
// bounded allocation, whatever the server's length fields say.
//
//	go test -run '^$' -fuzz '^FuzzServerRelay$' ./pooler/
func FuzzServerRelay(f *testing.F) {
	env := newBackendEnv(f)
	for _, s := range serverRelaySeeds() {
		f.Add(s.data, s.variant)
	}
	scripts := relayScripts()
	f.Fuzz(func(t *testing.T, answer []byte, script uint8) {
		defer fuzzwatch.Watchdog(0, "FuzzServerRelay")()
		sc := scripts[int(script)%len(scripts)]
		done := allocGuard(t)
		s := env.server(t, env.relay)
		env.hostile.serve(t, func(c net.Conn) {
			hc := env.hostile.accept(c, false, 0)
			if hc == nil {
				return
			}
			if _, err := hc.conn.Write(loginOK()); err != nil {
				return
			}
			// The answer goes out once the request is there.
			if _, ok := hc.waitFor(func(m poolerMsg) bool { return m.typ == 'Q' || m.typ == 'S' || m.typ == 'H' }); !ok {
				return
			}
			hc.play(answer)
		})
		c := env.client(t, s)
		r, ok, fatal := signIn(t, c, "alice", fuzzAlicePw, sc.database)
		if !ok {
			t.Fatalf("%s: sign-in failed (%s)", sc.name, fatal)
		}
		writeQuiet(c, sc.request)
		// The server may cut its last message short; the client then
		// gets that much of it and the close, nothing else.
		r.tailOK = func(tail []byte) bool { return bytes.Contains(answer, tail) }
		runRelayClient(t, c, r, sc)
		c.Close()
		s.wg.Wait()
		done()
	})
}

// runRelayClient reads the answer to sc's request, sending CopyData and
// CopyDone when the pooler asks for them and the Sync after a Flush, and
// leaves with Terminate once every request is answered.
func runRelayClient(t *testing.T, c net.Conn, r *wireReader, sc relayScript) {
	ready := 0
	synced := !sc.flush
	for {
		typ, body, ok := r.message()
		if !ok {
			return
		}
		switch typ {
		case 'Z':
			ready++
		case 'G', 'W':
			// CopyInResponse, CopyBothResponse: the data, and the end.
			writeQuiet(c, fuzzMessage('d', []byte("1\n")))
			writeQuiet(c, fuzzMessage('c'))
		case 'E':
			if sev, _, _ := parseErrorFields(body); sev == "FATAL" {
				// The server's or the pooler's. After the server's,
				// the pooler may add its own (server conn crashed?);
				// then the connection closes.
				for {
					typ, body, ok := r.message()
					if !ok {
						return
					}
					if typ != 'E' {
						t.Fatalf("%q after a FATAL error", typ)
					}
					checkPoolerError(t, body)
				}
			}
		}
		if !synced {
			writeQuiet(c, fuzzMessage('S'))
			synced = true
		}
		if ready >= sc.syncs {
			writeQuiet(c, fuzzMessage('X'))
			r.rest()
			return
		}
	}
}

func serverRelaySeeds() []backendSeed {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	rowDesc := fuzzMessage('T', []byte{0, 1}, cstr("?column?"), be32(0), []byte{0, 0}, be32(23), []byte{0, 4}, be32(-1), []byte{0, 0})
	row := fuzzMessage('D', []byte{0, 1}, be32(1), []byte("1"))
	selectOne := cat(rowDesc, row, fuzzMessage('C', cstr("SELECT 1")))
	parseDone, bindDone := fuzzMessage('1'), fuzzMessage('2')
	return []backendSeed{
		{cat(selectOne, readyFor('I')), 0},
		{cat(parseDone, bindDone, rowDesc, row, fuzzMessage('C', cstr("SELECT 1")), readyFor('I'), bindDone, row, fuzzMessage('C', cstr("SELECT 1")), readyFor('I')), 1},
		{cat(parseDone, errResp("ERROR", "42P05", `prepared statement "s1" already exists`), readyFor('I'), bindDone, readyFor('I')), 1},
		{cat(selectOne, fuzzMessage('A', be32(7), cstr("chan"), cstr("payload")), readyFor('I')), 2},
		{cat(fuzzMessage('C', cstr("BEGIN")), readyFor('T')), 3},
		{cat(parseDone, bindDone, row, fuzzMessage('C', cstr("SELECT 1")), readyFor('I')), 4},
		{cat(fuzzMessage('G', []byte{0}, []byte{0, 1}, []byte{0, 0}), fuzzMessage('C', cstr("COPY 1")), readyFor('I')), 5},
		{cat(parseDone, bindDone, row, fuzzMessage('C', cstr("SELECT 1")), readyFor('I')), 6},
		{cat(fuzzMessage('C', cstr("DEALLOCATE ALL")), readyFor('I'), parseDone, readyFor('I')), 7},
		// ParameterStatus changes, a notice, an error inside a
		// transaction, a FATAL from the server.
		{cat(paramStatus("TimeZone", "Europe/Paris"), paramStatus("search_path", "x"), fuzzMessage('N', []byte("SNOTICE\x00Mhi\x00\x00")), selectOne, readyFor('I')), 0},
		{cat(errResp("ERROR", "22012", "division by zero"), readyFor('E')), 0},
		{errResp("FATAL", "57P01", "terminating connection due to administrator command"), 0},
		// Broken framing: a length below 4, a message cut short, a
		// ReadyForQuery with no status, bytes after the last one, a
		// 1 GiB DataRow and ParameterStatus.
		{cat(rowDesc, []byte{'D', 0, 0, 0, 3}), 0},
		{cat(rowDesc, row[:8]), 0},
		{cat(selectOne, []byte{'Z', 0, 0, 0, 4}), 0},
		{cat(selectOne, readyFor('I'), row), 0},
		{cat(rowDesc, []byte{'D'}, be32(1<<30), []byte{0, 1}), 2},
		{cat([]byte{'S'}, be32(1<<30), []byte("TimeZone")), 0},
		{cat(parseDone, []byte{'1', 0, 0, 0, 5, 0}), 1},
		{cat([]byte{'E'}, be32(1<<30)), 1},
	}
}
