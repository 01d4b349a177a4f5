package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// LoadYAML loads pgwarden's native pooler.yaml, then its auth file, applies
// defaults and validates. The file is decoded strictly: an unknown key is an
// error with its line number. See the repository's pooler.yaml for the
// schema; every setting carries its pgbouncer.ini name there. Durations are
// Go durations ("15s", "1h") or a bare number of seconds.
//
// Every problem found is returned, joined (errors.Join of Problem values),
// and then the Config is nil. Warnings are in Config.Warnings.
func LoadYAML(path string) (*Config, error) {
	return result(loadYAML(path))
}

// yamlConfig is pooler.yaml's top level.
type yamlConfig struct {
	Listen     yamlListen               `yaml:"listen"`
	Auth       yamlAuth                 `yaml:"auth"`
	AdminUsers *[]string                `yaml:"admin_users"`
	StatsUsers *[]string                `yaml:"stats_users"`
	RunAsUser  *string                  `yaml:"run_as_user"`
	Pool       yamlPool                 `yaml:"pool"`
	Server     yamlServer               `yaml:"server"`
	Client     yamlClient               `yaml:"client"`
	Timeouts   yamlTimeouts             `yaml:"timeouts"`
	Throttle   yamlSignInThrottle       `yaml:"signin_throttle"`
	TLS        yamlTLSLegs              `yaml:"tls"`
	Log        yamlLog                  `yaml:"log"`
	Network    yamlNetwork              `yaml:"network"`
	Entra      *yamlEntra               `yaml:"entra"`
	Metrics    yamlMetrics              `yaml:"metrics"`
	Audit      yamlAudit                `yaml:"audit"`
	Databases  map[string]*yamlDatabase `yaml:"databases"`
	Users      map[string]*yamlUser     `yaml:"users"`
	PeerID     *yamlPeerID              `yaml:"peer_id"`
	Peers      map[int]*yamlPeer        `yaml:"peers"`
}

// yamlPeer is one peers: entry; the keys are [peers]'s.
type yamlPeer struct {
	Host     string `yaml:"host"`
	Port     *int   `yaml:"port"`
	PoolSize *int   `yaml:"pool_size"`
}

type yamlListen struct {
	Addresses     *[]string     `yaml:"addresses"`
	Port          *int          `yaml:"port"`
	UnixSocketDir *string       `yaml:"unix_socket_dir"`
	UnixSocketMod *yamlFileMode `yaml:"unix_socket_mode"`
	Backlog       *int          `yaml:"backlog"`
	SOReuseport   *bool         `yaml:"so_reuseport"`
}

type yamlAuth struct {
	Type    *string `yaml:"type"`
	File    *string `yaml:"file"`
	HBAFile *string `yaml:"hba_file"`
	User    *string `yaml:"user"`
	Query   *string `yaml:"query"`
	DBName  *string `yaml:"dbname"`
}

type yamlPool struct {
	Mode                  *string       `yaml:"mode"`
	MaxClientConn         *int          `yaml:"max_client_conn"`
	DefaultPoolSize       *int          `yaml:"default_pool_size"`
	MinPoolSize           *int          `yaml:"min_pool_size"`
	ReservePoolSize       *int          `yaml:"reserve_pool_size"`
	ReservePoolTimeout    *yamlDuration `yaml:"reserve_pool_timeout"`
	MaxDBConnections      *int          `yaml:"max_db_connections"`
	MaxUserConnections    *int          `yaml:"max_user_connections"`
	ServerRoundRobin      *bool         `yaml:"server_round_robin"`
	MaxPreparedStatements *int          `yaml:"max_prepared_statements"`
	EventLoop             *string       `yaml:"event_loop"`
}

type yamlServer struct {
	ResetQuery       *string       `yaml:"reset_query"`
	ResetQueryAlways *bool         `yaml:"reset_query_always"`
	CheckQuery       *string       `yaml:"check_query"`
	CheckDelay       *yamlDuration `yaml:"check_delay"`
	Lifetime         *yamlDuration `yaml:"lifetime"`
	IdleTimeout      *yamlDuration `yaml:"idle_timeout"`
	ConnectTimeout   *yamlDuration `yaml:"connect_timeout"`
	LoginRetry       *yamlDuration `yaml:"login_retry"`
}

