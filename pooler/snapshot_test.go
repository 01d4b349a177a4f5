package pooler_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// poolRecorder counts one pool's PoolObserver calls.
type poolRecorder struct {
	mu                    sync.Mutex
	waits, queries, xacts int
	failures              []string
}

func (r *poolRecorder) ClientWait(time.Duration) { r.mu.Lock(); r.waits++; r.mu.Unlock() }
func (r *poolRecorder) Query(time.Duration)      { r.mu.Lock(); r.queries++; r.mu.Unlock() }
func (r *poolRecorder) Transaction(time.Duration) {
	r.mu.Lock()
	r.xacts++
	r.mu.Unlock()
}
func (r *poolRecorder) ServerLoginFailed(reason string) {
	r.mu.Lock()
	r.failures = append(r.failures, reason)
	r.mu.Unlock()
}

// hookObserver records the data-path and client error events.
type hookObserver struct {
	pooler.NopObserver
	mu     sync.Mutex
	pools  map[string]*poolRecorder
	errors []string
}

func (o *hookObserver) Pool(database, user string) pooler.PoolObserver {
	o.mu.Lock()
	defer o.mu.Unlock()
	key := database + "/" + user
	if o.pools[key] != nil {
		panic("Pool called twice for " + key)
	}
	r := &poolRecorder{}
	o.pools[key] = r
	return r
}

func (o *hookObserver) pool(key string) *poolRecorder {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.pools[key]; r != nil {
		return r
	}
	return &poolRecorder{}
}

func (o *hookObserver) ClientError(code, sqlstate string) {
	o.mu.Lock()
	o.errors = append(o.errors, code+"/"+sqlstate)
	o.mu.Unlock()
}

