package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxIncludeDepth is PgBouncer's MAX_INCLUDE: how deeply %include may nest.
const maxIncludeDepth = 10

// LoadINI loads a PgBouncer pgbouncer.ini, then its auth_file, applies
// defaults and validates. See Load for the rules; every problem found is
// returned, joined (errors.Join of Problem values), and then the Config is
// nil. Warnings (keys accepted but not implemented, …) are in
// Config.Warnings.
func LoadINI(path string) (*Config, error) {
	return result(loadINI(path))
}

// iniLoader holds the state of one pgbouncer.ini load.
type iniLoader struct {
	c        *Config
	errs     []Problem
	warns    []Problem
	pos      positions
	extra    map[string]extraValue
	section  string
	badSect  bool
	sawMain  bool
	rootPath string
}

// extraValue is an unimplemented [pgbouncer] key's rendered value and where
// it was set.
type extraValue struct {
	value string
	at    origin
}

// loadINI parses path and finishes the Config; it returns the Config even
// when there are errors, for Check.
func loadINI(path string) (*Config, []Problem, []Problem) {
	l := &iniLoader{
		c:        newConfig(path, "ini"),
		pos:      positions{},
		extra:    map[string]extraValue{},
		rootPath: path,
	}
	if !l.parseFile(path, 0, nil) {
		// The main file could not be read: nothing more to say.
		return l.c, l.errs, l.warns
	}
	if !l.sawMain {
		l.errs = append(l.errs, Problem{File: path, Message: "main section [pgbouncer] missing from config file"})
	}
	extra := make(map[string]string, len(l.extra))
	keys := make([]string, 0, len(l.extra))
	for k, v := range l.extra {
		extra[k] = v.value
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := l.extra[k]
		if v.value != paramIndex[k].renderedDefault() {
			l.warns = append(l.warns, Problem{File: v.at.file, Line: v.at.line, Key: v.at.key, Message: notImplemented})
		}
	}
	errs, warns := finish(l.c, filepath.Dir(path), l.pos, extra)
	l.errs = append(l.errs, errs...)
	l.warns = append(l.warns, warns...)
	sortProblems(l.warns)
	l.c.Warnings = l.warns
	return l.c, l.errs, l.warns
}

// notImplemented is the warning for a key PgBouncer has and pgwarden ignores.
const notImplemented = "accepted for compatibility but not implemented yet; it has no effect"

// parseFile reads one file (the main one or an include). includedAt is the
// %include line that named it. It returns false when the file could not be
// read.
func (l *iniLoader) parseFile(path string, depth int, includedAt *Problem) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		p := Problem{File: path, Message: fmt.Sprintf("could not load file: %v", unwrapPathError(err))}
		if includedAt != nil {
			p = *includedAt
			p.Message = fmt.Sprintf("could not load included file %q: %v", path, unwrapPathError(err))
		}
		l.errs = append(l.errs, p)
		return false
	}
	lines := strings.Split(string(data), "\n")
	for i, raw := range lines {
		l.parseLine(path, i+1, raw, depth)
	}
	return true
}

// unwrapPathError drops the path from an *os.PathError (the caller names
// the file already).
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseLine handles one line of an ini file.
func (l *iniLoader) parseLine(file string, lineNo int, raw string, depth int) {
	line := strings.TrimLeft(raw, " \t\r\v\f")
	line = strings.TrimRight(line, " \t\r\v\f")
	syntax := func(msg string) {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Message: "syntax error: " + msg})
	}
	switch {
	case line == "":
		return
	case strings.HasPrefix(line, "%include") && len(line) > 8 && (line[8] == ' ' || line[8] == '\t'):
		l.include(file, lineNo, strings.TrimSpace(line[8:]), depth)
		return
	case line[0] == ';' || line[0] == '#':
		return
	case line[0] == '[':
		end := strings.IndexByte(line, ']')
		if end < 0 {
			syntax("section header without closing ]")
			return
		}
		if rest := strings.TrimSpace(line[end+1:]); rest != "" && rest[0] != ';' && rest[0] != '#' {
			syntax("unexpected text after section header")
		}
		l.startSection(file, lineNo, line[1:end])
		return
	}

	// key = value; a key is bare ([A-Za-z0-9_.*-], plus @ and # in
	// [entra_principals]) or quoted.
	var key, rest string
	if q := line[0]; q == '\'' || q == '"' {
		end := strings.IndexByte(line[1:], q)
		if end <= 0 {
			syntax("unterminated or empty quoted key")
			return
		}
		key, rest = line[1:1+end], line[2+end:]
	} else {
		principals := l.section == "entra_principals" && !l.badSect
		n := 0
		for n < len(line) && (isKeyChar(line[n]) || principals && isPrincipalKeyChar(line[n])) {
			n++
		}
		key, rest = line[:n], line[n:]
	}
	rest = strings.TrimLeft(rest, " \t")
	if !strings.HasPrefix(rest, "=") {
		syntax("expected key = value")
		return
	}
	if key == "" {
		syntax("missing key before =")
		return
	}
	value := strings.TrimLeft(rest[1:], " \t")

	switch {
	case l.badSect:
		// Already reported the section.
	case l.section == "":
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: key, Message: "value without section"})
	case l.section == "pgbouncer":
		l.setParam(file, lineNo, key, value)
	case l.section == "databases":
		l.setDatabase(file, lineNo, key, value)
	case l.section == "users":
		l.setUser(file, lineNo, key, value)
	case l.section == "peers":
		l.setPeer(file, lineNo, key, value)
	case l.section == "entra":
		l.setEntra(file, lineNo, key, value)
	case l.section == "entra_principals":
		l.setEntraPrincipal(file, lineNo, key, value)
	case l.section == "metrics":
		l.setMetrics(file, lineNo, key, value)
	case l.section == "audit":
		l.setAudit(file, lineNo, key, value)
	}
}

