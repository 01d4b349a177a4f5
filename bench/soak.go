package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The reliability run's load parts (RELIABILITY.md): a soak of many
// concurrent transaction-mode clients against one pool, watching pgwarden's
// memory, goroutines and descriptors over time, and a sign-in storm at a
// fixed rate of new TLS connections that sign in with Entra tokens.

// soakResult is what the soak measured.
type soakResult struct {
	Clients       int      `json:"clients"`
	Opened        int      `json:"opened"`
	SignInFailed  int      `json:"sign_in_failed"`
	SignInSeconds float64  `json:"sign_in_s"`
	PeriodMs      int64    `json:"period_ms"`
	DurationS     float64  `json:"duration_s"`
	Queries       int64    `json:"queries"`
	Errors        int64    `json:"errors"`
	ErrorSamples  []string `json:"error_samples,omitempty"`
	QPS           float64  `json:"qps"`
	P50us         float64  `json:"p50_us"`
	P99us         float64  `json:"p99_us"`
	MaxUs         float64  `json:"max_us"`
	// IdleBytesPerClient is pgwarden's resident memory per signed-in,
	// idle client, before the load starts.
	IdleBytesPerClient float64      `json:"idle_bytes_per_client"`
	CPUPerQueryUs      float64      `json:"cpu_per_query_us"`
	Samples            []soakSample `json:"samples"`
	RSS                trend        `json:"rss_kib"`
	Goroutines         trend        `json:"goroutines"`
	FDs                trend        `json:"open_fds"`
	BaselineGoroutines float64      `json:"baseline_goroutines"`
	BaselineFDs        float64      `json:"baseline_fds"`
	AfterGoroutines    float64      `json:"after_goroutines"`
	AfterFDs           float64      `json:"after_fds"`
	ServerConns        int          `json:"server_conns_max"`
}

// soakSample is one reading of pgwarden during the soak.
type soakSample struct {
	AtS        float64 `json:"at_s"`
	RSSKiB     int64   `json:"rss_kib"`
	Goroutines float64 `json:"goroutines"`
	FDs        float64 `json:"open_fds"`
	Queries    int64   `json:"queries"`
}

// trend is a least-squares line through the steady part of a series (the
// load's last 80%): its slope per minute, and the growth the line implies
// over that window relative to the series' mean there.
type trend struct {
	Mean           float64 `json:"mean"`
	SlopePerMinute float64 `json:"slope_per_minute"`
	GrowthPercent  float64 `json:"growth_percent"`
}

func fitTrend(xs, ys []float64) trend {
	n := float64(len(xs))
	if len(xs) < 2 {
		return trend{}
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return trend{Mean: sy / n}
	}
	slope := (n*sxy - sx*sy) / den // per second
	mean := sy / n
	t := trend{Mean: mean, SlopePerMinute: slope * 60}
	if mean != 0 {
		t.GrowthPercent = 100 * slope * (xs[len(xs)-1] - xs[0]) / mean
	}
	return t
}

// scrapeRuntime reads go_goroutines and process_open_fds from pgwarden's
// /metrics.
func scrapeRuntime(ctx context.Context, addr string) (goroutines, fds float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			goroutines, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "process_open_fds "); ok {
			fds, _ = strconv.ParseFloat(v, 64)
		}
	}
	return goroutines, fds, sc.Err()
}

// freeAddr is a free loopback address for pgwarden's metrics listener.
func freeAddr() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// settle polls f every 200 ms until two readings in a row are equal (at
// most d) and returns the last.
func settle(ctx context.Context, d time.Duration, f func() (float64, error)) (float64, error) {
	prev, err := f()
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		v, err := f()
		if err != nil {
			return 0, err
		}
		if v == prev {
			return v, nil
		}
		prev = v
	}
	return prev, nil
}

