package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs `pgwarden demo`, uses the psql line it prints, then stops it
// with SIGINT and checks that the throwaway PostgreSQL and the files are
// gone.
func TestDemo(t *testing.T) {
	p := startPgwarden(t, t.TempDir(), "demo")
	p.waitOutput("Press Ctrl-C to stop.", 2*time.Minute)
	out := p.stdout.String()

	m := regexp.MustCompile(`(?m)^\s*psql "([^"]+)"\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no psql line in the demo's output:\n%s", out)
	}
	connString := m[1]
	if got, err := psql(t, connString, "SELECT 1"); err != nil || got != "1" {
		t.Errorf("psql %q -c 'SELECT 1': %v, output %q", connString, err, got)
	}
	// The console line works too.
	if m := regexp.MustCompile(`psql "([^"]+dbname=pgbouncer[^"]*)" -c "SHOW POOLS"`).FindStringSubmatch(out); m == nil {
		t.Errorf("no admin console line in the demo's output:\n%s", out)
	} else if got, err := psql(t, m[1], "SHOW POOLS"); err != nil || !strings.Contains(got, "demo|demo") {
		t.Errorf("SHOW POOLS on the demo: %v, output %q", err, got)
	}

	pgPort := 0
	if m := regexp.MustCompile(`in front of PostgreSQL on port (\d+)`).FindStringSubmatch(out); m != nil {
		pgPort, _ = strconv.Atoi(m[1])
	} else {
		t.Errorf("the demo does not say which port PostgreSQL is on:\n%s", out)
	}
	cfgDir := ""
	if m := regexp.MustCompile(`Config in use:\s+(\S+)`).FindStringSubmatch(out); m != nil {
		cfgDir = filepath.Dir(m[1])
		if _, err := os.Stat(m[1]); err != nil {
			t.Errorf("config in use: %v", err)
		}
	} else {
		t.Errorf("the demo does not name its config file:\n%s", out)
	}

	p.signal(syscall.SIGINT)
	if code := p.wait(time.Minute); code != 0 {
		t.Errorf("demo exit code %d after SIGINT, want 0", code)
	}
	if !strings.Contains(p.stdout.String(), "Stopped;") {
		t.Errorf("no goodbye line:\n%s", p.stdout.String())
	}
	if cfgDir != "" {
		if _, err := os.Stat(cfgDir); !os.IsNotExist(err) {
			t.Errorf("demo directory %s still there: %v", cfgDir, err)
		}
	}
	if pgPort != 0 {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(pgPort), time.Second); err == nil {
			c.Close()
			t.Errorf("the demo's PostgreSQL still listens on port %d", pgPort)
		}
	}
	if got, err := psql(t, connString, "SELECT 1"); err == nil {
		t.Errorf("psql still works after the demo stopped: %q", got)
	}
}