// setAudit handles an [audit] key (pgwarden's own section).
func (l *iniLoader) setAudit(file string, lineNo int, key, value string) {
	bad := func(msg string) {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: "audit/" + key, Message: msg})
	}
	switch key {
	case "log_file":
		l.c.Audit.LogFile = value
	case "syslog":
		setBool01(&l.c.Audit.Syslog, value, bad)
	default:
		bad("unknown parameter: audit/" + key)
	}
}

// setMetrics handles a [metrics] key (pgwarden's own section).
func (l *iniLoader) setMetrics(file string, lineNo int, key, value string) {
	bad := func(msg string) {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: "metrics/" + key, Message: msg})
	}
	switch key {
	case "listen":
		l.c.Metrics.Listen = value
	case "pprof":
		setBool01(&l.c.Metrics.Pprof, value, bad)
	case "stats_names":
		l.c.Metrics.StatsNames = value
	case "client_connections":
		var on bool
		if setBool01(&on, value, bad) {
			l.c.Metrics.NoClientConnections = !on
		}
	default:
		bad("unknown parameter: metrics/" + key)
	}
}

// setBool01 sets *dst from "0" or "1" (the [audit] and [metrics] booleans)
// and reports whether value was one of them; anything else is reported
// through bad.
func setBool01(dst *bool, value string, bad func(string)) bool {
	switch value {
	case "0":
		*dst = false
	case "1":
		*dst = true
	default:
		bad("expected 0 or 1")
		return false
	}
	return true
}

// isKeyChar reports whether b may appear in a bare key.
func isKeyChar(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte("_.-*", b) >= 0
}

// startSection switches to a section.
func (l *iniLoader) startSection(file string, lineNo int, name string) {
	switch name {
	case "pgbouncer":
		if l.sawMain {
			l.warns = append(l.warns, Problem{File: file, Line: lineNo, Message: "[pgbouncer] appears again: PgBouncer resets the settings made above to their defaults here; pgwarden keeps them"})
		}
		l.sawMain = true
	case "databases", "users", "peers":
	case "entra":
		enableEntra(l.c, l.pos, origin{file: file, line: lineNo, key: "[entra]"})
	case "metrics", "audit":
	case "entra_principals":
		if _, ok := l.pos["entra_principals"]; !ok {
			l.pos["entra_principals"] = origin{file: file, line: lineNo, key: "[entra_principals]"}
		}
	default:
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Message: fmt.Sprintf("invalid section %q (expected pgbouncer, databases, users, peers, entra, entra_principals, metrics or audit)", name)})
		l.section, l.badSect = "", true
		return
	}
	l.section, l.badSect = name, false
}

// include processes "%include target" found at file:lineNo. A relative
// target is looked up in the working directory first (as PgBouncer does),
// then next to the including file.
func (l *iniLoader) include(file string, lineNo int, target string, depth int) {
	at := Problem{File: file, Line: lineNo, Key: "%include"}
	if target == "" {
		at.Message = "missing file name"
		l.errs = append(l.errs, at)
		return
	}
	if depth+1 > maxIncludeDepth {
		at.Message = fmt.Sprintf("include nesting level too deep (more than %d)", maxIncludeDepth)
		l.errs = append(l.errs, at)
		return
	}
	resolved, _ := resolvePath(target, filepath.Dir(file))
	l.parseFile(resolved, depth+1, &at)
}

