package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// runBinary runs pgwarden with args to completion and returns its stdout,
// stderr and exit code.
func runBinary(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgwardenBin, args...)
	cmd.Dir = dir
	cmd.Env = binEnv()
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("pgwarden %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("pgwarden %s did not finish within 30s", strings.Join(args, " "))
	}
	return out.String(), errb.String(), code
}

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args       []string
		code       int
		stdout     []string // each must appear in stdout
		stderr     []string // each must appear in stderr
		noStdout   bool
		usageOnErr bool
	}{
		{args: []string{"-V"}, stdout: []string{"pgwarden 0.", "PgBouncer"}},
		{args: []string{"--version"}, stdout: []string{"pgwarden 0.", "PgBouncer"}},
		{args: []string{"-h"}, stdout: []string{"Usage:", "check-config", "-V, --version"}},
		{args: []string{"--help"}, stdout: []string{"Usage:"}},
		{args: []string{"-R"}, code: 2, noStdout: true, stderr: []string{"-R (online restart) is not supported", "so_reuseport"}},
		{args: []string{"--reboot", "x.ini"}, code: 2, noStdout: true, stderr: []string{"-R (online restart) is not supported"}},
		{args: []string{"-u", "x"}, code: 2, noStdout: true, stderr: []string{"-u is not supported", "start pgwarden as the user"}},
		{args: []string{"--user=x", "x.ini"}, code: 2, noStdout: true, stderr: []string{"-u is not supported"}},
		{args: []string{"--bogus"}, code: 2, noStdout: true, usageOnErr: true, stderr: []string{"flag provided but not defined: -bogus"}},
		{args: []string{"-x", "pgbouncer.ini"}, code: 2, noStdout: true, usageOnErr: true, stderr: []string{"-x"}},
		{args: []string{}, code: 2, noStdout: true, usageOnErr: true, stderr: []string{"expected one config file"}},
		{args: []string{"a.ini", "b.ini"}, code: 2, noStdout: true, usageOnErr: true, stderr: []string{"expected one config file"}},
		// -v takes no value: it must not swallow the config file name.
		{args: []string{"-v", "missing.ini"}, code: 1, noStdout: true, stderr: []string{"cannot load config file missing.ini"}},
		{args: []string{"-vv", "missing.ini"}, code: 1, noStdout: true, stderr: []string{"cannot load config file missing.ini"}},
		// Options after the config file, as PgBouncer's getopt allows.
		{args: []string{"missing.ini", "-q"}, code: 1, noStdout: true, stderr: []string{"cannot load config file missing.ini"}},
		{args: []string{"missing.ini", "-V"}, stdout: []string{"pgwarden 0."}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runBinary(t, dir, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if tc.noStdout && stdout != "" {
				t.Errorf("unexpected stdout:\n%s", stdout)
			}
			if tc.usageOnErr && !strings.Contains(stderr, "Usage:") {
				t.Errorf("stderr lacks the usage:\n%s", stderr)
			}
			if tc.code == 0 && stderr != "" {
				t.Errorf("unexpected stderr:\n%s", stderr)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args []string
		want options
	}{
		{[]string{"c.ini"}, options{args: []string{"c.ini"}}},
		{[]string{"-d", "-q", "c.ini"}, options{daemon: true, quiet: true, args: []string{"c.ini"}}},
		{[]string{"-dqvv", "c.ini"}, options{daemon: true, quiet: true, verbose: 2, args: []string{"c.ini"}}},
		{[]string{"c.ini", "-v", "--verbose"}, options{verbose: 2, args: []string{"c.ini"}}},
		{[]string{"--daemon", "--quiet", "c.ini"}, options{daemon: true, quiet: true, args: []string{"c.ini"}}},
		{[]string{"--", "-c.ini"}, options{args: []string{"-c.ini"}}},
	}
	for _, tc := range tests {
		got, err := parseFlags(tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("%q: got %+v, want %+v", tc.args, *got, tc.want)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist)
	good := fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_type = scram-sha-256
auth_file = userlist.txt
pool_mode = transaction
`, pg.Port)
	writeFile(t, filepath.Join(dir, "good.ini"), good)
	// Lines 7, 8 and 11 are wrong.
	writeFile(t, filepath.Join(dir, "bad.ini"), `[databases]
app = host=127.0.0.1 port=5432 dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
auth_file = userlist.txt
bogus_key = 1
so_reuseport = on
pool_mode = transaction

[wrong]
x = 1
`)
	writeFile(t, filepath.Join(dir, "good.yaml"), `listen:
  addresses: ["127.0.0.1"]
  port: 6432
auth:
  type: scram-sha-256
  file: userlist.txt
pool:
  mode: transaction
databases:
  app:
    host: 127.0.0.1
    port: 5432
`)
	// Line 4 has a key pooler.yaml does not know.
	writeFile(t, filepath.Join(dir, "bad.yaml"), `listen:
  addresses: ["127.0.0.1"]
  port: 6432
  bogus: 1
auth:
  type: scram-sha-256
  file: userlist.txt
`)

	t.Run("good.ini", func(t *testing.T) {
		stdout, stderr, code := runBinary(t, dir, "check-config", "good.ini")
		if code != 0 || strings.TrimSpace(stdout) != "good.ini: OK" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 0 and \"good.ini: OK\"", code, stdout, stderr)
		}
	})
	t.Run("good.yaml", func(t *testing.T) {
		stdout, stderr, code := runBinary(t, dir, "check-config", "good.yaml")
		if code != 0 || !strings.Contains(stdout, "good.yaml: OK") {
			t.Errorf("exit %d, stdout %q, stderr %q; want 0 and OK", code, stdout, stderr)
		}
	})
	t.Run("bad.ini", func(t *testing.T) {
		stdout, stderr, code := runBinary(t, dir, "check-config", "bad.ini")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		want := []string{
			"bad.ini:7: unknown parameter: pgbouncer/bogus_key",
			`bad.ini:8: so_reuseport: invalid value "on"`,
			`bad.ini:11: invalid section "wrong"`,
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != len(want) {
			t.Errorf("got %d lines, want %d:\n%s", len(lines), len(want), stdout)
		}
		for _, w := range want {
			if !strings.Contains(stdout, w) {
				t.Errorf("output lacks %q:\n%s", w, stdout)
			}
		}
		if strings.Contains(stdout, "OK") {
			t.Errorf("output says OK:\n%s", stdout)
		}
		if stderr != "" {
			t.Errorf("unexpected stderr: %s", stderr)
		}
	})
	t.Run("bad.yaml", func(t *testing.T) {
		stdout, _, code := runBinary(t, dir, "check-config", "bad.yaml")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if !strings.Contains(stdout, "bad.yaml:4: listen.bogus: unknown key") {
			t.Errorf("output lacks the unknown key with its line:\n%s", stdout)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		stdout, _, code := runBinary(t, dir, "check-config", "nope.ini")
		if code != 1 || !strings.Contains(stdout, "nope.ini: could not load file") {
			t.Errorf("exit %d, stdout %q", code, stdout)
		}
	})
	t.Run("no argument", func(t *testing.T) {
		_, stderr, code := runBinary(t, dir, "check-config")
		if code != 2 || !strings.Contains(stderr, "usage: pgwarden check-config CONFIG") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	// Starting with a bad file fails the same way, before listening.
	t.Run("start with bad.ini", func(t *testing.T) {
		_, stderr, code := runBinary(t, dir, "bad.ini")
		if code != 1 || !strings.Contains(stderr, "bad.ini:7: unknown parameter") || !strings.Contains(stderr, "bad.ini:11:") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}
