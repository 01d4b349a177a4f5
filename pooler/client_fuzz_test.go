package pooler_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
	"github.com/pgwarden/pgwarden/pooler"
)

// FuzzClientMessages: a signed-in client sends anything (the input) after
// its sign-in, and the pooler relays it to a real PostgreSQL (the package's
// throwaway cluster), in the pool mode mode picks: transaction mode with
// prepared statements tracked and max_packet_size = 65536, session mode
// with the default max_packet_size (2 GiB), statement mode. This is the
// relay's client side: message headers split across reads, lengths,
// Terminate, COPY data, the prepared-statement rewriting of Parse, Bind,
// Describe and Close, Flush, Sync.
//
// Checked: no panic, no hang; the client receives whole messages; an
// ErrorResponse ending the session has a well-formed SQLSTATE; when the
// first message's length is below 4 or above max_packet_size, the pooler
// refuses it with one FATAL 08P01 before anything reaches a server; the
// pooler allocates no buffer for what a length field announces (bounded
// allocation per input).
//
//	go test -run '^$' -fuzz '^FuzzClientMessages$' ./pooler/
func FuzzClientMessages(f *testing.F) {
	type target struct {
		in        *instance
		maxPacket int
	}
	common := "auth_type = trust\nquery_timeout = 3\nquery_wait_timeout = 10\ndefault_pool_size = 4\nmax_prepared_statements = 8\n"
	// The harness keeps logs in memory for failed tests; a fuzzing run
	// would pile them up.
	quiet := func(o *pooler.Options) {
		o.Logger = slog.New(slog.DiscardHandler)
		o.AuditLogger = slog.New(slog.DiscardHandler)
	}
	targets := []target{
		{startPooler(f, common+"pool_mode = transaction\nmax_packet_size = 65536", quiet), 65536},
		{startPooler(f, common+"pool_mode = session", quiet), 1<<31 - 1},
		{startPooler(f, common+"pool_mode = statement\nmax_packet_size = 65536", quiet), 65536},
	}
	q := func(sql string) []byte { return msg('Q', []byte(sql+"\x00")) }
	parse := func(name, sql string, types ...uint32) []byte {
		b := append([]byte(name+"\x00"+sql+"\x00"), byte(len(types)>>8), byte(len(types)))
		for _, t := range types {
			b = binary.BigEndian.AppendUint32(b, t)
		}
		return msg('P', b)
	}
	bindMsg := func(portal, stmt string, params ...string) []byte {
		b := []byte(portal + "\x00" + stmt + "\x00")
		b = append(b, 0, 0, byte(len(params)>>8), byte(len(params)))
		for _, p := range params {
			b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
			b = append(b, p...)
		}
		b = append(b, 0, 0)
		return msg('B', b)
	}
	describe := func(kind byte, name string) []byte { return msg('D', append([]byte{kind}, name+"\x00"...)) }
	execute := msg('E', []byte{0, 0, 0, 0, 0})
	closeStmt := func(name string) []byte { return msg('C', []byte("S"+name+"\x00")) }
	sync, flush, terminate := msg('S', nil), msg('H', nil), msg('X', nil)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	seeds := []struct {
		data []byte
		mode uint8
	}{
		{q("SELECT 1"), 0},
		{cat(q("BEGIN"), q("SELECT 1"), q("COMMIT")), 0},
		// pgx's extended protocol with its statement cache names.
		{cat(parse("stmtcache_1", "SELECT $1::int", 23), describe('S', "stmtcache_1"), sync,
			bindMsg("", "stmtcache_1", "42"), describe('P', ""), execute, sync), 0},
		{cat(parse("s1", "SELECT 1"), bindMsg("", "s1"), execute, closeStmt("s1"), sync, bindMsg("", "s1"), execute, sync), 0},
		{cat(parse("s1", "SELECT 1"), parse("s1", "SELECT 2"), sync), 0},
		{cat(parse("", "SELECT 1"), bindMsg("", ""), execute, flush, sync), 0},
		{cat(q("PREPARE p AS SELECT 1"), q("EXECUTE p"), q("DEALLOCATE ALL"), q("DISCARD ALL")), 0},
		{cat(q("CREATE TEMP TABLE t (a int)"), q("COPY t FROM STDIN"), msg('d', []byte("1\n2\n")), msg('c', nil), q("SELECT count(*) FROM t")), 1},
		{cat(q("COPY (SELECT 1) TO STDOUT"), q("SELECT 1"), terminate, q("SELECT 2")), 0},
		{cat(q("SET search_path = x"), q("SHOW search_path"), q("LISTEN c"), q("NOTIFY c")), 1},
		{cat(q("BEGIN"), q("SELECT 1")), 2},
		{cat(q("SELECT 1; SELECT 2"), msg('F', []byte{0, 0, 0, 0}), sync), 2},
		{cat(q("SELEC oops"), q("SELECT 1/0"), q("")), 0},
		// Lengths: below 4, above max_packet_size, a 1 GiB header with
		// a few bytes behind it, a header split at the end.
		{[]byte{'Q', 0, 0, 0, 3}, 0},
		{cat([]byte{'Q'}, be32(65537), []byte("SELECT 1\x00")), 0},
		{cat([]byte{'Q'}, be32(1<<30), []byte("SELECT 1\x00")), 1},
		{cat([]byte{'P'}, be32(1<<30), []byte("big\x00SELECT")), 0},
		{cat(q("SELECT 1"), []byte{'Q', 0, 0}), 0},
		{[]byte{'z', 0, 0, 0, 4}, 0},
	}
	for _, s := range seeds {
		f.Add(s.data, s.mode)
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		defer fuzzwatch.Watchdog(0, "FuzzClientMessages")()
		tg := targets[int(mode)%len(targets)]
		done := allocGuardExt(t)
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(tg.in.port))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write(startup("alice", "app")); err != nil {
			t.Fatal(err)
		}
		rd := &msgStream{conn: conn}
		for {
			typ, body, ok := rd.next(t)
			if !ok {
				t.Fatal("the pooler closed during the sign-in")
			}
			if typ == 'E' {
				t.Fatalf("sign-in refused: %q", body)
			}
			if typ == 'Z' {
				break
			}
		}
		_, _ = conn.Write(data)
		// Wait for the answers before closing the write side, as a
		// client does (in session mode the pooler drops answers still
		// on their way once the client has gone): until a
		// ReadyForQuery for each request, or a pause (COPY waiting for
		// data, a request cut short).
		want := requests(data)
		readies := 0
		closed := false
		var last []byte
		var lastType byte
		n := 0
		for {
			if !closed && readies >= want {
				_ = conn.(*net.TCPConn).CloseWrite()
				closed = true
			}
			if closed {
				rd.pause = 0
			} else {
				rd.pause = 300 * time.Millisecond
			}
			typ, body, ok := rd.next(t)
			if rd.paused {
				rd.paused = false
				_ = conn.(*net.TCPConn).CloseWrite()
				closed = true
				continue
			}
			if !ok {
				break
			}
			if typ == 'Z' {
				readies++
			}
			lastType, last = typ, body
			n++
			if testing.Verbose() {
				t.Logf("%c %q", typ, body)
			}
		}
		if testing.Verbose() {
			t.Logf("n=%d reset=%v", n, rd.reset)
		}
		if lastType == 'E' {
			if sev, code := errorFields(last); sev == "FATAL" && !validState(code) {
				t.Fatalf("FATAL with SQLSTATE %q: %q", code, last)
			}
		}
		if len(data) >= 5 {
			l := int(binary.BigEndian.Uint32(data[1:5]))
			if l < 4 || l > tg.maxPacket {
				// Refused before any server is involved: one FATAL
				// 08P01, unless the close reset the connection first.
				sev, code := errorFields(last)
				if !(n == 1 && lastType == 'E' && sev == "FATAL" && code == "08P01") && !(n == 0 && rd.reset) {
					t.Fatalf("first message of length %d: %d messages, the last %q %q", l, n, lastType, last)
				}
			}
		}
		done()
	})
}

