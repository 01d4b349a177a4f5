package pooler_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// consoleResult runs one console command and returns its column names and
// rows as text (NULL as "<NULL>").
func consoleResult(t *testing.T, conn *pgx.Conn, sql string) ([]string, []pgconn.FieldDescription, []map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// (Result.FieldDescriptions is only filled in when there are rows,
	// so the ResultReader is read directly.)
	mrr := conn.PgConn().Exec(ctx, sql)
	if !mrr.NextResult() {
		t.Fatalf("%s: no result: %v", sql, mrr.Close())
	}
	rr := mrr.ResultReader()
	fds := append([]pgconn.FieldDescription(nil), rr.FieldDescriptions()...)
	var raw [][][]byte
	for rr.NextRow() {
		var row [][]byte
		for _, v := range rr.Values() {
			if v == nil {
				row = append(row, nil)
			} else {
				row = append(row, append([]byte{}, v...))
			}
		}
		raw = append(raw, row)
	}
	if _, err := rr.Close(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if mrr.NextResult() {
		t.Fatalf("%s: more than one result", sql)
	}
	if err := mrr.Close(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var names []string
	for _, f := range fds {
		names = append(names, f.Name)
	}
	var rows []map[string]string
	for _, row := range raw {
		m := map[string]string{}
		for i, v := range row {
			if v == nil {
				m[names[i]] = "<NULL>"
			} else {
				m[names[i]] = string(v)
			}
		}
		rows = append(rows, m)
	}
	return names, fds, rows
}

const (
	tText    = 25
	tInt4    = 23
	tInt8    = 20
	tNumeric = 1700
	tBytea   = 17
)

// The column lists of PgBouncer 1.25.2 (src/admin.c, src/stats.c; the
// reference's §2.3 describes master, which adds *_client_login_count to the
// three STATS commands after 1.25.2), with types: t text, i int4, q int8,
// N numeric, b bytea. Then pgwarden's own SHOW commands.
var consoleColumns = map[string]string{
	"SHOW STATS": "database:t,total_server_assignment_count:N,total_xact_count:N,total_query_count:N,total_received:N,total_sent:N,total_xact_time:N,total_query_time:N,total_wait_time:N,total_client_parse_count:N,total_server_parse_count:N,total_bind_count:N," +
		"avg_server_assignment_count:N,avg_xact_count:N,avg_query_count:N,avg_recv:N,avg_sent:N,avg_xact_time:N,avg_query_time:N,avg_wait_time:N,avg_client_parse_count:N,avg_server_parse_count:N,avg_bind_count:N",
	"SHOW STATS_TOTALS":   "database:t,server_assignment_count:N,xact_count:N,query_count:N,bytes_received:N,bytes_sent:N,xact_time:N,query_time:N,wait_time:N,client_parse_count:N,server_parse_count:N,bind_count:N",
	"SHOW STATS_AVERAGES": "database:t,server_assignment_count:N,xact_count:N,query_count:N,bytes_received:N,bytes_sent:N,xact_time:N,query_time:N,wait_time:N,avg_client_parse_count:N,avg_server_parse_count:N,avg_bind_count:N",
	"SHOW TOTALS":         "name:t,value:N",
	"SHOW DATABASES":      "name:t,host:t,port:i,database:t,force_user:t,pool_size:i,min_pool_size:i,reserve_pool_size:i,server_lifetime:i,pool_mode:t,load_balance_hosts:t,max_connections:i,current_connections:i,max_client_connections:i,current_client_connections:i,paused:i,disabled:i",
	"SHOW USERS":          "name:t,pool_size:t,reserve_pool_size:t,pool_mode:t,max_user_connections:i,current_connections:i,max_user_client_connections:i,current_client_connections:i",
	"SHOW CLIENTS":        socketCols,
	"SHOW SERVERS":        socketCols,
	"SHOW SOCKETS":        socketCols + ",recv_pos:i,pkt_pos:i,pkt_remain:i,send_pos:i,send_remain:i,pkt_avail:i,send_avail:i",
	"SHOW ACTIVE_SOCKETS": socketCols + ",recv_pos:i,pkt_pos:i,pkt_remain:i,send_pos:i,send_remain:i,pkt_avail:i,send_avail:i",
	"SHOW POOLS":          "database:t,user:t,cl_active:i,cl_waiting:i,cl_active_cancel_req:i,cl_waiting_cancel_req:i,sv_active:i,sv_active_cancel:i,sv_being_canceled:i,sv_idle:i,sv_used:i,sv_tested:i,sv_login:i,maxwait:i,maxwait_us:i,pool_mode:t,load_balance_hosts:t",
	"SHOW PEERS":          "peer_id:i,host:t,port:i,pool_size:i",
	"SHOW PEER_POOLS":     "peer_id:i,cl_active_cancel_req:i,cl_waiting_cancel_req:i,sv_active_cancel:i,sv_login:i",
	"SHOW LISTS":          "list:t,items:i",
	"SHOW MEM":            "name:t,size:i,used:i,free:i,memtotal:i",
	"SHOW DNS_HOSTS":      "hostname:t,ttl:q,addrs:t",
	"SHOW DNS_ZONES":      "zonename:t,serial:q,count:i",
	"SHOW FDS":            "fd:i,task:t,user:t,database:t,addr:t,port:i,cancel:q,link:i,client_encoding:t,std_strings:t,datestyle:t,timezone:t,password:t,scram_client_key:b,scram_server_key:b",
	"SHOW VERSION":        "version:t",
	"SHOW STATE":          "key:t,value:t",
	"SHOW CONFIG":         "key:t,value:t,default:t,changeable:t",
	// The settings drivers probe.
	"SHOW client_encoding":               "client_encoding:t",
	"SHOW default_transaction_isolation": "default_transaction_isolation:t",
	"SHOW standard_conforming_strings":   "standard_conforming_strings:t",
	"SHOW datestyle":                     "datestyle:t",
	"SHOW timezone":                      "timezone:t",
	// pgwarden's own.
	"SHOW PRINCIPALS": "role:t,oid:t,type:t,tenant:t,admin:t,mfa:t,source:t",
	"SHOW SIGNINS":    "time:t,client:t,database:t,role:t,method:t,tls:t,result:t,reason:t,principal_type:t,oid:t,upn:t,uti:t,latency_ms:t",
	"SHOW JWKS":       "issuer:t,kid:t,tenant:t,version:t,fetched_at:t,source:t",
	"SHOW THROTTLE":   "scope:t,key:t,failures:q,tokens:N,burst:i,in_progress:i,last_failure:t,throttled_until:t",
}

const socketCols = "type:t,user:t,database:t,replication:t,state:t,addr:t,port:i,local_addr:t,local_port:i,connect_time:t,request_time:t,wait:i,wait_us:i,close_needed:i,ptr:t,link:t,remote_pid:i,tls:t,application_name:t,prepared_statements:i,id:i"

// helpDetail is SHOW HELP's detail in PgBouncer 1.25.2, with pgwarden's
// PRINCIPALS|SIGNINS|JWKS|THROTTLE line.
const helpDetail = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\tSHOW PEERS|PEER_POOLS\n\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n" +
	"\tSHOW DNS_HOSTS|DNS_ZONES\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\tSHOW PRINCIPALS|SIGNINS|JWKS|THROTTLE\n\tSET key = arg\n\tRELOAD\n\tPAUSE [<db>]\n\tRESUME [<db>]\n" +
	"\tDISABLE <db>\n\tENABLE <db>\n\tRECONNECT [<db>]\n\tKILL [<db>]\n\tKILL_CLIENT <client_id>\n\tSUSPEND\n\tSHUTDOWN\n\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\tWAIT_CLOSE [<db>]"

// connectNotices connects with simple protocol and collects the notices.
func connectNotices(t *testing.T, dsn string) (*pgx.Conn, func() []*pgconn.Notice) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn + " default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notices []*pgconn.Notice
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n)
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, func() []*pgconn.Notice {
		mu.Lock()
		defer mu.Unlock()
		out := notices
		notices = nil
		return out
	}
}

