package metrics

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is what PgBouncer's admin console shows at scrape time, as
// pgbouncer_exporter reads it: SHOW POOLS, DATABASES, STATS_TOTALS, LISTS,
// CLIENTS and two SHOW CONFIG keys. A nil Lists or Config leaves those
// families out.
type Snapshot struct {
	Pools     []PoolStats
	Databases []DatabaseStats
	Totals    []DatabaseTotals
	Lists     *ListStats
	Config    *ConfigStats
	Clients   []ClientGroup
}

// PoolStats is one pool's SHOW POOLS row. One PoolStats describes one
// (Database, User) pair; a snapshot must not hold the same pair twice.
type PoolStats struct {
	Database string // pool's database name (label database)
	User     string // pool's user name (label user)

	ClActive           int           // cl_active: clients linked to a server or idle with no queries waiting
	ClWaiting          int           // cl_waiting: clients that sent queries and wait for a server
	ClActiveCancelReq  int           // cl_active_cancel_req: clients whose cancel request was forwarded
	ClWaitingCancelReq int           // cl_waiting_cancel_req: clients whose cancel request was not forwarded yet
	SvActive           int           // sv_active: servers linked to a client
	SvActiveCancel     int           // sv_active_cancel: servers forwarding a cancel request
	SvBeingCanceled    int           // sv_being_canceled: servers waiting for cancel requests against them
	SvIdle             int           // sv_idle: servers unused and immediately usable
	SvUsed             int           // sv_used: servers idle longer than server_check_delay, to be checked
	SvTested           int           // sv_tested: servers running server_reset_query or server_check_query
	SvLogin            int           // sv_login: servers in the process of logging in
	MaxWait            time.Duration // maxwait: how long the oldest waiting client has waited
}

// DatabaseStats is one SHOW DATABASES row. Name, Host, Port, Database,
// ForceUser and PoolMode are the labels pgbouncer_exporter gives every
// pgbouncer_databases_* gauge ("" where the console shows NULL).
type DatabaseStats struct {
	Name, Host string
	Port       int
	Database   string
	ForceUser  string
	PoolMode   string

	PoolSize           int  // pool_size
	ReservePool        int  // reserve_pool_size
	MaxConnections     int  // max_connections (0: unlimited)
	CurrentConnections int  // current_connections: server connections
	Paused             bool // paused
	Disabled           bool // disabled
}

// Totals are a database's SHOW STATS_TOTALS counters since process start;
// times in microseconds, as the console shows them.
type Totals struct {
	ServerAssignmentCount uint64 // server_assignment_count: times a server was assigned to a client
	XactCount             uint64 // xact_count: transactions pooled
	QueryCount            uint64 // query_count: queries pooled
	BytesReceived         uint64 // bytes_received: bytes received from clients
	BytesSent             uint64 // bytes_sent: bytes sent to clients
	XactTimeMicros        uint64 // xact_time: µs spent in transactions, idle in transaction included
	QueryTimeMicros       uint64 // query_time: µs spent actively running queries
	WaitTimeMicros        uint64 // wait_time: µs clients spent waiting for a server
	ClientParseCount      uint64 // client_parse_count: Parse messages from clients
	ServerParseCount      uint64 // server_parse_count: Parse messages sent to servers
	BindCount             uint64 // bind_count: Bind messages from clients
}

// DatabaseTotals is one SHOW STATS_TOTALS row.
type DatabaseTotals struct {
	Database string
	Totals
}

// ListStats is SHOW LISTS (the rows pgbouncer_exporter reads).
type ListStats struct {
	Databases, Users, Pools                int
	FreeClients, UsedClients, LoginClients int
	FreeServers, UsedServers               int
	DNSNames, DNSZones, DNSQueriesInFlight int
}

// ConfigStats are the SHOW CONFIG keys pgbouncer_exporter reads.
type ConfigStats struct {
	MaxClientConn      int // max_client_conn
	MaxUserConnections int // max_user_connections
}

// ClientGroup counts SHOW CLIENTS rows with the same database, user,
// application_name and state (pgbouncer_client_connections).
type ClientGroup struct {
	Database, User, ApplicationName, State string
	Count                                  int
}

// PoolOption configures [NewPgBouncerCollector].
type PoolOption func(*poolCollector)

// WithoutLegacyStats stops the collector from emitting the pre-v0.11
// pgbouncer_exporter names (pgbouncer_stats_*); only pgbouncer_stats_totals_*
// remain.
func WithoutLegacyStats() PoolOption { return func(c *poolCollector) { c.legacy = nil } }

