package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSignInThrottleMetrics: the binary, configured from pooler.yaml with
// a per-address budget of two failures, refuses the third and later
// sign-ins from that address with 53300, and /metrics, the console and
// the audit log show it.
func TestSignInThrottleMetrics(t *testing.T) {
	dir := t.TempDir()
	port, mport := freePort(t), freePort(t)
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist)
	cfg := filepath.Join(dir, "pooler.yaml")
	writeFile(t, cfg, fmt.Sprintf(`listen: {addresses: [127.0.0.1], port: %d, unix_socket_dir: %q}
auth: {type: scram-sha-256, file: userlist.txt}
admin_users: [admin]
pool: {mode: transaction}
tls: {server: {sslmode: disable}}
signin_throttle:
  address_burst: 2
  address_refill: 1h
metrics: {listen: "127.0.0.1:%d"}
databases:
  app: {host: 127.0.0.1, port: %d}
`, port, dir, mport, pg.Port))
	p := startPgwarden(t, dir, cfg)
	waitReady(t, p, port)

	from := func(local, password string) error {
		c, err := pgx.ParseConfig(dsn(port, appUser, password, "app"))
		if err != nil {
			t.Fatal(err)
		}
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c.DialFunc = d.DialContext
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, c)
		if err == nil {
			conn.Close(context.Background())
		}
		return err
	}
	code := func(err error) string {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return pe.Code
		}
		return fmt.Sprint(err)
	}
	before, _ := scrape(t, mport)
	for range 2 {
		if err := from("127.0.0.2", "wrong"); code(err) != "28P01" {
			t.Fatalf("wrong password: %v", err)
		}
	}
	for _, pw := range []string{"wrong", alicePassword, alicePassword} {
		if err := from("127.0.0.2", pw); code(err) != "53300" {
			t.Fatalf("after two failures: %v", err)
		}
	}
	if err := from("127.0.0.3", alicePassword); err != nil {
		t.Fatalf("another address: %v", err)
	}

	after, body := scrape(t, mport)
	got := deltas(before, after)
	for series, want := range map[string]float64{
		`pgwarden_signin_throttled_total{action="refused",scope="address"}`:                                         3,
		`pgwarden_signin_attempts_total{method="scram",principal_type="",reason="throttled",result="failure"}`:      3,
		`pgwarden_signin_attempts_total{method="scram",principal_type="",reason="wrong_password",result="failure"}`: 2,
		`pgwarden_client_errors_total{code="signin_throttled",sqlstate="53300"}`:                                    3,
	} {
		if got[series] != want {
			t.Errorf("%s moved by %v, want %v", series, got[series], want)
		}
	}
	for series, want := range map[string]float64{
		`pgwarden_signin_throttled_keys{scope="address"}`: 1,
		`pgwarden_signin_throttled_keys{scope="role"}`:    0,
	} {
		if v, ok := after[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	lintExposition(t, body)

	rows, err := psql(t, dsn(port, adminUser, adminPassword, "pgbouncer"), "SHOW THROTTLE")
	if err != nil || !strings.HasPrefix(rows, "address|127.0.0.2|2|0.00|2|0|") {
		t.Errorf("SHOW THROTTLE: %v: %s", err, rows)
	}
	out := p.output()
	if n := strings.Count(out, `"reason":"throttled"`); n != 3 || !strings.Contains(out, `"throttle":"address"`) || !strings.Contains(out, `"retry_after_s":`) {
		t.Errorf("%d throttled audit lines in:\n%s", n, out)
	}
}
