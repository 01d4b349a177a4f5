package pooler

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sort"
	"sync/atomic"
)

// Protocol-level prepared statements in transaction and statement mode
// (max_prepared_statements > 0). A client's named statements live in the
// client (name → text and parameter types); a server connection holds each
// distinct statement once, under a pooler-wide name derived from a hash of
// the text and parameter types (pgwarden_<32 hex digits>), in an LRU bounded
// by max_prepared_statements. Bind and Describe of a client statement are
// rewritten to the server name, and a Parse is injected first when the
// server the client landed on does not have it yet.
//
// No response is ever made up by the pooler: every answer the client sees
// comes from PostgreSQL, at the position PostgreSQL puts it, so pipelines
// and errors in the middle of them (which make the server skip to Sync)
// keep their order for free:
//
//   - A Parse of a statement the server already has is sent as a Close of
//     a statement that never exists (a no-op by the protocol), and its
//     CloseComplete is turned into a ParseComplete.
//   - The ParseComplete of an injected Parse, and the CloseComplete of a
//     Close that evicts a statement, are removed from the stream.
//   - A Parse of a name the client already uses is sent as a Parse of a
//     text that cannot parse, and the server's syntax error is replaced by
//     PostgreSQL's own 42P05 error for the client's name.
//   - Close of a client statement forgets the name and is sent as a Close
//     of a statement that never exists.
//
// To know which response belongs to which of these, the pooler keeps two
// queues per server connection, one entry per Parse and per Close sent,
// each tagged with the number of Syncs (and simple Queries) sent before
// it. A ParseComplete or CloseComplete answers the head of its queue; at
// each ReadyForQuery the entries that got no answer (the server skipped
// them after an error) are dropped and their effect undone. When a
// pipeline goes on past a Sync while such Parses or Closes of an earlier
// batch are unanswered, the session goroutine first reads the server's
// answers to that batch (prepBarrier), so that the next message is
// rewritten against what really exists; a client that reads with Flush
// (the pump reads the server then) does not wait, and in that rare case a
// Bind of a statement whose Parse the server skipped names the server's
// statement in its "does not exist" error. Every other message passes as
// bytes, as before.

const (
	// srvStmtPrefix starts every server-side statement name.
	srvStmtPrefix = "pgwarden_"
	// noopStmt is never prepared anywhere: closing it is a no-op that
	// PostgreSQL answers with CloseComplete.
	noopStmt = "pgwarden_noop"
	// dupQuery fails to parse with a syntax error naming it.
	dupQuery = "pgwarden_duplicate_prepared_statement"
	// sqlPrepareHint is the hint of the error a SQL PREPARE gets.
	sqlPrepareHint = "Prepare statements through the driver instead (protocol-level prepared statements are tracked per client), or use a database in pool_mode = session."
)

// stmtKey identifies a statement text with its parameter types.
type stmtKey [16]byte

// clientStmt is one of a client's named statements.
type clientStmt struct {
	key     stmtKey
	srvName string
	// parse is a Parse message that prepares the statement under srvName.
	parse []byte
}

// Parse queue entry kinds.
const (
	pForward  uint8 = iota // the client's own unnamed Parse
	pClient                // a client's named Parse, prepared on the server
	pInjected              // injected before Bind/Describe: answer removed
	pDup                   // a re-Parse of a name in use: error replaced
)

// Close queue entry kinds.
const (
	cForward     uint8 = iota + 10 // the client's own Close (kinds differ from Parse kinds)
	cClientClose                   // Close of a client statement (sent as a no-op)
	cAsParse                       // a Parse of a statement the server has: answer becomes ParseComplete
	cEvict                         // an eviction: answer removed
)

// dDealloc is a DEALLOCATE entry: a client's SQL DEALLOCATE of one of its
// statements, sent as deallocQuery (dealloc.go).
const dDealloc uint8 = 20

type psEntry struct {
	kind uint8
	gen  uint64
	seq  uint64      // send order across both queues
	name string      // client statement name (pClient, pDup, cClientClose, cAsParse, dDealloc)
	stmt *clientStmt // pClient, cClientClose, cAsParse, dDealloc
	key  stmtKey     // pClient, pInjected, cEvict
}

// psQueue is a FIFO that reuses its backing array.
type psQueue struct {
	q    []psEntry
	head int
}

