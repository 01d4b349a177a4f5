package config

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// adminDBName is the admin console's virtual database; no [databases] entry
// or auth_dbname may use it.
const adminDBName = "pgbouncer"

// Validate checks c as a whole and returns every problem found, joined
// (errors.Join of Problem values), or nil. Load calls it; call it again after
// changing a Config (console SET, RELOAD).
//
// It checks: pool modes; auth_type (any, trust, plain, md5, scram-sha-256,
// hba and cert are accepted; ldap and pam are "not supported by pgwarden");
// auth_type any needs a forced user on every database; auth_type hba needs an
// existing auth_hba_file; TLS modes and protocols; client_tls_sslmode other
// than disable needs existing key and cert files (verify-ca/verify-full also
// a CA file); TLS files that are set must exist; no size or timeout is
// negative (per-database and per-user overrides may be -1, "unset"); ports
// are in range; something is listened on; the admin database name
// "pgbouncer" is not used for a database or as auth_dbname.
//
// Entra: databases' auth_mode (password, entra, both) and server_auth values;
// auth_mode entra or both and any server_auth but password need Entra
// enabled, as do principals. When enabled: auth_mode; tenants present and
// GUIDs; audiences present; authority, graph_endpoint and
// token_endpoint_authority are https:// URLs (http:// only on loopback:
// localhost, 127.0.0.0/8, ::1), imds_endpoint an http(s) URL; clock_skew
// and principal_refresh_interval not negative, jwks_refresh_interval and
// unknown_kid_refresh_interval positive; principal_query names an existing
// database in principal_query_database; every principal has a role listed
// once, a GUID oid, a type user, group or service, and a GUID tenant if
// any; server_auth passthrough needs an auth mode accepting tokens;
// client_secret needs client_id, tenant_id and client_secret_file,
// client_certificate needs client_id, tenant_id and client_cert_file (those
// files must exist when set); managed_identity and app_service take at most
// one of client_id, object_id and resource_id; token providers need
// token_resource.
func (c *Config) Validate() error {
	errs, _ := c.validate(nil)
	return joinProblems(errs)
}

