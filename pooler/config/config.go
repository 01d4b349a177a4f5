// Package config holds pgwarden's one validated configuration type and the
// loaders that fill it: PgBouncer's pgbouncer.ini (with its auth_file) and the
// native pooler.yaml. Both formats produce the same *Config; the data plane
// accepts only a Config that came out of Load (or LoadINI/LoadYAML), which
// applies defaults and validates.
//
// Entra ID sign-in settings (pgwarden's own) come from the [entra] and
// [entra_principals] sections of pgbouncer.ini or the entra: block of
// pooler.yaml into Config.Entra; see Entra, and the syntax described at the
// top of entra.go.
//
// Durations are time.Duration everywhere (pgbouncer.ini gives seconds, as
// decimals; pooler.yaml gives Go durations such as "15s"). Zero means
// "disabled" where PgBouncer says so (query_timeout = 0, …).
package config

import (
	"strings"
	"time"
)

// PoolMode says when a server connection goes back to its pool.
type PoolMode int

// Pool modes, as PgBouncer names them.
const (
	// PoolModeUnset is used only in per-database and per-user overrides.
	PoolModeUnset PoolMode = iota
	// PoolSession keeps a server connection for the client's whole session.
	PoolSession
	// PoolTransaction releases the server at the end of each transaction.
	PoolTransaction
	// PoolStatement releases the server after each statement; transactions
	// spanning statements are refused.
	PoolStatement
)

// String returns PgBouncer's spelling ("session", "transaction", "statement").
func (m PoolMode) String() string {
	switch m {
	case PoolSession:
		return "session"
	case PoolTransaction:
		return "transaction"
	case PoolStatement:
		return "statement"
	}
	return ""
}

// ParsePoolMode parses PgBouncer's spelling of a pool mode.
func ParsePoolMode(s string) (PoolMode, bool) {
	switch s {
	case "session":
		return PoolSession, true
	case "transaction":
		return PoolTransaction, true
	case "statement":
		return PoolStatement, true
	}
	return PoolModeUnset, false
}

// ReplicationAllow is a database's allow_replication: which replication
// connections its clients may open.
type ReplicationAllow int

// allow_replication values. The zero value is the default.
const (
	// ReplicationAllowAll accepts physical and logical replication.
	ReplicationAllowAll ReplicationAllow = iota
	// ReplicationAllowNone refuses replication connections.
	ReplicationAllowNone
	// ReplicationAllowLogical accepts logical replication
	// (replication=database) only.
	ReplicationAllowLogical
	// ReplicationAllowPhysical accepts physical replication
	// (replication=true) only.
	ReplicationAllowPhysical
)

// ParseReplicationAllow parses an allow_replication value: all, none,
// logical or physical (case-insensitive); the boolean spellings 1, yes,
// true, on mean all and 0, no, false, off mean none.
func ParseReplicationAllow(s string) (ReplicationAllow, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "all", "1", "yes", "true", "on":
		return ReplicationAllowAll, true
	case "none", "0", "no", "false", "off":
		return ReplicationAllowNone, true
	case "logical":
		return ReplicationAllowLogical, true
	case "physical":
		return ReplicationAllowPhysical, true
	}
	return ReplicationAllowAll, false
}

// String returns the canonical spelling: all, none, logical or physical.
func (r ReplicationAllow) String() string {
	switch r {
	case ReplicationAllowNone:
		return "none"
	case ReplicationAllowLogical:
		return "logical"
	case ReplicationAllowPhysical:
		return "physical"
	}
	return "all"
}

// Allows reports whether a replication connection of the given kind
// (physical when true, logical when false) is accepted.
func (r ReplicationAllow) Allows(physical bool) bool {
	switch r {
	case ReplicationAllowAll:
		return true
	case ReplicationAllowLogical:
		return !physical
	case ReplicationAllowPhysical:
		return physical
	}
	return false
}

// AuthType is how clients prove who they are (PgBouncer's auth_type).
type AuthType string

