package pooler

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// TestWriteFuzzSeeds records real traffic between real clients (psql,
// pgbench, pgx) and a real PostgreSQL through a recording proxy, and
// writes it as seed corpus files under testdata/fuzz: the clients' bytes
// for the client-side targets, the server's for the server-side ones. The
// SCRAM nonces of the recorded exchanges are replaced by {nonce}, which the
// harnesses fill in. It runs only when asked, and the files are committed:
//
//	PGWARDEN_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./pooler/
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PGWARDEN_FUZZ_SEEDS") == "" {
		t.Skip("set PGWARDEN_FUZZ_SEEDS=1 to record the seed corpus again")
	}
	ctx := context.Background()
	pg := pgtest.StartT(t, pgtest.Options{HBA: []string{"host all bob 127.0.0.1/32 md5"}})
	must(t, pg.CreateRole(ctx, "alice", fuzzAlicePw, "scram-sha-256"))
	must(t, pg.CreateRole(ctx, "bob", fuzzBobPw, "md5"))
	must(t, pg.Exec(ctx, "CREATE DATABASE app OWNER alice", "GRANT ALL ON DATABASE app TO bob"))
	conn, err := pg.Connect(ctx, "alice", fuzzAlicePw, "app")
	must(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE t (a int)")
	must(t, err)
	conn.Close(ctx)
	proxy := newRecordingProxy(t, net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)))
	dsn := func(user, password, extra string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=app %s", proxy.port(), user, password, extra)
	}
	psql := func(user, password, extra string, args ...string) session {
		cmd := exec.Command(pgtest.PsqlPath(), append([]string{"-X", "-q", dsn(user, password, extra)}, args...)...)
		cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
		if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "ERROR:") {
			t.Fatalf("psql %v: %v\n%s", args, err, out)
		}
		return proxy.last(t)
	}
	// Real sessions.
	psqlSCRAM := psql("alice", fuzzAlicePw, "sslmode=disable", "-c", "SELECT 1")
	psqlPrefer := psql("alice", fuzzAlicePw, "sslmode=prefer", "-c", "SELECT current_user, now()")
	psqlMD5 := psql("bob", fuzzBobPw, "sslmode=disable", "-c", "BEGIN; SELECT 1/0; ROLLBACK")
	psqlCopy := psql("alice", fuzzAlicePw, "sslmode=disable", "-c", `\copy t from program 'printf "1\n2\n"'`)
	pgbenchCmd := func(args ...string) session {
		cmd := exec.Command(pgtest.PgbenchPath(), append(args, "-h", "127.0.0.1", "-p", strconv.Itoa(proxy.port()), "-U", "alice", "app")...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+fuzzAlicePw, "PGSSLMODE=disable")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return proxy.last(t)
	}
	pgbenchCmd("-i", "-s", "1", "-q")
	pgbench := pgbenchCmd("-n", "-S", "-t", "3", "-M", "prepared")
	pgx5 := func() session {
		c, err := pgx.Connect(ctx, dsn("alice", fuzzAlicePw, "sslmode=disable"))
		must(t, err)
		var n int
		must(t, c.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n))
		_, err = c.Prepare(ctx, "named", "SELECT count(*) FROM t WHERE a > $1")
		must(t, err)
		must(t, c.QueryRow(ctx, "named", 0).Scan(&n))
		_, err = c.Exec(ctx, "DEALLOCATE named")
		must(t, err)
		c.Close(ctx)
		return proxy.last(t)
	}()

	// The server's answers to the relay target's requests, after a real
	// login.
	var relayAnswers [][]byte
	for i, sc := range relayScripts() {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(proxy.port()))
		must(t, err)
		db := "app"
		r, ok, fatal := signIn(t, c, "alice", fuzzAlicePw, db)
		if !ok {
			t.Fatalf("script %d: sign-in: %s", i, fatal)
		}
		writeQuiet(c, sc.request)
		runRelayClient(t, c, r, sc)
		c.Close()
		s := proxy.last(t)
		relayAnswers = append(relayAnswers, afterLogin(s.server))
	}

	// principal_query and auth_query answers.
	queryAnswer := func(user, password string, req []byte) []byte {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(proxy.port()))
		must(t, err)
		r, ok, fatal := signIn(t, c, user, password, "app")
		if !ok {
			t.Fatalf("sign-in: %s", fatal)
		}
		writeQuiet(c, req)
		for {
			typ, _, ok := r.message()
			if !ok || typ == 'Z' {
				break
			}
		}
		writeQuiet(c, fuzzMessage('X'))
		r.rest()
		c.Close()
		return afterLogin(proxy.last(t).server)
	}
	principalRows := queryAnswer("alice", fuzzAlicePw, appendQuery(nil,
		"SELECT rolname, '6d2a9a2e-6cd5-4b8c-9d0b-8f2b0a1f3c44' AS oid, CASE WHEN rolsuper THEN 'service' ELSE 'user' END AS type, rolcanlogin AS admin FROM pg_roles WHERE rolname IN ('alice', 'bob')"))
	pgaadauthRows := queryAnswer("alice", fuzzAlicePw, appendQuery(nil, pgaadauthQuery))
	authQueryRows := func() []byte {
		var b []byte
		b, p := appendMsg(b, 'P')
		b = appendCString(b, "")
		b = appendCString(b, "SELECT usename, passwd FROM pg_shadow WHERE usename = $1")
		b = appendInt16(b, 0)
		b = finishMsg(b, p)
		b, p = appendMsg(b, 'B')
		b = appendCString(b, "")
		b = appendCString(b, "")
		b = appendInt16(b, 0)
		b = appendInt16(b, 1)
		b = appendInt32(b, 5)
		b = append(b, "alice"...)
		b = appendInt16(b, 0)
		b = finishMsg(b, p)
		b, p = appendMsg(b, 'E')
		b = appendCString(b, "")
		b = appendInt32(b, 0)
		b = finishMsg(b, p)
		b = append(b, 'S', 0, 0, 0, 4)
		return queryAnswer(pg.SuperUser, pg.SuperPassword, b)
	}()

	// FuzzStartup and FuzzClientSCRAM: the clients' side.
	w := seedWriter{t: t}
	w.write("FuzzStartup", "psql-scram", templateClientNonce(psqlSCRAM.client), uint8(0))
	w.write("FuzzStartup", "psql-sslrequest", templateClientNonce(psqlPrefer.client), uint8(1))
	w.write("FuzzStartup", "psql-md5", psqlMD5.client, uint8(1))
	w.write("FuzzStartup", "psql-copy", templateClientNonce(psqlCopy.client), uint8(0))
	w.write("FuzzStartup", "pgbench-prepared", templateClientNonce(pgbench.client), uint8(0))
	w.write("FuzzStartup", "pgx", templateClientNonce(pgx5.client), uint8(0))
	first, final := saslBodies(t, psqlSCRAM.client)
	w.write("FuzzClientSCRAM", "psql-alice", first, final, uint8(1))
	w.write("FuzzClientSCRAM", "psql-carol", first, final, uint8(0))
	// FuzzServerLogin: the server's side of the login (alice: SCRAM;
	// bob: md5), and with connect_query's answer behind it.
	login := templateServerNonce(t, psqlSCRAM)
	w.write("FuzzServerLogin", "pg-scram", loginPart(login), uint8(0))
	w.write("FuzzServerLogin", "pg-scram-connect-query", login, uint8(8))
	w.write("FuzzServerLogin", "pg-md5", loginPart(psqlMD5.server), uint8(1))
	w.write("FuzzServerLogin", "pg-sslrequest-refused", append([]byte{'N'}, loginPart(templateServerNonce(t, psqlPrefer))...), uint8(4))
	// FuzzServerRelay: PostgreSQL's answers to each script.
	for i, a := range relayAnswers {
		w.write("FuzzServerRelay", fmt.Sprintf("pg-script-%d", i), a, uint8(i))
	}
	w.write("FuzzServerRelay", "pg-division-by-zero", afterLogin(psqlMD5.server), uint8(0))
	// FuzzPrincipalQuery.
	w.write("FuzzPrincipalQuery", "pg-rows", principalRows, false)
	w.write("FuzzPrincipalQuery", "pg-pgaadauth", pgaadauthRows, true)
	w.write("FuzzPrincipalQuery", "pg-auth-query", authQueryRows, false)
	// FuzzClientMessages: what the clients sent after their login.
	for name, s := range map[string]session{"psql": psqlSCRAM, "psql-copy": psqlCopy, "pgbench-prepared": pgbench, "pgx": pgx5, "psql-md5": psqlMD5} {
		w.write("FuzzClientMessages", name, afterClientLogin(t, s.client), uint8(0))
	}
	w.write("FuzzClientMessages", "pgbench-prepared-session", afterClientLogin(t, pgbench.client), uint8(1))
}