type yamlClient struct {
	LoginTimeout            *yamlDuration `yaml:"login_timeout"`
	IdleTimeout             *yamlDuration `yaml:"idle_timeout"`
	TrackExtraParameters    *[]string     `yaml:"track_extra_parameters"`
	IgnoreStartupParameters *[]string     `yaml:"ignore_startup_parameters"`
	ApplicationNameAddHost  *bool         `yaml:"application_name_add_host"`
}

type yamlTimeouts struct {
	Query           *yamlDuration `yaml:"query"`
	QueryWait       *yamlDuration `yaml:"query_wait"`
	IdleTransaction *yamlDuration `yaml:"idle_transaction"`
	Transaction     *yamlDuration `yaml:"transaction"`
	CancelWait      *yamlDuration `yaml:"cancel_wait"`
	Shutdown        *yamlDuration `yaml:"shutdown"`
	AcceptGrace     *yamlDuration `yaml:"shutdown_accept_grace"`
}

// yamlSignInThrottle is signin_throttle: (pgwarden's own keys).
type yamlSignInThrottle struct {
	AddressBurst  *int          `yaml:"address_burst"`
	AddressRefill *yamlDuration `yaml:"address_refill"`
	RoleBurst     *int          `yaml:"role_burst"`
	RoleRefill    *yamlDuration `yaml:"role_refill"`
	MaxDelay      *yamlDuration `yaml:"max_delay"`
}

type yamlTLSLegs struct {
	Client yamlTLS `yaml:"client"`
	Server yamlTLS `yaml:"server"`
}

type yamlTLS struct {
	SSLMode   *string `yaml:"sslmode"`
	KeyFile   *string `yaml:"key_file"`
	CertFile  *string `yaml:"cert_file"`
	CAFile    *string `yaml:"ca_file"`
	Protocols *string `yaml:"protocols"`
	Ciphers   *string `yaml:"ciphers"`
}

type yamlLog struct {
	File           *string       `yaml:"file"`
	PidFile        *string       `yaml:"pid_file"`
	Syslog         *bool         `yaml:"syslog"`
	SyslogIdent    *string       `yaml:"syslog_ident"`
	SyslogFacility *string       `yaml:"syslog_facility"`
	Connections    *bool         `yaml:"connections"`
	Disconnections *bool         `yaml:"disconnections"`
	PoolerErrors   *bool         `yaml:"pooler_errors"`
	Stats          *bool         `yaml:"stats"`
	StatsPeriod    *yamlDuration `yaml:"stats_period"`
	Verbose        *int          `yaml:"verbose"`
}

type yamlNetwork struct {
	MaxPacketSize  *int          `yaml:"max_packet_size"`
	PktBuf         *int          `yaml:"pkt_buf"`
	TCPKeepalive   *bool         `yaml:"tcp_keepalive"`
	TCPKeepIdle    *yamlDuration `yaml:"tcp_keepidle"`
	TCPKeepIntvl   *yamlDuration `yaml:"tcp_keepintvl"`
	TCPKeepCnt     *int          `yaml:"tcp_keepcnt"`
	TCPUserTimeout *yamlDuration `yaml:"tcp_user_timeout"`
}

// yamlDatabase is one databases: entry; the keys are [databases]'s.
type yamlDatabase struct {
	Host             string        `yaml:"host"`
	Port             *int          `yaml:"port"`
	DBName           string        `yaml:"dbname"`
	User             string        `yaml:"user"`
	Password         string        `yaml:"password"`
	AuthUser         string        `yaml:"auth_user"`
	AuthQuery        string        `yaml:"auth_query"`
	AuthDBName       string        `yaml:"auth_dbname"`
	PoolSize         *int          `yaml:"pool_size"`
	MinPoolSize      *int          `yaml:"min_pool_size"`
	ReservePoolSize  *int          `yaml:"reserve_pool_size"`
	MaxDBConnections *int          `yaml:"max_db_connections"`
	PoolMode         string        `yaml:"pool_mode"`
	ServerLifetime   *yamlDuration `yaml:"server_lifetime"`
	ConnectQuery     string        `yaml:"connect_query"`
	ClientEncoding   string        `yaml:"client_encoding"`
	DateStyle        string        `yaml:"datestyle"`
	TimeZone         string        `yaml:"timezone"`
	ApplicationName  string        `yaml:"application_name"`
	AuthMode         string        `yaml:"auth_mode"`
	ServerAuth       string        `yaml:"server_auth"`
	AllowReplication string        `yaml:"allow_replication"`
}

