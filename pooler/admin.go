package pooler

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

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
	// The process owner on the Unix socket, and Entra principals marked
	// admin, get full rights; others need admin_users or stats_users.
	if c.identity != nil && (c.identity.processOwner || c.identity.Principal != nil && c.identity.Principal.Admin) {
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

// cancel is a Ctrl-C on the console: it ends a waiting PAUSE (with
// RESUME) or WAIT_CLOSE.
func (a *adminSession) cancel() {
	a.mu.Lock()
	f := a.cancelFn
	a.mu.Unlock()
	if f != nil {
		f()
	}
}

func (a *adminSession) run() error {
	// A SUSPEND this session started ends with it, as in PgBouncer.
	defer func() {
		if a.c.srv.pools.consoleGone(a) {
			a.c.srv.log.Info("console that ran SUSPEND disconnected; resuming")
		}
	}()
	for {
		t, body, err := a.rd.readMessage()
		if err != nil {
			switch {
			case errors.Is(err, errMessageTooLarge):
				return newError(codeMessageTooLarge, "console messages are limited to 1 MiB")
			case errors.Is(err, errBadMessageLength):
				return newError(codeProtocolViolation, "invalid message length")
			}
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
			a.countErrors(out)
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

// The console's grammar, as PgBouncer's admin.c: one command word and an
// optional argument (a word or a "quoted" identifier), or SET key = value
// where value is a word or a 'string'. pgwarden's words also allow the
// characters . and - in SET values (SET query_timeout = 2.5).
var (
	reAdminCmd = regexp.MustCompile(`(?i)^\s*("(?:[^"]|"")*"|[0-9a-z_]+)(?:\s+("(?:[^"]|"")*"|[0-9a-z_]+))?\s*(?:;\s*)?$`)
	reAdminSet = regexp.MustCompile(`(?i)^\s*set\s+("(?:[^"]|"")*"|[0-9a-z_]+)(?:\s*=\s*|\s+to\s+)('(?:[^']|'')*'|"(?:[^"]|"")*"|[0-9a-z_.\-]+)\s*(?:;\s*)?$`)
)

// unquote strips q quotes, undoubling inner ones.
func unquote(s string, q byte) string {
	if len(s) >= 2 && s[0] == q && s[len(s)-1] == q {
		return strings.ReplaceAll(s[1:len(s)-1], string([]byte{q, q}), string(q))
	}
	return s
}

// countErrors tells the observer about each ErrorResponse in a console
// reply (code "admin_command", with the reply's SQLSTATE), so that
// pgwarden_client_errors_total counts the console's refusals too.
func (a *adminSession) countErrors(out []byte) {
	for len(out) >= 5 {
		l := int(binary.BigEndian.Uint32(out[1:]))
		if l < 4 || 1+l > len(out) {
			return
		}
		if out[0] == 'E' {
			_, code, _ := parseErrorFields(out[5 : 1+l])
			a.c.srv.opts.Observer.ClientError("admin_command", code)
		}
		out = out[1+l:]
	}
}

func adminError(msg string) []byte {
	return appendErrorResponse(nil, 'E', "ERROR", "08P01", msg)
}

func adminErrorf(format string, args ...any) []byte {
	return adminError(fmt.Sprintf(format, args...))
}

// syntaxError is PgBouncer's reply to anything it does not understand.
func syntaxError(q string) []byte {
	return adminErrorf("invalid command '%s', use SHOW HELP;", q)
}

// errAdminNeeded is the reply to a stats user running an admin command.
var errAdminNeeded = "admin access needed"

// consoleCommands are the commands other than SHOW/SELECT. Each checks its
// argument, then admin rights, as PgBouncer does. (Filled in by init: the
// commands reach the session code that runs exec, which reads the table.)
var consoleCommands map[string]func(a *adminSession, arg, q string) []byte

func init() { consoleCommands = consoleCommandTable() }

func consoleCommandTable() map[string]func(a *adminSession, arg, q string) []byte {
	return map[string]func(a *adminSession, arg, q string) []byte{
		"pause":       (*adminSession).cmdPause,
		"resume":      (*adminSession).cmdResume,
		"suspend":     (*adminSession).cmdSuspend,
		"reload":      (*adminSession).cmdReload,
		"reconnect":   (*adminSession).cmdReconnect,
		"kill":        (*adminSession).cmdKill,
		"kill_client": (*adminSession).cmdKillClient,
		"wait_close":  (*adminSession).cmdWaitClose,
		"disable":     (*adminSession).cmdDisableEnable,
		"enable":      (*adminSession).cmdDisableEnable,
		"shutdown":    (*adminSession).cmdShutdown,
	}
}

// exec runs one console command and returns the reply without the final
// ReadyForQuery; nil means "close the connection".
func (a *adminSession) exec(q string) []byte {
	if q == "" {
		return append([]byte{}, 'I', 0, 0, 0, 4)
	}
	if m := reAdminCmd.FindStringSubmatch(q); m != nil {
		cmd := strings.ToLower(unquote(m[1], '"'))
		arg := unquote(m[2], '"')
		// PgBouncer's buffers: 16 bytes for the command, 64 for the
		// argument (with the terminating NUL).
		if len(cmd) >= 16 || len(arg) >= 64 {
			return adminError("bad arguments")
		}
		if cmd == "show" || cmd == "select" {
			return a.show(arg, q)
		}
		f, ok := consoleCommands[cmd]
		if !ok {
			return syntaxError(q)
		}
		return f(a, arg, q)
	}
	if m := reAdminSet.FindStringSubmatch(q); m != nil {
		key := unquote(m[1], '"')
		val := m[2]
		if strings.HasPrefix(val, "'") {
			val = unquote(val, '\'')
		} else {
			val = unquote(val, '"')
		}
		if key == "" || len(key) >= 64 || len(val) >= 256 {
			return adminError("bad arguments")
		}
		return a.set(key, val)
	}
	return syntaxError(q)
}

// dbArg checks a database argument of PAUSE, RESUME, KILL, RECONNECT,
// WAIT_CLOSE, DISABLE and ENABLE: not the console's own (verb is how
// PgBouncer words that error: "cannot pause admin db: pgbouncer"), and
// configured (or matched by "*").
func (a *adminSession) dbArg(arg, verb string) []byte {
	if arg == "pgbouncer" {
		return adminErrorf("cannot %s admin db: %s", verb, arg)
	}
	if _, ok := a.c.srv.cfg.Load().LookupDatabase(arg); !ok {
		return adminErrorf("no such database: %s", arg)
	}
	return nil
}

// wait runs f (a waiting command) so that a cancel request on the console
// (Ctrl-C in psql) ends it: f's context is then canceled.
func (a *adminSession) wait(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.mu.Lock()
	a.cancelFn = cancel
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.cancelFn = nil
		a.mu.Unlock()
	}()
	go func() {
		// The pooler shutting down ends the wait too.
		select {
		case <-a.c.srv.shutdownCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	return f(ctx)
}

// checkPausable runs PAUSE's and KILL's checks, in PgBouncer's order:
// admin rights, no pooler-wide pause in force, then the database argument.
// It returns the error reply, or nil.
func (a *adminSession) checkPausable(arg, verb string) []byte {
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	if a.c.srv.pools.pause.mode() != pauseNone {
		return adminError(errAlreadyPaused)
	}
	if arg != "" {
		return a.dbArg(arg, verb)
	}
	return nil
}

func (a *adminSession) cmdPause(arg, q string) []byte {
	if e := a.checkPausable(arg, "pause"); e != nil {
		return e
	}
	s := a.c.srv
	if e := s.pools.startPause(arg); e != "" {
		return adminError(e)
	}
	s.log.Info("PAUSE command issued", "db", arg)
	if err := a.wait(func(ctx context.Context) error { return s.pools.drain(ctx, arg) }); err != nil {
		s.pools.resume(arg)
		return adminError("PAUSE canceled")
	}
	return commandComplete(nil, "PAUSE")
}

func (a *adminSession) cmdResume(arg, q string) []byte {
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	s := a.c.srv
	if arg == "" && s.shuttingDown() {
		return adminError(errShuttingDownAdmin)
	}
	if arg != "" {
		if _, ok := s.cfg.Load().LookupDatabase(arg); !ok {
			return adminErrorf("no such database: %s", arg)
		}
	}
	if e := s.pools.resume(arg); e != "" {
		return adminError(e)
	}
	s.log.Info("RESUME command issued", "db", arg)
	return commandComplete(nil, "RESUME")
}

func (a *adminSession) cmdSuspend(arg, q string) []byte {
	if arg != "" {
		return syntaxError(q)
	}
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	s := a.c.srv
	if e := s.pools.suspend(a); e != "" {
		return adminError(e)
	}
	s.log.Info("SUSPEND command issued")
	return commandComplete(nil, "SUSPEND")
}

func (a *adminSession) cmdReload(arg, q string) []byte {
	if arg != "" {
		return syntaxError(q)
	}
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	s := a.c.srv
	s.log.Info("RELOAD command issued")
	if hook := s.reloadHook.Load(); hook != nil {
		if err := (*hook)(); err != nil {
			s.log.Error("RELOAD failed", "err", err)
			return appendErrorResponse(nil, 'E', "ERROR", "F0000", "RELOAD failed, see logs for additional details")
		}
	}
	return commandComplete(nil, "RELOAD")
}

func (a *adminSession) cmdReconnect(arg, q string) []byte {
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	if arg != "" {
		if e := a.dbArg(arg, "reconnect"); e != nil {
			return e
		}
	}
	s := a.c.srv
	s.log.Info("RECONNECT command issued", "db", arg)
	for _, p := range s.pools.list() {
		if arg == "" || p.key.db == arg {
			p.reconnect()
		}
	}
	return commandComplete(nil, "RECONNECT")
}

func (a *adminSession) cmdKill(arg, q string) []byte {
	if e := a.checkPausable(arg, "kill"); e != nil {
		return e
	}
	s := a.c.srv
	if e := s.pools.kill(arg); e != "" {
		return adminError(e)
	}
	s.log.Info("KILL command issued", "db", arg)
	return commandComplete(nil, "KILL")
}

func (a *adminSession) cmdKillClient(arg, q string) []byte {
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return adminError("invalid client pointer supplied")
	}
	s := a.c.srv
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
}

// cmdWaitClose waits until the server connections RECONNECT, KILL, a
// RELOAD or a resize marked for closing are gone.
func (a *adminSession) cmdWaitClose(arg, q string) []byte {
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	if arg != "" {
		if e := a.dbArg(arg, "wait in"); e != nil {
			return e
		}
	}
	s := a.c.srv
	s.log.Info("WAIT_CLOSE command issued", "db", arg)
	err := a.wait(func(ctx context.Context) error {
		for {
			n := 0
			for _, p := range s.pools.list() {
				if arg == "" || p.key.db == arg {
					n += p.staleCount()
				}
			}
			if n == 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return adminError("WAIT_CLOSE canceled")
	}
	return commandComplete(nil, "WAIT_CLOSE")
}

// cmdDisableEnable: new sign-ins to the database are refused ("database
// "x" is disabled"); connected clients stay.
func (a *adminSession) cmdDisableEnable(arg, q string) []byte {
	cmd := strings.ToLower(strings.Fields(q)[0])
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	if arg == "" {
		return adminError("a database is required")
	}
	if e := a.dbArg(arg, cmd); e != nil {
		return e
	}
	s := a.c.srv
	s.log.Info(strings.ToUpper(cmd)+" command issued", "db", arg)
	s.pools.setDisabled(arg, cmd == "disable")
	return commandComplete(nil, strings.ToUpper(cmd))
}

func (a *adminSession) cmdShutdown(arg, q string) []byte {
	mode := ShutdownImmediate
	switch strings.ToLower(arg) {
	case "":
	case "wait_for_servers":
		mode = ShutdownWaitForServers
	case "wait_for_clients":
		mode = ShutdownWaitForClients
	default:
		return syntaxError(q)
	}
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	s := a.c.srv
	s.log.Info("SHUTDOWN command issued", "mode", strings.ToUpper(arg))
	go s.Shutdown(mode)
	if mode == ShutdownImmediate {
		// No reply: the connection is held until the process exits.
		return nil
	}
	return commandComplete(nil, "SHUTDOWN")
}

// fakeParams are the settings a console client may SHOW or SET without
// effect (drivers probe them), with PgBouncer's values.
var fakeParams = map[string]string{
	"client_encoding":               "UTF-8",
	"default_transaction_isolation": "read committed",
	"standard_conforming_strings":   "on",
	"datestyle":                     "ISO",
	"timezone":                      "GMT",
}

// SetApplyHook sets the function the console's SET calls with the changed
// configuration (the binary also re-applies its logging settings); without
// one, SET calls Reload.
func (s *Server) SetApplyHook(f func(*config.Config) ([]string, error)) { s.setHook.Store(&f) }

// set is SET key = value: a reloadable [pgbouncer] key changed live, by the
// same path as RELOAD (Reload). It lasts until the next RELOAD or SIGHUP,
// which read the file again.
func (a *adminSession) set(key, value string) []byte {
	lk := strings.ToLower(key)
	if _, ok := fakeParams[lk]; ok {
		out := appendErrorResponse(nil, 'N', "NOTICE", "00000", "SET ignored")
		return commandComplete(out, "SET")
	}
	if !a.admin {
		return adminError(errAdminNeeded)
	}
	s := a.c.srv
	ncfg, err := s.cfg.Load().WithSetting(lk, value)
	if err != nil {
		state := "22023" // invalid_parameter_value
		switch {
		case errors.Is(err, config.ErrUnknownSetting):
			state = "42704" // undefined_object
		case errors.Is(err, config.ErrRestartSetting):
			state = "55P02" // cant_change_runtime_param
		}
		return appendErrorResponse(nil, 'E', "ERROR", state, "SET failed: "+oneLine(err.Error()))
	}
	apply := func(c *config.Config) ([]string, error) { return s.Reload(c) }
	if hook := s.setHook.Load(); hook != nil {
		apply = *hook
	}
	warnings, err := apply(ncfg)
	if err != nil {
		s.log.Error("SET failed", "key", lk, "err", err)
		return appendErrorResponse(nil, 'E', "ERROR", "F0000", "SET failed: "+oneLine(err.Error()))
	}
	s.log.Info("SET command issued", "key", lk, "value", value)
	var out []byte
	for _, w := range warnings {
		out = appendErrorResponse(out, 'N', "WARNING", "01000", w)
	}
	if !config.Implemented(lk) {
		out = appendErrorResponse(out, 'N', "NOTICE", "00000", lk+" is accepted for compatibility but has no effect in pgwarden")
	}
	return commandComplete(out, "SET "+lk+"="+value)
}

// oneLine joins a multi-line error (several config problems) for a
// console message.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

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

// helpText is SHOW HELP's NOTICE detail: PgBouncer 1.25's list, plus
// pgwarden's own SHOW commands.
const helpText = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n" +
	"\tSHOW PEERS|PEER_POOLS\n" +
	"\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n" +
	"\tSHOW DNS_HOSTS|DNS_ZONES\n" +
	"\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n" +
	"\tSHOW PRINCIPALS|SIGNINS|JWKS|THROTTLE\n" +
	"\tSET key = arg\n" +
	"\tRELOAD\n" +
	"\tPAUSE [<db>]\n" +
	"\tRESUME [<db>]\n" +
	"\tDISABLE <db>\n" +
	"\tENABLE <db>\n" +
	"\tRECONNECT [<db>]\n" +
	"\tKILL [<db>]\n" +
	"\tKILL_CLIENT <client_id>\n" +
	"\tSUSPEND\n" +
	"\tSHUTDOWN\n" +
	"\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n" +
	"\tWAIT_CLOSE [<db>]"

// appendNotice appends a NoticeResponse with a detail field.
func appendNotice(dst []byte, msg, detail string) []byte {
	dst, p := appendMsg(dst, 'N')
	for _, f := range []struct {
		t byte
		v string
	}{{'S', "NOTICE"}, {'V', "NOTICE"}, {'C', "00000"}, {'M', msg}, {'D', detail}} {
		dst = append(dst, f.t)
		dst = appendCString(dst, f.v)
	}
	dst = append(dst, 0)
	return finishMsg(dst, p)
}

// show runs SHOW what (SELECT what is the same); q is the whole query, for
// the error text.
func (a *adminSession) show(what, q string) []byte {
	s := a.c.srv
	what = strings.ToLower(what)
	if v, ok := fakeParams[what]; ok {
		return resultSet([]column{{what, oidText}}, [][]*string{{sp(v)}})
	}
	switch what {
	case "help":
		return commandComplete(appendNotice(nil, "Console usage", helpText), "SHOW")
	case "version":
		return resultSet([]column{{"version", oidText}}, [][]*string{{sp("PgBouncer 1.25.2 (pgwarden " + Version + ")")}})
	case "config":
		cfg := s.cfg.Load()
		var rows [][]*string
		for _, st := range cfg.Settings {
			rows = append(rows, []*string{sp(st.Key), sp(st.Value), sp(st.Default), sp(yesNo(st.Changeable))})
		}
		return resultSet(configColumns, rows)
	case "state":
		mode := s.pools.pause.mode()
		return resultSet(stateColumns, [][]*string{
			{sp("active"), sp(yesNo(mode == pauseNone))},
			{sp("paused"), sp(yesNo(mode == pauseAll))},
			{sp("suspended"), sp(yesNo(mode == pauseSuspend))},
		})
	case "pools":
		return resultSet(poolColumns, s.poolRows())
	case "stats":
		return resultSet(statsColumns, a.statsRows(true, true))
	case "stats_totals":
		return resultSet(statsTotalsColumns, a.statsRows(true, false))
	case "stats_averages":
		return resultSet(statsAveragesColumns, a.statsRows(false, true))
	case "totals":
		return resultSet(totalsColumns, a.totalsRows())
	case "databases":
		return resultSet(databasesColumns, s.databaseRows())
	case "users":
		return resultSet(usersColumns, s.userRows())
	case "clients":
		return resultSet(clientColumns, s.clientRows())
	case "servers":
		return resultSet(serverColumns, s.serverRows())
	case "sockets":
		return resultSet(socketColumns, s.socketRows())
	case "active_sockets":
		// Sockets with data buffered in the pooler: pgwarden's relay
		// forwards what it reads before reading more and keeps no
		// per-socket send queue, so there are none between commands.
		return resultSet(socketColumns, nil)
	case "peers":
		return resultSet(peersColumns, s.peerRows())
	case "peer_pools":
		return resultSet(peerPoolsColumns, nil)
	case "lists":
		return resultSet(listsColumns, s.listRows())
	case "mem":
		return resultSet(memColumns, s.memRows())
	case "dns_hosts":
		// Host names are resolved by the Go resolver at each connect;
		// there is no DNS cache to show.
		return resultSet(dnsHostsColumns, nil)
	case "dns_zones":
		return resultSet(dnsZonesColumns, nil)
	case "fds":
		if !a.admin {
			return adminError(errAdminNeeded)
		}
		// No fd passing (online restart) in pgwarden: no rows.
		return resultSet(fdsColumns, nil)
	case "principals":
		return resultSet(principalsColumns, s.principalRows())
	case "signins":
		return resultSet(signinsColumns, s.signinRows())
	case "jwks":
		return resultSet(jwksColumns, s.jwksRows())
	case "throttle":
		return resultSet(throttleColumns, s.throttleRows())
	}
	return syntaxError(q)
}

var poolColumns = []column{
	{"database", oidText}, {"user", oidText}, {"cl_active", oidInt4}, {"cl_waiting", oidInt4},
	{"cl_active_cancel_req", oidInt4}, {"cl_waiting_cancel_req", oidInt4}, {"sv_active", oidInt4},
	{"sv_active_cancel", oidInt4}, {"sv_being_canceled", oidInt4}, {"sv_idle", oidInt4}, {"sv_used", oidInt4},
	{"sv_tested", oidInt4}, {"sv_login", oidInt4}, {"maxwait", oidInt4}, {"maxwait_us", oidInt4},
	{"pool_mode", oidText}, {"load_balance_hosts", oidText},
}

// poolRows reads live pool state for SHOW POOLS: the pools, and the
// console's own (pgbouncer, pgbouncer) pool as PgBouncer lists it, its
// clients active, statement mode.
func (s *Server) poolRows() [][]*string {
	cfg := s.cfg.Load()
	var console int64
	for _, v := range s.clientViews() {
		if v.db == "pgbouncer" {
			console++
		}
	}
	rows := [][]*string{{sp("pgbouncer"), sp("pgbouncer"), ip(console), ip(0), ip(0), ip(0),
		ip(0), ip(0), ip(0), ip(0), ip(0), ip(0), ip(0), ip(0), ip(0), sp("statement"), nil}}
	for _, ps := range s.PoolSnapshots() {
		var lb *string
		if db, ok := cfg.LookupDatabase(ps.Database); ok && isHostList(db.Host) {
			lb = sp("round-robin")
		}
		rows = append(rows, []*string{
			sp(ps.Database), sp(ps.User), ip(int64(ps.ClActive)), ip(int64(ps.ClWaiting)), ip(0), ip(0),
			ip(int64(ps.SvActive)), ip(0), ip(0), ip(int64(ps.SvIdle)), ip(0), ip(0),
			ip(int64(ps.SvLogin)), ip(int64(ps.MaxWait / time.Second)), ip(int64((ps.MaxWait % time.Second) / time.Microsecond)),
			sp(ps.PoolMode), lb,
		})
	}
	sort.SliceStable(rows, func(i, j int) bool { return *rows[i][0] < *rows[j][0] })
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
		"total_bind_count",
		"avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
		"avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count", "avg_server_parse_count",
		"avg_bind_count"))
	statsTotalsColumns = cols(textCols("database"), numCols(
		"server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
		"xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count"))
	statsAveragesColumns = cols(textCols("database"), numCols(
		"server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
		"xact_time", "query_time", "wait_time", "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"))
	// SHOW TOTALS: total_<f> then avg_<f> rows for PgBouncer's internal
	// field names.
	totalsColumns = cols(textCols("name"), numCols("value"))
	totalsFields  = []string{"server_assignment_count", "xact_count", "query_count", "client_bytes", "server_bytes",
		"xact_time", "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count", "ps_bind_count"}
	configColumns     = textCols("key", "value", "default", "changeable")
	stateColumns      = textCols("key", "value")
	peersColumns      = []column{{"peer_id", oidInt4}, {"host", oidText}, {"port", oidInt4}, {"pool_size", oidInt4}}
	peerPoolsColumns  = []column{{"peer_id", oidInt4}, {"cl_active_cancel_req", oidInt4}, {"cl_waiting_cancel_req", oidInt4}, {"sv_active_cancel", oidInt4}, {"sv_login", oidInt4}}
	principalsColumns = textCols("role", "oid", "type", "tenant", "admin", "mfa", "source")
	signinsColumns    = textCols("time", "client", "database", "role", "method", "tls", "result", "reason", "principal_type", "oid", "upn", "uti", "latency_ms")
	jwksColumns       = textCols("issuer", "kid", "tenant", "version", "fetched_at", "source")
	databasesColumns  = []column{
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
	serverColumns = clientColumns
	// SHOW SOCKETS: the client and server columns plus PgBouncer's
	// buffer positions.
	socketColumns   = cols(clientColumns, []column{{"recv_pos", oidInt4}, {"pkt_pos", oidInt4}, {"pkt_remain", oidInt4}, {"send_pos", oidInt4}, {"send_remain", oidInt4}, {"pkt_avail", oidInt4}, {"send_avail", oidInt4}})
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
// STATS_AVERAGES rows, one per database.
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
				ip(t.xactTime), ip(t.queryTime), ip(t.waitTime), ip(t.clientParses), ip(t.serverParses), ip(t.binds))
		}
		if avgs {
			v := av[db]
			row = append(row, ip(v.assign), ip(v.xacts), ip(v.queries), ip(v.recv), ip(v.sent),
				ip(v.xactTime), ip(v.queryTime), ip(v.waitTime), ip(v.clientParses), ip(v.serverParses), ip(v.binds))
		}
		rows = append(rows, row)
	}
	return rows
}

func (s *Server) databaseRows() [][]*string {
	cfg := s.cfg.Load()
	servers := map[string]int64{}
	for _, p := range s.pools.list() {
		servers[p.key.db] += p.serverCount()
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
			ip(0), ip(clients[n]), b(s.pools.pause.dbPaused(n)), b(s.pools.isDisabled(n))})
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
		addr, port := splitAddr(c.raddr, cfg.ListenPort)
		laddr, lport := splitAddr(c.laddr, cfg.ListenPort)
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
		rows = append(rows, []*string{sp("C"), sp(v.user), sp(v.db), sp(v.repl.String()), sp(v.state),
			sp(addr), ip(int64(port)), sp(laddr), ip(int64(lport)),
			sp(pgTime(v.connectTime)), sp(pgTime(v.requestTime)),
			ip(int64(wait / time.Second)), ip(int64(wait % time.Second / time.Microsecond)), ip(closeNeeded),
			sp(ptrText(c)), link, ip(pid), sp(v.tls), sp(v.appName), ip(int64(v.prepared)), ip(int64(c.id))})
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
		rows = append(rows, []*string{sp("S"), sp(v.pool.key.user), sp(v.pool.key.db), sp(v.repl.String()), sp(v.state),
			sp(addr), ip(int64(port)), sp(laddr), ip(int64(lport)),
			sp(pgTime(sc.created)), sp(pgTime(sc.created)), ip(0), ip(0), ip(b2i(v.pool.stale(sc))),
			sp(ptrText(sc)), link, ip(int64(sc.pid)), sp(sc.tlsDescription()), sp(""), ip(int64(sc.stmts.n.Load())), ip(0)})
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
		row("databases", ndb), row("users", int64(len(userNames(cfg)))), row("peers", int64(len(cfg.Peers))), row("pools", int64(len(pools))+1), // + the console's
		row("peer_pools", 0), row("free_clients", 0), row("used_clients", used), row("login_clients", login),
		row("free_servers", 0), row("used_servers", servers), row("dns_names", 0), row("dns_zones", 0),
		row("dns_queries", 0), row("dns_pending", 0),
	}
}

