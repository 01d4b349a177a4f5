package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// auditLines reads the JSON sign-in lines of an audit file.
func auditLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: not a JSON line: %q (%v)", path, sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// waitAudit waits until the audit file holds a line for which match is
// true and returns it.
func waitAudit(t *testing.T, path string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range auditLines(t, path) {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(path)
			t.Fatalf("no matching line in %s:\n%s", path, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditLogFile: with [audit] log_file (or audit.log_file in
// pooler.yaml) the sign-in lines go to that file only, as JSON with the
// documented fields; the file is reopened on SIGHUP (logrotate); the
// PgBouncer-style log lines (log_connections, log_disconnections,
// log_pooler_errors) still go to the logfile.
func TestAuditLogFile(t *testing.T) {
	for _, format := range []string{"ini", "yaml"} {
		t.Run(format, func(t *testing.T) {
			p := &pgw{format: format, dir: t.TempDir(), port: freePort(t), poolSize: 20}
			p.path = filepath.Join(p.dir, map[string]string{"ini": "pgbouncer.ini", "yaml": "pooler.yaml"}[format])
			writeFile(t, filepath.Join(p.dir, "userlist.txt"), userlist)
			p.writeConfig(t)
			logFile := filepath.Join(p.dir, "pgwarden.log")
			auditFile := filepath.Join(p.dir, "audit.json")
			b, _ := os.ReadFile(p.path)
			if format == "ini" {
				writeFile(t, p.path, string(b)+"logfile = "+logFile+"\nlog_connections = 1\nlog_disconnections = 1\nlog_pooler_errors = 1\n\n[audit]\nlog_file = "+auditFile+"\n")
			} else {
				writeFile(t, p.path, string(b)+"log:\n  file: "+logFile+"\n  connections: true\n  disconnections: true\n  pooler_errors: true\naudit:\n  log_file: "+auditFile+"\n")
			}
			p.proc = startPgwarden(t, p.dir, p.path)
			waitReady(t, p.proc, p.port)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if c, err := connect(ctx, dsn(p.port, appUser, "wrong", "app")); err == nil {
				c.Close(ctx)
				t.Fatal("wrong password signed in")
			}
			conn, err := connect(ctx, dsn(p.port, appUser, alicePassword, "app"))
			if err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)

			refused := waitAudit(t, auditFile, func(m map[string]any) bool { return m["result"] == "refused" })
			for k, want := range map[string]any{"msg": "sign-in", "level": "INFO", "event": "signin", "database": "app", "role": appUser,
				"method": "scram", "tls": false, "reason": "wrong_password"} {
				if refused[k] != want {
					t.Errorf("refused line: %s = %v, want %v (%v)", k, refused[k], want, refused)
				}
			}
			for _, k := range []string{"time", "client", "latency_ms"} {
				if _, ok := refused[k]; !ok {
					t.Errorf("refused line lacks %s: %v", k, refused)
				}
			}
			ok := waitAudit(t, auditFile, func(m map[string]any) bool { return m["result"] == "ok" })
			if _, has := ok["reason"]; has || ok["role"] != appUser {
				t.Errorf("ok line %v", ok)
			}

			// logrotate: move the file away, SIGHUP, the next sign-in
			// lands in a new file.
			if err := os.Rename(auditFile, auditFile+".1"); err != nil {
				t.Fatal(err)
			}
			p.signal(syscall.SIGHUP)
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := os.Stat(auditFile); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("SIGHUP did not reopen the audit file")
				}
				time.Sleep(20 * time.Millisecond)
			}
			conn, err = connect(ctx, dsn(p.port, appUser, alicePassword, "app"))
			if err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
			waitAudit(t, auditFile, func(m map[string]any) bool { return m["result"] == "ok" && m["role"] == appUser })

			p.signal(syscall.SIGTERM)
			if code := p.wait(15 * time.Second); code != 0 {
				t.Errorf("exit code %d", code)
			}
			log, _ := os.ReadFile(logFile)
			for _, want := range []string{`msg="login attempt" db=app user=alice`, `msg="closing because: client disconnect" db=app user=alice`,
				`msg="pooler error: password authentication failed for user \"alice\""`} {
				if !strings.Contains(string(log), want) {
					t.Errorf("logfile lacks %s:\n%s", want, log)
				}
			}
			// The audit lines are only in the audit file.
			if strings.Contains(string(log), `"event":"signin"`) || strings.Contains(p.stderr.String(), `"event":"signin"`) {
				t.Errorf("audit lines outside the audit file:\n%s\n%s", log, p.stderr.String())
			}
		})
	}
}

// TestAuditDefault: without an audit block the sign-in lines go where the
// log goes (here standard error).
func TestAuditDefault(t *testing.T) {
	p := startPooler(t, "ini")
	p.waitOutput(`"event":"signin"`, 10*time.Second)
	p.signal(syscall.SIGTERM)
	p.wait(15 * time.Second)
}
