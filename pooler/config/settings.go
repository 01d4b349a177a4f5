package config

import (
	"sort"
	"strings"
	"time"
)

// paramKind is how a [pgbouncer] value is written in pgbouncer.ini and
// rendered by SHOW CONFIG.
type paramKind int

const (
	// kindInt is CF_INT: strtol(…, 0), so 0777 is octal and 0x10 is hex.
	kindInt paramKind = iota
	// kindUint is CF_UINT (max_packet_size).
	kindUint
	// kindBool is a CF_INT used as a flag: 0 or 1.
	kindBool
	// kindTime is CF_TIME_USEC: decimal seconds such as 2.5, no unit.
	kindTime
	// kindSeconds is a CF_INT holding whole seconds (stats_period,
	// tcp_keepidle, tcp_keepintvl).
	kindSeconds
	// kindMillis is a CF_INT holding milliseconds (tcp_user_timeout).
	kindMillis
	// kindString is CF_STR.
	kindString
	// kindList is a CF_STR holding a comma-separated list.
	kindList
	// kindPoolMode, kindAuthType and kindTLSMode are CF_LOOKUPs
	// (case-insensitive).
	kindPoolMode
	kindAuthType
	kindTLSMode
	// kindFileMode is unix_socket_mode: a CF_INT, usually written in octal.
	kindFileMode
)

// binding ties a [pgbouncer] key to its Config field. get and set are nil
// for keys PgBouncer accepts that pgwarden does not implement; their values
// are validated, kept for SHOW CONFIG, and warned about when not default.
type binding struct {
	kind paramKind
	get  func(c *Config) string
	set  func(c *Config, v any)
}

// param is one [pgbouncer] key, as in PgBouncer's bouncer_params[].
type param struct {
	name string
	// def is PgBouncer's default as SHOW CONFIG prints it ("" for NULL).
	def string
	// restart marks CF_NO_RELOAD keys: SHOW CONFIG says changeable = no.
	restart bool
	binding
}

// bind makes a binding to a Config field of the Go type parseValue returns
// for kind.
func bind[T any](kind paramKind, field func(c *Config) *T) binding {
	return binding{
		kind: kind,
		get:  func(c *Config) string { return renderValue(kind, *field(c)) },
		set:  func(c *Config, v any) { *field(c) = v.(T) },
	}
}

// none is the binding of a key pgwarden accepts but does not implement.
func none(kind paramKind) binding { return binding{kind: kind} }

// Short constructors for the table below.
func bInt(f func(c *Config) *int) binding            { return bind(kindInt, f) }
func bBool(f func(c *Config) *bool) binding          { return bind(kindBool, f) }
func bTime(f func(c *Config) *time.Duration) binding { return bind(kindTime, f) }
func bStr(f func(c *Config) *string) binding         { return bind(kindString, f) }
func bList(f func(c *Config) *[]string) binding      { return bind(kindList, f) }
func bTLS(f func(c *Config) *TLSMode) binding        { return bind(kindTLSMode, f) }

// checkQueryBinding maps server_check_query: "<empty>" (the default) sends an
// empty query, an empty value disables the check.
var checkQueryBinding = binding{
	kind: kindString,
	get: func(c *Config) string {
		switch {
		case c.ServerCheckDisabled:
			return ""
		case c.ServerCheckQuery == "":
			return emptyQueryMarker
		}
		return c.ServerCheckQuery
	},
	set: func(c *Config, v any) { c.setServerCheckQuery(v.(string)) },
}

// emptyQueryMarker is PgBouncer's spelling of "send an empty query".
const emptyQueryMarker = "<empty>"

// setServerCheckQuery applies a server_check_query value as PgBouncer reads
// it.
func (c *Config) setServerCheckQuery(s string) {
	switch s {
	case "":
		c.ServerCheckQuery, c.ServerCheckDisabled = "", true
	case emptyQueryMarker:
		c.ServerCheckQuery, c.ServerCheckDisabled = "", false
	default:
		c.ServerCheckQuery, c.ServerCheckDisabled = s, false
	}
}

// defaultAuthQuery is PgBouncer ≥ 1.24.1's auth_query default.
const defaultAuthQuery = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin"

const restart = true

