// Command pgwarden is a PgBouncer-compatible PostgreSQL connection pooler.
//
//	pgwarden [-d] [-q] [-v…] CONFIG      run with pgbouncer.ini or pooler.yaml
//	pgwarden check-config CONFIG         validate and list every problem
//	pgwarden demo                        throwaway PostgreSQL + dev IdP + pgwarden, prints psql lines
//	pgwarden dev-idp [-listen ADDR]      development identity provider on loopback
//	pgwarden dev-token -idp URL [-oid …] mint an access token from a running dev-idp
//	pgwarden -V | --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/metrics"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "pgwarden:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "pgwarden:", err)
	os.Exit(1)
}

const usage = `pgwarden is a PgBouncer-compatible PostgreSQL connection pooler.

Usage:
  pgwarden [OPTION]... CONFIG        run with a pgbouncer.ini or pooler.yaml
  pgwarden check-config CONFIG       validate CONFIG; exit 0 if it is usable
  pgwarden demo                      start a throwaway PostgreSQL and pgwarden in front of it,
                                     with password and Entra ID token sign-in
  pgwarden dev-idp [OPTION]...       serve a development identity provider on loopback
                                     (see pgwarden dev-idp -h)
  pgwarden dev-token -idp URL [OPTION]...
                                     print an access token minted by a running dev-idp
                                     (see pgwarden dev-token -h)

Options:
  -d, --daemon           run in the background (needs logfile or syslog, and pidfile)
  -q, --quiet            do not log to standard error (logfile and syslog still get the log)
  -v, --verbose          more logging (debug level)
  -u, --user=USERNAME    switch to this user after start (not supported: run as that user)
  -R, --reboot           online restart (not supported: use so_reuseport and SIGTERM)
  -V, --version          print the version and exit
  -h, --help             show this help

Signals: SIGHUP reloads the config and reopens the logfile; SIGTERM waits for
clients to finish; SIGINT waits for server connections to be released;
a second SIGINT or SIGTERM, or SIGQUIT, exits at once.
`

// options are the command line's flags.
type options struct {
	daemon, quiet, version, help, reboot bool
	user                                 string
	verbose                              int
	args                                 []string // positional arguments
}

// parseFlags parses PgBouncer's options. As with PgBouncer's getopt, options
// may come before or after the config file, and single-letter flags may be
// grouped (-dv, -vv).
func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("pgwarden", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&o.daemon, "d", false, "")
	fs.BoolVar(&o.daemon, "daemon", false, "")
	fs.BoolVar(&o.quiet, "q", false, "")
	fs.BoolVar(&o.quiet, "quiet", false, "")
	fs.BoolVar(&o.version, "V", false, "")
	fs.BoolVar(&o.version, "version", false, "")
	fs.BoolVar(&o.help, "h", false, "")
	fs.BoolVar(&o.help, "help", false, "")
	fs.BoolVar(&o.reboot, "R", false, "")
	fs.BoolVar(&o.reboot, "reboot", false, "")
	fs.StringVar(&o.user, "u", "", "")
	fs.StringVar(&o.user, "user", "", "")
	// -v takes no value; each one counts.
	fs.BoolFunc("v", "", func(string) error { o.verbose++; return nil })
	fs.BoolFunc("verbose", "", func(string) error { o.verbose++; return nil })
	rest := expandShortFlags(args)
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			return o, nil
		}
		// A positional argument; flags may follow it.
		o.args = append(o.args, rest[0])
		rest = rest[1:]
	}
}

