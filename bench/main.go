// Command bench measures pgwarden beside PgBouncer and PostgreSQL itself
// (issue 6), on one machine, and writes bench/RESULTS.md.
//
//	go run ./bench -quick            about 2 minutes (make bench)
//	go run ./bench                   the full matrix (make bench-full)
//
// It builds pgwarden, starts a throwaway PostgreSQL (pooler/pgtest) filled
// with pgbench -i -s 10, and starts PgBouncer (the Debian package; with
// PGWARDEN_BENCH_PGBOUNCER_GIT or PGWARDEN_BENCH_PGBOUNCER_BIN also an
// upstream build) and pgwarden from identical pgbouncer.ini files. Then it
// runs pgbench against every target in turn within each cell of the
// matrix, so that noise on the machine hits them alike, and measures
// throughput, failures, latency percentiles (from pgbench --log), the
// poolers' CPU per transaction (/proc/PID/stat), connection storms (-C)
// with and without TLS (passwords, and for pgwarden Entra tokens from a
// development identity provider run in process), and resident memory per
// idle client.
//
// Every child process runs in its own process group and is killed when the
// harness exits, including on Ctrl-C; the temporary directory is removed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// config is the harness's command line.
type config struct {
	quick         bool
	out           string
	clients       []int
	protocols     []string
	duration      time.Duration
	rounds        int
	jobs          int
	with5000      bool
	stormDuration time.Duration
	stormClients  int
	stormAuths    []string
	stormTLS      []bool
	idleN         int
	idleTLS       bool
	sections      []string
	pgbouncerBin  string
	pgwardenBin   string
	note          string
	directMax     int
	gomaxprocs    int
	goroutines    bool // also pgwarden with event_loop = off
	render        string
}

