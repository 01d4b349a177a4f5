package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// settingValue returns the SHOW CONFIG value of key.
func settingValue(c *Config, key string) string {
	for _, s := range c.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return "<missing>"
}

func TestDefaults(t *testing.T) {
	c := newConfig("x.ini", "ini")
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen_addr", len(c.ListenAddrs), 0},
		{"listen_port", c.ListenPort, 6432},
		{"unix_socket_dir", c.UnixSocketDir, "/tmp"},
		{"unix_socket_mode", c.UnixSocketMode, uint32(0o777)},
		{"listen_backlog", c.ListenBacklog, 128},
		{"auth_type", c.AuthType, AuthMD5},
		{"auth_query", c.AuthQuery, defaultAuthQuery},
		{"pool_mode", c.PoolMode, PoolSession},
		{"max_client_conn", c.MaxClientConn, 100},
		{"default_pool_size", c.DefaultPoolSize, 20},
		{"reserve_pool_timeout", c.ReservePoolTimeout, 5 * time.Second},
		{"server_reset_query", c.ServerResetQuery, "DISCARD ALL"},
		{"server_check_query", c.ServerCheckQuery, ""},
		{"server_check_disabled", c.ServerCheckDisabled, false},
		{"server_check_delay", c.ServerCheckDelay, 30 * time.Second},
		{"server_lifetime", c.ServerLifetime, time.Hour},
		{"server_idle_timeout", c.ServerIdleTimeout, 10 * time.Minute},
		{"server_connect_timeout", c.ServerConnectTimeout, 15 * time.Second},
		{"server_login_retry", c.ServerLoginRetry, 15 * time.Second},
		{"client_login_timeout", c.ClientLoginTimeout, time.Minute},
		{"query_wait_timeout", c.QueryWaitTimeout, 2 * time.Minute},
		{"cancel_wait_timeout", c.CancelWaitTimeout, 10 * time.Second},
		{"track_extra_parameters", strings.Join(c.TrackExtraParameters, ","), "IntervalStyle,search_path"},
		{"max_packet_size", c.MaxPacketSize, 2147483647},
		{"pkt_buf", c.PktBuf, 4096},
		{"max_prepared_statements", c.MaxPreparedStatements, 200},
		{"tcp_keepalive", c.TCPKeepalive, true},
		{"client sslmode", c.ClientTLS.Mode, TLSDisable},
		{"server sslmode", c.ServerTLS.Mode, TLSPrefer},
		{"tls protocols", c.ServerTLS.Protocols + c.ClientTLS.Protocols, "securesecure"},
		{"tls ciphers", c.ServerTLS.Ciphers, "default"},
		{"syslog_ident", c.SyslogIdent, "pgbouncer"},
		{"syslog_facility", c.SyslogFacility, "daemon"},
		{"log_*", c.LogConnections && c.LogDisconnections && c.LogPoolerErrors && c.LogStats, true},
		{"stats_period", c.StatsPeriod, time.Minute},
		{"maps", c.Databases != nil && c.Users != nil && c.AuthUsers != nil, true},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}
}

