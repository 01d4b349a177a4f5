package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestSignIn(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SignIn("entra", ResultSuccess, "", "user", 20*time.Millisecond)
	m.SignIn("entra", "failure", "expired", "user", 3*time.Millisecond)
	m.SignIn("entra", "failure", "expired", "user", 4*time.Millisecond)

	if got := testutil.ToFloat64(m.signInAttempts.WithLabelValues("entra", "failure", "expired", "user")); got != 2 {
		t.Errorf("failed attempts = %v, want 2", got)
	}
	if got := testutil.CollectAndCount(m.signInAttempts); got != 2 {
		t.Errorf("attempt series = %d, want 2", got)
	}
	if got := testutil.CollectAndCount(m.signInDuration); got != 2 {
		t.Errorf("duration series = %d, want 2", got)
	}
}

func TestCountersAndGauges(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.TokenCacheHit()
	m.TokenCacheHit()
	m.TokenCacheMiss()
	m.JWKSKeys(3)
	m.GraphLookup(ResultSuccess)
	m.BackendTokenRefresh("entra", ResultSuccess)
	m.BackendTokenExpiry("entra", time.Unix(1700000000, 500_000_000))
	m.SessionsRevoked(2)
	m.SessionsRevoked(-1)
	m.ClientError("08P01")
	m.ClientError("08P01")
	m.ClientError("28000")

	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"cache hits", m.tokenCacheHits, 2},
		{"cache misses", m.tokenCacheMisses, 1},
		{"jwks keys", m.jwksKeys, 3},
		{"graph", m.graphLookups.WithLabelValues(ResultSuccess), 1},
		{"backend refresh", m.backendTokenRefresh.WithLabelValues("entra", ResultSuccess), 1},
		{"backend expiry", m.backendTokenExpiry.WithLabelValues("entra"), 1700000000.5},
		{"revoked", m.revokedSessions, 2},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}

	want := `
# HELP pgwarden_client_errors_total ErrorResponse messages sent to clients, by SQLSTATE code.
# TYPE pgwarden_client_errors_total counter
pgwarden_client_errors_total{code="08P01"} 2
pgwarden_client_errors_total{code="28000"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgwarden_client_errors_total"); err != nil {
		t.Error(err)
	}
}

func TestJWKSAge(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Unix(1000, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, clock)

	age := func() string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "pgwarden_jwks_last_success_age_seconds" {
				return strings.TrimSpace(mf.GetMetric()[0].GetGauge().String())
			}
		}
		t.Fatal("age gauge not gathered")
		return ""
	}

	now.Add(int64(30 * time.Second)) // no success yet: age counts from New
	if got := age(); got != "value:30" {
		t.Errorf("age before first success = %q, want value:30", got)
	}
	m.JWKSFetch(ResultSuccess)
	now.Add(int64(5 * time.Second))
	m.JWKSFetch("failure") // a failure does not reset the age
	if got := age(); got != "value:5" {
		t.Errorf("age after success = %q, want value:5", got)
	}
	if got := testutil.ToFloat64(m.jwksRefreshes.WithLabelValues("failure")); got != 1 {
		t.Errorf("failed refreshes = %v, want 1", got)
	}
}

func TestNilMetrics(t *testing.T) {
	t.Parallel()
	var m *Metrics
	m.SignIn("entra", ResultSuccess, "", "user", time.Second)
	m.TokenCacheHit()
	m.TokenCacheMiss()
	m.JWKSFetch(ResultSuccess)
	m.JWKSKeys(1)
	m.GraphLookup(ResultSuccess)
	m.BackendTokenRefresh("entra", ResultSuccess)
	m.BackendTokenExpiry("entra", time.Now())
	m.SessionsRevoked(1)
	m.ClientError("08P01")
}

func fakeSnapshot() []PoolStats {
	return []PoolStats{
		{
			Database: "app", User: "alice", PoolMode: "transaction",
			ClActive: 3, ClWaiting: 1, SvActive: 2, SvIdle: 4, SvUsed: 1, SvTested: 0, SvLogin: 1,
			MaxWait:   1500 * time.Millisecond,
			XactCount: 10, QueryCount: 20, BytesReceived: 1000, BytesSent: 2000,
			XactTimeMicros: 2_500_000, QueryTimeMicros: 1_000_000, WaitTimeMicros: 250_000,
			ServerAssignmentCount: 7, ClientParseCount: 1, ServerParseCount: 2, BindCount: 3,
		},
		{
			Database: "app", User: "bob",
			XactCount: 5, QueryCount: 5, BytesReceived: 10, BytesSent: 20,
			XactTimeMicros: 500_000, QueryTimeMicros: 500_000, WaitTimeMicros: 0,
			ServerAssignmentCount: 1,
		},
	}
}

// poolGauges is the expected SHOW POOLS exposition for fakeSnapshot.
const poolGauges = `
# HELP pgbouncer_up The pgbouncer scrape succeeded
# TYPE pgbouncer_up gauge
pgbouncer_up 1
# HELP pgbouncer_version_info The pgbouncer version info
# TYPE pgbouncer_version_info gauge
pgbouncer_version_info{version="PgBouncer 1.25.2 (pgwarden 0.1.0)"} 1
# HELP pgbouncer_pools_client_active_connections Client connections linked to server connection and able to process queries, shown as connection
# TYPE pgbouncer_pools_client_active_connections gauge
pgbouncer_pools_client_active_connections{database="app",user="alice"} 3
pgbouncer_pools_client_active_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_client_maxwait_seconds Age of oldest unserved client connection, shown as second
# TYPE pgbouncer_pools_client_maxwait_seconds gauge
pgbouncer_pools_client_maxwait_seconds{database="app",user="alice"} 1.5
pgbouncer_pools_client_maxwait_seconds{database="app",user="bob"} 0
# HELP pgbouncer_pools_client_waiting_connections Client connections waiting on a server connection, shown as connection
# TYPE pgbouncer_pools_client_waiting_connections gauge
pgbouncer_pools_client_waiting_connections{database="app",user="alice"} 1
pgbouncer_pools_client_waiting_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_active_connections Server connections linked to a client connection, shown as connection
# TYPE pgbouncer_pools_server_active_connections gauge
pgbouncer_pools_server_active_connections{database="app",user="alice"} 2
pgbouncer_pools_server_active_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_idle_connections Server connections idle and ready for a client query, shown as connection
# TYPE pgbouncer_pools_server_idle_connections gauge
pgbouncer_pools_server_idle_connections{database="app",user="alice"} 4
pgbouncer_pools_server_idle_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_login_connections Server connections currently in the process of logging in, shown as connection
# TYPE pgbouncer_pools_server_login_connections gauge
pgbouncer_pools_server_login_connections{database="app",user="alice"} 1
pgbouncer_pools_server_login_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_testing_connections Server connections currently running either server_reset_query or server_check_query, shown as connection
# TYPE pgbouncer_pools_server_testing_connections gauge
pgbouncer_pools_server_testing_connections{database="app",user="alice"} 0
pgbouncer_pools_server_testing_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_used_connections Server connections idle more than server_check_delay, needing server_check_query, shown as connection
# TYPE pgbouncer_pools_server_used_connections gauge
pgbouncer_pools_server_used_connections{database="app",user="alice"} 1
pgbouncer_pools_server_used_connections{database="app",user="bob"} 0
`

// statsBody is the expected stats exposition for fakeSnapshot with the
// prefix left as PREFIX; "app" sums alice's and bob's pools.
const statsBody = `
# HELP PREFIX_binds_total Total number of prepared statements readied for execution by clients and forwarded to PostgreSQL
# TYPE PREFIX_binds_total counter
PREFIX_binds_total{database="app"} 3
# HELP PREFIX_client_parses_total Total number of prepared statements created by clients
# TYPE PREFIX_client_parses_total counter
PREFIX_client_parses_total{database="app"} 1
# HELP PREFIX_client_wait_seconds_total Time spent by clients waiting for a server in seconds
# TYPE PREFIX_client_wait_seconds_total counter
PREFIX_client_wait_seconds_total{database="app"} 0.25
# HELP PREFIX_queries_duration_seconds_total Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries
# TYPE PREFIX_queries_duration_seconds_total counter
PREFIX_queries_duration_seconds_total{database="app"} 1.5
# HELP PREFIX_queries_pooled_total Total number of SQL queries pooled
# TYPE PREFIX_queries_pooled_total counter
PREFIX_queries_pooled_total{database="app"} 25
# HELP PREFIX_received_bytes_total Total volume in bytes of network traffic received by pgbouncer
# TYPE PREFIX_received_bytes_total counter
PREFIX_received_bytes_total{database="app"} 1010
# HELP PREFIX_sent_bytes_total Total volume in bytes of network traffic sent by pgbouncer
# TYPE PREFIX_sent_bytes_total counter
PREFIX_sent_bytes_total{database="app"} 2020
# HELP PREFIX_server_assignments_total Total number of times a server was assigned to a client
# TYPE PREFIX_server_assignments_total counter
PREFIX_server_assignments_total{database="app"} 8
# HELP PREFIX_server_in_transaction_seconds_total Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries
# TYPE PREFIX_server_in_transaction_seconds_total counter
PREFIX_server_in_transaction_seconds_total{database="app"} 3
# HELP PREFIX_server_parses_total Total number of prepared statements created on a server
# TYPE PREFIX_server_parses_total counter
PREFIX_server_parses_total{database="app"} 2
# HELP PREFIX_sql_transactions_pooled_total Total number of SQL transactions pooled
# TYPE PREFIX_sql_transactions_pooled_total counter
PREFIX_sql_transactions_pooled_total{database="app"} 15
`

func stats(prefix string) string { return strings.ReplaceAll(statsBody, "PREFIX", prefix) }

const testVersion = "PgBouncer 1.25.2 (pgwarden 0.1.0)"

func TestPoolCollectorExposition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []PoolOption
		want string
	}{
		{"both", nil, poolGauges + stats("pgbouncer_stats_totals") + stats("pgbouncer_stats")},
		{"totals only", []PoolOption{WithoutLegacyStats()}, poolGauges + stats("pgbouncer_stats_totals")},
		{"legacy only", []PoolOption{WithoutStatsTotals()}, poolGauges + stats("pgbouncer_stats")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := NewPoolCollector(fakeSnapshot, testVersion, tc.opts...)
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestPoolCollectorEmptySnapshot(t *testing.T) {
	t.Parallel()
	c := NewPoolCollector(func() []PoolStats { return nil }, testVersion)
	if got := testutil.CollectAndCount(c); got != 2 {
		t.Errorf("metrics from empty snapshot = %d, want 2 (up and version_info)", got)
	}
}

func TestLint(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg)
	// Touch every vector so that each family has a sample to lint.
	m.SignIn("entra", ResultSuccess, "", "user", time.Millisecond)
	m.JWKSFetch(ResultSuccess)
	m.GraphLookup(ResultSuccess)
	m.BackendTokenRefresh("entra", ResultSuccess)
	m.BackendTokenExpiry("entra", time.Now())
	m.ClientError("08P01")
	reg.MustRegister(NewPoolCollector(fakeSnapshot, testVersion))

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if len(mfs) < 40 {
		t.Errorf("gathered %d families, want at least 40", len(mfs))
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	New(reg).ClientError("08P01")
	var ready atomic.Bool
	srv := httptest.NewServer(Handler(reg, ready.Load))
	defer srv.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}

	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready = %d, want 503", code)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready = %d, want 200", code)
	}
	code, body := get("/metrics")
	if code != http.StatusOK || !strings.Contains(body, `pgwarden_client_errors_total{code="08P01"} 1`) {
		t.Errorf("/metrics = %d, body missing client error counter:\n%s", code, body)
	}
	if code, _ := get("/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}
}

func TestHandlerNilReady(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	Handler(prometheus.NewRegistry(), nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/readyz with nil ready = %d, want 200", rec.Code)
	}
}
