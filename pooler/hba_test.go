package pooler_test

import (
	"context"
	"fmt"
	"github.com/pgwarden/pgwarden/pooler/config"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler"
)

// ---- parser ----

// writeHBA writes files (name → text) into a fresh directory and returns the
// path of "hba.conf" there.
func writeHBA(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "hba.conf")
}

func TestHBAParseGood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string   // rules, canonical (hbaRules.String)
		warns []string // substrings, one per warning, in order
	}{
		{
			name: "basic",
			files: map[string]string{"hba.conf": `# TYPE DATABASE USER ADDRESS METHOD

local   all      all                       trust
host    app      alice   127.0.0.1/32      scram-sha-256   # trailing comment
	host	postgres	bob	10.0.0.0	255.0.0.0	md5
hostssl all      all     ::1/128           cert
hostnossl app,postgres carol,dave 0.0.0.0/0 password
host    sameuser all     all               reject
host    all      all     192.168.1.0/24    peer
local   replication all                    trust
`},
			want: `3: local all all trust
4: host "app" "alice" 127.0.0.1/255.255.255.255 scram-sha-256
5: host "postgres" "bob" 10.0.0.0/255.0.0.0 md5
6: hostssl all all ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff cert
7: hostnossl "app","postgres" "carol","dave" 0.0.0.0/0.0.0.0 password
8: host sameuser all all reject
9: host all all 192.168.1.0/255.255.255.0 peer
10: local replication all trust
`,
			warns: []string{"hba.conf:9: peer authentication is only possible on Unix sockets"},
		},
		{
			name: "quoting",
			files: map[string]string{"hba.conf": `local "all" "sameuser" trust
local "a b","c,d" "x#y" md5
local "say ""hi""" all reject
local "" all trust
local "@notafile","+notagroup" all trust
local app, postgres alice, bob trust
`},
			want: `1: local "all" "sameuser" trust
2: local "a b","c,d" "x#y" md5
3: local "say \"hi\"" all reject
4: local "" all trust
5: local "+notagroup","@notafile" all trust
6: local "app","postgres" "alice","bob" trust
`,
		},
		{
			name:  "continuation",
			files: map[string]string{"hba.conf": "host app \\\n   alice \\\n 127.0.0.1/32 md5\r\nlocal all all \\\n  peer\n# comment \\\nlocal all all trust\n"},
			// line 7 is joined to the comment on line 6, as in PostgreSQL
			want: "1: host \"app\" \"alice\" 127.0.0.1/255.255.255.255 md5\n4: local all all peer\n",
		},
		{
			name:  "no final newline",
			files: map[string]string{"hba.conf": "local all all trust"},
			want:  "1: local all all trust\n",
		},
		{
			name: "@files",
			files: map[string]string{
				"hba.conf":       "host @dbs.txt @users/list.txt all md5\nlocal all @/ABS trust\n",
				"dbs.txt":        "app, postgres\n# comment\nother\n",
				"users/list.txt": "alice bob # two\n@more.txt\n\"quoted name\"\n",
				"users/more.txt": "carol\n",
			},
			want: `1: host "app","other","postgres" "alice","bob","carol","quoted name" all md5
2: local all "x" trust
`,
		},
		{
			name:  "address all and IPv6 mask",
			files: map[string]string{"hba.conf": "host all all all md5\nhost all all fe80:: ffff:ffff:: trust\n"},
			want:  "1: host all all all md5\n2: host all all fe80::/ffff:ffff:: trust\n",
		},
		{
			name:  "warnings",
			files: map[string]string{"hba.conf": "hostgssenc all all all trust\nhostnogssenc all all all trust\nlocal all all peer map=omicron\nhost all all 10.1.2.3/8 md5\nhost all all all cert\nlocal all @empty.txt trust\n", "empty.txt": "# nobody\n"},
			want:  "1: hostgssenc all all all trust\n2: hostnogssenc all all all trust\n3: local all all peer\n4: host all all 10.1.2.3/255.0.0.0 md5\n5: host all all all cert\n6: local all (none) trust\n",
			warns: []string{
				"hba.conf:1: hostgssenc rules never match",
				"hba.conf:2: hostnogssenc rules never match",
				"hba.conf:3: option map=omicron is ignored",
				"hba.conf:4: address 10.1.2.3/8 has bits set outside its mask",
				"hba.conf:5: cert authentication needs TLS",
				"hba.conf:6: the user field is empty",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := tc.files
			if tc.name == "@files" {
				// An absolute @file name.
				abs := filepath.Join(t.TempDir(), "abs.txt")
				if err := os.WriteFile(abs, []byte("x\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				files = map[string]string{}
				for k, v := range tc.files {
					files[k] = strings.ReplaceAll(v, "@/ABS", "@"+abs)
				}
			}
			path := writeHBA(t, files)
			rules, err := pooler.LoadHBA(path)
			if err != nil {
				t.Fatalf("LoadHBA: %v", err)
			}
			if got := rules.String(); got != tc.want {
				t.Fatalf("rules:\n%s\nwant:\n%s", got, tc.want)
			}
			warns := rules.Warnings()
			if len(warns) != len(tc.warns) {
				t.Fatalf("warnings %q, want %d", warns, len(tc.warns))
			}
			for i, w := range tc.warns {
				if !strings.Contains(warns[i], w) || !strings.HasPrefix(warns[i], filepath.Dir(path)) {
					t.Errorf("warning %d = %q, want it to contain %q", i, warns[i], w)
				}
			}
		})
	}
}

func TestHBAParseErrors(t *testing.T) {
	for _, tc := range []struct {
		text  string
		extra map[string]string
		want  []string // "line: message substring", every problem in order
	}{
		{text: "local all all trust\nhost all +admins 127.0.0.1/32 md5\n", want: []string{"2: group membership (+admins) is not supported"}},
		{text: "host all all samehost md5\n", want: []string{"1: samehost is not supported"}},
		{text: "host all all samenet md5\n", want: []string{"1: samenet is not supported"}},
		{text: "host all all db.example.com md5\n", want: []string{`1: host names are not supported (address "db.example.com")`}},
		{text: "host all all .example.com md5\n", want: []string{"1: host names are not supported"}},
		{text: "host all all 127.0.0.1/32 ldap ldapserver=x\n", want: []string{`1: authentication method "ldap" is not supported by pgwarden`}},
		{text: "host all all 127.0.0.1/32 pam\n", want: []string{`1: authentication method "pam" is not supported by pgwarden`}},
		{text: "\n\nhost all all 127.0.0.1/32 sha1\n", want: []string{`3: invalid authentication method "sha1"`}},
		{text: "include other.conf\n", want: []string{"1: include is not supported"}},
		{text: "include_if_exists other.conf\n", want: []string{"1: include_if_exists is not supported"}},
		{text: "include_dir conf.d\n", want: []string{"1: include_dir is not supported"}},
		{text: "hosts all all all trust\n", want: []string{`1: invalid connection type "hosts"`}},
		{text: "host,local all all all trust\n", want: []string{"1: multiple values specified for connection type"}},
		{text: "host all all 127.0.0.1/33 md5\n", want: []string{"1: invalid CIDR mask"}},
		{text: "host all all 127.0.0.1/x md5\n", want: []string{"1: invalid CIDR mask"}},
		{text: "host all all 300.0.0.1/8 md5\n", want: []string{`1: invalid IP address "300.0.0.1"`}},
		{text: "host all all 127.0.0.1 md5\n", want: []string{`1: invalid IP mask "md5"`}},
		{text: "host all all 127.0.0.1 ffff:: md5\n", want: []string{"1: IP address and mask do not match"}},
		{text: "host all all 127.0.0.1\n", want: []string{"1: end-of-line before netmask specification"}},
		{text: "host all all 10.0.0.0/8,127.0.0.1/32 md5\n", want: []string{"1: multiple values specified for host address"}},
		{text: "local all\n", want: []string{"1: end-of-line before role specification"}},
		{text: "local\n", want: []string{"1: end-of-line before database specification"}},
		{text: "host all all\n", want: []string{"1: end-of-line before IP address specification"}},
		{text: "local all all\n", want: []string{"1: end-of-line before authentication method"}},
		{text: "local all all md5,trust\n", want: []string{"1: multiple values specified for authentication type"}},
		{text: "hostssl all all all cert clientcert=verify-full\n", want: []string{`1: authentication option "clientcert" is not supported`}},
		{text: "local all all peer mymap\n", want: []string{"1: authentication option not in name=value format: mymap"}},
		{text: "local \"unterminated all all trust\n", want: []string{"1: unterminated quoted string"}},
		{text: "local samerole all trust\n", want: []string{"1: samerole is not supported"}},
		{text: "local samegroup all trust\n", want: []string{"1: samegroup is not supported"}},
		{text: "local all @missing.txt trust\n", want: []string{"1: could not read @missing.txt"}},
		{text: "local all @users.txt trust\n", extra: map[string]string{"users.txt": "alice\n+group\n"}, want: []string{"1: group membership (+group) is not supported"}},
		{text: "local all @loop.txt trust\n", extra: map[string]string{"loop.txt": "@loop.txt\n"}, want: []string{"1: @loop.txt: @file nesting deeper than 10"}},
		{
			// Every bad line is reported; continuation lines count from
			// their first line.
			text: "local all all trust\nhost all +g \\\n 127.0.0.1/32 md5\nlocal all all trust\nhost all all nowhere md5\n",
			want: []string{"2: group membership (+g) is not supported", "5: host names are not supported"},
		},
	} {
		t.Run(strings.SplitN(tc.text, "\n", 2)[0], func(t *testing.T) {
			files := map[string]string{"hba.conf": tc.text}
			for k, v := range tc.extra {
				files[k] = v
			}
			path := writeHBA(t, files)
			rules, err := pooler.LoadHBA(path)
			if err == nil {
				t.Fatalf("no error; rules:\n%s", rules)
			}
			if rules != nil {
				t.Fatal("rules returned with an error")
			}
			problems := strings.Split(err.Error(), "\n")
			if len(problems) != len(tc.want) {
				t.Fatalf("problems %q, want %q", problems, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(problems[i], path+":"+w) {
					t.Errorf("problem %q, want %q", problems[i], path+":"+w)
				}
			}
		})
	}
	if _, err := pooler.LoadHBA(filepath.Join(t.TempDir(), "nope.conf")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestHBAMatch(t *testing.T) {
	path := writeHBA(t, map[string]string{"hba.conf": `local   pgbouncer all                      peer
local   all       all                      trust
host    app       alice   127.0.0.1/32     scram-sha-256
hostssl all       all     10.0.0.0/8       cert
hostnossl all     all     10.0.0.0/8       md5
host    sameuser  all     192.168.0.0 255.255.0.0 trust
host    all       all     ::1/128          password
hostgssenc all    all     all              trust
host    "App"     all     all              md5
host    replication all   all              trust
host    all       @ops.txt 172.16.0.0/12   reject
host    all       all     172.16.0.0/12    trust
`, "ops.txt": "ann\nbert\n"})
	rules, err := pooler.LoadHBA(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		client     string
		tls        bool
		db, user   string
		wantMethod string
		wantLine   int
	}{
		{"unix", false, "pgbouncer", "admin", "peer", 1},
		{"unix", false, "app", "anyone", "trust", 2},
		{"127.0.0.1:5000", false, "app", "alice", "scram-sha-256", 3},
		{"127.0.0.1:5000", true, "app", "alice", "scram-sha-256", 3},
		{"[::ffff:127.0.0.1]:5000", false, "app", "alice", "scram-sha-256", 3},
		{"127.0.0.1:5000", false, "app", "bob", "", 0},    // names are case-sensitive: not "App"
		{"127.0.0.1:5000", false, "App", "bob", "md5", 9}, // quoted name
		{"127.0.0.2:5000", false, "app", "alice", "", 0},
		{"127.0.0.1:5000", false, "postgres", "alice", "", 0},
		{"10.1.2.3:1", true, "x", "y", "cert", 4},
		{"10.1.2.3:1", false, "x", "y", "md5", 5},
		{"192.168.7.7:1", false, "carol", "carol", "trust", 6},
		{"192.168.7.7:1", false, "app", "carol", "", 0},
		{"192.169.7.7:1", false, "carol", "carol", "", 0},
		{"[::1]:5432", false, "app", "alice", "password", 7},
		{"[::2]:5432", false, "app", "alice", "", 0},
		{"[::1]:5432", false, "replication", "alice", "password", 7}, // the keyword does not match a database called replication
		{"172.16.1.1:1", false, "app", "ann", "reject", 11},
		{"172.31.1.1:1", false, "app", "bert", "reject", 11},
		{"172.16.1.1:1", false, "app", "carl", "trust", 12},
		{"172.32.1.1:1", false, "app", "carl", "", 0},
		{"garbage", false, "app", "carl", "", 0},
	} {
		m, line := rules.Match(tc.client, tc.tls, tc.db, tc.user)
		if m != tc.wantMethod || line != tc.wantLine {
			t.Errorf("Match(%s tls=%v db=%s user=%s) = %q line %d, want %q line %d", tc.client, tc.tls, tc.db, tc.user, m, line, tc.wantMethod, tc.wantLine)
		}
	}
}

// ---- against PostgreSQL ----

// signIns records sign-in events.
type signIns struct {
	pooler.NopObserver
	mu  sync.Mutex
	evs []pooler.SignInEvent
}

func (s *signIns) SignIn(ev pooler.SignInEvent) {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	s.mu.Unlock()
}

// last returns the method of the last sign-in of user.
func (s *signIns) last(user string) (method string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.evs) - 1; i >= 0; i-- {
		if s.evs[i].User == user {
			return s.evs[i].Method, s.evs[i].OK
		}
	}
	return "", false
}

func (in *instance) unixDSN(user, password, db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s connect_timeout=10", in.dir, in.port, user, password, db)
}

// hbaRefused connects and requires a FATAL with SQLSTATE 28000 and msg.
func hbaRefused(t *testing.T, what, dsn, msg string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err == nil {
		conn.Close(context.Background())
		t.Fatalf("%s: connected, want %q", what, msg)
	}
	if pgMessage(err) != msg || pgCode(err) != "28000" {
		t.Fatalf("%s: got %v (code %q), want %q with 28000", what, err, pgCode(err), msg)
	}
}

func TestHBAAuth(t *testing.T) {
	hba := filepath.Join(t.TempDir(), "pg_hba.conf")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(hba, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`# pgwarden test rules
host  app  alice  127.0.0.1/32  scram-sha-256
host  app  bob    127.0.0.1/32  md5
host  all  carol  127.0.0.1/32  password
host  app  all    127.0.0.1/32  reject
local all  all                  trust
`)
	obs := &signIns{}
	in := startPooler(t, "auth_type = hba\nauth_hba_file = "+hba+"\npool_mode = transaction", func(o *pooler.Options) { o.Observer = obs })

	for _, tc := range []struct {
		user, pw, db, method string
	}{
		{"alice", "alice-pw", "app", "scram"},
		{"bob", "bob-pw", "app", "md5"},
		{"carol", "carol-pw", "app", "plain"}, // SCRAM secret in userlist, cleartext exchange
		{"carol", "carol-pw", "postgres", "plain"},
	} {
		conn := in.connect(t, tc.user, tc.pw, tc.db, "default_query_exec_mode=exec")
		if got := queryString(t, conn, "SELECT current_user"); got != tc.user {
			t.Fatalf("current_user = %q, want %q", got, tc.user)
		}
		if m, ok := obs.last(tc.user); !ok || m != tc.method {
			t.Fatalf("%s signed in with %q (ok=%v), want %q", tc.user, m, ok, tc.method)
		}
		_, err := pgx.Connect(context.Background(), in.dsn(tc.user, "wrong", tc.db))
		if err == nil || !strings.Contains(pgMessage(err), "password authentication failed") {
			t.Fatalf("%s with a wrong password: got %v", tc.user, err)
		}
	}
	// Rules match whoever asks, known or not.
	_, err := pgx.Connect(context.Background(), in.dsn("carol2", "x", "app"))
	if err == nil || pgMessage(err) != "login rejected" {
		t.Fatalf("unknown user on the reject rule: got %v", err)
	}
	hbaRefused(t, "admin on app", in.dsn("admin", "admin-pw", "app"), "login rejected")
	hbaRefused(t, "idler on app", in.dsn("idler", "idler-pw", "app"), "login rejected")
	hbaRefused(t, "alice on postgres", in.dsn("alice", "alice-pw", "postgres"), "no authentication method is found")
	hbaRefused(t, "admin console over TCP", in.dsn("admin", "admin-pw", "pgbouncer"), "no authentication method is found")

	// Over the Unix socket: trust, for users in the auth file.
	for _, u := range []string{"alice", "bob", "idler"} {
		conn, err := pgx.Connect(context.Background(), in.unixDSN(u, "not-checked", "app"))
		if err != nil {
			t.Fatalf("%s over the Unix socket: %v", u, err)
		}
		if got := queryString(t, conn, "SELECT current_user"); got != u {
			t.Fatalf("current_user = %q", got)
		}
		conn.Close(context.Background())
		if m, ok := obs.last(u); !ok || m != "trust" {
			t.Fatalf("%s over the Unix socket signed in with %q", u, m)
		}
	}
	_, err = pgx.Connect(context.Background(), in.unixDSN("nosuchuser", "x", "app"))
	if err == nil || pgMessage(err) != `"trust" authentication failed` {
		t.Fatalf("unknown user with trust: got %v", err)
	}
	admin := mustConnect(t, in.unixDSN("admin", "x", "pgbouncer")+" default_query_exec_mode=simple_protocol")

	// Editing the file changes nothing until RELOAD.
	write(`host  app       alice  127.0.0.1/32  reject
host  postgres  alice  127.0.0.1/32  scram-sha-256
local all       all                  trust
`)
	in.connect(t, "alice", "alice-pw", "app")
	hbaRefused(t, "alice on postgres before RELOAD", in.dsn("alice", "alice-pw", "postgres"), "no authentication method is found")
	if _, err := admin.Exec(context.Background(), "RELOAD"); err != nil {
		t.Fatal(err)
	}
	hbaRefused(t, "alice on app after RELOAD", in.dsn("alice", "alice-pw", "app"), "login rejected")
	conn := in.connect(t, "alice", "alice-pw", "postgres")
	if got := queryString(t, conn, "SELECT current_database()"); got != "postgres" {
		t.Fatal(got)
	}
	// bob's rule is gone.
	hbaRefused(t, "bob after RELOAD", in.dsn("bob", "bob-pw", "app"), "no authentication method is found")

	// A broken file: RELOAD is refused (F0000), the error is logged with
	// its line, and the rules read before stay in force.
	write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256 bogus=1\n")
	if _, err := admin.Exec(context.Background(), "RELOAD"); pgCode(err) != "F0000" {
		t.Fatalf("RELOAD with a broken hba file: %v", err)
	}
	hbaRefused(t, "alice on app with a broken file", in.dsn("alice", "alice-pw", "app"), "login rejected")
	in.connect(t, "alice", "alice-pw", "postgres")
	if logs := in.logs.String(); !strings.Contains(logs, hba+`:2: authentication option \"bogus\" is not supported`) {
		t.Fatalf("the parse error is not logged with its line:\n%s", logs)
	}
}

// TestHBABrokenAtStart: a start with a broken auth_hba_file is refused,
// naming the line, and pooler.CheckHBA (check-config) says why.
func TestHBABrokenAtStart(t *testing.T) {
	dir := t.TempDir()
	hba := filepath.Join(dir, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all trust\nhost all all 127.0.0.1/32 md5 map\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ini := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(ini, []byte("[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = hba\nauth_hba_file = "+hba+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(ini)
	if err != nil {
		t.Fatal(err)
	}
	if err := pooler.CheckHBA(cfg); err == nil || !strings.Contains(err.Error(), hba+":2:") {
		t.Fatalf("CheckHBA: %v", err)
	}
	if _, err := pooler.New(cfg, pooler.Options{}); err == nil || !strings.Contains(err.Error(), hba+":2:") {
		t.Fatalf("New with a broken hba file: %v", err)
	}
}

func TestHBAPeer(t *testing.T) {
	me, err := user.Current()
	if err != nil || me.Username == "" || strings.ContainsAny(me.Username, " ='\\") {
		t.Skipf("no usable OS user name (%v)", err)
	}
	hba := filepath.Join(t.TempDir(), "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all peer\nhost all all 127.0.0.1/32 peer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := startPooler(t, "auth_type = hba\nauth_hba_file = "+hba+"\nadmin_users = admin, "+me.Username)
	// We are the OS user me: the console lets us in as ourselves.
	admin := mustConnect(t, in.unixDSN(me.Username, "x", "pgbouncer")+" default_query_exec_mode=simple_protocol")
	if v := queryString(t, admin, "SHOW VERSION"); !strings.HasPrefix(v, "PgBouncer") {
		t.Fatal(v)
	}
	if me.Username != "alice" {
		hbaRefused(t, "alice over the Unix socket", in.unixDSN("alice", "alice-pw", "app"), "unix socket login rejected")
	}
	hbaRefused(t, "peer over TCP", in.dsn("alice", "alice-pw", "app"), "unix socket login rejected")
}

func TestHBATLS(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	hba := filepath.Join(t.TempDir(), "pg_hba.conf")
	if err := os.WriteFile(hba, []byte(`hostssl   app alice 127.0.0.1/32 cert
hostssl   app bob   127.0.0.1/32 scram-sha-256
hostnossl app all   127.0.0.1/32 md5
`), 0o600); err != nil {
		t.Fatal(err)
	}
	in := startPooler(t, "auth_type = hba\nauth_hba_file = "+hba+"\n"+f.clientTLS("allow", "client_tls_ca_file = "+f.ca))
	// alice with her certificate over TLS: cert.
	conn := mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "unused", "app", "sslmode=require", "sslcert="+f.clientCert, "sslkey="+f.clientKey))
	if u := queryString(t, conn, "SELECT current_user"); u != "alice" {
		t.Fatal(u)
	}
	// Over TLS without a certificate, the cert rule still matches first.
	mustFail(t, "alice over TLS without a certificate", in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require"), "certificate authentication failed")
	// Without TLS the hostnossl rule applies.
	mustConnect(t, in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=disable"))
	mustConnect(t, in.tlsDSN("127.0.0.1", "bob", "bob-pw", "app", "sslmode=require"))
	mustFail(t, "bob over TLS, wrong password", in.tlsDSN("127.0.0.1", "bob", "nope", "app", "sslmode=require"), "password authentication failed")
}
