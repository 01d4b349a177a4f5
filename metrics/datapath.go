package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Data-path metrics: per pool (labels database and user), observed where
// the pooler accounts its SHOW STATS totals.

// waitBuckets spans an idle server taken at once (tens of µs) up to
// query_wait_timeout's default (120 s).
var waitBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// durationBuckets spans a trivial query over loopback (~100 µs) to long
// reports and transactions.
var durationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

func (m *Metrics) newDataPath(f promauto.Factory) {
	labels := []string{"database", "user"}
	m.clientWait = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pgwarden_client_wait_seconds",
		Help:    "Time clients waited for a server connection before one was assigned, per pool.",
		Buckets: waitBuckets,
	}, labels)
	m.queryDuration = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pgwarden_query_duration_seconds",
		Help:    "Query durations, from the client's request to the server's ReadyForQuery, per pool.",
		Buckets: durationBuckets,
	}, labels)
	m.xactDuration = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pgwarden_transaction_duration_seconds",
		Help:    "Transaction durations, idle in transaction included, per pool.",
		Buckets: durationBuckets,
	}, labels)
	m.serverLoginFailures = f.NewCounterVec(prometheus.CounterOpts{
		Name: "pgwarden_server_login_failures_total",
		Help: "Server connections that could not be opened, by pool and reason (connect, timeout, tls, auth, server_error, login, backend_token, connect_query).",
	}, []string{"database", "user", "reason"})
}

// Pool is one pool's data-path metrics, with its labelled children
// resolved once: its methods neither allocate nor look labels up, so they
// may be called for every query. A nil *Pool records nothing.
type Pool struct {
	wait, query, xact prometheus.Observer
	failures          *prometheus.CounterVec // curried with database and user
}

// Pool returns the data-path metrics of the pool (database, user). Call it
// once per pool and keep the result. It returns nil when m is nil.
func (m *Metrics) Pool(database, user string) *Pool {
	if m == nil {
		return nil
	}
	database, user = labelValue(database), labelValue(user)
	return &Pool{
		wait:     m.clientWait.WithLabelValues(database, user),
		query:    m.queryDuration.WithLabelValues(database, user),
		xact:     m.xactDuration.WithLabelValues(database, user),
		failures: m.serverLoginFailures.MustCurryWith(prometheus.Labels{"database": database, "user": user}),
	}
}

// ClientWait records that a client waited d before a server was assigned.
func (p *Pool) ClientWait(d time.Duration) {
	if p != nil {
		p.wait.Observe(d.Seconds())
	}
}

// Query records a query that took d.
func (p *Pool) Query(d time.Duration) {
	if p != nil {
		p.query.Observe(d.Seconds())
	}
}

// Transaction records a transaction that took d.
func (p *Pool) Transaction(d time.Duration) {
	if p != nil {
		p.xact.Observe(d.Seconds())
	}
}

// ServerLoginFailed records a server connection that could not be opened
// for reason (a short bounded word).
func (p *Pool) ServerLoginFailed(reason string) {
	if p != nil {
		p.failures.WithLabelValues(reason).Inc()
	}
}
