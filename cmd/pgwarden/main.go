// Command pgwarden is a PgBouncer-compatible PostgreSQL connection pooler.
//
//	pgwarden [-d] [-q] [-v…] [-u user] CONFIG     run with pgbouncer.ini or pooler.yaml
//	pgwarden check-config CONFIG                  validate and list every problem
//	pgwarden demo                                 throwaway PostgreSQL + pgwarden, prints a psql line
//	pgwarden -V | --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

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
  pgwarden demo                      start a throwaway PostgreSQL and pgwarden in front of it

Options:
  -d, --daemon           run in the background (needs logfile and pidfile)
  -q, --quiet            log only errors
  -v, --verbose          more logging (repeat for more)
  -u, --user=USERNAME    switch to this user after start (not supported: run as that user)
  -R, --reboot           online restart (not supported: use so_reuseport and SIGTERM)
  -V, --version          print the version and exit
  -h, --help             show this help
`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout)
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("pgwarden", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var daemon, quiet, version, help, reboot bool
	var user string
	verbose := 0
	fs.BoolVar(&daemon, "d", false, "")
	fs.BoolVar(&daemon, "daemon", false, "")
	fs.BoolVar(&quiet, "q", false, "")
	fs.BoolVar(&quiet, "quiet", false, "")
	fs.BoolVar(&version, "V", false, "")
	fs.BoolVar(&version, "version", false, "")
	fs.BoolVar(&help, "h", false, "")
	fs.BoolVar(&help, "help", false, "")
	fs.BoolVar(&reboot, "R", false, "")
	fs.BoolVar(&reboot, "reboot", false, "")
	fs.StringVar(&user, "u", "", "")
	fs.StringVar(&user, "user", "", "")
	fs.Func("v", "", func(string) error { verbose++; return nil })
	fs.Func("verbose", "", func(string) error { verbose++; return nil })
	// -v takes no value.
	args = expandVerbose(args)
	if err := fs.Parse(args); err != nil {
		return &exitError{2, fmt.Errorf("%v\n\n%s", err, usage)}
	}
	switch {
	case help:
		fmt.Fprint(stdout, usage)
		return nil
	case version:
		fmt.Fprintf(stdout, "pgwarden %s (PgBouncer 1.25 compatible)\n", pooler.Version)
		return nil
	case reboot:
		return &exitError{2, errors.New("-R (online restart) is not supported: run several processes with so_reuseport = 1 and stop the old one with SIGTERM, which drains it")}
	case user != "":
		return &exitError{2, errors.New("-u is not supported: start pgwarden as the user it should run as (systemd User=, or su)")}
	}
	if fs.NArg() != 1 {
		return &exitError{2, fmt.Errorf("expected one config file\n\n%s", usage)}
	}
	path := fs.Arg(0)
	cfg, err := config.Load(path)
	if err != nil {
		return &exitError{1, fmt.Errorf("cannot load config file %s:\n%w", path, err)}
	}
	if daemon {
		if cfg.LogFile == "" && !cfg.Syslog {
			return &exitError{1, errors.New("-d needs logfile or syslog in the config")}
		}
		if cfg.PidFile == "" {
			return &exitError{1, errors.New("-d needs pidfile in the config")}
		}
		if os.Getenv("PGWARDEN_DAEMONIZED") == "" {
			return daemonize()
		}
	}
	level := slog.LevelInfo
	if quiet {
		level = slog.LevelError
	}
	if verbose > 0 || cfg.Verbose > 0 {
		level = slog.LevelDebug
	}
	logOut := stderr
	var logFile *reopenFile
	if cfg.LogFile != "" {
		logFile, err = openLog(cfg.LogFile)
		if err != nil {
			return &exitError{1, err}
		}
		defer logFile.Close()
		logOut = logFile
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	for _, w := range cfg.Warnings {
		log.Warn(w.Error())
	}
	srv, err := pooler.New(cfg, pooler.Options{Logger: log})
	if err != nil {
		return &exitError{1, err}
	}
	if err := srv.Listen(); err != nil {
		return &exitError{1, err}
	}
	if cfg.PidFile != "" {
		if err := os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return &exitError{1, fmt.Errorf("write pidfile: %w", err)}
		}
		defer os.Remove(cfg.PidFile)
	}
	var reloadMu sync.Mutex
	reload := func() error {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		ncfg, err := config.Load(path)
		if err != nil {
			log.Error("RELOAD failed", "err", err)
			return err
		}
		if logFile != nil {
			_ = logFile.Reopen()
		}
		warnings, err := srv.Reload(ncfg)
		for _, w := range warnings {
			log.Warn(w)
		}
		return err
	}
	srv.SetReloadHook(reload)
	for _, a := range srv.Addrs() {
		log.Info("listening", "addr", a.String())
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	signal.Ignore(syscall.SIGPIPE)
	go func() {
		stopping := false
		for sig := range sigs {
			switch sig {
			case syscall.SIGHUP:
				log.Info("got SIGHUP, reloading config")
				_ = reload()
			case syscall.SIGQUIT:
				srv.Shutdown(pooler.ShutdownImmediate)
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
	}()
	err = srv.Serve(context.Background())
	log.Info("pgwarden stopped")
	return err
}

// expandVerbose turns -vv into -v -v, as PgBouncer accepts.
func expandVerbose(args []string) []string {
	var out []string
	for _, a := range args {
		if len(a) > 2 && a[0] == '-' && a[1] == 'v' && a[2] == 'v' {
			for range a[1:] {
				out = append(out, "-v")
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

func checkConfig(args []string, stdout io.Writer) error {
	if len(args) != 1 {
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
	if bad {
		return &exitError{1, nil}
	}
	fmt.Fprintf(stdout, "%s: OK\n", args[0])
	return nil
}

// daemonize re-executes the binary detached from the terminal.
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
	p, err := os.StartProcess(exe, os.Args, &os.ProcAttr{
		Env:   append(os.Environ(), "PGWARDEN_DAEMONIZED=1"),
		Files: []*os.File{devnull, devnull, devnull},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return err
	}
	return p.Release()
}

// reopenFile is a log file that SIGHUP/RELOAD reopens (logrotate).
type reopenFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func openLog(path string) (*reopenFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open logfile: %w", err)
	}
	return &reopenFile{path: path, f: f}, nil
}

func (r *reopenFile) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Write(b)
}

func (r *reopenFile) Reopen() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	return old.Close()
}

func (r *reopenFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}
