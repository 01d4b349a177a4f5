package pooler

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// The admin console: the virtual database "pgbouncer", for admin_users
// (everything), stats_users (SHOW only) and the process owner over the Unix
// socket. Simple Query only; one command per query; PgBouncer's columns.

type adminSession struct {
	c     *clientConn
	admin bool // false: stats user, SHOW only
	rd    msgReader

	mu       sync.Mutex
	cancelFn context.CancelFunc // set while a waiting command runs
}

const (
	oidText    = 25
	oidInt4    = 23
	oidInt8    = 20
	oidNumeric = 1700
)

type column struct {
	name string
	oid  uint32
}

func (c *clientConn) startAdmin() error {
	cfg := c.cfg
	admin, stats := isAdminName(cfg, c.st.user)
	if c.identity != nil && (c.identity.Method == "peer" || c.identity.Principal != nil && c.identity.Principal.Admin) {
		admin = true
	}
	if !admin && !stats {
		return newError(codeNotAllowed, "")
	}
	c.mu.Lock()
	c.admin = &adminSession{c: c, admin: admin, rd: msgReader{r: c.conn, max: maxDecodedMessage}}
	c.mu.Unlock()
	c.srv.adminState() // starts the stats_period snapshots
	c.key = c.srv.cancels.register(c)
	b := appendAuthRequest(nil, 0, nil)
	for _, p := range []param{
		{"server_version", Version + "/bouncer"}, {"client_encoding", "UTF8"}, {"server_encoding", "UTF8"},
		{"DateStyle", "ISO"}, {"TimeZone", "GMT"}, {"standard_conforming_strings", "on"}, {"is_superuser", "on"},
	} {
		b = appendParameterStatus(b, p.name, p.value)
	}
	b = append(b, 'K', 0, 0, 0, 12)
	b = append(b, c.key[:]...)
	b = appendReadyForQuery(b, 'I')
	return writeAll(c.conn, b)
}

// cancel is a Ctrl-C on the console: it ends a waiting PAUSE with RESUME.
func (a *adminSession) cancel() {
	a.mu.Lock()
	f := a.cancelFn
	a.mu.Unlock()
	if f != nil {
		f()
	}
}

func (a *adminSession) run() error {
	for {
		t, body, err := a.rd.readMessage()
		if err != nil {
			return err
		}
		switch t {
		case 'X':
			return nil
		case 'Q':
			q, _, _ := cstring(body)
			out := a.exec(strings.TrimSpace(q))
			if out == nil {
				return nil
			}
			if err := a.c.writeRaw(appendReadyForQuery(out, 'I')); err != nil {
				return err
			}
		case 'P', 'B', 'E', 'D', 'S', 'C', 'H':
			return newError(codeProtocolViolation, "extended query protocol not supported by admin console")
		default:
			return newError(codeProtocolViolation, fmt.Sprintf("unsupported packet type for admin console: %d", t))
		}
	}
}

