package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// results is everything one harness run measured; it is written as JSON
// (bench/results/<stamp>.json) and summarised in RESULTS.md.
type results struct {
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Mode     string         `json:"mode"`
	Args     []string       `json:"args"`
	Note     string         `json:"note,omitempty"`
	NoFile   uint64         `json:"rlimit_nofile"`
	Machine  machineInfo    `json:"machine"`
	Settings settingsInfo   `json:"settings"`
	Runs     []*runResult   `json:"runs"`
	Idle     []*idleResult  `json:"idle"`
	Profile  *profileResult `json:"profile,omitempty"`
	// EntraProfile is pgwarden's CPU profile under the Entra-token storm.
	EntraProfile *profileResult `json:"entra_profile,omitempty"`
	Skipped      []string       `json:"skipped,omitempty"`
	Problems     []string       `json:"problems,omitempty"`
}

func (h *harness) stamp() string      { return h.started.UTC().Format("20060102T150405Z") }
func (h *harness) resultsDir() string { return filepath.Join(filepath.Dir(h.cfg.out), "results") }

func (h *harness) relToOut(path string) string {
	if rel, err := filepath.Rel(filepath.Dir(h.cfg.out), path); err == nil {
		return rel
	}
	return path
}

// render writes RESULTS.md (out, or the module's bench/RESULTS.md) again
// from a run's raw results, so that a change to the report applies to a run
// already made. The run's own flags are read back from the JSON.
func render(jsonPath, out string) error {
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("%s: %w", jsonPath, err)
	}
	cfg, err := parseFlags(res.Args)
	if err != nil {
		return fmt.Errorf("%s: the run's flags: %w", jsonPath, err)
	}
	cfg.out = out
	if cfg.out == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		cfg.out = filepath.Join(root, "bench", "RESULTS.md")
	}
	h := &harness{cfg: cfg, res: &res, started: res.Started, ws: &workspace{}}
	// The run's temporary directory, which the report writes as $WORK.
	if f, ok := strings.CutSuffix(res.Settings.PostgresConf["ssl_cert_file"], "/tls/server.crt"); ok {
		h.ws.dir = f
	}
	for _, name := range []string{"pgwarden", goroutineKindName, "pgbouncer", "pgbouncer-upstream"} {
		v, ok := res.Machine.Poolers[name]
		switch {
		case !ok:
		case name == "pgwarden":
			h.kinds = append(h.kinds, &poolerKind{name: name, binary: name, version: v, label: "pgwarden", isPgwarden: true})
		case name == goroutineKindName && len(h.kinds) > 0:
			h.kinds = append(h.kinds, goroutineKind(h.kinds[0]))
		default:
			h.kinds = append(h.kinds, &poolerKind{name: name, binary: name, version: v, label: pgbouncerLabel(v)})
		}
	}
	abs, err := filepath.Abs(jsonPath)
	if err != nil {
		return err
	}
	return os.WriteFile(cfg.out, []byte(h.markdown(h.relToOut(abs))), 0o644)
}

