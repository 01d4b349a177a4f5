package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAuditSection(t *testing.T) {
	dir := t.TempDir()
	ini := writeFile(t, dir, "pgbouncer.ini", "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n[audit]\nlog_file = /var/log/pgwarden/audit.json\nsyslog = 1\n")
	c, err := Load(ini)
	if err != nil {
		t.Fatal(err)
	}
	if c.Audit != (Audit{LogFile: "/var/log/pgwarden/audit.json", Syslog: true}) {
		t.Errorf("ini audit %+v", c.Audit)
	}
	yml := writeFile(t, dir, "pooler.yaml", "listen:\n  addresses: [127.0.0.1]\naudit:\n  log_file: audit.json\n  syslog: false\ndatabases:\n  app: {host: 127.0.0.1}\n")
	if c, err = Load(yml); err != nil {
		t.Fatal(err)
	}
	if c.Audit != (Audit{LogFile: "audit.json"}) {
		t.Errorf("yaml audit %+v", c.Audit)
	}
	bad := writeFile(t, dir, "bad.ini", "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n[audit]\nsyslog = yes\nfile = x\n")
	_, err = Load(bad)
	if err == nil || !strings.Contains(err.Error(), "audit/syslog: expected 0 or 1") || !strings.Contains(err.Error(), "unknown parameter: audit/file") {
		t.Errorf("bad [audit]: %v", err)
	}
}

func TestWithSetting(t *testing.T) {
	dir := t.TempDir()
	ini := writeFile(t, dir, "pgbouncer.ini", "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\ndefault_pool_size = 5\n")
	c, err := Load(ini)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.WithSetting("Default_Pool_Size", "7")
	if err != nil {
		t.Fatal(err)
	}
	if n.DefaultPoolSize != 7 || c.DefaultPoolSize != 5 {
		t.Errorf("default_pool_size: new %d, old %d", n.DefaultPoolSize, c.DefaultPoolSize)
	}
	setting := func(c *Config, key string) Setting {
		for _, s := range c.Settings {
			if s.Key == key {
				return s
			}
		}
		t.Fatalf("no %s", key)
		return Setting{}
	}
	if s := setting(n, "default_pool_size"); s.Value != "7" {
		t.Errorf("SHOW CONFIG default_pool_size %q", s.Value)
	}
	if n, err = n.WithSetting("query_timeout", "2.5"); err != nil || n.QueryTimeout != 2500*time.Millisecond || n.DefaultPoolSize != 7 {
		t.Errorf("query_timeout: %v %v", n, err)
	}
	// Unimplemented keys keep their values in Settings across SETs.
	if n, err = n.WithSetting("dns_max_ttl", "30"); err != nil {
		t.Fatal(err)
	}
	if n, err = n.WithSetting("server_idle_timeout", "5"); err != nil {
		t.Fatal(err)
	}
	if s := setting(n, "dns_max_ttl"); s.Value != "30" {
		t.Errorf("dns_max_ttl %q", s.Value)
	}
	for key, want := range map[string]error{"listen_port": ErrRestartSetting, "unix_socket_dir": ErrRestartSetting, "nope": ErrUnknownSetting} {
		if _, err := c.WithSetting(key, "1"); !errors.Is(err, want) {
			t.Errorf("%s: %v", key, err)
		}
	}
	for key, value := range map[string]string{"default_pool_size": "x", "pool_mode": "sometimes", "max_client_conn": "-1", "auth_file": "nonexistent.txt"} {
		if _, err := c.WithSetting(key, value); err == nil || errors.Is(err, ErrRestartSetting) || errors.Is(err, ErrUnknownSetting) {
			t.Errorf("%s = %s: %v", key, value, err)
		}
	}
	// auth_file is read at once, relative to the config's directory.
	writeFile(t, dir, "users.txt", "\"zed\" \"zed-pw\"\n")
	if n, err = c.WithSetting("auth_file", "users.txt"); err != nil || n.AuthUsers["zed"] != "zed-pw" {
		t.Errorf("auth_file: %v %v", n, err)
	}
}