// simpleConnect connects with the simple query protocol only: one query,
// one ReadyForQuery.
func simpleConnect(in *instance, user, password, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(in.dsn(user, password, db))
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// TestPoolObserverHooks: the pool's observer sees exactly the waits,
// queries and transactions SHOW STATS counts, and each failed server
// login once, with its reason.
func TestPoolObserverHooks(t *testing.T) {
	closed, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	obs := &hookObserver{pools: map[string]*poolRecorder{}}
	in := startPooler(t, fmt.Sprintf(`pool_mode = transaction
[databases]
nodb = host=127.0.0.1 port=%[1]d dbname=no_such_database
down = host=127.0.0.1 port=%[2]d dbname=app
badpw = host=127.0.0.1 port=%[1]d dbname=app user=alice password=not-her-password
`, pg.Port, closed), func(o *pooler.Options) { o.Observer = obs })

	conn, err := simpleConnect(in, "alice", "alice-pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, q := range []string{"SELECT 1", "SELECT 2", "BEGIN", "SELECT 3", "COMMIT"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	r := obs.pool("app/alice")
	var stats pooler.StatsSnapshot
	for _, s := range in.srv.StatsTotals() {
		if s.Database == "app" {
			stats = s
		}
	}
	r.mu.Lock()
	if r.queries != 5 || r.xacts != 3 || r.waits != 3 {
		t.Errorf("observed %d queries, %d transactions, %d waits; want 5, 3, 3", r.queries, r.xacts, r.waits)
	}
	if uint64(r.queries) != stats.QueryCount || uint64(r.xacts) != stats.XactCount || uint64(r.waits) != stats.ServerAssignmentCount {
		t.Errorf("observer %d/%d/%d, SHOW STATS_TOTALS %+v", r.queries, r.xacts, r.waits, stats)
	}
	r.mu.Unlock()

	for db, want := range map[string]string{"nodb": pooler.ServerFailServerError, "down": pooler.ServerFailConnect, "badpw": pooler.ServerFailAuth} {
		if c, err := simpleConnect(in, "alice", "alice-pw", db); err == nil {
			c.Close(ctx)
			t.Errorf("%s: signed in", db)
		}
		user := "alice"
		got := obs.pool(db + "/" + user)
		got.mu.Lock()
		if !slices.Equal(got.failures, []string{want}) {
			t.Errorf("%s: server login failures %q, want [%s]", db, got.failures, want)
		}
		got.mu.Unlock()
	}
	obs.mu.Lock()
	if !slices.Contains(obs.errors, "server_login_failed/3D000") || !slices.Contains(obs.errors, "server_login_failed/28P01") {
		t.Errorf("client errors %q lack the server's login errors", obs.errors)
	}
	obs.mu.Unlock()
}

// showRows runs a console SHOW and returns its rows as column → text
// (NULL as "").
func showRows(t *testing.T, conn *pgx.Conn, cmd string) []map[string]string {
	t.Helper()
	res := conn.PgConn().Exec(context.Background(), cmd)
	results, err := res.ReadAll()
	if err != nil || len(results) != 1 {
		t.Fatalf("%s: %v", cmd, err)
	}
	var out []map[string]string
	for _, row := range results[0].Rows {
		m := map[string]string{}
		for i, f := range results[0].FieldDescriptions {
			m[f.Name] = string(row[i])
		}
		out = append(out, m)
	}
	return out
}

// TestSnapshotsMatchConsole: the snapshots the metrics collector reads
// hold the figures the console prints (SHOW DATABASES, LISTS,
// STATS_TOTALS, CLIENTS), so that pgbouncer_exporter reading the console
// and /metrics agree.
func TestSnapshotsMatchConsole(t *testing.T) {
	in := startPooler(t, "pool_mode = transaction\nmax_db_connections = 7\nmax_client_conn = 55\nmax_user_connections = 3")
	app, err := simpleConnect(in, "alice", "alice-pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	if _, err := app.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	admin, err := simpleConnect(in, "admin", "admin-pw", "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	itoa := strconv.Itoa
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}

	dbs := in.srv.DatabaseSnapshots()
	rows := showRows(t, admin, "SHOW DATABASES")
	if len(rows) != len(dbs) {
		t.Fatalf("SHOW DATABASES has %d rows, the snapshot %d", len(rows), len(dbs))
	}
	for i, d := range dbs {
		want := map[string]string{"name": d.Name, "host": d.Host, "port": itoa(d.Port), "database": d.Database, "force_user": d.ForceUser,
			"pool_size": itoa(d.PoolSize), "min_pool_size": itoa(d.MinPoolSize), "reserve_pool_size": itoa(d.ReservePoolSize),
			"pool_mode": d.PoolMode, "max_connections": itoa(d.MaxConnections), "current_connections": itoa(d.CurrentConnections),
			"current_client_connections": itoa(d.CurrentClientConnections), "paused": b(d.Paused), "disabled": b(d.Disabled)}
		for k, v := range want {
			if rows[i][k] != v {
				t.Errorf("SHOW DATABASES %s %s = %q, snapshot %q", d.Name, k, rows[i][k], v)
			}
		}
	}

	if l := in.srv.Lists(); l.Databases != 3 || l.UsedClients != 2 || l.UsedServers != 1 {
		t.Errorf("Lists %+v: want 3 databases (app, postgres, pgbouncer), 2 clients, 1 server", l)
	}
	l := in.srv.Lists()
	lists := map[string]string{}
	for _, r := range showRows(t, admin, "SHOW LISTS") {
		lists[r["list"]] = r["items"]
	}
	for k, v := range map[string]int{"databases": l.Databases, "users": l.Users, "pools": l.Pools, "used_clients": l.UsedClients,
		"login_clients": l.LoginClients, "used_servers": l.UsedServers, "free_clients": l.FreeClients, "free_servers": l.FreeServers,
		"dns_names": l.DNSNames, "dns_zones": l.DNSZones, "dns_queries": l.DNSQueries} {
		if lists[k] != itoa(v) {
			t.Errorf("SHOW LISTS %s = %q, snapshot %d", k, lists[k], v)
		}
	}

	pools := in.srv.ShowPools()
	pr := showRows(t, admin, "SHOW POOLS")
	if len(pr) != len(pools) {
		t.Fatalf("SHOW POOLS has %d rows, ShowPools %d", len(pr), len(pools))
	}
	for i, p := range pools {
		for k, v := range map[string]string{"database": p.Database, "user": p.User, "pool_mode": p.PoolMode,
			"cl_active": itoa(p.ClActive), "cl_waiting": itoa(p.ClWaiting), "cl_active_cancel_req": itoa(p.ClActiveCancelReq),
			"cl_waiting_cancel_req": itoa(p.ClWaitingCancelReq), "sv_active": itoa(p.SvActive), "sv_active_cancel": itoa(p.SvActiveCancel),
			"sv_being_canceled": itoa(p.SvBeingCanceled), "sv_idle": itoa(p.SvIdle), "sv_used": itoa(p.SvUsed), "sv_tested": itoa(p.SvTested),
			"sv_login": itoa(p.SvLogin), "maxwait": itoa(int(p.MaxWait / time.Second)), "maxwait_us": itoa(int(p.MaxWait % time.Second / time.Microsecond))} {
			if pr[i][k] != v {
				t.Errorf("SHOW POOLS %s/%s %s = %q, ShowPools %q", p.Database, p.User, k, pr[i][k], v)
			}
		}
		if p.Database == "app" && (p.User != "alice" || p.ClActive != 1 || p.SvIdle != 1) {
			t.Errorf("app pool %+v: want alice with 1 active client and 1 idle server", p)
		}
	}

	totals := in.srv.StatsTotals()
	st := showRows(t, admin, "SHOW STATS_TOTALS")
	if len(st) != len(totals) {
		t.Fatalf("SHOW STATS_TOTALS has %d rows, the snapshot %d", len(st), len(totals))
	}
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	for i, s := range totals {
		for k, v := range map[string]string{"database": s.Database, "server_assignment_count": u(s.ServerAssignmentCount), "xact_count": u(s.XactCount),
			"query_count": u(s.QueryCount), "bytes_received": u(s.BytesReceived), "bytes_sent": u(s.BytesSent), "xact_time": u(s.XactTimeMicros),
			"query_time": u(s.QueryTimeMicros), "wait_time": u(s.WaitTimeMicros), "client_parse_count": u(s.ClientParseCount),
			"server_parse_count": u(s.ServerParseCount), "bind_count": u(s.BindCount)} {
			if st[i][k] != v {
				t.Errorf("SHOW STATS_TOTALS %s %s = %q, snapshot %q", s.Database, k, st[i][k], v)
			}
		}
	}

	groups := map[string]int{}
	for _, r := range showRows(t, admin, "SHOW CLIENTS") {
		groups[r["database"]+"/"+r["user"]+"/"+r["application_name"]+"/"+r["state"]]++
	}
	snap := map[string]int{}
	for _, c := range in.srv.ClientCounts() {
		snap[c.Database+"/"+c.User+"/"+c.ApplicationName+"/"+c.State] = c.Count
	}
	if fmt.Sprint(groups) != fmt.Sprint(snap) || len(snap) != 2 {
		t.Errorf("SHOW CLIENTS groups %v, snapshot %v", groups, snap)
	}

	maxClient, maxUser := in.srv.Limits()
	cfg := map[string]string{}
	for _, r := range showRows(t, admin, "SHOW CONFIG") {
		cfg[r["key"]] = r["value"]
	}
	if cfg["max_client_conn"] != itoa(maxClient) || cfg["max_user_connections"] != itoa(maxUser) || maxClient != 55 || maxUser != 3 {
		t.Errorf("SHOW CONFIG max_client_conn %q max_user_connections %q; Limits %d, %d", cfg["max_client_conn"], cfg["max_user_connections"], maxClient, maxUser)
	}
}

// The console's refusals are counted as client errors too.
func TestConsoleErrorsObserved(t *testing.T) {
	obs := &hookObserver{pools: map[string]*poolRecorder{}}
	in := startPooler(t, "auth_type = scram-sha-256", func(o *pooler.Options) { o.Observer = obs })
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	if _, err := admin.Exec(context.Background(), "SHOW NONSENSE"); err == nil {
		t.Fatal("SHOW NONSENSE succeeded")
	}
	if _, err := admin.Exec(context.Background(), "SET listen_port = 1"); err == nil {
		t.Fatal("SET of a restart-only key succeeded")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if want := []string{"admin_command/08P01", "admin_command/55P02"}; !slices.Equal(obs.errors, want) {
		t.Fatalf("client errors %q, want %q", obs.errors, want)
	}
}