// params is every [pgbouncer] key PgBouncer 1.25 (and master) accepts,
// sorted by name, with PgBouncer's defaults (src/main.c bouncer_params[]).
var params = []param{
	{"admin_users", "", false, bList(func(c *Config) *[]string { return &c.AdminUsers })},
	{"application_name_add_host", "0", false, bBool(func(c *Config) *bool { return &c.ApplicationNameAddHost })},
	{"auth_dbname", "", false, bStr(func(c *Config) *string { return &c.AuthDBName })},
	{"auth_file", "", false, bStr(func(c *Config) *string { return &c.AuthFile })},
	{"auth_hba_file", "", false, bStr(func(c *Config) *string { return &c.AuthHBAFile })},
	{"auth_ident_file", "", false, none(kindString)},
	{"auth_ldap_options", "", false, none(kindString)},
	{"auth_query", defaultAuthQuery, false, bStr(func(c *Config) *string { return &c.AuthQuery })},
	{"auth_type", "md5", false, bind(kindAuthType, func(c *Config) *AuthType { return &c.AuthType })},
	{"auth_user", "", false, bStr(func(c *Config) *string { return &c.AuthUser })},
	{"autodb_idle_timeout", "3600", false, none(kindTime)},
	{"cancel_wait_timeout", "10", false, bTime(func(c *Config) *time.Duration { return &c.CancelWaitTimeout })},
	{"client_idle_timeout", "0", false, bTime(func(c *Config) *time.Duration { return &c.ClientIdleTimeout })},
	{"client_login_timeout", "60", false, bTime(func(c *Config) *time.Duration { return &c.ClientLoginTimeout })},
	{"client_tls13_ciphers", "", false, none(kindString)},
	{"client_tls_ca_file", "", false, bStr(func(c *Config) *string { return &c.ClientTLS.CAFile })},
	{"client_tls_cert_file", "", false, bStr(func(c *Config) *string { return &c.ClientTLS.CertFile })},
	{"client_tls_ciphers", "default", false, bStr(func(c *Config) *string { return &c.ClientTLS.Ciphers })},
	{"client_tls_dheparams", "auto", false, none(kindString)},
	{"client_tls_ecdhcurve", "auto", false, none(kindString)},
	{"client_tls_key_file", "", false, bStr(func(c *Config) *string { return &c.ClientTLS.KeyFile })},
	{"client_tls_protocols", "secure", false, bStr(func(c *Config) *string { return &c.ClientTLS.Protocols })},
	{"client_tls_sslmode", "disable", false, bTLS(func(c *Config) *TLSMode { return &c.ClientTLS.Mode })},
	{"conffile", "", false, none(kindString)},
	{"default_pool_size", "20", false, bInt(func(c *Config) *int { return &c.DefaultPoolSize })},
	{"disable_pqexec", "0", restart, none(kindBool)},
	{"dns_max_ttl", "15", false, none(kindTime)},
	{"dns_nxdomain_ttl", "15", false, none(kindTime)},
	{"dns_zone_check_period", "0", false, none(kindTime)},
	{"idle_transaction_timeout", "0", false, bTime(func(c *Config) *time.Duration { return &c.IdleTransactionTimeout })},
	{"ignore_startup_parameters", "", false, bList(func(c *Config) *[]string { return &c.IgnoreStartupParameters })},
	{"job_name", "pgbouncer", restart, none(kindString)},
	{"listen_addr", "", restart, bList(func(c *Config) *[]string { return &c.ListenAddrs })},
	{"listen_backlog", "128", restart, bInt(func(c *Config) *int { return &c.ListenBacklog })},
	{"listen_port", "6432", restart, bInt(func(c *Config) *int { return &c.ListenPort })},
	{"log_connections", "1", false, bBool(func(c *Config) *bool { return &c.LogConnections })},
	{"log_disconnections", "1", false, bBool(func(c *Config) *bool { return &c.LogDisconnections })},
	{"log_pooler_errors", "1", false, bBool(func(c *Config) *bool { return &c.LogPoolerErrors })},
	{"log_stats", "1", false, bBool(func(c *Config) *bool { return &c.LogStats })},
	{"logfile", "", false, bStr(func(c *Config) *string { return &c.LogFile })},
	{"login_notify_message", "", false, none(kindString)},
	{"max_client_conn", "100", false, bInt(func(c *Config) *int { return &c.MaxClientConn })},
	{"max_db_client_connections", "0", false, none(kindInt)},
	{"max_db_connections", "0", false, bInt(func(c *Config) *int { return &c.MaxDBConnections })},
	{"max_packet_size", "2147483647", false, bind(kindUint, func(c *Config) *int { return &c.MaxPacketSize })},
	{"max_prepared_statements", "200", false, bInt(func(c *Config) *int { return &c.MaxPreparedStatements })},
	{"max_user_client_connections", "0", false, none(kindInt)},
	{"max_user_connections", "0", false, bInt(func(c *Config) *int { return &c.MaxUserConnections })},
	{"min_pool_size", "0", false, bInt(func(c *Config) *int { return &c.MinPoolSize })},
	{"peer_id", "0", false, bInt(func(c *Config) *int { return &c.PeerID })},
	{"pidfile", "", restart, bStr(func(c *Config) *string { return &c.PidFile })},
	{"pkt_buf", "4096", restart, bInt(func(c *Config) *int { return &c.PktBuf })},
	{"pool_idle_timeout", "0", false, none(kindTime)},
	{"pool_mode", "session", false, bind(kindPoolMode, func(c *Config) *PoolMode { return &c.PoolMode })},
	{"query_timeout", "0", false, bTime(func(c *Config) *time.Duration { return &c.QueryTimeout })},
	{"query_wait_notify", "5", false, none(kindInt)},
	{"query_wait_timeout", "120", false, bTime(func(c *Config) *time.Duration { return &c.QueryWaitTimeout })},
	{"reserve_pool_size", "0", false, bInt(func(c *Config) *int { return &c.ReservePoolSize })},
	{"reserve_pool_timeout", "5", false, bTime(func(c *Config) *time.Duration { return &c.ReservePoolTimeout })},
	{"resolv_conf", "", restart, none(kindString)},
	{"sbuf_loopcnt", "5", false, none(kindInt)},
	{"scram_iterations", "4096", false, none(kindInt)},
	{"server_check_delay", "30", false, bTime(func(c *Config) *time.Duration { return &c.ServerCheckDelay })},
	{"server_check_query", emptyQueryMarker, false, checkQueryBinding},
	{"server_connect_timeout", "15", false, bTime(func(c *Config) *time.Duration { return &c.ServerConnectTimeout })},
	{"server_fast_close", "0", false, none(kindBool)},
	{"server_idle_timeout", "600", false, bTime(func(c *Config) *time.Duration { return &c.ServerIdleTimeout })},
	{"server_lifetime", "3600", false, bTime(func(c *Config) *time.Duration { return &c.ServerLifetime })},
	{"server_login_retry", "15", false, bTime(func(c *Config) *time.Duration { return &c.ServerLoginRetry })},
	{"server_reset_query", "DISCARD ALL", false, bStr(func(c *Config) *string { return &c.ServerResetQuery })},
	{"server_reset_query_always", "0", false, bBool(func(c *Config) *bool { return &c.ServerResetQueryAlways })},
	{"server_round_robin", "0", false, bBool(func(c *Config) *bool { return &c.ServerRoundRobin })},
	{"server_tls13_ciphers", "", false, none(kindString)},
	{"server_tls_ca_file", "", false, bStr(func(c *Config) *string { return &c.ServerTLS.CAFile })},
	{"server_tls_cert_file", "", false, bStr(func(c *Config) *string { return &c.ServerTLS.CertFile })},
	{"server_tls_ciphers", "default", false, bStr(func(c *Config) *string { return &c.ServerTLS.Ciphers })},
	{"server_tls_key_file", "", false, bStr(func(c *Config) *string { return &c.ServerTLS.KeyFile })},
	{"server_tls_protocols", "secure", false, bStr(func(c *Config) *string { return &c.ServerTLS.Protocols })},
	{"server_tls_sslmode", "prefer", false, bTLS(func(c *Config) *TLSMode { return &c.ServerTLS.Mode })},
	// event_loop is pgwarden's own (see Config.EventLoop).
	{"event_loop", "auto", restart, bStr(func(c *Config) *string { return &c.EventLoop })},
	// shutdown_timeout and shutdown_accept_grace are pgwarden's own (see
	// Config.ShutdownTimeout).
	{"shutdown_accept_grace", "0", false, bTime(func(c *Config) *time.Duration { return &c.ShutdownAcceptGrace })},
	{"shutdown_timeout", "0", false, bTime(func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	// signin_throttle_* are pgwarden's own (see Config.SignInThrottle).
	{"signin_throttle_address_burst", "0", false, bInt(func(c *Config) *int { return &c.SignInThrottle.AddressBurst })},
	{"signin_throttle_address_refill", "60", false, bTime(func(c *Config) *time.Duration { return &c.SignInThrottle.AddressRefill })},
	{"signin_throttle_max_delay", "0", false, bTime(func(c *Config) *time.Duration { return &c.SignInThrottle.MaxDelay })},
	{"signin_throttle_role_burst", "0", false, bInt(func(c *Config) *int { return &c.SignInThrottle.RoleBurst })},
	{"signin_throttle_role_refill", "60", false, bTime(func(c *Config) *time.Duration { return &c.SignInThrottle.RoleRefill })},
	{"so_reuseport", "0", restart, bBool(func(c *Config) *bool { return &c.SOReuseport })},
	{"stats_period", "60", false, bind(kindSeconds, func(c *Config) *time.Duration { return &c.StatsPeriod })},
	{"stats_users", "", false, bList(func(c *Config) *[]string { return &c.StatsUsers })},
	{"suspend_timeout", "10", false, none(kindTime)},
	{"syslog", "0", false, bBool(func(c *Config) *bool { return &c.Syslog })},
	{"syslog_facility", "daemon", false, bStr(func(c *Config) *string { return &c.SyslogFacility })},
	{"syslog_ident", "pgbouncer", false, bStr(func(c *Config) *string { return &c.SyslogIdent })},
	{"tcp_defer_accept", "1", false, none(kindInt)},
	{"tcp_keepalive", "1", false, bBool(func(c *Config) *bool { return &c.TCPKeepalive })},
	{"tcp_keepcnt", "0", false, bInt(func(c *Config) *int { return &c.TCPKeepCnt })},
	{"tcp_keepidle", "0", false, bind(kindSeconds, func(c *Config) *time.Duration { return &c.TCPKeepIdle })},
	{"tcp_keepintvl", "0", false, bind(kindSeconds, func(c *Config) *time.Duration { return &c.TCPKeepIntvl })},
	{"tcp_socket_buffer", "0", false, none(kindInt)},
	{"tcp_user_timeout", "0", false, bind(kindMillis, func(c *Config) *time.Duration { return &c.TCPUserTimeout })},
	{"track_extra_parameters", "IntervalStyle,search_path", restart, bList(func(c *Config) *[]string { return &c.TrackExtraParameters })},
	{"transaction_timeout", "0", false, bTime(func(c *Config) *time.Duration { return &c.TransactionTimeout })},
	{"unix_socket_dir", "/tmp", restart, bStr(func(c *Config) *string { return &c.UnixSocketDir })},
	{"unix_socket_group", "", restart, none(kindString)},
	{"unix_socket_mode", "0777", restart, bind(kindFileMode, func(c *Config) *uint32 { return &c.UnixSocketMode })},
	{"user", "", restart, bStr(func(c *Config) *string { return &c.User })},
	{"verbose", "", false, bInt(func(c *Config) *int { return &c.Verbose })},
}

// paramAliases are other spellings PgBouncer accepts for a key.
// service_name is job_name's alias on Windows builds; it is accepted
// everywhere so that such a file loads.
var paramAliases = map[string]string{"service_name": "job_name"}

// paramIndex finds a param by its exact (case-sensitive) name.
var paramIndex = func() map[string]*param {
	m := make(map[string]*param, len(params))
	for i := range params {
		m[params[i].name] = &params[i]
	}
	return m
}()

// lookupParam finds a [pgbouncer] key, following aliases.
func lookupParam(key string) (*param, bool) {
	if alias, ok := paramAliases[key]; ok {
		key = alias
	}
	p, ok := paramIndex[key]
	return p, ok
}

// renderedDefault is the param's default rendered as a value would be (so
// that "15.0" compares equal to "15").
func (p *param) renderedDefault() string {
	if p.def == "" {
		return ""
	}
	v, err := parseValue(p.kind, p.def)
	if err != nil {
		return p.def
	}
	return renderValue(p.kind, v)
}

// buildSettings fills c.Settings from c, plus the rendered values of
// unimplemented keys the file set (extra, by key name), plus the [entra]
// keys as "entra.<key>".
func buildSettings(c *Config, extra map[string]string) {
	out := make([]Setting, 0, len(params))
	for i := range params {
		p := &params[i]
		s := Setting{Key: p.name, Default: p.def, Changeable: !p.restart}
		switch v, set := extra[p.name]; {
		case p.get != nil:
			s.Value = p.get(c)
		case set:
			s.Value = v
		case p.name == "conffile":
			s.Value = c.Path
		default:
			s.Value = p.def
		}
		out = append(out, s)
	}
	out = append(out, entraSettings(c)...)
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	c.Settings = out
}

// splitList splits a comma-separated list, trimming blanks and dropping
// empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