func (c *clientConn) writeRaw(b []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

var (
	reAdminCmd = regexp.MustCompile(`(?i)^\s*("[^"]*"|[0-9a-z_]+)(\s+("[^"]*"|[0-9a-z_]+))?\s*(;\s*)?$`)
	reAdminSet = regexp.MustCompile(`(?i)^\s*set\s+([0-9a-z_]+)\s*(=|to)\s*('(?:[^']|'')*'|[0-9a-z_.\-]+)\s*(;\s*)?$`)
)

func adminError(msg string) []byte {
	return appendErrorResponse(nil, 'E', "ERROR", "08P01", msg)
}

// exec runs one console command and returns the reply without the final
// ReadyForQuery; nil means "close the connection".
func (a *adminSession) exec(q string) []byte {
	if q == "" {
		return append([]byte{}, 'I', 0, 0, 0, 4)
	}
	if m := reAdminSet.FindStringSubmatch(q); m != nil {
		return a.set(strings.ToLower(m[1]), m[3])
	}
	m := reAdminCmd.FindStringSubmatch(q)
	if m == nil {
		return adminError(fmt.Sprintf("invalid command '%s', use SHOW HELP;", q))
	}
	cmd := strings.ToLower(strings.Trim(m[1], `"`))
	arg := strings.Trim(m[3], `"`)
	argLower := strings.ToLower(arg)
	switch cmd {
	case "show", "select":
		if argLower == "fds" && !a.admin {
			return adminError("admin access needed")
		}
		return a.show(argLower, q)
	}
	if !a.admin {
		return adminError("admin access needed")
	}
	s := a.c.srv
	switch cmd {
	case "pause":
		ctx, cancel := context.WithCancel(context.Background())
		a.mu.Lock()
		a.cancelFn = cancel
		a.mu.Unlock()
		err := s.pools.pause(ctx, arg)
		a.mu.Lock()
		a.cancelFn = nil
		a.mu.Unlock()
		cancel()
		if err != nil {
			s.pools.resume(arg)
			return adminError("PAUSE canceled")
		}
		return commandComplete(nil, "PAUSE")
	case "resume":
		if !s.pools.resume(arg) {
			return adminError("pooler is not paused/suspended")
		}
		return commandComplete(nil, "RESUME")
	case "reload":
		hook := s.reloadHook.Load()
		if hook != nil {
			if err := (*hook)(); err != nil {
				s.log.Error("RELOAD failed", "err", err)
				return appendErrorResponse(nil, 'E', "ERROR", "F0000", "RELOAD failed, see logs for additional details")
			}
		}
		return commandComplete(nil, "RELOAD")
	case "reconnect":
		for _, p := range s.pools.list() {
			if arg == "" || p.key.db == arg {
				p.reconnect()
			}
		}
		return commandComplete(nil, "RECONNECT")
	case "kill_client":
		id, err := strconv.ParseUint(arg, 10, 64)
		if err != nil || arg == "" {
			return adminError("invalid client pointer supplied")
		}
		var target *clientConn
		s.mu.Lock()
		for c := range s.mu.clients {
			if c.id == id {
				target = c
				break
			}
		}
		s.mu.Unlock()
		if target == nil {
			return adminError("client not found")
		}
		target.kill(newError(codeAdminForcedDisconnect, ""))
		return commandComplete(nil, "KILL_CLIENT")
	case "disable", "enable":
		// New sign-ins to the database are refused ("database "x" is
		// disabled"); connected clients stay.
		if arg == "" {
			return adminError("a database is required")
		}
		if arg == "pgbouncer" {
			return adminError("cannot " + cmd + " admin db: " + arg)
		}
		if _, ok := s.cfg.Load().LookupDatabase(arg); !ok {
			return adminError("no such database: " + arg)
		}
		s.pools.setDisabled(arg, cmd == "disable")
		return commandComplete(nil, strings.ToUpper(cmd))
	case "shutdown":
		switch argLower {
		case "":
			go s.Shutdown(ShutdownImmediate)
			return nil
		case "wait_for_servers":
			go s.Shutdown(ShutdownWaitForServers)
		case "wait_for_clients":
			go s.Shutdown(ShutdownWaitForClients)
		default:
			return adminError(fmt.Sprintf("invalid command '%s', use SHOW HELP;", q))
		}
		return commandComplete(nil, "SHUTDOWN")
	}
	return adminError(fmt.Sprintf("invalid command '%s', use SHOW HELP;", q))
}

func (a *adminSession) set(key, value string) []byte {
	switch key {
	case "client_encoding", "default_transaction_isolation", "standard_conforming_strings", "datestyle", "timezone", "application_name", "extra_float_digits":
		out := appendErrorResponse(nil, 'N', "NOTICE", "00000", "SET ignored")
		return commandComplete(out, "SET")
	}
	if !a.admin {
		return adminError("admin access needed")
	}
	return adminError("SET failed: changing settings from the console is not supported yet; edit the config file and RELOAD")
}

func commandComplete(dst []byte, tag string) []byte {
	dst, p := appendMsg(dst, 'C')
	dst = appendCString(dst, tag)
	return finishMsg(dst, p)
}

// resultSet encodes a whole SHOW result: RowDescription, DataRows (nil
// cells are NULL) and CommandComplete "SHOW".
func resultSet(cols []column, rows [][]*string) []byte {
	b, p := appendMsg(nil, 'T')
	b = appendInt16(b, int16(len(cols)))
	for _, c := range cols {
		b = appendCString(b, c.name)
		b = appendInt32(b, 0)
		b = appendInt16(b, 0)
		b = appendInt32(b, int32(c.oid))
		size := int16(-1)
		switch c.oid {
		case oidInt4:
			size = 4
		case oidInt8:
			size = 8
		}
		b = appendInt16(b, size)
		b = appendInt32(b, -1)
		b = appendInt16(b, 0)
	}
	b = finishMsg(b, p)
	for _, r := range rows {
		b, p = appendMsg(b, 'D')
		b = appendInt16(b, int16(len(r)))
		for _, v := range r {
			if v == nil {
				b = appendInt32(b, -1)
				continue
			}
			b = appendInt32(b, int32(len(*v)))
			b = append(b, *v...)
		}
		b = finishMsg(b, p)
	}
	return commandComplete(b, "SHOW")
}

func sp(s string) *string { return &s }
func ip(n int64) *string  { return sp(strconv.FormatInt(n, 10)) }

func (a *adminSession) show(what, q string) []byte {
	s := a.c.srv
	switch what {
	case "principals":
		return resultSet(textCols("role", "oid", "type", "tenant", "admin", "mfa", "source"), s.principalRows())
	case "signins":
		return resultSet(textCols("time", "client", "database", "role", "method", "tls", "result", "reason", "principal_type", "oid", "upn", "uti", "latency_ms"), s.signinRows())
	case "jwks":
		return resultSet(textCols("issuer", "kid", "tenant", "version", "fetched_at", "source"), s.jwksRows())
	case "version":
		return resultSet([]column{{"version", oidText}}, [][]*string{{sp("PgBouncer 1.25.2 (pgwarden " + Version + ")")}})
	case "help":
		out := appendErrorResponse(nil, 'N', "NOTICE", "00000", "Console usage")
		return commandComplete(out, "SHOW")
	case "pools":
		return resultSet(poolColumns, s.poolRows())
	case "config":
		cfg := s.cfg.Load()
		var rows [][]*string
		for _, st := range cfg.Settings {
			ch := "yes"
			if !st.Changeable {
				ch = "no"
			}
			rows = append(rows, []*string{sp(st.Key), sp(st.Value), sp(st.Default), sp(ch)})
		}
		return resultSet([]column{{"key", oidText}, {"value", oidText}, {"default", oidText}, {"changeable", oidText}}, rows)
	case "state":
		paused := "no"
		for _, p := range s.pools.list() {
			p.mu.Lock()
			if p.mu.paused {
				paused = "yes"
			}
			p.mu.Unlock()
		}
		return resultSet([]column{{"key", oidText}, {"value", oidText}}, [][]*string{{sp("active"), sp("yes")}, {sp("paused"), sp(paused)}, {sp("suspended"), sp("no")}})
	case "stats":
		return resultSet(statsColumns, a.statsRows(true, true))
	case "stats_totals":
		return resultSet(statsTotalsColumns, a.statsRows(true, false))
	case "stats_averages":
		return resultSet(statsAveragesColumns, a.statsRows(false, true))
	case "databases":
		return resultSet(databasesColumns, s.databaseRows())
	case "users":
		return resultSet(usersColumns, s.userRows())
	case "clients":
		return resultSet(clientColumns, s.clientRows())
	case "servers":
		return resultSet(serverColumns, s.serverRows())
	case "lists":
		return resultSet(listsColumns, s.listRows())
	case "mem":
		return resultSet(memColumns, nil)
	case "dns_hosts":
		return resultSet(dnsHostsColumns, nil)
	case "dns_zones":
		return resultSet(dnsZonesColumns, nil)
	case "fds":
		// No fd passing (online restart) in pgwarden: no rows.
		return resultSet(fdsColumns, nil)
	case "client_encoding":
		return resultSet([]column{{"client_encoding", oidText}}, [][]*string{{sp("UTF-8")}})
	case "default_transaction_isolation":
		return resultSet([]column{{"default_transaction_isolation", oidText}}, [][]*string{{sp("read committed")}})
	case "standard_conforming_strings":
		return resultSet([]column{{"standard_conforming_strings", oidText}}, [][]*string{{sp("on")}})
	case "datestyle":
		return resultSet([]column{{"datestyle", oidText}}, [][]*string{{sp("ISO")}})
	case "timezone":
		return resultSet([]column{{"timezone", oidText}}, [][]*string{{sp("GMT")}})
	}
	return adminError(fmt.Sprintf("invalid command '%s', use SHOW HELP;", q))
}

var poolColumns = []column{
	{"database", oidText}, {"user", oidText}, {"cl_active", oidInt4}, {"cl_waiting", oidInt4},
	{"cl_active_cancel_req", oidInt4}, {"cl_waiting_cancel_req", oidInt4}, {"sv_active", oidInt4},
	{"sv_active_cancel", oidInt4}, {"sv_being_canceled", oidInt4}, {"sv_idle", oidInt4}, {"sv_used", oidInt4},
	{"sv_tested", oidInt4}, {"sv_login", oidInt4}, {"maxwait", oidInt4}, {"maxwait_us", oidInt4},
	{"pool_mode", oidText}, {"load_balance_hosts", oidText},
}

// poolRows reads live pool state for SHOW POOLS.
func (s *Server) poolRows() [][]*string {
	var rows [][]*string
	for _, ps := range s.PoolSnapshots() {
		rows = append(rows, []*string{
			sp(ps.Database), sp(ps.User), ip(int64(ps.ClActive)), ip(int64(ps.ClWaiting)), ip(0), ip(0),
			ip(int64(ps.SvActive)), ip(0), ip(0), ip(int64(ps.SvIdle)), ip(0), ip(0),
			ip(int64(ps.SvLogin)), ip(int64(ps.MaxWait / time.Second)), ip(int64((ps.MaxWait % time.Second) / time.Microsecond)),
			sp(ps.PoolMode), nil,
		})
	}
	return rows
}

func textCols(names ...string) []column {
	out := make([]column, len(names))
	for i, n := range names {
		out[i] = column{n, oidText}
	}
	return out
}

func numCols(names ...string) []column {
	out := make([]column, len(names))
	for i, n := range names {
		out[i] = column{n, oidNumeric}
	}
	return out
}

func cols(parts ...[]column) []column {
	var out []column
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	statsColumns = cols(textCols("database"), numCols(
		"total_server_assignment_count", "total_xact_count", "total_query_count", "total_received", "total_sent",
		"total_xact_time", "total_query_time", "total_wait_time", "total_client_parse_count", "total_server_parse_count",
		"total_bind_count", "total_client_login_count",
		"avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
		"avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count", "avg_server_parse_count",
		"avg_bind_count", "avg_client_login_count"))
	statsTotalsColumns = cols(textCols("database"), numCols(
		"server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
		"xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count", "client_login_count"))
	statsAveragesColumns = cols(textCols("database"), numCols(
		"server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
		"xact_time", "query_time", "wait_time", "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count", "avg_client_login_count"))
	databasesColumns = []column{
		{"name", oidText}, {"host", oidText}, {"port", oidInt4}, {"database", oidText}, {"force_user", oidText},
		{"pool_size", oidInt4}, {"min_pool_size", oidInt4}, {"reserve_pool_size", oidInt4}, {"server_lifetime", oidInt4},
		{"pool_mode", oidText}, {"load_balance_hosts", oidText}, {"max_connections", oidInt4}, {"current_connections", oidInt4},
		{"max_client_connections", oidInt4}, {"current_client_connections", oidInt4}, {"paused", oidInt4}, {"disabled", oidInt4},
	}
	usersColumns = []column{
		{"name", oidText}, {"pool_size", oidText}, {"reserve_pool_size", oidText}, {"pool_mode", oidText},
		{"max_user_connections", oidInt4}, {"current_connections", oidInt4},
		{"max_user_client_connections", oidInt4}, {"current_client_connections", oidInt4},
	}
	clientColumns = []column{
		{"type", oidText}, {"user", oidText}, {"database", oidText}, {"replication", oidText}, {"state", oidText},
		{"addr", oidText}, {"port", oidInt4}, {"local_addr", oidText}, {"local_port", oidInt4},
		{"connect_time", oidText}, {"request_time", oidText}, {"wait", oidInt4}, {"wait_us", oidInt4},
		{"close_needed", oidInt4}, {"ptr", oidText}, {"link", oidText}, {"remote_pid", oidInt4}, {"tls", oidText},
		{"application_name", oidText}, {"prepared_statements", oidInt4}, {"id", oidInt4},
	}
	serverColumns   = clientColumns
	listsColumns    = []column{{"list", oidText}, {"items", oidInt4}}
	memColumns      = []column{{"name", oidText}, {"size", oidInt4}, {"used", oidInt4}, {"free", oidInt4}, {"memtotal", oidInt4}}
	dnsHostsColumns = []column{{"hostname", oidText}, {"ttl", oidInt8}, {"addrs", oidText}}
	dnsZonesColumns = []column{{"zonename", oidText}, {"serial", oidInt8}, {"count", oidInt4}}
	fdsColumns      = []column{
		{"fd", oidInt4}, {"task", oidText}, {"user", oidText}, {"database", oidText}, {"addr", oidText}, {"port", oidInt4},
		{"cancel", oidInt8}, {"link", oidInt4}, {"client_encoding", oidText}, {"std_strings", oidText}, {"datestyle", oidText},
		{"timezone", oidText}, {"password", oidText}, {"scram_client_key", oidBytea}, {"scram_server_key", oidBytea},
	}
)

const oidBytea = 17

// statsRows builds SHOW STATS (totals and averages), STATS_TOTALS or
// STATS_AVERAGES rows, one per database. Parse/bind counts are not
// tracked (no prepared-statement support yet), nor are client logins per
// database: those columns are 0.
func (a *adminSession) statsRows(totals, avgs bool) [][]*string {
	s := a.c.srv
	tot := s.statsByDB()
	av := s.adminState().averages()
	var rows [][]*string
	for _, db := range s.statsDatabases() {
		row := []*string{sp(db)}
		if totals {
			t := tot[db]
			row = append(row, ip(t.assign), ip(t.xacts), ip(t.queries), ip(t.recv), ip(t.sent),
				ip(t.xactTime), ip(t.queryTime), ip(t.waitTime), ip(0), ip(0), ip(0), ip(0))
		}
		if avgs {
			v := av[db]
			row = append(row, ip(v.assign), ip(v.xacts), ip(v.queries), ip(v.recv), ip(v.sent),
				ip(v.xactTime), ip(v.queryTime), ip(v.waitTime), ip(0), ip(0), ip(0), ip(0))
		}
		rows = append(rows, row)
	}
	return rows
}

func (s *Server) databaseRows() [][]*string {
	cfg := s.cfg.Load()
	servers := map[string]int64{}
	paused := map[string]bool{}
	for _, p := range s.pools.list() {
		servers[p.key.db] += p.serverCount()
		if p.isPaused() {
			paused[p.key.db] = true
		}
	}
	clients := map[string]int64{}
	for _, v := range s.clientViews() {
		clients[v.db]++
	}
	b := func(v bool) *string {
		if v {
			return ip(1)
		}
		return ip(0)
	}
	var names []string
	for n := range cfg.Databases {
		if n != "*" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	rows := [][]*string{{sp("pgbouncer"), nil, ip(int64(cfg.ListenPort)), sp("pgbouncer"), sp("pgbouncer"),
		ip(2), ip(0), ip(0), ip(0), sp("statement"), nil, ip(0), ip(0), ip(0), ip(clients["pgbouncer"]), ip(0), ip(0)}}
	for _, n := range names {
		db := cfg.Databases[n]
		var force, mode, lb *string
		if db.User != "" {
			force = sp(db.User)
		}
		if db.PoolMode != config.PoolModeUnset {
			mode = sp(db.PoolMode.String())
		}
		if isHostList(db.Host) {
			lb = sp("round-robin")
		}
		port := db.Port
		if port == 0 {
			port = 5432
		}
		dbname := db.DBName
		if dbname == "" {
			dbname = n
		}
		rows = append(rows, []*string{sp(n), sp(db.Host), ip(int64(port)), sp(dbname), force,
			ip(int64(cfg.EffectivePoolSize(db, db.User))), ip(int64(cfg.EffectiveMinPoolSize(db))),
			ip(int64(cfg.EffectiveReservePoolSize(db, db.User))), ip(int64(cfg.EffectiveServerLifetime(db) / time.Second)),
			mode, lb, ip(int64(cfg.EffectiveMaxDBConnections(db))), ip(servers[n]),
			ip(0), ip(clients[n]), b(paused[n]), b(s.pools.isDisabled(n))})
	}
	return rows
}

func (s *Server) userRows() [][]*string {
	cfg := s.cfg.Load()
	servers := map[string]int64{}
	for _, p := range s.pools.list() {
		servers[p.key.user] += p.serverCount()
	}
	clients := map[string]int64{}
	for _, v := range s.clientViews() {
		clients[v.user]++
	}
	padded := func(n int) *string {
		if n < 0 {
			return sp("")
		}
		return sp(fmt.Sprintf("%9d", n))
	}
	var rows [][]*string
	for _, n := range userNames(cfg) {
		poolSize, resSize, maxConn := -1, -1, cfg.MaxUserConnections
		var mode *string
		if u := cfg.Users[n]; u != nil {
			poolSize, resSize = u.PoolSize, u.ReservePoolSize
			if u.MaxUserConnections >= 0 {
				maxConn = u.MaxUserConnections
			}
			if u.PoolMode != config.PoolModeUnset {
				mode = sp(u.PoolMode.String())
			}
		}
		rows = append(rows, []*string{sp(n), padded(poolSize), padded(resSize), mode,
			ip(int64(maxConn)), ip(servers[n]), ip(0), ip(clients[n])})
	}
	return rows
}

func (s *Server) clientRows() [][]*string {
	cfg := s.cfg.Load()
	var rows [][]*string
	now := time.Now()
	for _, v := range s.clientViews() {
		c := v.c
		addr, port := splitAddr(c.raw.RemoteAddr(), cfg.ListenPort)
		laddr, lport := splitAddr(c.raw.LocalAddr(), cfg.ListenPort)
		var wait time.Duration
		if !v.waitFrom.IsZero() {
			wait = now.Sub(v.waitFrom)
		}
		var link *string
		var pid int64
		if v.link != nil {
			link = sp(ptrText(v.link))
			pid = int64(v.link.pid)
		}
		closeNeeded := int64(0)
		if v.closeNeeded {
			closeNeeded = 1
		}
		rows = append(rows, []*string{sp("C"), sp(v.user), sp(v.db), sp("none"), sp(v.state),
			sp(addr), ip(int64(port)), sp(laddr), ip(int64(lport)),
			sp(pgTime(v.connectTime)), sp(pgTime(v.requestTime)),
			ip(int64(wait / time.Second)), ip(int64(wait % time.Second / time.Microsecond)), ip(closeNeeded),
			sp(ptrText(c)), link, ip(pid), sp(v.tls), sp(v.appName), ip(0), ip(int64(c.id))})
	}
	return rows
}

func (s *Server) serverRows() [][]*string {
	var rows [][]*string
	for _, v := range s.serverViews() {
		sc := v.sc
		addr, port := splitAddr(sc.conn.RemoteAddr(), 0)
		laddr, lport := splitAddr(sc.conn.LocalAddr(), 0)
		var link *string
		if v.client != nil {
			link = sp(ptrText(v.client))
		}
		rows = append(rows, []*string{sp("S"), sp(v.pool.key.user), sp(v.pool.key.db), sp("none"), sp(v.state),
			sp(addr), ip(int64(port)), sp(laddr), ip(int64(lport)),
			sp(pgTime(sc.created)), sp(pgTime(sc.created)), ip(0), ip(0), ip(0),
			sp(ptrText(sc)), link, ip(int64(sc.pid)), sp(sc.tlsDescription()), sp(""), ip(0), ip(0)})
	}
	return rows
}

func (s *Server) listRows() [][]*string {
	cfg := s.cfg.Load()
	pools := s.pools.list()
	var servers int64
	for _, p := range pools {
		servers += p.serverCount()
	}
	var used, login int64
	s.mu.Lock()
	for c := range s.mu.clients {
		c.mu.Lock()
		if c.mu.state == stateLogin && c.admin == nil {
			login++
		} else {
			used++
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	ndb := int64(1) // pgbouncer
	for n := range cfg.Databases {
		if n != "*" {
			ndb++
		}
	}
	row := func(name string, n int64) []*string { return []*string{sp(name), ip(n)} }
	return [][]*string{
		row("databases", ndb), row("users", int64(len(userNames(cfg)))), row("peers", 0), row("pools", int64(len(pools))),
		row("peer_pools", 0), row("free_clients", 0), row("used_clients", used), row("login_clients", login),
		row("free_servers", 0), row("used_servers", servers), row("dns_names", 0), row("dns_zones", 0),
		row("dns_queries", 0), row("dns_pending", 0),
	}
}

// principalRows is SHOW PRINCIPALS: the Entra principals in force.
func (s *Server) principalRows() [][]*string {
	es := s.entra.Load()
	if es == nil {
		return nil
	}
	var rows [][]*string
	for _, p := range es.principals.Load().All() {
		rows = append(rows, []*string{sp(p.Role), sp(p.OID), sp(p.Type), sp(p.Tenant), sp(yesNo(p.Admin)), sp(yesNo(p.MFA)), sp(p.Source)})
	}
	return rows
}

// jwksRows is SHOW JWKS: the signing keys trusted now.
func (s *Server) jwksRows() [][]*string {
	es := s.entra.Load()
	if es == nil {
		return nil
	}
	var rows [][]*string
	for _, k := range es.v.Keys() {
		rows = append(rows, []*string{sp(k.Issuer), sp(k.KID), sp(k.Tenant), sp(k.Version), sp(pgTime(k.FetchedAt)), sp(k.Source)})
	}
	return rows
}

// signinRows is SHOW SIGNINS: the last sign-in attempts, newest first.
func (s *Server) signinRows() [][]*string {
	var rows [][]*string
	for _, ev := range s.signins.recent() {
		result := "ok"
		if !ev.OK {
			result = "refused"
		}
		rows = append(rows, []*string{sp(pgTime(ev.Time)), sp(ev.Client), sp(ev.Database), sp(ev.User), sp(ev.Method), sp(yesNo(ev.TLS)),
			sp(result), sp(ev.Reason), sp(ev.PrincipalType), sp(ev.OID), sp(ev.UPN), sp(ev.UTI), sp(strconv.FormatFloat(float64(ev.Latency.Microseconds())/1000, 'f', 3, 64))})
	}
	return rows
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
