package main

import (
	"encoding/json"
	"io"
	"log/syslog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// TestAuditSyslog: with audit.syslog the audit lines go to syslog (here a
// datagram socket standing in for /dev/log) as JSON without time and
// level, with syslog_ident and syslog_facility, and not to the log.
func TestAuditSyslog(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	old := openSyslog
	openSyslog = func(p syslog.Priority, tag string) (*syslog.Writer, error) {
		return syslog.Dial("unixgram", sock, p, tag)
	}
	defer func() { openSyslog = old }()

	cfg := &config.Config{SyslogIdent: "pgw-test", SyslogFacility: "local3", Audit: config.Audit{Syslog: true}}
	var stderr strings.Builder
	l, err := newLogging(cfg, &options{}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.audit.Info("sign-in", "event", "signin", "result", "ok", "role", "alice")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	// <PRI> = facility local3 (19) * 8 + info (6) = 158.
	if !strings.HasPrefix(msg, "<158>") || !strings.Contains(msg, "pgw-test[") {
		t.Fatalf("syslog message %q", msg)
	}
	obj := msg[strings.Index(msg, "{"):]
	var m map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(obj)), &m); err != nil {
		t.Fatalf("not JSON: %q", obj)
	}
	if m["event"] != "signin" || m["role"] != "alice" || m["msg"] != "sign-in" {
		t.Errorf("line %v", m)
	}
	if _, ok := m["time"]; ok {
		t.Errorf("time sent to syslog: %v", m)
	}
	if strings.Contains(stderr.String(), "signin") {
		t.Errorf("audit line on standard error with audit.syslog set: %q", stderr.String())
	}
}