const (
	envUpstreamGit = "PGWARDEN_BENCH_PGBOUNCER_GIT" // a pgbouncer git checkout (or bare git dir)
	envUpstreamTag = "PGWARDEN_BENCH_PGBOUNCER_TAG" // default: the newest release tag in it
	envUpstreamBin = "PGWARDEN_BENCH_PGBOUNCER_BIN" // or a prebuilt upstream pgbouncer
)

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	c := &config{}
	var clients, protocols, stormAuths, stormTLS, sections string
	fs.BoolVar(&c.quick, "quick", false, "quick mode (about 2 minutes): clients 1,50; simple and extended; 5 s runs; one round; idle 2,000")
	fs.StringVar(&c.out, "out", "", "results file (default bench/RESULTS.md in the module); raw runs go to results/ beside it")
	fs.StringVar(&clients, "clients", "1,50,500", "client counts for pgbench -S")
	fs.StringVar(&protocols, "protocols", "simple,extended,prepared", "pgbench -M modes")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of each pgbench -S run (whole seconds)")
	fs.IntVar(&c.rounds, "rounds", 2, "rounds per cell; each round runs every target once, in turn")
	fs.IntVar(&c.jobs, "j", 0, "pgbench -j (default min(clients, cores))")
	fs.BoolVar(&c.with5000, "c5000", false, "add 5,000 clients to the matrix (raises RLIMIT_NOFILE; direct is not run there)")
	fs.DurationVar(&c.stormDuration, "storm-duration", 10*time.Second, "length of each connection-storm run")
	fs.IntVar(&c.stormClients, "storm-clients", 20, "pgbench -C -c for the connection storms")
	fs.StringVar(&stormAuths, "storm-auth", "scram-sha-256,plain,entra", "sign-ins for the connection storms: auth_type scram-sha-256 or plain, or entra (Entra access tokens, pgwarden only)")
	fs.StringVar(&stormTLS, "storm-tls", "off,on", "client TLS for the connection storms: off, on or both")
	fs.IntVar(&c.idleN, "idle", 10000, "idle clients per pooler for the memory measurement")
	fs.BoolVar(&c.idleTLS, "idle-tls", true, "also measure idle clients over TLS")
	fs.StringVar(&sections, "sections", "select,storm,idle,profile", "sections to run")
	fs.StringVar(&c.pgbouncerBin, "pgbouncer", "", "PgBouncer binary (default: the Debian package's, installed with apt-get if missing)")
	fs.StringVar(&c.pgwardenBin, "pgwarden", "", "pgwarden binary (default: go build ./cmd/pgwarden)")
	fs.StringVar(&c.note, "note", "", "a note printed at the top of RESULTS.md (e.g. about machine load)")
	fs.IntVar(&c.directMax, "direct-max", 1000, "largest client count run directly against PostgreSQL")
	fs.BoolVar(&c.goroutines, "goroutines", true, "also run pgwarden with event_loop = off (its goroutine relay) in the select-only section, in the same rounds")
	fs.IntVar(&c.gomaxprocs, "gomaxprocs", 0, "GOMAXPROCS for pgwarden (default: unset, Go's default of every core)")
	fs.StringVar(&c.render, "render", "", "run nothing: write RESULTS.md (or -out) again from a run's raw results, results/<stamp>.json, with this harness's report")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./bench [flags]\n\nEnvironment: %s (a pgbouncer git checkout: also bench PgBouncer's newest release, built from it), %s (its tag), %s (a prebuilt upstream pgbouncer).\n\nFlags:\n", envUpstreamGit, envUpstreamTag, envUpstreamBin)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		quick := map[string]func(){
			"clients":        func() { clients = "1,50" },
			"protocols":      func() { protocols = "simple,extended" },
			"duration":       func() { c.duration = 5 * time.Second },
			"rounds":         func() { c.rounds = 1 },
			"storm-duration": func() { c.stormDuration = 5 * time.Second },
			"storm-auth":     func() { stormAuths = "scram-sha-256,plain,entra" },
			"storm-tls":      func() { stormTLS = "off" },
			"idle":           func() { c.idleN = 2000 },
			"idle-tls":       func() { c.idleTLS = false },
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	var err error
	if c.clients, err = parseInts(clients); err != nil {
		return nil, fmt.Errorf("-clients: %w", err)
	}
	if c.with5000 && !slices.Contains(c.clients, 5000) {
		c.clients = append(c.clients, 5000)
	}
	c.protocols = splitList(protocols)
	for _, p := range c.protocols {
		if p != "simple" && p != "extended" && p != "prepared" {
			return nil, fmt.Errorf("-protocols: unknown %q", p)
		}
	}
	c.stormAuths = splitList(stormAuths)
	for _, a := range c.stormAuths {
		if a != "scram-sha-256" && a != "plain" && a != "entra" {
			return nil, fmt.Errorf("-storm-auth: %q (want scram-sha-256, plain or entra)", a)
		}
	}
	for _, s := range splitList(stormTLS) {
		switch s {
		case "off":
			c.stormTLS = append(c.stormTLS, false)
		case "on":
			c.stormTLS = append(c.stormTLS, true)
		default:
			return nil, fmt.Errorf("-storm-tls: %q (want off, on)", s)
		}
	}
	c.sections = splitList(sections)
	for _, s := range c.sections {
		if !slices.Contains([]string{"select", "storm", "idle", "profile"}, s) {
			return nil, fmt.Errorf("-sections: unknown %q", s)
		}
	}
	if c.duration < time.Second || c.stormDuration < time.Second {
		return nil, errors.New("durations must be at least 1s")
	}
	if c.rounds < 1 {
		return nil, errors.New("-rounds must be at least 1")
	}
	return c, nil
}

func (c *config) has(section string) bool { return slices.Contains(c.sections, section) }

func (c *config) mode() string {
	if c.quick {
		return "quick"
	}
	return "full"
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// harness is the state of one run.
type harness struct {
	cfg           *config
	root          string
	ws            *workspace
	pg            *pgtest.Cluster
	tls           tlsFiles
	pgbench       string
	maxClientConn int
	kinds         []*poolerKind // pgwarden first
	res           *results
	started       time.Time
	// signInMs is, per target, the longest initial connection time seen
	// per client per pgbench thread (ms), to size the -T allowance.
	signInMs map[string]float64
	// inis holds, per section label and pooler, the pgbouncer.ini it read
	// (normalizeINI), for the check that the poolers' files are identical.
	inis map[string]map[string]string
	// entra is the dev IdP and token of the Entra-token storm (nil when it
	// does not run).
	entra *entraSetup
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(h.started).Seconds(), fmt.Sprintf(format, args...))
}

// problem records something that went wrong without stopping the run.
func (h *harness) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.res.Problems = append(h.res.Problems, msg)
	h.logf("PROBLEM: %s", msg)
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "reliability" {
		return runReliability(args[1:])
	}
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if cfg.render != "" {
		if err := render(cfg.render, cfg.out); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills the harness at once (children die with it)
	}()
	defer killAll()

	h := &harness{cfg: cfg, started: time.Now()}
	if err := h.run(ctx); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if len(h.res.Problems) > 0 {
		fmt.Fprintf(os.Stderr, "bench: finished with %d problem(s); see RESULTS.md\n", len(h.res.Problems))
		return 1
	}
	return 0
}

