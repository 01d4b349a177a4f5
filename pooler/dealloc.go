package pooler

import "strings"

// SQL DEALLOCATE of a client's protocol-level prepared statement, in
// transaction and statement mode. PostgreSQL keeps SQL and protocol
// statement names in one namespace, so drivers and applications may drop a
// statement they prepared through the protocol with DEALLOCATE name. The
// server knows the statement under pgwarden's shared name, so the query
// would fail there with 26000. Instead, when a simple Query is exactly
// DEALLOCATE [PREPARE] name for a name the client has, the client's
// statement is forgotten (the server's shared copy stays for the other
// clients) and the query is replaced by one the server answers as
// PostgreSQL would have answered the client:
//
//	PREPARE pgwarden_dealloc AS SELECT; DEALLOCATE pgwarden_dealloc
//
// Its PREPARE tag is removed from the answer, so the client sees
// CommandComplete DEALLOCATE and the ReadyForQuery of its own transaction
// state; inside a failed transaction block the server refuses it with
// 25P02 as it would have refused the client's DEALLOCATE, and the client's
// statement is then kept. (PREPARE and DEALLOCATE are not transactional,
// so a rollback of the block changes nothing.) A DEALLOCATE of one of
// pgwarden's own names that the client does not have is answered with
// PostgreSQL's 26000 error and never reaches a shared statement.

// deallocQuery replaces a client's DEALLOCATE of one of its statements.
const (
	deallocStmt  = "pgwarden_dealloc"
	deallocQuery = "PREPARE " + deallocStmt + " AS SELECT; DEALLOCATE " + deallocStmt
)

// deallocMissing is the query that answers a DEALLOCATE of a pgwarden_
// name the client does not have, with the error PostgreSQL gives for a
// name that does not exist. name holds no '$' (see rewriteDeallocate).
func deallocMissing(name string) string {
	msg := `prepared statement "` + name + `" does not exist`
	return `DO $pgwarden$BEGIN RAISE EXCEPTION USING ERRCODE = 'invalid_sql_statement_name', MESSAGE = '` +
		strings.ReplaceAll(msg, "'", "''") + `'; END$pgwarden$`
}

// maxIdentLen is NAMEDATALEN-1: PostgreSQL truncates longer identifiers.
const maxIdentLen = 63

// parseDeallocate reads a simple Query text (NUL-terminated, as in the
// message) that is exactly one DEALLOCATE [PREPARE] name statement, with
// optional blanks and one optional semicolon, and returns the name as
// PostgreSQL reads it: folded to lower case unless double-quoted. It
// returns false for anything else, DEALLOCATE ALL included.
func parseDeallocate(q []byte) (string, bool) {
	if n := len(q); n > 0 && q[n-1] == 0 {
		q = q[:n-1]
	}
	lx := sqlLexer{q: q}
	kw, ok := lx.word()
	if !ok || kw.quoted || kw.text != "deallocate" {
		return "", false
	}
	w1, ok := lx.word()
	if !ok {
		return "", false
	}
	name := w1
	if !w1.quoted && w1.text == "prepare" {
		// DEALLOCATE PREPARE name, or a statement named prepare.
		if w2, ok := lx.word(); ok {
			name = w2
		} else if !lx.end() {
			return "", false
		}
	}
	if !lx.end() {
		return "", false
	}
	if !name.quoted && (name.text == "all" || reservedKeywords[name.text]) {
		return "", false
	}
	if name.text == "" || len(name.text) > maxIdentLen {
		return "", false
	}
	return name.text, true
}

// sqlLexer splits the few tokens parseDeallocate needs.
type sqlLexer struct {
	q []byte
	i int
}

type sqlWord struct {
	text   string
	quoted bool
}

func isSQLSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func (lx *sqlLexer) skipSpace() {
	for lx.i < len(lx.q) && isSQLSpace(lx.q[lx.i]) {
		lx.i++
	}
}

// word reads an identifier or keyword (folded to lower case) or a quoted
// identifier.
func (lx *sqlLexer) word() (sqlWord, bool) {
	lx.skipSpace()
	if lx.i >= len(lx.q) {
		return sqlWord{}, false
	}
	c := lx.q[lx.i]
	if c == '"' {
		var b strings.Builder
		for j := lx.i + 1; j < len(lx.q); j++ {
			if lx.q[j] != '"' {
				b.WriteByte(lx.q[j])
				continue
			}
			if j+1 < len(lx.q) && lx.q[j+1] == '"' {
				b.WriteByte('"')
				j++
				continue
			}
			lx.i = j + 1
			return sqlWord{text: b.String(), quoted: true}, true
		}
		return sqlWord{}, false
	}
	if !(c == '_' || c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80) {
		return sqlWord{}, false
	}
	start := lx.i
	for lx.i < len(lx.q) {
		c := lx.q[lx.i]
		if c == '_' || c == '$' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80 {
			lx.i++
			continue
		}
		break
	}
	w := []byte(string(lx.q[start:lx.i]))
	for k, c := range w {
		if c >= 'A' && c <= 'Z' {
			w[k] = c + 'a' - 'A'
		}
	}
	return sqlWord{text: string(w)}, true
}

// end reports whether only blanks and one optional semicolon are left.
func (lx *sqlLexer) end() bool {
	lx.skipSpace()
	if lx.i < len(lx.q) && lx.q[lx.i] == ';' {
		lx.i++
		lx.skipSpace()
	}
	return lx.i == len(lx.q)
}

// reservedKeywords are PostgreSQL's keywords that cannot name a prepared
// statement without quotes (RESERVED_KEYWORD and TYPE_FUNC_NAME_KEYWORD in
// kwlist.h): DEALLOCATE select is a syntax error, left to the server.
var reservedKeywords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`all analyse analyze and any array as asc asymmetric both case cast
		check collate column constraint create current_catalog current_date current_role current_time
		current_timestamp current_user default deferrable desc distinct do else end except false fetch
		for foreign from grant group having in initially intersect into lateral leading limit localtime
		localtimestamp not null offset on only or order placing primary references returning select
		session_user some symmetric system_user table then to trailing true union unique user using
		variadic when where window with
		authorization binary collation concurrently cross current_schema freeze full ilike inner is
		isnull join left like natural notnull outer overlaps right similar tablesample verbose`) {
		m[w] = true
	}
	return m
}()

// rewriteDeallocate handles a simple Query that may be a DEALLOCATE of
// one of the client's statements (the whole message from its type byte).
// It returns the replacement Query appended to out and true, or false to
// let the query pass unchanged.
func (ps *prepState) rewriteDeallocate(out []byte, msg []byte) ([]byte, bool) {
	name, ok := parseDeallocate(msg[5:])
	if !ok {
		return out, false
	}
	s := ps.srv
	if st := ps.client[name]; st != nil {
		delete(ps.client, name)
		s.pushDealloc(psEntry{kind: dDealloc, gen: s.syncs - 1, name: name, stmt: st})
		return appendQuery(out, deallocQuery), true
	}
	if hasSrvPrefix(name) && !strings.Contains(name, "$") {
		return appendQuery(out, deallocMissing(name)), true
	}
	return out, false
}

// isSQLDeallocate reports whether a simple Query text starts with the
// DEALLOCATE keyword (after blanks).
func isSQLDeallocate(q []byte) bool {
	lx := sqlLexer{q: q}
	lx.skipSpace()
	const kw = "deallocate"
	rest := q[lx.i:]
	if len(rest) < len(kw) {
		return false
	}
	for k := 0; k < len(kw); k++ {
		if rest[k]|0x20 != kw[k] {
			return false
		}
	}
	return true
}