// Auth types pgwarden implements. "hba", "cert", "ldap" and "pam" are
// recognised by the loaders; those not implemented yet produce a Warning or an
// error as documented in Validate.
const (
	AuthTrust AuthType = "trust"
	AuthAny   AuthType = "any"
	AuthPlain AuthType = "plain"
	AuthMD5   AuthType = "md5"
	AuthSCRAM AuthType = "scram-sha-256"
	AuthHBA   AuthType = "hba"
	AuthCert  AuthType = "cert"
)

// TLSMode is a libpq-style sslmode: disable, allow, prefer, require,
// verify-ca, verify-full.
type TLSMode string

// TLS modes.
const (
	TLSDisable    TLSMode = "disable"
	TLSAllow      TLSMode = "allow"
	TLSPrefer     TLSMode = "prefer"
	TLSRequire    TLSMode = "require"
	TLSVerifyCA   TLSMode = "verify-ca"
	TLSVerifyFull TLSMode = "verify-full"
)

// TLS is one leg's TLS settings (client_tls_* or server_tls_*).
type TLS struct {
	// Mode is the sslmode. Client side default "disable"; server side
	// default "prefer" (PgBouncer ≥ 1.20).
	Mode TLSMode
	// KeyFile and CertFile: our certificate (client side: the listener's;
	// server side: a client certificate presented to PostgreSQL).
	KeyFile  string
	CertFile string
	// CAFile verifies the peer (client certificates on the client side,
	// the PostgreSQL server certificate on the server side).
	CAFile string
	// Protocols: "secure" (TLS 1.2 and 1.3, default), "all", or a comma list
	// of tlsv1.0 … tlsv1.3.
	Protocols string
	// Ciphers is accepted for compatibility; Go chooses its own suites.
	Ciphers string
}

// Database is one [databases] entry. The name "*" is the fallback template:
// an unknown database name connects with DBName set to the requested name.
type Database struct {
	// Name is what clients put in their connection string.
	Name string
	// Host is a host name, an IP address, a Unix socket directory (leading
	// "/"), or a comma list (used round-robin). Empty means unix_socket_dir.
	Host string
	// Port defaults to 5432.
	Port int
	// DBName is the database on the server; empty means Name.
	DBName string
	// User, when set, forces every client of this database onto one server
	// role (one pool per database); Password is that role's password
	// (plain, md5… or SCRAM secret), else it comes from the auth file.
	User     string
	Password string
	// AuthUser/AuthQuery/AuthDBName override the global ones.
	AuthUser   string
	AuthQuery  string
	AuthDBName string
	// Pool sizing; -1 means "use the global value".
	PoolSize         int
	MinPoolSize      int
	ReservePoolSize  int
	MaxDBConnections int
	// PoolMode overrides the global pool_mode when not PoolModeUnset.
	PoolMode PoolMode
	// ServerLifetime overrides the global one when >= 0.
	ServerLifetime time.Duration
	// ConnectQuery runs once after each new server login.
	ConnectQuery string
	// Startup parameters added to the server StartupMessage.
	ClientEncoding  string
	DateStyle       string
	TimeZone        string
	ApplicationName string
	// AuthMode overrides Entra.AuthMode for this database: AuthModePassword,
	// AuthModeEntra or AuthModeBoth; "" inherits (see EffectiveAuthMode).
	AuthMode string
	// ServerAuth overrides Entra.ServerAuth for this database: one of the
	// ServerAuth* values (ServerAuthPassword selects the configured
	// password even when the global default is a token provider); ""
	// inherits (see EffectiveServerAuth).
	ServerAuth string
	// AllowReplication says which replication connections (replication=
	// true or database in a client's startup packet) the database accepts:
	// pgwarden's own allow_replication key. The zero value accepts both,
	// as PgBouncer does.
	AllowReplication ReplicationAllow
	// File and Line locate the entry, for messages.
	File string
	Line int
}

// User is one [users] entry; -1 / PoolModeUnset / negative durations mean
// "not set here".
type User struct {
	Name                   string
	PoolMode               PoolMode
	PoolSize               int
	ReservePoolSize        int
	MaxUserConnections     int
	QueryTimeout           time.Duration
	IdleTransactionTimeout time.Duration
	ClientIdleTimeout      time.Duration
	// ServerAuth overrides the database's server_auth for this role's
	// pools ("" inherits; see EffectiveUserServerAuth).
	ServerAuth string
	File       string
	Line       int
}