func (q *psQueue) push(e psEntry) { q.q = append(q.q, e) }
func (q *psQueue) len() int       { return len(q.q) - q.head }
func (q *psQueue) front() *psEntry {
	if q.head == len(q.q) {
		return nil
	}
	return &q.q[q.head]
}

func (q *psQueue) pop() psEntry {
	e := q.q[q.head]
	q.q[q.head] = psEntry{}
	q.head++
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
	return e
}

// lruNode is one statement prepared on a server.
type lruNode struct {
	key        stmtKey
	prev, next *lruNode
}

// serverStmts is what the pooler knows of one server connection's
// prepared statements. It is used by whoever holds the server, under the
// holding client's mu.
type serverStmts struct {
	byKey      map[stmtKey]*lruNode
	head, tail *lruNode // most and least recently used
	parses     psQueue
	closes     psQueue
	// deallocs are the client DEALLOCATEs sent as deallocQuery and not
	// yet answered.
	deallocs psQueue
	// syncs counts Sync, Query and FunctionCall messages sent, readies the
	// ReadyForQuery messages received, both while tracking.
	syncs, readies uint64
	// seq numbers the entries of both queues in send order.
	seq uint64
	// dropped is onReady's scratch list.
	dropped []psEntry
	// n is len(byKey), readable by SHOW SERVERS at any time.
	n atomic.Int32
}

func newServerStmts() *serverStmts { return &serverStmts{byKey: map[stmtKey]*lruNode{}} }

func (s *serverStmts) pushParse(e psEntry) {
	s.seq++
	e.seq = s.seq
	s.parses.push(e)
}

func (s *serverStmts) pushClose(e psEntry) {
	s.seq++
	e.seq = s.seq
	s.closes.push(e)
}

func (s *serverStmts) pushDealloc(e psEntry) {
	s.seq++
	e.seq = s.seq
	s.deallocs.push(e)
}

// onPrepareTag says whether a CommandComplete PREPARE is the answer to the
// first statement of a deallocQuery, to be removed from the stream: the
// DEALLOCATE it stands for then took effect.
func (s *serverStmts) onPrepareTag() bool {
	e := s.deallocs.front()
	if e == nil || e.gen != s.readies {
		return false
	}
	s.deallocs.pop()
	return true
}

func (s *serverStmts) has(k stmtKey) bool {
	n, ok := s.byKey[k]
	if ok && n != s.head {
		s.unlink(n)
		s.pushFront(n)
	}
	return ok
}

func (s *serverStmts) add(k stmtKey) {
	if _, ok := s.byKey[k]; ok {
		return
	}
	n := &lruNode{key: k}
	s.byKey[k] = n
	s.pushFront(n)
	s.n.Store(int32(len(s.byKey)))
}

func (s *serverStmts) remove(k stmtKey) {
	if n, ok := s.byKey[k]; ok {
		s.unlink(n)
		delete(s.byKey, k)
		s.n.Store(int32(len(s.byKey)))
	}
}

func (s *serverStmts) pushFront(n *lruNode) {
	n.prev, n.next = nil, s.head
	if s.head != nil {
		s.head.prev = n
	}
	s.head = n
	if s.tail == nil {
		s.tail = n
	}
}

func (s *serverStmts) unlink(n *lruNode) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		s.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		s.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

// forget clears the prepared set (DISCARD ALL, DEALLOCATE ALL, a reset).
func (s *serverStmts) forget() {
	clear(s.byKey)
	s.head, s.tail = nil, nil
	s.n.Store(0)
}

// count is the number of statements prepared on the server.
func (s *serverStmts) count() int { return len(s.byKey) }

// prepState is what rewriting a client message touches: the client's
// statements, the server's, and the LRU bound.
type prepState struct {
	client map[string]*clientStmt
	srv    *serverStmts
	max    int
	// Statistics since the caller last took them: the client's named
	// Parses, the Parses sent to the server, Binds of named statements.
	clientParses, serverParses, binds int64
}

// takeStats adds the counts gathered by rewrite to a pool's statistics.
func (ps *prepState) takeStats(st *poolStats) {
	if ps.clientParses|ps.serverParses|ps.binds == 0 {
		return
	}
	st.clientParses.Add(ps.clientParses)
	st.serverParses.Add(ps.serverParses)
	st.binds.Add(ps.binds)
	ps.clientParses, ps.serverParses, ps.binds = 0, 0, 0
}

