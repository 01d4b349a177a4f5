package pooler

import (
	"strconv"
	"strings"
	"time"
)

// PoolSnapshot is one (database, role) pool's live state and cumulative
// statistics: what SHOW POOLS prints and what the metrics collector exports
// at scrape time.
type PoolSnapshot struct {
	Database, User, PoolMode string
	// Clients signed in to the pool: active (linked or idle between
	// transactions) and waiting for a server.
	ClActive, ClWaiting int
	// Server connections: lent to a client, idle in the pool, logging in.
	SvActive, SvIdle, SvLogin int
	// MaxWait is how long the oldest waiting client has waited.
	MaxWait time.Duration
	// Cumulative statistics since the pool was created (times in µs).
	XactCount, QueryCount, BytesReceived, BytesSent uint64
	XactTimeMicros, QueryTimeMicros, WaitTimeMicros uint64
	ServerAssignmentCount                           uint64
}

// PoolSnapshots reads every pool's state now. Safe for concurrent use.
func (s *Server) PoolSnapshots() []PoolSnapshot {
	type counts struct{ active, waiting int }
	per := map[*pool]*counts{}
	s.mu.Lock()
	for c := range s.mu.clients {
		c.mu.Lock()
		if c.pool != nil {
			k := per[c.pool]
			if k == nil {
				k = &counts{}
				per[c.pool] = k
			}
			if c.mu.state == stateWaiting {
				k.waiting++
			} else if c.mu.state != stateLogin {
				k.active++
			}
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	var out []PoolSnapshot
	for _, p := range s.pools.list() {
		k := per[p]
		if k == nil {
			k = &counts{}
		}
		p.mu.Lock()
		st := p.mu.main.Stat()
		active, idle, login := st.AcquiredResources(), st.IdleResources(), st.ConstructingResources()
		if p.mu.reserve != nil {
			rs := p.mu.reserve.Stat()
			active += rs.AcquiredResources()
			idle += rs.IdleResources()
			login += rs.ConstructingResources()
		}
		p.mu.Unlock()
		// Replication clients' servers are busy for their whole session.
		active += p.replServers.Load()
		var maxwait time.Duration
		if t := p.waitStartMin.Load(); t != 0 {
			maxwait = time.Since(time.Unix(0, t))
		}
		ps := &p.stats
		out = append(out, PoolSnapshot{
			Database: p.key.db, User: p.key.user, PoolMode: p.poolMode().String(),
			ClActive: k.active, ClWaiting: k.waiting,
			SvActive: int(active), SvIdle: int(idle), SvLogin: int(login),
			MaxWait:   maxwait,
			XactCount: uint64(ps.xactCount.Load()), QueryCount: uint64(ps.queryCount.Load()),
			BytesReceived: uint64(ps.recv.Load()), BytesSent: uint64(ps.sent.Load()),
			XactTimeMicros: uint64(ps.xactTime.Load()), QueryTimeMicros: uint64(ps.queryTime.Load()),
			WaitTimeMicros: uint64(ps.waitTime.Load()), ServerAssignmentCount: uint64(ps.assignCnt.Load()),
		})
	}
	return out
}

// Ready reports whether the server should receive new clients: it is
// listening, not shutting down, and below max_client_conn (/readyz).
func (s *Server) Ready() bool {
	s.mu.Lock()
	listening := len(s.mu.listeners) > 0
	s.mu.Unlock()
	if !listening || s.shuttingDown() {
		return false
	}
	cfg := s.cfg.Load()
	return cfg.MaxClientConn <= 0 || s.nclients.Load() < int64(cfg.MaxClientConn)
}

// The metrics collector reads SHOW POOLS, DATABASES and LISTS from the
// console's own row builders, so that /metrics and the console (and with it
// pgbouncer_exporter) never disagree.

// consoleTable gives typed access, by column name, to the rows of one
// console result set.
type consoleTable struct {
	col  map[string]int
	rows [][]*string
}

func newConsoleTable(cols []column, rows [][]*string) consoleTable {
	t := consoleTable{col: make(map[string]int, len(cols)), rows: rows}
	for i, c := range cols {
		t.col[c.name] = i
	}
	return t
}

// str is row i's value in column name; "" for NULL or no such column.
func (t consoleTable) str(i int, name string) string {
	j, ok := t.col[name]
	if !ok || j >= len(t.rows[i]) || t.rows[i][j] == nil {
		return ""
	}
	return *t.rows[i][j]
}

// num is row i's value in column name as an integer; 0 when not a number.
func (t consoleTable) num(i int, name string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(t.str(i, name)))
	return n
}

// PoolRow is one SHOW POOLS row: a pool's clients and servers now.
type PoolRow struct {
	Database, User, PoolMode string
	// Clients: active (linked or idle between transactions), waiting for
	// a server, and with a cancel request forwarded or not yet.
	ClActive, ClWaiting, ClActiveCancelReq, ClWaitingCancelReq int
	// Servers: linked to a client, forwarding a cancel request, waiting
	// for cancel requests against them, idle, idle past
	// server_check_delay, being tested, logging in.
	SvActive, SvActiveCancel, SvBeingCanceled, SvIdle, SvUsed, SvTested, SvLogin int
	// MaxWait is how long the oldest waiting client has waited (to the µs).
	MaxWait time.Duration
}

// ShowPools reads SHOW POOLS now. Safe for concurrent use.
func (s *Server) ShowPools() []PoolRow {
	t := newConsoleTable(poolColumns, s.poolRows())
	out := make([]PoolRow, len(t.rows))
	for i := range t.rows {
		out[i] = PoolRow{
			Database: t.str(i, "database"), User: t.str(i, "user"), PoolMode: t.str(i, "pool_mode"),
			ClActive: t.num(i, "cl_active"), ClWaiting: t.num(i, "cl_waiting"),
			ClActiveCancelReq: t.num(i, "cl_active_cancel_req"), ClWaitingCancelReq: t.num(i, "cl_waiting_cancel_req"),
			SvActive: t.num(i, "sv_active"), SvActiveCancel: t.num(i, "sv_active_cancel"), SvBeingCanceled: t.num(i, "sv_being_canceled"),
			SvIdle: t.num(i, "sv_idle"), SvUsed: t.num(i, "sv_used"), SvTested: t.num(i, "sv_tested"), SvLogin: t.num(i, "sv_login"),
			MaxWait: time.Duration(t.num(i, "maxwait"))*time.Second + time.Duration(t.num(i, "maxwait_us"))*time.Microsecond,
		}
	}
	return out
}

// DatabaseSnapshot is one SHOW DATABASES row: a database's settings and
// connection counts. The console's own database "pgbouncer" is included,
// as the console shows it.
type DatabaseSnapshot struct {
	// Name is the name clients use; Host, Port and Database (the
	// server-side name) say where it lives. Host is "" for the console's
	// database.
	Name, Host string
	Port       int
	Database   string
	// ForceUser is the database's user= ("" when none); PoolMode its own
	// pool_mode ("" when it takes the global one).
	ForceUser, PoolMode string
	// Settings in force (0 for unlimited or unset, as the console).
	PoolSize, MinPoolSize, ReservePoolSize, MaxConnections int
	// CurrentConnections are server connections of the database's pools;
	// CurrentClientConnections signed-in clients.
	CurrentConnections, CurrentClientConnections int
	Paused, Disabled                             bool
}

// DatabaseSnapshots reads SHOW DATABASES now. Safe for concurrent use.
func (s *Server) DatabaseSnapshots() []DatabaseSnapshot {
	t := newConsoleTable(databasesColumns, s.databaseRows())
	out := make([]DatabaseSnapshot, len(t.rows))
	for i := range t.rows {
		out[i] = DatabaseSnapshot{
			Name: t.str(i, "name"), Host: t.str(i, "host"), Port: t.num(i, "port"), Database: t.str(i, "database"),
			ForceUser: t.str(i, "force_user"), PoolMode: t.str(i, "pool_mode"),
			PoolSize: t.num(i, "pool_size"), MinPoolSize: t.num(i, "min_pool_size"), ReservePoolSize: t.num(i, "reserve_pool_size"),
			MaxConnections: t.num(i, "max_connections"), CurrentConnections: t.num(i, "current_connections"),
			CurrentClientConnections: t.num(i, "current_client_connections"),
			Paused:                   t.num(i, "paused") != 0, Disabled: t.num(i, "disabled") != 0,
		}
	}
	return out
}

// ListsSnapshot is SHOW LISTS: counts of the pooler's objects.
type ListsSnapshot struct {
	// Databases, users and pools, as the console counts them.
	Databases, Users, Pools int
	// Clients: free (kept for reuse), signed in (console included),
	// still signing in.
	FreeClients, UsedClients, LoginClients int
	// Servers: free (kept for reuse) and open (idle or not).
	FreeServers, UsedServers int
	// DNS cache and lookups in flight.
	DNSNames, DNSZones, DNSQueries int
}

// Lists reads SHOW LISTS now. Safe for concurrent use.
func (s *Server) Lists() ListsSnapshot {
	t := newConsoleTable(listsColumns, s.listRows())
	n := map[string]int{}
	for i := range t.rows {
		n[t.str(i, "list")] = t.num(i, "items")
	}
	return ListsSnapshot{Databases: n["databases"], Users: n["users"], Pools: n["pools"],
		FreeClients: n["free_clients"], UsedClients: n["used_clients"], LoginClients: n["login_clients"],
		FreeServers: n["free_servers"], UsedServers: n["used_servers"],
		DNSNames: n["dns_names"], DNSZones: n["dns_zones"], DNSQueries: n["dns_queries"]}
}

// StatsSnapshot is one database's row of SHOW STATS_TOTALS: counters since
// the process started, times in µs.
type StatsSnapshot struct {
	Database                                                               string
	ServerAssignmentCount, XactCount, QueryCount, BytesReceived, BytesSent uint64
	XactTimeMicros, QueryTimeMicros, WaitTimeMicros                        uint64
	ClientParseCount, ServerParseCount, BindCount                          uint64
}

// StatsTotals reads SHOW STATS_TOTALS now: one row per database the
// console lists (configured, pooled, and "pgbouncer"), sorted. Safe for
// concurrent use.
func (s *Server) StatsTotals() []StatsSnapshot {
	tot := s.statsByDB()
	dbs := s.statsDatabases()
	out := make([]StatsSnapshot, 0, len(dbs))
	for _, db := range dbs {
		t := tot[db]
		out = append(out, StatsSnapshot{Database: db,
			ServerAssignmentCount: uint64(t.assign), XactCount: uint64(t.xacts), QueryCount: uint64(t.queries),
			BytesReceived: uint64(t.recv), BytesSent: uint64(t.sent),
			XactTimeMicros: uint64(t.xactTime), QueryTimeMicros: uint64(t.queryTime), WaitTimeMicros: uint64(t.waitTime),
			ClientParseCount: uint64(t.clientParses), ServerParseCount: uint64(t.serverParses), BindCount: uint64(t.binds)})
	}
	return out
}

// ClientCount is the number of signed-in clients (SHOW CLIENTS rows) with
// the same database, user, application_name and state.
type ClientCount struct {
	Database, User, ApplicationName, State string
	Count                                  int
}

// ClientCounts groups SHOW CLIENTS' rows by database, user,
// application_name and state, in the order of first appearance. Safe for
// concurrent use.
func (s *Server) ClientCounts() []ClientCount {
	type key struct{ db, user, app, state string }
	idx := map[key]int{}
	var out []ClientCount
	for _, v := range s.clientViews() {
		k := key{v.db, v.user, v.appName, v.state}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, ClientCount{Database: v.db, User: v.user, ApplicationName: v.appName, State: v.state})
		}
		out[i].Count++
	}
	return out
}

// EntraKeyCount is the number of Entra ID signing keys trusted now (SHOW
// JWKS rows); 0 without [entra].
func (s *Server) EntraKeyCount() int {
	es := s.entra.Load()
	if es == nil {
		return 0
	}
	return len(es.v.Keys())
}

// Limits returns max_client_conn and max_user_connections in force (SHOW
// CONFIG), 0 meaning unlimited.
func (s *Server) Limits() (maxClientConn, maxUserConnections int) {
	cfg := s.cfg.Load()
	return cfg.MaxClientConn, cfg.MaxUserConnections
}
