package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// scrape fetches http://127.0.0.1:mport/metrics and returns its body and
// every sample keyed by its series as printed (name{label="value",...};
// client_golang prints labels sorted by name).
func scrape(t *testing.T, mport int) (map[string]float64, string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d, %v", resp.StatusCode, err)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples, string(b)
}

// lintExposition runs promlint over a whole /metrics body.
func lintExposition(t *testing.T, body string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// deltas returns after − before for every series of after whose value
// changed (a series new in after counts from 0).
func deltas(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// metricsPooler is a pgwarden with client TLS, Entra sign-in against the
// identity provider at authority (alice is aliceOID; sessions end when a
// principal is removed), password sign-in from the auth_file, databases app
// and nodb (whose server-side database does not exist), a console for
// admin, and [metrics] listen.
type metricsPooler struct {
	proc        *proc
	dir, ini    string
	port, mport int
	authority   string
}

const metricsIni = `[databases]
app = host=127.0.0.1 port=%[1]d dbname=app
nodb = host=127.0.0.1 port=%[1]d dbname=no_such_database

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[2]d
unix_socket_dir = %[3]s
auth_type = scram-sha-256
auth_file = %[3]s/userlist.txt
pool_mode = transaction
admin_users = admin
max_client_conn = 77
max_user_connections = 9
ignore_startup_parameters = extra_float_digits
server_tls_sslmode = disable
client_tls_sslmode = allow
client_tls_cert_file = %[4]s
client_tls_key_file = %[5]s

[entra]
authority = %[6]s
graph_endpoint = %[6]s
tenants = %[7]s
disconnect_on_revoke = 1

[entra_principals]
%[8]s

[metrics]
listen = 127.0.0.1:%[9]d
`

func startMetricsPooler(t *testing.T, authority string) *metricsPooler {
	t.Helper()
	p := &metricsPooler{dir: t.TempDir(), port: freePort(t), mport: freePort(t), authority: authority}
	p.ini = filepath.Join(p.dir, "pgbouncer.ini")
	writeFile(t, filepath.Join(p.dir, "userlist.txt"), userlist)
	p.writeConfig(t, "alice = oid="+aliceOID+" type=user")
	p.proc = startPgwarden(t, p.dir, p.ini)
	p.proc.waitOutput("metrics listening", 30*time.Second)
	return p
}

func (p *metricsPooler) writeConfig(t *testing.T, principals string) {
	t.Helper()
	cert, key := filepath.Join(p.dir, "cert.pem"), filepath.Join(p.dir, "key.pem")
	if _, err := os.Stat(cert); err != nil {
		if cert, key, err = writeSelfSignedCert(p.dir); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, p.ini, fmt.Sprintf(metricsIni, pg.Port, p.port, p.dir, cert, key, p.authority, devTenant, principals, p.mport))
}

// tlsDSN is a connection string over TLS (not verified: self-signed).
func (p *metricsPooler) tlsDSN(user, password, db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=require connect_timeout=5", p.port, user, password, db)
}

// session signs in with password over TLS and runs each statement.
func (p *metricsPooler) session(t *testing.T, user, password, db string, stmts ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := connect(ctx, p.tlsDSN(user, password, db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return nil
}

// TestMetricsTraffic drives sign-ins (password and Entra ID, good and bad),
// transactions, a server login failure and a revocation through the real
// binary, and checks that /metrics moves by exactly what happened, agrees
// with its own PgBouncer totals, and passes promlint as a whole.
func TestMetricsTraffic(t *testing.T) {
	_, url := startDevIdP(t)
	p := startMetricsPooler(t, url)
	// At start the validator fetched its two key sets (the v1.0 and v2.0
	// issuers), each with dev-idp's one key: SHOW JWKS has a row per key.
	start, _ := scrape(t, p.mport)
	if n := start[`pgwarden_jwks_refreshes_total{result="success"}`]; n != 2 {
		t.Errorf("successful JWKS refreshes at start: %v, want 2", n)
	}
	rows, err := psql(t, p.tlsDSN(adminUser, adminPassword, "pgbouncer"), "SHOW JWKS")
	if err != nil {
		t.Fatalf("SHOW JWKS: %v: %s", err, rows)
	}
	if n := start["pgwarden_jwks_keys"]; n != 2 || n != float64(len(strings.Split(rows, "\n"))) {
		t.Errorf("pgwarden_jwks_keys = %v; SHOW JWKS:\n%s", n, rows)
	}
	if age := start["pgwarden_jwks_last_success_age_seconds"]; age < 0 || age > 30 {
		t.Errorf("pgwarden_jwks_last_success_age_seconds = %v", age)
	}
	before, _ := scrape(t, p.mport)

	// Password (sent in clear text inside TLS, as Entra ID mode both asks
	// every client): 5 one-statement transactions and one of three statements.
	if err := p.session(t, appUser, alicePassword, "app", "SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4", "SELECT 5",
		"BEGIN", "SELECT 6", "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := p.session(t, appUser, "wrong", "app"); err == nil {
		t.Fatal("wrong password signed in")
	}
	// Entra ID: the same token twice (the second is a token cache hit),
	// one statement each; then an expired token.
	tok := devToken(t, url, "-oid", aliceOID, "-upn", "alice@example.com")
	for range 2 {
		if err := p.session(t, appUser, tok, "app", "SELECT 7"); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.session(t, appUser, devToken(t, url, "-oid", aliceOID, "-fault", "expired"), "app"); err == nil {
		t.Fatal("expired token signed in")
	}
	// A database whose server side does not exist: the server refuses the
	// login (3D000) and the client gets PostgreSQL's error.
	if err := p.session(t, appUser, alicePassword, "nodb"); err == nil || !strings.Contains(err.Error(), "no_such_database") {
		t.Fatalf("sign-in to nodb: %v", err)
	}

	after, body := scrape(t, p.mport)
	got := deltas(before, after)
	want := map[string]float64{
		`pgwarden_signin_attempts_total{method="plain",principal_type="",reason="",result="success"}`:               2,
		`pgwarden_signin_attempts_total{method="entra",principal_type="",reason="wrong_password",result="failure"}`: 1,
		`pgwarden_signin_attempts_total{method="entra",principal_type="user",reason="",result="success"}`:           2,
		`pgwarden_signin_attempts_total{method="entra",principal_type="",reason="expired",result="failure"}`:        1,
		// The wrong password and the expired token.
		`pgwarden_client_errors_total{code="auth_failed",sqlstate="28P01"}`:                        2,
		`pgwarden_client_errors_total{code="server_login_failed",sqlstate="3D000"}`:                1,
		`pgwarden_token_cache_hits_total`:                                                          1,
		`pgwarden_token_cache_misses_total`:                                                        2,
		`pgwarden_server_login_failures_total{database="nodb",reason="server_error",user="alice"}`: 1,
		// 8 transactions (5 + 1 + 2), 10 queries (5 + 3 + 2), 8 server
		// assignments: histograms and PgBouncer's totals alike.
		`pgwarden_transaction_duration_seconds_count{database="app",user="alice"}`:            8,
		`pgwarden_query_duration_seconds_count{database="app",user="alice"}`:                  10,
		`pgwarden_client_wait_seconds_count{database="app",user="alice"}`:                     8,
		`pgbouncer_stats_totals_sql_transactions_pooled_total{database="app"}`:                8,
		`pgbouncer_stats_totals_queries_pooled_total{database="app"}`:                         10,
		`pgbouncer_stats_totals_server_assignments_total{database="app"}`:                     8,
		`pgbouncer_stats_sql_transactions_pooled_total{database="app"}`:                       8,
		`pgbouncer_stats_queries_pooled_total{database="app"}`:                                10,
		`pgbouncer_stats_server_assignments_total{database="app"}`:                            8,
		`pgwarden_signin_duration_seconds_count{method="plain",result="success"}`:             2,
		`pgwarden_signin_duration_seconds_count{method="entra",result="success"}`:             2,
		`pgwarden_signin_duration_seconds_count{method="entra",result="failure"}`:             2,
		`pgwarden_transaction_duration_seconds_bucket{database="app",user="alice",le="+Inf"}`: 8,
		`pgwarden_query_duration_seconds_bucket{database="app",user="alice",le="+Inf"}`:       10,
		`pgwarden_client_wait_seconds_bucket{database="app",user="alice",le="+Inf"}`:          8,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s moved by %v, want %v", k, got[k], v)
		}
	}
	// Nothing else counted: every counter that moved is expected (sums,
	// byte and time totals, buckets and gauges aside).
	var unexpected []string
	for k := range got {
		name := k
		if i := strings.IndexByte(k, '{'); i >= 0 {
			name = k[:i]
		}
		switch {
		case want[k] != 0,
			// The Go runtime's and the process's own series move with
			// any work.
			strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"),
			strings.HasSuffix(name, "_sum"), strings.HasSuffix(name, "_bucket"),
			strings.Contains(name, "bytes"), strings.Contains(name, "seconds_total"),
			!strings.HasSuffix(name, "_total") && !strings.HasSuffix(name, "_count"):
			continue
		}
		unexpected = append(unexpected, fmt.Sprintf("%s +%v", k, got[k]))
	}
	sort.Strings(unexpected)
	for _, u := range unexpected {
		t.Errorf("unexpected movement: %s", u)
	}
	// The histograms' sums agree with PgBouncer's time totals (both are
	// the same durations; the totals are rounded down to µs each).
	for _, pair := range [][2]string{
		{`pgwarden_query_duration_seconds_sum{database="app",user="alice"}`, `pgbouncer_stats_totals_queries_duration_seconds_total{database="app"}`},
		{`pgwarden_transaction_duration_seconds_sum{database="app",user="alice"}`, `pgbouncer_stats_totals_server_in_transaction_seconds_total{database="app"}`},
		{`pgwarden_client_wait_seconds_sum{database="app",user="alice"}`, `pgbouncer_stats_totals_client_wait_seconds_total{database="app"}`},
	} {
		h, tot := got[pair[0]], got[pair[1]]
		if h < tot || h-tot > 20e-6 {
			t.Errorf("%s moved by %v, %s by %v", pair[0], h, pair[1], tot)
		}
	}
	for _, s := range []string{
		`pgbouncer_config_max_client_connections 77`,
		`pgbouncer_config_max_user_connections 9`,
		`pgbouncer_databases_pool_size{database="no_such_database",force_user="",host="127.0.0.1",name="nodb",pool_mode="",port="` + strconv.Itoa(pg.Port) + `"} 20`,
		`pgbouncer_databases 3`,
		// One per SHOW POOLS row (app/alice and nodb/alice, and the
		// console's own where the console lists it).
		fmt.Sprintf("pgbouncer_pools %d", strings.Count(body, "\npgbouncer_pools_client_active_connections{")),
		`pgbouncer_up 1`,
	} {
		if !strings.Contains(body, s+"\n") {
			t.Errorf("/metrics lacks %s", s)
		}
	}
	if n := strings.Count(body, "\npgbouncer_pools_client_active_connections{"); n < 2 {
		t.Errorf("%d pools on /metrics, want app/alice and nodb/alice at least", n)
	}
	lintExposition(t, body)

	// Revocation: alice's principal is removed while her Entra session is
	// open; the reload ends the session and counts it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := connect(ctx, p.tlsDSN(appUser, tok, "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	p.writeConfig(t, "")
	p.proc.signal(syscall.SIGHUP)
	for {
		now, _ := scrape(t, p.mport)
		if n := now["pgwarden_revoked_sessions_total"]; n == 1 {
			break
		} else if n > 1 || ctx.Err() != nil {
			t.Fatalf("pgwarden_revoked_sessions_total = %v, want 1", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the revoked session still runs queries")
	}
}
