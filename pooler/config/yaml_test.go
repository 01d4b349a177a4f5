package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGoodYAML(t *testing.T) {
	c, err := LoadYAML("testdata/good.yaml")
	if err != nil {
		t.Fatalf("LoadYAML: %v", err)
	}
	if c.Format != "yaml" || len(c.Warnings) != 0 {
		t.Errorf("format %q warnings %v", c.Format, c.Warnings)
	}
	if !slices.Equal(c.ListenAddrs, []string{"127.0.0.1", "::1"}) || c.UnixSocketMode != 0o700 || c.UnixSocketDir != "/var/run/postgresql" {
		t.Errorf("listen: %v %o %q", c.ListenAddrs, c.UnixSocketMode, c.UnixSocketDir)
	}
	if c.AuthType != AuthSCRAM || c.AuthUsers["postgres"] == "" || c.PoolMode != PoolTransaction || c.MaxClientConn != 1000 {
		t.Errorf("auth %q users %d mode %v max_client_conn %d", c.AuthType, len(c.AuthUsers), c.PoolMode, c.MaxClientConn)
	}
	if c.ReservePoolTimeout != 2500*time.Millisecond || c.ServerLifetime != 30*time.Minute || c.TCPUserTimeout != 1500*time.Millisecond || c.TCPKeepIdle != 30*time.Second {
		t.Errorf("durations: %v %v %v %v", c.ReservePoolTimeout, c.ServerLifetime, c.TCPUserTimeout, c.TCPKeepIdle)
	}
	if !c.ServerCheckDisabled {
		t.Error(`check_query: "" should disable the check`)
	}
	if c.QueryWaitTimeout != 120*time.Second || c.ServerTLS.Mode != TLSPrefer {
		t.Error("defaults not applied")
	}
	rep := c.Databases["reporting"]
	if rep.Host != "db2.internal" || rep.Port != 5433 || rep.DBName != "reports" || rep.PoolSize != 5 || rep.MinPoolSize != -1 || rep.Line != 31 {
		t.Errorf("reporting = %+v", rep)
	}
	forced := c.Databases["forced"]
	if forced.User != "svc" || forced.PoolMode != PoolSession || forced.ServerLifetime != 2*time.Minute || forced.Port != 5432 {
		t.Errorf("forced = %+v", forced)
	}
	if star := c.Databases["*"]; star == nil || star.DBName != "" || star.Port != 5433 {
		t.Errorf("* = %+v", star)
	}
	if u := c.Users["svc"]; u.PoolMode != PoolStatement || u.PoolSize != 3 || u.QueryTimeout != 30*time.Second || u.ClientIdleTimeout != -1 {
		t.Errorf("svc = %+v", u)
	}
	if u := c.Users["nobody"]; u == nil || u.PoolSize != -1 || u.PoolMode != PoolModeUnset {
		t.Errorf("nobody = %+v", u)
	}
}

func TestYAMLUnknownKeys(t *testing.T) {
	_, err := LoadYAML("testdata/bad_unknown.yaml")
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	ps := problems(t, err)
	wantProblem(t, ps, 5, "testdata/bad_unknown.yaml:5: pool.max_clients: unknown key")
	wantProblem(t, ps, 6, "testdata/bad_unknown.yaml:6: azure: unknown key")
	wantProblem(t, ps, 9, "databases.app.sslmode: unknown key")
	if len(ps) != 3 {
		t.Errorf("got %d problems: %v", len(ps), err)
	}
}

func TestYAMLBadValues(t *testing.T) {
	_, err := LoadYAML("testdata/bad_values.yaml")
	if err == nil {
		t.Fatal("bad values accepted")
	}
	ps := problems(t, err)
	wantProblem(t, ps, 2, "listen.port", `invalid value "many": expected an integer`)
	wantProblem(t, ps, 5, "pool.reserve_pool_timeout", `invalid duration "5 seconds"`)
	wantProblem(t, ps, 4, "pool.mode", "expected one of session, transaction, statement")
	wantProblem(t, ps, 7, "auth.type: auth_type pam is not supported by pgwarden")
	wantProblem(t, ps, 9, "databases.pgbouncer", `database name "pgbouncer" is reserved`)
	wantProblem(t, ps, 10, "databases.app.pool_mode", `invalid pool mode "never"`)
	if len(ps) != 6 {
		t.Errorf("got %d problems: %v", len(ps), err)
	}
}

func TestYAMLValidation(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "v.yaml", `auth:
  type: pam
  file: missing.txt
pool:
  mode: sometimes
databases:
  pgbouncer: {host: localhost}
  app: {host: localhost, pool_mode: never}
  neg: {pool_size: -3}
`)
	_, err := LoadYAML(p)
	if err == nil {
		t.Fatal("accepted")
	}
	ps := problems(t, err)
	wantProblem(t, ps, 2, "v.yaml:2: auth.type: auth_type pam is not supported by pgwarden")
	wantProblem(t, ps, 5, "pool.mode", "expected one of session, transaction, statement")
	wantProblem(t, ps, 7, "databases.pgbouncer", `database name "pgbouncer" is reserved`)
	wantProblem(t, ps, 8, "databases.app.pool_mode", `invalid pool mode "never"`)
	wantProblem(t, ps, 9, "databases.neg", "pool_size must not be negative")
}

