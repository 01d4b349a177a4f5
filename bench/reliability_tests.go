package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// testGroup is a set of the project's own tests that the scorecard runs
// and reports: fault injection, identity-provider faults, throttling,
// security checks. Tests may print result lines, `KIND-RESULT {json}`
// (KIND is FAULT, IDP, ...), whose fields the report shows.
type testGroup struct {
	Name  string
	About string
	Pkgs  []string
	Run   string // go test -run
	Race  bool
}

var reliabilityTestGroups = []testGroup{
	{Name: "Faults between pgwarden and PostgreSQL, and from clients", About: "a fault proxy on the server leg, real PostgreSQL restarts and limits, misbehaving raw-socket clients; each test checks goroutines, descriptors and server connections return to baseline",
		Pkgs: []string{"./pooler/...", "./internal/..."}, Run: "TestFault"},
	{Name: "Identity provider faults", About: "the development IdP down (at start, mid-run, for an hour of simulated time), slow, answering garbage or 50 MiB documents, rotating and withdrawing keys, an unknown-kid storm; Graph down during a group-overage sign-in",
		Pkgs: []string{"./authn/", "./cmd/pgwarden/", "./pooler/"}, Run: "^(TestKeyRotation|TestUnknownKIDStorm|TestRotationStorm|TestUnknownKIDWaitIsBounded|TestIdPDownAtStartWithCacheFile|TestIdPDownMidRun|TestBadKeySetKeepsKeys|TestGraphUnavailable|TestIdPSlow|TestIdPGarbage|TestIdPHugeDocument|TestKeyWithdrawn|TestIdPDownForAnHour|TestEntraIdPDownAtStart|TestEntraGraphDownDuringOverage)$"},
	{Name: "Sign-in throttling", About: "failed sign-ins per address and per role; the throttle in SHOW, metrics and the audit log; the IdP shielded from bad-token storms",
		Pkgs: []string{"./pooler/...", "./cmd/..."}, Run: "Throttl|TestTokenBucket|TestAddressKey"},
	{Name: "Security checks", About: "secrets and tokens never in logs, audit lines, errors, console output or metrics (the real binary at -v -v); console rights of non-admin and stats users; constant-time comparison of secrets; TLS 1.2+ and no renegotiation; certificates reloaded on RELOAD",
		Pkgs: []string{"./authn/", "./cmd/pgwarden/", "./pooler/"}, Run: "^(TestSecretsNeverShown|TestConsoleRights|TestSecretsComparedInConstantTime|TestTLSDefaults|TestTLSCertificateReload)$"},
	{Name: "Hostile input (deterministic)", About: "length fields far beyond the limits (1 GiB headers) in startup packets, client messages and server messages, refused before any buffer grows",
		Pkgs: []string{"./..."}, Run: "TestHugeLength|TestLengthLimit|TestOversize|TestGiB"},
}

// testResult is one test's outcome.
type testResult struct {
	Name    string            `json:"name"`
	Package string            `json:"package"`
	Passed  bool              `json:"passed"`
	Skipped bool              `json:"skipped,omitempty"`
	Seconds float64           `json:"seconds"`
	Results []json.RawMessage `json:"results,omitempty"` // its KIND-RESULT lines
}

type testGroupResult struct {
	Name    string       `json:"name"`
	About   string       `json:"about"`
	Command string       `json:"command"`
	Tests   []testResult `json:"tests"`
	Output  string       `json:"output_tail,omitempty"` // when go test failed
}

