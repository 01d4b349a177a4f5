// Command fuzzrun runs every Go fuzz target of the module, one after the
// other, for a fixed time each, and reports per target what the fuzzing
// engine did: executions, new interesting inputs, the corpus size, and the
// failing input if one was found. `make fuzz` and `make fuzz-short` run it.
//
//	go run ./internal/fuzzrun [-fuzztime 10m] [-parallel 1] [-json file] [-run regexp]
//
// Targets are found by reading the module's _test.go files (func FuzzXxx(f
// *testing.F)), so nothing has to be listed by hand. A target that finds a
// failing input stops there, as `go test -fuzz` does; the input is saved
// under the package's testdata/fuzz/FuzzXxx by the engine, and fuzzrun
// exits 1 after the remaining targets ran. The JSON report (-json, or
// $FUZZ_JSON) is meant for tools: the reliability scorecard reads it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Report is the JSON document fuzzrun writes.
type Report struct {
	Started  time.Time `json:"started"`
	FuzzTime string    `json:"fuzztime"`
	Parallel int       `json:"parallel"`
	// Jobs is how many targets were fuzzed at the same time.
	Jobs      int      `json:"jobs"`
	GoVersion string   `json:"go_version"`
	OS        string   `json:"os"`
	Arch      string   `json:"arch"`
	CPUs      int      `json:"cpus"`
	CPUModel  string   `json:"cpu_model,omitempty"`
	Commit    string   `json:"commit,omitempty"`
	Targets   []Result `json:"targets"`
	// Passed is true when no target failed.
	Passed bool `json:"passed"`
}

// Result is one target's run.
type Result struct {
	Package string `json:"package"`
	Target  string `json:"target"`
	// Status is "pass", "fail" (a failing input was found, or a seed
	// failed) or "error" (the run did not get to fuzzing).
	Status string `json:"status"`
	// Seconds is the wall time of the go test run, build included;
	// FuzzSeconds the fuzzing engine's last elapsed figure.
	Seconds     float64 `json:"seconds"`
	FuzzSeconds float64 `json:"fuzz_seconds"`
	Execs       int64   `json:"execs"`
	ExecsPerSec float64 `json:"execs_per_sec"`
	// NewInteresting is the number of inputs that widened coverage in
	// this run; Corpus the corpus size at the end (seeds, testdata and
	// the cache included); Baseline the inputs coverage was gathered
	// from at the start.
	NewInteresting int `json:"new_interesting"`
	Corpus         int `json:"corpus"`
	Baseline       int `json:"baseline"`
	// SeedFiles are the files in testdata/fuzz/<Target>.
	SeedFiles int `json:"seed_files"`
	// Crashers is 1 when a failing input was found (the engine stops at
	// the first), FailingInput where it was written and Failure the
	// engine's explanation.
	Crashers     int    `json:"crashers"`
	FailingInput string `json:"failing_input,omitempty"`
	Failure      string `json:"failure,omitempty"`
}