// yamlUser is one users: entry; the keys are [users]'s.
type yamlUser struct {
	PoolMode               string        `yaml:"pool_mode"`
	PoolSize               *int          `yaml:"pool_size"`
	ReservePoolSize        *int          `yaml:"reserve_pool_size"`
	MaxUserConnections     *int          `yaml:"max_user_connections"`
	QueryTimeout           *yamlDuration `yaml:"query_timeout"`
	IdleTransactionTimeout *yamlDuration `yaml:"idle_transaction_timeout"`
	ClientIdleTimeout      *yamlDuration `yaml:"client_idle_timeout"`
	ServerAuth             string        `yaml:"server_auth"`
}

// yamlLeaf ties a pooler.yaml path to its pgbouncer.ini key; val points at
// the decoded field (a nil pointer when the file does not set it).
type yamlLeaf struct {
	path, key string
	val       any
}

// leaves lists every global pooler.yaml setting with its pgbouncer key.
func (y *yamlConfig) leaves() []yamlLeaf {
	tls := func(leg string, t *yamlTLS) []yamlLeaf {
		p, k := "tls."+leg+".", leg+"_tls_"
		return []yamlLeaf{
			{p + "sslmode", k + "sslmode", t.SSLMode},
			{p + "key_file", k + "key_file", t.KeyFile},
			{p + "cert_file", k + "cert_file", t.CertFile},
			{p + "ca_file", k + "ca_file", t.CAFile},
			{p + "protocols", k + "protocols", t.Protocols},
			{p + "ciphers", k + "ciphers", t.Ciphers},
		}
	}
	out := []yamlLeaf{
		{"listen.addresses", "listen_addr", y.Listen.Addresses},
		{"listen.port", "listen_port", y.Listen.Port},
		{"listen.unix_socket_dir", "unix_socket_dir", y.Listen.UnixSocketDir},
		{"listen.unix_socket_mode", "unix_socket_mode", y.Listen.UnixSocketMod},
		{"listen.backlog", "listen_backlog", y.Listen.Backlog},
		{"listen.so_reuseport", "so_reuseport", y.Listen.SOReuseport},
		{"auth.type", "auth_type", y.Auth.Type},
		{"auth.file", "auth_file", y.Auth.File},
		{"auth.hba_file", "auth_hba_file", y.Auth.HBAFile},
		{"auth.user", "auth_user", y.Auth.User},
		{"auth.query", "auth_query", y.Auth.Query},
		{"auth.dbname", "auth_dbname", y.Auth.DBName},
		{"admin_users", "admin_users", y.AdminUsers},
		{"stats_users", "stats_users", y.StatsUsers},
		{"run_as_user", "user", y.RunAsUser},
		{"pool.mode", "pool_mode", y.Pool.Mode},
		{"pool.event_loop", "event_loop", y.Pool.EventLoop},
		{"pool.max_client_conn", "max_client_conn", y.Pool.MaxClientConn},
		{"pool.default_pool_size", "default_pool_size", y.Pool.DefaultPoolSize},
		{"pool.min_pool_size", "min_pool_size", y.Pool.MinPoolSize},
		{"pool.reserve_pool_size", "reserve_pool_size", y.Pool.ReservePoolSize},
		{"pool.reserve_pool_timeout", "reserve_pool_timeout", y.Pool.ReservePoolTimeout},
		{"pool.max_db_connections", "max_db_connections", y.Pool.MaxDBConnections},
		{"pool.max_user_connections", "max_user_connections", y.Pool.MaxUserConnections},
		{"pool.server_round_robin", "server_round_robin", y.Pool.ServerRoundRobin},
		{"pool.max_prepared_statements", "max_prepared_statements", y.Pool.MaxPreparedStatements},
		{"server.reset_query", "server_reset_query", y.Server.ResetQuery},
		{"server.reset_query_always", "server_reset_query_always", y.Server.ResetQueryAlways},
		{"server.check_query", "server_check_query", y.Server.CheckQuery},
		{"server.check_delay", "server_check_delay", y.Server.CheckDelay},
		{"server.lifetime", "server_lifetime", y.Server.Lifetime},
		{"server.idle_timeout", "server_idle_timeout", y.Server.IdleTimeout},
		{"server.connect_timeout", "server_connect_timeout", y.Server.ConnectTimeout},
		{"server.login_retry", "server_login_retry", y.Server.LoginRetry},
		{"client.login_timeout", "client_login_timeout", y.Client.LoginTimeout},
		{"client.idle_timeout", "client_idle_timeout", y.Client.IdleTimeout},
		{"client.track_extra_parameters", "track_extra_parameters", y.Client.TrackExtraParameters},
		{"client.ignore_startup_parameters", "ignore_startup_parameters", y.Client.IgnoreStartupParameters},
		{"client.application_name_add_host", "application_name_add_host", y.Client.ApplicationNameAddHost},
		{"timeouts.query", "query_timeout", y.Timeouts.Query},
		{"timeouts.query_wait", "query_wait_timeout", y.Timeouts.QueryWait},
		{"timeouts.idle_transaction", "idle_transaction_timeout", y.Timeouts.IdleTransaction},
		{"timeouts.transaction", "transaction_timeout", y.Timeouts.Transaction},
		{"timeouts.cancel_wait", "cancel_wait_timeout", y.Timeouts.CancelWait},
		{"timeouts.shutdown", "shutdown_timeout", y.Timeouts.Shutdown},
		{"timeouts.shutdown_accept_grace", "shutdown_accept_grace", y.Timeouts.AcceptGrace},
		{"signin_throttle.address_burst", "signin_throttle_address_burst", y.Throttle.AddressBurst},
		{"signin_throttle.address_refill", "signin_throttle_address_refill", y.Throttle.AddressRefill},
		{"signin_throttle.role_burst", "signin_throttle_role_burst", y.Throttle.RoleBurst},
		{"signin_throttle.role_refill", "signin_throttle_role_refill", y.Throttle.RoleRefill},
		{"signin_throttle.max_delay", "signin_throttle_max_delay", y.Throttle.MaxDelay},
		{"log.file", "logfile", y.Log.File},
		{"log.pid_file", "pidfile", y.Log.PidFile},
		{"log.syslog", "syslog", y.Log.Syslog},
		{"log.syslog_ident", "syslog_ident", y.Log.SyslogIdent},
		{"log.syslog_facility", "syslog_facility", y.Log.SyslogFacility},
		{"log.connections", "log_connections", y.Log.Connections},
		{"log.disconnections", "log_disconnections", y.Log.Disconnections},
		{"log.pooler_errors", "log_pooler_errors", y.Log.PoolerErrors},
		{"log.stats", "log_stats", y.Log.Stats},
		{"log.stats_period", "stats_period", y.Log.StatsPeriod},
		{"log.verbose", "verbose", y.Log.Verbose},
		{"network.max_packet_size", "max_packet_size", y.Network.MaxPacketSize},
		{"network.pkt_buf", "pkt_buf", y.Network.PktBuf},
		{"network.tcp_keepalive", "tcp_keepalive", y.Network.TCPKeepalive},
		{"network.tcp_keepidle", "tcp_keepidle", y.Network.TCPKeepIdle},
		{"network.tcp_keepintvl", "tcp_keepintvl", y.Network.TCPKeepIntvl},
		{"network.tcp_keepcnt", "tcp_keepcnt", y.Network.TCPKeepCnt},
		{"network.tcp_user_timeout", "tcp_user_timeout", y.Network.TCPUserTimeout},
	}
	out = append(out, tls("client", &y.TLS.Client)...)
	return append(out, tls("server", &y.TLS.Server)...)
}