func (h *harness) run(ctx context.Context) (err error) {
	cfg := h.cfg
	if h.root, err = moduleRoot(); err != nil {
		return err
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(h.root, "bench", "RESULTS.md")
	}
	h.res = &results{Started: h.started.UTC(), Mode: cfg.mode(), Args: os.Args[1:], Note: cfg.note}

	maxClients := slices.Max(cfg.clients)
	idle := 0
	if cfg.has("idle") {
		idle = cfg.idleN
	}
	h.maxClientConn = max(maxClients, idle, cfg.stormClients) + 100
	// Each client holds a descriptor in pgbench (or the harness) and one
	// in the pooler; both inherit this limit.
	if lim, err := raiseNoFile(uint64(2*h.maxClientConn + 1024)); err != nil {
		h.problem("raise RLIMIT_NOFILE: %v", err)
	} else {
		h.res.NoFile = lim
		if lim < uint64(h.maxClientConn+200) {
			h.problem("RLIMIT_NOFILE is %d, too low for %d clients (raise the hard limit, or run as root)", lim, h.maxClientConn)
		}
	}

	if h.ws, err = newWorkspace(); err != nil {
		return err
	}
	defer h.ws.remove()
	h.logf("workspace %s", h.ws.dir)

	if h.pgbench = pgtest.PgbenchPath(); h.pgbench == "" {
		return errors.New("pgbench not found (Debian: apt-get install postgresql-client or postgresql)")
	}
	if err := h.setupPoolers(ctx); err != nil {
		return err
	}
	if h.tls, err = h.ws.makeCert(); err != nil {
		return err
	}
	directMax := 0
	for _, n := range cfg.clients {
		if n <= cfg.directMax {
			directMax = max(directMax, n)
		}
	}
	// Direct clients, the poolers' pools (main instances and one section's
	// instances at a time), the storm clients and a margin.
	maxConn := max(directMax, cfg.stormClients) + 2*len(h.kinds)*poolSize + 50
	h.logf("starting PostgreSQL (max_connections %d) and loading scale %d", maxConn, scale)
	if h.pg, err = startPostgres(ctx, maxConn, h.tls, h.pgbench, h.logf); err != nil {
		return err
	}
	defer h.pg.Stop()
	h.res.Settings = h.settings(maxConn)
	h.res.Machine = h.machine(ctx)

	if cfg.has("select") {
		if err := h.selectSection(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			h.problem("pgbench -S section stopped: %v", err)
		}
	}
	if cfg.has("storm") && slices.Contains(cfg.stormAuths, "entra") {
		// The Entra-token storm's identity provider, up until the end
		// (the profile section uses it too).
		h.logf("starting the development identity provider and minting the bench role's Entra token")
		if e, err := startEntra(); err != nil {
			h.problem("no Entra-token storm: dev IdP: %v", err)
		} else {
			h.entra = e
			defer e.stop()
		}
	}
	if cfg.has("storm") {
		if err := h.stormSection(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			h.problem("connection storm section stopped: %v", err)
		}
	}
	if cfg.has("idle") {
		if err := h.idleSection(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			h.problem("idle section stopped: %v", err)
		}
	}
	if cfg.has("profile") {
		if err := h.profileSection(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			h.problem("profile: %v", err)
		}
	}
	h.res.Finished = time.Now().UTC()
	h.res.Machine.LoadAvgEnd = loadAvg()
	return h.writeResults()
}