// session is one recorded connection.
type session struct{ client, server []byte }

// recordingProxy forwards connections to target and records both ways.
type recordingProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	// started counts the connections accepted since the last call of
	// last; done holds those that ended, by their order of arrival.
	started int
	done    map[int]session
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &recordingProxy{ln: ln, target: target, done: map[int]session{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			n := p.started
			p.started++
			p.mu.Unlock()
			go p.relay(c, n)
		}
	}()
	return p
}

func (p *recordingProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *recordingProxy) relay(c net.Conn, n int) {
	defer c.Close()
	var fromClient, fromServer bytes.Buffer
	s, err := net.Dial("tcp", p.target)
	if err == nil {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.MultiWriter(s, &fromClient), c)
			_ = s.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer wg.Done()
			_, _ = io.Copy(io.MultiWriter(c, &fromServer), s)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		wg.Wait()
		s.Close()
	}
	p.mu.Lock()
	p.done[n] = session{fromClient.Bytes(), fromServer.Bytes()}
	p.mu.Unlock()
}

// last waits until every connection accepted so far has ended and returns
// the one that arrived last.
func (p *recordingProxy) last(t *testing.T) session {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		started, done := p.started, len(p.done)
		var s session
		if started > 0 && done == started {
			s = p.done[started-1]
			p.started, p.done = 0, map[int]session{}
		}
		p.mu.Unlock()
		if started > 0 && done == started {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no recorded session")
	return session{}
}

// clientMessages splits a client stream: the packets before the startup
// packet and the startup packet (untyped), then typed messages.
func clientMessages(b []byte) (untyped [][]byte, typed [][]byte) {
	for len(b) >= 8 {
		n := int(binary.BigEndian.Uint32(b))
		if n < 8 || n > len(b) {
			return
		}
		untyped = append(untyped, b[:n])
		code := binary.BigEndian.Uint32(b[4:8])
		b = b[n:]
		if code != codeSSLRequest && code != codeGSSENCRequest {
			break
		}
	}
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:]))
		if n < 4 || 1+n > len(b) {
			break
		}
		typed = append(typed, b[:1+n])
		b = b[1+n:]
	}
	return untyped, typed
}

