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
	m.ClientError("protocol_violation", "08P01")
	m.ClientError("protocol_violation", "08P01")
	m.ClientError("auth_failed", "28P01")
	keys := func() string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "pgwarden_jwks_keys" {
				return strings.TrimSpace(mf.GetMetric()[0].GetGauge().String())
			}
		}
		return ""
	}
	if got := keys(); got != "value:3" {
		t.Errorf("jwks keys %q, want value:3", got)
	}
	n := 5
	m.JWKSKeysFrom(func() int { return n })
	n = 7
	if got := keys(); got != "value:7" {
		t.Errorf("jwks keys from the live source %q, want value:7", got)
	}

	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"cache hits", m.tokenCacheHits, 2},
		{"cache misses", m.tokenCacheMisses, 1},
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
# HELP pgwarden_client_errors_total ErrorResponse messages pgwarden itself sent to clients, by pgwarden error code and SQLSTATE.
# TYPE pgwarden_client_errors_total counter
pgwarden_client_errors_total{code="auth_failed",sqlstate="28P01"} 1
pgwarden_client_errors_total{code="protocol_violation",sqlstate="08P01"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgwarden_client_errors_total"); err != nil {
		t.Error(err)
	}
}

// TestSignInThrottle: the throttle's counter by scope and action, and the
// gauge of spent budgets read from the live source at scrape time (0
// before one is set).
func TestSignInThrottle(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SignInThrottled(ThrottleScopeAddress, ThrottleRefused)
	m.SignInThrottled(ThrottleScopeAddress, ThrottleRefused)
	m.SignInThrottled(ThrottleScopeRole, ThrottleDelayed)
	want := `
# HELP pgwarden_signin_throttled_keys Client addresses or role names whose failed sign-in budget is spent now, by scope.
# TYPE pgwarden_signin_throttled_keys gauge
pgwarden_signin_throttled_keys{scope="address"} 0
pgwarden_signin_throttled_keys{scope="role"} 0
# HELP pgwarden_signin_throttled_total Sign-ins the sign-in throttle held (delayed) or refused, by the budget that did it (address or role).
# TYPE pgwarden_signin_throttled_total counter
pgwarden_signin_throttled_total{action="delayed",scope="role"} 1
pgwarden_signin_throttled_total{action="refused",scope="address"} 2
`
	names := []string{"pgwarden_signin_throttled_keys", "pgwarden_signin_throttled_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	live := map[string]int{ThrottleScopeAddress: 3, ThrottleScopeRole: 1}
	m.ThrottledKeysFrom(func(scope string) int { return live[scope] })
	live[ThrottleScopeAddress] = 4
	want = strings.Replace(want, `{scope="address"} 0`, `{scope="address"} 4`, 1)
	want = strings.Replace(want, `{scope="role"} 0`, `{scope="role"} 1`, 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
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
	m.ClientError("protocol_violation", "08P01")
	m.SignInThrottled(ThrottleScopeRole, ThrottleRefused)
	m.ThrottledKeysFrom(func(string) int { return 1 })
	p := m.Pool("app", "alice")
	if p != nil {
		t.Errorf("nil Metrics gave pool metrics %v", p)
	}
	p.ClientWait(time.Second)
	p.Query(time.Second)
	p.Transaction(time.Second)
	p.ServerLoginFailed("connect")
}

func fakeSnapshot() Snapshot {
	return Snapshot{
		Pools: []PoolStats{
			{Database: "app", User: "alice", ClActive: 3, ClWaiting: 1, SvActive: 2, SvIdle: 4, SvUsed: 1, SvLogin: 1, MaxWait: 1500 * time.Millisecond},
			{Database: "app", User: "bob"},
		},
		Databases: []DatabaseStats{
			{Name: "pgbouncer", Port: 6432, Database: "pgbouncer", ForceUser: "pgbouncer", PoolMode: "statement", PoolSize: 2},
			{Name: "app", Host: "db.example", Port: 5432, Database: "appdb", PoolSize: 20, ReservePool: 5, MaxConnections: 50, CurrentConnections: 7, Paused: true},
		},
		Totals: []DatabaseTotals{
			{Database: "app", Totals: Totals{
				XactCount: 15, QueryCount: 25, BytesReceived: 1010, BytesSent: 2020,
				XactTimeMicros: 3_000_000, QueryTimeMicros: 1_500_000, WaitTimeMicros: 250_000,
				ServerAssignmentCount: 8, ClientParseCount: 1, ServerParseCount: 2, BindCount: 3,
			}},
		},
		Lists:  &ListStats{Databases: 2, Users: 3, Pools: 2, UsedClients: 5, LoginClients: 1, UsedServers: 7},
		Config: &ConfigStats{MaxClientConn: 100, MaxUserConnections: 0},
		Clients: []ClientGroup{
			{Database: "app", User: "alice", ApplicationName: "psql", State: "active", Count: 3},
			{Database: "app", User: "alice", ApplicationName: "bad\xff", State: "waiting", Count: 1},
		},
	}
}

// poolGauges is the expected SHOW POOLS exposition for fakeSnapshot, with
// pgbouncer_up and version.
const poolGauges = `
# HELP pgbouncer_up The pgbouncer scrape succeeded
# TYPE pgbouncer_up gauge
pgbouncer_up 1
# HELP pgbouncer_version_info The pgbouncer version info
# TYPE pgbouncer_version_info gauge
pgbouncer_version_info{version="PgBouncer 1.25.2 (pgwarden 0.1.0)"} 1
# HELP pgbouncer_pools_client_active_cancel_connections Client connections that have forwarded query cancellations to the server and are waiting for the server response
# TYPE pgbouncer_pools_client_active_cancel_connections gauge
pgbouncer_pools_client_active_cancel_connections{database="app",user="alice"} 0
pgbouncer_pools_client_active_cancel_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_client_active_connections Client connections linked to server connection and able to process queries, shown as connection
# TYPE pgbouncer_pools_client_active_connections gauge
pgbouncer_pools_client_active_connections{database="app",user="alice"} 3
pgbouncer_pools_client_active_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_client_maxwait_seconds Age of oldest unserved client connection, shown as second
# TYPE pgbouncer_pools_client_maxwait_seconds gauge
pgbouncer_pools_client_maxwait_seconds{database="app",user="alice"} 1.5
pgbouncer_pools_client_maxwait_seconds{database="app",user="bob"} 0
# HELP pgbouncer_pools_client_waiting_cancel_connections Client connections that have not forwarded query cancellations to the server yet
# TYPE pgbouncer_pools_client_waiting_cancel_connections gauge
pgbouncer_pools_client_waiting_cancel_connections{database="app",user="alice"} 0
pgbouncer_pools_client_waiting_cancel_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_client_waiting_connections Client connections waiting on a server connection, shown as connection
# TYPE pgbouncer_pools_client_waiting_connections gauge
pgbouncer_pools_client_waiting_connections{database="app",user="alice"} 1
pgbouncer_pools_client_waiting_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_active_cancel_connections Server connections that are currently forwarding a cancel request.
# TYPE pgbouncer_pools_server_active_cancel_connections gauge
pgbouncer_pools_server_active_cancel_connections{database="app",user="alice"} 0
pgbouncer_pools_server_active_cancel_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_active_connections Server connections linked to a client connection, shown as connection
# TYPE pgbouncer_pools_server_active_connections gauge
pgbouncer_pools_server_active_connections{database="app",user="alice"} 2
pgbouncer_pools_server_active_connections{database="app",user="bob"} 0
# HELP pgbouncer_pools_server_being_canceled_connections Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed that were sent to cancel a query on this server.
# TYPE pgbouncer_pools_server_being_canceled_connections gauge
pgbouncer_pools_server_being_canceled_connections{database="app",user="alice"} 0
pgbouncer_pools_server_being_canceled_connections{database="app",user="bob"} 0
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

// consoleGauges is the expected SHOW DATABASES, LISTS, CONFIG and CLIENTS
// exposition for fakeSnapshot.
const consoleGauges = `
# HELP pgbouncer_client_connections Number of client connections grouped by database, user, application name, and state
# TYPE pgbouncer_client_connections gauge
pgbouncer_client_connections{application_name="<invalid>",database="app",state="waiting",user="alice"} 1
pgbouncer_client_connections{application_name="psql",database="app",state="active",user="alice"} 3
# HELP pgbouncer_config_max_client_connections Config maximum number of client connections
# TYPE pgbouncer_config_max_client_connections gauge
pgbouncer_config_max_client_connections 100
# HELP pgbouncer_config_max_user_connections Config maximum number of server connections per user
# TYPE pgbouncer_config_max_user_connections gauge
pgbouncer_config_max_user_connections 0
# HELP pgbouncer_databases_current_connections Current number of connections for this database
# TYPE pgbouncer_databases_current_connections gauge
pgbouncer_databases_current_connections{database="appdb",force_user="",host="db.example",name="app",pool_mode="",port="5432"} 7
pgbouncer_databases_current_connections{database="pgbouncer",force_user="pgbouncer",host="",name="pgbouncer",pool_mode="statement",port="6432"} 0
# HELP pgbouncer_databases_disabled 1 if this database is currently disabled, else 0
# TYPE pgbouncer_databases_disabled gauge
pgbouncer_databases_disabled{database="appdb",force_user="",host="db.example",name="app",pool_mode="",port="5432"} 0
pgbouncer_databases_disabled{database="pgbouncer",force_user="pgbouncer",host="",name="pgbouncer",pool_mode="statement",port="6432"} 0
# HELP pgbouncer_databases_max_connections Maximum number of allowed connections for this database
# TYPE pgbouncer_databases_max_connections gauge
pgbouncer_databases_max_connections{database="appdb",force_user="",host="db.example",name="app",pool_mode="",port="5432"} 50
pgbouncer_databases_max_connections{database="pgbouncer",force_user="pgbouncer",host="",name="pgbouncer",pool_mode="statement",port="6432"} 0
# HELP pgbouncer_databases_paused 1 if this database is currently paused, else 0
# TYPE pgbouncer_databases_paused gauge
pgbouncer_databases_paused{database="appdb",force_user="",host="db.example",name="app",pool_mode="",port="5432"} 1
pgbouncer_databases_paused{database="pgbouncer",force_user="pgbouncer",host="",name="pgbouncer",pool_mode="statement",port="6432"} 0
# HELP pgbouncer_databases_pool_size Maximum number of server connections
# TYPE pgbouncer_databases_pool_size gauge
pgbouncer_databases_pool_size{database="appdb",force_user="",host="db.example",name="app",pool_mode="",port="5432"} 20
pgbouncer_databases_pool_size{database="pgbouncer",force_user="pgbouncer",host="",name="pgbouncer",pool_mode="statement",port="6432"} 2
# HELP pgbouncer_databases_reserve_pool Maximum number of additional connections for this database
# TYPE pgbouncer_databases_reserve_pool gauge
pgbouncer_databases_reserve_pool{database="appdb",force_user="",host="db.example",name="app",pool_mode="",port="5432"} 5
pgbouncer_databases_reserve_pool{database="pgbouncer",force_user="pgbouncer",host="",name="pgbouncer",pool_mode="statement",port="6432"} 0
# HELP pgbouncer_databases Count of databases
# TYPE pgbouncer_databases gauge
pgbouncer_databases 2
# HELP pgbouncer_users Count of users
# TYPE pgbouncer_users gauge
pgbouncer_users 3
# HELP pgbouncer_pools Count of pools
# TYPE pgbouncer_pools gauge
pgbouncer_pools 2
# HELP pgbouncer_free_clients Count of free clients
# TYPE pgbouncer_free_clients gauge
pgbouncer_free_clients 0
# HELP pgbouncer_used_clients Count of used clients
# TYPE pgbouncer_used_clients gauge
pgbouncer_used_clients 5
# HELP pgbouncer_login_clients Count of clients in login state
# TYPE pgbouncer_login_clients gauge
pgbouncer_login_clients 1
# HELP pgbouncer_free_servers Count of free servers
# TYPE pgbouncer_free_servers gauge
pgbouncer_free_servers 0
# HELP pgbouncer_used_servers Count of used servers
# TYPE pgbouncer_used_servers gauge
pgbouncer_used_servers 7
# HELP pgbouncer_cached_dns_names Count of DNS names in the cache
# TYPE pgbouncer_cached_dns_names gauge
pgbouncer_cached_dns_names 0
# HELP pgbouncer_cached_dns_zones Count of DNS zones in the cache
# TYPE pgbouncer_cached_dns_zones gauge
pgbouncer_cached_dns_zones 0
# HELP pgbouncer_in_flight_dns_queries Count of in-flight DNS queries
# TYPE pgbouncer_in_flight_dns_queries gauge
pgbouncer_in_flight_dns_queries 0
`

// statsBody is the expected stats exposition for fakeSnapshot with the
// prefix left as PREFIX.
const statsBody = `
# HELP PREFIX_binds_total Total number of prepared statements readied for execution with a Bind message
# TYPE PREFIX_binds_total counter
PREFIX_binds_total{database="app"} 3
# HELP PREFIX_client_parses_total Total number of prepared statement Parse messages received from clients
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
# HELP PREFIX_received_bytes_total Total volume in bytes of network traffic received by pgbouncer, shown as bytes
# TYPE PREFIX_received_bytes_total counter
PREFIX_received_bytes_total{database="app"} 1010
# HELP PREFIX_sent_bytes_total Total volume in bytes of network traffic sent by pgbouncer, shown as bytes
# TYPE PREFIX_sent_bytes_total counter
PREFIX_sent_bytes_total{database="app"} 2020
# HELP PREFIX_server_assignments_total Total number of client connections which have been served since process start
# TYPE PREFIX_server_assignments_total counter
PREFIX_server_assignments_total{database="app"} 8
# HELP PREFIX_server_in_transaction_seconds_total Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries
# TYPE PREFIX_server_in_transaction_seconds_total counter
PREFIX_server_in_transaction_seconds_total{database="app"} 3
# HELP PREFIX_server_parses_total Total number of prepared statement Parse messages sent by pgbouncer to PostgreSQL
# TYPE PREFIX_server_parses_total counter
PREFIX_server_parses_total{database="app"} 2
# HELP PREFIX_sql_transactions_pooled_total Total number of SQL transactions pooled
# TYPE PREFIX_sql_transactions_pooled_total counter
PREFIX_sql_transactions_pooled_total{database="app"} 15
`

func stats(prefix string) string { return strings.ReplaceAll(statsBody, "PREFIX", prefix) }

const testVersion = "PgBouncer 1.25.2 (pgwarden 0.1.0)"

// TestPgBouncerCollectorExposition compares the whole exposition with
// pgbouncer_exporter v0.12's names, help texts, labels and units.
func TestPgBouncerCollectorExposition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []PoolOption
		want string
	}{
		{"both", nil, poolGauges + consoleGauges + stats("pgbouncer_stats_totals") + stats("pgbouncer_stats")},
		{"totals only", []PoolOption{WithoutLegacyStats()}, poolGauges + consoleGauges + stats("pgbouncer_stats_totals")},
		{"legacy only", []PoolOption{WithoutStatsTotals()}, poolGauges + consoleGauges + stats("pgbouncer_stats")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := NewPgBouncerCollector(fakeSnapshot, testVersion, tc.opts...)
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want)); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("without client connections", func(t *testing.T) {
		t.Parallel()
		c := NewPgBouncerCollector(fakeSnapshot, testVersion, WithoutClientConnections())
		if n := testutil.CollectAndCount(c, "pgbouncer_client_connections"); n != 0 {
			t.Errorf("pgbouncer_client_connections series = %d, want 0", n)
		}
	})
}

func TestPgBouncerCollectorEmptySnapshot(t *testing.T) {
	t.Parallel()
	c := NewPgBouncerCollector(func() Snapshot { return Snapshot{} }, testVersion)
	if got := testutil.CollectAndCount(c); got != 2 {
		t.Errorf("metrics from empty snapshot = %d, want 2 (up and version_info)", got)
	}
}

// TestPoolMetrics: the per-pool children are resolved once and observe
// into the pool's own series.
func TestPoolMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	alice, bob := m.Pool("app", "alice"), m.Pool("app", "bob")
	alice.ClientWait(300 * time.Microsecond)
	alice.Query(2 * time.Millisecond)
	alice.Query(40 * time.Millisecond)
	alice.Transaction(50 * time.Millisecond)
	alice.ServerLoginFailed("auth")
	alice.ServerLoginFailed("auth")
	bob.ServerLoginFailed("connect")

	count := func(family, user string) uint64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != family {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "user" && l.GetValue() == user {
						return m.GetHistogram().GetSampleCount()
					}
				}
			}
		}
		return 0
	}
	if got := count("pgwarden_client_wait_seconds", "alice"); got != 1 {
		t.Errorf("alice waits = %d, want 1", got)
	}
	if got := count("pgwarden_query_duration_seconds", "alice"); got != 2 {
		t.Errorf("alice queries = %d, want 2", got)
	}
	if got := count("pgwarden_transaction_duration_seconds", "alice"); got != 1 {
		t.Errorf("alice transactions = %d, want 1", got)
	}
	if got := count("pgwarden_query_duration_seconds", "bob"); got != 0 {
		t.Errorf("bob queries = %d, want 0", got)
	}
	want := `
# HELP pgwarden_server_login_failures_total Server connections that could not be opened, by pool and reason (connect, timeout, tls, auth, server_error, login, backend_token, connect_query).
# TYPE pgwarden_server_login_failures_total counter
pgwarden_server_login_failures_total{database="app",reason="auth",user="alice"} 2
pgwarden_server_login_failures_total{database="app",reason="connect",user="bob"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgwarden_server_login_failures_total"); err != nil {
		t.Error(err)
	}
	// Observing allocates nothing: the children were resolved by Pool.
	if n := testing.AllocsPerRun(100, func() {
		alice.ClientWait(time.Millisecond)
		alice.Query(time.Millisecond)
		alice.Transaction(time.Millisecond)
	}); n != 0 {
		t.Errorf("allocations per observation = %v, want 0", n)
	}
}

// touchAll records one event of every kind so that every family has a
// sample.
func touchAll(m *Metrics) {
	m.SignIn("entra", ResultSuccess, "", "user", time.Millisecond)
	m.SignIn("entra", "failure", "expired", "user", time.Millisecond)
	m.TokenCacheHit()
	m.TokenCacheMiss()
	m.JWKSFetch(ResultSuccess)
	m.JWKSKeys(2)
	m.GraphLookup("member")
	m.BackendTokenRefresh("entra", ResultSuccess)
	m.BackendTokenExpiry("entra", time.Now().Add(time.Hour))
	m.SessionsRevoked(1)
	m.ClientError("protocol_violation", "08P01")
	m.SignInThrottled(ThrottleScopeAddress, ThrottleRefused)
	p := m.Pool("app", "alice")
	p.ClientWait(time.Millisecond)
	p.Query(time.Millisecond)
	p.Transaction(time.Millisecond)
	p.ServerLoginFailed("connect")
}

func TestLint(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	touchAll(New(reg))
	reg.MustRegister(NewPgBouncerCollector(fakeSnapshot, testVersion))

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
	if len(mfs) < 70 {
		t.Errorf("gathered %d families, want at least 70", len(mfs))
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	New(reg).ClientError("protocol_violation", "08P01")
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
	if code != http.StatusOK || !strings.Contains(body, `pgwarden_client_errors_total{code="protocol_violation",sqlstate="08P01"} 1`) {
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

// BenchmarkPoolObserve is the metrics' cost per transaction on the hot
// path: one wait, one query and one transaction observed.
func BenchmarkPoolObserve(b *testing.B) {
	p := New(prometheus.NewRegistry()).Pool("app", "alice")
	b.ReportAllocs()
	for b.Loop() {
		p.ClientWait(50 * time.Microsecond)
		p.Query(300 * time.Microsecond)
		p.Transaction(400 * time.Microsecond)
	}
}
