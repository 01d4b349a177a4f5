package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PoolStats is one pool's figures at scrape time, as PgBouncer shows them in
// SHOW POOLS (the gauges) and SHOW STATS_TOTALS (the totals, which are
// counters since process start). One PoolStats describes one (Database, User)
// pair; a snapshot must not hold the same pair twice.
type PoolStats struct {
	Database string // pool's database name (label database)
	User     string // pool's user name (label user)
	PoolMode string // session, transaction or statement; not exported, as pgbouncer_exporter does not

	ClActive  int           // cl_active: clients linked to a server or idle with no queries waiting
	ClWaiting int           // cl_waiting: clients that sent queries and wait for a server
	SvActive  int           // sv_active: servers linked to a client
	SvIdle    int           // sv_idle: servers unused and immediately usable
	SvUsed    int           // sv_used: servers idle longer than server_check_delay, to be checked
	SvTested  int           // sv_tested: servers running server_reset_query or server_check_query
	SvLogin   int           // sv_login: servers in the process of logging in
	MaxWait   time.Duration // maxwait: how long the oldest waiting client has waited

	XactCount             uint64 // total_xact_count: transactions pooled
	QueryCount            uint64 // total_query_count: queries pooled
	BytesReceived         uint64 // total_received: bytes received from clients
	BytesSent             uint64 // total_sent: bytes sent to clients
	XactTimeMicros        uint64 // total_xact_time: µs spent in transactions, idle in transaction included
	QueryTimeMicros       uint64 // total_query_time: µs spent actively running queries
	WaitTimeMicros        uint64 // total_wait_time: µs clients spent waiting for a server
	ServerAssignmentCount uint64 // total_server_assignment_count: times a server was assigned to a client
	ClientParseCount      uint64 // total_client_parse_count: Parse messages from clients
	ServerParseCount      uint64 // total_server_parse_count: Parse messages sent to servers
	BindCount             uint64 // total_bind_count: Bind messages from clients
}

// PoolOption configures [NewPoolCollector].
type PoolOption func(*poolCollector)

// WithoutLegacyStats stops the collector from emitting the pre-v0.11
// pgbouncer_exporter names (pgbouncer_stats_*); only pgbouncer_stats_totals_*
// remain.
func WithoutLegacyStats() PoolOption { return func(c *poolCollector) { c.legacy = nil } }

// WithoutStatsTotals stops the collector from emitting the v0.11+
// pgbouncer_exporter names (pgbouncer_stats_totals_*); only the legacy
// pgbouncer_stats_* names remain.
func WithoutStatsTotals() PoolOption { return func(c *poolCollector) { c.totals = nil } }

// statsFamily is one stats counter: its name after the prefix, help, and how
// to read it from a database's summed PoolStats.
type statsFamily struct {
	suffix string
	help   string
	value  func(*PoolStats) float64
}

const microsPerSecond = 1e6

var statsFamilies = []statsFamily{
	{"queries_pooled_total", "Total number of SQL queries pooled", func(p *PoolStats) float64 { return float64(p.QueryCount) }},
	{"queries_duration_seconds_total", "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries", func(p *PoolStats) float64 { return float64(p.QueryTimeMicros) / microsPerSecond }},
	{"received_bytes_total", "Total volume in bytes of network traffic received by pgbouncer", func(p *PoolStats) float64 { return float64(p.BytesReceived) }},
	{"sent_bytes_total", "Total volume in bytes of network traffic sent by pgbouncer", func(p *PoolStats) float64 { return float64(p.BytesSent) }},
	{"client_wait_seconds_total", "Time spent by clients waiting for a server in seconds", func(p *PoolStats) float64 { return float64(p.WaitTimeMicros) / microsPerSecond }},
	{"sql_transactions_pooled_total", "Total number of SQL transactions pooled", func(p *PoolStats) float64 { return float64(p.XactCount) }},
	{"server_in_transaction_seconds_total", "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries", func(p *PoolStats) float64 { return float64(p.XactTimeMicros) / microsPerSecond }},
	{"client_parses_total", "Total number of prepared statements created by clients", func(p *PoolStats) float64 { return float64(p.ClientParseCount) }},
	{"server_parses_total", "Total number of prepared statements created on a server", func(p *PoolStats) float64 { return float64(p.ServerParseCount) }},
	{"binds_total", "Total number of prepared statements readied for execution by clients and forwarded to PostgreSQL", func(p *PoolStats) float64 { return float64(p.BindCount) }},
	{"server_assignments_total", "Total number of times a server was assigned to a client", func(p *PoolStats) float64 { return float64(p.ServerAssignmentCount) }},
}

// poolGauge is one SHOW POOLS gauge.
type poolGauge struct {
	desc  *prometheus.Desc
	value func(*PoolStats) float64
}