// requests counts the messages in data that PostgreSQL answers with a
// ReadyForQuery (Query, Sync, FunctionCall), up to the first bad length or
// Terminate.
func requests(data []byte) int {
	n := 0
	for len(data) >= 5 {
		l := int(binary.BigEndian.Uint32(data[1:5]))
		if l < 4 || l > len(data)-1 || data[0] == 'X' {
			break
		}
		switch data[0] {
		case 'Q', 'S', 'F':
			n++
		}
		data = data[1+l:]
	}
	return n
}

// msgStream reads messages from the pooler.
type msgStream struct {
	conn  net.Conn
	buf   []byte
	reset bool
	eof   bool
	// pause, when set, ends a read that waits longer (paused is then
	// set and next returns nothing).
	pause  time.Duration
	paused bool
}

func (m *msgStream) next(t *testing.T) (byte, []byte, bool) {
	for {
		if len(m.buf) >= 5 {
			n := int(binary.BigEndian.Uint32(m.buf[1:5]))
			if n < 4 {
				t.Fatalf("message %q with length %d", m.buf[0], n)
			}
			if len(m.buf) >= 1+n {
				typ, body := m.buf[0], append([]byte(nil), m.buf[5:1+n]...)
				m.buf = m.buf[1+n:]
				return typ, body, true
			}
		}
		if m.eof {
			if len(m.buf) > 0 && !m.reset {
				t.Fatalf("the pooler closed inside a message: %q", m.buf)
			}
			return 0, nil, false
		}
		var b [8192]byte
		limit := time.Now().Add(30 * time.Second)
		if m.pause > 0 {
			limit = time.Now().Add(m.pause)
		}
		_ = m.conn.SetReadDeadline(limit)
		n, err := m.conn.Read(b[:])
		m.buf = append(m.buf, b[:n]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if m.pause > 0 {
					m.paused = true
					return 0, nil, false
				}
				t.Fatalf("no answer and no close within 30 s (buffered %q)", m.buf)
			}
			m.eof = true
			m.reset = !errors.Is(err, io.EOF)
		}
	}
}

func startup(user, database string) []byte {
	b := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	b = append(b, "user\x00"+user+"\x00database\x00"+database+"\x00\x00"...)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

func be32(v int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

// errorFields returns an ErrorResponse's severity and SQLSTATE.
func errorFields(body []byte) (sev, code string) {
	for len(body) > 1 {
		f := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			break
		}
		v := string(body[1 : 1+end])
		switch f {
		case 'V':
			sev = v
		case 'S':
			if sev == "" {
				sev = v
			}
		case 'C':
			code = v
		}
		body = body[2+end:]
	}
	return sev, code
}

// allocGuardExt fails the test if the process allocated more than 48 MiB
// between its call and the call of the function it returns: no buffer the
// size of what a length field announces.
func allocGuardExt(t *testing.T) func() {
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	return func() {
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 48<<20 {
			t.Fatalf("%d MiB allocated for one input", d>>20)
		}
	}
}

func validState(s string) bool {
	if len(s) != 5 {
		return false
	}
	for i := 0; i < 5; i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}
