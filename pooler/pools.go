package pooler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/puddle/v2"
	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// poolKey names a pool: the database name clients use and the server role.
type poolKey struct {
	db   string
	user string
}

// poolSet owns every pool of the process, created on first use. Pools are
// never removed while clients use them; a config change marks their servers
// close-needed and resizes them.
type poolSet struct {
	srv *Server
	mu  struct {
		sync.Mutex
		pools map[poolKey]*pool
		// dbLimits and userLimits enforce max_db_connections and
		// max_user_connections across pools.
		dbLimits   map[string]*limiter
		userLimits map[string]*limiter
		// disabled are the databases new clients may not sign in to
		// (console DISABLE/ENABLE).
		disabled map[string]bool
	}
	// pause is PAUSE, SUSPEND and KILL's state (pause.go).
	pause       pauseState
	janitorOnce sync.Once
	stop        chan struct{}
	// discarding counts the server connections pool.discard is closing;
	// closeAll waits for them.
	discarding sync.WaitGroup
}

func newPoolSet(s *Server) *poolSet {
	ps := &poolSet{srv: s, stop: make(chan struct{})}
	ps.mu.pools = map[poolKey]*pool{}
	ps.mu.dbLimits = map[string]*limiter{}
	ps.mu.userLimits = map[string]*limiter{}
	ps.pause.init()
	return ps
}

// pool is the set of server connections for one (database, role). The
// puddle pool does the waiting (first come, first served) and sizing; the
// pool adds the welcome parameter set, login-failure caching, limits across
// pools, and statistics.
type pool struct {
	srv *Server
	key poolKey
	// mode is the pool mode (a config.PoolMode); it may change at reload.
	mode atomic.Int32

	// puddle pools: main and reserve. Swapped under mu on resize.
	mu struct {
		sync.Mutex
		db        *config.Database
		main      *puddle.Pool[*serverConn]
		reserve   *puddle.Pool[*serverConn]
		size      int
		resSize   int
		welcome   []param
		loginErr  error
		loginAt   time.Time
		clientKey []byte
		serverKey []byte
		backendPw string
		hostIdx   int
		// live counts the pool's server connections by generation
		// (gen at their creation); WAIT_CLOSE waits for the old ones.
		live map[uint64]int
	}
	// gen is bumped by RECONNECT, KILL and a resize: servers created
	// before are closed at their next release ("close_needed").
	gen       atomic.Uint64
	dbLimit   *limiter
	userLimit *limiter
	// tokens holds the freshest client token for server_auth = passthrough.
	tokens passthroughTokens
	// replServers counts the replication clients' dedicated server
	// connections (replication.go): not pool members, but counted in
	// SHOW POOLS sv_active and the database's and role's connections.
	replServers atomic.Int32

	// queue holds the clients waiting for a server while the pool is
	// full (waiters.go); inPuddle counts those waiting in puddle instead,
	// who are served first.
	queue    serverQueue
	inPuddle atomic.Int32

	// statistics
	waiting      atomic.Int32
	active       atomic.Int32 // clients signed in to this pool
	stats        poolStats
	waitStartMin atomic.Int64
	// obs receives the pool's data-path figures (metrics); nil for none.
	obs PoolObserver
}

// poolStats are cumulative counters for SHOW STATS.
type poolStats struct {
	xactCount  atomic.Int64
	queryCount atomic.Int64
	waitTime   atomic.Int64 // µs
	xactTime   atomic.Int64 // µs
	queryTime  atomic.Int64 // µs
	recv       atomic.Int64
	sent       atomic.Int64
	assignCnt  atomic.Int64
	// Prepared statements (transaction and statement mode): named Parses
	// from clients, Parses sent to servers, Binds of named statements.
	clientParses atomic.Int64
	serverParses atomic.Int64
	binds        atomic.Int64
}

// queryDone accounts one query that took d (SHOW STATS query_count and
// query_time, and the metrics).
func (p *pool) queryDone(d time.Duration) {
	p.stats.queryCount.Add(1)
	p.stats.queryTime.Add(d.Microseconds())
	if p.obs != nil {
		p.obs.Query(d)
	}
}

// xactDone accounts one transaction that took d (SHOW STATS xact_count
// and xact_time, and the metrics).
func (p *pool) xactDone(d time.Duration) {
	p.stats.xactCount.Add(1)
	p.stats.xactTime.Add(d.Microseconds())
	if p.obs != nil {
		p.obs.Transaction(d)
	}
}

