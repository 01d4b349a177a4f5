package pooler

import (
	"sort"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
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

// DatabaseSnapshot is one database's row of SHOW DATABASES: its settings
// and live connection counts. The console's own database "pgbouncer" is
// included, first, as the console shows it.
type DatabaseSnapshot struct {
	// Name is the name clients use; Host, Port and Database (the
	// server-side name) say where it lives. Host is empty for the
	// console's database.
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

// DatabaseSnapshots reads SHOW DATABASES' figures now, sorted by name
// after "pgbouncer". Safe for concurrent use.
func (s *Server) DatabaseSnapshots() []DatabaseSnapshot {
	cfg := s.cfg.Load()
	servers := map[string]int{}
	for _, p := range s.pools.list() {
		servers[p.key.db] += int(p.serverCount())
	}
	clients := map[string]int{}
	for _, v := range s.clientViews() {
		clients[v.db]++
	}
	names := make([]string, 0, len(cfg.Databases))
	for n := range cfg.Databases {
		if n != "*" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]DatabaseSnapshot, 0, len(names)+1)
	out = append(out, DatabaseSnapshot{Name: "pgbouncer", Port: cfg.ListenPort, Database: "pgbouncer", ForceUser: "pgbouncer",
		PoolMode: "statement", PoolSize: 2, CurrentClientConnections: clients["pgbouncer"]})
	for _, n := range names {
		db := cfg.Databases[n]
		d := DatabaseSnapshot{Name: n, Host: db.Host, Port: db.Port, Database: db.DBName, ForceUser: db.User,
			PoolSize: cfg.EffectivePoolSize(db, db.User), MinPoolSize: cfg.EffectiveMinPoolSize(db),
			ReservePoolSize: cfg.EffectiveReservePoolSize(db, db.User), MaxConnections: cfg.EffectiveMaxDBConnections(db),
			CurrentConnections: servers[n], CurrentClientConnections: clients[n],
			Paused: s.databasePaused(n), Disabled: s.pools.isDisabled(n)}
		if d.Port == 0 {
			d.Port = 5432
		}
		if d.Database == "" {
			d.Database = n
		}
		if db.PoolMode != config.PoolModeUnset {
			d.PoolMode = db.PoolMode.String()
		}
		out = append(out, d)
	}
	return out
}

// databasePaused reports whether PAUSE is in force for database name.
func (s *Server) databasePaused(name string) bool {
	for _, p := range s.pools.list() {
		if p.key.db == name && p.isPaused() {
			return true
		}
	}
	return false
}

// ListsSnapshot is SHOW LISTS: counts of the pooler's objects. pgwarden
// keeps no free lists, peers or DNS cache, so those counts are 0 and left
// out.
type ListsSnapshot struct {
	// Databases counts the configured databases plus the console's;
	// Users the auth_file and [users] entries; Pools the pools.
	Databases, Users, Pools int
	// UsedClients are signed-in clients (console included), LoginClients
	// those still signing in.
	UsedClients, LoginClients int
	// UsedServers are the server connections, idle or not.
	UsedServers int
}

// Lists reads SHOW LISTS' figures now. Safe for concurrent use.
func (s *Server) Lists() ListsSnapshot {
	cfg := s.cfg.Load()
	pools := s.pools.list()
	l := ListsSnapshot{Databases: 1, Users: len(userNames(cfg)), Pools: len(pools)}
	for _, p := range pools {
		l.UsedServers += int(p.serverCount())
	}
	for n := range cfg.Databases {
		if n != "*" {
			l.Databases++
		}
	}
	s.mu.Lock()
	for c := range s.mu.clients {
		c.mu.Lock()
		if c.mu.state == stateLogin && c.admin == nil {
			l.LoginClients++
		} else {
			l.UsedClients++
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	return l
}

// StatsSnapshot is one database's row of SHOW STATS_TOTALS: counters since
// the process started, times in µs.
type StatsSnapshot struct {
	Database                                                               string
	ServerAssignmentCount, XactCount, QueryCount, BytesReceived, BytesSent uint64
	XactTimeMicros, QueryTimeMicros, WaitTimeMicros                        uint64
	ClientParseCount, ServerParseCount, BindCount                          uint64 // not counted yet: 0
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
			XactTimeMicros: uint64(t.xactTime), QueryTimeMicros: uint64(t.queryTime), WaitTimeMicros: uint64(t.waitTime)})
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