// runSoak signs n clients in to a fresh pgwarden (transaction mode, pool
// size 20), measures the memory they hold idle, then has every client run
// one select-only transaction per period (start times spread over the
// period) for d, sampling pgwarden every 5 s. Afterwards it closes the
// clients and checks that goroutines and descriptors return to their
// baseline.
func (h *harness) runSoak(ctx context.Context, n int, period, d time.Duration, cpuProfile string) (*soakResult, error) {
	maddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	opts := iniOptions{authType: "scram-sha-256", extra: "\n[metrics]\nlisten = " + maddr + "\n"}
	var env []string
	if cpuProfile != "" {
		abs, err := filepath.Abs(cpuProfile)
		if err != nil {
			return nil, err
		}
		env = append(env, profileEnv+"="+abs)
	}
	p, err := h.startPooler(ctx, h.kind("pgwarden"), "soak", opts, env)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	rt := func() (float64, float64, error) { return scrapeRuntime(ctx, maddr) }
	res := &soakResult{Clients: n, PeriodMs: period.Milliseconds()}
	res.BaselineGoroutines, err = settle(ctx, 10*time.Second, func() (float64, error) { g, _, err := rt(); return g, err })
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	_, res.BaselineFDs, _ = rt()
	before, err := settledRSS(ctx, p)
	if err != nil {
		return nil, err
	}
	h.logf("soak: signing in %d clients", n)
	start := time.Now()
	ic, failed, errs := openIdle(ctx, p.port, n, false)
	defer ic.closeAll()
	res.SignInSeconds = time.Since(start).Seconds()
	res.Opened, res.SignInFailed = len(ic.conns), failed
	if failed > 0 {
		res.ErrorSamples = append(res.ErrorSamples, errs...)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	idle, err := settledRSS(ctx, p)
	if err != nil {
		return nil, err
	}
	if res.Opened > 0 {
		res.IdleBytesPerClient = float64(idle-before) * 1024 / float64(res.Opened)
	}
	h.logf("soak: %d clients signed in (%.1f s, %d failed), %.2f KiB each idle; load for %v, one transaction per client every %v",
		res.Opened, res.SignInSeconds, failed, res.IdleBytesPerClient/1024, d, period)

	var queries, errCount atomic.Int64
	var errMu sync.Mutex
	lat := make([][]uint32, len(ic.conns))
	lctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cpu0, _ := procCPU(p.proc.pid())
	loadStart := time.Now()
	var wg sync.WaitGroup
	for i, c := range ic.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the clients over the period; each then keeps its
			// own schedule.
			next := loadStart.Add(time.Duration(int64(period) * int64(i) / int64(len(ic.conns))))
			for {
				select {
				case <-lctx.Done():
					return
				case <-time.After(time.Until(next)):
				}
				next = next.Add(period)
				aid := 1 + (i*7919+int(queries.Load()))%(scale*100000)
				t0 := time.Now()
				qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.Exec(qctx, "SELECT abalance FROM pgbench_accounts WHERE aid = "+strconv.Itoa(aid)).ReadAll()
				qcancel()
				if err != nil {
					if lctx.Err() != nil && ctx.Err() == nil && time.Since(loadStart) >= d {
						return // the run ended during this query
					}
					errCount.Add(1)
					errMu.Lock()
					if len(res.ErrorSamples) < 5 {
						res.ErrorSamples = append(res.ErrorSamples, err.Error())
					}
					errMu.Unlock()
					return // a broken client stops
				}
				lat[i] = append(lat[i], uint32(min(time.Since(t0).Microseconds(), math.MaxUint32)))
				queries.Add(1)
			}
		}()
	}
	// Sample every 5 s while the load runs.
	tick := time.NewTicker(5 * time.Second)
	sample := func() {
		rss, _ := procRSS(p.proc.pid())
		g, fds, _ := rt()
		res.Samples = append(res.Samples, soakSample{AtS: time.Since(loadStart).Seconds(), RSSKiB: rss, Goroutines: g, FDs: fds, Queries: queries.Load()})
	}
	sample()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-tick.C:
			sample()
			last := res.Samples[len(res.Samples)-1]
			h.logf("soak: %5.0f s  %8d transactions  %d errors  rss %d KiB  goroutines %.0f  fds %.0f",
				last.AtS, last.Queries, errCount.Load(), last.RSSKiB, last.Goroutines, last.FDs)
		case <-done:
			break loop
		}
	}
	tick.Stop()
	sample()
	cpu1, _ := procCPU(p.proc.pid())
	res.DurationS = time.Since(loadStart).Seconds()
	res.Queries, res.Errors = queries.Load(), errCount.Load()
	if res.DurationS > 0 {
		res.QPS = float64(res.Queries) / res.DurationS
	}
	if res.Queries > 0 {
		res.CPUPerQueryUs = float64(cpu1-cpu0) / clockTicks * 1e6 / float64(res.Queries)
	}
	var all []uint32
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		pct := func(q float64) float64 { return float64(all[min(len(all)-1, int(q*float64(len(all))))]) }
		res.P50us, res.P99us, res.MaxUs = pct(0.50), pct(0.99), float64(all[len(all)-1])
	}
	// Trends over the steady part: the last 80% of the load.
	var xs, rss, gor, fds []float64
	for _, s := range res.Samples {
		if s.AtS >= 0.2*res.DurationS {
			xs = append(xs, s.AtS)
			rss = append(rss, float64(s.RSSKiB))
			gor = append(gor, s.Goroutines)
			fds = append(fds, s.FDs)
		}
	}
	res.RSS, res.Goroutines, res.FDs = fitTrend(xs, rss), fitTrend(xs, gor), fitTrend(xs, fds)
	res.ServerConns = poolServerCount(ctx, h)
	// Close the clients: goroutines and descriptors go back to where they
	// were.
	ic.closeAll()
	res.AfterGoroutines, _ = settle(ctx, 30*time.Second, func() (float64, error) { g, _, err := rt(); return g, err })
	_, res.AfterFDs, _ = rt()
	return res, nil
}