// templateClientNonce replaces the nonce in a client's SASLResponse (the
// client's and server's nonces together) with {nonce}.
func templateClientNonce(b []byte) []byte {
	untyped, typed := clientMessages(b)
	out := bytes.Join(untyped, nil)
	for _, m := range typed {
		if m[0] == 'p' && bytes.HasPrefix(m[5:], []byte("c=")) {
			body := m[5:]
			if i := bytes.Index(body, []byte(",r=")); i >= 0 {
				rest := body[i+3:]
				j := bytes.IndexByte(rest, ',')
				if j < 0 {
					j = len(rest)
				}
				nb := append(append(append([]byte{}, body[:i+3]...), "{nonce}"...), rest[j:]...)
				m = fuzzMessage('p', nb)
			}
		}
		out = append(out, m...)
	}
	return out
}

// saslBodies returns the bodies of a client's SASLInitialResponse and
// SASLResponse (nonce templated).
func saslBodies(t *testing.T, b []byte) (first, final []byte) {
	_, typed := clientMessages(templateClientNonce(b))
	for _, m := range typed {
		if m[0] != 'p' {
			continue
		}
		if first == nil {
			first = m[5:]
		} else if final == nil {
			final = m[5:]
		}
	}
	if first == nil || final == nil {
		t.Fatal("no SASL exchange recorded")
	}
	return first, final
}

// afterClientLogin returns what the client sent after its sign-in
// messages (the startup packet and password messages).
func afterClientLogin(t *testing.T, b []byte) []byte {
	_, typed := clientMessages(b)
	var out []byte
	for _, m := range typed {
		if m[0] == 'p' {
			continue
		}
		out = append(out, m...)
	}
	if len(out) == 0 {
		t.Fatal("no messages after the sign-in")
	}
	return out
}

// serverMessages splits a server stream into messages (an SSL answer byte
// first, when there is one).
func serverMessages(b []byte) (prefix []byte, msgs [][]byte) {
	if len(b) > 0 && (b[0] == 'N' || b[0] == 'S') && (len(b) < 5 || binary.BigEndian.Uint32(b[1:5]) > 1<<20) {
		prefix, b = b[:1], b[1:]
	}
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:]))
		if n < 4 || 1+n > len(b) {
			break
		}
		msgs = append(msgs, b[:1+n])
		b = b[1+n:]
	}
	return prefix, msgs
}

// loginPart is the server's stream up to its first ReadyForQuery.
func loginPart(b []byte) []byte {
	prefix, msgs := serverMessages(b)
	out := append([]byte(nil), prefix...)
	for _, m := range msgs {
		out = append(out, m...)
		if m[0] == 'Z' {
			break
		}
	}
	return out
}

// afterLogin is the server's stream after its first ReadyForQuery.
func afterLogin(b []byte) []byte {
	return b[len(loginPart(b)):]
}

// templateServerNonce returns the server's login stream with the client's
// nonce in the server-first-message replaced by {nonce}, and the answer to
// the session's first query behind it.
func templateServerNonce(t *testing.T, s session) []byte {
	first, _ := saslBodies(t, s.client)
	i := bytes.Index(first, []byte("r="))
	if i < 0 {
		t.Fatal("no client nonce")
	}
	clientNonce := first[i+2:]
	_, msgs := serverMessages(s.server)
	var out []byte
	for _, m := range msgs {
		if m[0] == 'R' && binary.BigEndian.Uint32(m[5:9]) == 11 {
			m = fuzzMessage('R', be32(11), bytes.Replace(m[9:], append([]byte("r="), clientNonce...), []byte("r={nonce}"), 1))
		}
		out = append(out, m...)
	}
	return out
}

// seedWriter writes corpus files in the format of go test's fuzzing.
type seedWriter struct{ t *testing.T }

func (w seedWriter) write(target, name string, args ...any) {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case uint8:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		default:
			w.t.Fatalf("seed argument %T", a)
		}
	}
	dir := filepath.Join("testdata", "fuzz", target)
	must(w.t, os.MkdirAll(dir, 0o755))
	must(w.t, os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644))
}
