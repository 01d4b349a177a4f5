package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/metrics"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
	"github.com/prometheus/client_golang/prometheus"
)

// The binary wires the pooler to the metrics package: sign-in events,
// client errors, Entra ID events and the pools' data-path figures reach the
// metrics through an Observer; pool gauges and totals are read from the
// pooler at scrape time; [metrics] listen serves them.

// observer feeds pooler and authn events into the metrics.
// (pgwarden_jwks_keys is read from the live key sets at scrape time.)
type observer struct {
	m *metrics.Metrics
}

var _ pooler.Observer = (*observer)(nil)

func newObserver(m *metrics.Metrics) *observer { return &observer{m: m} }

func (o *observer) SignIn(ev pooler.SignInEvent) {
	result := metrics.ResultSuccess
	if !ev.OK {
		result = "failure"
	}
	o.m.SignIn(ev.Method, result, ev.Reason, ev.PrincipalType, ev.Latency)
	if ev.Throttle != "" {
		// The sign-in throttle held the attempt, or refused it.
		action := metrics.ThrottleDelayed
		if ev.Reason == pooler.ReasonThrottled {
			action = metrics.ThrottleRefused
		}
		o.m.SignInThrottled(ev.Throttle, action)
	}
}

func (o *observer) ClientError(code, sqlstate string) { o.m.ClientError(code, sqlstate) }

func (o *observer) Pool(database, user string) pooler.PoolObserver {
	if p := o.m.Pool(database, user); p != nil {
		return p
	}
	return nil
}

func (o *observer) BackendTokenRefresh(ev authn.RefreshEvent) {
	result := metrics.ResultSuccess
	if ev.Result != authn.RefreshOK {
		result = string(ev.Result)
	}
	o.m.BackendTokenRefresh(ev.Provider, result)
	if !ev.ExpiresOn.IsZero() {
		o.m.BackendTokenExpiry(ev.Provider, ev.ExpiresOn)
	}
}

func (o *observer) SessionsRevoked(n int) { o.m.SessionsRevoked(n) }

// JWKSFetch counts failed discovery and key set requests; a success is
// counted when the keys are installed (KeysLoaded), so that a key set that
// arrives but does not parse is not a success (authn reports no event for
// it, so it is not a failure either; its log line is the trace).
func (o *observer) JWKSFetch(ev authn.JWKSFetchEvent) {
	if ev.Err != nil {
		o.m.JWKSFetch("failure")
	}
}

func (o *observer) KeysLoaded(ev authn.KeysLoadedEvent) {
	if ev.Source == authn.SourceNetwork {
		o.m.JWKSFetch(metrics.ResultSuccess)
	}
}

func (o *observer) TokenCache(hit bool) {
	if hit {
		o.m.TokenCacheHit()
	} else {
		o.m.TokenCacheMiss()
	}
}

func (o *observer) SignatureCheck(bool) {}

// GraphLookup counts the questions Microsoft Graph answered (or failed
// to); answers from the cache are not Graph lookups.
func (o *observer) GraphLookup(ev authn.GraphLookupEvent) {
	if !ev.Cached {
		o.m.GraphLookup(ev.Result)
	}
}

// pgbouncerCollector exports the pooler's console figures with
// pgbouncer_exporter's names, as [metrics] stats_names and
// client_connections ask.
func pgbouncerCollector(srv *pooler.Server, cfg config.Metrics) prometheus.Collector {
	var opts []metrics.PoolOption
	switch cfg.StatsNames {
	case config.StatsNamesTotals:
		opts = append(opts, metrics.WithoutLegacyStats())
	case config.StatsNamesLegacy:
		opts = append(opts, metrics.WithoutStatsTotals())
	}
	if cfg.NoClientConnections {
		opts = append(opts, metrics.WithoutClientConnections())
	}
	return metrics.NewPgBouncerCollector(func() metrics.Snapshot {
		return pgbouncerSnapshot(srv)
	}, "PgBouncer 1.25.2 (pgwarden "+pooler.Version+")", opts...)
}

// pgbouncerSnapshot reads the console's figures from srv now.
func pgbouncerSnapshot(srv *pooler.Server) metrics.Snapshot {
	var snap metrics.Snapshot
	for _, p := range srv.ShowPools() {
		snap.Pools = append(snap.Pools, metrics.PoolStats{
			Database: p.Database, User: p.User,
			ClActive: p.ClActive, ClWaiting: p.ClWaiting, ClActiveCancelReq: p.ClActiveCancelReq, ClWaitingCancelReq: p.ClWaitingCancelReq,
			SvActive: p.SvActive, SvActiveCancel: p.SvActiveCancel, SvBeingCanceled: p.SvBeingCanceled,
			SvIdle: p.SvIdle, SvUsed: p.SvUsed, SvTested: p.SvTested, SvLogin: p.SvLogin, MaxWait: p.MaxWait,
		})
	}
	for _, d := range srv.DatabaseSnapshots() {
		snap.Databases = append(snap.Databases, metrics.DatabaseStats{
			Name: d.Name, Host: d.Host, Port: d.Port, Database: d.Database, ForceUser: d.ForceUser, PoolMode: d.PoolMode,
			PoolSize: d.PoolSize, ReservePool: d.ReservePoolSize, MaxConnections: d.MaxConnections,
			CurrentConnections: d.CurrentConnections, Paused: d.Paused, Disabled: d.Disabled,
		})
	}
	for _, t := range srv.StatsTotals() {
		snap.Totals = append(snap.Totals, metrics.DatabaseTotals{Database: t.Database, Totals: metrics.Totals{
			ServerAssignmentCount: t.ServerAssignmentCount, XactCount: t.XactCount, QueryCount: t.QueryCount,
			BytesReceived: t.BytesReceived, BytesSent: t.BytesSent,
			XactTimeMicros: t.XactTimeMicros, QueryTimeMicros: t.QueryTimeMicros, WaitTimeMicros: t.WaitTimeMicros,
			ClientParseCount: t.ClientParseCount, ServerParseCount: t.ServerParseCount, BindCount: t.BindCount,
		}})
	}
	l := srv.Lists()
	snap.Lists = &metrics.ListStats{Databases: l.Databases, Users: l.Users, Pools: l.Pools,
		FreeClients: l.FreeClients, UsedClients: l.UsedClients, LoginClients: l.LoginClients,
		FreeServers: l.FreeServers, UsedServers: l.UsedServers,
		DNSNames: l.DNSNames, DNSZones: l.DNSZones, DNSQueriesInFlight: l.DNSQueries}
	maxClient, maxUser := srv.Limits()
	snap.Config = &metrics.ConfigStats{MaxClientConn: maxClient, MaxUserConnections: maxUser}
	for _, c := range srv.ClientCounts() {
		snap.Clients = append(snap.Clients, metrics.ClientGroup{Database: c.Database, User: c.User,
			ApplicationName: c.ApplicationName, State: c.State, Count: c.Count})
	}
	return snap
}

// startMetricsListener serves /metrics, /healthz and /readyz (and pprof
// when enabled, on loopback only) until the returned stop is called.
func startMetricsListener(cfg *config.Config, reg *prometheus.Registry, srv *pooler.Server, log *slog.Logger) (func(), error) {
	if cfg.Metrics.Listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", metrics.Handler(reg, srv.Ready))
	if cfg.Metrics.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}
