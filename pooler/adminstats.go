package pooler

import (
	"crypto/tls"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// Read-only views of pools, clients and servers for the admin console's
// SHOW commands, plus the console's own state (the stats_period averages).

// dbStats are cumulative counters summed over pools (one database's, or
// all of them for the stats: log line).
type dbStats struct {
	assign, xacts, queries, recv, sent, xactTime, queryTime, waitTime int64
	clientParses, serverParses, binds                                 int64
}

func (a dbStats) add(b dbStats) dbStats {
	return dbStats{a.assign + b.assign, a.xacts + b.xacts, a.queries + b.queries, a.recv + b.recv,
		a.sent + b.sent, a.xactTime + b.xactTime, a.queryTime + b.queryTime, a.waitTime + b.waitTime,
		a.clientParses + b.clientParses, a.serverParses + b.serverParses, a.binds + b.binds}
}

func (a dbStats) sub(b dbStats) dbStats {
	return dbStats{a.assign - b.assign, a.xacts - b.xacts, a.queries - b.queries, a.recv - b.recv,
		a.sent - b.sent, a.xactTime - b.xactTime, a.queryTime - b.queryTime, a.waitTime - b.waitTime,
		a.clientParses - b.clientParses, a.serverParses - b.serverParses, a.binds - b.binds}
}

// statsByDB sums the pools' counters per database.
func (s *Server) statsByDB() map[string]dbStats {
	out := map[string]dbStats{}
	for _, p := range s.pools.list() {
		st := &p.stats
		d := out[p.key.db]
		d.assign += st.assignCnt.Load()
		d.xacts += st.xactCount.Load()
		d.queries += st.queryCount.Load()
		d.recv += st.recv.Load()
		d.sent += st.sent.Load()
		d.xactTime += st.xactTime.Load()
		d.queryTime += st.queryTime.Load()
		d.waitTime += st.waitTime.Load()
		d.clientParses += st.clientParses.Load()
		d.serverParses += st.serverParses.Load()
		d.binds += st.binds.Load()
		out[p.key.db] = d
	}
	return out
}

// adminState is the console's per-Server state.
//
// Averages (SHOW STATS avg_*, SHOW STATS_AVERAGES) are computed as
// PgBouncer does: the change of the totals over the last complete
// stats_period, divided by that period's length for counts and bytes (per
// second) and by the number of transactions/queries/assignments for the
// times. The snapshots are taken by a self-rearming timer started with the
// first console login (the janitor's statsLogger keeps its snapshot
// private), so the first window starts then rather than at process start:
// until one stats_period has passed after the first console login the
// averages are 0, as PgBouncer's are during its first period.
type adminState struct {
	mu   sync.Mutex
	last time.Time
	prev map[string]dbStats
	avg  map[string]dbAvg
	all  dbAvg // over every database (SHOW TOTALS)
}

// dbAvg holds per-second rates (counts, bytes) and per-event times (µs).
type dbAvg struct {
	assign, xacts, queries, recv, sent, xactTime, queryTime, waitTime int64
	clientParses, serverParses, binds                                 int64 // per second
}

var adminStates sync.Map // *Server → *adminState

func (s *Server) adminState() *adminState {
	if v, ok := adminStates.Load(s); ok {
		return v.(*adminState)
	}
	st := &adminState{last: time.Now(), prev: s.statsByDB(), avg: map[string]dbAvg{}}
	if v, loaded := adminStates.LoadOrStore(s, st); loaded {
		return v.(*adminState)
	}
	s.scheduleStatsSnapshot(st)
	return st
}

func (s *Server) statsPeriod() time.Duration {
	if p := s.cfg.Load().StatsPeriod; p > 0 {
		return p
	}
	return 60 * time.Second
}

func (s *Server) scheduleStatsSnapshot(st *adminState) {
	time.AfterFunc(s.statsPeriod(), func() {
		select {
		case <-s.pools.stop:
			adminStates.Delete(s)
			return
		default:
		}
		st.snapshot(s.statsByDB(), time.Now())
		s.scheduleStatsSnapshot(st)
	})
}

func (st *adminState) snapshot(cur map[string]dbStats, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	secs := now.Sub(st.last).Seconds()
	if secs <= 0 {
		return
	}
	per := func(total, n int64) int64 {
		if n <= 0 {
			return 0
		}
		return total / n
	}
	average := func(d dbStats) dbAvg {
		return dbAvg{
			assign: int64(float64(d.assign) / secs), xacts: int64(float64(d.xacts) / secs),
			queries: int64(float64(d.queries) / secs), recv: int64(float64(d.recv) / secs),
			sent: int64(float64(d.sent) / secs), xactTime: per(d.xactTime, d.xacts),
			queryTime: per(d.queryTime, d.queries), waitTime: per(d.waitTime, d.assign),
			clientParses: int64(float64(d.clientParses) / secs), serverParses: int64(float64(d.serverParses) / secs),
			binds: int64(float64(d.binds) / secs),
		}
	}
	avg := map[string]dbAvg{}
	var all dbStats
	for db, c := range cur {
		d := c.sub(st.prev[db])
		avg[db] = average(d)
		all = all.add(d)
	}
	st.last, st.prev, st.avg, st.all = now, cur, avg, average(all)
}

func (st *adminState) total() dbAvg {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.all
}

func (st *adminState) averages() map[string]dbAvg {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.avg
}

// statsDatabases lists the databases SHOW STATS reports: the configured
// ones, those with pools, and the console's own "pgbouncer", sorted.
func (s *Server) statsDatabases() []string {
	set := map[string]bool{"pgbouncer": true}
	for name := range s.cfg.Load().Databases {
		if name != "*" {
			set[name] = true
		}
	}
	for _, p := range s.pools.list() {
		set[p.key.db] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// clientView is a snapshot of one signed-in client for SHOW CLIENTS.
type clientView struct {
	c           *clientConn
	user, db    string
	state       string
	waitFrom    time.Time
	link        *serverConn
	linkPool    *pool
	appName     string
	tls         string
	connectTime time.Time
	requestTime time.Time
	closeNeeded bool
	prepared    int      // named prepared statements
	repl        replKind // a replication client's kind
}

// clientViews lists signed-in clients (login-phase clients are left out,
// as PgBouncer does), ordered by id.
func (s *Server) clientViews() []clientView {
	s.mu.Lock()
	cs := make([]*clientConn, 0, len(s.mu.clients))
	for c := range s.mu.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	var out []clientView
	for _, c := range cs {
		c.mu.Lock()
		admin := c.admin != nil
		state := c.mu.state
		if state == stateLogin && !admin {
			c.mu.Unlock()
			continue
		}
		v := clientView{c: c, connectTime: c.connectTime, closeNeeded: c.mu.wantStop}
		// c.st and c.tlsDesc are written before the state leaves
		// stateLogin (or c.admin is set), under mu.
		v.user, v.db = c.st.user, c.st.database
		v.appName = c.st.appName
		if c.vars != nil {
			if app, ok := c.vars.m["application_name"]; ok {
				v.appName = app // as SET last changed it
			}
		}
		v.tls = c.tlsDesc
		v.prepared = len(c.ps.client)
		v.repl = c.st.repl
		switch {
		case state == stateWaiting:
			v.state, v.waitFrom = "waiting", c.mu.waitFrom
		case c.mu.att != nil:
			v.state, v.link, v.linkPool = "active", c.mu.att.sc, c.mu.att.pool
		case c.mu.repl != nil:
			v.state, v.link, v.linkPool = "active", c.mu.repl.sc, c.mu.repl.pool
		case admin:
			v.state = "active"
		default:
			v.state = "idle"
		}
		c.mu.Unlock()
		if rt := c.requestTime.Load(); rt != 0 {
			v.requestTime = time.Unix(0, rt)
		} else {
			v.requestTime = v.connectTime
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].c.id < out[j].c.id })
	return out
}

// serverView is a snapshot of one server connection for SHOW SERVERS.
type serverView struct {
	sc     *serverConn
	pool   *pool
	state  string
	client *clientConn
	repl   replKind // a replication client's server
}

// serverViews lists the servers linked to clients (active) and the idle
// ones in the pools. Idle servers are found by briefly taking them out of
// their puddle pool (AcquireAllIdle, then ReleaseUnused, as the janitor
// does); puddle keeps no other list. Servers held by nobody's client (a
// welcome fetch, a check query in progress) are not listed.
func (s *Server) serverViews() []serverView {
	var out []serverView
	for _, v := range s.clientViews() {
		if v.link != nil {
			out = append(out, serverView{sc: v.link, pool: v.linkPool, state: "active", client: v.c, repl: v.repl})
		}
	}
	for _, p := range s.pools.list() {
		for _, pp := range p.puddles() {
			for _, res := range pp.AcquireAllIdle() {
				out = append(out, serverView{sc: res.Value(), pool: p, state: "idle"})
				res.ReleaseUnused()
			}
		}
	}
	return out
}

func (sc *serverConn) tlsDescription() string {
	if tc, ok := sc.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		return tls.VersionName(st.Version) + "/" + tls.CipherSuiteName(st.CipherSuite)
	}
	return ""
}

// splitAddr gives the host and port of an address; Unix sockets are
// "unix" with the given fallback port.
func splitAddr(a net.Addr, fallbackPort int) (string, int) {
	if a == nil {
		return "", 0
	}
	if a.Network() == "unix" {
		return "unix", fallbackPort
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// pgTime formats a timestamp as PgBouncer's console does (local time).
func pgTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

func ptrText(p any) string { return fmt.Sprintf("%p", p) }

// poolServerCount is the number of server connections of a pool (idle,
// busy and being opened).
func (p *pool) serverCount() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := int64(p.mu.main.Stat().TotalResources())
	if p.mu.reserve != nil {
		n += int64(p.mu.reserve.Stat().TotalResources())
	}
	return n + int64(p.replServers.Load())
}

// userNames lists the users SHOW USERS reports: auth_file entries,
// [users] entries and the console's own user pgbouncer (as PgBouncer
// lists it), sorted.
func userNames(cfg *config.Config) []string {
	set := map[string]bool{"pgbouncer": true}
	for n := range cfg.AuthUsers {
		set[n] = true
	}
	for n := range cfg.Users {
		set[n] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func isHostList(h string) bool { return strings.Contains(h, ",") }
