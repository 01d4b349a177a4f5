package pooler

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
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
	type counts struct{ active, waiting int64 }
	per := map[*pool]*counts{}
	s.mu.Lock()
	for c := range s.mu.clients {
		c.mu.Lock()
		if c.pool == nil {
			c.mu.Unlock()
			continue
		}
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
		c.mu.Unlock()
	}
	s.mu.Unlock()
	var rows [][]*string
	for _, p := range s.pools.list() {
		k := per[p]
		if k == nil {
			k = &counts{}
		}
		p.mu.Lock()
		st := p.mu.main.Stat()
		var res int32
		var resIdle int32
		var resCons int32
		if p.mu.reserve != nil {
			rs := p.mu.reserve.Stat()
			res, resIdle, resCons = rs.AcquiredResources(), rs.IdleResources(), rs.ConstructingResources()
		}
		mode := p.poolMode().String()
		p.mu.Unlock()
		var maxwait time.Duration
		if t := p.waitStartMin.Load(); t != 0 {
			maxwait = time.Since(time.Unix(0, t))
		}
		rows = append(rows, []*string{
			sp(p.key.db), sp(p.key.user), ip(k.active), ip(k.waiting), ip(0), ip(0),
			ip(int64(st.AcquiredResources() + res)), ip(0), ip(0), ip(int64(st.IdleResources() + resIdle)), ip(0), ip(0),
			ip(int64(st.ConstructingResources() + resCons)), ip(int64(maxwait / time.Second)), ip(int64((maxwait % time.Second) / time.Microsecond)),
			sp(mode), nil,
		})
	}
	return rows
}