// forClient finds or creates the pool for a signed-in client.
func (ps *poolSet) forClient(cfg *config.Config, st *startup, id *Identity) (*pool, error) {
	db, ok := cfg.LookupDatabase(st.database)
	if !ok {
		return nil, newError(codeNoSuchDatabase, st.database)
	}
	user := st.user
	if db.User != "" {
		user = db.User
	}
	if cfg.AuthType == config.AuthAny && db.User == "" {
		return nil, newError(codeConfigError, "")
	}
	p := ps.get(cfg, poolKey{db: st.database, user: user}, db)
	if p.isDisabled() {
		return nil, newError(codeDatabaseDisabled, st.database)
	}
	if id != nil && id.rawToken != "" && id.Token != nil && cfg.EffectiveUserServerAuth(db, user) == config.ServerAuthPassthrough {
		p.tokens.offer(id.rawToken, id.Token.Exp)
	}
	if id != nil && db.User == "" {
		p.mu.Lock()
		if len(id.ClientKey) > 0 && len(id.ServerKey) > 0 {
			p.mu.clientKey, p.mu.serverKey = id.ClientKey, id.ServerKey
		}
		if id.BackendPassword != "" {
			p.mu.backendPw = id.BackendPassword
		}
		p.mu.Unlock()
	}
	return p, nil
}

func (ps *poolSet) get(cfg *config.Config, key poolKey, db *config.Database) *pool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p, ok := ps.mu.pools[key]; ok {
		return p
	}
	p := &pool{srv: ps.srv, key: key}
	p.obs = ps.srv.opts.Observer.Pool(key.db, key.user)
	p.dbLimit = limiterFor(ps.mu.dbLimits, db.Name, cfg.EffectiveMaxDBConnections(db))
	p.userLimit = limiterFor(ps.mu.userLimits, key.user, cfg.EffectiveMaxUserConnections(db, key.user))
	p.configure(cfg, db)
	ps.mu.pools[key] = p
	return p
}

func limiterFor(m map[string]*limiter, name string, limit int) *limiter {
	l, ok := m[name]
	if !ok {
		l = newLimiter()
		m[name] = l
	}
	l.setMax(limit)
	return l
}

// configure (re)builds the puddle pools when the size changed. Resources of
// a replaced puddle pool are closed as they come back.
func (p *pool) configure(cfg *config.Config, db *config.Database) {
	size := cfg.EffectivePoolSize(db, p.key.user)
	if size <= 0 {
		size = 10000 // 0 means unlimited (PgBouncer ≥ 1.24)
	}
	res := cfg.EffectiveReservePoolSize(db, p.key.user)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.db = db
	p.mode.Store(int32(cfg.EffectivePoolMode(db, p.key.user)))
	if p.mu.main != nil && p.mu.size == size && p.mu.resSize == res {
		return
	}
	oldMain, oldRes := p.mu.main, p.mu.reserve
	p.mu.main = p.newPuddle(size)
	p.mu.reserve = nil
	if res > 0 {
		p.mu.reserve = p.newPuddle(res)
	}
	p.mu.size, p.mu.resSize = size, res
	if oldMain != nil {
		p.gen.Add(1) // the old puddles' servers close as they come back
		go oldMain.Close()
	}
	if oldRes != nil {
		go oldRes.Close()
	}
	// Queued clients look at the new puddle.
	p.queue.kickAll()
}

func (p *pool) newPuddle(size int) *puddle.Pool[*serverConn] {
	pp, _ := puddle.NewPool(&puddle.Config[*serverConn]{
		Constructor: p.construct,
		Destructor:  p.destroy,
		MaxSize:     int32(size),
	})
	return pp
}