// Config is pgwarden's whole configuration, from either format. Field
// comments give the pgbouncer.ini key; pooler.yaml uses the same names
// grouped (see the repository's pooler.yaml).
type Config struct {
	// Path is the file this Config was loaded from; Format is "ini" or
	// "yaml".
	Path   string
	Format string

	// listen_addr (comma list; "*" = all; empty = Unix socket only).
	ListenAddrs []string
	// listen_port, default 6432; also names the Unix socket .s.PGSQL.<port>.
	ListenPort int
	// unix_socket_dir, default /tmp; empty disables the Unix socket.
	UnixSocketDir string
	// unix_socket_mode, default 0777.
	UnixSocketMode uint32
	// listen_backlog, default 128.
	ListenBacklog int

	// auth_type, default md5.
	AuthType AuthType
	// auth_file (userlist.txt); AuthUsers holds its entries once loaded:
	// user name → secret (plain text, "md5…" or "SCRAM-SHA-256$…").
	AuthFile  string
	AuthUsers map[string]string
	// auth_hba_file.
	AuthHBAFile string
	// auth_user / auth_query / auth_dbname.
	AuthUser   string
	AuthQuery  string
	AuthDBName string

	// admin_users / stats_users.
	AdminUsers []string
	StatsUsers []string

	// pool_mode, default session.
	PoolMode PoolMode
	// max_client_conn, default 100.
	MaxClientConn int
	// default_pool_size (20), min_pool_size (0), reserve_pool_size (0),
	// reserve_pool_timeout (5s), max_db_connections (0 = unlimited),
	// max_user_connections (0 = unlimited).
	DefaultPoolSize    int
	MinPoolSize        int
	ReservePoolSize    int
	ReservePoolTimeout time.Duration
	MaxDBConnections   int
	MaxUserConnections int
	// server_round_robin.
	ServerRoundRobin bool

	// server_reset_query (default "DISCARD ALL"), server_reset_query_always.
	ServerResetQuery       string
	ServerResetQueryAlways bool
	// server_check_query (default "" meaning an empty query; the literal
	// PgBouncer value "<empty>" also maps to ""), server_check_delay (30s).
	// ServerCheckDisabled is true when the key is set to an empty string.
	ServerCheckQuery    string
	ServerCheckDisabled bool
	ServerCheckDelay    time.Duration

	// Timeouts (defaults in parentheses, 0 = off unless noted):
	// server_lifetime (3600s), server_idle_timeout (600s),
	// server_connect_timeout (15s), server_login_retry (15s),
	// client_login_timeout (60s), query_timeout, query_wait_timeout (120s),
	// client_idle_timeout, idle_transaction_timeout, cancel_wait_timeout
	// (10s), transaction_timeout.
	ServerLifetime         time.Duration
	ServerIdleTimeout      time.Duration
	ServerConnectTimeout   time.Duration
	ServerLoginRetry       time.Duration
	ClientLoginTimeout     time.Duration
	QueryTimeout           time.Duration
	QueryWaitTimeout       time.Duration
	ClientIdleTimeout      time.Duration
	IdleTransactionTimeout time.Duration
	CancelWaitTimeout      time.Duration
	TransactionTimeout     time.Duration

	// track_extra_parameters (default IntervalStyle, search_path), ignore_startup_parameters.
	TrackExtraParameters    []string
	IgnoreStartupParameters []string
	// application_name_add_host.
	ApplicationNameAddHost bool
	// max_packet_size (default 2147483647), pkt_buf (4096).
	MaxPacketSize int
	PktBuf        int
	// max_prepared_statements (200).
	MaxPreparedStatements int

	// tcp_keepalive (on), tcp_keepidle/keepintvl/keepcnt (0 = OS default),
	// tcp_user_timeout (ms).
	TCPKeepalive   bool
	TCPKeepIdle    time.Duration
	TCPKeepIntvl   time.Duration
	TCPKeepCnt     int
	TCPUserTimeout time.Duration
	// so_reuseport: SO_REUSEPORT on the TCP listeners, so that several
	// processes share one port (the Unix socket stays per process).
	SOReuseport bool
	// event_loop (pgwarden's own; auto, on or off; restart needed):
	// whether plain-socket clients of transaction and statement pools
	// are relayed by one event loop thread instead of a goroutine each.
	// auto turns it on when the process may use at most
	// EventLoopAutoMaxCores cores.
	EventLoop string

	// peer_id (0 = peering off; 1..16383) and [peers]: the processes a
	// CancelRequest carrying another process's key is forwarded to.
	PeerID int
	Peers  []Peer

	// shutdown_timeout (pgwarden's own, default 0): how long a SIGTERM or
	// SHUTDOWN WAIT_FOR_CLIENTS drain lets connected clients carry on as
	// usual before transaction- and statement-mode clients are closed at
	// their next transaction boundary (idle ones at once) with 57P01.
	// 0 closes them at their next boundary straight away. Session-mode
	// clients are waited for.
	ShutdownTimeout time.Duration
	// shutdown_accept_grace (pgwarden's own, default 0): how long the TCP
	// listeners keep accepting, and serving, new clients after a drain
	// starts while /readyz already says "not ready", so that a load
	// balancer polling /readyz stops sending before the port closes.
	ShutdownAcceptGrace time.Duration

	// SignInThrottle limits failed sign-ins per client address and per
	// role (signin_throttle_* keys, pgwarden's own; off by default).
	SignInThrottle SignInThrottle

	// client_tls_*, server_tls_*.
	ClientTLS TLS
	ServerTLS TLS

	// logfile, pidfile, syslog, syslog_ident, syslog_facility,
	// log_connections (on), log_disconnections (on), log_pooler_errors (on),
	// log_stats (on), stats_period (60s), verbose.
	LogFile           string
	PidFile           string
	Syslog            bool
	SyslogIdent       string
	SyslogFacility    string
	LogConnections    bool
	LogDisconnections bool
	LogPoolerErrors   bool
	LogStats          bool
	StatsPeriod       time.Duration
	Verbose           int
	// user: drop privileges to this Unix user.
	User string

	// Entra ID sign-in settings: [entra] and [entra_principals], or entra:
	// in pooler.yaml. Entra.Enabled is false when the file has none.
	Entra Entra

	// Metrics is the Prometheus endpoint ([metrics] in pgbouncer.ini,
	// metrics: in pooler.yaml; pgwarden's own).
	Metrics Metrics

	// Audit is where the JSON sign-in audit lines go ([audit] in
	// pgbouncer.ini, audit: in pooler.yaml; pgwarden's own).
	Audit Audit

	// Databases by name (including "*"), Users by name.
	Databases map[string]*Database
	Users     map[string]*User

	// Settings lists every [pgbouncer]-level key with its effective value,
	// default and whether RELOAD can change it, in PgBouncer's names and
	// spelling, plus every [entra] key as "entra.<key>", sorted by key: what
	// SHOW CONFIG prints.
	Settings []Setting

	// Warnings are keys PgBouncer accepts that pgwarden does not implement
	// yet, and similar non-fatal findings; the binary logs each at start.
	Warnings []Problem
}