func TestYAMLDurationsAndModes(t *testing.T) {
	tests := []struct {
		yaml    string
		check   func(c *Config) any
		want    any
		wantErr string
	}{
		{"server: {lifetime: 90}", func(c *Config) any { return c.ServerLifetime }, 90 * time.Second, ""},
		{"server: {lifetime: 2.5}", func(c *Config) any { return c.ServerLifetime }, 2500 * time.Millisecond, ""},
		{"server: {lifetime: \"90\"}", func(c *Config) any { return c.ServerLifetime }, 90 * time.Second, ""},
		{"server: {lifetime: 1h30m}", func(c *Config) any { return c.ServerLifetime }, 90 * time.Minute, ""},
		{"server: {lifetime: -1s}", nil, nil, "must not be negative"},
		{"server: {lifetime: [1]}", nil, nil, "invalid duration"},
		{"listen: {unix_socket_mode: 0755}", func(c *Config) any { return c.UnixSocketMode }, uint32(0o755), ""},
		{"listen: {unix_socket_mode: \"0o755\"}", func(c *Config) any { return c.UnixSocketMode }, uint32(0o755), ""},
		{"listen: {unix_socket_mode: \"rwx\"}", nil, nil, "invalid file mode"},
		{"listen: {addresses: []}", func(c *Config) any { return len(c.ListenAddrs) }, 0, ""},
		{"listen: {addresses: [], unix_socket_dir: \"\"}", nil, nil, "nothing to listen on"},
		{"tls: {server: {sslmode: VERIFY-FULL}}", func(c *Config) any { return c.ServerTLS.Mode }, TLSVerifyFull, ""},
		{"tls: {server: {sslmode: maybe}}", nil, nil, "tls.server.sslmode: invalid value"},
		{"tls: {client: {sslmode: require}}", nil, nil, "client_tls_sslmode require needs client_tls_key_file"},
		{"server: {check_query: \"<empty>\"}", func(c *Config) any { return c.ServerCheckDisabled }, false, ""},
		{"run_as_user: postgres", func(c *Config) any { return c.User }, "postgres", ""},
		{"log: {verbose: 2, connections: false}", func(c *Config) any { return c.Verbose*10 + btoi(c.LogConnections) }, 20, ""},
		{"", func(c *Config) any { return c.ListenPort }, 6432, ""},
		{"# only a comment", func(c *Config) any { return c.PoolMode }, PoolSession, ""},
		{"listen: 5", nil, nil, "expected a mapping"},
		{"pool:\n  mode: session\n  mode: session", nil, nil, "already defined"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			p := writeFile(t, dir, "t.yml", tt.yaml+"\n")
			c, err := Load(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.check(c); got != tt.want {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestYAMLSyntaxError(t *testing.T) {
	_, err := LoadYAML("testdata/bad_syntax.yaml")
	if err == nil || !strings.Contains(err.Error(), "testdata/bad_syntax.yaml:3: syntax error") {
		t.Fatalf("err = %v", err)
	}
}

// TestRepositoryPoolerYAML checks that the annotated example loads as is.
func TestRepositoryPoolerYAML(t *testing.T) {
	c, err := Load("../../pooler.yaml")
	if err != nil {
		t.Fatalf("pooler.yaml: %v", err)
	}
	if !slices.Equal(c.ListenAddrs, []string{"127.0.0.1"}) || c.ListenPort != 6432 || c.UnixSocketDir != "/tmp" {
		t.Errorf("listen: %v %d %q", c.ListenAddrs, c.ListenPort, c.UnixSocketDir)
	}
	if c.AuthType != AuthSCRAM || c.AuthFile != "userlist.txt" {
		t.Errorf("auth: %q %q", c.AuthType, c.AuthFile)
	}
	// The example's userlist.txt does not ship: a warning, not an error.
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Error(), "auth.file: auth_file \"userlist.txt\" not found") {
		t.Errorf("warnings: %v", c.Warnings)
	}
	// Every default the file spells out must equal the real default.
	d := newConfig("", "")
	for _, s := range c.Settings {
		switch s.Key {
		case "listen_addr", "auth_type", "auth_file", "pool_mode", "conffile":
			continue
		}
		if want := paramByKey(t, s.Key).get; want != nil && s.Value != want(d) {
			t.Errorf("pooler.yaml %s = %q, but the default is %q", s.Key, s.Value, want(d))
		}
	}
	if c.Entra.Enabled {
		t.Error("the example's entra: block must stay commented out")
	}
}

// paramByKey finds the param of a SHOW CONFIG key ("entra.<key>" for the
// [entra] keys).
func paramByKey(t *testing.T, key string) *param {
	t.Helper()
	if name, ok := strings.CutPrefix(key, "entra."); ok {
		if p, ok := entraIndex[name]; ok {
			return p
		}
	} else if p, ok := paramIndex[key]; ok {
		return p
	}
	t.Fatalf("no param for SHOW CONFIG key %q", key)
	return nil
}
