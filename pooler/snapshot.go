package pooler

import (
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
	// Prepared statements: named Parses from clients, Parses sent to
	// servers, Binds of named statements.
	ClientParseCount, ServerParseCount, BindCount uint64
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
			ClientParseCount: uint64(ps.clientParses.Load()), ServerParseCount: uint64(ps.serverParses.Load()),
			BindCount: uint64(ps.binds.Load()),
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