// prepWant says how many bytes of the message starting at avail[0] (type
// byte first) rewrite needs in the buffer, or 0 when it needs none.
func prepWant(typ byte, msgLen int, avail []byte) int {
	switch typ {
	case 'S', 'F':
		return 5 // counted: each gets a ReadyForQuery
	case 'P', 'D', 'C':
		return msgLen + 1
	case 'Q':
		// Enough of the text to see a PREPARE or a DEALLOCATE; all of it
		// when it is one.
		n := min(msgLen+1, 5+64)
		if len(avail) >= n && (isSQLPrepare(avail[5:n]) || isSQLDeallocate(avail[5:n])) {
			return msgLen + 1
		}
		return n
	case 'B':
		// The portal and statement names.
		nuls := 0
		for i := 5; i < len(avail) && i < msgLen+1; i++ {
			if avail[i] == 0 {
				nuls++
				if nuls == 2 {
					return i + 1
				}
			}
		}
		if len(avail) >= msgLen+1 {
			return msgLen + 1 // malformed: the server will say so
		}
		return len(avail) + 1
	}
	return 0
}

// rewrite handles one client message while prepared statements are
// tracked. avail holds the message from its type byte on, at least
// prepWant bytes of it. It returns how many leading bytes of the message
// are replaced by what it appended to out (0: the message passes
// unchanged); the bytes after those are forwarded unchanged.
func (ps *prepState) rewrite(out []byte, typ byte, msgLen int, avail []byte) ([]byte, int) {
	s := ps.srv
	switch typ {
	case 'S', 'F':
		s.syncs++
		return out, 0
	case 'Q':
		s.syncs++
		if n := min(msgLen+1, len(avail)); isSQLPrepare(avail[5:n]) {
			if len(avail) < msgLen+1 {
				return out, 0 // (the caller gives the whole message; defensive)
			}
			return appendQuery(out, sqlPrepareRefusal), msgLen + 1
		}
		if len(avail) >= msgLen+1 && isSQLDeallocate(avail[5:min(msgLen+1, 5+64)]) {
			if out, ok := ps.rewriteDeallocate(out, avail[:msgLen+1]); ok {
				return out, msgLen + 1
			}
		}
		return out, 0
	case 'P':
		body := avail[5 : msgLen+1]
		name, rest, ok := cstring(body)
		if !ok {
			return out, 0
		}
		if name == "" {
			s.pushParse(psEntry{kind: pForward, gen: s.syncs})
			return out, 0
		}
		ps.clientParses++
		if _, dup := ps.client[name]; dup {
			s.pushParse(psEntry{kind: pDup, gen: s.syncs, name: name})
			return appendParse(out, noopStmt, dupQuery), msgLen + 1
		}
		st := newClientStmt(rest)
		ps.client[name] = st
		if s.has(st.key) {
			s.pushClose(psEntry{kind: cAsParse, gen: s.syncs, name: name, stmt: st})
			return appendClose(out, 'S', noopStmt), msgLen + 1
		}
		out = ps.makeRoom(out)
		s.add(st.key)
		s.pushParse(psEntry{kind: pClient, gen: s.syncs, name: name, stmt: st, key: st.key})
		ps.serverParses++
		return append(out, st.parse...), msgLen + 1
	case 'B':
		// Names are looked up without copying them: a cached
		// statement's Bind costs no allocation.
		portal, rest, ok := cbytes(avail[5:])
		if !ok {
			return out, 0
		}
		name, _, ok := cbytes(rest)
		if !ok || len(name) == 0 {
			return out, 0
		}
		consumed := 5 + len(portal) + 1 + len(name) + 1
		st := ps.client[string(name)]
		var srvName string
		if st != nil {
			ps.binds++
			out = ps.ensure(out, st)
			srvName = st.srvName
		} else if !hasSrvPrefix(string(name)) {
			return out, 0
		} else {
			srvName = noopStmt // never reach a statement the client did not prepare
		}
		out = append(out, 'B', 0, 0, 0, 0)
		binary.BigEndian.PutUint32(out[len(out)-4:], uint32(msgLen-len(name)+len(srvName)))
		out = append(out, portal...)
		out = append(out, 0)
		out = appendCString(out, srvName)
		return out, consumed
	case 'D':
		if msgLen < 6 || avail[5] != 'S' {
			return out, 0
		}
		name, _, ok := cbytes(avail[6 : msgLen+1])
		if !ok || len(name) == 0 {
			return out, 0
		}
		st := ps.client[string(name)]
		srvName := noopStmt
		if st != nil {
			out = ps.ensure(out, st)
			srvName = st.srvName
		} else if !hasSrvPrefix(string(name)) {
			return out, 0
		}
		out, p := appendMsg(out, 'D')
		out = append(out, 'S')
		out = appendCString(out, srvName)
		return finishMsg(out, p), msgLen + 1
	case 'C':
		if msgLen < 6 || avail[5] != 'S' {
			s.pushClose(psEntry{kind: cForward, gen: s.syncs})
			return out, 0
		}
		name, _, ok := cstring(avail[6 : msgLen+1])
		if !ok || name == "" {
			s.pushClose(psEntry{kind: cForward, gen: s.syncs})
			return out, 0
		}
		if st := ps.client[name]; st != nil {
			delete(ps.client, name)
			s.pushClose(psEntry{kind: cClientClose, gen: s.syncs, name: name, stmt: st})
		} else {
			s.pushClose(psEntry{kind: cForward, gen: s.syncs})
			if !hasSrvPrefix(name) {
				return out, 0
			}
		}
		return appendClose(out, 'S', noopStmt), msgLen + 1
	}
	return out, 0
}

