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

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// problems returns the Problems inside an error from Load*.
func problems(t *testing.T, err error) []Problem {
	t.Helper()
	var out []Problem
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("error is not joined: %v", err)
	}
	for _, e := range joined.Unwrap() {
		var p Problem
		if !errors.As(e, &p) {
			t.Fatalf("not a Problem: %T %v", e, e)
		}
		out = append(out, p)
	}
	return out
}

// wantProblem asserts that some problem is at line and contains every
// fragment.
func wantProblem(t *testing.T, ps []Problem, line int, fragments ...string) {
	t.Helper()
	for _, p := range ps {
		if line != 0 && p.Line != line {
			continue
		}
		s := p.Error()
		ok := true
		for _, f := range fragments {
			if !strings.Contains(s, f) {
				ok = false
			}
		}
		if ok {
			return
		}
	}
	var all []string
	for _, p := range ps {
		all = append(all, p.Error())
	}
	t.Errorf("no problem at line %d containing %q; got:\n%s", line, fragments, strings.Join(all, "\n"))
}

func TestDebian118INI(t *testing.T) {
	c, err := LoadINI("testdata/debian118.ini")
	if err != nil {
		t.Fatalf("LoadINI: %v", err)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("unexpected warnings: %v", c.Warnings)
	}
	if !slices.Equal(c.ListenAddrs, []string{"127.0.0.1", "::1"}) || c.ListenPort != 6432 {
		t.Errorf("listen = %v:%d", c.ListenAddrs, c.ListenPort)
	}
	if c.AuthType != AuthSCRAM || c.PoolMode != PoolTransaction || c.DefaultPoolSize != 20 || c.MaxClientConn != 1000 {
		t.Errorf("auth_type %q pool_mode %v default_pool_size %d max_client_conn %d", c.AuthType, c.PoolMode, c.DefaultPoolSize, c.MaxClientConn)
	}
	if !slices.Equal(c.AdminUsers, []string{"postgres"}) || !slices.Equal(c.StatsUsers, []string{"monitor", "stats"}) {
		t.Errorf("admin %v stats %v", c.AdminUsers, c.StatsUsers)
	}
	if c.AuthUsers["postgres"] != "md545f2603610af569b6155c45067268c6b" {
		t.Errorf("auth users: %v", c.AuthUsers)
	}
	if !slices.Equal(c.IgnoreStartupParameters, []string{"extra_float_digits"}) {
		t.Errorf("ignore_startup_parameters %v", c.IgnoreStartupParameters)
	}
	db := c.Databases["reporting"]
	if db == nil || db.Host != "db2.internal" || db.Port != 5433 || db.DBName != "reports" || db.PoolSize != 5 || db.Line != 4 {
		t.Fatalf("reporting = %+v", db)
	}
	if pg := c.Databases["postgres"]; pg.Host != "/var/run/postgresql" || pg.Port != 5432 || pg.DBName != "postgres" {
		t.Errorf("postgres = %+v", pg)
	}
	// Untouched defaults.
	if c.ServerTLS.Mode != TLSPrefer || c.ClientTLS.Mode != TLSDisable || c.ServerLifetime != time.Hour || !c.LogConnections {
		t.Errorf("defaults not applied: %+v %+v %v", c.ServerTLS, c.ClientTLS, c.ServerLifetime)
	}
}

