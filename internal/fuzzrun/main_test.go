package main

import (
	"errors"
	"strings"
	"testing"
)

// TestFindTargets: the module's targets are found by package, and only
// functions of the fuzz signature.
func TestFindTargets(t *testing.T) {
	targets, err := findTargets("../..")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, r := range targets {
		found[r.Package+" "+r.Target] = true
	}
	for _, want := range []string{"./pooler FuzzStartup", "./pooler FuzzPreparedRewrite", "./pooler/config FuzzLoadINI", "./authn FuzzValidate"} {
		if !found[want] {
			t.Errorf("%s not found in %v", want, targets)
		}
	}
}

// TestOutputParser reads go test -fuzz output as go 1.26 prints it.
func TestOutputParser(t *testing.T) {
	pass := `fuzz: elapsed: 0s, gathering baseline coverage: 0/28 completed
fuzz: elapsed: 3s, gathering baseline coverage: 28/28 completed, now fuzzing with 1 workers
fuzz: elapsed: 6s, execs: 6048 (1928/sec), new interesting: 3 (total: 31)
fuzz: elapsed: 1m0s, execs: 140210 (2431/sec), new interesting: 102 (total: 156)
PASS
ok  	github.com/pgwarden/pgwarden/pooler	62.967s`
	r := Result{Package: "./pooler", Target: "FuzzConsole"}
	var p outputParser
	for _, l := range strings.Split(pass, "\n") {
		p.line(&r, l)
	}
	p.finish(&r, nil)
	if r.Status != "pass" || r.Execs != 140210 || r.NewInteresting != 102 || r.Corpus != 156 || r.Baseline != 28 || r.FuzzSeconds != 60 || r.ExecsPerSec != 2336.8 {
		t.Errorf("%+v", r)
	}

	fail := `fuzz: elapsed: 29s, execs: 3707 (1485/sec), new interesting: 0 (total: 28)
--- FAIL: FuzzStartup (29.62s)
    fuzzing process hung or terminated unexpectedly while minimizing: EOF
    Failing input written to testdata/fuzz/FuzzStartup/11676a6d82703f46
    To re-run:
    go test -run=FuzzStartup/11676a6d82703f46
FAIL`
	r = Result{Package: "./pooler", Target: "FuzzStartup"}
	p = outputParser{}
	for _, l := range strings.Split(fail, "\n") {
		p.line(&r, l)
	}
	p.finish(&r, errors.New("exit status 1"))
	if r.Status != "fail" || r.Crashers != 1 || r.FailingInput != "pooler/testdata/fuzz/FuzzStartup/11676a6d82703f46" || r.Failure == "" {
		t.Errorf("%+v", r)
	}

	r = Result{Package: "./pooler", Target: "FuzzX"}
	p = outputParser{}
	p.line(&r, "pooler/x_test.go:3:1: syntax error")
	p.finish(&r, errors.New("exit status 1"))
	if r.Status != "error" || r.Failure != "pooler/x_test.go:3:1: syntax error" {
		t.Errorf("%+v", r)
	}
}