func main() {
	fuzztime := flag.String("fuzztime", "10m", "how long each target is fuzzed (go test -fuzztime)")
	parallel := flag.Int("parallel", 1, "fuzzing workers per target (go test -parallel)")
	minimize := flag.String("fuzzminimizetime", "", "go test -fuzzminimizetime, when set")
	jsonPath := flag.String("json", os.Getenv("FUZZ_JSON"), "write the report as JSON to this file (default $FUZZ_JSON)")
	run := flag.String("run", "", "only the targets whose name or package/name match this regexp")
	jobs := flag.Int("jobs", 1, "targets fuzzed at the same time (each for -fuzztime, with -parallel workers)")
	dir := flag.String("C", ".", "the module's root")
	flag.Parse()

	var filter *regexp.Regexp
	if *run != "" {
		var err error
		if filter, err = regexp.Compile(*run); err != nil {
			fatalf("-run: %v", err)
		}
	}
	targets, err := findTargets(*dir)
	if err != nil {
		fatalf("%v", err)
	}
	rep := Report{
		Started: time.Now().UTC().Truncate(time.Second), FuzzTime: *fuzztime, Parallel: *parallel,
		GoVersion: goVersion(*dir), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		CPUModel: cpuModel(), Commit: gitCommit(*dir), Passed: true,
	}
	var chosen []Result
	for _, t := range targets {
		if filter == nil || filter.MatchString(t.Target) || filter.MatchString(t.Package+"/"+t.Target) {
			chosen = append(chosen, t)
		}
	}
	rep.Jobs = max(1, *jobs)
	results := make([]Result, len(chosen))
	var printMu sync.Mutex
	sem := make(chan struct{}, rep.Jobs)
	var wg sync.WaitGroup
	for i, t := range chosen {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			print := func(format string, args ...any) {
				printMu.Lock()
				defer printMu.Unlock()
				if rep.Jobs > 1 && strings.HasPrefix(format, "    ") {
					format = "    [" + t.Target + "] " + format[4:]
				}
				fmt.Printf(format, args...)
			}
			print("=== %s %s (%s, %d worker(s))\n", t.Package, t.Target, *fuzztime, *parallel)
			res := runTarget(*dir, t, *fuzztime, *parallel, *minimize, print)
			results[i] = res
			print("--- %s %s: %s, %d execs (%.0f/s), %d new interesting, corpus %d%s\n",
				res.Package, res.Target, res.Status, res.Execs, res.ExecsPerSec, res.NewInteresting, res.Corpus, crashNote(res))
		}()
	}
	wg.Wait()
	for _, res := range results {
		rep.Targets = append(rep.Targets, res)
		if res.Status != "pass" {
			rep.Passed = false
		}
	}
	if len(rep.Targets) == 0 {
		fatalf("no fuzz targets matched")
	}
	printTable(os.Stdout, rep)
	if *jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.MkdirAll(filepath.Dir(*jsonPath), 0o755); err != nil {
			fatalf("%v", err)
		}
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			fatalf("%v", err)
		}
		fmt.Printf("report written to %s\n", *jsonPath)
	}
	if !rep.Passed {
		os.Exit(1)
	}
}

func crashNote(r Result) string {
	switch {
	case r.FailingInput != "":
		return ", FAILING INPUT " + r.FailingInput
	case r.Status != "pass":
		return ", " + strings.ToUpper(r.Status) + ": " + r.Failure
	}
	return ""
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fuzzrun: "+format+"\n", args...)
	os.Exit(2)
}

// findTargets lists the fuzz targets of the module rooted at root, by
// package and name, in a stable order. Nested modules are skipped.
func findTargets(root string) ([]Result, error) {
	var out []Result
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := "./" + filepath.ToSlash(rel)
		if rel == "." {
			pkg = "."
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Fuzz") || !isFuzzSignature(fn) {
				continue
			}
			out = append(out, Result{Package: pkg, Target: fn.Name.Name})
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Package != out[j].Package {
			return out[i].Package < out[j].Package
		}
		return out[i].Target < out[j].Target
	})
	return out, err
}

// isFuzzSignature: func FuzzXxx(f *testing.F).
func isFuzzSignature(fn *ast.FuncDecl) bool {
	p := fn.Type.Params.List
	if len(p) != 1 || len(p[0].Names) > 1 || fn.Type.Results != nil {
		return false
	}
	star, ok := p[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := star.X.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "F"
}

var (
	reProgress = regexp.MustCompile(`^fuzz: elapsed: (\S+), execs: (\d+) \((\d+)/sec\), new interesting: (\d+) \(total: (\d+)\)`)
	reBaseline = regexp.MustCompile(`^fuzz: elapsed: \S+, gathering baseline coverage: \d+/(\d+) completed`)
	reFailing  = regexp.MustCompile(`Failing input written to (\S+)`)
)

// runTarget runs one target with go test -fuzz and reads its progress
// lines, passing the output through.
func runTarget(root string, t Result, fuzztime string, parallel int, minimize string, print func(string, ...any)) Result {
	res := t
	res.SeedFiles = countFiles(filepath.Join(root, t.Package, "testdata", "fuzz", t.Target))
	args := []string{"test", "-run", "^$", "-fuzz", "^" + t.Target + "$", "-fuzztime", fuzztime, "-parallel", strconv.Itoa(parallel)}
	if minimize != "" {
		args = append(args, "-fuzzminimizetime", minimize)
	}
	args = append(args, t.Package)
	cmd := exec.CommandContext(context.Background(), "go", args...)
	cmd.Dir = root
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.Status, res.Failure = "error", err.Error()
		return res
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		pw.Close()
	}()
	var p outputParser
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		print("    %s\n", line)
		p.line(&res, line)
	}
	err := <-done
	res.Seconds = math.Round(time.Since(start).Seconds()*1000) / 1000
	p.finish(&res, err)
	return res
}