// construct opens one server connection, honouring server_connect_timeout,
// the cross-pool limits and the server_login_retry back-off.
func (p *pool) construct(ctx context.Context) (*serverConn, error) {
	cfg := p.srv.cfg.Load()
	p.mu.Lock()
	if p.mu.loginErr != nil && time.Since(p.mu.loginAt) < cfg.ServerLoginRetry {
		err := p.mu.loginErr
		p.mu.Unlock()
		return nil, wrapError(codeServerLoginRetry, loginErrText(err), err)
	}
	p.mu.Unlock()
	// puddle does not cancel construction when Acquire gives up, so the
	// construction has its own deadline.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ServerConnectTimeout)
	defer cancel()
	if err := p.dbLimit.acquire(cctx, func() { p.srv.pools.evictIdle(p, true, false) }); err != nil {
		return nil, wrapError(codeQueryWaitTimeout, "", err)
	}
	if err := p.userLimit.acquire(cctx, func() { p.srv.pools.evictIdle(p, false, false) }); err != nil {
		p.dbLimit.release()
		return nil, wrapError(codeQueryWaitTimeout, "", err)
	}
	sc, err := p.dialServer(cctx)
	if err != nil {
		p.dbLimit.release()
		p.userLimit.release()
		var reason string
		reason, err = splitLoginFailure(err)
		if p.obs != nil {
			p.obs.ServerLoginFailed(reason)
		}
		if cannotConnectNow(err) {
			// The server is starting up: do not cache, clients keep
			// waiting (acquireRaw).
			return nil, err
		}
		p.mu.Lock()
		p.mu.loginErr = err
		p.mu.loginAt = time.Now()
		p.mu.Unlock()
		p.srv.log.Warn("server login failed", "db", p.key.db, "user", p.key.user, "err", err)
		var se *serverError
		if errors.As(err, &se) || asPgError(err) != nil {
			return nil, err
		}
		return nil, wrapError(codeServerLoginFailed, err.Error(), err)
	}
	p.mu.Lock()
	p.mu.loginErr = nil
	if p.mu.welcome == nil {
		p.mu.welcome = sc.welcome
	}
	sc.gen = p.gen.Load()
	if p.mu.live == nil {
		p.mu.live = map[uint64]int{}
	}
	p.mu.live[sc.gen]++
	p.mu.Unlock()
	return sc, nil
}

func loginErrText(err error) string {
	var se *serverError
	if errors.As(err, &se) {
		return se.msg
	}
	if pe := asPgError(err); pe != nil {
		return pe.clientMessage()
	}
	return err.Error()
}

func (p *pool) destroy(sc *serverConn) {
	// Tell the server we are leaving, then close.
	_ = sc.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = sc.conn.Write([]byte{'X', 0, 0, 0, 4})
	sc.conn.Close()
	p.mu.Lock()
	if p.mu.live[sc.gen]--; p.mu.live[sc.gen] <= 0 {
		delete(p.mu.live, sc.gen)
	}
	p.mu.Unlock()
	p.dbLimit.release()
	p.userLimit.release()
}

// stale reports whether sc predates the pool's last RECONNECT, KILL or
// resize and must be closed rather than reused.
func (p *pool) stale(sc *serverConn) bool { return sc.gen < p.gen.Load() }

// staleCount is the number of the pool's server connections still open
// that predate its last RECONNECT, KILL or resize (what WAIT_CLOSE waits
// for).
func (p *pool) staleCount() int {
	cur := p.gen.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for g, k := range p.mu.live {
		if g < cur {
			n += k
		}
	}
	return n
}

