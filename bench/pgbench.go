package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pgbenchSpec is one pgbench invocation, minus the target.
type pgbenchSpec struct {
	section  string // "select", "storm", "warmup", "profile"
	protocol string // simple, extended, prepared
	clients  int
	jobs     int
	duration time.Duration // of transactions, after the sign-ins
	// signIn is added to -T: pgbench 15 counts the initial connections in
	// -T, and signing 500 clients in through a slow SCRAM takes seconds.
	signIn  time.Duration
	connect bool // -C: a new connection for every transaction
	tls     bool // PGSSLMODE=require
	auth    string
	// password is PGPASSWORD: the bench password, or the Entra token of
	// the Entra storm; "" means the bench password.
	password string
	log      bool // --log per-transaction logs (latency percentiles)
}

// runResult is one pgbench run against one target, with everything
// measured about it. It is written as-is to the raw JSON.
type runResult struct {
	Section  string `json:"section"`
	Protocol string `json:"protocol"`
	Auth     string `json:"auth,omitempty"`
	TLS      bool   `json:"tls"`
	Connect  bool   `json:"connect_per_transaction"`
	Clients  int    `json:"clients"`
	Jobs     int    `json:"jobs"`
	Round    int    `json:"round"`
	Target   string `json:"target"`
	Command  string `json:"command"`

	DurationS float64 `json:"duration_s"`          // transactions wanted
	SignInS   float64 `json:"sign_in_allowance_s"` // added to -T for the initial connections
	TSeconds  int     `json:"T"`                   // pgbench -T
	WallS     float64 `json:"wall_s"`              // pgbench start to exit
	ExitCode  int     `json:"exit_code"`

	Transactions   int64    `json:"transactions"`
	FailedTx       int64    `json:"failed_transactions"`
	AbortedClients int      `json:"aborted_clients"`
	Errors         []string `json:"errors,omitempty"`
	TPS            float64  `json:"tps"`
	LatencyAvgMs   float64  `json:"latency_avg_ms"`
	ConnTimeMs     float64  `json:"connection_time_ms"` // initial, or average with -C

	LogTransactions int64   `json:"log_transactions,omitempty"`
	LogFailed       int64   `json:"log_failed,omitempty"`
	P50us           float64 `json:"p50_us,omitempty"`
	P99us           float64 `json:"p99_us,omitempty"`

	// The pooler process's CPU (utime+stime): over the whole pgbench run
	// (including the clients' sign-ins) and over the steady window in
	// which every client was connected and running.
	CPUSeconds       float64 `json:"pooler_cpu_s,omitempty"`
	CPUPerTxUs       float64 `json:"pooler_cpu_per_tx_us,omitempty"`
	CoresUsed        float64 `json:"pooler_cores_used,omitempty"`
	SteadyWindowS    float64 `json:"steady_window_s,omitempty"`
	SteadyCPUPerTxUs float64 `json:"pooler_steady_cpu_per_tx_us,omitempty"`
	SteadyCoresUsed  float64 `json:"pooler_steady_cores_used,omitempty"`

	PgbenchCPUPerTxUs float64 `json:"pgbench_cpu_per_tx_us,omitempty"`

	// The whole machine's busy CPU (/proc/stat: every process and the
	// kernel) over the pgbench run: per transaction, and in cores.
	MachineCPUPerTxUs float64 `json:"machine_cpu_per_tx_us,omitempty"`
	MachineBusyCores  float64 `json:"machine_busy_cores,omitempty"`

	// Output is the end of pgbench's output when the run was not clean.
	Output string `json:"output,omitempty"`
}

// ok reports whether the run completed with no failure of any kind.
func (r *runResult) ok() bool {
	return r.ExitCode == 0 && r.FailedTx == 0 && r.AbortedClients == 0 && r.Transactions > 0 && r.LogFailed == 0
}

var (
	reProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	reFailed    = regexp.MustCompile(`number of failed transactions: (\d+)`)
	reLatAvg    = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
	reConnTime  = regexp.MustCompile(`(?:initial|average) connection time = ([0-9.]+) ms`)
	reTPS       = regexp.MustCompile(`tps = ([0-9.]+) \(`)
	reAborted   = regexp.MustCompile(`client \d+ (?:script \d+ )?aborted`)
	reDigits    = regexp.MustCompile(`\d+`)
)

// tSeconds is pgbench -T: the duration plus the sign-in allowance, rounded
// up to whole seconds.
func (s pgbenchSpec) tSeconds() int {
	return int((s.duration + s.signIn + time.Second - 1) / time.Second)
}

