// Package metrics holds pgwarden's Prometheus instrumentation: the sign-in
// audit metrics and the data-path metrics of each pool ([New],
// [Metrics.Pool]), a scrape-time collector that serves PgBouncer's console
// figures under pgbouncer_exporter's metric names ([NewPgBouncerCollector]),
// and the HTTP handler for /metrics, /healthz and /readyz ([Handler]).
//
// The package is a leaf: it imports nothing from pgwarden. Callers pass plain
// values (strings, durations, [Snapshot]) so that the pooler can reach it
// through small adapters without importing Prometheus. Nothing here registers
// with the global Prometheus registry.
//
// Label values must come from bounded sets (methods, results, reasons,
// principal types, providers, error codes, database and user names). The
// one exception is pgbouncer_client_connections' application_name, kept for
// pgbouncer_exporter compatibility: its series are bounded by the clients
// connected at scrape time, and [WithoutClientConnections] turns it off.
// Never pass an oid, UPN, client address or query text as a label value.
package metrics
