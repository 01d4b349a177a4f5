package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/pgwarden/pgwarden/metrics"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
	"github.com/prometheus/client_golang/prometheus"
)

// The binary wires the pooler to the metrics package: sign-in events and
// client errors are counted through an Observer, pool gauges and totals are
// read from the pooler at scrape time, and [metrics] listen serves them.

// observer feeds pooler events into the metrics.
type observer struct{ m *metrics.Metrics }

func (o observer) SignIn(ev pooler.SignInEvent) {
	result := metrics.ResultSuccess
	if !ev.OK {
		result = "failure"
	}
	o.m.SignIn(ev.Method, result, ev.Reason, ev.PrincipalType, ev.Latency)
}

func (o observer) ClientError(code string) { o.m.ClientError(code) }

// poolCollector exports the pooler's pools with pgbouncer_exporter's names.
func poolCollector(srv *pooler.Server) prometheus.Collector {
	return metrics.NewPoolCollector(func() []metrics.PoolStats {
		snaps := srv.PoolSnapshots()
		out := make([]metrics.PoolStats, len(snaps))
		for i, p := range snaps {
			out[i] = metrics.PoolStats{
				Database: p.Database, User: p.User, PoolMode: p.PoolMode,
				ClActive: p.ClActive, ClWaiting: p.ClWaiting, SvActive: p.SvActive, SvIdle: p.SvIdle, SvLogin: p.SvLogin,
				MaxWait: p.MaxWait, XactCount: p.XactCount, QueryCount: p.QueryCount,
				BytesReceived: p.BytesReceived, BytesSent: p.BytesSent,
				XactTimeMicros: p.XactTimeMicros, QueryTimeMicros: p.QueryTimeMicros, WaitTimeMicros: p.WaitTimeMicros,
				ServerAssignmentCount: p.ServerAssignmentCount,
				ClientParseCount:      p.ClientParseCount, ServerParseCount: p.ServerParseCount, BindCount: p.BindCount,
			}
		}
		return out
	}, "PgBouncer 1.25.2 (pgwarden "+pooler.Version+")")
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