// loginInfo returns the credentials for a new server connection.
func (p *pool) loginInfo(ctx context.Context) (serverLogin, error) {
	cfg := p.srv.cfg.Load()
	db := p.database()
	if kind := cfg.EffectiveUserServerAuth(db, p.key.user); isTokenProvider(kind) {
		// pgwarden's own Entra token is the password.
		prov, err := p.srv.tokenProvider(cfg, kind)
		if err != nil {
			return serverLogin{}, wrapError(codeServerLoginFailed, "no Entra token: "+err.Error(), err)
		}
		tok, err := prov.Token(ctx)
		if err != nil {
			return serverLogin{}, wrapError(codeServerLoginFailed, "no Entra token: "+err.Error(), err)
		}
		l := p.baseLogin(db)
		l.secret, l.hasSecret = authn.Secret{Kind: authn.SecretPlain, Plain: tok.Token}, true
		return l, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.baseLogin(db)
	l.clientKey, l.serverKey = p.mu.clientKey, p.mu.serverKey
	switch {
	case cfg.EffectiveUserServerAuth(db, p.key.user) == config.ServerAuthPassthrough:
		// Log in as the role with a client's own token, as Azure's
		// PgBouncer does against a pgaadauth server.
		if tok, ok := p.tokens.current(time.Now()); ok {
			l.secret, l.hasSecret = authn.Secret{Kind: authn.SecretPlain, Plain: tok}, true
		}
	case db.User != "" && db.Password != "":
		l.secret, l.hasSecret = authn.ParseSecret(db.Password), true
	case p.mu.backendPw != "":
		l.secret, l.hasSecret = authn.Secret{Kind: authn.SecretPlain, Plain: p.mu.backendPw}, true
	default:
		if sec, ok := cfg.AuthUsers[p.key.user]; ok {
			l.secret, l.hasSecret = authn.ParseSecret(sec), true
		} else if sec, ok := p.srv.pools.dynamicSecret(p.key.user); ok {
			l.secret, l.hasSecret = authn.ParseSecret(sec), true
		}
	}
	return l, nil
}

// baseLogin is the role, database and startup parameters of a new server
// connection, without credentials.
func (p *pool) baseLogin(db *config.Database) serverLogin {
	l := serverLogin{user: p.key.user, database: db.DBName}
	if l.database == "" {
		l.database = db.Name
	}
	for _, kv := range [][2]string{{"client_encoding", db.ClientEncoding}, {"DateStyle", db.DateStyle}, {"TimeZone", db.TimeZone}, {"application_name", db.ApplicationName}} {
		if kv[1] != "" {
			l.startup = append(l.startup, param{kv[0], kv[1]})
		}
	}
	return l
}

// nextHost returns the host to dial, round-robin over a comma list.
func (p *pool) nextHost() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	hosts := strings.Split(p.mu.db.Host, ",")
	h := strings.TrimSpace(hosts[p.mu.hostIdx%len(hosts)])
	p.mu.hostIdx++
	return h
}

func (p *pool) isDisabled() bool { return p.srv.pools.isDisabled(p.key.db) }

// isDisabled reports whether DISABLE is in force for database db.
func (ps *poolSet) isDisabled(db string) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.mu.disabled[db]
}

// setDisabled applies the console's DISABLE (true) or ENABLE (false).
func (ps *poolSet) setDisabled(db string, on bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.mu.disabled == nil {
		ps.mu.disabled = map[string]bool{}
	}
	if on {
		ps.mu.disabled[db] = true
	} else {
		delete(ps.mu.disabled, db)
	}
}

// welcome returns the pool's ParameterStatus set, logging in a first server
// connection if none has been seen yet.
func (p *pool) welcome(ctx context.Context) ([]param, error) {
	p.mu.Lock()
	w := p.mu.welcome
	p.mu.Unlock()
	if w != nil {
		return w, nil
	}
	res, err := p.acquireRaw(ctx)
	if err != nil {
		return nil, err
	}
	w = res.Value().welcome
	p.release(res)
	return w, nil
}

// acquire waits for a server connection, first come first served, up to
// query_wait_timeout; after reserve_pool_timeout of waiting it may also take
// one from the reserve pool. start is when the client began to wait; the
// time it got the server is returned with it. The caller owns the returned
// resource.
func (p *pool) acquire(start time.Time) (*puddle.Resource[*serverConn], time.Time, error) {
	p.waiting.Add(1)
	p.waitStartMin.CompareAndSwap(0, start.UnixNano())
	defer func() {
		if p.waiting.Add(-1) == 0 {
			p.waitStartMin.Store(0)
		}
	}()
	res := p.tryIdle()
	var err error
	if res == nil {
		res, err = p.acquireQueued(p.srv.cfg.Load().QueryWaitTimeout)
	}
	now := time.Now()
	wait := now.Sub(start)
	p.stats.waitTime.Add(wait.Microseconds())
	if err != nil {
		return nil, now, err
	}
	p.stats.assignCnt.Add(1)
	if p.obs != nil {
		p.obs.ClientWait(wait)
	}
	return res, now, nil
}

// tryIdle takes an idle, usable server when the pool is not paused, without
// waiting: the usual case, which then arms no query_wait_timeout timer.
func (p *pool) tryIdle() *puddle.Resource[*serverConn] {
	for {
		if p.srv.pools.pause.blockedFor(p.key.db) != nil {
			return nil
		}
		p.mu.Lock()
		main := p.mu.main
		p.mu.Unlock()
		// Only when one is idle: TryAcquire on an empty pool would start
		// a construction in the background.
		if main.Stat().IdleResources() == 0 {
			return nil
		}
		res, err := main.TryAcquire(context.Background())
		if err != nil {
			return nil
		}
		if p.usable(res) {
			return res
		}
	}
}

