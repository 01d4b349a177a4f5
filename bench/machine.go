package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machineInfo describes where the figures were measured.
type machineInfo struct {
	Cores        int               `json:"cores"`
	CPUModel     string            `json:"cpu_model"`
	MemTotal     string            `json:"mem_total"`
	Kernel       string            `json:"kernel"`
	GoVersion    string            `json:"go_version"`
	Postgres     string            `json:"postgresql"`
	Pgbench      string            `json:"pgbench"`
	Poolers      map[string]string `json:"poolers"`
	ClockTicks   float64           `json:"clk_tck"`
	LoadAvgStart string            `json:"loadavg_start"`
	LoadAvgEnd   string            `json:"loadavg_end"`
	Commit       string            `json:"pgwarden_commit"`
}

func (h *harness) machine(ctx context.Context) machineInfo {
	m := machineInfo{
		Cores:        runtime.NumCPU(),
		GoVersion:    runtime.Version(),
		Poolers:      map[string]string{},
		ClockTicks:   clockTicks,
		LoadAvgStart: loadAvg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(v)
				if kib, err := strconv.ParseFloat(f[0], 64); err == nil {
					m.MemTotal = strconv.FormatFloat(kib/1024/1024, 'f', 1, 64) + " GiB"
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.CommandContext(ctx, goTool(), "env", "GOVERSION").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	m.Postgres = binaryVersion(filepath.Join(h.pg.BinDir, "postgres"))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if c, err := h.pg.Connect(cctx, h.pg.SuperUser, h.pg.SuperPassword, "postgres"); err == nil {
		var v string
		if c.QueryRow(cctx, "SELECT version()").Scan(&v) == nil {
			m.Postgres = v
		}
		c.Close(cctx)
	}
	m.Pgbench = binaryVersion(h.pgbench)
	m.Commit = gitCommit(ctx, h.root)
	for _, k := range h.kinds {
		m.Poolers[k.name] = k.version
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return strings.TrimSpace(string(b))
}

// settingsInfo records how the servers were configured.
type settingsInfo struct {
	PoolSize       int               `json:"default_pool_size"`
	Scale          int               `json:"scale"`
	MaxClientConn  int               `json:"max_client_conn"`
	MaxConnections int               `json:"postgres_max_connections"`
	PostgresConf   map[string]string `json:"postgres_conf"`
	PoolerINI      map[string]string `json:"pooler_ini"` // the main config, per pooler
	// PoolerINISection is the section PoolerINI comes from: "main" (the
	// select-only section), else the first section that ran every pooler.
	PoolerINISection string `json:"pooler_ini_section,omitempty"`
	// EntraINI is what pgwarden's file adds for the Entra-token storm
	// ($IDP, $TENANT, $OID for the run's values), as in its first storm
	// (TLS off unless only TLS on ran).
	EntraINI   string `json:"pgwarden_entra_ini,omitempty"`
	RunAs      string `json:"run_as"`
	NoFile     uint64 `json:"rlimit_nofile"`
	Gomaxprocs string `json:"pgwarden_gomaxprocs"`
}

func (h *harness) settings(maxConn int) settingsInfo {
	conf := map[string]string{
		"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
	}
	for k, v := range pgSettings(maxConn, h.tls) {
		// The harness's temporary directory is $WORK in the results.
		conf[k] = strings.ReplaceAll(v, h.ws.dir, "$WORK")
	}
	runAs := "the invoking user"
	if h.ws.cred != nil {
		runAs = "uid " + strconv.Itoa(h.ws.uid) + " (PostgreSQL, PgBouncer and pgwarden alike)"
	}
	gomaxprocs := "unset (Go default: all " + strconv.Itoa(runtime.NumCPU()) + " cores)"
	if h.cfg.gomaxprocs > 0 {
		gomaxprocs = strconv.Itoa(h.cfg.gomaxprocs)
	}
	return settingsInfo{
		PoolSize:       poolSize,
		Scale:          scale,
		MaxClientConn:  h.maxClientConn,
		MaxConnections: maxConn,
		PostgresConf:   conf,
		PoolerINI:      map[string]string{},
		RunAs:          runAs,
		NoFile:         h.res.NoFile,
		Gomaxprocs:     gomaxprocs,
	}
}

// gitCommit names the checkout pgwarden was built from.
func gitCommit(ctx context.Context, root string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " with uncommitted changes"
	}
	return c
}