// setupPoolers builds pgwarden and finds PgBouncer (and the optional
// upstream build), copying each binary into the workspace, where the server
// user can run it.
func (h *harness) setupPoolers(ctx context.Context) error {
	cfg := h.cfg
	src := cfg.pgwardenBin
	if src == "" {
		h.logf("go build ./cmd/pgwarden")
		var err error
		if src, err = buildPgwarden(ctx, h.root, h.ws.dir); err != nil {
			return err
		}
	}
	bin, err := h.ws.copyExecutable(src, "pgwarden")
	if err != nil {
		return err
	}
	pw := &poolerKind{name: "pgwarden", binary: bin, isPgwarden: true, version: binaryVersion(bin)}
	pw.label = "pgwarden"
	h.kinds = append(h.kinds, pw)
	if cfg.goroutines {
		h.kinds = append(h.kinds, goroutineKind(pw))
	}

	pbSrc := cfg.pgbouncerBin
	if pbSrc == "" {
		if pbSrc, err = findPgbouncer(ctx, h.logf); err != nil {
			return err
		}
	}
	v := binaryVersion(pbSrc)
	h.kinds = append(h.kinds, &poolerKind{name: "pgbouncer", binary: pbSrc, version: v, label: pgbouncerLabel(v)})

	upSrc := os.Getenv(envUpstreamBin)
	if upSrc == "" && os.Getenv(envUpstreamGit) != "" {
		upSrc, err = buildUpstreamPgbouncer(ctx, os.Getenv(envUpstreamGit), os.Getenv(envUpstreamTag), h.logf)
		if err != nil {
			h.problem("upstream PgBouncer not built, continuing without it: %v", err)
			upSrc = ""
		}
	}
	if upSrc != "" {
		bin, err := h.ws.copyExecutable(upSrc, "pgbouncer-upstream")
		if err != nil {
			return err
		}
		v := binaryVersion(bin)
		h.kinds = append(h.kinds, &poolerKind{name: "pgbouncer-upstream", binary: bin, version: v, label: pgbouncerLabel(v)})
	}
	for _, k := range h.kinds {
		h.logf("%s: %s (%s)", k.name, k.version, k.binary)
	}
	return nil
}

func pgbouncerLabel(version string) string {
	if f := strings.Fields(version); len(f) >= 2 && strings.EqualFold(f[0], "pgbouncer") {
		return "PgBouncer " + f[1]
	}
	return "PgBouncer"
}

// kind returns the pooler kind by name, or nil.
func (h *harness) kind(name string) *poolerKind {
	for _, k := range h.kinds {
		if k.name == name {
			return k
		}
	}
	return nil
}

// jobs is pgbench -j for a client count: one thread per core, at most one
// per client.
func (h *harness) jobs(clients int) int {
	if h.cfg.jobs > 0 {
		return min(clients, h.cfg.jobs)
	}
	return max(1, min(clients, runtime.NumCPU()))
}

// startTargets starts one pooler of each kind with opts (pgwarden only for
// Entra tokens) and returns the targets, direct last when withDirect. It
// checks that the poolers read the same pgbouncer.ini.
func (h *harness) startTargets(ctx context.Context, label string, opts iniOptions, withDirect bool) ([]*target, func(), error) {
	var targets []*target
	stopAll := func() {
		for _, t := range targets {
			if t.pooler != nil {
				if err := t.pooler.stop(); err != nil && ctx.Err() == nil {
					h.logf("%s (%s) exit: %v", t.name, label, err)
				}
			}
		}
	}
	for _, k := range h.kinds {
		if opts.entra != nil && !k.isPgwarden {
			continue // PgBouncer cannot sign clients in with Entra tokens
		}
		if k.selectOnly && label != "main" {
			continue
		}
		p, err := h.startPooler(ctx, k, label, opts, nil)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		targets = append(targets, &target{name: k.name, port: p.port, pooler: p})
		ini := normalizeINI(strings.Replace(p.ini, k.ownSettings, "", 1), p.dir, p.port, h.ws.dir)
		if s := &h.res.Settings; opts.entra == nil && (s.PoolerINISection == "" || s.PoolerINISection == label) {
			// The select-only section runs first when it runs at all.
			s.PoolerINISection = label
			s.PoolerINI[k.name] = ini
		}
		if h.inis == nil {
			h.inis = map[string]map[string]string{}
		}
		if h.inis[label] == nil {
			h.inis[label] = map[string]string{}
		}
		h.inis[label][k.name] = ini
	}
	h.checkINIs(label, opts)
	if withDirect {
		targets = append(targets, &target{name: "direct", port: h.pg.Port})
	}
	return targets, stopAll, nil
}

// stormLabel names a storm section's pooler instances (their directories,
// and the key of h.inis).
func stormLabel(auth string, tls bool) string {
	label := "storm-" + strings.TrimSuffix(auth, "-sha-256")
	if tls {
		label += "-tls"
	}
	return label
}