func TestFullINI(t *testing.T) {
	c, err := LoadINI("testdata/full.ini")
	if err != nil {
		t.Fatalf("LoadINI: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen_addr", c.ListenAddrs, []string{"*"}},
		{"listen_port hex", c.ListenPort, 0x1920},
		{"unix_socket_dir empty", c.UnixSocketDir, ""},
		{"unix_socket_mode octal", c.UnixSocketMode, uint32(0o700)},
		{"listen_backlog octal", c.ListenBacklog, 0o200},
		{"auth_type", c.AuthType, AuthMD5},
		{"auth_file found next to the ini", c.AuthFile, filepath.Join("testdata", "userlist.txt")},
		{"reserve_pool_timeout decimal", c.ReservePoolTimeout, 2500 * time.Millisecond},
		{"server_lifetime", c.ServerLifetime, 30 * time.Minute},
		{"server_idle_timeout", c.ServerIdleTimeout, 500 * time.Millisecond},
		{"tcp_user_timeout ms", c.TCPUserTimeout, 1500 * time.Millisecond},
		{"tcp_keepidle s", c.TCPKeepIdle, 30 * time.Second},
		{"stats_period", c.StatsPeriod, 30 * time.Second},
		{"log_connections 0", c.LogConnections, false},
		{"server_round_robin 1", c.ServerRoundRobin, true},
		{"server_check_query empty disables", c.ServerCheckDisabled, true},
		{"track_extra_parameters", c.TrackExtraParameters, []string{"IntervalStyle", "search_path"}},
		{"max_packet_size", c.MaxPacketSize, 0x7fffffff},
		{"verbose", c.Verbose, 2},
		{"; inside a value", c.ServerResetQuery, "DISCARD ALL; -- kept"},
		{"%include (cwd)", c.MaxClientConn, 500},
		{"%include (next to includer)", c.MinPoolSize, 1},
	}
	for _, ck := range checks {
		if !equalAny(ck.got, ck.want) {
			t.Errorf("%s: got %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}

	if db := c.Databases["quoted db"]; db == nil || db.DBName != "q" {
		t.Errorf("quoted key: %+v", db)
	}
	app := c.Databases["app"]
	if app.Password != "it's secret" || app.ConnectQuery != "SELECT 1" || app.Port != 6000 || app.PoolMode != PoolTransaction || app.ReservePoolSize != 2 {
		t.Errorf("app = %+v", app)
	}
	if app.ServerLifetime != -1 || app.MaxDBConnections != -1 || app.PoolSize != -1 {
		t.Errorf("app: 0 must mean inherit (-1): %+v", app)
	}
	forced := c.Databases["forced"]
	if forced.User != "svc" || forced.MinPoolSize != 2 || forced.MaxDBConnections != 40 || forced.ServerLifetime != 2*time.Minute ||
		forced.ApplicationName != "x" || forced.TimeZone != "UTC" || forced.DateStyle != "ISO" || forced.ClientEncoding != "UTF8" {
		t.Errorf("forced = %+v", forced)
	}
	if star := c.Databases["*"]; star == nil || star.DBName != "" || star.Port != 5433 {
		t.Errorf("* = %+v", star)
	}
	svc := c.Users["svc"]
	if svc.PoolMode != PoolStatement || svc.PoolSize != 3 || svc.ReservePoolSize != 1 || svc.MaxUserConnections != 50 ||
		svc.QueryTimeout != 30*time.Second || svc.IdleTransactionTimeout != -1 || svc.ClientIdleTimeout != -1 {
		t.Errorf("svc = %+v", svc)
	}

	// Warnings: sbuf_loopcnt (non-default), and [peers] with peer_id 0;
	// dns_max_ttl is at its default.
	var ws []string
	for _, w := range c.Warnings {
		ws = append(ws, w.Error())
	}
	joined := strings.Join(ws, "\n")
	if len(c.Warnings) != 2 ||
		!strings.Contains(joined, "full.ini:31: sbuf_loopcnt: accepted for compatibility but not implemented yet; it has no effect") ||
		!strings.Contains(joined, "full.ini:32: peer_id: [peers] is set but peer_id is 0, so peering is off") {
		t.Errorf("warnings:\n%s", joined)
	}
	if got := settingValue(c, "sbuf_loopcnt"); got != "10" {
		t.Errorf("SHOW CONFIG sbuf_loopcnt = %q", got)
	}
}

func equalAny(a, b any) bool {
	if as, ok := a.([]string); ok {
		bs, ok := b.([]string)
		return ok && slices.Equal(as, bs)
	}
	return a == b
}

func TestBadINI(t *testing.T) {
	_, err := LoadINI("testdata/bad.ini")
	if err == nil {
		t.Fatal("bad.ini loaded")
	}
	ps := problems(t, err)
	f := "testdata/bad.ini:"
	wantProblem(t, ps, 2, f+"2: listen_port: invalid value \"6432x\": expected an integer")
	wantProblem(t, ps, 3, "log_connections", "expected 0 or 1", `"on" is not accepted`)
	wantProblem(t, ps, 4, "server_lifetime", "without a unit")
	wantProblem(t, ps, 5, f+"5: unknown parameter: pgbouncer/no_such_key")
	wantProblem(t, ps, 6, "auth_type", "expected one of")
	wantProblem(t, ps, 7, "syntax error")
	wantProblem(t, ps, 8, `invalid section "nonsense"`)
	wantProblem(t, ps, 11, "databases/pgbouncer", `database name "pgbouncer" is reserved`)
	wantProblem(t, ps, 12, f+"12: databases/db1: unrecognized connection parameter: sslmode")
	wantProblem(t, ps, 13, "unterminated quoted value")
	wantProblem(t, ps, 14, "invalid port: 0")
	wantProblem(t, ps, 16, f+"16: users/u1: unrecognized user parameter: query_wait")
	wantProblem(t, ps, 18, "ids of peers must be a number")
	if len(ps) != 13 {
		for _, p := range ps {
			t.Log(p)
		}
		t.Errorf("got %d problems, want 13 (x = 1 in an invalid section is not reported again)", len(ps))
	}
}

func TestRepeatedMainSection(t *testing.T) {
	p := writeFile(t, t.TempDir(), "r.ini", "[pgbouncer]\nauth_user = a\n[databases]\n[pgbouncer]\npool_mode = transaction\n")
	c, err := LoadINI(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.PoolMode != PoolTransaction || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Error(), "r.ini:4: [pgbouncer] appears again") {
		t.Errorf("mode %v warnings %v", c.PoolMode, c.Warnings)
	}
}

func TestMissingMainSection(t *testing.T) {
	_, err := LoadINI("testdata/nomain.ini")
	if err == nil || !strings.Contains(err.Error(), "main section [pgbouncer] missing") {
		t.Fatalf("err = %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := LoadINI("testdata/does-not-exist.ini")
	if err == nil || !strings.Contains(err.Error(), "testdata/does-not-exist.ini: could not load file") {
		t.Fatalf("err = %v", err)
	}
}

func TestIncludeDepth(t *testing.T) {
	_, err := LoadINI("testdata/include/loop.ini")
	if err == nil || !strings.Contains(err.Error(), "include nesting level too deep") {
		t.Fatalf("err = %v", err)
	}
	dir := t.TempDir()
	p := writeFile(t, dir, "main.ini", "[pgbouncer]\n%include nowhere.ini\n")
	_, err = LoadINI(p)
	if err == nil || !strings.Contains(err.Error(), "main.ini:2: %include: could not load included file \"nowhere.ini\"") {
		t.Fatalf("err = %v", err)
	}
}

// TestINIValues checks one [pgbouncer] line at a time.
func TestINIValues(t *testing.T) {
	tests := []struct {
		line    string
		check   func(c *Config) any
		want    any
		wantErr string
	}{
		{"listen_port = 7000", func(c *Config) any { return c.ListenPort }, 7000, ""},
		{"listen_port = 0x1B58", func(c *Config) any { return c.ListenPort }, 7000, ""},
		{"listen_port = 015530", func(c *Config) any { return c.ListenPort }, 7000, ""},
		{"listen_port = 7000 ", func(c *Config) any { return c.ListenPort }, 7000, ""},
		{"listen_port=7000", func(c *Config) any { return c.ListenPort }, 7000, ""},
		{"listen_port = seven", nil, nil, "expected an integer"},
		{"listen_port = 99999999999", nil, nil, "expected an integer from"},
		{"max_packet_size = -1", nil, nil, "expected an integer from 0 to 4294967295"},
		{"unix_socket_mode = 0750", func(c *Config) any { return c.UnixSocketMode }, uint32(0o750), ""},
		{"so_reuseport = 1", func(c *Config) any { return c.SOReuseport }, true, ""},
		{"so_reuseport = 0", func(c *Config) any { return c.SOReuseport }, false, ""},
		{"so_reuseport = on", nil, nil, "expected 0 or 1"},
		{"so_reuseport = true", nil, nil, "expected 0 or 1"},
		{"so_reuseport = 2", nil, nil, "expected 0 or 1"},
		{"query_timeout = 2.5", func(c *Config) any { return c.QueryTimeout }, 2500 * time.Millisecond, ""},
		{"query_timeout = 0", func(c *Config) any { return c.QueryTimeout }, time.Duration(0), ""},
		{"query_timeout = 5s", nil, nil, "without a unit"},
		{"query_timeout = -1", nil, nil, "must not be negative"},
		{"query_timeout = inf", nil, nil, "without a unit"},
		{"stats_period = 1.5", nil, nil, "expected an integer"},
		{"pool_mode = Transaction", func(c *Config) any { return c.PoolMode }, PoolTransaction, ""},
		{"pool_mode = sometimes", nil, nil, "expected one of session, transaction, statement"},
		{"auth_type = SCRAM-SHA-256", func(c *Config) any { return c.AuthType }, AuthSCRAM, ""},
		{"auth_type = ldap", nil, nil, "auth_type ldap is not supported by pgwarden"},
		{"auth_type = pam", nil, nil, "auth_type pam is not supported by pgwarden"},
		{"server_tls_sslmode = verify-full", func(c *Config) any { return c.ServerTLS.Mode }, TLSVerifyFull, ""},
		{"server_tls_sslmode = on", nil, nil, "expected one of disable"},
		{"server_check_query = <empty>", func(c *Config) any { return c.ServerCheckQuery == "" && !c.ServerCheckDisabled }, true, ""},
		{"server_check_query = select 1", func(c *Config) any { return c.ServerCheckQuery }, "select 1", ""},
		{"admin_users = a , b,,c", func(c *Config) any { return strings.Join(c.AdminUsers, "|") }, "a|b|c", ""},
		{"logfile = /tmp/x.log # not a comment", func(c *Config) any { return c.LogFile }, "/tmp/x.log # not a comment", ""},
		{"'listen_port' = 7001", func(c *Config) any { return c.ListenPort }, 7001, ""},
		{"service_name = x", func(c *Config) any { return len(c.Warnings) }, 1, ""},
		{"job_name = pgbouncer", func(c *Config) any { return len(c.Warnings) }, 0, ""},
		{"dns_max_ttl = 5s", nil, nil, "dns_max_ttl: invalid value"},
		{"tcp_defer_accept = 0", func(c *Config) any { return settingValue(c, "tcp_defer_accept") }, "0", ""},
		{"listen_port", nil, nil, "syntax error: expected key = value"},
		{"= 5", nil, nil, "syntax error: missing key"},
		{"listen_port = 0", nil, nil, "listen_port: must be from 1 to 65535"},
		{"default_pool_size = -5", nil, nil, "default_pool_size: must not be negative"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			// auth_user keeps the "no client can sign in" warning away.
			p := writeFile(t, dir, "t.ini", "[pgbouncer]\n"+tt.line+"\nauth_user = a\n")
			c, err := LoadINI(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "t.ini:2") {
					t.Errorf("error does not name file and line: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got := tt.check(c); got != tt.want {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestParseConnString(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"host=a port=1", "host=a|port=1", ""},
		{"  host = a\tport=1  ", "host=a|port=1", ""},
		{"password='it''s'", "password=it's", ""},
		{"q='a b' x=y", "q=a b|x=y", ""},
		{"q=''''", "q='", ""},
		{"", "", ""},
		{"host=", "", "empty value for host"},
		{"q=''", "", "empty value for q"},
		{"q='open", "", "unterminated quoted value"},
		{"host", "", "expected key=value"},
		{"=x", "", "missing key"},
	}
	for _, tt := range tests {
		got, err := parseConnString(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		var parts []string
		for _, kv := range got {
			parts = append(parts, kv.key+"="+kv.value)
		}
		if s := strings.Join(parts, "|"); s != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, s, tt.want)
		}
	}
}

func TestDatabaseAndUserValues(t *testing.T) {
	tests := []struct {
		section, line string
		wantErr       string
		wantWarn      string
	}{
		{"databases", "d = host=h auth_user=a auth_query='SELECT u, p FROM f($1)' auth_dbname=x", "", ""},
		{"databases", "d = host=h max_db_client_connections=5", "", "max_db_client_connections is accepted for compatibility"},
		{"databases", "d = host=h load_balance_hosts=round-robin", "", ""},
		{"databases", "d = host=h load_balance_hosts=disable", "", "load_balance_hosts=disable is accepted"},
		{"databases", "d = host=h load_balance_hosts=random", "invalid load_balance_hosts", ""},
		{"databases", "d = host=h pool_size=ten", "invalid value for pool_size", ""},
		{"databases", "d = host=h pool_mode=bogus", "invalid pool mode: bogus", ""},
		{"databases", "d = host=h server_lifetime=5s", "without a unit", ""},
		{"databases", "d = host=h pool_size=-2", "pool_size must not be negative", ""},
		{"databases", "d = host=h auth_dbname=pgbouncer", "auth_dbname must not be the admin database", ""},
		{"databases", "d = host=h allow_replication=logical", "", ""},
		{"databases", "d = host=h allow_replication=maybe", "invalid allow_replication: maybe (expected all, none, logical or physical)", ""},
		{"users", "u = transaction_timeout=5", "", "transaction_timeout is accepted for compatibility"},
		{"users", "u = max_user_client_connections=5", "", "max_user_client_connections is accepted"},
		{"users", "u = client_idle_timeout=1.5 pool_mode=session", "", ""},
		{"users", "u = sslmode=x", "unrecognized user parameter: sslmode", ""},
		{"peers", "7 = port=6433", "host was not provided for peer 7", ""},
		{"peers", "7 = host=x bogus=1", "unrecognized connection parameter: bogus", ""},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			p := writeFile(t, dir, "t.ini", "[pgbouncer]\nauth_user = a\n["+tt.section+"]\n"+tt.line+"\n")
			c, err := LoadINI(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "t.ini:4") {
					t.Fatalf("err = %v, want %q at t.ini:4", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ws []string
			for _, w := range c.Warnings {
				ws = append(ws, w.Error())
			}
			joined := strings.Join(ws, "\n")
			if tt.wantWarn == "" && len(ws) > 0 {
				t.Errorf("unexpected warnings: %s", joined)
			}
			if tt.wantWarn != "" && !strings.Contains(joined, tt.wantWarn) {
				t.Errorf("warnings %q lack %q", joined, tt.wantWarn)
			}
		})
	}
}
