package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// idleResult is the resident memory a pooler needs per idle client.
type idleResult struct {
	Target         string   `json:"target"`
	TLS            bool     `json:"tls"`
	Auth           string   `json:"auth"`
	Wanted         int      `json:"wanted"`
	Opened         int      `json:"opened"`
	Failed         int      `json:"failed"`
	Errors         []string `json:"errors,omitempty"`
	SignInSeconds  float64  `json:"sign_in_s"`
	RSSBeforeKiB   int64    `json:"rss_before_kib"`
	RSSAfterKiB    int64    `json:"rss_after_kib"`
	PerClientBytes float64  `json:"per_client_bytes"`
	PoolerCPUs     float64  `json:"pooler_cpu_s"` // spent signing them in
}

// idleClients are connections that signed in and then send nothing.
type idleClients struct {
	mu    sync.Mutex
	conns []*pgconn.PgConn
}

func (ic *idleClients) closeAll() {
	ic.mu.Lock()
	conns := ic.conns
	ic.conns = nil
	ic.mu.Unlock()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = c.Close(ctx)
		}()
	}
	wg.Wait()
}

// openIdle signs n clients in to port (16 at a time, so that the listen
// backlog is not the limit) and keeps them open.
func openIdle(ctx context.Context, port, n int, tls bool) (*idleClients, int, []string) {
	ic := &idleClients{}
	var failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	next := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := pgconn.Connect(cctx, connString(port, tls))
				cancel()
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if len(errs) < 3 {
						errs = append(errs, err.Error())
					}
					errMu.Unlock()
					continue
				}
				ic.mu.Lock()
				ic.conns = append(ic.conns, c)
				ic.mu.Unlock()
			}
		}()
	}
feed:
	for range n {
		select {
		case next <- struct{}{}:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return ic, int(failed.Load()), errs
}

// measureIdle starts a fresh pooler, signs one client in and out (so that
// its pool holds a server connection and any lazy set-up has happened),
// reads its resident memory, opens n idle clients, waits until the memory
// settles, reads it again, and divides the difference by n.
func (h *harness) measureIdle(ctx context.Context, kind *poolerKind, n int, opts iniOptions) (*idleResult, error) {
	label := "idle"
	if opts.tls {
		label += "-tls"
	}
	p, err := h.startPooler(ctx, kind, label, opts, nil)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	res := &idleResult{Target: kind.name, TLS: opts.tls, Auth: opts.authType, Wanted: n}
	before, err := settledRSS(ctx, p)
	if err != nil {
		return nil, err
	}
	cpu0, _ := procCPU(p.proc.pid())
	start := time.Now()
	ic, failed, errs := openIdle(ctx, p.port, n, opts.tls)
	defer ic.closeAll()
	res.SignInSeconds = time.Since(start).Seconds()
	cpu1, _ := procCPU(p.proc.pid())
	res.PoolerCPUs = float64(cpu1-cpu0) / clockTicks
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.Opened = len(ic.conns)
	res.Failed = failed
	res.Errors = errs
	after, err := settledRSS(ctx, p)
	if err != nil {
		return nil, err
	}
	// The clients must all still be there: a pooler that dropped them
	// would look cheap.
	if p.proc.exited() {
		return nil, fmt.Errorf("%s exited while holding idle clients:\n%s", kind.name, p.proc.logTail())
	}
	res.RSSBeforeKiB, res.RSSAfterKiB = before, after
	if res.Opened > 0 {
		res.PerClientBytes = float64(after-before) * 1024 / float64(res.Opened)
	}
	return res, nil
}

// settledRSS reads the pooler's VmRSS every 250 ms until two readings in a
// row differ by less than 0.5% (at most 10 s), and returns the last one.
func settledRSS(ctx context.Context, p *poolerInstance) (int64, error) {
	prev, err := p.rss()
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		cur, err := p.rss()
		if err != nil {
			return 0, err
		}
		d := cur - prev
		if d < 0 {
			d = -d
		}
		if float64(d) < 0.005*float64(cur) {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}