// setParam sets one [pgbouncer] key.
func (l *iniLoader) setParam(file string, lineNo int, key, value string) {
	p, ok := lookupParam(key)
	if !ok {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Message: "unknown parameter: pgbouncer/" + key})
		return
	}
	v, err := parseValue(p.kind, value)
	if err != nil {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: key, Message: fmt.Sprintf("invalid value %q: %v", value, err)})
		return
	}
	at := origin{file: file, line: lineNo, key: key}
	l.pos[p.name] = at
	if p.set == nil {
		l.extra[p.name] = extraValue{value: renderValue(p.kind, v), at: at}
		return
	}
	p.set(l.c, v)
}

// connParam is one key=value pair of a [databases], [users] or [peers]
// value.
type connParam struct {
	key, value string
}

// parseConnString splits a [databases]/[users]/[peers] value into key=value
// pairs as PgBouncer's cstr_get_pair does. A value ends at a blank unless it
// is single-quoted; inside quotes, two single quotes stand for one. Empty
// values are refused.
func parseConnString(s string) ([]connParam, error) {
	var out []connParam
	i := 0
	skipWS := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	for {
		skipWS()
		if i >= len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		skipWS()
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("syntax error: expected key=value, found %q", key)
		}
		if key == "" {
			return nil, errors.New("syntax error: missing key before =")
		}
		i++
		skipWS()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						val.WriteByte('\'')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				val.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("syntax error: unterminated quoted value for %s", key)
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				val.WriteByte(s[i])
				i++
			}
		}
		if val.Len() == 0 {
			return nil, fmt.Errorf("syntax error: empty value for %s", key)
		}
		out = append(out, connParam{key, val.String()})
	}
}

// connInt parses a [databases]/[users] integer (PgBouncer uses atoi, so
// decimal).
func connInt(key, value string) (int, error) {
	n, err := strconv.ParseInt(value, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid value for %s: %q: expected a decimal integer", key, value)
	}
	return int(n), nil
}

// connSeconds parses a [databases]/[users] time: seconds, as a number
// (PgBouncer reads whole seconds; decimals are accepted here too).
func connSeconds(key, value string) (time.Duration, error) {
	d, err := parseINISeconds(value)
	if err != nil {
		return 0, fmt.Errorf("invalid value for %s: %q: %v", key, value, err)
	}
	return d, nil
}

// setDatabase parses one [databases] entry.
func (l *iniLoader) setDatabase(file string, lineNo int, name, value string) {
	pkey := "databases/" + name
	fail := func(msg string) {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: pkey, Message: msg})
	}
	if name == adminDBName {
		fail(fmt.Sprintf("database name %q is reserved", name))
		return
	}
	pairs, err := parseConnString(value)
	if err != nil {
		fail(err.Error())
		return
	}
	db := newDatabase(name, file, lineNo)
	ok := true
	for _, kv := range pairs {
		k, v := kv.key, kv.value
		var err error
		switch k {
		case "dbname":
			db.DBName = v
		case "host":
			db.Host = v
		case "port":
			db.Port, err = connInt(k, v)
			if err == nil && (db.Port <= 0 || db.Port > 65535) {
				err = fmt.Errorf("invalid port: %s", v)
			}
		case "user":
			db.User = v
		case "password":
			db.Password = v
		case "auth_user":
			db.AuthUser = v
		case "auth_query":
			db.AuthQuery = v
		case "auth_dbname":
			db.AuthDBName = v
		case "pool_size":
			db.PoolSize, err = connInt(k, v)
		case "min_pool_size":
			db.MinPoolSize, err = connInt(k, v)
		case "reserve_pool_size", "reserve_pool":
			db.ReservePoolSize, err = connInt(k, v)
		case "connect_query":
			db.ConnectQuery = v
		case "pool_mode":
			m, okm := ParsePoolMode(strings.ToLower(v))
			if !okm {
				err = fmt.Errorf("invalid pool mode: %s (expected session, transaction or statement)", v)
			}
			db.PoolMode = m
		case "max_db_connections":
			db.MaxDBConnections, err = connInt(k, v)
		case "max_db_client_connections":
			var n int
			if n, err = connInt(k, v); err == nil && n > 0 {
				l.warns = append(l.warns, Problem{File: file, Line: lineNo, Key: pkey, Message: k + " is " + notImplemented})
			}
		case "server_lifetime":
			db.ServerLifetime, err = connSeconds(k, v)
		case "client_encoding":
			db.ClientEncoding = v
		case "datestyle":
			db.DateStyle = v
		case "timezone":
			db.TimeZone = v
		case "application_name":
			db.ApplicationName = v
		case "auth_mode":
			db.AuthMode = v
		case "server_auth":
			db.ServerAuth = v
		case "allow_replication":
			r, okr := ParseReplicationAllow(v)
			if !okr {
				err = fmt.Errorf("invalid allow_replication: %s (expected all, none, logical or physical)", v)
			}
			db.AllowReplication = r
		case "load_balance_hosts":
			switch strings.ToLower(v) {
			case "round-robin":
			case "disable":
				l.warns = append(l.warns, Problem{File: file, Line: lineNo, Key: pkey, Message: "load_balance_hosts=disable is " + notImplemented + " (hosts are used round-robin)"})
			default:
				err = fmt.Errorf("invalid load_balance_hosts: %s (expected round-robin or disable)", v)
			}
		default:
			err = fmt.Errorf("unrecognized connection parameter: %s", k)
		}
		if err != nil {
			fail(err.Error())
			ok = false
		}
	}
	if ok {
		l.c.Databases[name] = db
	}
}

