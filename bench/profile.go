package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	profileEnv      = "PGWARDEN_CPUPROFILE"
	allocProfileEnv = "PGWARDEN_ALLOCPROFILE"
)

// profileResult describes a CPU profile of pgwarden: under the 50-client
// run, or under the Entra-token storm.
type profileResult struct {
	Supported bool       `json:"supported"`
	Note      string     `json:"note,omitempty"`
	File      string     `json:"file,omitempty"`     // relative to the results file
	TopFile   string     `json:"top_file,omitempty"` // go tool pprof -top
	TopArgs   string     `json:"top_args,omitempty"` // -top, or -top -cum
	Top       string     `json:"top,omitempty"`
	Run       *runResult `json:"run,omitempty"`
	// AllocFile and AllocTop: the allocations sampled over the same run
	// (go tool pprof -sample_index=alloc_space -top), when the binary
	// reads PGWARDEN_ALLOCPROFILE.
	AllocFile string `json:"alloc_file,omitempty"`
	AllocTop  string `json:"alloc_top,omitempty"`
}

// profileSection runs pgwarden with PGWARDEN_CPUPROFILE (a CPU profile of
// the whole process life, written when it exits) under pgbench -S -c 50
// simple, in a separate instance after the measured runs so that the
// profiler does not touch the figures. When the Entra-token storm ran, a
// second instance is profiled under it (its first TLS setting), to show
// where the time of a token sign-in goes. A binary that reads
// PGWARDEN_ALLOCPROFILE also writes the allocations sampled over the run.
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
	opts := iniOptions{authType: "scram-sha-256"}
	clients := 50
	spec := pgbenchSpec{section: "profile", protocol: "simple", clients: clients, jobs: h.jobs(clients),
		duration: h.cfg.duration, auth: opts.authType, log: true}
	h.logf("profile: pgwarden with %s under pgbench -S -c %d", profileEnv, clients)
	if err := h.profiledRun(ctx, "", opts, spec, res, "-top"); err != nil {
		return err
	}
	if h.entra == nil || !h.cfg.has("storm") {
		return nil
	}
	tls := h.cfg.stormTLS[0]
	eres := &profileResult{Supported: true}
	h.res.EntraProfile = eres
	eopts := iniOptions{authType: "plain", tls: tls, entra: h.entra}
	espec := pgbenchSpec{section: "profile", protocol: "simple", clients: h.cfg.stormClients, jobs: h.jobs(h.cfg.stormClients),
		duration: h.cfg.stormDuration, connect: true, tls: tls, auth: "entra", password: eopts.password()}
	h.logf("profile: pgwarden with %s under the Entra-token storm (pgbench -S -C -c %d, TLS %s)", profileEnv, h.cfg.stormClients, onOff(tls))
	return h.profiledRun(ctx, "entra-storm", eopts, espec, eres, "-top", "-cum")
}

// profiledRun starts a pgwarden instance with opts and the CPU profiler,
// runs spec against it, stops it, and saves the profile and its
// `go tool pprof <topArgs>` in the results directory, named after name.
func (h *harness) profiledRun(ctx context.Context, name string, opts iniOptions, spec pgbenchSpec, res *profileResult, topArgs ...string) error {
	label, suffix := "profile", "-pgwarden-cpu"
	if name != "" {
		label, suffix = "profile-"+name, "-pgwarden-"+name+"-cpu"
	}
	dir := filepath.Join(h.ws.dir, label)
	if err := h.ws.mkdirOwned(dir); err != nil {
		return err
	}
	profPath := filepath.Join(dir, "cpu.pprof")
	allocPath := filepath.Join(dir, "allocs.pprof")
	p, err := h.startPooler(ctx, h.kind("pgwarden"), label, opts, []string{profileEnv + "=" + profPath, allocProfileEnv + "=" + allocPath})
	if err != nil {
		return err
	}
	t := &target{name: "pgwarden", port: p.port, pooler: p}
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
	dst := filepath.Join(outDir, stamp+suffix+".pprof")
	b, err := os.ReadFile(profPath)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return err
	}
	res.File = h.relToOut(dst)
	res.TopArgs = strings.Join(topArgs, " ")
	args := append([]string{"tool", "pprof"}, topArgs...)
	top, err := exec.CommandContext(ctx, goTool(), append(args, "-nodecount=30", dst)...).Output()
	if err != nil {
		res.Note = "go tool pprof " + res.TopArgs + " failed: " + err.Error()
		return nil
	}
	res.Top = string(top)
	topPath := filepath.Join(outDir, stamp+suffix+"-top.txt")
	if err := os.WriteFile(topPath, top, 0o644); err != nil {
		return err
	}
	res.TopFile = h.relToOut(topPath)
	h.logf("profile: %s", dst)
	if b, err := os.ReadFile(allocPath); err == nil && len(b) > 0 {
		adst := filepath.Join(outDir, stamp+strings.TrimSuffix(suffix, "-cpu")+"-allocs.pprof")
		if err := os.WriteFile(adst, b, 0o644); err != nil {
			return err
		}
		res.AllocFile = h.relToOut(adst)
		if top, err := exec.CommandContext(ctx, goTool(), "tool", "pprof", "-sample_index=alloc_space", "-top", "-nodecount=20", adst).Output(); err == nil {
			res.AllocTop = string(top)
		}
	}
	return nil
}