var (
	resultLine = regexp.MustCompile(`\b([A-Z]+)-RESULT (\{.*\})\s*$`)
	testLine   = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(([0-9.]+)s\)`)
	pkgLine    = regexp.MustCompile(`^(ok|FAIL|---)\s+(\S+)\s`)
	runLine    = regexp.MustCompile(`^=== (RUN|CONT|NAME)\s+(\S+)`)
)

// runReliabilityTests runs every group with go test -v and collects the
// outcomes and result lines.
func (h *harness) runReliabilityTests(ctx context.Context, problem func(string, ...any)) []testGroupResult {
	var out []testGroupResult
	for _, g := range reliabilityTestGroups {
		args := []string{"test", "-count=1", "-v", "-timeout", "30m", "-run", g.Run}
		if g.Race {
			args = append(args, "-race")
		}
		args = append(args, g.Pkgs...)
		h.logf("tests: go %s", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, goTool(), args...)
		cmd.Dir = h.root
		cmd.Env = append(os.Environ(), "PGWARDEN_RELIABILITY=1")
		raw, err := cmd.CombinedOutput()
		gr := testGroupResult{Name: g.Name, About: g.About, Command: "go " + strings.Join(args, " ")}
		gr.Tests = parseTestOutput(raw)
		if err != nil {
			gr.Output = fileTailBytes(raw, 40)
			problem("%s: go test failed: %v", g.Name, err)
		}
		if len(gr.Tests) == 0 {
			problem("%s: no test matched %q", g.Name, g.Run)
		}
		out = append(out, gr)
	}
	return out
}

// parseTestOutput reads go test -v output: each test's verdict and time,
// and the result lines it logged.
func parseTestOutput(raw []byte) []testResult {
	byName := map[string]*testResult{}
	var order []string
	cur := ""
	get := func(name string) *testResult {
		if r, ok := byName[name]; ok {
			return r
		}
		r := &testResult{Name: name}
		byName[name] = r
		order = append(order, name)
		return r
	}
	var pending []*testResult // tests whose package line has not come yet
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := runLine.FindStringSubmatch(line); m != nil {
			cur = m[2]
			get(cur)
			continue
		}
		if m := testLine.FindStringSubmatch(line); m != nil {
			r := get(m[2])
			r.Passed = m[1] != "FAIL"
			r.Skipped = m[1] == "SKIP"
			r.Seconds, _ = strconv.ParseFloat(m[3], 64)
			pending = append(pending, r)
			continue
		}
		if m := resultLine.FindStringSubmatch(line); m != nil && cur != "" && json.Valid([]byte(m[2])) {
			r := get(cur)
			r.Results = append(r.Results, json.RawMessage(m[2]))
			continue
		}
		if m := pkgLine.FindStringSubmatch(line); m != nil && m[1] != "---" {
			for _, r := range pending {
				r.Package = m[2]
			}
			pending = nil
		}
	}
	var out []testResult
	for _, n := range order {
		r := byName[n]
		if strings.Contains(n, "/") && len(r.Results) == 0 {
			continue // subtests are reported through their parent unless they carry results
		}
		out = append(out, *r)
	}
	return out
}

func fileTailBytes(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// fuzzResult is one fuzz target's run, as internal/fuzzrun reports it.
type fuzzResult struct {
	Package        string  `json:"package"`
	Target         string  `json:"target"`
	Status         string  `json:"status"`
	FuzzSeconds    float64 `json:"fuzz_seconds"`
	Execs          int64   `json:"execs"`
	ExecsPerSec    float64 `json:"execs_per_sec"`
	NewInteresting int64   `json:"new_interesting"`
	Corpus         int64   `json:"corpus"`
	SeedFiles      int64   `json:"seed_files"`
	Crashers       int64   `json:"crashers"`
	FailingInput   string  `json:"failing_input,omitempty"`
	Failure        string  `json:"failure,omitempty"`
}

// runFuzzers runs every fuzz target of the module for d, one after
// another with one worker, through internal/fuzzrun (what make fuzz runs),
// and reads its JSON report.
func (h *harness) runFuzzers(ctx context.Context, d time.Duration, jobs int, problem func(string, ...any)) []fuzzResult {
	out, err := os.CreateTemp("", "pgwarden-fuzz-*.json")
	if err != nil {
		problem("fuzz: %v", err)
		return nil
	}
	out.Close()
	defer os.Remove(out.Name())
	args := []string{"run", "./internal/fuzzrun", "-fuzztime", d.String(), "-parallel", "1", "-jobs", strconv.Itoa(jobs), "-json", out.Name()}
	h.logf("fuzz: go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = h.root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		problem("fuzz: %v (see the failing targets below)", err)
	}
	raw, err := os.ReadFile(out.Name())
	if err != nil {
		problem("fuzz report: %v", err)
		return nil
	}
	var rep struct {
		Targets []fuzzResult `json:"targets"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		problem("fuzz report: %v", err)
		return nil
	}
	return rep.Targets
}