// principalRows is SHOW PRINCIPALS: the Entra principals in force.
// peerRows lists [peers] (SHOW PEERS): id, host, port and the cap on
// cancels forwarded to it at once.
func (s *Server) peerRows() [][]*string {
	cfg := s.cfg.Load()
	rows := make([][]*string, 0, len(cfg.Peers))
	for _, p := range cfg.Peers {
		size := p.PoolSize
		if size == 0 {
			size = cfg.DefaultPoolSize
		}
		rows = append(rows, []*string{ip(int64(p.ID)), sp(p.Host), ip(int64(p.Port)), ip(int64(size))})
	}
	return rows
}

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

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// totalsRows is SHOW TOTALS: every database's counters summed, then the
// averages over the last stats_period.
func (a *adminSession) totalsRows() [][]*string {
	s := a.c.srv
	var t dbStats
	for _, d := range s.statsByDB() {
		t = t.add(d)
	}
	v := s.adminState().total()
	tv := []int64{t.assign, t.xacts, t.queries, t.recv, t.sent, t.xactTime, t.queryTime, t.waitTime, 0, 0, 0}
	av := []int64{v.assign, v.xacts, v.queries, v.recv, v.sent, v.xactTime, v.queryTime, v.waitTime, 0, 0, 0}
	rows := make([][]*string, 0, 2*len(totalsFields))
	for i, f := range totalsFields {
		rows = append(rows, []*string{sp("total_" + f), ip(tv[i])})
	}
	for i, f := range totalsFields {
		rows = append(rows, []*string{sp("avg_" + f), ip(av[i])})
	}
	return rows
}