// WithoutStatsTotals stops the collector from emitting the v0.11+
// pgbouncer_exporter names (pgbouncer_stats_totals_*); only the legacy
// pgbouncer_stats_* names remain.
func WithoutStatsTotals() PoolOption { return func(c *poolCollector) { c.totals = nil } }

// WithoutClientConnections stops the collector from emitting
// pgbouncer_client_connections, whose application_name label is chosen by
// clients.
func WithoutClientConnections() PoolOption { return func(c *poolCollector) { c.clients = nil } }

// statsFamily is one STATS_TOTALS counter: its name after the prefix,
// pgbouncer_exporter's help, and its value in the metric's unit.
type statsFamily struct {
	suffix string
	help   string
	value  func(*Totals) float64
}

const microsPerSecond = 1e6

var statsFamilies = []statsFamily{
	{"queries_pooled_total", "Total number of SQL queries pooled", func(t *Totals) float64 { return float64(t.QueryCount) }},
	{"queries_duration_seconds_total", "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries", func(t *Totals) float64 { return float64(t.QueryTimeMicros) / microsPerSecond }},
	{"received_bytes_total", "Total volume in bytes of network traffic received by pgbouncer, shown as bytes", func(t *Totals) float64 { return float64(t.BytesReceived) }},
	{"sent_bytes_total", "Total volume in bytes of network traffic sent by pgbouncer, shown as bytes", func(t *Totals) float64 { return float64(t.BytesSent) }},
	{"client_wait_seconds_total", "Time spent by clients waiting for a server in seconds", func(t *Totals) float64 { return float64(t.WaitTimeMicros) / microsPerSecond }},
	{"sql_transactions_pooled_total", "Total number of SQL transactions pooled", func(t *Totals) float64 { return float64(t.XactCount) }},
	{"server_in_transaction_seconds_total", "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries", func(t *Totals) float64 { return float64(t.XactTimeMicros) / microsPerSecond }},
	{"client_parses_total", "Total number of prepared statement Parse messages received from clients", func(t *Totals) float64 { return float64(t.ClientParseCount) }},
	{"server_parses_total", "Total number of prepared statement Parse messages sent by pgbouncer to PostgreSQL", func(t *Totals) float64 { return float64(t.ServerParseCount) }},
	{"binds_total", "Total number of prepared statements readied for execution with a Bind message", func(t *Totals) float64 { return float64(t.BindCount) }},
	{"server_assignments_total", "Total number of client connections which have been served since process start", func(t *Totals) float64 { return float64(t.ServerAssignmentCount) }},
}

// gauge is one gauge family read from a snapshot row of type T.
type gauge[T any] struct {
	desc  *prometheus.Desc
	value func(*T) float64
}