func (p *pool) acquireRaw(ctx context.Context) (*puddle.Resource[*serverConn], error) {
	// Servers released meanwhile go to puddle, not to the queue
	// (waiters.go), while anyone waits here.
	p.inPuddle.Add(1)
	defer p.inPuddle.Add(-1)
	for {
		if err := p.waitResumed(ctx); err != nil {
			return nil, err
		}
		p.mu.Lock()
		main, reserve := p.mu.main, p.mu.reserve
		p.mu.Unlock()
		cfg := p.srv.cfg.Load()
		if res := p.tryIdle(); res != nil {
			return res, nil
		}
		var res *puddle.Resource[*serverConn]
		var err error
		if reserve != nil && cfg.ReservePoolTimeout > 0 {
			rctx, cancel := context.WithTimeout(ctx, cfg.ReservePoolTimeout)
			res, err = main.Acquire(rctx)
			cancel()
			if err != nil && ctx.Err() == nil && !errors.Is(err, puddle.ErrClosedPool) && rctx.Err() != nil {
				p.srv.log.Info("taking connection from reserve_pool", "db", p.key.db, "user", p.key.user)
				res, err = acquireEither(ctx, main, reserve)
			}
		} else {
			res, err = main.Acquire(ctx)
		}
		if errors.Is(err, puddle.ErrClosedPool) {
			continue // resized under us: use the new pool
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, newError(codeQueryWaitTimeout, "")
			}
			if cannotConnectNow(err) && p.pauseBeforeRetry(ctx) {
				// PostgreSQL is starting up, recovering or shutting
				// down: the client keeps waiting (query_wait_timeout
				// applies) and the login is tried again, as in
				// PgBouncer. Once the wait is over the client gets
				// the server's error.
				continue
			}
			return nil, err
		}
		if p.usable(res) {
			return res, nil
		}
	}
}

// cannotConnectNowRetry is how long a client waits between server logins
// refused with 57P03 (each costs PostgreSQL a fork).
const cannotConnectNowRetry = 250 * time.Millisecond

// cannotConnectNow reports whether err is PostgreSQL's 57P03
// (cannot_connect_now: starting up, in recovery, shutting down).
func cannotConnectNow(err error) bool {
	var se *serverError
	return errors.As(err, &se) && se.code == "57P03"
}

// pauseBeforeRetry waits cannotConnectNowRetry; false when ctx ends or the
// pooler shuts down first.
func (p *pool) pauseBeforeRetry(ctx context.Context) bool {
	t := time.NewTimer(cannotConnectNowRetry)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-p.srv.shutdownCh:
		return false
	}
}

// idleProbeAfter is how long a server must have been idle before usable
// looks at its socket (closedWhileIdle, about 0.35 µs): a server handed on
// within a millisecond of its last ReadyForQuery, as under heavy load, is
// taken as it is, which keeps the look off the busiest path; the janitor
// looks at every idle server each second as well.
const idleProbeAfter = time.Millisecond

// usable vets a server just taken from the pool: one marked for closing,
// past its lifetime, closed by the server while idle or failing
// server_check_query is destroyed.
func (p *pool) usable(res *puddle.Resource[*serverConn]) bool {
	if !p.usableNoCheck(res) {
		return false
	}
	if err := p.check(res); err != nil {
		p.discard(res)
		return false
	}
	return true
}

// usableNoCheck is usable without server_check_query (see checkDue).
func (p *pool) usableNoCheck(res *puddle.Resource[*serverConn]) bool {
	sc := res.Value()
	if p.stale(sc) || sc.expired() {
		p.discard(res)
		return false
	}
	if res.IdleDuration() >= idleProbeAfter && sc.closedWhileIdle() {
		p.srv.log.Info("closing because: server connection closed by the server while idle", "db", p.key.db, "user", p.key.user, "pid", sc.pid)
		p.discard(res)
		return false
	}
	return true
}

