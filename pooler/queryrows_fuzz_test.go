package pooler

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
)

// FuzzPrincipalQuery: the server answers entra principal_query (and, with
// the same bytes, auth_query) with the input: RowDescription, DataRows of
// any shape, errors, notices, COPY, ReadyForQuery. The rows go the way
// refreshPrincipals takes them (pgaadauth security labels when builtin, or
// role, oid, type[, admin]) into a principal set, and auth_query's secret
// into ParseSecret.
//
// Checked: no panic, no hang; the principals that come out are valid (a
// set can be built from them); bounded allocation, whatever the DataRow
// lengths and column counts say.
//
//	go test -run '^$' -fuzz '^FuzzPrincipalQuery$' ./pooler/
func FuzzPrincipalQuery(f *testing.F) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	col := func(s *string) []byte {
		if s == nil {
			return be32(-1)
		}
		return append(be32(len(*s)), *s...)
	}
	row := func(vals ...*string) []byte {
		b := []byte{byte(len(vals) >> 8), byte(len(vals))}
		for _, v := range vals {
			b = append(b, col(v)...)
		}
		return fuzzMessage('D', b)
	}
	str := func(s string) *string { return &s }
	oid := "6d2a9a2e-6cd5-4b8c-9d0b-8f2b0a1f3c44"
	f.Add(cat(fuzzMessage('T', []byte{0, 3}), row(str("alice"), str("pgaadauth"), str("aadauth,oid="+oid+",type=user")),
		row(str("ops"), str("pgaadauth-int"), str("oid="+oid+",type=group,admin,mfa")), fuzzMessage('C', cstr("SELECT 2")), readyFor('I')), true)
	f.Add(cat(row(str("alice"), str("pgaadauth"), str("aadauth,oid=x,type=user,tenant_id=y,nosuch")), readyFor('I')), true)
	f.Add(cat(row(str("alice"), str(oid), str("user"), str("t")), row(str("bob"), str(strings.ToUpper(oid)), str("SERVICE"), nil),
		row(str("carol"), nil, str("user")), row(str("x")), fuzzMessage('C', cstr("SELECT 4")), readyFor('I')), false)
	f.Add(cat(row(str("alice"), str("md5abc")), readyFor('I')), false)
	f.Add(cat(errResp("ERROR", "42P01", `relation "x" does not exist`), readyFor('I')), false)
	f.Add(cat(fuzzMessage('D', []byte{0xff, 0xff}), readyFor('I')), false)
	f.Add(cat(fuzzMessage('D', []byte{0, 1}, be32(1<<30)), readyFor('I')), false)
	f.Add(cat([]byte{'D'}, be32(1<<30)), false)
	f.Add(cat(fuzzMessage('G', []byte{0, 0, 0}), readyFor('I')), false)
	f.Add(fuzzMessage('Z'), false)
	f.Fuzz(func(t *testing.T, data []byte, builtin bool) {
		defer fuzzwatch.Watchdog(0, "FuzzPrincipalQuery")()
		done := allocGuard(t)
		sc := hostilePipe(t, data)
		if rows, err := sc.queryRows("SELECT role, oid, type, admin FROM x"); err == nil {
			found, _ := principalsFromRows(rows, builtin)
			for _, p := range found {
				if p.Role == "" {
					t.Fatalf("principal without a role: %+v", p)
				}
			}
			if builtin {
				// Security labels are checked one by one: what
				// comes out builds a set.
				if _, err := authn.NewPrincipals(found); err != nil && !strings.Contains(err.Error(), "listed twice") {
					t.Fatalf("security labels gave principals that do not build a set: %v", err)
				}
			} else {
				_, _ = authn.NewPrincipals(found)
			}
		}
		sc = hostilePipe(t, data)
		if secret, found, err := sc.runAuthQuery("SELECT usename, passwd FROM pg_shadow WHERE usename = $1", "alice"); err == nil && found {
			_ = authn.ParseSecret(secret)
		}
		done()
	})
}

// hostilePipe returns a server connection whose server writes data and
// then closes; what the pooler writes is read and dropped.
func hostilePipe(t *testing.T, data []byte) *serverConn {
	mine, theirs := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, theirs) }()
	go func() {
		_, _ = theirs.Write(data)
		theirs.Close()
	}()
	t.Cleanup(func() { mine.Close(); theirs.Close() })
	return &serverConn{conn: mine, params: map[string]string{}, stmts: newServerStmts()}
}