// pgbenchEnvPrefix shows, in a run's recorded command, that PGPASSWORD is
// the Entra token rather than the password.
func pgbenchEnvPrefix(spec pgbenchSpec) string {
	if spec.auth == "entra" {
		return "PGPASSWORD=$TOKEN "
	}
	return ""
}

// pgbenchArgs builds pgbench's arguments for spec against port.
func pgbenchArgs(spec pgbenchSpec, port int, logPrefix string) []string {
	args := []string{"-n", "-S", "-M", spec.protocol,
		"-c", strconv.Itoa(spec.clients), "-j", strconv.Itoa(spec.jobs),
		"-T", strconv.Itoa(spec.tSeconds())}
	if spec.connect {
		args = append(args, "-C")
	}
	if spec.log {
		args = append(args, "--log", "--log-prefix="+logPrefix)
	}
	return append(args, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", benchUser, benchDB)
}

// runPgbench runs pgbench against t and measures it. An error means the run
// could not be made at all; pgbench's own failures (aborted clients, failed
// transactions) are recorded in the result.
func (h *harness) runPgbench(ctx context.Context, spec pgbenchSpec, t *target, round int) (*runResult, error) {
	logDir, err := os.MkdirTemp(h.ws.dir, "pgbench-log-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(logDir)
	args := pgbenchArgs(spec, t.port, filepath.Join(logDir, "pgbench_log"))
	sslmode := "disable"
	if spec.tls {
		sslmode = "require"
	}
	r := &runResult{Section: spec.section, Protocol: spec.protocol, Auth: spec.auth, TLS: spec.tls, Connect: spec.connect,
		Clients: spec.clients, Jobs: spec.jobs, Round: round, Target: t.name,
		Command: pgbenchEnvPrefix(spec) + "PGSSLMODE=" + sslmode + " pgbench " + strings.Join(args, " "), DurationS: spec.duration.Seconds(),
		SignInS: spec.signIn.Seconds(), TSeconds: spec.tSeconds()}
	r.Command = strings.ReplaceAll(r.Command, logDir, "$LOGDIR")

	// Generous: pgbench signs in every client before the clock starts.
	timeout := 3*time.Duration(spec.tSeconds())*time.Second + 2*time.Minute + time.Duration(spec.clients)*20*time.Millisecond
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, h.pgbench, args...)
	cmd.Dir = logDir
	password := spec.password
	if password == "" {
		password = benchPassword
	}
	cmd.Env = cleanEnv("PGPASSWORD="+password, "PGSSLMODE="+sslmode, "LC_ALL=C")
	setProcessGroup(cmd)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out

	var sampler *cpuSampler
	if t.pooler != nil {
		sampler = startCPUSampler(t.pooler.proc.pid(), 100*time.Millisecond)
	}
	start := time.Now()
	m0, mErr0 := machineCPU()
	runErr := cmd.Run()
	m1, mErr1 := machineCPU()
	r.WallS = time.Since(start).Seconds()
	var samples []cpuSample
	if sampler != nil {
		samples = sampler.stop()
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if rctx.Err() != nil {
		return nil, fmt.Errorf("pgbench did not finish within %v:\n%s", timeout, out.String())
	}
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &exitErr):
		r.ExitCode = exitErr.ExitCode()
	default:
		return nil, fmt.Errorf("pgbench: %w", runErr)
	}
	text := out.String()
	h.parsePgbenchOutput(r, text)
	if !r.ok() {
		r.Output = lastLines(text, 15, "\n")
	}
	if cmd.ProcessState != nil && r.Transactions > 0 {
		cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		r.PgbenchCPUPerTxUs = float64(cpu.Microseconds()) / float64(r.Transactions)
	}
	if mErr0 == nil && mErr1 == nil && m1 > m0 && r.Transactions > 0 && r.WallS > 0 {
		busy := float64(m1-m0) / clockTicks
		r.MachineCPUPerTxUs = busy * 1e6 / float64(r.Transactions)
		r.MachineBusyCores = busy / r.WallS
	}

	var ends []txEnd
	if spec.log {
		lat, e, failed, err := readPgbenchLogs(logDir)
		if err != nil {
			return nil, err
		}
		ends = e
		r.LogTransactions = int64(len(lat))
		r.LogFailed = failed
		if len(lat) > 0 {
			slices.Sort(lat)
			r.P50us = percentile(lat, 0.50)
			r.P99us = percentile(lat, 0.99)
		}
	}
	if len(samples) >= 2 && r.Transactions > 0 {
		first, last := samples[0], samples[len(samples)-1]
		r.CPUSeconds = float64(last.ticks-first.ticks) / clockTicks
		r.CPUPerTxUs = r.CPUSeconds * 1e6 / float64(r.Transactions)
		if wall := last.at.Sub(first.at).Seconds(); wall > 0 {
			r.CoresUsed = r.CPUSeconds / wall
		}
		if !spec.connect {
			steadyCPU(r, samples, ends)
		}
	}
	return r, nil
}