// writeResults writes the raw JSON and RESULTS.md.
func (h *harness) writeResults() error {
	dir := h.resultsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(h.res, "", "  ")
	if err != nil {
		return err
	}
	jsonPath := filepath.Join(dir, h.stamp()+".json")
	if err := os.WriteFile(jsonPath, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	md := h.markdown(h.relToOut(jsonPath))
	if err := os.WriteFile(h.cfg.out, []byte(md), 0o644); err != nil {
		return err
	}
	h.logf("wrote %s and %s", h.cfg.out, jsonPath)
	return nil
}

// cell is the runs of one target in one cell of the matrix, over rounds.
type cell struct {
	runs []*runResult
}

// jobs is pgbench's -j in the cell's runs.
func (c *cell) jobs() int {
	if len(c.runs) == 0 {
		return 0
	}
	return c.runs[0].Jobs
}

func (c *cell) ok() bool {
	for _, r := range c.runs {
		if !r.ok() {
			return false
		}
	}
	return len(c.runs) > 0
}

func (c *cell) median(f func(*runResult) float64) float64 {
	var v []float64
	for _, r := range c.runs {
		v = append(v, f(r))
	}
	return median(v)
}

func (c *cell) sum(f func(*runResult) float64) float64 {
	var s float64
	for _, r := range c.runs {
		s += f(r)
	}
	return s
}

// Per-run figures, combined over a cell's rounds by median or sum.
func runTPS(r *runResult) float64         { return r.TPS }
func runLatAvg(r *runResult) float64      { return r.LatencyAvgMs * 1000 }
func runP50(r *runResult) float64         { return r.P50us }
func runP99(r *runResult) float64         { return r.P99us }
func runCPU(r *runResult) float64         { return r.CPUPerTxUs }
func runSteady(r *runResult) float64      { return r.SteadyCPUPerTxUs }
func runCores(r *runResult) float64       { return r.SteadyCoresUsed }
func runConnMs(r *runResult) float64      { return r.ConnTimeMs }
func runFailed(r *runResult) float64      { return float64(r.FailedTx + r.LogFailed) }
func runAborted(r *runResult) float64     { return float64(r.AbortedClients) }
func runPgbenchCPU(r *runResult) float64  { return r.PgbenchCPUPerTxUs }
func runMachineCPU(r *runResult) float64  { return r.MachineCPUPerTxUs }
func runMachineBusy(r *runResult) float64 { return r.MachineBusyCores }

func (c *cell) tps() float64         { return c.median(runTPS) }
func (c *cell) latAvg() float64      { return c.median(runLatAvg) }
func (c *cell) p50() float64         { return c.median(runP50) }
func (c *cell) p99() float64         { return c.median(runP99) }
func (c *cell) cpu() float64         { return c.median(runCPU) }
func (c *cell) steady() float64      { return c.median(runSteady) }
func (c *cell) cores() float64       { return c.median(runCores) }
func (c *cell) connMs() float64      { return c.median(runConnMs) }
func (c *cell) failed() float64      { return c.sum(runFailed) }
func (c *cell) aborted() float64     { return c.sum(runAborted) }
func (c *cell) pgbenchCPU() float64  { return c.median(runPgbenchCPU) }
func (c *cell) machineCPU() float64  { return c.median(runMachineCPU) }
func (c *cell) machineBusy() float64 { return c.median(runMachineBusy) }

// throughputBudget is the CPU per transaction a pooler could spend and still
// reach need × PgBouncer's tps on this machine, if PostgreSQL, pgbench and
// the kernel cost per transaction what they did beside PgBouncer and the
// machine stayed as busy as it was then. A negative budget means no pooler
// could. ok is false when the run did not record the machine's CPU.
func throughputBudget(pb *cell, need float64) (budget float64, ok bool) {
	m, own := pb.machineCPU(), pb.cpu()
	if m <= 0 || own <= 0 {
		return 0, false
	}
	return m/need - (m - own), true
}

// stormBound is the connection rate a pooler that used no CPU at all could
// reach in pb's storm: pgbench -C signs in one connection at a time per
// thread, so each thread's time per connection is at least what it was
// beside PgBouncer minus PgBouncer's CPU per connection (a bound that
// assumes all of PgBouncer's work lay on that path; whatever did not
// only raises the floor).
func stormBound(pb *cell, jobs int) (float64, bool) {
	if pb.tps() <= 0 || pb.cpu() <= 0 || jobs <= 0 {
		return 0, false
	}
	per := float64(jobs)/pb.tps() - pb.cpu()/1e6
	if per <= 0 {
		return 0, false
	}
	return float64(jobs) / per, true
}

// failure describes why a cell failed, with pgbench's error text.
func (c *cell) failure() string {
	var errs []string
	exit := 0
	for _, r := range c.runs {
		exit = max(exit, r.ExitCode)
		for _, e := range r.Errors {
			if !slices.Contains(errs, e) && len(errs) < 3 {
				errs = append(errs, e)
			}
		}
	}
	return fmt.Sprintf("pgbench exit %d, %.0f failed transactions, %.0f aborted clients: %s",
		exit, c.failed(), c.aborted(), strings.Join(errs, " / "))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// find returns the cell of target for the given section and parameters, or
// nil if it was not run.
func (h *harness) find(section, protocol string, clients int, auth string, tls bool, target string) *cell {
	c := &cell{}
	for _, r := range h.res.Runs {
		if r.Section == section && r.Protocol == protocol && r.Clients == clients && r.Target == target &&
			(auth == "" || r.Auth == auth) && r.TLS == tls {
			c.runs = append(c.runs, r)
		}
	}
	if len(c.runs) == 0 {
		return nil
	}
	return c
}

func (h *harness) targetNames() []string {
	var names []string
	for _, k := range h.kinds {
		names = append(names, k.name)
	}
	return append(names, "direct")
}

func (h *harness) labelOf(name string) string {
	if name == "direct" {
		return "direct PostgreSQL"
	}
	if k := h.kind(name); k != nil {
		if k.isPgwarden {
			return k.label
		}
		if name == "pgbouncer" {
			return k.label + " (Debian)"
		}
		return k.label + " (upstream build)"
	}
	return name
}

func f0(v float64) string {
	if v == 0 || math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func f1(v float64) string {
	if v == 0 || math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func f2(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

func kTPS(v float64) string {
	if v == 0 {
		return "—"
	}
	return strconv.FormatFloat(v/1000, 'f', 1, 64) + "k"
}

var (
	rePort     = regexp.MustCompile(`-p \d+`)
	reClients  = regexp.MustCompile(`-c \d+ -j \d+`)
	reProtocol = regexp.MustCompile(`-M \w+`)
	reT        = regexp.MustCompile(`-T \d+`)
)

func (h *harness) markdown(jsonRel string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	res := h.res
	m := res.Machine

	w("# pgwarden benchmark results\n\n")
	if res.Note != "" {
		w("> **%s**\n\n", res.Note)
	}
	w("Written by `go run ./bench %s` (%s mode) on %s; the run took %s. ",
		shellJoin(res.Args), res.Mode, res.Started.Format("2006-01-02 15:04 MST"), res.Finished.Sub(res.Started).Round(time.Second))
	w("Every figure below is the median over the rounds of a cell; in each round the targets ran one after another (%s), so that machine noise hits them alike. ",
		strings.Join(h.targetNames(), ", "))
	w("Every single run is in [`%s`](%s).\n\n", jsonRel, jsonRel)
	if len(res.Problems) > 0 {
		w("**Problems in this run:**\n\n")
		for _, p := range res.Problems {
			w("- %s\n", oneLine(p, 600))
		}
		w("\n")
	}

	w("## Machine\n\n| | |\n|---|---|\n")
	w("| cores (nproc) | %d |\n| CPU | %s |\n| memory | %s |\n| kernel | %s |\n| Go | %s |\n| PostgreSQL | %s |\n| pgbench | %s |\n",
		m.Cores, m.CPUModel, m.MemTotal, m.Kernel, m.GoVersion, m.Postgres, m.Pgbench)
	for _, k := range h.kinds {
		w("| %s | %s (`%s`) |\n", k.name, k.version, filepath.Base(k.binary))
	}
	w("| pgwarden source | %s |\n", m.Commit)
	w("| load average at start / end | %s / %s |\n", m.LoadAvgStart, m.LoadAvgEnd)
	w("| RLIMIT_NOFILE | %d |\n| CLK_TCK | %.0f |\n\n", res.Settings.NoFile, m.ClockTicks)
	w("PostgreSQL, pgbench and the poolers all run on this machine and share its cores; the servers run as %s. pgwarden's GOMAXPROCS: %s.\n\n",
		res.Settings.RunAs, res.Settings.Gomaxprocs)

	h.writeSetup(w)
	h.writeSelect(w)
	h.writeStorms(w)
	h.writeIdle(w)
	h.writeProfile(w)
	h.writeTargets(w)

	if len(res.Skipped) > 0 {
		w("## Not run\n\n")
		for _, s := range res.Skipped {
			w("- %s\n", s)
		}
		w("\n")
	}
	h.writeRuns(w)
	return b.String()
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

func (h *harness) writeSetup(w func(string, ...any)) {
	s := h.res.Settings
	w("## Setup\n\n")
	w("- PostgreSQL: a throwaway cluster (`pooler/pgtest`: initdb, SCRAM for every `pg_hba.conf` line) with")
	var keys []string
	for k := range s.PostgresConf {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		sep := ","
		if i == len(keys)-1 {
			sep = "."
		}
		v := s.PostgresConf[k]
		if h.ws.dir != "" && strings.HasPrefix(v, h.ws.dir) {
			v = "$WORK" + strings.TrimPrefix(v, h.ws.dir)
		}
		w(" `%s = %s`%s", k, v, sep)
	}
	w(" Role `%s` (SCRAM password) owns database `%s`, filled with `pgbench -i -s %d`.\n", benchUser, benchDB, s.Scale)
	w("- Poolers: each section starts its own instances of every pooler, from the same `pgbouncer.ini` and `userlist.txt` (`\"%s\" \"<password>\"`, the plain password, which serves both `auth_type = scram-sha-256` and `plain`), run as `<pooler> -q pgbouncer.ini` (log to the logfile only). The configuration of the %s:\n\n", benchUser, sectionName(s.PoolerINISection))
	var first string
	same := true
	for _, k := range h.kinds {
		ini := s.PoolerINI[k.name]
		if first == "" {
			first = ini
		} else if ini != first {
			same = false
		}
	}
	switch {
	case first == "":
		w("(No section that runs every pooler ran.)\n\n")
	case same:
		w("```ini\n%s```\n\n", first)
		w("This text, with `$PGPORT`, `$PORT`, `$DIR` (the instance's directory) and `$WORK` (the harness's temporary directory) filled in, is what each of %s read: the files are identical apart from the port and the paths (checked by the harness in every section). ", strings.Join(h.kindNames(), ", "))
	default:
		for _, k := range h.kinds {
			w("%s:\n\n```ini\n%s```\n\n", k.name, s.PoolerINI[k.name])
		}
	}
	for _, k := range h.kinds {
		if k.ownSettings != "" {
			w("%s is pgwarden's binary again, run in the select-only section only, from the same file with `%s` added at the top of `[pgbouncer]`: pgwarden relaying on goroutines rather than its event loop, measured in the same rounds. ", k.name, strings.TrimSpace(k.ownSettings))
		}
	}
	w("The TLS sections add `client_tls_sslmode = require`, `client_tls_cert_file` and `client_tls_key_file` (a self-signed RSA-2048 certificate made by the harness) and the plain-password sections set `auth_type = plain`, for every pooler alike. `server_tls_sslmode = disable`: the pooler-to-PostgreSQL leg is plain TCP on loopback.\n\n")
	if s.EntraINI != "" {
		w("- The Entra-token storm runs pgwarden only, from a file that is the plain-password storm's (`auth_type = plain`, the same TLS) followed by two sections of pgwarden's own, which PgBouncer does not know and refuses. The harness checks that pgwarden's file without them is identical, apart from the port and the paths, to the one PgBouncer read in the plain-password storm, whose rate the target compares with. The sections (`$IDP`, `$TENANT` and `$OID` stand for the run's values):\n\n")
		w("```ini\n%s```\n\n", s.EntraINI)
		w("  `$IDP` is a development identity provider that the harness runs in its own process on a loopback port (`authn/devidp`: OpenID discovery and key sets over HTTP, as Entra ID serves them); it minted one access token, valid for %g h, for object ID `$OID` in tenant `$TENANT`, and every Entra-token sign-in sends it as `PGPASSWORD`. `auth_mode = entra`: the bench role signs in with tokens only. pgwarden logs in to PostgreSQL with the bench password from `userlist.txt`, as for password sign-ins (`server_auth` password, the default). pgwarden refuses tokens over plain TCP unless `allow_plaintext = 1`, which the TLS-off storm sets; the TLS-on storm does not. Before the measured runs, the readiness check signs in once with the token: that sign-in fetches the key set and checks the signature, and the storm's sign-ins find the token in pgwarden's validated-token cache.\n\n", tokenLifetime.Hours())
	}
	w("- pgbench (every run; `PGPASSWORD` set to the password, or to the Entra token where the line shows `$TOKEN`; `PGSSLMODE=disable`, or `require` for TLS):\n\n```\n")
	seen := map[string]bool{}
	for _, r := range h.res.Runs {
		c := rePort.ReplaceAllLiteralString(r.Command, "-p $PORT")
		if !r.Connect {
			c = reClients.ReplaceAllLiteralString(c, "-c $CLIENTS -j $JOBS")
			c = reProtocol.ReplaceAllLiteralString(c, "-M $PROTOCOL")
			c = reT.ReplaceAllLiteralString(c, "-T $T")
		}
		if !seen[c] {
			seen[c] = true
			w("%s\n", c)
		}
	}
	w("```\n\n`-j` = min(clients, cores). `-T` is the run length asked for plus an allowance for the initial sign-ins, which pgbench 15 counts in `-T`: 1.5 × the target's longest sign-in time per client seen so far × clients per thread + 0.5 s, when that estimate reaches 0.2 s (the `T` and `sign_in_allowance_s` fields of the JSON), so that each target gets about the same time of transactions; pgbench's tps excludes the initial connection time. Latency percentiles come from the per-transaction logs (`--log`, the latency column in µs, every transaction). ")
	w("Pooler CPU per transaction = the pooler process's utime+stime (`/proc/PID/stat`, all threads) over the whole pgbench run ÷ transactions processed, as in the reference figures; that includes the clients' sign-ins. ")
	w("\"steady\" is the same over the window in which every client was connected and running (from the CPU samples taken every 100 ms and the transactions' end times in the logs), i.e. without the sign-ins. \"cores\" is that window's CPU time ÷ its length.\n\n")
}

// sectionName describes, for the setup text, the section whose pooler
// configuration is shown.
func sectionName(label string) string {
	switch {
	case label == "" || label == "main":
		return "select-only section (the other sections differ as described below)"
	case strings.HasPrefix(label, "storm-"):
		return "connection storm `" + label + "` (the select-only section did not run)"
	}
	return "section `" + label + "`"
}

func (h *harness) kindNames() []string {
	var n []string
	for _, k := range h.kinds {
		n = append(n, k.name)
	}
	return n
}

func (h *harness) writeSelect(w func(string, ...any)) {
	if !h.cfg.has("select") {
		return
	}
	w("## pgbench -S (select-only), transaction pooling, pool size %d, scale %d, %s per run, %d round(s)\n\n", poolSize, scale, h.cfg.duration, h.cfg.rounds)
	var notes []string
	for _, proto := range h.cfg.protocols {
		w("### `-M %s`\n\n", proto)
		w("| clients | target | tps | failed | latency avg (µs) | p50 (µs) | p99 (µs) | p99/p50 | pooler CPU µs/tx | steady µs/tx | cores |\n")
		w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, clients := range h.cfg.clients {
			for _, name := range h.targetNames() {
				c := h.find("select", proto, clients, "", false, name)
				if c == nil {
					continue
				}
				tps := f0(c.tps())
				if !c.ok() {
					tps = "**fails** " + tps
					notes = append(notes, fmt.Sprintf("`-M %s`, %d clients, %s: %s", proto, clients, name, oneLine(c.failure(), 400)))
				}
				w("| %d | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", clients, h.labelOf(name), tps, c.failed()+c.aborted(),
					f0(c.latAvg()), f0(c.p50()), f0(c.p99()), f2(ratio(c.p99(), c.p50())), f1(c.cpu()), f1(c.steady()), f2(c.cores()))
			}
		}
		w("\nRatios (pgwarden ÷ the other; tps: higher is better for pgwarden, CPU and latency: lower is better):\n\n")
		w("| clients | vs | tps | CPU µs/tx | steady CPU | p50 | p99 |\n|---:|---|---:|---:|---:|---:|---:|\n")
		for _, clients := range h.cfg.clients {
			pw := h.find("select", proto, clients, "", false, "pgwarden")
			if pw == nil {
				continue
			}
			for _, name := range h.targetNames()[1:] {
				o := h.find("select", proto, clients, "", false, name)
				if o == nil {
					continue
				}
				w("| %d | %s | %s | %s | %s | %s | %s |\n", clients, h.labelOf(name), f2(ratio(pw.tps(), o.tps())),
					f2(ratio(pw.cpu(), o.cpu())), f2(ratio(pw.steady(), o.steady())), f2(ratio(pw.p50(), o.p50())), f2(ratio(pw.p99(), o.p99())))
			}
		}
		w("\n")
	}
	if len(notes) > 0 {
		w("Failures (\"failed\" counts failed transactions plus aborted clients; pgbench stops a client at its first error):\n\n")
		for _, n := range notes {
			w("- %s\n", n)
		}
		w("\n")
	}
}

func (h *harness) writeStorms(w func(string, ...any)) {
	if !h.cfg.has("storm") {
		return
	}
	w("## Connection storms: `pgbench -S -C -c %d`, %s per run, %d round(s)\n\n", h.cfg.stormClients, h.cfg.stormDuration, h.cfg.rounds)
	w("Every transaction opens a new connection and signs in. connections/s = pgbench's tps (\"including reconnection times\"). PostgreSQL itself always signs in with SCRAM, so its row is shown with the SCRAM sections only. ")
	w("The Entra-token rows are pgwarden's alone (PgBouncer cannot sign clients in with Entra tokens): every connection sends the same access token as its password, which pgwarden validated in full once, at the readiness check before the run, and then finds in its validated-token cache.\n\n")
	w("| sign-in | client TLS | target | connections/s | failed | avg connect (ms) | pooler CPU µs/connection | pgbench CPU µs/connection | pgwarden ÷ this |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	var notes []string
	for _, auth := range h.cfg.stormAuths {
		for _, tls := range h.cfg.stormTLS {
			pw := h.find("storm", "simple", h.cfg.stormClients, auth, tls, "pgwarden")
			for _, name := range h.targetNames() {
				c := h.find("storm", "simple", h.cfg.stormClients, auth, tls, name)
				if c == nil {
					continue
				}
				rate := f0(c.tps())
				if !c.ok() {
					rate = "**fails** " + rate
					notes = append(notes, fmt.Sprintf("%s, TLS %v, %s: %s", stormAuthLabel(auth), onOff(tls), name, oneLine(c.failure(), 400)))
				}
				rel := "—"
				if name != "pgwarden" && pw != nil {
					rel = f2(ratio(pw.tps(), c.tps()))
				}
				w("| %s | %s | %s | %s | %.0f | %s | %s | %s | %s |\n", stormAuthLabel(auth), onOff(tls), h.labelOf(name), rate, c.failed()+c.aborted(), f2(c.connMs()), f1(c.cpu()), f1(c.pgbenchCPU()), rel)
			}
		}
	}
	if slices.Contains(h.cfg.stormAuths, "entra") {
		w("\npgwarden's Entra-token sign-ins against PgBouncer's plain-password sign-ins (the target's comparison):\n\n")
		w("| client TLS | pgwarden Entra token (connections/s) | PgBouncer plain password (connections/s) | ratio | target |\n|---|---:|---:|---:|---:|\n")
		for _, tls := range h.cfg.stormTLS {
			pw, pb := h.entraCells(tls)
			if pw == nil {
				continue
			}
			pbRate := "not run"
			if pb != nil {
				pbRate = f0(pb.tps())
			}
			var r float64
			if pb != nil {
				r = ratio(pw.tps(), pb.tps())
			}
			w("| %s | %s | %s | %s | ≥ %.1f× |\n", onOff(tls), f0(pw.tps()), pbRate, f2(r), entraTargetRatio)
		}
	}
	w("\n")
	for _, n := range notes {
		w("- %s\n", n)
	}
	if len(notes) > 0 {
		w("\n")
	}
}

// budgetText says what a throughput budget leaves a pooler.
func budgetText(b, pgbouncer float64) string {
	if b <= 0 {
		return "nothing: no pooler could reach it here"
	}
	return fmt.Sprintf("at most %.1f µs per transaction (%.2f× PgBouncer's)", b, b/pgbouncer)
}

// entraTargetRatio is issue 6's bar: pgwarden's Entra-token sign-ins (-C,
// cached validation) at 1.5× PgBouncer's plain-password connection rate.
const entraTargetRatio = 1.5

// entraCells returns pgwarden's Entra-token storm and PgBouncer's (Debian)
// plain-password storm with the given client TLS, either nil if not run.
func (h *harness) entraCells(tls bool) (pw, pb *cell) {
	return h.find("storm", "simple", h.cfg.stormClients, "entra", tls, "pgwarden"),
		h.find("storm", "simple", h.cfg.stormClients, "plain", tls, "pgbouncer")
}

// stormAuthLabel is the storm table's sign-in column.
func stormAuthLabel(auth string) string {
	if auth == "entra" {
		return "Entra token"
	}
	return "auth_type " + auth
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (h *harness) writeIdle(w func(string, ...any)) {
	if !h.cfg.has("idle") {
		return
	}
	w("## Idle clients: resident memory per idle client\n\n")
	w("A fresh instance of each pooler; one sign-in and out first (so its pool holds a server connection), VmRSS read once it is steady, then the harness opens N connections that sign in (SCRAM) and stay idle, VmRSS read again once steady: (after − before) ÷ N.\n\n")
	w("| client TLS | pooler | N | signed in | RSS before (KiB) | RSS after (KiB) | per idle client (KiB) | pgwarden ÷ this |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range h.res.Idle {
		rel := "—"
		if r.Target != "pgwarden" {
			for _, p := range h.res.Idle {
				if p.Target == "pgwarden" && p.TLS == r.TLS {
					rel = f2(ratio(p.PerClientBytes, r.PerClientBytes))
				}
			}
		}
		w("| %s | %s | %d | %d | %d | %d | %.2f | %s |\n", onOff(r.TLS), h.labelOf(r.Target), r.Wanted, r.Opened, r.RSSBeforeKiB, r.RSSAfterKiB, r.PerClientBytes/1024, rel)
	}
	w("\n")
}

func (h *harness) writeProfile(w func(string, ...any)) {
	if !h.cfg.has("profile") {
		return
	}
	w("## pgwarden CPU profile\n\n")
	p := h.res.Profile
	switch {
	case p == nil:
		w("No profile: the profile step did not run (see Problems).\n\n")
		return
	case !p.Supported:
		w("No profile: %s.\n\n", p.Note)
		return
	}
	if p.File == "" {
		w("Profile run made but no profile file was saved (see Problems).\n\n")
		return
	}
	rate := ""
	if p.Run != nil {
		rate = fmt.Sprintf(" (%.0f tps, %.1f µs CPU per transaction with the profiler on)", p.Run.TPS, p.Run.CPUPerTxUs)
	}
	w("A separate pgwarden instance, started with `%s`, under `pgbench -S -M simple -c 50` for %s%s, after the measured runs. Profile: [`%s`](%s) (`go tool pprof %s %s`; the whole process life, start-up and sign-ins included). ",
		profileEnv, h.cfg.duration, rate, p.File, p.File, cmp.Or(p.TopArgs, "-top"), p.File)
	if p.AllocFile != "" {
		w("Allocations over the same run: [`%s`](%s) (`%s`; `go tool pprof -sample_index=alloc_space -top %s`).\n\n", p.AllocFile, p.AllocFile, allocProfileEnv, p.AllocFile)
	} else {
		w("Allocation profile: not taken (this pgwarden binary does not read `%s`).\n\n", allocProfileEnv)
	}
	writeTop(w, p.Top)
	if p.AllocTop != "" {
		w("Allocations (alloc_space):\n\n")
		writeTop(w, p.AllocTop)
	}
	if e := h.res.EntraProfile; e != nil {
		w("### Under the Entra-token storm\n\n")
		if e.File == "" {
			w("No profile file was saved (see Problems).\n\n")
			return
		}
		rate := ""
		if e.Run != nil {
			rate = fmt.Sprintf(" (%.0f connections/s, %.1f µs CPU per connection with the profiler on)", e.Run.TPS, e.Run.CPUPerTxUs)
		}
		w("Another pgwarden instance with the profiler, under the Entra-token storm (`pgbench -S -C -c %d`, client TLS %s) for %s%s, to show where the time of a token sign-in goes. Profile: [`%s`](%s) (`go tool pprof %s %s`, cumulative: each function with what it calls).\n\n",
			h.cfg.stormClients, onOff(e.Run != nil && e.Run.TLS), h.cfg.stormDuration, rate, e.File, e.File, e.TopArgs, e.File)
		writeTop(w, e.Top)
	}
}

// writeTop prints the head of a go tool pprof -top listing.
func writeTop(w func(string, ...any), top string) {
	if top == "" {
		return
	}
	lines := strings.Split(strings.TrimRight(top, "\n"), "\n")
	if len(lines) > 32 {
		lines = lines[:32]
	}
	w("```\n%s\n```\n\n", strings.Join(lines, "\n"))
}

// verdict is one line of the Targets section.
type verdict struct {
	target  string
	status  string // MET, MISSED, NOT MEASURED, PARTLY MEASURED (met so far), …
	details []string
}

func (h *harness) writeTargets(w func(string, ...any)) {
	w("## Targets (issue 6)\n\n")
	w("Computed by the harness from the figures above (medians of the rounds), against PgBouncer from the Debian package")
	if h.kind("pgbouncer-upstream") != nil {
		w(" (the upstream build is shown in the tables but the targets are judged against the Debian package, as in the issue's reference figures)")
	}
	w(". A target whose cells were not all run is marked as such.\n\n")
	for _, v := range h.verdicts() {
		w("- **%s** — %s\n", v.status, v.target)
		for _, d := range v.details {
			w("  - %s\n", d)
		}
	}
	w("\n")
}

// judge combines per-cell outcomes: all measured cells met and nothing
// missing → MET; any miss → MISSED; no cell → NOT MEASURED; met so far but
// some cells not run → PARTLY MEASURED.
func judge(met, missed, missing int) string {
	switch {
	case missed > 0:
		return "MISSED"
	case met == 0:
		return "NOT MEASURED"
	case missing > 0:
		return "PARTLY MEASURED (met where measured)"
	default:
		return "MET"
	}
}

func (h *harness) verdicts() []verdict {
	var out []verdict
	protos := []string{"simple", "extended"}
	sel := func(proto string, clients int, name string) *cell {
		return h.find("select", proto, clients, "", false, name)
	}
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}

	// CPU per transaction at 50 and 500 clients.
	{
		v := verdict{target: "pgwarden's CPU per transaction ≤ PgBouncer's at 50 and 500 clients (simple and extended; both over the whole run and in the steady window)"}
		met, missed, missing := 0, 0, 0
		for _, clients := range []int{50, 500} {
			for _, proto := range protos {
				pw, pb := sel(proto, clients, "pgwarden"), sel(proto, clients, "pgbouncer")
				if pw == nil || pb == nil {
					missing++
					v.details = append(v.details, fmt.Sprintf("%d clients, %s: not run", clients, proto))
					continue
				}
				if !pw.ok() || !pb.ok() || pw.cpu() == 0 || pb.cpu() == 0 {
					// A failed run has no meaningful CPU per transaction.
					missed++
					v.details = append(v.details, fmt.Sprintf("%d clients, %s: no comparable figure (pgwarden ok: %v, PgBouncer ok: %v): missed",
						clients, proto, pw.ok(), pb.ok()))
					continue
				}
				// Judged on both measures: the whole run (the reference
				// method, sign-ins included) and the steady window.
				ok := pw.cpu() <= pb.cpu()
				steady := "steady window too short to measure"
				if pw.steady() > 0 && pb.steady() > 0 {
					ok = ok && pw.steady() <= pb.steady()
					steady = fmt.Sprintf("steady %.1f vs %.1f µs, ratio %.2f", pw.steady(), pb.steady(), pw.steady()/pb.steady())
				}
				if ok {
					met++
				} else {
					missed++
				}
				v.details = append(v.details, fmt.Sprintf("%d clients, %s: whole run pgwarden %.1f µs vs PgBouncer %.1f µs, ratio %.2f; %s: %s",
					clients, proto, pw.cpu(), pb.cpu(), pw.cpu()/pb.cpu(), steady, mark(ok)))
			}
		}
		v.status = judge(met, missed, missing)
		out = append(out, v)
	}

	// Throughput.
	{
		v := verdict{target: "throughput, simple and extended: 50 clients ≥ 1.1× PgBouncer (aim 1.3×); 500 clients ≥ 1.2× PgBouncer with pgwarden's p99/p50 ≤ 1.5"}
		met, missed, missing := 0, 0, 0
		for _, clients := range []int{50, 500} {
			need := 1.1
			if clients == 500 {
				need = 1.2
			}
			for _, proto := range protos {
				pw, pb := sel(proto, clients, "pgwarden"), sel(proto, clients, "pgbouncer")
				if pw == nil || pb == nil {
					missing++
					v.details = append(v.details, fmt.Sprintf("%d clients, %s: not run", clients, proto))
					continue
				}
				r := ratio(pw.tps(), pb.tps())
				ok := pw.ok() && r >= need
				d := fmt.Sprintf("%d clients, %s: pgwarden %s vs PgBouncer %s tps = %.2f× (need %.1f×)", clients, proto, kTPS(pw.tps()), kTPS(pb.tps()), r, need)
				if clients == 500 {
					pr := ratio(pw.p99(), pw.p50())
					ok = ok && pr > 0 && pr <= 1.5
					d += fmt.Sprintf(", p99/p50 %.2f (need ≤ 1.5)", pr)
				}
				if !pw.ok() {
					d += ", pgwarden had failures"
				}
				if b, known := throughputBudget(pb, need); known && r < need {
					d += fmt.Sprintf("; the machine was %.2f cores busy beside PgBouncer, %.0f µs of CPU per transaction in all, %.1f µs of it PgBouncer's: at %.1f× its tps, with PostgreSQL, pgbench and the kernel costing what they did, a pooler could spend %s",
						pb.machineBusy(), pb.machineCPU(), pb.cpu(), need, budgetText(b, pb.cpu()))
				}
				if ok {
					met++
				} else {
					missed++
				}
				v.details = append(v.details, d+": "+mark(ok))
			}
		}
		v.status = judge(met, missed, missing)
		out = append(out, v)
	}

	// Latency at 1 client.
	{
		v := verdict{target: "1 client: latency added over direct PostgreSQL ≤ PgBouncer's (mean latency per transaction, from pgbench)"}
		met, missed, missing := 0, 0, 0
		for _, proto := range protos {
			pw, pb, d := sel(proto, 1, "pgwarden"), sel(proto, 1, "pgbouncer"), sel(proto, 1, "direct")
			if pw == nil || pb == nil || d == nil {
				missing++
				v.details = append(v.details, fmt.Sprintf("%s: not run", proto))
				continue
			}
			addPw, addPb := pw.latAvg()-d.latAvg(), pb.latAvg()-d.latAvg()
			ok := pw.ok() && addPw <= addPb
			if ok {
				met++
			} else {
				missed++
			}
			v.details = append(v.details, fmt.Sprintf("%s: direct %.0f µs; pgwarden adds %.0f µs, PgBouncer %.0f µs (p50: %.0f / %.0f / %.0f µs): %s",
				proto, d.latAvg(), addPw, addPb, d.p50(), pw.p50(), pb.p50(), mark(ok)))
		}
		v.status = judge(met, missed, missing)
		out = append(out, v)
	}

	// Prepared protocol.
	{
		v := verdict{target: "prepared protocol in transaction mode works, at ≥ 1.2× PgBouncer's simple-protocol tps in the same run"}
		met, missed, missing := 0, 0, 0
		for _, clients := range h.cfg.clients {
			pw, pb := sel("prepared", clients, "pgwarden"), sel("simple", clients, "pgbouncer")
			if pw == nil || pb == nil {
				missing++
				continue
			}
			r := ratio(pw.tps(), pb.tps())
			ok := pw.ok() && r >= 1.2
			d := fmt.Sprintf("%d clients: pgwarden -M prepared %s tps vs PgBouncer -M simple %s = %.2f×", clients, kTPS(pw.tps()), kTPS(pb.tps()), r)
			if !pw.ok() {
				d = fmt.Sprintf("%d clients: pgwarden -M prepared fails (%s)", clients, oneLine(pw.failure(), 200))
			} else if dp := sel("prepared", clients, "direct"); !ok && dp != nil && dp.ok() {
				// Without a pooler at all: the ceiling of any pooler.
				d += fmt.Sprintf(" (direct PostgreSQL -M prepared, with no pooler in the way: %s tps = %.2f×)", kTPS(dp.tps()), ratio(dp.tps(), pb.tps()))
			}
			if ok {
				met++
			} else {
				missed++
			}
			v.details = append(v.details, d+": "+mark(ok))
		}
		if met+missed == 0 {
			v.details = append(v.details, "-M prepared was not run (quick mode runs simple and extended only)")
		}
		v.status = judge(met, missed, 0)
		out = append(out, v)
	}

	// Entra sign-ins.
	{
		v := verdict{target: fmt.Sprintf("Entra-token sign-ins (-C, cached validation) ≥ %.1f× PgBouncer's plain-password connection rate, TLS off and on", entraTargetRatio)}
		met, missed, missing := 0, 0, 0
		for _, tls := range []bool{false, true} {
			pw, pb := h.entraCells(tls)
			if pw == nil || pb == nil {
				missing++
				var not []string
				if pw == nil {
					not = append(not, "pgwarden's Entra-token storm")
				}
				if pb == nil {
					not = append(not, "PgBouncer's plain-password storm")
				}
				v.details = append(v.details, fmt.Sprintf("TLS %s: not run: %s (the full mode runs both with TLS off and on; -storm-auth and -storm-tls choose the storms)", onOff(tls), strings.Join(not, " and ")))
				continue
			}
			r := ratio(pw.tps(), pb.tps())
			ok := pw.ok() && pb.ok() && r >= entraTargetRatio
			d := fmt.Sprintf("TLS %s: pgwarden %.0f connections/s with a token vs PgBouncer %.0f with a plain password = %.2f× (need %.1f×, i.e. ≥ %.0f connections/s)",
				onOff(tls), pw.tps(), pb.tps(), r, entraTargetRatio, entraTargetRatio*pb.tps())
			if !pw.ok() {
				d += "; pgwarden had failures: " + oneLine(pw.failure(), 200)
			}
			if !pb.ok() {
				d += "; PgBouncer had failures, so its rate is no fair bar: " + oneLine(pb.failure(), 200)
			}
			if bound, known := stormBound(pb, pb.jobs()); known && r < entraTargetRatio {
				d += fmt.Sprintf("; pgbench's own CPU per connection was %.0f µs beside PgBouncer (PgBouncer %.0f µs). pgbench -C opens one connection at a time per thread (-j %d), so a pooler that used no CPU at all would reach at most about %.0f connections/s here, %.2f× PgBouncer",
					pb.pgbenchCPU(), pb.cpu(), pb.jobs(), bound, bound/pb.tps())
			}
			if ok {
				met++
			} else {
				missed++
			}
			v.details = append(v.details, d+": "+mark(ok))
		}
		v.status = judge(met, missed, missing)
		if e := h.res.EntraProfile; missed > 0 && e != nil && e.File != "" {
			v.details = append(v.details, fmt.Sprintf("where pgwarden's time goes during token sign-ins: [`%s`](%s), in the profile section", e.File, e.File))
		}
		out = append(out, v)
	}

	// Idle memory.
	{
		v := verdict{target: "≤ 4 KiB resident memory per idle client at 10,000 idle clients"}
		var pw *idleResult
		for _, r := range h.res.Idle {
			if r.Target == "pgwarden" && !r.TLS {
				pw = r
			}
		}
		switch {
		case pw == nil:
			v.status = "NOT MEASURED"
		default:
			ok := pw.Failed == 0 && pw.PerClientBytes <= 4096
			d := fmt.Sprintf("pgwarden: %.2f KiB per idle client at %d (%d signed in)", pw.PerClientBytes/1024, pw.Wanted, pw.Opened)
			for _, r := range h.res.Idle {
				if r.Target == "pgbouncer" && !r.TLS {
					d += fmt.Sprintf("; PgBouncer %.2f KiB", r.PerClientBytes/1024)
				}
			}
			if pw.Wanted >= 10000 {
				v.status = strings.ToUpper(mark(ok))
			} else {
				v.status = "NOT MEASURED at 10,000"
				d += fmt.Sprintf(" (%s at this size; the target is at 10,000: run the full mode)", mark(ok))
			}
			v.details = append(v.details, d)
		}
		out = append(out, v)
	}

	// Multi-core.
	{
		v := verdict{target: "the harness runs unchanged on a larger machine, where pgwarden's use of every core must show (PgBouncer stays on one)"}
		var pwMax, pbMax float64
		for _, r := range h.res.Runs {
			if r.Section != "select" {
				continue
			}
			switch r.Target {
			case "pgwarden":
				pwMax = max(pwMax, r.SteadyCoresUsed)
			case "pgbouncer":
				pbMax = max(pbMax, r.SteadyCoresUsed)
			}
		}
		v.details = append(v.details, fmt.Sprintf("pgbench -j = min(clients, %d cores); most cores used in a steady window: pgwarden %.2f, PgBouncer %.2f", h.res.Machine.Cores, pwMax, pbMax))
		switch {
		case pwMax == 0:
			v.status = "NOT MEASURED"
		case h.res.Machine.Cores <= 2:
			v.status = "NOT ASSESSABLE on 2 cores"
			v.details = append(v.details, "on 2 cores PostgreSQL and pgbench need the CPU too; run the full mode on a larger machine")
		default:
			v.status = strings.ToUpper(mark(pwMax > 1.0 && pwMax > pbMax))
		}
		out = append(out, v)
	}
	return out
}

// writeRuns lists every run, in the order they were made.
func (h *harness) writeRuns(w func(string, ...any)) {
	if len(h.res.Runs) == 0 {
		return
	}
	w("## Every run\n\nIn the order they ran (the same figures, with more, are in the JSON file).\n\n")
	w("| section | mode | clients | round | target | tps | p50 (µs) | p99 (µs) | pooler CPU µs/tx | steady µs/tx | clean |\n")
	w("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range h.res.Runs {
		mode := r.Protocol
		if r.Connect {
			mode = "-C " + r.Auth
			if r.TLS {
				mode += " TLS"
			}
		}
		clean := "yes"
		if !r.ok() {
			clean = fmt.Sprintf("no (exit %d, %d aborted)", r.ExitCode, r.AbortedClients)
		}
		w("| %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.Section, mode, r.Clients, r.Round, r.Target,
			f0(r.TPS), f0(r.P50us), f0(r.P99us), f1(r.CPUPerTxUs), f1(r.SteadyCPUPerTxUs), clean)
	}
	w("\n")
}

// shellJoin quotes args for a POSIX shell where needed.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
