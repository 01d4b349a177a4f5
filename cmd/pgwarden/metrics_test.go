package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMetricsEndpoint: [metrics] listen serves Prometheus text with
// PgBouncer's pool metrics and pgwarden's sign-in counters, and the probes.
func TestMetricsEndpoint(t *testing.T) {
	dir := t.TempDir()
	port, mport := freePort(t), freePort(t)
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist)
	ini := filepath.Join(dir, "pgbouncer.ini")
	writeFile(t, ini, fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
server_tls_sslmode = disable
[metrics]
listen = 127.0.0.1:%d
stats_names = totals
client_connections = 0
`, pg.Port, port, dir, filepath.Join(dir, "userlist.txt"), mport))
	p := startPgwarden(t, dir, ini)
	waitReady(t, p, port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := connect(ctx, dsn(port, appUser, alicePassword, "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if c, err := connect(ctx, dsn(port, appUser, "wrong", "app")); err == nil {
		c.Close(context.Background())
		t.Fatal("wrong password signed in")
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", mport, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"pgbouncer_up 1",
		`pgbouncer_pools_client_active_connections{database="app",user="alice"} 1`,
		`pgbouncer_stats_totals_sql_transactions_pooled_total{database="app"}`,
		`pgwarden_signin_attempts_total{method="scram",principal_type="",reason="",result="success"}`,
		`pgwarden_signin_attempts_total{method="scram",principal_type="",reason="wrong_password",result="failure"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// stats_names = totals and client_connections = 0.
	for _, absent := range []string{"pgbouncer_stats_sql_transactions_pooled_total", "pgbouncer_client_connections"} {
		if strings.Contains(body, absent) {
			t.Errorf("/metrics has %s", absent)
		}
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d", code)
	}
}