// checkINIs records a problem unless every pooler of the section read the
// same pgbouncer.ini apart from its port and paths. pgwarden alone runs the
// Entra-token storm: its file, without pgwarden's own sections, must be the
// file PgBouncer read for the plain-password storm with the same TLS (the
// rate the target compares with), or, when that storm did not run, the
// one PgBouncer would have been given.
func (h *harness) checkINIs(label string, opts iniOptions) {
	inis := h.inis[label]
	var names []string
	for _, k := range h.kinds {
		if _, ok := inis[k.name]; ok {
			names = append(names, k.name)
		}
	}
	if len(names) == 0 {
		return
	}
	for _, n := range names[1:] {
		if inis[n] != inis[names[0]] {
			h.problem("%s: the pgbouncer.ini of %s and %s differ beyond port and paths:\n%s\n---\n%s", label, names[0], n, inis[names[0]], inis[n])
		}
	}
	if opts.entra == nil {
		return
	}
	pw := inis[names[0]]
	shared := sharedINI(pw)
	extra, ok := strings.CutPrefix(pw, shared)
	if !ok || !strings.Contains(extra, "[entra]") {
		h.problem("%s: pgwarden's pgbouncer.ini does not end with its [entra] sections:\n%s", label, pw)
	}
	if h.res.Settings.EntraINI == "" {
		h.res.Settings.EntraINI = strings.TrimLeft(opts.entra.normalize(extra), "\n")
	}
	plain := stormLabel("plain", opts.tls)
	ref, ok := h.inis[plain]["pgbouncer"]
	if !ok {
		dir := filepath.Join(h.ws.dir, plain+"-pgbouncer")
		ref = normalizeINI(iniText(h.pg.Port, 1, h.maxClientConn, dir, iniOptions{authType: "plain", tls: opts.tls}, h.tls), dir, 1, h.ws.dir)
	}
	if shared != ref {
		h.problem("%s: pgwarden's pgbouncer.ini without [entra] and [entra_principals] is not PgBouncer's plain-password file:\n%s\n---\n%s", label, shared, ref)
	}
}

// ensureAlive restarts a pooler that has died (and records it), so that
// one crash does not void the rest of the run.
func (h *harness) ensureAlive(ctx context.Context, t *target, label string) error {
	if t.pooler == nil || !t.pooler.proc.exited() {
		return nil
	}
	h.problem("%s (%s config) died (%v); restarting it. Log tail:\n%s\n%s", t.name, label, t.pooler.proc.err,
		t.pooler.proc.logTail(), fileTail(filepath.Join(t.pooler.dir, "pooler.log"), 10))
	p, err := h.startPooler(ctx, t.pooler.kind, label, t.pooler.opts, nil)
	if err != nil {
		return err
	}
	t.pooler, t.port = p, p.port
	return nil
}

// record runs pgbench and keeps the result.
func (h *harness) record(ctx context.Context, spec pgbenchSpec, t *target, round int, label string) error {
	if err := h.ensureAlive(ctx, t, label); err != nil {
		return err
	}
	perThread := (spec.clients + spec.jobs - 1) / spec.jobs
	if !spec.connect {
		// Expected sign-in time × 1.5 + 0.5 s, when it is not negligible.
		est := time.Duration(1.5 * h.signInMs[t.name] * float64(perThread) * float64(time.Millisecond))
		if est >= 200*time.Millisecond {
			spec.signIn = est + 500*time.Millisecond
		}
	}
	r, err := h.runPgbench(ctx, spec, t, round)
	if err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	if !spec.connect && r.ConnTimeMs > 0 {
		if h.signInMs == nil {
			h.signInMs = map[string]float64{}
		}
		h.signInMs[t.name] = max(h.signInMs[t.name], r.ConnTimeMs/float64(perThread))
	}
	if !spec.connect && r.Transactions > 0 && r.ConnTimeMs/1000 > max(spec.signIn.Seconds(), 0.2) {
		h.logf("  note: signing in took %.1fs, more than the %.1fs allowance: fewer seconds of transactions than asked", r.ConnTimeMs/1000, spec.signIn.Seconds())
	}
	if spec.section != "warmup" {
		h.res.Runs = append(h.res.Runs, r)
	}
	status := "ok"
	if !r.ok() {
		status = fmt.Sprintf("FAILED (exit %d, %d failed tx, %d aborted clients) %s", r.ExitCode, r.FailedTx, r.AbortedClients, strings.Join(r.Errors, " / "))
		if len(status) > 300 {
			status = status[:300] + "…"
		}
	}
	cpu := ""
	if r.CPUPerTxUs > 0 {
		cpu = fmt.Sprintf(" cpu %.1f µs/tx (steady %.1f)", r.CPUPerTxUs, r.SteadyCPUPerTxUs)
	}
	mode := spec.protocol
	if spec.connect {
		mode = "-C " + spec.auth
		if spec.tls {
			mode += " TLS"
		}
	}
	h.logf("  %-8s %-18s %-9s c=%-4d round %d: %8.0f tps p50 %5.0f µs p99 %6.0f µs%s %s",
		spec.section, t.name, mode, spec.clients, round, r.TPS, r.P50us, r.P99us, cpu, status)
	return nil
}