// parsePgbenchOutput fills r from pgbench's summary and error lines.
func (h *harness) parsePgbenchOutput(r *runResult, text string) {
	num := func(re *regexp.Regexp) float64 {
		if m := re.FindStringSubmatch(text); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
		return 0
	}
	r.Transactions = int64(num(reProcessed))
	r.FailedTx = int64(num(reFailed))
	r.LatencyAvgMs = num(reLatAvg)
	r.ConnTimeMs = num(reConnTime)
	r.TPS = num(reTPS)
	seen := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if reAborted.MatchString(line) {
			r.AbortedClients++
		}
		low := strings.ToLower(line)
		if !strings.Contains(low, "error") && !strings.Contains(low, "fatal") {
			continue
		}
		// The same error from many clients counts once.
		key := reDigits.ReplaceAllString(line, "N")
		if seen[key] {
			continue
		}
		seen[key] = true
		if len(r.Errors) < 5 {
			r.Errors = append(r.Errors, strings.TrimSpace(line))
		}
	}
	if r.Transactions == 0 && len(r.Errors) == 0 && r.ExitCode != 0 {
		r.Errors = append(r.Errors, lastLines(text, 5, " | "))
	}
}

func lastLines(s string, n int, sep string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, sep)
}

// readPgbenchLogs reads pgbench's per-transaction logs (one file per
// thread): "client_id transaction_no time script_no time_epoch time_us
// [...]", time being the latency in µs. It returns the latencies, each
// transaction's end time (Unix µs), and the number of lines whose time is
// not a number (failed or skipped transactions).
func readPgbenchLogs(dir string) (lat []float64, ends []txEnd, failed int64, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "pgbench_log*"))
	if err != nil {
		return nil, nil, 0, err
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, nil, 0, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 6 {
				continue
			}
			us, err := strconv.ParseFloat(fields[2], 64)
			if err != nil {
				failed++
				continue
			}
			sec, err1 := strconv.ParseInt(fields[4], 10, 64)
			usec, err2 := strconv.ParseInt(fields[5], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			client, _ := strconv.Atoi(fields[0])
			lat = append(lat, us)
			ends = append(ends, txEnd{sec*1_000_000 + usec, int32(client)})
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, nil, 0, err
		}
	}
	return lat, ends, failed, nil
}

// txEnd is when a client's transaction ended (Unix µs).
type txEnd struct {
	us     int64
	client int32
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// steadyCPU computes the pooler's CPU per transaction over the window in
// which every client had completed a transaction and none had finished
// (the clients' sign-ins at the start and the stragglers at the end are
// outside it): between the first CPU sample after the last client's first
// transaction and the last sample before the first client's last one.
func steadyCPU(r *runResult, samples []cpuSample, ends []txEnd) {
	if len(ends) == 0 {
		return
	}
	first := map[int32]int64{}
	last := map[int32]int64{}
	for _, v := range ends {
		e, c := v.us, v.client
		if f, ok := first[c]; !ok || e < f {
			first[c] = e
		}
		if l, ok := last[c]; !ok || e > l {
			last[c] = e
		}
	}
	var from, to int64 = 0, 1<<62 - 1
	for c := range first {
		from = max(from, first[c])
		to = min(to, last[c])
	}
	var a, b *cpuSample
	for i := range samples {
		us := samples[i].at.UnixMicro()
		if a == nil && us >= from {
			a = &samples[i]
		}
		if us <= to {
			b = &samples[i]
		}
	}
	if a == nil || b == nil || b.at.Sub(a.at) < time.Second {
		return
	}
	lo, hi := a.at.UnixMicro(), b.at.UnixMicro()
	var n int64
	for _, v := range ends {
		if v.us > lo && v.us <= hi {
			n++
		}
	}
	if n == 0 {
		return
	}
	cpu := float64(b.ticks-a.ticks) / clockTicks
	win := b.at.Sub(a.at).Seconds()
	r.SteadyWindowS = win
	r.SteadyCPUPerTxUs = cpu * 1e6 / float64(n)
	r.SteadyCoresUsed = cpu / win
}