// acquireEither waits on both pools and keeps the first resource.
func acquireEither(ctx context.Context, a, b *puddle.Pool[*serverConn]) (*puddle.Resource[*serverConn], error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		res *puddle.Resource[*serverConn]
		err error
	}
	ch := make(chan result, 2)
	go func() { r, e := a.Acquire(ctx); ch <- result{r, e} }()
	go func() { r, e := b.Acquire(ctx); ch <- result{r, e} }()
	first := <-ch
	cancel()
	second := <-ch
	if first.err == nil {
		if second.err == nil {
			second.res.Release()
		}
		return first.res, nil
	}
	if second.err == nil {
		return second.res, nil
	}
	return nil, first.err
}

// check runs server_check_query on a server idle longer than
// server_check_delay.
func (p *pool) check(res *puddle.Resource[*serverConn]) error {
	if !p.checkDue(res) {
		return nil
	}
	cfg := p.srv.cfg.Load()
	if err := res.Value().simpleExec(cfg.ServerCheckQuery); err != nil {
		return err
	}
	return nil
}

// checkDue reports whether server_check_query is to run on res before use.
func (p *pool) checkDue(res *puddle.Resource[*serverConn]) bool {
	cfg := p.srv.cfg.Load()
	return !cfg.ServerCheckDisabled && cfg.ServerCheckDelay > 0 && res.IdleDuration() >= cfg.ServerCheckDelay
}

func (sc *serverConn) expired() bool {
	return sc.lifetime > 0 && time.Since(sc.created) > sc.lifetime
}

// release returns a clean, idle server to its pool, or destroys it when it
// is marked for closing, too old, or broken.
func (p *pool) release(res *puddle.Resource[*serverConn]) {
	sc := res.Value()
	if sc.broken || sc.interrupted.Load() || p.stale(sc) || sc.expired() {
		p.discard(res)
		return
	}
	sc.cancelling.Wait()
	if p.dbLimit.contended() || p.userLimit.contended() {
		// Another pool of this database or role waits for a connection
		// slot (max_db_connections, max_user_connections): give ours up.
		p.discard(res)
		return
	}
	if p.inPuddle.Load() == 0 && p.srv.pools.pause.blockedFor(p.key.db) == nil && p.queue.handOff(res) {
		return
	}
	res.Release()
	// A client that queued just now, having seen no idle server, looks
	// again (waiters.go).
	p.queue.kick()
}

// discard closes a server taken from the pool instead of returning it.
// Unlike puddle's Destroy, which frees the pool's slot only once the
// connection is closed, in another goroutine, discard frees it at once, so
// that the oldest queued client can open a new server right away.
func (p *pool) discard(res *puddle.Resource[*serverConn]) {
	sc := res.Value()
	res.Hijack()
	p.srv.pools.discarding.Add(1)
	go func() {
		defer p.srv.pools.discarding.Done()
		p.destroy(sc)
	}()
	p.queue.kick()
}

// waitResumed blocks while the pool's database (or every database) is
// paused, suspended or killed.
func (p *pool) waitResumed(ctx context.Context) error {
	for {
		ch := p.srv.pools.pause.blockedFor(p.key.db)
		if ch == nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return newError(codeQueryWaitTimeout, "")
		case <-p.srv.shutdownCh:
			// A pause would hold a shutting-down pooler until
			// query_wait_timeout.
			return newError(codeShuttingDown, "")
		}
	}
}

// reconfigure applies a reloaded config to every pool: sizes, modes,
// limits; servers of databases whose connection settings changed are
// marked close-needed.
func (ps *poolSet) reconfigure(cfg *config.Config) {
	ps.mu.Lock()
	pools := make([]*pool, 0, len(ps.mu.pools))
	for _, p := range ps.mu.pools {
		pools = append(pools, p)
	}
	ps.mu.Unlock()
	for _, p := range pools {
		db, ok := cfg.LookupDatabase(p.key.db)
		if !ok {
			p.srv.killPoolClients(p, newError(codeDatabaseRemoved, ""))
			continue
		}
		p.mu.Lock()
		old := p.mu.db
		p.mu.Unlock()
		if dbConnChanged(old, db) {
			p.reconnect()
		} else if old.AllowReplication != db.AllowReplication {
			// Replication connections the database no longer accepts
			// are closed.
			p.srv.killReplication(p, func(k replKind) *pgError {
				if db.AllowReplication.Allows(k == replPhysical) {
					return nil
				}
				return replNotAllowed(k, p.key.db, db.AllowReplication)
			})
		}
		// The limiters are shared by name; this updates their maxima.
		ps.mu.Lock()
		limiterFor(ps.mu.dbLimits, db.Name, cfg.EffectiveMaxDBConnections(db))
		limiterFor(ps.mu.userLimits, p.key.user, cfg.EffectiveMaxUserConnections(db, p.key.user))
		ps.mu.Unlock()
		p.configure(cfg, db)
	}
}