// labelValue is s, or "<invalid>" when s is not UTF-8 (as pgbouncer_exporter
// does): names chosen by clients must not make the scrape fail.
func labelValue(s string) string {
	if !utf8.ValidString(s) {
		return "<invalid>"
	}
	return s
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

type poolCollector struct {
	snapshot func() Snapshot
	version  string

	up          *prometheus.Desc
	versionInfo *prometheus.Desc
	pools       []gauge[PoolStats]
	databases   []gauge[DatabaseStats]
	lists       []gauge[ListStats]
	config      []gauge[ConfigStats]
	clients     *prometheus.Desc   // nil when off
	totals      []*prometheus.Desc // pgbouncer_stats_totals_*, parallel to statsFamilies; nil when off
	legacy      []*prometheus.Desc // pgbouncer_stats_*, parallel to statsFamilies; nil when off
}

// NewPgBouncerCollector returns a Collector that calls snapshot on every
// scrape and emits PgBouncer's figures under the metric names, labels,
// help texts and units of prometheus-community/pgbouncer_exporter v0.12:
//
//   - pgbouncer_up (always 1: the figures are read in process) and
//     pgbouncer_version_info{version};
//   - pgbouncer_pools_*{database,user} from SHOW POOLS;
//   - pgbouncer_databases_*{name,host,port,database,force_user,pool_mode}
//     from SHOW DATABASES;
//   - the SHOW STATS_TOTALS counters per database under both the current
//     pgbouncer_stats_totals_* and the pre-v0.11 pgbouncer_stats_* names,
//     times in seconds;
//   - the SHOW LISTS gauges (pgbouncer_databases, pgbouncer_pools,
//     pgbouncer_used_clients, ...);
//   - pgbouncer_config_max_client_connections and
//     pgbouncer_config_max_user_connections;
//   - pgbouncer_client_connections{database,user,application_name,state}.
//
// snapshot must be safe to call from the scraping goroutine and should not
// block for long.
func NewPgBouncerCollector(snapshot func() Snapshot, version string, opts ...PoolOption) prometheus.Collector {
	poolLabels := []string{"database", "user"}
	dbLabels := []string{"name", "host", "port", "database", "force_user", "pool_mode"}
	pg := func(name, help string, v func(*PoolStats) float64) gauge[PoolStats] {
		return gauge[PoolStats]{prometheus.NewDesc("pgbouncer_pools_"+name, help, poolLabels, nil), v}
	}
	dg := func(name, help string, v func(*DatabaseStats) float64) gauge[DatabaseStats] {
		return gauge[DatabaseStats]{prometheus.NewDesc("pgbouncer_databases_"+name, help, dbLabels, nil), v}
	}
	lg := func(name, help string, v func(*ListStats) float64) gauge[ListStats] {
		return gauge[ListStats]{prometheus.NewDesc("pgbouncer_"+name, help, nil, nil), v}
	}
	cg := func(name, help string, v func(*ConfigStats) float64) gauge[ConfigStats] {
		return gauge[ConfigStats]{prometheus.NewDesc("pgbouncer_config_"+name, help, nil, nil), v}
	}
	c := &poolCollector{
		snapshot:    snapshot,
		version:     version,
		up:          prometheus.NewDesc("pgbouncer_up", "The pgbouncer scrape succeeded", nil, nil),
		versionInfo: prometheus.NewDesc("pgbouncer_version_info", "The pgbouncer version info", []string{"version"}, nil),
		pools: []gauge[PoolStats]{
			pg("client_active_connections", "Client connections linked to server connection and able to process queries, shown as connection", func(p *PoolStats) float64 { return float64(p.ClActive) }),
			pg("client_active_cancel_connections", "Client connections that have forwarded query cancellations to the server and are waiting for the server response", func(p *PoolStats) float64 { return float64(p.ClActiveCancelReq) }),
			pg("client_waiting_connections", "Client connections waiting on a server connection, shown as connection", func(p *PoolStats) float64 { return float64(p.ClWaiting) }),
			pg("client_waiting_cancel_connections", "Client connections that have not forwarded query cancellations to the server yet", func(p *PoolStats) float64 { return float64(p.ClWaitingCancelReq) }),
			pg("server_active_connections", "Server connections linked to a client connection, shown as connection", func(p *PoolStats) float64 { return float64(p.SvActive) }),
			pg("server_active_cancel_connections", "Server connections that are currently forwarding a cancel request.", func(p *PoolStats) float64 { return float64(p.SvActiveCancel) }),
			pg("server_being_canceled_connections", "Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed that were sent to cancel a query on this server.", func(p *PoolStats) float64 { return float64(p.SvBeingCanceled) }),
			pg("server_idle_connections", "Server connections idle and ready for a client query, shown as connection", func(p *PoolStats) float64 { return float64(p.SvIdle) }),
			pg("server_used_connections", "Server connections idle more than server_check_delay, needing server_check_query, shown as connection", func(p *PoolStats) float64 { return float64(p.SvUsed) }),
			pg("server_testing_connections", "Server connections currently running either server_reset_query or server_check_query, shown as connection", func(p *PoolStats) float64 { return float64(p.SvTested) }),
			pg("server_login_connections", "Server connections currently in the process of logging in, shown as connection", func(p *PoolStats) float64 { return float64(p.SvLogin) }),
			pg("client_maxwait_seconds", "Age of oldest unserved client connection, shown as second", func(p *PoolStats) float64 { return p.MaxWait.Seconds() }),
		},
		databases: []gauge[DatabaseStats]{
			dg("pool_size", "Maximum number of server connections", func(d *DatabaseStats) float64 { return float64(d.PoolSize) }),
			dg("reserve_pool", "Maximum number of additional connections for this database", func(d *DatabaseStats) float64 { return float64(d.ReservePool) }),
			dg("max_connections", "Maximum number of allowed connections for this database", func(d *DatabaseStats) float64 { return float64(d.MaxConnections) }),
			dg("current_connections", "Current number of connections for this database", func(d *DatabaseStats) float64 { return float64(d.CurrentConnections) }),
			dg("paused", "1 if this database is currently paused, else 0", func(d *DatabaseStats) float64 { return b2f(d.Paused) }),
			dg("disabled", "1 if this database is currently disabled, else 0", func(d *DatabaseStats) float64 { return b2f(d.Disabled) }),
		},
		lists: []gauge[ListStats]{
			lg("databases", "Count of databases", func(l *ListStats) float64 { return float64(l.Databases) }),
			lg("users", "Count of users", func(l *ListStats) float64 { return float64(l.Users) }),
			lg("pools", "Count of pools", func(l *ListStats) float64 { return float64(l.Pools) }),
			lg("free_clients", "Count of free clients", func(l *ListStats) float64 { return float64(l.FreeClients) }),
			lg("used_clients", "Count of used clients", func(l *ListStats) float64 { return float64(l.UsedClients) }),
			lg("login_clients", "Count of clients in login state", func(l *ListStats) float64 { return float64(l.LoginClients) }),
			lg("free_servers", "Count of free servers", func(l *ListStats) float64 { return float64(l.FreeServers) }),
			lg("used_servers", "Count of used servers", func(l *ListStats) float64 { return float64(l.UsedServers) }),
			lg("cached_dns_names", "Count of DNS names in the cache", func(l *ListStats) float64 { return float64(l.DNSNames) }),
			lg("cached_dns_zones", "Count of DNS zones in the cache", func(l *ListStats) float64 { return float64(l.DNSZones) }),
			lg("in_flight_dns_queries", "Count of in-flight DNS queries", func(l *ListStats) float64 { return float64(l.DNSQueriesInFlight) }),
		},
		config: []gauge[ConfigStats]{
			cg("max_client_connections", "Config maximum number of client connections", func(c *ConfigStats) float64 { return float64(c.MaxClientConn) }),
			cg("max_user_connections", "Config maximum number of server connections per user", func(c *ConfigStats) float64 { return float64(c.MaxUserConnections) }),
		},
		clients: prometheus.NewDesc("pgbouncer_client_connections",
			"Number of client connections grouped by database, user, application name, and state",
			[]string{"database", "user", "application_name", "state"}, nil),
	}
	for _, f := range statsFamilies {
		c.totals = append(c.totals, prometheus.NewDesc("pgbouncer_stats_totals_"+f.suffix, f.help, []string{"database"}, nil))
		c.legacy = append(c.legacy, prometheus.NewDesc("pgbouncer_stats_"+f.suffix, f.help, []string{"database"}, nil))
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

var _ prometheus.Collector = (*poolCollector)(nil)

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.versionInfo
	for _, g := range c.pools {
		ch <- g.desc
	}
	for _, g := range c.databases {
		ch <- g.desc
	}
	for _, g := range c.lists {
		ch <- g.desc
	}
	for _, g := range c.config {
		ch <- g.desc
	}
	if c.clients != nil {
		ch <- c.clients
	}
	for _, d := range c.totals {
		ch <- d
	}
	for _, d := range c.legacy {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.versionInfo, prometheus.GaugeValue, 1, c.version)
	snap := c.snapshot()
	for i := range snap.Pools {
		p := &snap.Pools[i]
		for _, g := range c.pools {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.value(p), labelValue(p.Database), labelValue(p.User))
		}
	}
	for i := range snap.Databases {
		d := &snap.Databases[i]
		port := strconv.Itoa(d.Port)
		for _, g := range c.databases {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.value(d), d.Name, d.Host, port, d.Database, d.ForceUser, d.PoolMode)
		}
	}
	if l := snap.Lists; l != nil {
		for _, g := range c.lists {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.value(l))
		}
	}
	if cf := snap.Config; cf != nil {
		for _, g := range c.config {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.value(cf))
		}
	}
	if c.clients != nil {
		for _, g := range snap.Clients {
			ch <- prometheus.MustNewConstMetric(c.clients, prometheus.GaugeValue, float64(g.Count), labelValue(g.Database), labelValue(g.User), labelValue(g.ApplicationName), labelValue(g.State))
		}
	}
	for i := range snap.Totals {
		t := &snap.Totals[i]
		for j, f := range statsFamilies {
			v := f.value(&t.Totals)
			if c.totals != nil {
				ch <- prometheus.MustNewConstMetric(c.totals[j], prometheus.CounterValue, v, labelValue(t.Database))
			}
			if c.legacy != nil {
				ch <- prometheus.MustNewConstMetric(c.legacy[j], prometheus.CounterValue, v, labelValue(t.Database))
			}
		}
	}
}