// poolServerCount is the number of the bench role's server connections
// PostgreSQL has (the pool may not exceed its size).
func poolServerCount(ctx context.Context, h *harness) int {
	c, err := h.pg.Connect(ctx, h.pg.SuperUser, h.pg.SuperPassword, "postgres")
	if err != nil {
		return -1
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", benchUser).Scan(&n); err != nil {
		return -1
	}
	return n
}

// stormResult is what the sign-in storm measured.
type stormResult struct {
	Rate           int      `json:"rate_per_s"`
	DurationS      float64  `json:"duration_s"`
	Attempts       int64    `json:"attempts"`
	OK             int64    `json:"ok"`
	Errors         int64    `json:"errors"`
	ErrorSamples   []string `json:"error_samples,omitempty"`
	Skipped        int64    `json:"skipped"` // not started: too many in flight
	AchievedRate   float64  `json:"achieved_per_s"`
	P50ms          float64  `json:"p50_ms"`
	P99ms          float64  `json:"p99_ms"`
	CPUPerSignInUs float64  `json:"cpu_per_sign_in_us"`
	PoolerCores    float64  `json:"pooler_cores"`
	Cert           string   `json:"cert"`
}

// runSignInStorm starts pgwarden with client TLS required (an ECDSA P-256
// certificate) and Entra sign-ins, then opens new connections at rate per
// second for d: each one a TLS handshake, a sign-in with the token (after
// the first, from pgwarden's validated-token cache), and a Terminate.
func (h *harness) runSignInStorm(ctx context.Context, rate int, d time.Duration) (*stormResult, error) {
	if h.entra == nil {
		e, err := startEntra()
		if err != nil {
			return nil, fmt.Errorf("dev IdP: %w", err)
		}
		h.entra = e
		defer func() { e.stop(); h.entra = nil }()
	}
	certs, err := h.ws.makeECDSACert()
	if err != nil {
		return nil, err
	}
	saved := h.tls
	h.tls = certs
	p, err := h.startPooler(ctx, h.kind("pgwarden"), "signin-storm", iniOptions{authType: "scram-sha-256", tls: true, entra: h.entra}, nil)
	h.tls = saved
	if err != nil {
		return nil, err
	}
	defer p.stop()
	res := &stormResult{Rate: rate, Cert: "ECDSA P-256 (self-signed)"}
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=require connect_timeout=10",
		p.port, benchUser, h.entra.token, benchDB)
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		return nil, err
	}
	const maxInFlight = 512
	sem := make(chan struct{}, maxInFlight)
	var lat []float64
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0, _ := procCPU(p.proc.pid())
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	due := 0.0
	for time.Since(start) < d && ctx.Err() == nil {
		<-tick.C
		due += float64(rate) / 100
		for ; due >= 1; due-- {
			res.Attempts++
			select {
			case sem <- struct{}{}:
			default:
				res.Skipped++
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				t0 := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				c, err := pgconn.ConnectConfig(cctx, cfg)
				if err == nil {
					err = c.Close(cctx)
				}
				cancel()
				ms := float64(time.Since(t0).Microseconds()) / 1000
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					res.Errors++
					if len(res.ErrorSamples) < 5 {
						res.ErrorSamples = append(res.ErrorSamples, err.Error())
					}
					return
				}
				res.OK++
				lat = append(lat, ms)
			}()
		}
	}
	wg.Wait()
	res.DurationS = time.Since(start).Seconds()
	cpu1, _ := procCPU(p.proc.pid())
	cpu := float64(cpu1-cpu0) / clockTicks
	res.AchievedRate = float64(res.OK) / res.DurationS
	if res.OK > 0 {
		res.CPUPerSignInUs = cpu * 1e6 / float64(res.OK)
	}
	res.PoolerCores = cpu / res.DurationS
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50ms = lat[len(lat)/2]
		res.P99ms = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res, nil
}

// makeECDSACert writes a self-signed ECDSA P-256 certificate for the
// sign-in storm: at a thousand handshakes a second an RSA-2048 signature
// per handshake would take more CPU than two cores have, and ECDSA is what
// a deployment that cares about handshake rates uses.
func (ws *workspace) makeECDSACert() (tlsFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFiles{}, err
	}
	return ws.selfSigned("tls-ecdsa", key, x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign)
}