// ensure appends a Parse of st (after any evictions) when the server does
// not have it yet.
func (ps *prepState) ensure(out []byte, st *clientStmt) []byte {
	s := ps.srv
	if s.has(st.key) {
		return out
	}
	out = ps.makeRoom(out)
	s.add(st.key)
	s.pushParse(psEntry{kind: pInjected, gen: s.syncs, key: st.key})
	ps.serverParses++
	return append(out, st.parse...)
}

// makeRoom evicts least recently used statements so that one more fits.
func (ps *prepState) makeRoom(out []byte) []byte {
	s := ps.srv
	for ps.max > 0 && s.count() >= ps.max && s.tail != nil {
		k := s.tail.key
		s.remove(k)
		s.pushClose(psEntry{kind: cEvict, gen: s.syncs, key: k})
		out = appendClose(out, 'S', srvStmtName(k))
	}
	return out
}

// Server answers: what to do with a ParseComplete or CloseComplete.
type psAnswer int

const (
	psForward psAnswer = iota
	psSwallow
	psAsParse
)

// unsettledBefore reports whether a Parse or Close sent before the last
// Sync is still unanswered.
func (s *serverStmts) unsettledBefore() bool {
	if s.readies >= s.syncs {
		return false
	}
	for _, e := range s.parses.q[s.parses.head:] {
		if e.gen >= s.syncs {
			break
		}
		if e.kind != pForward {
			return true
		}
	}
	for _, e := range s.closes.q[s.closes.head:] {
		if e.gen >= s.syncs {
			break
		}
		if e.kind != cForward {
			return true
		}
	}
	if e := s.deallocs.front(); e != nil && e.gen < s.syncs {
		return true
	}
	return false
}

func (s *serverStmts) onParseComplete() psAnswer {
	if s.parses.len() == 0 {
		return psForward
	}
	e := s.parses.pop()
	if e.kind == pInjected {
		return psSwallow
	}
	return psForward
}

func (s *serverStmts) onCloseComplete() psAnswer {
	if s.closes.len() == 0 {
		return psForward
	}
	switch s.closes.pop().kind {
	case cEvict:
		return psSwallow
	case cAsParse:
		return psAsParse
	}
	return psForward
}

// onError returns the error to show instead of the server's when it
// answers the Parse at the head of the queue that stands for a re-Parse
// of a name in use.
func (s *serverStmts) onError(body []byte) ([]byte, bool) {
	e := s.parses.front()
	if e == nil || e.kind != pDup {
		return nil, false
	}
	_, code, msg := parseErrorFields(body)
	if code != "42601" || !containsSubstring(msg, dupQuery) {
		return nil, false
	}
	name := s.parses.pop().name
	return appendErrorResponse(nil, 'E', "ERROR", "42P05", `prepared statement "`+name+`" already exists`), true
}