func TestAdminShowColumns(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, app, "SELECT 1")
	admin, notices := connectNotices(t, in.dsn("admin", "admin-pw", "pgbouncer"))
	letters := map[uint32]string{tText: "t", tInt4: "i", tInt8: "q", tNumeric: "N", tBytea: "b"}
	for cmd, want := range consoleColumns {
		_, fds, _ := consoleResult(t, admin, cmd)
		var got []string
		for _, f := range fds {
			got = append(got, f.Name+":"+letters[f.DataTypeOID])
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%s columns:\n got  %s\n want %s", cmd, strings.Join(got, ","), want)
		}
	}

	// SHOW HELP: no rows, a NOTICE "Console usage" whose detail lists
	// the commands; every SHOW it names is in the table above.
	if _, fds, rows := consoleResult(t, admin, "SHOW HELP"); len(fds) != 0 || len(rows) != 0 {
		t.Errorf("SHOW HELP: %d columns, %d rows", len(fds), len(rows))
	}
	ns := notices()
	if len(ns) != 1 || ns[0].Message != "Console usage" || ns[0].Severity != "NOTICE" || ns[0].Detail != helpDetail {
		t.Fatalf("SHOW HELP notices %+v", ns)
	}
	for _, line := range strings.Split(ns[0].Detail, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "SHOW ") {
			continue
		}
		for _, what := range strings.Split(strings.TrimPrefix(line, "SHOW "), "|") {
			if _, ok := consoleColumns["SHOW "+what]; !ok && what != "HELP" {
				t.Errorf("SHOW HELP names SHOW %s, which the column test does not cover", what)
			}
		}
	}

	_, _, lists := consoleResult(t, admin, "SHOW LISTS")
	var names []string
	for _, r := range lists {
		names = append(names, r["list"])
	}
	if got := strings.Join(names, ","); got != "databases,users,peers,pools,peer_pools,free_clients,used_clients,login_clients,free_servers,used_servers,dns_names,dns_zones,dns_queries,dns_pending" {
		t.Errorf("SHOW LISTS rows %s", got)
	}
	// SELECT is an alias of SHOW; words are case-insensitive, may be
	// quoted, and may end with a semicolon.
	for _, q := range []string{"select lists", "Show Lists;", `show "lists" ;`} {
		if _, _, rows := consoleResult(t, admin, q); len(rows) != 14 {
			t.Errorf("%s: %d rows", q, len(rows))
		}
	}
	_, _, totals := consoleResult(t, admin, "SHOW TOTALS")
	if len(totals) != 22 || totals[0]["name"] != "total_server_assignment_count" || totals[11]["name"] != "avg_server_assignment_count" || atoi(t, totals[1]["value"]) == 0 {
		t.Errorf("SHOW TOTALS rows %v", totals)
	}
	_, _, state := consoleResult(t, admin, "SHOW STATE")
	if fmt.Sprint(state) != "[map[key:active value:yes] map[key:paused value:no] map[key:suspended value:no]]" {
		t.Errorf("SHOW STATE %v", state)
	}
	if v := queryString(t, admin, "SHOW client_encoding"); v != "UTF-8" {
		t.Errorf("SHOW client_encoding %q", v)
	}
}