func TestSettings(t *testing.T) {
	c, err := LoadINI("testdata/debian118.ini")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Settings) != len(params)+len(entraParams) {
		t.Errorf("%d settings, %d params + %d entra params", len(c.Settings), len(params), len(entraParams))
	}
	if !slices.IsSortedFunc(c.Settings, func(a, b Setting) int { return strings.Compare(a.Key, b.Key) }) {
		t.Error("settings not sorted")
	}
	want := map[string]Setting{
		"listen_addr":            {"listen_addr", "127.0.0.1,::1", "", false},
		"listen_port":            {"listen_port", "6432", "6432", false},
		"auth_type":              {"auth_type", "scram-sha-256", "md5", true},
		"pool_mode":              {"pool_mode", "transaction", "session", true},
		"server_lifetime":        {"server_lifetime", "3600", "3600", true},
		"reserve_pool_timeout":   {"reserve_pool_timeout", "5", "5", true},
		"log_connections":        {"log_connections", "1", "1", true},
		"server_check_query":     {"server_check_query", "<empty>", "<empty>", true},
		"unix_socket_mode":       {"unix_socket_mode", "511", "0777", false},
		"track_extra_parameters": {"track_extra_parameters", "IntervalStyle,search_path", "IntervalStyle,search_path", false},
		"dns_max_ttl":            {"dns_max_ttl", "15", "15", true},
		"conffile":               {"conffile", "testdata/debian118.ini", "", true},
		"server_tls_sslmode":     {"server_tls_sslmode", "prefer", "prefer", true},
		"stats_users":            {"stats_users", "monitor,stats", "", true},
		"user":                   {"user", "", "", false},
	}
	for _, s := range c.Settings {
		if w, ok := want[s.Key]; ok {
			if s != w {
				t.Errorf("got %+v, want %+v", s, w)
			}
			delete(want, s.Key)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing settings: %v", want)
	}
	// The restart-only keys of PgBouncer's CF_NO_RELOAD.
	var fixed []string
	for _, s := range c.Settings {
		if !s.Changeable {
			fixed = append(fixed, s.Key)
		}
	}
	wantFixed := []string{"disable_pqexec", "event_loop", "job_name", "listen_addr", "listen_backlog", "listen_port", "pidfile", "pkt_buf",
		"resolv_conf", "so_reuseport", "track_extra_parameters", "unix_socket_dir", "unix_socket_group", "unix_socket_mode", "user"}
	if !slices.Equal(fixed, wantFixed) {
		t.Errorf("not changeable: %v\nwant %v", fixed, wantFixed)
	}
}

// TestSettingsSameForBothFormats checks that the same settings in either
// format render the same SHOW CONFIG.
func TestSettingsSameForBothFormats(t *testing.T) {
	dir := t.TempDir()
	ini := writeFile(t, dir, "a.ini", `[pgbouncer]
listen_addr = 127.0.0.1
pool_mode = transaction
server_lifetime = 2.5
tcp_user_timeout = 1500
stats_period = 30
log_stats = 0
server_check_query =
auth_user = a
`)
	yml := writeFile(t, dir, "a.yaml", `listen: {addresses: [127.0.0.1]}
pool: {mode: transaction}
server: {lifetime: 2500ms, check_query: ""}
network: {tcp_user_timeout: 1.5}
log: {stats_period: 30s, stats: false}
auth: {user: a}
`)
	a, err := Load(ini)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(yml)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Settings {
		sa, sb := a.Settings[i], b.Settings[i]
		if sa.Key == "conffile" {
			continue
		}
		if sa != sb {
			t.Errorf("ini %+v\nyaml %+v", sa, sb)
		}
	}
	if v := settingValue(a, "server_lifetime"); v != "2.5" {
		t.Errorf("server_lifetime rendered %q", v)
	}
	if v := settingValue(a, "server_check_query"); v != "" {
		t.Errorf("server_check_query rendered %q", v)
	}
}