// Peer is one [peers] entry: another pgwarden (or PgBouncer) process of the
// same group, to which CancelRequests for its clients are forwarded.
type Peer struct {
	// ID is the peer's peer_id (1..65535).
	ID int
	// Host is a host name (resolved at each forward, so DNS changes are
	// followed), an IP address, or a Unix socket directory (leading "/",
	// or "@" for Linux's abstract namespace).
	Host string
	// Port defaults to 6432; for a Unix socket it names .s.PGSQL.<port>.
	Port int
	// PoolSize caps the cancels forwarded to this peer at once; 0 means
	// default_pool_size.
	PoolSize int
	// File and Line locate the entry, for messages.
	File string
	Line int
}

// PeerByID returns the [peers] entry with that id, or nil.
func (c *Config) PeerByID(id int) *Peer {
	for i := range c.Peers {
		if c.Peers[i].ID == id {
			return &c.Peers[i]
		}
	}
	return nil
}

// Setting is one SHOW CONFIG row.
type Setting struct {
	Key        string
	Value      string
	Default    string
	Changeable bool
}

// Problem is one finding while loading: file, line (0 if none), key and what
// is wrong. Error() renders "file:line: key: message".
type Problem struct {
	File    string
	Line    int
	Key     string
	Message string
}

// Entra holds the Entra ID sign-in settings: [entra] and [entra_principals]
// in pgbouncer.ini (pgwarden's own sections: PgBouncer does not know them),
// entra: in pooler.yaml. See entra.go for the syntax. Every field has its
// default even when Enabled is false; Validate checks the rest only when
// Enabled.
type Entra struct {
	// Enabled is true when an [entra] section / entra: block is present.
	Enabled bool
	// AuthMode is the default auth mode for databases: AuthModePassword
	// (passwords only), AuthModeEntra (tokens only) or AuthModeBoth.
	// Default AuthModeBoth when Enabled, AuthModePassword otherwise.
	AuthMode string
	// Authority is the identity provider's base URL (OIDC discovery lives
	// under {Authority}/{tenant}/). Default https://login.microsoftonline.com;
	// http:// only for loopback hosts.
	Authority string
	// Tenants are the allowed tid values (GUIDs, lower case); required when
	// Enabled.
	Tenants []string
	// Audiences are the accepted aud values; default
	// https://ossrdbms-aad.database.windows.net with and without a trailing
	// slash. Must not be empty.
	Audiences []string
	// ClockSkew is the leeway on exp and nbf; default 30s; 0 means none.
	ClockSkew time.Duration
	// JWKSCacheFile, if set, is where the last good discovery documents and
	// key sets are kept across restarts. It need not exist yet.
	JWKSCacheFile string
	// JWKSRefreshInterval is how often keys are fetched again; default 1h;
	// must be positive.
	JWKSRefreshInterval time.Duration
	// UnknownKidRefreshInterval is the least time between two key fetches
	// caused by an unknown kid; default 5m; must be positive.
	UnknownKidRefreshInterval time.Duration
	// AllowPlaintext accepts tokens from clients without TLS (loopback
	// demos); default false.
	AllowPlaintext bool
	// DisconnectOnTokenExpiry ends a token-authenticated client session at
	// its token's exp (at the next transaction boundary); default false.
	DisconnectOnTokenExpiry bool
	// DisconnectOnRevoke ends the open sessions of a principal removed by a
	// reload or a principal_query refresh; default true.
	DisconnectOnRevoke bool
	// GraphEndpoint is Microsoft Graph's base URL, for group membership on
	// groups overage; default https://graph.microsoft.com; http:// only for
	// loopback hosts.
	GraphEndpoint string
	// PrincipalQuery is SQL run on the backend that returns principals
	// (role, oid, type, admin), or PrincipalQueryPGAADAuth for the built-in
	// query that reads Azure's pgaadauth security labels; "" = none.
	PrincipalQuery string
	// PrincipalQueryDatabase is the database (a [databases] name, or one the
	// "*" fallback provides) PrincipalQuery runs in; required with it.
	PrincipalQueryDatabase string
	// PrincipalRefreshInterval is how often PrincipalQuery runs again;
	// default 5m; 0 means only at start and on RELOAD.
	PrincipalRefreshInterval time.Duration
	// Principals are the [entra_principals] / entra.principals entries, in
	// file order.
	Principals []EntraPrincipal

	// ServerAuth is the backend credentials default for databases (see
	// Database.ServerAuth): "" (password, as PgBouncer; the loaders store
	// "password" as ""), ServerAuthPassthrough, ServerAuthManagedIdentity,
	// ServerAuthAppService, ServerAuthWorkloadIdentity,
	// ServerAuthClientSecret or ServerAuthClientCertificate.
	ServerAuth string
	// ClientID, ObjectID and ResourceID select a user-assigned managed
	// identity (managed_identity, app_service: at most one of them);
	// ClientID and TenantID name the app registration (client_secret,
	// client_certificate; optional overrides of AZURE_CLIENT_ID and
	// AZURE_TENANT_ID for workload_identity). TenantID is a GUID or a domain
	// name.
	ClientID   string
	ObjectID   string
	ResourceID string
	TenantID   string
	// ClientSecretFile holds the client secret (client_secret);
	// ClientCertFile is a PEM file with the certificate and its private key
	// (client_certificate). File paths only: never the secret inline.
	ClientSecretFile string
	ClientCertFile   string
	// TokenResource is the resource pgwarden's own backend tokens are for;
	// default https://ossrdbms-aad.database.windows.net.
	TokenResource string
	// IMDSEndpoint and TokenEndpointAuthority override the managed identity
	// endpoint and the Entra token endpoint's authority host, for tests;
	// "" = the real defaults.
	IMDSEndpoint           string
	TokenEndpointAuthority string
}

