package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a long-running process started by the harness (a pooler). It
// runs in its own process group, so that a Ctrl-C on the terminal reaches
// only the harness, which then stops every child itself; Pdeathsig kills it
// if the harness dies without cleaning up.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string // stdout and stderr

	done chan struct{}
	err  error // valid after done is closed
}

// children is every child still running; killAll stops them on exit.
var children struct {
	mu  sync.Mutex
	set map[*child]struct{}
}

// startChild starts cmd with its output going to logPath.
func startChild(name string, cmd *exec.Cmd, logPath string) (*child, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout = out
	cmd.Stderr = out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	children.mu.Lock()
	if children.set == nil {
		children.set = map[*child]struct{}{}
	}
	children.set[c] = struct{}{}
	children.mu.Unlock()
	go func() {
		c.err = cmd.Wait()
		children.mu.Lock()
		delete(children.set, c)
		children.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default: // still running
		return false
	}
}

// stop sends sig to the child's process group and waits up to grace for it
// to exit; then it kills the group. It reports the child's exit error.
func (c *child) stop(sig syscall.Signal, grace time.Duration) error {
	if !c.exited() {
		_ = syscall.Kill(-c.pid(), sig)
		select {
		case <-c.done:
		case <-time.After(grace):
			_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
			<-c.done
		}
	}
	// The group may hold processes the child left behind.
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
	return c.err
}

// logTail returns the last lines of the child's output.
func (c *child) logTail() string { return fileTail(c.logPath, 20) }

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// killAll kills every child still running (cleanup on exit).
func killAll() {
	children.mu.Lock()
	var all []*child
	for c := range children.set {
		all = append(all, c)
	}
	children.mu.Unlock()
	for _, c := range all {
		_ = c.stop(syscall.SIGTERM, 3*time.Second)
	}
}

// setProcessGroup makes a short-lived command (pgbench) run in its own
// process group, killed as a group when its context ends or the harness
// dies.
func setProcessGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
}

// clockTicks is sysconf(_SC_CLK_TCK), the unit of utime and stime in
// /proc/PID/stat. Go has no sysconf without cgo; the kernel passes the value
// to every process in its auxiliary vector (AT_CLKTCK).
var clockTicks = readClockTicks()

func readClockTicks() float64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err == nil && strconv.IntSize == 64 {
		for i := 0; i+16 <= len(b); i += 16 {
			k := binary.NativeEndian.Uint64(b[i:])
			v := binary.NativeEndian.Uint64(b[i+8:])
			if k == atClkTck && v > 0 {
				return float64(v)
			}
			if k == 0 {
				break
			}
		}
	}
	return 100 // the value on every Linux architecture Go supports
}

// procCPU returns the process's user+system CPU time in clock ticks (all
// threads, live and exited), from /proc/PID/stat fields 14 and 15.
func procCPU(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return ut + st, nil
}

// procRSS returns VmRSS of the process in KiB.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// cpuSample is one reading of a process's CPU time.
type cpuSample struct {
	at    time.Time
	ticks uint64
}

// cpuSampler reads a process's CPU time every interval until stopped.
type cpuSampler struct {
	pid     int
	stopCh  chan struct{}
	done    chan struct{}
	samples []cpuSample
}

func startCPUSampler(pid int, interval time.Duration) *cpuSampler {
	s := &cpuSampler{pid: pid, stopCh: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stopCh:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *cpuSampler) sample() {
	if v, err := procCPU(s.pid); err == nil {
		s.samples = append(s.samples, cpuSample{time.Now(), v})
	}
}

// stop takes a last sample and returns them all.
func (s *cpuSampler) stop() []cpuSample {
	close(s.stopCh)
	<-s.done
	s.sample()
	return s.samples
}

// raiseNoFile sets RLIMIT_NOFILE to at least want (soft and hard when we may
// raise the hard limit, as root), or to the hard limit. Calling Setrlimit
// explicitly also makes os/exec pass the new limit to child processes
// (pgbench, the poolers, PostgreSQL). It returns the soft limit now in force.
func raiseNoFile(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < want && os.Geteuid() == 0 {
		nrOpen := want
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v < nrOpen {
				nrOpen = v
			}
		}
		if nrOpen > lim.Max {
			lim.Max = nrOpen
		}
	}
	lim.Cur = lim.Max
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	if err != nil {
		// Raising the hard limit needs CAP_SYS_RESOURCE, which a
		// container's root may lack: take the hard limit as it is.
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
		lim.Cur = lim.Max
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

// machineCPU reads the machine's busy CPU time from /proc/stat, in clock
// ticks over every core: everything but idle and iowait. It is what the
// pooler, PostgreSQL, pgbench and the kernel spent together.
func machineCPU() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, errors.New("no cpu line in /proc/stat")
	}
	var busy uint64
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, err
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user.
		switch i {
		case 3, 4, 8, 9:
		default:
			busy += v
		}
	}
	return busy, nil
}