func TestLookupAndPrecedence(t *testing.T) {
	c, err := LoadINI("testdata/full.ini")
	if err != nil {
		t.Fatal(err)
	}
	// Fallback database.
	db, ok := c.LookupDatabase("sales")
	if !ok || db.Name != "sales" || db.DBName != "sales" || db.Host != "10.0.0.9" || db.Port != 5433 {
		t.Fatalf("LookupDatabase(sales) = %+v, %v", db, ok)
	}
	if c.Databases["*"].Name != "*" || c.Databases["*"].DBName != "" {
		t.Error("the fallback entry was modified")
	}
	if _, ok := c.LookupDatabase("pgbouncer"); ok {
		t.Error("the admin database must not come from the fallback")
	}
	if db, ok := c.LookupDatabase("app"); !ok || db != c.Databases["app"] {
		t.Error("LookupDatabase(app) should return the configured entry")
	}
	delete(c.Databases, "*")
	if _, ok := c.LookupDatabase("sales"); ok {
		t.Error("no fallback: unknown names must not be found")
	}

	// app forces user "app" (no [users] entry); forced forces "svc"; plain
	// forces nobody.
	app, forced, plain := c.Databases["app"], c.Databases["forced"], c.Databases["quoted db"]
	tests := []struct {
		name      string
		got, want any
	}{
		// pool_mode: user > database > global.
		{"mode global", c.EffectivePoolMode(nil, "bob"), PoolSession},
		{"mode db", c.EffectivePoolMode(app, "bob"), PoolTransaction},
		{"mode db, forced user has no entry", c.EffectivePoolMode(app, "svc"), PoolTransaction},
		{"mode user", c.EffectivePoolMode(plain, "svc"), PoolStatement},
		{"mode forced user's entry", c.EffectivePoolMode(forced, "bob"), PoolStatement},
		// pool_size: user > database > default_pool_size.
		{"size global", c.EffectivePoolSize(app, "bob"), 25},
		{"size user", c.EffectivePoolSize(plain, "alice"), 11},
		{"size user unknown", c.EffectivePoolSize(plain, "bob"), 25},
		{"size forced user over db", c.EffectivePoolSize(forced, "alice"), 3},
		{"size db", c.EffectivePoolSize(&Database{PoolSize: 9}, "bob"), 9},
		// reserve_pool_size.
		{"reserve db", c.EffectiveReservePoolSize(app, "bob"), 2},
		{"reserve global", c.EffectiveReservePoolSize(nil, "bob"), 3},
		{"reserve user", c.EffectiveReservePoolSize(forced, "x"), 1},
		// max_db_connections, server_lifetime, min_pool_size.
		{"max db conns db", c.EffectiveMaxDBConnections(forced), 40},
		{"max db conns global (0 = inherit)", c.EffectiveMaxDBConnections(app), 0},
		{"lifetime db", c.EffectiveServerLifetime(forced), 2 * time.Minute},
		{"lifetime global (0 = inherit)", c.EffectiveServerLifetime(app), 30 * time.Minute},
		{"min pool db", c.EffectiveMinPoolSize(forced), 2},
		{"min pool global", c.EffectiveMinPoolSize(app), 1},
		{"max user conns", c.EffectiveMaxUserConnections(forced, "x"), 50},
		{"max user conns global", c.EffectiveMaxUserConnections(app, "x"), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, dir, "server.key", "k")
	crt := writeFile(t, dir, "server.crt", "c")
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr string
	}{
		{"defaults", func(c *Config) {}, ""},
		{"auth ldap", func(c *Config) { c.AuthType = "ldap" }, "auth_type ldap is not supported by pgwarden"},
		{"auth bogus", func(c *Config) { c.AuthType = "kerberos" }, `invalid auth_type "kerberos"`},
		{"auth any with forced users", func(c *Config) {
			c.AuthType = AuthAny
			c.Databases["a"] = newDatabase("a", "", 0)
			c.Databases["a"].User = "u"
		}, ""},
		{"auth any without a forced user", func(c *Config) {
			c.AuthType = AuthAny
			c.Databases["a"] = newDatabase("a", "", 0)
		}, "databases/a: auth_type any requires a forced user"},
		{"auth hba without file", func(c *Config) { c.AuthType = AuthHBA }, "auth_type hba needs auth_hba_file"},
		{"auth cert without client TLS", func(c *Config) { c.AuthType = AuthCert }, "auth_type cert needs client TLS"},
		{"bad pool mode", func(c *Config) { c.PoolMode = PoolModeUnset }, "pool_mode: invalid pool mode"},
		{"bad tls mode", func(c *Config) { c.ServerTLS.Mode = "sometimes" }, `invalid sslmode "sometimes"`},
		{"bad tls protocols", func(c *Config) { c.ClientTLS.Protocols = "tlsv1.2,sslv3" }, `unknown TLS protocol "sslv3"`},
		{"tls protocols list", func(c *Config) { c.ClientTLS.Protocols = "tlsv1.2, tlsv1.3" }, ""},
		{"client tls without files", func(c *Config) { c.ClientTLS.Mode = TLSRequire }, "client_tls_sslmode require needs client_tls_key_file"},
		{"client tls with files", func(c *Config) {
			c.ClientTLS.Mode, c.ClientTLS.KeyFile, c.ClientTLS.CertFile = TLSRequire, key, crt
		}, ""},
		{"client tls files missing", func(c *Config) {
			c.ClientTLS.Mode, c.ClientTLS.KeyFile, c.ClientTLS.CertFile = TLSRequire, key, filepath.Join(dir, "nope.crt")
		}, "client_tls_cert_file: file"},
		{"client verify-full without CA", func(c *Config) {
			c.ClientTLS.Mode, c.ClientTLS.KeyFile, c.ClientTLS.CertFile = TLSVerifyFull, key, crt
		}, "needs client_tls_ca_file"},
		{"server key without cert", func(c *Config) { c.ServerTLS.KeyFile = key }, "must be set together"},
		{"negative size", func(c *Config) { c.MaxClientConn = -1 }, "max_client_conn: must not be negative"},
		{"negative timeout", func(c *Config) { c.QueryTimeout = -time.Second }, "query_timeout: must not be negative"},
		{"admin db name", func(c *Config) { c.Databases["pgbouncer"] = newDatabase("pgbouncer", "", 0) }, `database name "pgbouncer" is reserved`},
		{"admin auth_dbname", func(c *Config) { c.AuthDBName = "pgbouncer" }, "auth_dbname must not be the admin database"},
		{"db bad port", func(c *Config) {
			c.Databases["a"] = &Database{Name: "a", PoolSize: -1, MinPoolSize: -1, ReservePoolSize: -1, MaxDBConnections: -1}
		}, "port must be from 1 to 65535"},
		{"user negative", func(c *Config) {
			u := newUser("u", "", 0)
			u.PoolSize = -7
			c.Users["u"] = u
		}, "users/u: pool_size must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConfig("v.ini", "ini")
			tt.mutate(c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}

	// All problems come back, joined.
	c := newConfig("v.ini", "ini")
	c.MaxClientConn, c.DefaultPoolSize, c.AuthType = -1, -1, "pam"
	if ps := problems(t, c.Validate()); len(ps) != 3 {
		t.Errorf("got %d problems, want 3: %v", len(ps), ps)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "c.ini", "[pgbouncer]\nauth_file = nope.txt\nsbuf_loopcnt = 7\nlisten_port = x\n")
	got := Check(p)
	if len(got) != 3 {
		t.Fatalf("Check = %v", got)
	}
	var perr Problem
	if !errors.As(got[0], &perr) || perr.Line != 4 || strings.HasPrefix(got[0].Error(), "warning") {
		t.Errorf("first should be the error: %v", got[0])
	}
	for _, w := range got[1:] {
		var ww Warning
		if !errors.As(w, &ww) || !strings.HasPrefix(w.Error(), "warning: "+p+":") {
			t.Errorf("not a warning: %v", w)
		}
	}
	if got := Check("testdata/debian118.ini"); len(got) != 0 {
		t.Errorf("debian118.ini: %v", got)
	}
}

func TestProblemError(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{"f.ini", 3, "listen_port", "bad"}, "f.ini:3: listen_port: bad"},
		{Problem{"f.ini", 0, "listen_port", "bad"}, "f.ini: listen_port: bad"},
		{Problem{"f.ini", 3, "", "bad"}, "f.ini:3: bad"},
		{Problem{"", 0, "k", "bad"}, "k: bad"},
		{Problem{"", 0, "", "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.p.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	if got := (Warning{Problem{"f", 1, "k", "m"}}).Error(); got != "warning: f:1: k: m" {
		t.Errorf("warning = %q", got)
	}
}

func TestLoadPicksFormat(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"p.yaml", "p.YML"} {
		p := writeFile(t, dir, name, "pool: {mode: statement}\n")
		c, err := Load(p)
		if err != nil || c.Format != "yaml" || c.PoolMode != PoolStatement {
			t.Errorf("%s: %v %+v", name, err, c)
		}
	}
	p := writeFile(t, dir, "p.conf", "[pgbouncer]\npool_mode = statement\n")
	if c, err := Load(p); err != nil || c.Format != "ini" || c.PoolMode != PoolStatement {
		t.Errorf("p.conf: %v", err)
	}
}

// TestAuthFileRelativeToCwd checks that the working directory wins over the
// configuration's directory, as in PgBouncer.
func TestAuthFileRelativeToCwd(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "conf/users.txt", `"conf" "x"`)
	writeFile(t, dir, "users.txt", `"cwd" "x"`)
	p := writeFile(t, dir, "conf/p.ini", "[pgbouncer]\nauth_file = users.txt\n")
	t.Chdir(dir)
	c, err := LoadINI(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.AuthUsers["cwd"]; !ok || c.AuthFile != "users.txt" {
		t.Errorf("loaded %v from %q", c.AuthUsers, c.AuthFile)
	}
	if err := os.Remove(filepath.Join(dir, "users.txt")); err != nil {
		t.Fatal(err)
	}
	c, err = LoadINI(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.AuthUsers["conf"]; !ok || c.AuthFile != filepath.Join(dir, "conf", "users.txt") {
		t.Errorf("loaded %v from %q", c.AuthUsers, c.AuthFile)
	}
}

// TestAllowReplication: a database's allow_replication, in both formats,
// and what each value lets in.
func TestAllowReplication(t *testing.T) {
	dir := t.TempDir()
	ini := writeFile(t, dir, "r.ini", "[pgbouncer]\n[databases]\n"+
		"dflt = host=h\nnone = host=h allow_replication=none\noff = host=h allow_replication=0\n"+
		"log = host=h allow_replication=Logical\nphys = host=h allow_replication=physical\n")
	yml := writeFile(t, dir, "r.yaml", "databases:\n  dflt: {host: h}\n  none: {host: h, allow_replication: none}\n"+
		"  off: {host: h, allow_replication: false}\n  log: {host: h, allow_replication: logical}\n  phys: {host: h, allow_replication: physical}\n")
	want := map[string]ReplicationAllow{"dflt": ReplicationAllowAll, "none": ReplicationAllowNone, "off": ReplicationAllowNone,
		"log": ReplicationAllowLogical, "phys": ReplicationAllowPhysical}
	for _, p := range []string{ini, yml} {
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for name, w := range want {
			if got := c.Databases[name].AllowReplication; got != w {
				t.Errorf("%s: %s: allow_replication %v, want %v", p, name, got, w)
			}
		}
	}
	bad := writeFile(t, dir, "bad.yaml", "databases:\n  d: {host: h, allow_replication: sometimes}\n")
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "bad.yaml:2: databases.d.allow_replication: invalid allow_replication \"sometimes\"") {
		t.Errorf("bad value: %v", err)
	}
	for _, tc := range []struct {
		r                 ReplicationAllow
		physical, logical bool
	}{
		{ReplicationAllowAll, true, true},
		{ReplicationAllowNone, false, false},
		{ReplicationAllowLogical, false, true},
		{ReplicationAllowPhysical, true, false},
	} {
		if tc.r.Allows(true) != tc.physical || tc.r.Allows(false) != tc.logical {
			t.Errorf("%v: Allows(physical) %v, Allows(logical) %v", tc.r, tc.r.Allows(true), tc.r.Allows(false))
		}
		if back, ok := ParseReplicationAllow(tc.r.String()); !ok || back != tc.r {
			t.Errorf("%v does not round-trip", tc.r)
		}
	}
}