// socketRows is SHOW SOCKETS: the rows of SHOW CLIENTS and SHOW SERVERS
// with their states prefixed (cl_, sv_) and the buffer columns, which are
// 0: pgwarden keeps no per-socket buffers between requests.
func (s *Server) socketRows() [][]*string {
	var rows [][]*string
	add := func(prefix string, rs [][]*string) {
		for _, r := range rs {
			r[4] = sp(prefix + *r[4])
			for range 7 {
				r = append(r, ip(0))
			}
			rows = append(rows, r)
		}
	}
	add("cl_", s.clientRows())
	add("sv_", s.serverRows())
	return rows
}

// memRows is SHOW MEM, approximated: PgBouncer reports its slab caches;
// pgwarden reports the same cache names for the objects it has (clients,
// servers, pools, databases, users) with Go's sizes of those objects, and
// free = 0 (Go's allocator keeps no per-type free lists).
func (s *Server) memRows() [][]*string {
	cfg := s.cfg.Load()
	var clients, servers int64
	s.mu.Lock()
	clients = int64(len(s.mu.clients))
	s.mu.Unlock()
	pools := s.pools.list()
	for _, p := range pools {
		servers += p.serverCount()
	}
	row := func(name string, size uintptr, used int64) []*string {
		return []*string{sp(name), ip(int64(size)), ip(used), ip(0), ip(int64(size) * used)}
	}
	return [][]*string{
		row("user_cache", unsafe.Sizeof(config.User{}), int64(len(userNames(cfg)))),
		row("db_cache", unsafe.Sizeof(config.Database{}), int64(len(cfg.Databases))),
		row("pool_cache", unsafe.Sizeof(pool{}), int64(len(pools))),
		row("server_cache", unsafe.Sizeof(serverConn{}), servers),
		row("client_cache", unsafe.Sizeof(clientConn{}), clients),
	}
}
