package pooler

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
)

// FuzzConsole runs arbitrary admin console commands: the input is up to 16
// queries separated by NUL bytes (the console reads a Query message's text
// up to its first NUL), each run as the console's session runs it, on a
// Server built for the input, by an admin (admin true) or a stats user.
// Commands that change state (PAUSE, SUSPEND, KILL, SET, SHUTDOWN, ...) run
// for real.
//
// Checked: no panic, no hang; each reply is whole messages of the kinds a
// console sends, ending in CommandComplete, an ErrorResponse (severity
// ERROR, a well-formed SQLSTATE, a message) or EmptyQueryResponse; only
// SHUTDOWN goes without a reply; a stats user changes nothing.
//
//	go test -run '^$' -fuzz '^FuzzConsole$' ./pooler/
func FuzzConsole(f *testing.F) {
	env := newFuzzEnv(f)
	cfg := env.config(f, "console.ini", "[databases]\napp = host=/nowhere dbname=app\nother = host=/nowhere pool_mode=statement\n"+
		"[pgbouncer]\nlisten_addr = 127.0.0.1\nunix_socket_dir =\nauth_file = {dir}/userlist.txt\nadmin_users = admin\nstats_users = stats\n"+
		"peer_id = 1\n[peers]\n2 = host=/nowhere port=7777\n")
	for _, s := range []string{
		"SHOW POOLS", "show clients;", "SHOW STATS\x00SHOW STATS_TOTALS\x00SHOW STATS_AVERAGES\x00SHOW TOTALS",
		"SHOW DATABASES\x00SHOW USERS\x00SHOW SERVERS\x00SHOW SOCKETS\x00SHOW ACTIVE_SOCKETS\x00SHOW LISTS\x00SHOW MEM",
		"SHOW CONFIG\x00SHOW STATE\x00SHOW VERSION\x00SHOW HELP\x00SHOW PEERS\x00SHOW PEER_POOLS\x00SHOW FDS",
		"SHOW DNS_HOSTS\x00SHOW DNS_ZONES\x00SHOW PRINCIPALS\x00SHOW SIGNINS\x00SHOW JWKS\x00SELECT VERSION",
		"PAUSE app\x00RESUME app\x00PAUSE\x00RESUME", "SUSPEND\x00RESUME", "KILL app\x00RESUME app",
		"DISABLE app\x00ENABLE app\x00DISABLE pgbouncer", "RECONNECT\x00WAIT_CLOSE\x00RECONNECT app\x00WAIT_CLOSE app",
		"KILL_CLIENT 1\x00KILL_CLIENT x", "RELOAD", "SHUTDOWN WAIT_FOR_CLIENTS\x00SHOW STATE", "SHUTDOWN",
		"SET default_pool_size = 7\x00SHOW CONFIG", "SET query_timeout TO '2.5'", "set \"server_reset_query\" = 'DISCARD ''ALL'''",
		"SET listen_port = 1\x00SET nosuch = 1\x00SET client_encoding = 'UTF8'\x00SET pool_mode = sessionx",
		"", "   ;  ", "SHOW \"pools\"", "\"show\" \"\"\"\"", "PAUSE " + strings.Repeat("x", 70), "SHOW nosuch",
		"SELECT 1", "KILL pgbouncer\x00PAUSE nosuch\x00RESUME nosuch",
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	shutdownRE := regexp.MustCompile(`(?i)shutdown`)
	f.Fuzz(func(t *testing.T, data []byte, admin bool) {
		if !fuzzFileSafe(string(data)) {
			t.Skip() // SET auth_file = /dev/zero and the like
		}
		defer fuzzwatch.Watchdog(0, "FuzzConsole")()
		s := env.server(t, cfg)
		user := "stats"
		if admin {
			user = "admin"
		}
		a := consoleSession(t, s, user)
		before := consoleState(s)
		for i, q := range bytes.SplitN(data, []byte{0}, 16) {
			if i == 15 {
				// The 16th part holds the rest: its text up to the
				// next NUL, as the console reads it.
				q, _, _ = bytes.Cut(q, []byte{0})
			}
			query := strings.TrimSpace(string(q))
			out := a.exec(query)
			if out == nil {
				if !shutdownRE.MatchString(query) {
					t.Fatalf("no reply to %q", query)
				}
				continue
			}
			checkConsoleReply(t, query, out)
		}
		if !admin {
			if after := consoleState(s); after != before {
				t.Fatalf("a stats user changed the state: %+v to %+v", before, after)
			}
		}
	})
}

// fuzzFileSafe reports whether an input may be used where it can name a
// file the pooler reads (SET auth_file, auth_hba_file): a device or kernel
// file (/dev/zero, /dev/stdin, /proc/kmsg) would block or never end, which
// says nothing about the pooler.
func fuzzFileSafe(s string) bool {
	for _, bad := range []string{"dev/", "/dev", "proc/", "/proc", "sys/", "/sys"} {
		if strings.Contains(s, bad) {
			return false
		}
	}
	return true
}

// consoleSession signs user in to the console of s as the session code
// does, on a socket whose other end reads and discards.
func consoleSession(t *testing.T, s *Server, user string) *adminSession {
	t.Helper()
	mine, other := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, other) }()
	t.Cleanup(func() { mine.Close(); other.Close() })
	c := s.newClientConn(mine, true)
	c.st = &startup{user: user, database: "pgbouncer", params: map[string]string{}}
	c.identity = &Identity{Method: "trust"}
	s.trackClient(c, true)
	if err := c.startAdmin(); err != nil {
		t.Fatalf("console sign-in as %s: %v", user, err)
	}
	t.Cleanup(func() {
		s.pools.consoleGone(c.admin)
		c.finish()
	})
	return c.admin
}

// consoleSnapshot is what a console command may change.
type consoleSnapshot struct {
	pause    pauseMode
	stopping bool
	cfg      any
	disabled string
}

func consoleState(s *Server) consoleSnapshot {
	cfg := s.cfg.Load()
	var disabled []string
	for name := range cfg.Databases {
		if s.pools.isDisabled(name) {
			disabled = append(disabled, name)
		}
	}
	return consoleSnapshot{pause: s.pools.pause.mode(), stopping: s.shuttingDown(), cfg: cfg, disabled: strings.Join(disabled, ",")}
}

// checkConsoleReply checks one command's reply (without ReadyForQuery).
func checkConsoleReply(t *testing.T, q string, out []byte) {
	t.Helper()
	var last byte
	for len(out) > 0 {
		if len(out) < 5 {
			t.Fatalf("%q: reply ends in %q", q, out)
		}
		typ := out[0]
		n := int(binary.BigEndian.Uint32(out[1:5]))
		if n < 4 || 1+n > len(out) {
			t.Fatalf("%q: message %q with length %d, %d bytes left", q, typ, n, len(out))
		}
		body := out[5 : 1+n]
		switch typ {
		case 'E':
			sev, code, msg := parseErrorFields(body)
			if sev != "ERROR" || !validSQLState(code) || msg == "" {
				t.Fatalf("%q: error %q", q, body)
			}
		case 'T', 'D', 'C', 'N', 'I':
		default:
			t.Fatalf("%q: message %q in a console reply", q, typ)
		}
		last = typ
		out = out[1+n:]
	}
	if last != 'C' && last != 'E' && last != 'I' {
		t.Fatalf("%q: reply ends with %q", q, last)
	}
}