func dbConnChanged(a, b *config.Database) bool {
	return a.Host != b.Host || a.Port != b.Port || a.DBName != b.DBName || a.User != b.User || a.Password != b.Password || a.ConnectQuery != b.ConnectQuery // old and new config: not a credential check
}

// reconnect closes idle servers now and marks busy ones to close at
// release (RECONNECT).
func (p *pool) reconnect() {
	p.mu.Lock()
	p.mu.welcome = nil
	p.gen.Add(1)
	p.mu.Unlock()
	for _, pp := range p.puddles() {
		pp.Reset()
	}
	// Replication streams have no end to wait for: they close now, as
	// PgBouncer closes close_needed replication servers at once.
	p.srv.killReplication(p, func(replKind) *pgError { return newError(codeReplicationClosed, "") })
}

// puddles returns the pool's puddle pools: main, and reserve when
// configured.
func (p *pool) puddles() []*puddle.Pool[*serverConn] {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.reserve == nil {
		return []*puddle.Pool[*serverConn]{p.mu.main}
	}
	return []*puddle.Pool[*serverConn]{p.mu.main, p.mu.reserve}
}

// pools returns a snapshot of the pools, sorted by database then user.
func (ps *poolSet) list() []*pool {
	ps.mu.Lock()
	out := make([]*pool, 0, len(ps.mu.pools))
	for _, p := range ps.mu.pools {
		out = append(out, p)
	}
	ps.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].key.db != out[j].key.db {
			return out[i].key.db < out[j].key.db
		}
		return out[i].key.user < out[j].key.user
	})
	return out
}

// startJanitor runs the periodic housekeeping: server_idle_timeout,
// server_lifetime, min_pool_size.
func (ps *poolSet) startJanitor() {
	ps.janitorOnce.Do(func() {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			var sl statsLogger
			sl.last = time.Now()
			for {
				select {
				case <-ps.stop:
					return
				case now := <-t.C:
					ps.janitor()
					sl.maybeLog(ps, now)
					ps.srv.maybeRefreshPrincipals(now, false)
				}
			}
		}()
	})
}

func (ps *poolSet) janitor() {
	cfg := ps.srv.cfg.Load()
	// Databases with a forced user keep min_pool_size servers even before
	// the first client (PgBouncer does the same).
	for name, db := range cfg.Databases {
		if name != "*" && db.User != "" && cfg.EffectiveMinPoolSize(db) > 0 {
			ps.get(cfg, poolKey{db: name, user: db.User}, db)
		}
	}
	for _, p := range ps.list() {
		p.mu.Lock()
		main, db, size := p.mu.main, p.mu.db, p.mu.size
		p.mu.Unlock()
		idle := main.AcquireAllIdle()
		minSize := cfg.EffectiveMinPoolSize(db)
		total := int(main.Stat().TotalResources())
		for _, res := range idle {
			sc := res.Value()
			switch {
			case p.stale(sc) || sc.expired():
				p.discard(res)
				total--
			case sc.closedWhileIdle():
				p.srv.log.Info("closing because: server connection closed by the server while idle", "db", p.key.db, "user", p.key.user, "pid", sc.pid)
				p.discard(res)
				total--
			case cfg.ServerIdleTimeout > 0 && res.IdleDuration() > cfg.ServerIdleTimeout && total > minSize:
				p.discard(res)
				total--
			default:
				res.ReleaseUnused()
			}
		}
		if p.queue.n.Load() > 0 {
			// Belt and braces: queued clients look again if the pool has
			// an idle server or room for one (waiters.go).
			if st := main.Stat(); st.IdleResources() > 0 || st.TotalResources() < st.MaxResources() {
				p.queue.kickAll()
			}
		}
		if minSize > 0 && (p.active.Load() > 0 || db.User != "") {
			for i := total; i < minSize && i < size; i++ {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), cfg.ServerConnectTimeout)
					defer cancel()
					_ = main.CreateResource(ctx)
				}()
			}
		}
	}
}

