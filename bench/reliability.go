package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// The reliability run (`go run ./bench reliability`, make reliability):
// the load parts of the reliability scorecard, run on this machine, and
// RELIABILITY.md written from them and from the fault, identity-provider
// and security tests and the fuzzers (reliability_tests.go).

type reliabilityConfig struct {
	quick         bool
	out           string
	sections      []string
	soakClients   int
	soakDuration  time.Duration
	soakPeriod    time.Duration
	stormRate     int
	stormDuration time.Duration
	fuzzTime      time.Duration
	fuzzJobs      int
	check         bool
	pgwardenBin   string
	cpuProfile    string
}

// reliabilityResults is the raw record of a run, written as JSON beside
// the report.
type reliabilityResults struct {
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Mode     string            `json:"mode"`
	Args     []string          `json:"args"`
	Machine  machineInfo       `json:"machine"`
	Soak     *soakResult       `json:"soak,omitempty"`
	SignIn   *stormResult      `json:"sign_in_storm,omitempty"`
	Tests    []testGroupResult `json:"tests,omitempty"`
	Fuzz     []fuzzResult      `json:"fuzz,omitempty"`
	FuzzJobs int               `json:"fuzz_jobs,omitempty"`
	Problems []string          `json:"problems,omitempty"`
}

var reliabilitySections = []string{"tests", "fuzz", "soak", "signin"}

func parseReliabilityFlags(args []string) (*reliabilityConfig, error) {
	fs := flag.NewFlagSet("bench reliability", flag.ContinueOnError)
	c := &reliabilityConfig{}
	var sections string
	fs.BoolVar(&c.quick, "quick", false, "quick mode (a few minutes): 1,000 soak clients for 30 s, 200 sign-ins/s for 10 s, fuzzing 10 s a target")
	fs.StringVar(&c.out, "out", "", "report (default RELIABILITY.md at the module root); the raw JSON goes to bench/results/")
	fs.StringVar(&sections, "sections", strings.Join(reliabilitySections, ","), "sections to run")
	fs.IntVar(&c.soakClients, "soak-clients", 10000, "concurrent clients of the soak")
	fs.DurationVar(&c.soakDuration, "soak-duration", 5*time.Minute, "length of the soak's load")
	fs.DurationVar(&c.soakPeriod, "soak-period", 2*time.Second, "each soak client runs one transaction per period")
	fs.IntVar(&c.stormRate, "storm-rate", 1000, "new TLS connections per second signing in with an Entra token")
	fs.DurationVar(&c.stormDuration, "storm-duration", time.Minute, "length of the sign-in storm")
	fs.DurationVar(&c.fuzzTime, "fuzztime", 10*time.Minute, "fuzzing time per target")
	fs.BoolVar(&c.check, "check", false, "exit 1 unless every part that ran passed: no problem, no failed test or fuzz target, no error or failed sign-in in the soak and the storm (for CI)")
	fs.IntVar(&c.fuzzJobs, "fuzz-jobs", runtime.NumCPU(), "fuzz targets run at the same time, one worker each")
	fs.StringVar(&c.pgwardenBin, "pgwarden", "", "pgwarden binary (default: go build ./cmd/pgwarden)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of pgwarden during the soak to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		for name, f := range map[string]func(){
			"soak-clients":   func() { c.soakClients = 1000 },
			"soak-duration":  func() { c.soakDuration = 30 * time.Second },
			"storm-rate":     func() { c.stormRate = 200 },
			"storm-duration": func() { c.stormDuration = 10 * time.Second },
			"fuzztime":       func() { c.fuzzTime = 10 * time.Second },
		} {
			if !set[name] {
				f()
			}
		}
	}
	c.sections = splitList(sections)
	for _, s := range c.sections {
		if !slices.Contains(reliabilitySections, s) {
			return nil, fmt.Errorf("-sections: unknown %q", s)
		}
	}
	if c.soakClients < 1 || c.stormRate < 1 || c.fuzzJobs < 1 {
		return nil, errors.New("-soak-clients, -storm-rate and -fuzz-jobs must be positive")
	}
	return c, nil
}

func runReliability(args []string) int {
	rc, err := parseReliabilityFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench reliability:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer killAll()
	h := &harness{cfg: &config{pgwardenBin: rc.pgwardenBin, sections: []string{}}, started: time.Now()}
	res, err := h.reliability(ctx, rc)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench reliability: interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench reliability:", err)
		return 1
	}
	for _, p := range res.Problems {
		fmt.Fprintln(os.Stderr, "problem:", p)
	}
	if rc.check {
		if fails := res.failures(); len(fails) > 0 {
			for _, f := range fails {
				fmt.Fprintln(os.Stderr, "FAILED:", f)
			}
			return 1
		}
		fmt.Fprintln(os.Stderr, "bench reliability: every part that ran passed")
	}
	return 0
}