// leafValue converts a decoded leaf to the Go type the param's set expects.
// ok is false when the file does not set the leaf.
func leafValue(kind paramKind, val any) (v any, ok bool, err error) {
	switch x := val.(type) {
	case *int:
		if x == nil {
			return nil, false, nil
		}
		return *x, true, nil
	case *bool:
		if x == nil {
			return nil, false, nil
		}
		return *x, true, nil
	case *[]string:
		if x == nil {
			return nil, false, nil
		}
		var list []string
		for _, s := range *x {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		return list, true, nil
	case *yamlDuration:
		if x == nil {
			return nil, false, nil
		}
		return time.Duration(*x), true, nil
	case *yamlFileMode:
		if x == nil {
			return nil, false, nil
		}
		return uint32(*x), true, nil
	case *string:
		if x == nil {
			return nil, false, nil
		}
		switch kind {
		case kindPoolMode, kindAuthType, kindTLSMode:
			v, err := parseValue(kind, *x)
			if err != nil {
				return nil, true, fmt.Errorf("invalid value %q: %w", *x, err)
			}
			return v, true, nil
		}
		return *x, true, nil
	}
	return nil, false, fmt.Errorf("internal error: unexpected %T", val)
}

// loadYAML parses path and finishes the Config; it returns the Config even
// when there are errors, for Check.
func loadYAML(path string) (*Config, []Problem, []Problem) {
	c := newConfig(path, "yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return c, []Problem{{File: path, Message: fmt.Sprintf("could not load file: %v", unwrapPathError(err))}}, nil
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return c, yamlProblems(path, err, nil), nil
	}
	lines := map[string]int{}
	walkYAML(&root, "", lines)

	// Type errors (unknown keys, bad values) do not stop the decoder: keep
	// what it decoded and go on, so every problem is reported.
	var y yamlConfig
	var errs []Problem
	badLines := map[int]bool{} // lines the decoder refused; their values are not used
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&y); err != nil && !errors.Is(err, io.EOF) {
		errs = yamlProblems(path, err, lines)
		for _, p := range errs {
			badLines[p.Line] = true
		}
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return c, errs, nil
		}
	}

	pos := positions{}
	at := func(p string) origin { return origin{file: path, line: lines[p], key: p} }
	for _, leaf := range y.leaves() {
		pos[leaf.key] = at(leaf.path)
		p := paramIndex[leaf.key]
		if badLines[lines[leaf.path]] {
			continue
		}
		v, set, err := leafValue(p.kind, leaf.val)
		if err != nil {
			errs = append(errs, Problem{File: path, Line: lines[leaf.path], Key: leaf.path, Message: err.Error()})
			continue
		}
		if set {
			p.set(c, v)
		}
	}
	_, hasEntra := lines["entra"]
	errs = append(errs, applyYAMLEntra(c, y.Entra, hasEntra, path, lines, badLines, pos)...)
	c.Metrics = Metrics{Listen: y.Metrics.Listen, Pprof: y.Metrics.Pprof, StatsNames: y.Metrics.StatsNames,
		NoClientConnections: y.Metrics.ClientConnections != nil && !*y.Metrics.ClientConnections}
	c.Audit = Audit{LogFile: y.Audit.LogFile, Syslog: y.Audit.Syslog}
	poolMode := func(s, p string) PoolMode {
		if s == "" {
			return PoolModeUnset
		}
		m, ok := ParsePoolMode(strings.ToLower(s))
		if !ok {
			errs = append(errs, Problem{File: path, Line: lines[p], Key: p, Message: fmt.Sprintf("invalid pool mode %q (expected session, transaction or statement)", s)})
		}
		return m
	}
	setInt := func(dst *int, src *int) {
		if src != nil {
			*dst = *src
		}
	}
	setDur := func(dst *time.Duration, src *yamlDuration) {
		if src != nil {
			*dst = time.Duration(*src)
		}
	}
	for name, yd := range y.Databases {
		p := "databases." + name
		db := newDatabase(name, path, lines[p])
		if yd != nil {
			db.Host, db.DBName, db.User, db.Password = yd.Host, yd.DBName, yd.User, yd.Password
			db.AuthUser, db.AuthQuery, db.AuthDBName = yd.AuthUser, yd.AuthQuery, yd.AuthDBName
			db.ConnectQuery = yd.ConnectQuery
			db.ClientEncoding, db.DateStyle, db.TimeZone, db.ApplicationName = yd.ClientEncoding, yd.DateStyle, yd.TimeZone, yd.ApplicationName
			db.AuthMode, db.ServerAuth = yd.AuthMode, yd.ServerAuth
			setInt(&db.Port, yd.Port)
			setInt(&db.PoolSize, yd.PoolSize)
			setInt(&db.MinPoolSize, yd.MinPoolSize)
			setInt(&db.ReservePoolSize, yd.ReservePoolSize)
			setInt(&db.MaxDBConnections, yd.MaxDBConnections)
			setDur(&db.ServerLifetime, yd.ServerLifetime)
			db.PoolMode = poolMode(yd.PoolMode, p+".pool_mode")
			if yd.AllowReplication != "" {
				r, ok := ParseReplicationAllow(yd.AllowReplication)
				if !ok {
					k := p + ".allow_replication"
					errs = append(errs, Problem{File: path, Line: lines[k], Key: k, Message: fmt.Sprintf("invalid allow_replication %q (expected all, none, logical or physical)", yd.AllowReplication)})
				}
				db.AllowReplication = r
			}
		}
		c.Databases[name] = db
	}
	for name, yu := range y.Users {
		p := "users." + name
		u := newUser(name, path, lines[p])
		if yu != nil {
			setInt(&u.PoolSize, yu.PoolSize)
			setInt(&u.ReservePoolSize, yu.ReservePoolSize)
			setInt(&u.MaxUserConnections, yu.MaxUserConnections)
			setDur(&u.QueryTimeout, yu.QueryTimeout)
			setDur(&u.IdleTransactionTimeout, yu.IdleTransactionTimeout)
			setDur(&u.ClientIdleTimeout, yu.ClientIdleTimeout)
			u.ServerAuth = strings.ToLower(yu.ServerAuth)
			u.PoolMode = poolMode(yu.PoolMode, p+".pool_mode")
		}
		c.Users[name] = u
	}

	if y.PeerID != nil {
		pos["peer_id"] = at("peer_id")
		c.PeerID = int(*y.PeerID)
	}
	for id, yp := range y.Peers {
		p := Peer{ID: id, Port: defaultPeerPort, File: path, Line: lines[fmt.Sprintf("peers.%d", id)]}
		if yp != nil {
			p.Host = yp.Host
			setInt(&p.Port, yp.Port)
			setInt(&p.PoolSize, yp.PoolSize)
		}
		c.Peers = append(c.Peers, p)
	}
	slices.SortFunc(c.Peers, func(a, b Peer) int { return a.ID - b.ID })

	ferrs, warns := finish(c, filepath.Dir(path), pos, nil)
	errs = append(errs, ferrs...)
	sortProblems(errs)
	sortProblems(warns)
	c.Warnings = warns
	return c, errs, warns
}