// EntraPrincipal maps a PostgreSQL role name to an Entra object, by object
// ID, as Azure's pgaadauth security labels do.
type EntraPrincipal struct {
	// Role is the role name a client sends as its user name (case-sensitive).
	Role string
	// OID is the user's, group's or service principal's object ID (a GUID,
	// lower case).
	OID string
	// Type is EntraPrincipalUser, EntraPrincipalGroup or
	// EntraPrincipalService.
	Type string
	// Tenant, if set, is the tenant (GUID, lower case) the token's tid must
	// equal; "" = any of Entra.Tenants.
	Tenant string
	// Admin allows the admin console; MFA requires "mfa" in the token's amr.
	Admin bool
	MFA   bool
	// File and Line locate the entry, for messages.
	File string
	Line int
}

// Audit says where the sign-in audit lines (one JSON object per sign-in
// attempt) go. With neither set they go where the log goes (standard error,
// logfile, syslog); with either set, only there.
type Audit struct {
	// LogFile is a file the lines are appended to, reopened on SIGHUP and
	// RELOAD (logrotate).
	LogFile string
	// Syslog sends the lines to syslog (syslog_ident, syslog_facility).
	Syslog bool
}

// Metrics configures the HTTP listener for /metrics, /healthz and /readyz.
type Metrics struct {
	// Listen is host:port; empty (the default) means no listener.
	Listen string
	// Pprof mounts net/http/pprof under /debug/pprof/ (only allowed when
	// Listen is a loopback address).
	Pprof bool
	// StatsNames picks the names of PgBouncer's stats counters: "both"
	// (the default; "" means it too), "totals" (pgbouncer_stats_totals_*,
	// pgbouncer_exporter 0.11 and later) or "legacy" (pgbouncer_stats_*).
	StatsNames string
	// NoClientConnections leaves pgbouncer_client_connections out
	// (client_connections = 0): its application_name label is chosen by
	// clients.
	NoClientConnections bool
}