// outputParser reads go test -fuzz output into a Result.
type outputParser struct {
	fuzzing bool     // a progress line was seen
	failure []string // lines that explain a failure
	// deadline: the engine reported "context deadline exceeded", which
	// Go's fuzzing does when -fuzztime ends while a slow input is still
	// running in a worker; with no failing input written, that is the
	// end of the run, not a finding.
	deadline bool
}

func (p *outputParser) line(res *Result, line string) {
	trimmed := strings.TrimSpace(line)
	if trimmed == "context deadline exceeded" {
		p.deadline = true
	}
	switch m := reProgress.FindStringSubmatch(trimmed); {
	case m != nil:
		p.fuzzing = true
		if d, err := time.ParseDuration(m[1]); err == nil {
			res.FuzzSeconds = d.Seconds()
		}
		res.Execs, _ = strconv.ParseInt(m[2], 10, 64)
		res.NewInteresting, _ = strconv.Atoi(m[4])
		res.Corpus, _ = strconv.Atoi(m[5])
	case reBaseline.MatchString(trimmed):
		res.Baseline, _ = strconv.Atoi(reBaseline.FindStringSubmatch(trimmed)[1])
	}
	if m := reFailing.FindStringSubmatch(trimmed); m != nil {
		res.FailingInput = path.Join(res.Package, m[1])
		res.Crashers = 1
	}
	if strings.HasPrefix(trimmed, "fuzzing process") || strings.Contains(trimmed, ".go:") || strings.HasPrefix(trimmed, "panic:") {
		p.failure = append(p.failure, trimmed)
	}
}

// finish sets the status from the go test exit error.
func (p *outputParser) finish(res *Result, err error) {
	if res.FuzzSeconds > 0 {
		res.ExecsPerSec = math.Round(float64(res.Execs)/res.FuzzSeconds*10) / 10
	}
	if err != nil && p.deadline && res.Crashers == 0 && p.fuzzing {
		res.Status = "pass"
		res.Failure = "the fuzzing engine stopped at -fuzztime while an input was running (reported as context deadline exceeded; no failing input)"
		return
	}
	switch {
	case err == nil:
		res.Status = "pass"
	case res.Crashers > 0 || p.fuzzing:
		res.Status = "fail"
	default:
		res.Status = "error"
	}
	if err != nil {
		if len(p.failure) > 0 {
			res.Failure = strings.Join(p.failure[:min(len(p.failure), 5)], "; ")
		} else {
			res.Failure = err.Error()
		}
	}
}

func countFiles(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			n++
		}
	}
	return n
}

func printTable(w io.Writer, rep Report) {
	fmt.Fprintf(w, "\nfuzzing, %s per target, %d worker(s) each, %d target(s) at a time, %s, %d CPUs\n", rep.FuzzTime, rep.Parallel, rep.Jobs, rep.GoVersion, rep.CPUs)
	fmt.Fprintf(w, "%-18s %-20s %-6s %10s %9s %7s %7s %s\n", "package", "target", "status", "execs", "execs/s", "new", "corpus", "failing input")
	for _, r := range rep.Targets {
		fmt.Fprintf(w, "%-18s %-20s %-6s %10d %9.0f %7d %7d %s\n", r.Package, r.Target, r.Status, r.Execs, r.ExecsPerSec, r.NewInteresting, r.Corpus, r.FailingInput)
	}
}

func goVersion(dir string) string {
	cmd := exec.Command("go", "env", "GOVERSION")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(out))
}

func gitCommit(dir string) string {
	cmd := exec.Command("git", "rev-parse", "--short=12", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// cpuModel is the processor's name on Linux ("" elsewhere).
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
