// Package metrics holds pgwarden's Prometheus instrumentation: the sign-in
// audit metrics ([New]), a scrape-time collector that serves PgBouncer's pool
// and stats figures under pgbouncer_exporter's metric names
// ([NewPoolCollector]), and the HTTP handler for /metrics, /healthz and
// /readyz ([Handler]).
//
// The package is a leaf: it imports nothing from pgwarden. Callers pass plain
// values (strings, durations, [PoolStats]) so that the pooler can reach it
// through small adapters without importing Prometheus. Nothing here registers
// with the global Prometheus registry.
//
// Label values must come from bounded sets (methods, results, reasons,
// principal types, providers, error codes, database and user names). Never
// pass an oid, UPN, client address or query text as a label value.
package metrics