func (ps *poolSet) closeAll() {
	select {
	case <-ps.stop:
	default:
		close(ps.stop)
	}
	for _, p := range ps.list() {
		p.queue.kickAll()
		for _, pp := range p.puddles() {
			pp.Close()
		}
	}
	ps.discarding.Wait()
}

// kickQueues tells every queued client to look at its pool again (RESUME).
func (ps *poolSet) kickQueues() {
	for _, p := range ps.list() {
		p.queue.kickAll()
	}
}

// limiter bounds a count across pools (max_db_connections,
// max_user_connections); 0 means unlimited. The maximum may change at
// reload.
type limiter struct {
	mu      sync.Mutex
	n       int
	max     int
	waiters int
	wake    chan struct{}
}

func newLimiter() *limiter { return &limiter{wake: make(chan struct{})} }

func (l *limiter) setMax(m int) {
	l.mu.Lock()
	l.max = m
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// acquire takes a slot, waiting while the limit is reached. evict is called
// once when it has to wait, to close idle connections of other pools that
// hold slots.
func (l *limiter) acquire(ctx context.Context, evict func()) error {
	evicted := false
	for {
		l.mu.Lock()
		if l.max <= 0 || l.n < l.max {
			l.n++
			l.mu.Unlock()
			return nil
		}
		w := l.wake
		l.waiters++
		l.mu.Unlock()
		if !evicted && evict != nil {
			evicted = true
			evict()
		}
		select {
		case <-w:
		case <-ctx.Done():
		}
		l.mu.Lock()
		l.waiters--
		l.mu.Unlock()
		if ctx.Err() != nil {
			return fmt.Errorf("connection limit reached: %w", ctx.Err())
		}
	}
}

// contended reports whether someone waits for a slot.
func (l *limiter) contended() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiters > 0
}

func (l *limiter) release() {
	l.mu.Lock()
	l.n--
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// poolMode returns the pool's current mode.
func (p *pool) poolMode() config.PoolMode { return config.PoolMode(p.mode.Load()) }

// database returns the pool's current database entry.
func (p *pool) database() *config.Database {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.db
}

// evictIdle closes the idle server connections of the other pools that
// share p's database (byDB) or p's role, so that p can open one within
// max_db_connections / max_user_connections; with self, p's own idle ones
// too (a replication connection cannot use them).
func (ps *poolSet) evictIdle(p *pool, byDB, self bool) {
	name := p.database().Name
	for _, o := range ps.list() {
		if o == p && !self {
			continue
		}
		if byDB && o.database().Name != name || !byDB && o.key.user != p.key.user {
			continue
		}
		for _, pp := range o.puddles() {
			for _, res := range pp.AcquireAllIdle() {
				o.discard(res)
			}
		}
	}
}

// totals sums every pool's counters.
func (ps *poolSet) totals() dbStats {
	var t dbStats
	for _, d := range ps.srv.statsByDB() {
		t = t.add(d)
	}
	return t
}

// statsLogger writes PgBouncer's periodic "stats:" log line (log_stats,
// stats_period). It is owned by the janitor goroutine.
type statsLogger struct {
	last time.Time
	prev dbStats
}

func (sl *statsLogger) maybeLog(ps *poolSet, now time.Time) {
	cfg := ps.srv.cfg.Load()
	period := cfg.StatsPeriod
	if period <= 0 || now.Sub(sl.last) < period {
		return
	}
	cur := ps.totals()
	secs := now.Sub(sl.last).Seconds()
	d := cur.sub(sl.prev)
	sl.last, sl.prev = now, cur
	if !cfg.LogStats {
		return
	}
	avg := func(total, n int64) int64 {
		if n == 0 {
			return 0
		}
		return total / n
	}
	ps.srv.log.Info(fmt.Sprintf("stats: %d xacts/s, %d queries/s, in %d B/s, out %d B/s, xact %d us, query %d us, wait %d us",
		int64(float64(d.xacts)/secs), int64(float64(d.queries)/secs), int64(float64(d.recv)/secs), int64(float64(d.sent)/secs),
		avg(d.xactTime, d.xacts), avg(d.queryTime, d.queries), avg(d.waitTime, d.assign)))
}