// failures lists what makes the run fail a -check: its problems, failed
// tests and fuzz targets, errors and failed sign-ins.
func (res *reliabilityResults) failures() []string {
	out := append([]string(nil), res.Problems...)
	for _, g := range res.Tests {
		for _, t := range g.Tests {
			if !t.Passed && !t.Skipped {
				out = append(out, fmt.Sprintf("test %s (%s) failed", t.Name, g.Name))
			}
		}
	}
	for _, f := range res.Fuzz {
		if f.Status != "pass" {
			out = append(out, fmt.Sprintf("fuzz target %s %s: %s %s", f.Package, f.Target, f.Status, f.Failure))
		}
	}
	if s := res.Soak; s != nil {
		if s.SignInFailed > 0 || s.Opened < s.Clients {
			out = append(out, fmt.Sprintf("soak: %d of %d clients signed in (%d failed)", s.Opened, s.Clients, s.SignInFailed))
		}
		if s.Errors > 0 {
			out = append(out, fmt.Sprintf("soak: %d errors (%s)", s.Errors, strings.Join(s.ErrorSamples, "; ")))
		}
	}
	if s := res.SignIn; s != nil && s.Errors > 0 {
		out = append(out, fmt.Sprintf("sign-in storm: %d errors (%s)", s.Errors, strings.Join(s.ErrorSamples, "; ")))
	}
	return out
}

func (h *harness) reliability(ctx context.Context, rc *reliabilityConfig) (*reliabilityResults, error) {
	var err error
	if h.root, err = moduleRoot(); err != nil {
		return nil, err
	}
	if rc.out == "" {
		rc.out = filepath.Join(h.root, "RELIABILITY.md")
	}
	mode := "full"
	if rc.quick {
		mode = "quick"
	}
	res := &reliabilityResults{Started: h.started.UTC(), Mode: mode, Args: os.Args[1:]}
	h.res = &results{}
	problem := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		h.logf("PROBLEM: %s", msg)
		res.Problems = append(res.Problems, msg)
	}
	has := func(s string) bool { return slices.Contains(rc.sections, s) }

	if has("tests") {
		res.Tests = h.runReliabilityTests(ctx, problem)
	}
	if has("fuzz") {
		res.Fuzz = h.runFuzzers(ctx, rc.fuzzTime, rc.fuzzJobs, problem)
		res.FuzzJobs = rc.fuzzJobs
	}
	if has("soak") || has("signin") {
		h.maxClientConn = rc.soakClients + 1100
		if lim, err := raiseNoFile(uint64(2*h.maxClientConn + 2048)); err != nil {
			problem("raise RLIMIT_NOFILE: %v", err)
		} else if lim < uint64(h.maxClientConn+200) {
			problem("RLIMIT_NOFILE is %d, too low for %d clients (raise the hard limit, or run as root)", lim, h.maxClientConn)
		}
		if h.ws, err = newWorkspace(); err != nil {
			return nil, err
		}
		defer h.ws.remove()
		if err := h.setupPgwarden(ctx); err != nil {
			return nil, err
		}
		if h.tls, err = h.ws.makeCert(); err != nil {
			return nil, err
		}
		if h.pgbench = pgtest.PgbenchPath(); h.pgbench == "" {
			return nil, errors.New("pgbench not found (Debian: apt-get install postgresql)")
		}
		h.logf("starting PostgreSQL and loading scale %d", scale)
		if h.pg, err = startPostgres(ctx, 2*poolSize+60, h.tls, h.pgbench, h.logf); err != nil {
			return nil, err
		}
		defer h.pg.Stop()
		res.Machine = h.machine(ctx)
		if has("soak") {
			if r, err := h.runSoak(ctx, rc.soakClients, rc.soakPeriod, rc.soakDuration, rc.cpuProfile); err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				problem("soak: %v", err)
			} else {
				res.Soak = r
			}
		}
		if has("signin") {
			h.logf("sign-in storm: %d new TLS connections per second with an Entra token, for %v", rc.stormRate, rc.stormDuration)
			if r, err := h.runSignInStorm(ctx, rc.stormRate, rc.stormDuration); err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				problem("sign-in storm: %v", err)
			} else {
				res.SignIn = r
				h.logf("sign-in storm: %d of %d ok, %d errors, %.0f/s, %.0f µs pgwarden CPU per sign-in", r.OK, r.Attempts, r.Errors, r.AchievedRate, r.CPUPerSignInUs)
			}
		}
	} else {
		res.Machine = h.machine(ctx)
	}
	res.Finished = time.Now().UTC()
	return res, h.writeReliability(rc, res)
}

// setupPgwarden builds pgwarden into the workspace (the reliability run
// needs no PgBouncer).
func (h *harness) setupPgwarden(ctx context.Context) error {
	src := h.cfg.pgwardenBin
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
	h.kinds = []*poolerKind{{name: "pgwarden", label: "pgwarden", binary: bin, isPgwarden: true, version: binaryVersion(bin)}}
	return nil
}

func (h *harness) writeReliability(rc *reliabilityConfig, res *reliabilityResults) error {
	dir := filepath.Join(h.root, "bench", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	jsonPath := filepath.Join(dir, "reliability-"+h.stamp()+".json")
	if err := os.WriteFile(jsonPath, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(rc.out), jsonPath)
	if err != nil {
		rel = jsonPath
	}
	if err := os.WriteFile(rc.out, []byte(reliabilityMarkdown(res, filepath.ToSlash(rel))), 0o644); err != nil {
		return err
	}
	h.logf("wrote %s and %s", rc.out, jsonPath)
	return nil
}
