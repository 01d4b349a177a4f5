package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

const profileEnv = "PGWARDEN_CPUPROFILE"

// profileResult describes the CPU profile of pgwarden under the 50-client
// run.
type profileResult struct {
	Supported bool       `json:"supported"`
	Note      string     `json:"note,omitempty"`
	File      string     `json:"file,omitempty"`     // relative to the results file
	TopFile   string     `json:"top_file,omitempty"` // go tool pprof -top
	Top       string     `json:"top,omitempty"`
	Run       *runResult `json:"run,omitempty"`
}

// profileSection runs pgwarden with PGWARDEN_CPUPROFILE (a CPU profile of
// the whole process life, written when it exits) under pgbench -S -c 50
// simple, in a separate instance after the measured runs so that the
// profiler does not touch the figures. Allocation profiles need a pprof
// endpoint that pgwarden does not have yet.
func (h *harness) profileSection(ctx context.Context) error {
	pw := h.kind("pgwarden")
	res := &profileResult{}
	h.res.Profile = res
	bin, err := os.ReadFile(pw.binary)
	if err != nil {
		return err
	}
	if !bytes.Contains(bin, []byte(profileEnv)) {
		res.Note = "this pgwarden binary does not read " + profileEnv + ": no CPU profile"
		h.logf("profile: %s", res.Note)
		return nil
	}
	res.Supported = true
	dir := filepath.Join(h.ws.dir, "profile")
	if err := h.ws.mkdirOwned(dir); err != nil {
		return err
	}
	profPath := filepath.Join(dir, "cpu.pprof")
	opts := iniOptions{authType: "scram-sha-256"}
	p, err := h.startPooler(ctx, pw, "profile", opts, []string{profileEnv + "=" + profPath})
	if err != nil {
		return err
	}
	t := &target{name: "pgwarden", port: p.port, pooler: p}
	clients := 50
	spec := pgbenchSpec{section: "profile", protocol: "simple", clients: clients, jobs: h.jobs(clients),
		duration: h.cfg.duration, auth: opts.authType, log: true}
	h.logf("profile: pgwarden with %s under pgbench -S -c %d", profileEnv, clients)
	r, err := h.runPgbench(ctx, spec, t, 1)
	if err != nil {
		_ = p.proc.stop(syscall.SIGKILL, time.Second)
		return err
	}
	res.Run = r
	// SIGTERM: pgwarden drains (no clients are left), exits, and its
	// deferred StopCPUProfile writes the file.
	if err := p.proc.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		return fmt.Errorf("pgwarden exit: %w\n%s", err, p.proc.logTail())
	}
	if st, err := os.Stat(profPath); err != nil || st.Size() == 0 {
		return fmt.Errorf("no profile written at %s", profPath)
	}
	outDir := h.resultsDir()
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	stamp := h.stamp()
	dst := filepath.Join(outDir, stamp+"-pgwarden-cpu.pprof")
	b, err := os.ReadFile(profPath)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return err
	}
	res.File = h.relToOut(dst)
	top, err := exec.CommandContext(ctx, goTool(), "tool", "pprof", "-top", "-nodecount=30", dst).Output()
	if err != nil {
		res.Note = "go tool pprof -top failed: " + err.Error()
		return nil
	}
	res.Top = string(top)
	topPath := filepath.Join(outDir, stamp+"-pgwarden-cpu-top.txt")
	if err := os.WriteFile(topPath, top, 0o644); err != nil {
		return err
	}
	res.TopFile = h.relToOut(topPath)
	h.logf("profile: %s", dst)
	return nil
}