// reliabilityMarkdown is RELIABILITY.md.
func reliabilityMarkdown(res *reliabilityResults, jsonRel string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# pgwarden reliability scorecard\n\n")
	w("Written by `go run ./bench reliability %s` (%s mode) on %s; the run took %s. Raw figures: [`%s`](%s).\n\n",
		strings.Join(res.Args[min(1, len(res.Args)):], " "), res.Mode, res.Started.Format("2006-01-02 15:04 UTC"),
		res.Finished.Sub(res.Started).Round(time.Second), jsonRel, jsonRel)
	m := res.Machine
	w("Machine: %d cores (%s), %s memory, kernel %s, %s", m.Cores, m.CPUModel, m.MemTotal, m.Kernel, m.GoVersion)
	if m.Postgres != "" {
		w(", %s", m.Postgres)
	}
	w("; pgwarden %s.\n\n", m.Commit)
	if len(res.Problems) > 0 {
		w("## Problems in this run\n\n")
		for _, p := range res.Problems {
			w("- %s\n", p)
		}
		w("\n")
	}
	if s := res.Soak; s != nil {
		w("## Soak: %d concurrent clients, transaction mode, pool size %d, %s\n\n", s.Clients, poolSize, time.Duration(s.DurationS*float64(time.Second)).Round(time.Second))
		w("Every client runs one select-only transaction (`SELECT abalance FROM pgbench_accounts WHERE aid = …`, simple protocol) every %d ms, start times spread over the period; pgwarden is sampled every 5 s (resident memory from /proc, goroutines and open descriptors from its `/metrics`). Trends are least-squares lines over the last 80%% of the load.\n\n", s.PeriodMs)
		w("| | |\n|---|---|\n")
		w("| clients signed in | %d of %d (%.1f s; %d failed) |\n", s.Opened, s.Clients, s.SignInSeconds, s.SignInFailed)
		w("| transactions | %d (%.0f/s) |\n", s.Queries, s.QPS)
		w("| errors | **%d** |\n", s.Errors)
		w("| latency p50 / p99 / max | %.0f µs / %.0f µs / %.1f ms |\n", s.P50us, s.P99us, s.MaxUs/1000)
		w("| pgwarden CPU per transaction | %.1f µs |\n", s.CPUPerQueryUs)
		w("| resident memory per idle client (before the load) | %.2f KiB |\n", s.IdleBytesPerClient/1024)
		w("| resident memory: mean, slope, growth over the window | %.1f MiB, %+.1f KiB/min, %+.2f%% |\n", s.RSS.Mean/1024, s.RSS.SlopePerMinute, s.RSS.GrowthPercent)
		w("| goroutines: mean, slope, growth | %.0f, %+.1f/min, %+.2f%% |\n", s.Goroutines.Mean, s.Goroutines.SlopePerMinute, s.Goroutines.GrowthPercent)
		w("| open descriptors: mean, slope, growth | %.0f, %+.1f/min, %+.2f%% |\n", s.FDs.Mean, s.FDs.SlopePerMinute, s.FDs.GrowthPercent)
		w("| server connections at the end | %d (pool size %d) |\n", s.ServerConns, poolSize)
		w("| goroutines before / after (clients closed) | %.0f / %.0f |\n", s.BaselineGoroutines, s.AfterGoroutines)
		w("| descriptors before / after | %.0f / %.0f |\n", s.BaselineFDs, s.AfterFDs)
		if len(s.ErrorSamples) > 0 {
			w("\nErrors seen: %s\n", strings.Join(s.ErrorSamples, "; "))
		}
		w("\n")
	}
	if s := res.SignIn; s != nil {
		w("## Sign-in storm: %d new connections per second, TLS, Entra tokens, %.0f s\n\n", s.Rate, s.DurationS)
		w("Each connection: a TLS handshake (%s; RSA-2048 would need more CPU than the machine has at this rate), a sign-in with an Entra access token (validated once, then from pgwarden's validated-token cache), and a Terminate. Connections are started on a fixed schedule (open loop), at most 512 in flight.\n\n", s.Cert)
		w("| | |\n|---|---|\n")
		w("| attempts | %d (%d not started: 512 in flight) |\n", s.Attempts, s.Skipped)
		w("| signed in | %d (%.0f/s) |\n", s.OK, s.AchievedRate)
		w("| errors | **%d** |\n", s.Errors)
		w("| connect+sign-in time p50 / p99 | %.1f ms / %.1f ms |\n", s.P50ms, s.P99ms)
		w("| pgwarden CPU per sign-in | %.0f µs (%.2f cores) |\n", s.CPUPerSignInUs, s.PoolerCores)
		if len(s.ErrorSamples) > 0 {
			w("\nErrors seen: %s\n", strings.Join(s.ErrorSamples, "; "))
		}
		w("\n")
	}
	for _, g := range res.Tests {
		w("## %s\n\n%s. Command: `%s`.\n\n", g.Name, g.About, g.Command)
		w("| test | result | time | figures |\n|---|---|---:|---|\n")
		for _, t := range g.Tests {
			verdict := "pass"
			switch {
			case t.Skipped:
				verdict = "skipped"
			case !t.Passed:
				verdict = "**FAIL**"
			}
			var figs []string
			for _, r := range t.Results {
				figs = append(figs, renderResult(r))
			}
			w("| %s | %s | %.1f s | %s |\n", t.Name, verdict, t.Seconds, strings.Join(figs, "<br>"))
		}
		if g.Output != "" {
			w("\n```\n%s\n```\n", g.Output)
		}
		w("\n")
	}
	if len(res.Fuzz) > 0 {
		w("## Fuzzing\n\nGo native fuzzing, one worker per target (`-parallel 1`), %d target(s) at a time on %d cores, each target for the time shown; corpora are committed under each package's `testdata/fuzz`.\n\n", max(1, res.FuzzJobs), res.Machine.Cores)
		w("| package | target | fuzzing time | execs (per s) | new interesting / corpus (seeds) | result |\n|---|---|---:|---:|---:|---|\n")
		for _, f := range res.Fuzz {
			verdict := f.Status
			if f.Crashers > 0 || f.FailingInput != "" {
				verdict = "**" + f.Status + "**: " + f.FailingInput
			}
			w("| %s | %s | %.0f s | %d (%.0f) | %d / %d (%d) | %s |\n", f.Package, f.Target, f.FuzzSeconds, f.Execs, f.ExecsPerSec, f.NewInteresting, f.Corpus, f.SeedFiles, verdict)
		}
		w("\n")
	}
	return b.String()
}