type poolCollector struct {
	snapshot func() []PoolStats
	version  string

	up          *prometheus.Desc
	versionInfo *prometheus.Desc
	pools       []poolGauge
	totals      []*prometheus.Desc // pgbouncer_stats_totals_*, parallel to statsFamilies; nil when off
	legacy      []*prometheus.Desc // pgbouncer_stats_*, parallel to statsFamilies; nil when off
}

// NewPoolCollector returns a Collector that calls snapshot on every scrape
// and emits PgBouncer's figures under the metric names, labels and units of
// prometheus-community/pgbouncer_exporter v0.12: pgbouncer_up (always 1, the
// figures are read in process), pgbouncer_version_info{version},
// pgbouncer_pools_*{database,user} from SHOW POOLS, and the SHOW STATS_TOTALS
// counters per database (PoolStats summed over users) under both the current
// pgbouncer_stats_totals_* and the pre-v0.11 pgbouncer_stats_* names, times
// in seconds. snapshot must be safe to call from the scraping goroutine and
// should not block for long.
func NewPoolCollector(snapshot func() []PoolStats, version string, opts ...PoolOption) prometheus.Collector {
	poolLabels := []string{"database", "user"}
	dbLabels := []string{"database"}
	g := func(name, help string, v func(*PoolStats) float64) poolGauge {
		return poolGauge{prometheus.NewDesc("pgbouncer_pools_"+name, help, poolLabels, nil), v}
	}
	c := &poolCollector{
		snapshot:    snapshot,
		version:     version,
		up:          prometheus.NewDesc("pgbouncer_up", "The pgbouncer scrape succeeded", nil, nil),
		versionInfo: prometheus.NewDesc("pgbouncer_version_info", "The pgbouncer version info", []string{"version"}, nil),
		pools: []poolGauge{
			g("client_active_connections", "Client connections linked to server connection and able to process queries, shown as connection", func(p *PoolStats) float64 { return float64(p.ClActive) }),
			g("client_waiting_connections", "Client connections waiting on a server connection, shown as connection", func(p *PoolStats) float64 { return float64(p.ClWaiting) }),
			g("server_active_connections", "Server connections linked to a client connection, shown as connection", func(p *PoolStats) float64 { return float64(p.SvActive) }),
			g("server_idle_connections", "Server connections idle and ready for a client query, shown as connection", func(p *PoolStats) float64 { return float64(p.SvIdle) }),
			g("server_used_connections", "Server connections idle more than server_check_delay, needing server_check_query, shown as connection", func(p *PoolStats) float64 { return float64(p.SvUsed) }),
			g("server_testing_connections", "Server connections currently running either server_reset_query or server_check_query, shown as connection", func(p *PoolStats) float64 { return float64(p.SvTested) }),
			g("server_login_connections", "Server connections currently in the process of logging in, shown as connection", func(p *PoolStats) float64 { return float64(p.SvLogin) }),
			g("client_maxwait_seconds", "Age of oldest unserved client connection, shown as second", func(p *PoolStats) float64 { return p.MaxWait.Seconds() }),
		},
	}
	for _, f := range statsFamilies {
		c.totals = append(c.totals, prometheus.NewDesc("pgbouncer_stats_totals_"+f.suffix, f.help, dbLabels, nil))
		c.legacy = append(c.legacy, prometheus.NewDesc("pgbouncer_stats_"+f.suffix, f.help, dbLabels, nil))
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
	for _, p := range c.pools {
		ch <- p.desc
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

	// SHOW STATS_TOTALS is per database: sum the pools of each database,
	// keeping the snapshot's order.
	var dbs []*PoolStats
	byDB := make(map[string]*PoolStats)
	for i := range snap {
		p := &snap[i]
		for _, g := range c.pools {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.value(p), p.Database, p.User)
		}
		sum, ok := byDB[p.Database]
		if !ok {
			sum = &PoolStats{Database: p.Database}
			byDB[p.Database] = sum
			dbs = append(dbs, sum)
		}
		addTotals(sum, p)
	}
	for _, db := range dbs {
		for i, f := range statsFamilies {
			v := f.value(db)
			if c.totals != nil {
				ch <- prometheus.MustNewConstMetric(c.totals[i], prometheus.CounterValue, v, db.Database)
			}
			if c.legacy != nil {
				ch <- prometheus.MustNewConstMetric(c.legacy[i], prometheus.CounterValue, v, db.Database)
			}
		}
	}
}

// addTotals adds p's STATS_TOTALS counters to sum.
func addTotals(sum, p *PoolStats) {
	sum.XactCount += p.XactCount
	sum.QueryCount += p.QueryCount
	sum.BytesReceived += p.BytesReceived
	sum.BytesSent += p.BytesSent
	sum.XactTimeMicros += p.XactTimeMicros
	sum.QueryTimeMicros += p.QueryTimeMicros
	sum.WaitTimeMicros += p.WaitTimeMicros
	sum.ServerAssignmentCount += p.ServerAssignmentCount
	sum.ClientParseCount += p.ClientParseCount
	sum.ServerParseCount += p.ServerParseCount
	sum.BindCount += p.BindCount
}