// walkYAML records the line of every mapping key under its dotted path, and
// of every mapping that is a list item under "path[index]" (as
// entra.principals[0]).
func walkYAML(n *yaml.Node, prefix string, lines map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, child := range n.Content {
			walkYAML(child, prefix, lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			if _, dup := lines[p]; !dup {
				lines[p] = k.Line
			}
			walkYAML(v, p, lines)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			if item.Kind != yaml.MappingNode {
				continue
			}
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if _, dup := lines[p]; !dup {
				lines[p] = item.Line
			}
			walkYAML(item, p, lines)
		}
	}
}

var (
	yamlLineRE     = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlSyntaxRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	yamlUnknownRE  = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	yamlUnmarshalR = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// yamlProblems turns a yaml.v3 error into Problems with line numbers; lines
// (mapping key → line) names the key at that line when it can.
func yamlProblems(path string, err error, lines map[string]int) []Problem {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		out := make([]Problem, 0, len(te.Errors))
		for _, msg := range te.Errors {
			p := Problem{File: path, Message: msg}
			if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Message = m[2]
			}
			if m := yamlUnknownRE.FindStringSubmatch(p.Message); m != nil {
				p.Key = keyAtLine(lines, p.Line, m[1])
				p.Message = "unknown key"
				if p.Key == "" {
					p.Message = fmt.Sprintf("unknown key %q", m[1])
				}
			} else if m := yamlUnmarshalR.FindStringSubmatch(p.Message); m != nil {
				p.Key = keyAtLine(lines, p.Line, "")
				p.Message = fmt.Sprintf("invalid value %q: expected %s", m[2], yamlTypeName(m[3]))
			} else if p.Key == "" {
				p.Key = keyAtLine(lines, p.Line, "")
			}
			out = append(out, p)
		}
		return out
	}
	msg := err.Error()
	if m := yamlSyntaxRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return []Problem{{File: path, Line: line, Message: "syntax error: " + m[2]}}
	}
	return []Problem{{File: path, Message: strings.TrimPrefix(msg, "yaml: ")}}
}