// validate returns Validate's errors plus non-fatal warnings, located with
// pos when it knows where a key was set.
func (c *Config) validate(pos positions) (errs, warns []Problem) {
	bad := func(key, format string, args ...any) {
		errs = append(errs, pos.problem(c.Path, key, fmt.Sprintf(format, args...)))
	}
	warn := func(key, format string, args ...any) {
		warns = append(warns, pos.problem(c.Path, key, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, c.validateUserServerAuth()...)
	if m := c.Metrics; m.Listen != "" {
		host, port, err := net.SplitHostPort(m.Listen)
		switch {
		case err != nil || port == "":
			bad("metrics.listen", "want host:port, not %q", m.Listen)
		case m.Pprof && !isLoopbackHost(host):
			bad("metrics.pprof", "pprof is served only on a loopback metrics.listen address, not %q", m.Listen)
		}
	} else if c.Metrics.Pprof {
		bad("metrics.pprof", "needs metrics.listen")
	}
	switch c.Metrics.StatsNames {
	case "", StatsNamesBoth, StatsNamesTotals, StatsNamesLegacy:
	default:
		bad("metrics.stats_names", "want both, totals or legacy, not %q", c.Metrics.StatsNames)
	}

	// Listening.
	if c.ListenPort <= 0 || c.ListenPort > 65535 {
		bad("listen_port", "must be from 1 to 65535, not %d", c.ListenPort)
	}
	if len(c.ListenAddrs) == 0 && c.UnixSocketDir == "" {
		bad("listen_addr", "nothing to listen on: listen_addr and unix_socket_dir are both empty")
	}
	if c.UnixSocketMode > 0o7777 {
		bad("unix_socket_mode", "must be a file mode such as 0777, not %#o", c.UnixSocketMode)
	}

	// Peering.
	if c.PeerID < 0 || c.PeerID > 16383 {
		bad("peer_id", "must be from 0 (peering off) to 16383, not %d", c.PeerID)
	}
	for _, p := range c.Peers {
		at := func(msg string) {
			errs = append(errs, Problem{File: p.File, Line: p.Line, Key: c.entryKey("peers", strconv.Itoa(p.ID)), Message: msg})
		}
		switch {
		case p.ID < 1 || p.ID > 65535:
			at("ids of peers must be a number larger than 0 and at most 65535")
		case p.Host == "":
			at(fmt.Sprintf("host was not provided for peer %d", p.ID))
		case p.Port <= 0 || p.Port > 65535:
			at(fmt.Sprintf("invalid port: %d", p.Port))
		case p.PoolSize < 0:
			at(fmt.Sprintf("pool_size must not be negative (got %d)", p.PoolSize))
		case strings.HasPrefix(p.Host, ".") || strings.Contains(p.Host, "/") && !strings.HasPrefix(p.Host, "/"):
			at(fmt.Sprintf("host %q: a Unix socket directory must be an absolute path", p.Host))
		}
	}
	if len(c.Peers) > 0 && c.PeerID == 0 {
		warn("peer_id", "[peers] is set but peer_id is 0, so peering is off: cancel requests are not forwarded")
	}

	// Pooling.
	if !validPoolMode(c.PoolMode) {
		bad("pool_mode", "invalid pool mode (expected session, transaction or statement)")
	}
	for _, n := range []struct {
		key string
		v   int
	}{
		{"listen_backlog", c.ListenBacklog},
		{"max_client_conn", c.MaxClientConn},
		{"default_pool_size", c.DefaultPoolSize},
		{"min_pool_size", c.MinPoolSize},
		{"reserve_pool_size", c.ReservePoolSize},
		{"max_db_connections", c.MaxDBConnections},
		{"max_user_connections", c.MaxUserConnections},
		{"max_prepared_statements", c.MaxPreparedStatements},
		{"max_packet_size", c.MaxPacketSize},
		{"pkt_buf", c.PktBuf},
		{"tcp_keepcnt", c.TCPKeepCnt},
		{"signin_throttle_address_burst", c.SignInThrottle.AddressBurst},
		{"signin_throttle_role_burst", c.SignInThrottle.RoleBurst},
		{"verbose", c.Verbose},
	} {
		if n.v < 0 {
			bad(n.key, "must not be negative (got %d)", n.v)
		}
	}
	if c.PktBuf == 0 {
		bad("pkt_buf", "must be positive")
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"reserve_pool_timeout", c.ReservePoolTimeout},
		{"server_check_delay", c.ServerCheckDelay},
		{"server_lifetime", c.ServerLifetime},
		{"server_idle_timeout", c.ServerIdleTimeout},
		{"server_connect_timeout", c.ServerConnectTimeout},
		{"server_login_retry", c.ServerLoginRetry},
		{"client_login_timeout", c.ClientLoginTimeout},
		{"query_timeout", c.QueryTimeout},
		{"query_wait_timeout", c.QueryWaitTimeout},
		{"client_idle_timeout", c.ClientIdleTimeout},
		{"idle_transaction_timeout", c.IdleTransactionTimeout},
		{"cancel_wait_timeout", c.CancelWaitTimeout},
		{"transaction_timeout", c.TransactionTimeout},
		{"tcp_keepidle", c.TCPKeepIdle},
		{"tcp_keepintvl", c.TCPKeepIntvl},
		{"tcp_user_timeout", c.TCPUserTimeout},
		{"stats_period", c.StatsPeriod},
		{"shutdown_timeout", c.ShutdownTimeout},
		{"shutdown_accept_grace", c.ShutdownAcceptGrace},
		{"signin_throttle_max_delay", c.SignInThrottle.MaxDelay},
	} {
		if d.v < 0 {
			bad(d.key, "must not be negative (got %v)", d.v)
		}
	}
	c.validateSignInThrottle(bad, warn)

	// Authentication.
	switch c.AuthType {
	case AuthAny, AuthTrust, AuthPlain, AuthMD5, AuthSCRAM, AuthHBA, AuthCert:
	case authLDAP, authPAM:
		bad("auth_type", "auth_type %s is not supported by pgwarden", c.AuthType)
	default:
		bad("auth_type", "invalid auth_type %q (expected any, trust, plain, md5, scram-sha-256, hba or cert)", string(c.AuthType))
	}
	switch c.AuthType {
	case AuthAny:
		for _, name := range c.databaseNames() {
			if c.Databases[name].User == "" {
				errs = append(errs, c.dbProblem(name, "auth_type any requires a forced user (user=) on every database; this one has none"))
			}
		}
	case AuthHBA:
		if c.AuthHBAFile == "" {
			bad("auth_hba_file", "auth_type hba needs auth_hba_file")
		} else if !exists(c.AuthHBAFile) {
			bad("auth_hba_file", "file %q not found", c.AuthHBAFile)
		}
	case AuthCert:
		if c.ClientTLS.Mode == TLSDisable {
			bad("client_tls_sslmode", "auth_type cert needs client TLS (client_tls_sslmode is disable)")
		}
	case AuthTrust, AuthPlain, AuthMD5, AuthSCRAM:
		if c.AuthFile == "" && c.AuthUser == "" && !c.anyDatabaseAuthUser() {
			warn("auth_type", "auth_type %s but neither auth_file nor auth_user is set; no client can sign in", c.AuthType)
		}
	}
	if c.AuthDBName == adminDBName {
		bad("auth_dbname", "auth_dbname must not be the admin database %q", adminDBName)
	}

	// TLS.
	c.validateTLS("client", &c.ClientTLS, bad)
	c.validateTLS("server", &c.ServerTLS, bad)
	if c.ClientTLS.Mode != TLSDisable && validTLSMode(c.ClientTLS.Mode) {
		if c.ClientTLS.KeyFile == "" {
			bad("client_tls_key_file", "client_tls_sslmode %s needs client_tls_key_file", c.ClientTLS.Mode)
		}
		if c.ClientTLS.CertFile == "" {
			bad("client_tls_cert_file", "client_tls_sslmode %s needs client_tls_cert_file", c.ClientTLS.Mode)
		}
		if (c.ClientTLS.Mode == TLSVerifyCA || c.ClientTLS.Mode == TLSVerifyFull) && c.ClientTLS.CAFile == "" {
			bad("client_tls_ca_file", "client_tls_sslmode %s needs client_tls_ca_file to verify client certificates", c.ClientTLS.Mode)
		}
	}
	if (c.ServerTLS.KeyFile == "") != (c.ServerTLS.CertFile == "") {
		bad("server_tls_key_file", "server_tls_key_file and server_tls_cert_file must be set together")
	}

	// Entra ID, and the databases' auth_mode and server_auth.
	eerrs, ewarns := c.validateEntra(pos)
	errs = append(errs, eerrs...)
	warns = append(warns, ewarns...)

	if c.EventLoop != "auto" && c.EventLoop != "on" && c.EventLoop != "off" {
		bad("event_loop", "event_loop must be auto, on or off, not %q", c.EventLoop)
	}

	// Logging.
	if !slices.Contains(syslogFacilities, c.SyslogFacility) {
		warn("syslog_facility", "unknown syslog_facility %q; daemon is used", c.SyslogFacility)
	}

	// Databases and users.
	for _, name := range c.databaseNames() {
		db := c.Databases[name]
		dbBad := func(format string, args ...any) {
			errs = append(errs, c.dbProblem(name, fmt.Sprintf(format, args...)))
		}
		switch {
		case name == adminDBName:
			dbBad("database name %q is reserved", name)
		case name == "":
			dbBad("empty database name")
		}
		if db.Port <= 0 || db.Port > 65535 {
			dbBad("port must be from 1 to 65535, not %d", db.Port)
		}
		checkOverride(dbBad, "pool_size", db.PoolSize)
		checkOverride(dbBad, "min_pool_size", db.MinPoolSize)
		checkOverride(dbBad, "reserve_pool_size", db.ReservePoolSize)
		checkOverride(dbBad, "max_db_connections", db.MaxDBConnections)
		if db.PoolMode != PoolModeUnset && !validPoolMode(db.PoolMode) {
			dbBad("invalid pool_mode")
		}
		if db.AuthDBName == adminDBName {
			dbBad("auth_dbname must not be the admin database %q", adminDBName)
		}
	}
	userNames := make([]string, 0, len(c.Users))
	for name := range c.Users {
		userNames = append(userNames, name)
	}
	sort.Strings(userNames)
	for _, name := range userNames {
		u := c.Users[name]
		uBad := func(format string, args ...any) {
			errs = append(errs, c.userProblem(name, fmt.Sprintf(format, args...)))
		}
		checkOverride(uBad, "pool_size", u.PoolSize)
		checkOverride(uBad, "reserve_pool_size", u.ReservePoolSize)
		checkOverride(uBad, "max_user_connections", u.MaxUserConnections)
		if u.PoolMode != PoolModeUnset && !validPoolMode(u.PoolMode) {
			uBad("invalid pool_mode")
		}
	}
	return errs, warns
}

// syslogFacilities are the facility names PgBouncer knows.
var syslogFacilities = []string{"auth", "authpriv", "daemon", "user", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}

// tlsProtocolWords are the words libtls accepts in *_tls_protocols.
var tlsProtocolWords = []string{"all", "secure", "default", "legacy", "tlsv1", "tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}

// validateTLS checks one leg's mode, protocols and files.
func (c *Config) validateTLS(leg string, t *TLS, bad func(key, format string, args ...any)) {
	prefix := leg + "_tls_"
	if !validTLSMode(t.Mode) {
		bad(prefix+"sslmode", "invalid sslmode %q (expected disable, allow, prefer, require, verify-ca or verify-full)", string(t.Mode))
	}
	for _, word := range strings.FieldsFunc(t.Protocols, func(r rune) bool { return r == ',' || r == ':' || r == ' ' || r == '\t' }) {
		w := strings.ToLower(strings.TrimLeft(word, "!-"))
		if !slices.Contains(tlsProtocolWords, w) {
			bad(prefix+"protocols", "unknown TLS protocol %q (expected secure, all, or a list of tlsv1.0 … tlsv1.3)", word)
		}
	}
	for _, f := range []struct{ key, name string }{
		{prefix + "key_file", t.KeyFile},
		{prefix + "cert_file", t.CertFile},
		{prefix + "ca_file", t.CAFile},
	} {
		if f.name != "" && !exists(f.name) {
			bad(f.key, "file %q not found", f.name)
		}
	}
}

// checkOverride refuses per-database/per-user sizes below -1 ("unset").
func checkOverride(bad func(format string, args ...any), key string, v int) {
	if v < -1 {
		bad("%s must not be negative (got %d)", key, v)
	}
}

// validPoolMode reports whether m is session, transaction or statement.
func validPoolMode(m PoolMode) bool {
	return m == PoolSession || m == PoolTransaction || m == PoolStatement
}

// validTLSMode reports whether m is a known sslmode.
func validTLSMode(m TLSMode) bool {
	_, ok := parseTLSMode(string(m))
	return ok && string(m) == strings.ToLower(string(m))
}

// databaseNames returns the database names, sorted.
func (c *Config) databaseNames() []string {
	names := make([]string, 0, len(c.Databases))
	for name := range c.Databases {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// anyDatabaseAuthUser reports whether some database has its own auth_user.
func (c *Config) anyDatabaseAuthUser() bool {
	for _, db := range c.Databases {
		if db.AuthUser != "" {
			return true
		}
	}
	return false
}

// dbProblem locates a problem at a database entry.
func (c *Config) dbProblem(name, msg string) Problem {
	db := c.Databases[name]
	p := Problem{File: c.Path, Key: c.entryKey("databases", name), Message: msg}
	if db != nil && db.File != "" {
		p.File, p.Line = db.File, db.Line
	}
	return p
}

// userProblem locates a problem at a user entry.
func (c *Config) userProblem(name, msg string) Problem {
	u := c.Users[name]
	p := Problem{File: c.Path, Key: c.entryKey("users", name), Message: msg}
	if u != nil && u.File != "" {
		p.File, p.Line = u.File, u.Line
	}
	return p
}

// entryKey names a [databases]/[users] entry as the file format does:
// "databases/name" in pgbouncer.ini, "databases.name" in YAML.
func (c *Config) entryKey(section, name string) string {
	if c.Format == "yaml" {
		return section + "." + name
	}
	return section + "/" + name
}

// validateSignInThrottle checks the signin_throttle_* keys: a scope that is
// on needs a positive refill (0 would lock a key out until a restart).
func (c *Config) validateSignInThrottle(bad, warn func(key, format string, args ...any)) {
	t := c.SignInThrottle
	for _, s := range []struct {
		scope  string
		burst  int
		refill time.Duration
	}{
		{"address", t.AddressBurst, t.AddressRefill},
		{"role", t.RoleBurst, t.RoleRefill},
	} {
		switch {
		case s.refill < 0:
			bad("signin_throttle_"+s.scope+"_refill", "must not be negative (got %v)", s.refill)
		case s.burst > 0 && s.refill == 0:
			bad("signin_throttle_"+s.scope+"_refill", "must be positive when signin_throttle_%s_burst is set (0 would never give a failed sign-in back)", s.scope)
		}
	}
	if t.Enabled() && t.MaxDelay > 0 && c.ClientLoginTimeout > 0 && t.MaxDelay >= c.ClientLoginTimeout {
		warn("signin_throttle_max_delay", "signin_throttle_max_delay (%v) is not below client_login_timeout (%v): a held sign-in ends at client_login_timeout", t.MaxDelay, c.ClientLoginTimeout)
	}
}