// renderResult shows one KIND-RESULT object in a table cell: a fault
// scenario as its cases (what each client saw), recovery and leak check;
// anything else as its fields, key=value.
func renderResult(raw json.RawMessage) string {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return "`" + string(raw) + "`"
	}
	esc := func(s string) string { return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s) }
	num := func(v any) string {
		switch x := v.(type) {
		case float64:
			if x == float64(int64(x)) {
				return strconv.FormatInt(int64(x), 10)
			}
			return strconv.FormatFloat(x, 'f', 1, 64)
		case string:
			return esc(x)
		case bool:
			return strconv.FormatBool(x)
		}
		b, _ := json.Marshal(v)
		return esc(string(b))
	}
	if f, ok := m["fault"].(string); ok {
		parts := []string{"**" + esc(f) + "**"}
		if cl, ok := m["clients"].([]any); ok {
			for _, c := range cl {
				cm, _ := c.(map[string]any)
				state := num(cm["message"])
				if sq, _ := cm["sqlstate"].(string); sq != "" {
					state = sq + " " + state
				}
				parts = append(parts, fmt.Sprintf("%s: %s (%s ms)", num(cm["case"]), state, num(cm["elapsed_ms"])))
			}
		}
		if r, ok := m["recovery_ms"]; ok {
			parts = append(parts, "recovery "+num(r)+" ms")
		}
		if l, ok := m["leak"].(map[string]any); ok {
			leak := "leak check: " + num(l["ok"])
			if g, ok := l["goroutines_base"]; ok {
				leak += fmt.Sprintf(" (goroutines %s→%s, fds %s→%s, server conns %s→%s)", num(g), num(l["goroutines_end"]), num(l["fds_base"]), num(l["fds_end"]), num(l["server_conns_base"]), num(l["server_conns_end"]))
			}
			parts = append(parts, leak)
		}
		return strings.Join(parts, "<br>")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "test" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var kv []string
	for _, k := range keys {
		kv = append(kv, k+"="+num(m[k]))
	}
	return strings.Join(kv, ", ")
}