// onReady drops the entries that the server skipped (after an error) and
// undoes what the pooler assumed when it sent them, latest first, so that
// the state is as it was when the error happened.
func (s *serverStmts) onReady(client map[string]*clientStmt) {
	s.readies++
	d := s.dropped[:0]
	for s.parses.len() > 0 && s.parses.front().gen < s.readies {
		d = append(d, s.parses.pop())
	}
	for s.closes.len() > 0 && s.closes.front().gen < s.readies {
		d = append(d, s.closes.pop())
	}
	for s.deallocs.len() > 0 && s.deallocs.front().gen < s.readies {
		d = append(d, s.deallocs.pop())
	}
	if len(d) > 1 {
		sort.Slice(d, func(i, j int) bool { return d[i].seq > d[j].seq })
	}
	for i := range d {
		e := &d[i]
		switch e.kind {
		case pClient, cAsParse:
			if e.kind == pClient {
				s.remove(e.key)
			}
			if client[e.name] == e.stmt {
				delete(client, e.name) // a skipped Parse creates nothing
			}
		case pInjected:
			s.remove(e.key)
		case cEvict:
			s.add(e.key) // still on the server
		case cClientClose, dDealloc:
			if _, ok := client[e.name]; !ok {
				client[e.name] = e.stmt // the Close or DEALLOCATE did not happen
			}
		}
	}
	clear(d)
	s.dropped = d[:0]
}

func newClientStmt(rest []byte) *clientStmt {
	sum := sha256.Sum256(rest)
	st := &clientStmt{}
	copy(st.key[:], sum[:16])
	st.srvName = srvStmtName(st.key)
	p := make([]byte, 0, 5+len(st.srvName)+1+len(rest))
	p, lp := appendMsg(p, 'P')
	p = appendCString(p, st.srvName)
	p = append(p, rest...)
	st.parse = finishMsg(p, lp)
	return st
}

func srvStmtName(k stmtKey) string {
	var b [len(srvStmtPrefix) + 32]byte
	copy(b[:], srvStmtPrefix)
	hex.Encode(b[len(srvStmtPrefix):], k[:])
	return string(b[:])
}

// cbytes splits a NUL-terminated string off the front of b, without
// copying it.
func cbytes(b []byte) ([]byte, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:], true
		}
	}
	return nil, nil, false
}

func hasSrvPrefix(name string) bool {
	return len(name) >= len(srvStmtPrefix) && name[:len(srvStmtPrefix)] == srvStmtPrefix
}

func appendParse(dst []byte, name, query string) []byte {
	dst, p := appendMsg(dst, 'P')
	dst = appendCString(dst, name)
	dst = appendCString(dst, query)
	dst = appendInt16(dst, 0)
	return finishMsg(dst, p)
}

func appendClose(dst []byte, kind byte, name string) []byte {
	dst, p := appendMsg(dst, 'C')
	dst = append(dst, kind)
	dst = appendCString(dst, name)
	return finishMsg(dst, p)
}

func containsSubstring(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// sqlPrepareRefusal runs instead of a SQL PREPARE in transaction and
// statement mode: the server raises the error itself, so a transaction
// block is aborted exactly as by any other error.
const sqlPrepareRefusal = `DO $pgwarden$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', ` +
	`MESSAGE = 'SQL PREPARE is not supported in transaction pooling mode: the statement would stay on a server connection that other clients use, and the next transaction may run on another one', ` +
	`HINT = '` + sqlPrepareHint + `'; END$pgwarden$`

// isSQLPrepare reports whether a simple Query text starts with the PREPARE
// keyword (after blanks and comments).
func isSQLPrepare(q []byte) bool {
	i := 0
	for i < len(q) {
		switch c := q[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '(':
			i++
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			end := -1
			for j := i + 2; j+1 < len(q); j++ {
				if q[j] == '*' && q[j+1] == '/' {
					end = j + 2
					break
				}
			}
			if end < 0 {
				return false
			}
			i = end
		default:
			const kw = "prepare"
			if len(q)-i < len(kw) {
				return false
			}
			for k := 0; k < len(kw); k++ {
				if q[i+k]|0x20 != kw[k] {
					return false
				}
			}
			if i+len(kw) < len(q) {
				n := q[i+len(kw)]
				if n == '_' || n >= '0' && n <= '9' || n|0x20 >= 'a' && n|0x20 <= 'z' || n >= 0x80 {
					return false
				}
			}
			return true
		}
	}
	return false
}

// deallocatesAll reports whether a CommandComplete body is the tag of a
// command that drops every prepared statement of the session.
func deallocatesAll(body []byte) bool {
	return string(body) == "DISCARD ALL\x00" || string(body) == "DEALLOCATE ALL\x00"
}