// yamlTypeName explains a Go type in a decoding error.
func yamlTypeName(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "int":
		return "an integer"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	case "[]config.yamlPrincipal":
		return "a list of mappings"
	}
	if strings.HasPrefix(goType, "config.yaml") || strings.HasPrefix(goType, "map[") {
		return "a mapping"
	}
	return goType
}

// keyAtLine finds the dotted path of the mapping key at line (whose last
// element is last, if given); "" if there is not exactly one.
func keyAtLine(lines map[string]int, line int, last string) string {
	found := ""
	for p, l := range lines {
		if l != line {
			continue
		}
		if last != "" && p != last && !strings.HasSuffix(p, "."+last) {
			continue
		}
		if found != "" {
			// Several keys on one line (flow style): prefer the deepest.
			if strings.Count(p, ".") <= strings.Count(found, ".") {
				continue
			}
		}
		found = p
	}
	return found
}

// yamlDuration is a duration in pooler.yaml: a Go duration string ("15s",
// "1h30m") or a bare number of seconds. Negative values are refused.
type yamlDuration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *yamlDuration) UnmarshalYAML(n *yaml.Node) error {
	bad := func(why string) error {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration %q: %s", n.Line, n.Value, why)}}
	}
	if n.Kind != yaml.ScalarNode {
		return bad("expected a duration such as 15s or 1h, or a number of seconds")
	}
	var v time.Duration
	if f, err := strconv.ParseFloat(n.Value, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		if math.Abs(f*float64(time.Second)) >= math.MaxInt64 {
			return bad("too large")
		}
		v = time.Duration(f * float64(time.Second))
	} else {
		v, err = time.ParseDuration(n.Value)
		if err != nil {
			return bad("expected a duration such as 15s or 1h, or a number of seconds")
		}
	}
	if v < 0 {
		return bad("must not be negative")
	}
	*d = yamlDuration(v)
	return nil
}

