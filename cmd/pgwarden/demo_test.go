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

// TestDemo runs `pgwarden demo`, uses the psql lines it prints (password,
// token, fresh token from dev-token, console), then stops it with SIGINT and
// checks that the throwaway PostgreSQL, the identity provider and the files
// are gone.
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
	// The token line signs in as demo with an Entra ID token over TLS.
	tm := regexp.MustCompile(`(?m)^\s*PGPASSWORD='([^']+)' psql "([^"]+)"\s*$`).FindStringSubmatch(out)
	if tm == nil {
		t.Fatalf("no token psql line in the demo's output:\n%s", out)
	}
	if !strings.Contains(tm[2], "sslmode=require") || !strings.Contains(connString, "sslmode=require") {
		t.Errorf("the psql lines do not ask for TLS: %q, %q", connString, tm[2])
	}
	if got, err := psqlEnv(t, []string{"PGPASSWORD=" + tm[1]}, tm[2], "SELECT current_user"); err != nil || got != "demo" {
		t.Errorf("token psql line: SELECT current_user: %v, output %q", err, got)
	}
	// Without TLS the token is refused.
	plain := strings.Replace(tm[2], "sslmode=require", "sslmode=disable", 1)
	if got, err := psqlEnv(t, []string{"PGPASSWORD=" + tm[1]}, plain, "SELECT 1"); err == nil {
		t.Errorf("token over plain TCP signed in: %q", got)
	}
	// The fresh-token line: dev-token against the demo's identity provider.
	fm := regexp.MustCompile(`(?m)^\s*PGPASSWORD=\$\((\S+) dev-token ([^)]+)\) psql "([^"]+)"\s*$`).FindStringSubmatch(out)
	idpURL := ""
	if fm == nil {
		t.Errorf("no dev-token psql line in the demo's output:\n%s", out)
	} else {
		args := strings.Fields(fm[2])
		for i, a := range args {
			if a == "-idp" && i+1 < len(args) {
				idpURL = args[i+1]
			}
		}
		tok, stderr, code := runBinary(t, t.TempDir(), append([]string{"dev-token"}, args...)...)
		if code != 0 || strings.Count(tok, "\n") != 1 || !strings.HasPrefix(tok, "eyJ") {
			t.Errorf("pgwarden dev-token %s: exit %d, stdout %q, stderr %q", fm[2], code, tok, stderr)
		} else if got, err := psqlEnv(t, []string{"PGPASSWORD=" + strings.TrimSpace(tok)}, fm[3], "SELECT current_user"); err != nil || got != "demo" {
			t.Errorf("fresh token: SELECT current_user: %v, output %q", err, got)
		}
	}
	// Each sign-in was audited; the token itself never appears in a log.
	p.waitOutput(`"method":"entra"`, 10*time.Second)
	if strings.Contains(p.stderr.String(), tm[1]) {
		t.Error("the token appears on the demo's standard error")
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
	if idpURL != "" {
		if c, err := net.DialTimeout("tcp", strings.TrimPrefix(idpURL, "http://"), time.Second); err == nil {
			c.Close()
			t.Errorf("the demo's identity provider still listens at %s", idpURL)
		}
	}
}