// expandShortFlags turns grouped single-letter flags (-vv, -dq, -dvv) into
// separate ones, as PgBouncer's getopt accepts them.
func expandShortFlags(args []string) []string {
	var out []string
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' && strings.Trim(a[1:], "dqvVhR") == "" {
			for _, c := range a[1:] {
				out = append(out, "-"+string(c))
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout)
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		case "dev-idp":
			return runDevIdP(args[1:], stdout, stderr)
		case "dev-token":
			return runDevToken(args[1:], stdout, stderr)
		}
	}
	o, err := parseFlags(args)
	if err != nil {
		return &exitError{2, fmt.Errorf("%v\n\n%s", err, usage)}
	}
	switch {
	case o.help:
		fmt.Fprint(stdout, usage)
		return nil
	case o.version:
		fmt.Fprintf(stdout, "pgwarden %s (PgBouncer 1.25 compatible)\n", pooler.Version)
		return nil
	case o.reboot:
		return &exitError{2, errors.New("-R (online restart) is not supported: run several processes with so_reuseport = 1 and stop the old one with SIGTERM, which drains it")}
	case o.user != "":
		return &exitError{2, errors.New("-u is not supported: start pgwarden as the user it should run as (systemd User=, or runuser -u USER --)")}
	}
	if len(o.args) != 1 {
		return &exitError{2, fmt.Errorf("expected one config file\n\n%s", usage)}
	}
	return serve(o.args[0], o, stderr)
}

// daemonEnv marks the re-executed daemon process; its value names the file
// descriptor of the pipe on which it reports that it started ("ok") or why
// it could not.
const daemonEnv = "PGWARDEN_DAEMONIZED"

