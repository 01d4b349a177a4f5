package pooler

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
)

// A length field is a claim, not a size to allocate: a message header
// announcing 1 GiB is refused before any buffer grows (startup packet,
// sign-in messages, the console, a server's login messages), or, where
// PostgreSQL allows messages that large (the relay, with max_packet_size
// at its default), streamed through in pieces with the buffers growing
// only with the bytes that actually arrive. Each case measures the
// process's allocations over the exchange.

const (
	gib = 1 << 30
	// allocLimit is far below the announced size and far above what an
	// exchange needs.
	allocLimit = 16 << 20
)

// allocated runs f and returns what the process allocated meanwhile.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// readAll reads the pooler's messages to the close: the types, and the
// SQLSTATE and message of the last ErrorResponse.
func readAll(t *testing.T, r *wireReader) (types, sqlstate, msg string) {
	for {
		typ, body, ok := r.message()
		if !ok {
			return types, sqlstate, msg
		}
		types += string(typ)
		if typ == 'E' {
			_, sqlstate, msg = parseErrorFields(body)
		}
	}
}

func TestHugeLengthClient(t *testing.T) {
	env := newStartupEnv(t)
	plain := env.cfgs[2] // auth_type = plain, client TLS required
	trust := env.cfgs[4] // auth_type = trust, no client TLS
	noTLS := env.config(t, "plain-notls.ini", strings.Replace(string(mustRead(t, plain.Path)), "client_tls_sslmode = require", "client_tls_sslmode = disable", 1))
	for _, tc := range []struct {
		name     string
		cfg      int // 0: plain without TLS, 1: trust
		send     []byte
		sqlstate string
		msg      string
	}{
		{"startup packet", 0, append(be32(gib), be32(protocolV3)...), "08P01", "bad packet header: '40000000'"},
		{"startup packet, negative", 0, append(be32(-8), be32(protocolV3)...), "08P01", "bad packet header: 'fffffff8'"},
		{"password message", 0, append(startupPacket("user", "alice", "database", "app"), append([]byte{'p'}, be32(gib)...)...),
			"08P01", "message too large: password message longer than 64 KiB"},
		{"password message, length 3", 0, append(startupPacket("user", "alice", "database", "app"), 'p', 0, 0, 0, 3),
			"08P01", "invalid message length"},
		{"console query", 1, append(startupPacket("user", "admin", "database", "pgbouncer"), append([]byte{'Q'}, be32(gib)...)...),
			"08P01", "message too large: console messages are limited to 1 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := noTLS
			if tc.cfg == 1 {
				cfg = trust
			}
			var types, sqlstate, msg string
			n := allocated(func() {
				s := env.server(t, cfg)
				c := env.client(t, s)
				// Header only: nothing behind the length.
				writeQuiet(c, tc.send)
				types, sqlstate, msg = readAll(t, newWireReader(t, c))
				s.wg.Wait()
			})
			if !strings.HasSuffix(types, "E") || sqlstate != tc.sqlstate || msg != tc.msg {
				t.Fatalf("got %q, last error %s %q; want an ErrorResponse %s %q", types, sqlstate, msg, tc.sqlstate, tc.msg)
			}
			if n > allocLimit {
				t.Fatalf("%d MiB allocated for a message announcing 1 GiB", n>>20)
			}
			t.Logf("%s: %s %q, %d KiB allocated", tc.name, sqlstate, msg, n>>10)
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHugeLengthRelayClient: in the relay, a client message announcing
// 1 GiB is refused by max_packet_size when that is lower, before a server
// is attached; at the default (2 GiB, as PgBouncer) it is forwarded as it
// arrives, and so is a Parse that the prepared-statement tracking needs
// whole: its buffer grows with the bytes received (1 MiB here), not with
// the length announced.
func TestHugeLengthRelayClient(t *testing.T) {
	env := newBackendEnv(t)
	limited := env.config(t, "limited.ini", strings.Replace(string(mustRead(t, env.relay.Path)), "max_prepared_statements = 4", "max_prepared_statements = 4\nmax_packet_size = 65536", 1))
	body := bytes.Repeat([]byte("x"), 1<<20)
	for _, tc := range []struct {
		name     string
		limited  bool
		db       string
		msg      []byte
		sqlstate string // "" when the message is forwarded
	}{
		{"Query over max_packet_size", true, "fz_tx", append(append([]byte{'Q'}, be32(gib)...), body...), "08P01"},
		{"Query, default max_packet_size", false, "fz_tx", append(append([]byte{'Q'}, be32(gib)...), body...), ""},
		{"Parse tracked, default max_packet_size", false, "fz_tx", append(append([]byte{'P'}, be32(gib)...), body...), ""},
		{"Query, session mode", false, "fz_session", append(append([]byte{'Q'}, be32(gib)...), body...), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := env.relay
			if tc.limited {
				cfg = limited
			}
			var got []byte
			var types, sqlstate string
			n := allocated(func() {
				s := env.server(t, cfg)
				env.hostile.serve(t, func(c net.Conn) {
					if hc := env.hostile.accept(c, false, 0); hc != nil {
						_, _ = hc.conn.Write(loginOK())
						// Read what comes, and stay: a server that
						// closes after its login is seen as dead
						// while idle, and replaced.
						for range hc.msgs {
						}
					}
				})
				c := env.client(t, s)
				r, ok, fatal := signIn(t, c, "alice", fuzzAlicePw, tc.db)
				if !ok {
					t.Fatalf("sign-in: %s", fatal)
				}
				writeQuiet(c, tc.msg)
				if tc.sqlstate == "" {
					// Forwarded: the client gives up half-way.
					c.Close()
				}
				types, sqlstate, _ = readAll(t, r)
				got = r.buf
				s.wg.Wait()
			})
			if tc.sqlstate != "" && (!strings.HasSuffix(types, "E") || sqlstate != tc.sqlstate) {
				t.Fatalf("got %q %s (%q); want an ErrorResponse %s", types, sqlstate, got, tc.sqlstate)
			}
			if n > allocLimit {
				t.Fatalf("%d MiB allocated for a message announcing 1 GiB", n>>20)
			}
			t.Logf("%s: %d KiB allocated", tc.name, n>>10)
		})
	}
}

// TestHugeLengthServer: a server message announcing 1 GiB during the
// pooler's login is refused (the client gets server login failed); in the
// relay, a DataRow or a ParameterStatus that large is forwarded as it
// arrives, and when the server then dies inside it the client gets the
// partial message and the close, not an ErrorResponse it would read as
// part of the message.
func TestHugeLengthServer(t *testing.T) {
	env := newBackendEnv(t)
	for _, tc := range []struct {
		name  string
		login bool   // the message comes during the login
		reply []byte // the server's answer (after its login for the relay)
		want  string // types the client receives, in order
	}{
		{"login authentication request", true, append([]byte{'R'}, be32(gib)...), "E"},
		{"login ParameterStatus", true, append(authReq(0), append([]byte{'S'}, be32(gib)...)...), "E"},
		{"relay DataRow", false, append(append([]byte{'D'}, be32(gib)...), bytes.Repeat([]byte{1}, 100<<10)...), ""},
		{"relay ParameterStatus", false, append(append([]byte{'S'}, be32(gib)...), []byte("TimeZone\x00")...), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var types, sqlstate, msg string
			var tail []byte
			n := allocated(func() {
				s := env.server(t, env.relay)
				env.hostile.serve(t, func(c net.Conn) {
					hc := env.hostile.accept(c, false, 0)
					if hc == nil {
						return
					}
					if !tc.login {
						_, _ = hc.conn.Write(loginOK())
						if _, ok := hc.waitFor(func(m poolerMsg) bool { return m.typ == 'Q' }); !ok {
							return
						}
					}
					_, _ = hc.conn.Write(tc.reply)
					hc.finish()
				})
				c := env.client(t, s)
				r, ok, fatal := signIn(t, c, "alice", fuzzAlicePw, "fz_tx")
				if tc.login {
					if ok || !strings.HasPrefix(fatal, "08P01 server login failed") {
						t.Fatalf("sign-in: ok %v, %q", ok, fatal)
					}
					types = "E"
					return
				}
				if !ok {
					t.Fatalf("sign-in: %s", fatal)
				}
				writeQuiet(c, fuzzMessage('Q', cstr("SELECT 1")))
				r.tailOK = func(b []byte) bool { return bytes.HasPrefix(tc.reply, b) }
				types, sqlstate, msg = readAll(t, r)
				tail = r.buf
				s.wg.Wait()
			})
			if types != tc.want {
				t.Fatalf("client got %q (last error %s %q), want %q", types, sqlstate, msg, tc.want)
			}
			if !tc.login && !bytes.HasPrefix(tc.reply, tail) {
				t.Fatalf("client got %d bytes that are not the server's message", len(tail))
			}
			if n > allocLimit {
				t.Fatalf("%d MiB allocated for a message announcing 1 GiB", n>>20)
			}
			t.Logf("%s: client got %q and %d bytes of the message; %d KiB allocated", tc.name, types, len(tail), n>>10)
		})
	}
}