func statsRow(t *testing.T, admin *pgx.Conn, cmd, db string) map[string]string {
	t.Helper()
	_, _, rows := consoleResult(t, admin, cmd)
	for _, r := range rows {
		if r["database"] == db {
			return r
		}
	}
	t.Fatalf("%s: no row for %s", cmd, db)
	return nil
}

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func TestAdminConsoleStatsAndLists(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nstats_period = 1")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	before := atoi(t, statsRow(t, admin, "SHOW STATS_TOTALS", "app")["xact_count"])
	app := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec", "application_name=admintest")
	for i := 0; i < 5; i++ {
		queryInt(t, app, "SELECT 1")
	}
	st := statsRow(t, admin, "SHOW STATS", "app")
	if n := atoi(t, st["total_xact_count"]); n < before+5 {
		t.Errorf("total_xact_count %d, want >= %d", n, before+5)
	}
	if atoi(t, st["total_query_count"]) < 5 || atoi(t, st["total_received"]) == 0 || atoi(t, st["total_sent"]) == 0 {
		t.Errorf("SHOW STATS row %v", st)
	}
	// Averages over stats_period (1s here) become non-zero with traffic.
	waitFor(t, 10*time.Second, "avg xact_count > 0", func() bool {
		queryInt(t, app, "SELECT 1")
		return atoi(t, statsRow(t, admin, "SHOW STATS_AVERAGES", "app")["xact_count"]) > 0
	})

	// SHOW CLIENTS: the app client, idle between transactions, and the
	// console itself.
	// (The server goes back to the pool just after the client got its
	// reply, so the client may still show as active for a moment.)
	var clients []map[string]string
	var appRow, adminRow map[string]string
	waitFor(t, 5*time.Second, "the app client to be idle", func() bool {
		_, _, clients = consoleResult(t, admin, "SHOW CLIENTS")
		appRow, adminRow = nil, nil
		for _, r := range clients {
			switch {
			case r["user"] == "alice" && r["database"] == "app":
				appRow = r
			case r["database"] == "pgbouncer":
				adminRow = r
			}
		}
		return appRow == nil || appRow["state"] == "idle"
	})
	if appRow == nil || adminRow == nil {
		t.Fatalf("SHOW CLIENTS rows %v", clients)
	}
	if appRow["state"] != "idle" || appRow["type"] != "C" || appRow["addr"] != "127.0.0.1" || appRow["local_port"] != strconv.Itoa(in.port) ||
		appRow["application_name"] != "admintest" || appRow["id"] == "0" || appRow["link"] != "<NULL>" {
		t.Errorf("app client row %v", appRow)
	}
	if _, err := time.Parse("2006-01-02 15:04:05 MST", appRow["connect_time"]); err != nil {
		t.Errorf("connect_time %q: %v", appRow["connect_time"], err)
	}
	if adminRow["state"] != "active" {
		t.Errorf("console row %v", adminRow)
	}

	// Inside a transaction the client is active and linked to a server.
	ctx := context.Background()
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := queryInt(t, app, "SELECT pg_backend_pid()")
	_, _, clients = consoleResult(t, admin, "SHOW CLIENTS")
	for _, r := range clients {
		if r["user"] == "alice" && (r["state"] != "active" || r["remote_pid"] != strconv.Itoa(pid)) {
			t.Errorf("client in a transaction: %v (pid %d)", r, pid)
		}
	}
	_, _, servers := consoleResult(t, admin, "SHOW SERVERS")
	found := false
	for _, r := range servers {
		if r["remote_pid"] == strconv.Itoa(pid) {
			found = true
			if r["type"] != "S" || r["state"] != "active" || r["user"] != "alice" || r["database"] != "app" || r["port"] != strconv.Itoa(pg.Port) || r["link"] == "<NULL>" {
				t.Errorf("server row %v", r)
			}
		}
	}
	if !found {
		t.Errorf("no server with pid %d in %v", pid, servers)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Back in the pool, the server is idle.
	waitFor(t, 5*time.Second, "the server to be idle in SHOW SERVERS", func() bool {
		_, _, servers = consoleResult(t, admin, "SHOW SERVERS")
		for _, r := range servers {
			if r["remote_pid"] == strconv.Itoa(pid) {
				return r["state"] == "idle"
			}
		}
		return false
	})

	_, _, dbs := consoleResult(t, admin, "SHOW DATABASES")
	var appDB map[string]string
	for _, r := range dbs {
		if r["name"] == "app" {
			appDB = r
		}
	}
	if appDB == nil || appDB["port"] != strconv.Itoa(pg.Port) || appDB["current_client_connections"] != "1" || appDB["current_connections"] == "0" || appDB["pool_mode"] != "<NULL>" {
		t.Errorf("SHOW DATABASES app row %v", appDB)
	}
	_, _, users := consoleResult(t, admin, "SHOW USERS")
	var alice map[string]string
	for _, r := range users {
		if r["name"] == "alice" {
			alice = r
		}
	}
	if alice == nil || alice["current_client_connections"] != "1" {
		t.Errorf("SHOW USERS alice row %v (all %v)", alice, users)
	}
	_, _, lists := consoleResult(t, admin, "SHOW LISTS")
	for _, r := range lists {
		if r["list"] == "pools" && r["items"] != "2" || r["list"] == "used_clients" && r["items"] != "2" {
			t.Errorf("SHOW LISTS row %v", r)
		}
	}
}

func TestAdminConsoleKillClient(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nstats_users = alice")
	ctx := context.Background()
	app := in.connect(t, "bob", "bob-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, app, "SELECT 1")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	var id string
	_, _, clients := consoleResult(t, admin, "SHOW CLIENTS")
	for _, r := range clients {
		if r["user"] == "bob" {
			id = r["id"]
		}
	}
	if id == "" {
		t.Fatalf("bob not in %v", clients)
	}

	// A stats user may SHOW, but not KILL_CLIENT nor SHOW FDS.
	stats := in.connect(t, "alice", "alice-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	consoleResult(t, stats, "SHOW CLIENTS")
	for _, q := range []string{"KILL_CLIENT " + id, "SHOW FDS", "PAUSE"} {
		if _, err := stats.Exec(ctx, q); err == nil || pgMessage(err) != "admin access needed" {
			t.Errorf("%s as stats user: %v", q, err)
		}
	}

	for q, msg := range map[string]string{
		"KILL_CLIENT 999999999": "client not found",
		"KILL_CLIENT abc":       "invalid client pointer supplied",
		"SHOW NOPE":             "invalid command 'SHOW NOPE', use SHOW HELP;",
	} {
		if _, err := admin.Exec(ctx, q); err == nil || pgMessage(err) != msg {
			t.Errorf("%s: %v, want %q", q, err, msg)
		}
	}

	if _, err := admin.Exec(ctx, "KILL_CLIENT "+id); err != nil {
		t.Fatal(err)
	}
	_, err := app.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatal("killed client still works")
	}
	if !strings.Contains(pgMessage(err), "admin forced disconnect") && !app.IsClosed() {
		t.Errorf("got %v", err)
	}
	waitClientsGone(t, admin, "bob", 5*time.Second)
}

// waitClientsGone waits until SHOW CLIENTS lists no client of user.
func waitClientsGone(t *testing.T, admin *pgx.Conn, user string, d time.Duration) {
	t.Helper()
	waitFor(t, d, user+" to leave SHOW CLIENTS", func() bool {
		_, _, clients := consoleResult(t, admin, "SHOW CLIENTS")
		for _, r := range clients {
			if r["user"] == user {
				return false
			}
		}
		return true
	})
}

func TestConsoleDisableEnable(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction")
	ctx := context.Background()
	existing := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	if _, err := admin.Exec(ctx, "DISABLE app"); err != nil {
		t.Fatal(err)
	}
	_, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "app"))
	if err == nil || !strings.Contains(pgMessage(err), `database "app" is disabled`) {
		t.Fatalf("sign-in to a disabled database: %v", err)
	}
	// Connected clients stay.
	queryInt(t, existing, "SELECT 1")
	if _, err := admin.Exec(ctx, "DISABLE"); err == nil || !strings.Contains(pgMessage(err), "a database is required") {
		t.Fatalf("DISABLE without a database: %v", err)
	}
	if _, err := admin.Exec(ctx, "ENABLE app"); err != nil {
		t.Fatal(err)
	}
	in.connect(t, "alice", "alice-pw", "app")
}