// serve runs the pooler with the config file at path until it shuts down.
func serve(path string, o *options, stderr io.Writer) (err error) {
	// Signals are caught from the start, so that one arriving while
	// starting up is handled (once serving) rather than killing the
	// process with the default action.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	signal.Ignore(syscall.SIGPIPE)

	// In the re-executed daemon, tell the waiting parent how start-up went.
	ready, daemonChild := daemonReadyPipe()
	notifyReady := func(err error) {
		if ready == nil {
			return
		}
		if err == nil {
			_, _ = io.WriteString(ready, "ok\n")
		} else {
			_, _ = io.WriteString(ready, err.Error())
		}
		_ = ready.Close()
		ready = nil
	}
	defer func() { notifyReady(err) }()

	cfg, err := config.Load(path)
	if err != nil {
		return &exitError{1, fmt.Errorf("cannot load config file %s:\n%w", path, err)}
	}
	if err := checkRunAsUser(cfg.User); err != nil {
		return &exitError{1, err}
	}
	if o.daemon {
		if cfg.LogFile == "" && !cfg.Syslog {
			return &exitError{1, errors.New("-d needs logfile or syslog in the config")}
		}
		if cfg.PidFile == "" {
			return &exitError{1, errors.New("-d needs pidfile in the config")}
		}
		if !daemonChild {
			return daemonize()
		}
	}
	if cfg.PidFile != "" {
		if err := checkPidfile(cfg.PidFile); err != nil {
			return &exitError{1, err}
		}
	}

	logs, err := newLogging(cfg, o, stderr)
	if err != nil {
		return &exitError{1, err}
	}
	defer logs.Close()
	log := logs.logger
	log.Info("pgwarden starting", "version", pooler.Version, "config", path, "pid", os.Getpid())
	for _, w := range cfg.Warnings {
		log.Warn(w.Error())
	}
	reg := prometheus.NewRegistry()
	// The Go runtime's and the process's standard series (go_goroutines,
	// process_resident_memory_bytes, process_open_fds...): what SREs
	// graph for any Go service, and what the reliability soak watches.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mtr := metrics.New(reg)
	srv, err := pooler.New(cfg, pooler.Options{Logger: log, AuditLogger: logs.audit, Observer: newObserver(mtr)})
	if err != nil {
		log.Error("cannot start", "err", err)
		return &exitError{1, err}
	}
	reg.MustRegister(pgbouncerCollector(srv, cfg.Metrics))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgwarden_parked_clients",
		Help: "Idle clients parked without a goroutine (signed in, between transactions).",
	}, func() float64 { return float64(srv.ParkedClients()) }))
	mtr.JWKSKeysFrom(srv.EntraKeyCount)
	mtr.ThrottledKeysFrom(srv.ThrottledKeys)
	if path := os.Getenv("PGWARDEN_CPUPROFILE"); path != "" {
		// A development aid for the benchmarks: profile the whole run,
		// written when pgwarden exits.
		stop, err := startCPUProfile(path)
		if err != nil {
			return &exitError{1, err}
		}
		defer stop()
	}
	if path := os.Getenv("PGWARDEN_ALLOCPROFILE"); path != "" {
		// The same for allocations: every allocation sampled over the
		// run (runtime's default rate), written when pgwarden exits.
		defer writeAllocProfile(path, log)
	}
	if err := srv.Listen(); err != nil {
		log.Error("cannot start", "err", err)
		return &exitError{1, err}
	}
	stopMetrics, err := startMetricsListener(cfg, reg, srv, log)
	if err != nil {
		srv.Shutdown(pooler.ShutdownImmediate)
		log.Error("cannot start", "err", err)
		return &exitError{1, fmt.Errorf("metrics listen %s: %w", cfg.Metrics.Listen, err)}
	}
	defer stopMetrics()
	if cfg.PidFile != "" {
		pid := strconv.Itoa(os.Getpid())
		if err := os.WriteFile(cfg.PidFile, []byte(pid+"\n"), 0o644); err != nil {
			srv.Shutdown(pooler.ShutdownImmediate)
			return &exitError{1, fmt.Errorf("write pidfile: %w", err)}
		}
		defer removePidfile(cfg.PidFile, pid)
	}
	sd := newSDNotifier()
	var reloadMu sync.Mutex
	reload := func() error {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		// systemd (Type=notify-reload or notify with ExecReload) learns
		// when the reload starts and ends.
		_ = sd.notify(reloading())
		defer func() { _ = sd.notify("READY=1") }()
		// The logfile is reopened even when the new config is bad, so
		// that logrotate's SIGHUP always works.
		ncfg, err := config.Load(path)
		if ncfg != nil {
			logs.reconfigure(ncfg)
		} else {
			logs.reopen()
		}
		if err != nil {
			log.Error("RELOAD failed; keeping the configuration in use", "err", err)
			return err
		}
		for _, w := range ncfg.Warnings {
			log.Warn(w.Error())
		}
		warnings, err := srv.Reload(ncfg)
		for _, w := range warnings {
			log.Warn(w)
		}
		if err != nil {
			log.Error("RELOAD failed; keeping the configuration in use", "err", err)
		}
		return err
	}
	srv.SetReloadHook(reload)
	// The console's SET: a changed copy of the config in force, applied
	// as RELOAD applies a re-read file (logging included).
	srv.SetApplyHook(func(ncfg *config.Config) ([]string, error) {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		logs.reconfigure(ncfg)
		return srv.Reload(ncfg)
	})
	for _, a := range srv.Addrs() {
		log.Info("listening", "addr", a.String())
	}
	go handleSignals(sigs, srv, log, reload)
	notifyReady(nil)
	if err := sd.notify("READY=1\nSTATUS=accepting connections\nMAINPID=" + strconv.Itoa(os.Getpid())); err != nil {
		log.Warn("cannot tell systemd that pgwarden is ready", "err", err)
	}
	// Every shutdown (a signal, SHUTDOWN on the console) starts with
	// Stopping; Serve returns only after one.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-srv.Stopping()
		_ = sd.notify("STOPPING=1\nSTATUS=draining")
	}()
	err = srv.Serve(context.Background())
	if err == nil {
		<-stopped
	}
	log.Info("pgwarden stopped")
	return err
}

// handleSignals acts on signals as PgBouncer (1.23 and later) does.
func handleSignals(sigs <-chan os.Signal, srv *pooler.Server, log *slog.Logger, reload func() error) {
	stopping := false
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			log.Info("got SIGHUP, reloading config")
			_ = reload()
		case syscall.SIGQUIT:
			log.Info("got SIGQUIT, exiting now")
			srv.Shutdown(pooler.ShutdownImmediate)
		case syscall.SIGUSR1, syscall.SIGUSR2:
			log.Warn("signal ignored: pausing and resuming by signal is not supported; use PAUSE and RESUME on the admin console", "signal", sig.String())
		case syscall.SIGINT, syscall.SIGTERM:
			if stopping {
				log.Info("second signal, exiting now", "signal", sig.String())
				srv.Shutdown(pooler.ShutdownImmediate)
				continue
			}
			stopping = true
			if sig == syscall.SIGTERM {
				log.Info("got SIGTERM, waiting for clients to finish (send again to exit now)")
				srv.Shutdown(pooler.ShutdownWaitForClients)
			} else {
				log.Info("got SIGINT, waiting for servers to be released (send again to exit now)")
				srv.Shutdown(pooler.ShutdownWaitForServers)
			}
		}
	}
}