// setUser parses one [users] entry.
func (l *iniLoader) setUser(file string, lineNo int, name, value string) {
	pkey := "users/" + name
	fail := func(msg string) {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: pkey, Message: msg})
	}
	pairs, err := parseConnString(value)
	if err != nil {
		fail(err.Error())
		return
	}
	u := newUser(name, file, lineNo)
	ok := true
	for _, kv := range pairs {
		k, v := kv.key, kv.value
		var err error
		switch k {
		case "pool_mode":
			m, okm := ParsePoolMode(strings.ToLower(v))
			if !okm {
				err = fmt.Errorf("invalid pool mode: %s (expected session, transaction or statement)", v)
			}
			u.PoolMode = m
		case "pool_size":
			u.PoolSize, err = connInt(k, v)
		case "reserve_pool_size":
			u.ReservePoolSize, err = connInt(k, v)
		case "max_user_connections":
			u.MaxUserConnections, err = connInt(k, v)
		case "query_timeout":
			u.QueryTimeout, err = connSeconds(k, v)
		case "idle_transaction_timeout":
			u.IdleTransactionTimeout, err = connSeconds(k, v)
		case "client_idle_timeout":
			u.ClientIdleTimeout, err = connSeconds(k, v)
		case "transaction_timeout":
			var d time.Duration
			if d, err = connSeconds(k, v); err == nil && d > 0 {
				l.warns = append(l.warns, Problem{File: file, Line: lineNo, Key: pkey, Message: k + " is " + notImplemented})
			}
		case "server_auth":
			u.ServerAuth = strings.ToLower(v)
		case "max_user_client_connections":
			var n int
			if n, err = connInt(k, v); err == nil && n > 0 {
				l.warns = append(l.warns, Problem{File: file, Line: lineNo, Key: pkey, Message: k + " is " + notImplemented})
			}
		default:
			err = fmt.Errorf("unrecognized user parameter: %s", k)
		}
		if err != nil {
			fail(err.Error())
			ok = false
		}
	}
	if ok {
		l.c.Users[name] = u
	}
}

// setPeer reads one [peers] entry, as PgBouncer's parse_peer does.
func (l *iniLoader) setPeer(file string, lineNo int, name, value string) {
	pkey := "peers/" + name
	fail := func(msg string) {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: pkey, Message: msg})
	}
	id, err := strconv.Atoi(name)
	if err != nil || id < 1 || id > 65535 {
		fail("ids of peers must be a number larger than 0 and at most 65535")
		return
	}
	pairs, err := parseConnString(value)
	if err != nil {
		fail(err.Error())
		return
	}
	p := Peer{ID: id, Port: defaultPeerPort, File: file, Line: lineNo}
	ok := true
	for _, kv := range pairs {
		switch kv.key {
		case "host":
			p.Host = kv.value
		case "port":
			if n, err := connInt(kv.key, kv.value); err != nil || n <= 0 || n > 65535 {
				fail("invalid port: " + kv.value)
				ok = false
			} else {
				p.Port = n
			}
		case "pool_size":
			if n, err := connInt(kv.key, kv.value); err != nil {
				fail(err.Error())
				ok = false
			} else {
				p.PoolSize = n
			}
		default:
			fail("unrecognized connection parameter: " + kv.key)
			ok = false
		}
	}
	if p.Host == "" {
		fail(fmt.Sprintf("host was not provided for peer %d", id))
		return
	}
	if ok {
		// A repeated id replaces the earlier entry, as in PgBouncer.
		l.c.Peers = slices.DeleteFunc(l.c.Peers, func(q Peer) bool { return q.ID == id })
		l.c.Peers = append(l.c.Peers, p)
	}
}