// selectSection runs pgbench -S over protocols × clients, all targets in
// turn within each cell.
func (h *harness) selectSection(ctx context.Context) error {
	cfg := h.cfg
	opts := iniOptions{authType: "scram-sha-256"}
	targets, stopAll, err := h.startTargets(ctx, "main", opts, true)
	if err != nil {
		return err
	}
	defer stopAll()
	h.logf("warm-up: pgbench -S -c %d -T 1 against each target (not recorded)", poolSize)
	for _, t := range targets {
		spec := pgbenchSpec{section: "warmup", protocol: "simple", clients: poolSize, jobs: h.jobs(poolSize), duration: time.Second, auth: opts.authType}
		if err := h.record(ctx, spec, t, 0, "main"); err != nil {
			return err
		}
	}
	for _, proto := range cfg.protocols {
		for _, clients := range cfg.clients {
			spec := pgbenchSpec{section: "select", protocol: proto, clients: clients, jobs: h.jobs(clients),
				duration: cfg.duration, auth: opts.authType, log: true}
			for round := 1; round <= cfg.rounds; round++ {
				for _, t := range targets {
					if t.pooler == nil && clients > cfg.directMax {
						if round == 1 {
							h.res.Skipped = append(h.res.Skipped, fmt.Sprintf("direct at %d clients (-direct-max %d): PostgreSQL would need a backend per client", clients, cfg.directMax))
						}
						continue
					}
					if err := h.record(ctx, spec, t, round, "main"); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// stormSection runs pgbench -S -C (a new connection per transaction) for
// each sign-in kind and TLS setting, with freshly started poolers. The
// Entra-token storm runs pgwarden only: auth_type plain as in the
// plain-password storm, plus [entra] with the harness's dev IdP, and the
// token as PGPASSWORD.
func (h *harness) stormSection(ctx context.Context) error {
	cfg := h.cfg
	for _, auth := range cfg.stormAuths {
		for _, tls := range cfg.stormTLS {
			opts := iniOptions{authType: auth, tls: tls}
			if auth == "entra" {
				if h.entra == nil {
					break // the dev IdP did not start (a problem is recorded)
				}
				opts = iniOptions{authType: "plain", tls: tls, entra: h.entra}
			}
			label := stormLabel(auth, tls)
			// PostgreSQL itself signs in with SCRAM only; its figure is
			// given once, with the SCRAM poolers.
			withDirect := auth == "scram-sha-256"
			targets, stopAll, err := h.startTargets(ctx, label, opts, withDirect)
			if err != nil {
				return err
			}
			spec := pgbenchSpec{section: "storm", protocol: "simple", clients: cfg.stormClients, jobs: h.jobs(cfg.stormClients),
				duration: cfg.stormDuration, connect: true, tls: tls, auth: auth, password: opts.password()}
			for round := 1; round <= cfg.rounds; round++ {
				for _, t := range targets {
					if err := h.record(ctx, spec, t, round, label); err != nil {
						stopAll()
						return err
					}
				}
			}
			stopAll()
		}
	}
	return nil
}

// idleSection measures resident memory per idle client for each pooler.
func (h *harness) idleSection(ctx context.Context) error {
	tlsModes := []bool{false}
	if h.cfg.idleTLS {
		tlsModes = append(tlsModes, true)
	}
	for _, tls := range tlsModes {
		for _, k := range h.kinds {
			if k.selectOnly {
				continue
			}
			opts := iniOptions{authType: "scram-sha-256", tls: tls}
			h.logf("idle: %d clients to %s (%s)", h.cfg.idleN, k.name, opts)
			r, err := h.measureIdle(ctx, k, h.cfg.idleN, opts)
			if err != nil {
				return err
			}
			h.res.Idle = append(h.res.Idle, r)
			h.logf("  idle %-18s tls=%-5v %d/%d open in %.1fs: RSS %d -> %d KiB, %.0f bytes per client",
				r.Target, r.TLS, r.Opened, r.Wanted, r.SignInSeconds, r.RSSBeforeKiB, r.RSSAfterKiB, r.PerClientBytes)
			if r.Failed > 0 {
				h.problem("idle %s: %d of %d sign-ins failed: %s", k.name, r.Failed, r.Wanted, strings.Join(r.Errors, " / "))
			}
		}
	}
	return nil
}