// checkRunAsUser refuses a config whose "user" setting asks for a user
// switch: pgwarden does not change users, and running on as root instead
// would be worse than not starting.
func checkRunAsUser(name string) error {
	if name == "" {
		return nil
	}
	if u, err := user.Lookup(name); err == nil && u.Uid == strconv.Itoa(os.Geteuid()) {
		return nil // already running as that user
	}
	return fmt.Errorf("the config sets user = %s, but pgwarden does not switch users: start it as %s (systemd User=, or runuser -u %s --), or remove the setting", name, name, name)
}

// checkPidfile refuses to start when the pidfile names a running process
// (another pgwarden or PgBouncer with this config), as PgBouncer does. A
// stale pidfile is overwritten later.
func checkPidfile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pidfile: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return nil
	}
	if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("pidfile %s names process %d, which is running: is another pooler using this config?", path, pid)
	}
	return nil
}

// removePidfile removes the pidfile if it still holds our pid.
func removePidfile(path, pid string) {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == pid {
		_ = os.Remove(path)
	}
}

func checkConfig(args []string, stdout io.Writer) error {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		return &exitError{2, errors.New("usage: pgwarden check-config CONFIG")}
	}
	problems := config.Check(args[0])
	bad := false
	for _, p := range problems {
		fmt.Fprintln(stdout, p.Error())
		var w config.Warning
		if !errors.As(p, &w) {
			bad = true
		}
	}
	if !bad {
		// The files the config names that the pooler reads itself.
		if cfg, err := config.Load(args[0]); err == nil {
			if err := pooler.CheckHBA(cfg); err != nil {
				fmt.Fprintln(stdout, err.Error())
				bad = true
			}
		}
	}
	if bad {
		return &exitError{1, nil}
	}
	fmt.Fprintf(stdout, "%s: OK\n", args[0])
	return nil
}

// daemonize re-executes the binary detached from the terminal and waits
// until the new process is listening (exit 0) or has failed to start (its
// error is returned, exit 1).
func daemonize() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	p, err := os.StartProcess(exe, os.Args, &os.ProcAttr{
		Env:   append(os.Environ(), daemonEnv+"=3"),
		Files: []*os.File{devnull, devnull, devnull, w},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	w.Close()
	if err != nil {
		return err
	}
	_ = r.SetReadDeadline(time.Now().Add(2 * time.Minute))
	msg, rerr := io.ReadAll(r)
	switch {
	case string(msg) == "ok\n":
		return p.Release()
	case len(msg) > 0:
		_ = p.Release()
		return &exitError{1, fmt.Errorf("the daemon did not start: %s", msg)}
	case rerr != nil:
		_ = p.Release()
		return &exitError{1, fmt.Errorf("the daemon (pid %d) did not report within 2 minutes: %w", p.Pid, rerr)}
	default:
		_ = p.Release()
		return &exitError{1, errors.New("the daemon exited while starting; see the logfile")}
	}
}

// daemonReadyPipe reports whether this process is the re-executed daemon
// and returns the pipe to the waiting parent (nil if unusable).
func daemonReadyPipe() (*os.File, bool) {
	v := os.Getenv(daemonEnv)
	if v == "" {
		return nil, false
	}
	os.Unsetenv(daemonEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, true
	}
	f := os.NewFile(uintptr(fd), "pgwarden-ready")
	if f == nil {
		return nil, true
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return nil, true
	}
	return f, true
}

// startCPUProfile writes a CPU profile of the process to path until the
// returned function is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeAllocProfile writes the allocations sampled since the start (the
// "allocs" profile) to path.
func writeAllocProfile(path string, log *slog.Logger) {
	f, err := os.Create(path)
	if err != nil {
		log.Error("allocation profile", "err", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		log.Error("allocation profile", "err", err)
	}
}
