package pooler

import (
	"encoding/binary"
	"testing"
)

// FuzzPreparedRewrite feeds arbitrary client message sequences through the
// prepared-statement rewriting, with server answers interleaved, and checks
// that it never panics, that what it sends is well-framed, that the server
// never sees a name another client could own, and that the server's set
// stays within max_prepared_statements. The seed corpus is in
// testdata/fuzz/FuzzPreparedRewrite.
//
//	go test -run '^$' -fuzz FuzzPreparedRewrite ./pooler/
func FuzzPreparedRewrite(f *testing.F) {
	f.Add(fuzzMsgs(3, fuzzParse("s1", "SELECT $1"), fuzzBind("", "s1"), msg('E', []byte{0, 0, 0, 0, 0}), msg('S', nil)))
	f.Add(fuzzMsgs(1, fuzzParse("a", "SELECT 1"), fuzzParse("b", "SELECT 2"), fuzzBind("", "a"), fuzzDescribe('S', "b"), msg('C', append([]byte{'S'}, "a\x00"...)), msg('S', nil)))
	f.Add(fuzzMsgs(2, fuzzParse("x", "SELECT 1"), fuzzParse("x", "SELECT 2"), msg('S', nil), msg('Q', []byte("PREPARE p AS SELECT 1\x00"))))
	f.Add(fuzzMsgs(2, fuzzParse("d1", "SELECT 1"), msg('S', nil), msg('Q', []byte("DEALLOCATE d1\x00")), fuzzBind("", "d1"), msg('Q', []byte("DEALLOCATE pgwarden_x\x00")), msg('S', nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		ps := prepState{client: map[string]*clientStmt{}, srv: newServerStmts(), max: int(data[0] % 8)}
		data = data[1:]
		var out []byte
		for len(data) >= 2 {
			// A control byte: answer something as the server, or send
			// the next message.
			ctl := data[0]
			data = data[1:]
			// The simulated server answers in order, as PostgreSQL does:
			// a ParseComplete or CloseComplete only for the oldest
			// Parse or Close still unanswered (an error then Ready
			// skips the rest). A server that answers out of order is
			// FuzzServerRelay's business; here it would only break
			// the bookkeeping the count check below relies on.
			pf, cf := ps.srv.parses.front(), ps.srv.closes.front()
			switch ctl % 8 {
			case 0:
				if cf == nil || pf != nil && pf.seq < cf.seq {
					ps.srv.onParseComplete()
				}
				continue
			case 1:
				if pf == nil || cf != nil && cf.seq < pf.seq {
					ps.srv.onCloseComplete()
				}
				continue
			case 2:
				if ps.srv.readies < ps.srv.syncs {
					ps.srv.onReady(ps.client)
				}
				continue
			case 3:
				ps.srv.onError(appendErrorResponse(nil, 'E', "ERROR", "42601", `syntax error at or near "`+dupQuery+`"`)[5:])
				continue
			}
			typ := "PBDCSQEH"[data[0]%8]
			data = data[1:]
			n := 0
			if len(data) > 0 {
				n = min(int(data[0]), len(data)-1)
				data = data[1:]
			}
			body := data[:n]
			data = data[n:]
			m := msg(typ, body)
			l := len(m) - 1
			want := prepWant(typ, l, m)
			if want > len(m) {
				t.Fatalf("wants %d bytes of a %d-byte message", want, len(m))
			}
			before := len(out)
			var consumed int
			out, consumed = ps.rewrite(out, typ, l, m)
			if consumed < 0 || consumed > len(m) {
				t.Fatalf("consumed %d of %d", consumed, len(m))
			}
			if consumed == 0 {
				if len(out) != before {
					t.Fatalf("output without consuming")
				}
				out = append(out, m...)
			} else {
				out = append(out, m[consumed:]...)
			}
			checkFraming(t, out[before:])
			if ps.max > 0 && ps.srv.count() > ps.max {
				t.Fatalf("%d statements on the server, max %d", ps.srv.count(), ps.max)
			}
		}
		checkNames(t, &ps, out)
	})
}

// checkFraming walks b as a run of whole messages.
func checkFraming(t *testing.T, b []byte) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("truncated header %q", b)
		}
		l := int(binary.BigEndian.Uint32(b[1:]))
		if l < 4 || l+1 > len(b) {
			t.Fatalf("bad length %d for %q (%d bytes left)", l, b[0], len(b))
		}
		b = b[l+1:]
	}
}

// checkNames: every Bind and Describe of a statement that reaches the
// server names the unnamed statement, a server name the pooler made, the
// never-prepared one, or a name without the pooler's prefix.
func checkNames(t *testing.T, ps *prepState, b []byte) {
	t.Helper()
	made := map[string]bool{noopStmt: true}
	for _, st := range ps.client {
		made[st.srvName] = true
	}
	for len(b) >= 5 {
		typ := b[0]
		l := int(binary.BigEndian.Uint32(b[1:]))
		body := b[5 : l+1]
		var name string
		var ok bool
		switch typ {
		case 'P':
			name, _, ok = cstring(body)
			if ok && hasSrvPrefix(name) {
				made[name] = true
			}
			ok = false
		case 'B':
			if _, rest, ok1 := cstring(body); ok1 {
				name, _, ok = cstring(rest)
			}
		case 'D':
			if len(body) > 0 && body[0] == 'S' {
				name, _, ok = cstring(body[1:])
			}
		}
		if ok && hasSrvPrefix(name) && !made[name] {
			t.Fatalf("%q reaches the server's %q, which the pooler never prepared", typ, name)
		}
		b = b[l+1:]
	}
}

func msg(typ byte, body []byte) []byte {
	m := make([]byte, 5, 5+len(body))
	m[0] = typ
	binary.BigEndian.PutUint32(m[1:], uint32(4+len(body)))
	return append(m, body...)
}

func fuzzParse(name, query string) []byte {
	return appendParse(nil, name, query)
}

func fuzzBind(portal, stmt string) []byte {
	b := appendCString(nil, portal)
	b = appendCString(b, stmt)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return msg('B', b)
}

func fuzzDescribe(kind byte, name string) []byte {
	return msg('D', appendCString([]byte{kind}, name))
}

// fuzzMsgs encodes whole messages in FuzzPreparedRewrite's input format.
func fuzzMsgs(max byte, msgs ...[]byte) []byte {
	out := []byte{max}
	for _, m := range msgs {
		typ := m[0]
		body := m[5:]
		if len(body) > 255 {
			body = body[:255]
		}
		idx := byte(0)
		for i := 0; i < 8; i++ {
			if "PBDCSQEH"[i] == typ {
				idx = byte(i)
			}
		}
		out = append(out, 4, idx, byte(len(body)))
		out = append(out, body...)
	}
	return out
}
