package pooler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
)

// FuzzHBA parses arbitrary auth_hba_file text (with @file names read from
// the file's directory, where names.txt and more.txt exist) and matches
// some sign-ins against what it accepted.
//
// Checked: no panic; a parse gives rules or an error naming file and line,
// never both; rule masks fit their addresses; matching a local rule needs
// the Unix socket and a host rule TCP; the canonical form renders.
//
//	go test -run '^$' -fuzz '^FuzzHBA$' ./pooler/
func FuzzHBA(f *testing.F) {
	dir := f.TempDir()
	must(f, os.WriteFile(filepath.Join(dir, "names.txt"), []byte("alice, bob\n\"carol dave\" # comment\n@more.txt\n"), 0o600))
	must(f, os.WriteFile(filepath.Join(dir, "more.txt"), []byte("erin\n"), 0o600))
	must(f, os.WriteFile(filepath.Join(dir, "loop.txt"), []byte("@loop.txt\n"), 0o600))
	for _, s := range []string{
		"# TYPE DATABASE USER ADDRESS METHOD\nlocal all all trust\nhost app alice 127.0.0.1/32 scram-sha-256 # c\n" +
			"\thost\tpostgres\tbob\t10.0.0.0\t255.0.0.0\tmd5\nhostssl all all ::1/128 cert\n" +
			"hostnossl app,postgres carol,dave 0.0.0.0/0 password\nhost sameuser all all reject\nhost all all 192.168.1.0/24 peer\n" +
			"local replication all trust\n",
		"local \"all\" \"sameuser\" trust\nlocal \"a b\",\"c,d\" \"x#y\" md5\nlocal \"say \"\"hi\"\"\" all reject\nlocal \"\" all trust\n",
		"local app, postgres alice, bob trust\nhost all @names.txt samenet md5\nhost all @loop.txt all md5\n",
		"host all all 10.0.0.1/33 md5\nhost all all ::ffff:10.0.0.1/120 md5\nhost all all fe80::1%eth0/64 md5\n",
		"host all all all entra\nhostgssenc all all all gss\nhost all all all ldap ldapserver=x\nhost all all all md5 clientcert=verify-full map=m\n",
		"host all +group all md5\nhost samerole all all md5\nlocal all all trust \\\n  # continued\n",
		"host all all 127.0.0.1 255.255.0.255 md5\nhost all all localhost md5\nhost all all .example.com md5\n",
		"\"local\" all all trust\nlocal all\nlocal\n,,,\n\"unterminated\n",
	} {
		f.Add(s)
	}
	path := filepath.Join(dir, "hba.conf")
	conns := []hbaConn{
		newHBAConn(true, "unix", false, "app", "alice"),
		newHBAConn(false, "127.0.0.1:5000", false, "app", "alice"),
		newHBAConn(false, "10.1.2.3:5000", true, "postgres", "bob"),
		newHBAConn(false, "[::1]:5000", true, "carol", "carol"),
		newHBAConn(false, "[::ffff:192.168.1.7]:5000", false, "x", "erin"),
		{unix: true, database: "app", user: "alice", replication: true},
	}
	f.Fuzz(func(t *testing.T, text string) {
		if !fuzzFileSafe(text) {
			t.Skip() // @/dev/stdin and the like
		}
		defer fuzzwatch.Watchdog(0, "FuzzHBA")()
		rules, err := parseHBA(path, text)
		if (rules == nil) == (err == nil) {
			t.Fatalf("rules %v and error %v", rules != nil, err)
		}
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Fatalf("problem without a place: %q", line)
				}
			}
			return
		}
		for _, r := range rules.rules {
			if !r.anyIP && r.conn != hbaLocal {
				if !r.ip.IsValid() || len(r.mask) != len(r.ip.AsSlice()) {
					t.Fatalf("rule %d: address %v with a %d-byte mask", r.line, r.ip, len(r.mask))
				}
			}
		}
		_ = rules.String()
		for _, c := range conns {
			r := rules.match(c)
			if r == nil {
				continue
			}
			if (r.conn == hbaLocal) != c.unix {
				t.Fatalf("rule %d (%s) matched %+v", r.line, r.conn, c)
			}
			if r.conn == hbaHostSSL && !c.tls || r.conn == hbaHostNoSSL && c.tls {
				t.Fatalf("rule %d (%s) matched %+v", r.line, r.conn, c)
			}
			if !c.unix && !r.anyIP && !r.matchAddr(c.addr) {
				t.Fatalf("rule %d matched address %v", r.line, c.addr)
			}
			_, _ = rules.Match("127.0.0.1:1", c.tls, c.database, c.user)
		}
	})
}