// yamlFileMode is an octal file mode: "0777", 0777, "777" or "0o777".
type yamlFileMode uint32

// UnmarshalYAML implements yaml.Unmarshaler.
func (m *yamlFileMode) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimPrefix(strings.TrimPrefix(n.Value, "0o"), "0O")
	v, err := strconv.ParseUint(s, 8, 32)
	if n.Kind != yaml.ScalarNode || err != nil || v > 0o7777 {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid file mode %q: expected octal such as \"0777\"", n.Line, n.Value)}}
	}
	*m = yamlFileMode(v)
	return nil
}

type yamlAudit struct {
	LogFile string `yaml:"log_file"`
	Syslog  bool   `yaml:"syslog"`
}

// yamlPeerID is peer_id in pooler.yaml: a number, or "hostname", which
// takes the number after the last "-" of the host name plus one (a
// Kubernetes StatefulSet's pod pgwarden-0 is peer 1, pgwarden-1 peer 2, …).
type yamlPeerID int

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *yamlPeerID) UnmarshalYAML(n *yaml.Node) error {
	bad := func(why string) error {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid peer_id %q: %s", n.Line, n.Value, why)}}
	}
	if n.Kind != yaml.ScalarNode {
		return bad("expected a number or \"hostname\"")
	}
	if n.Value == "hostname" {
		host, err := os.Hostname()
		if err != nil {
			return bad(err.Error())
		}
		id, ok := PeerIDFromHostname(host)
		if !ok {
			return bad(fmt.Sprintf("the host name %q does not end in -<number>", host))
		}
		*p = yamlPeerID(id)
		return nil
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil {
		return bad("expected a number or \"hostname\"")
	}
	*p = yamlPeerID(v)
	return nil
}

// PeerIDFromHostname returns the peer id a host name such as "pgwarden-2"
// stands for: the number after the last "-", plus one.
func PeerIDFromHostname(host string) (int, bool) {
	host, _, _ = strings.Cut(host, ".")
	i := strings.LastIndexByte(host, '-')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(host[i+1:])
	if err != nil || n < 0 || n >= 16383 {
		return 0, false
	}
	return n + 1, true
}

type yamlMetrics struct {
	Listen            string `yaml:"listen"`
	Pprof             bool   `yaml:"pprof"`
	StatsNames        string `yaml:"stats_names"`
	ClientConnections *bool  `yaml:"client_connections"`
}