// Values of [Metrics.StatsNames].
const (
	StatsNamesBoth   = "both"
	StatsNamesTotals = "totals"
	StatsNamesLegacy = "legacy"
)

// SignInThrottle is the failed sign-in budget of each client address and
// of each role name: token buckets of Burst failures that refill one
// failure every Refill. A Burst of 0 turns that scope off.
type SignInThrottle struct {
	// signin_throttle_address_burst (0 = off) and
	// signin_throttle_address_refill (60 s): per client address (IPv4
	// address, IPv6 /64, or the peer's uid on the Unix socket).
	AddressBurst  int
	AddressRefill time.Duration
	// signin_throttle_role_burst (0 = off) and signin_throttle_role_refill
	// (60 s): per user name the clients ask for, existing or not.
	RoleBurst  int
	RoleRefill time.Duration
	// signin_throttle_max_delay (0): a sign-in whose budget is spent waits
	// up to this long for it to come back instead of being refused.
	MaxDelay time.Duration
}

// Enabled reports whether either scope is on.
func (t SignInThrottle) Enabled() bool { return t.AddressBurst > 0 || t.RoleBurst > 0 }

// EventLoopAutoMaxCores is the most cores event_loop = auto turns the
// event loop on with. One loop thread relays at most one core's worth of
// transactions: on a small machine, where the pooler competes with
// PostgreSQL for CPU, its lower cost per transaction wins; on a larger
// one, goroutines relay on every core.
const EventLoopAutoMaxCores = 4

// EventLoopOn resolves event_loop for a process that may use cores cores.
func (c *Config) EventLoopOn(cores int) bool {
	switch c.EventLoop {
	case "on":
		return true
	case "off":
		return false
	}
	return cores <= EventLoopAutoMaxCores
}
