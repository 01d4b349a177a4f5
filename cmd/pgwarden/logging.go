package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"strings"
	"sync"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// logging is where the log goes, as with PgBouncer: standard error (unless
// -q, or running as a daemon), the logfile and syslog, each if configured.
// SIGHUP and RELOAD reopen the logfile (for logrotate), follow a changed
// logfile name and verbose level; syslog settings need a restart.
//
// The sign-in audit lines (one JSON object per attempt) go where the log
// goes, unless the config's audit block names a destination: then only to
// audit.log_file (reopened like the logfile, and following a changed name)
// and/or syslog (audit.syslog).
type logging struct {
	logger  *slog.Logger
	audit   *slog.Logger
	level   slog.LevelVar
	verbose int // -v count
	file    *reopenFile
	sys     *syslog.Writer
	// auditFile is audit.log_file; auditSys the syslog connection for
	// audit.syslog (the log's own when it has one).
	auditFile *reopenFile
	auditSys  *syslogSink
	ownSys    *syslog.Writer // opened for audit.syslog alone
	// auditMu guards the audit destination switches below, which a
	// reload may change.
	auditMu     sync.Mutex
	auditToLog  bool // no audit destination configured: follow the log
	auditToSys  bool
	logToSyslog bool // the log goes to syslog
}

func newLogging(cfg *config.Config, o *options, stderr io.Writer) (*logging, error) {
	l := &logging{verbose: o.verbose, file: &reopenFile{}}
	l.setLevel(cfg)
	opts := &slog.HandlerOptions{Level: &l.level}
	var outs []io.Writer
	if !o.quiet {
		outs = append(outs, stderr)
	}
	if cfg.LogFile != "" {
		if err := l.file.open(cfg.LogFile); err != nil {
			return nil, err
		}
	}
	outs = append(outs, l.file) // writes nowhere while no logfile is set
	handlers := []slog.Handler{slog.NewTextHandler(teeWriter(outs), opts)}
	var syslogErr error
	if cfg.Syslog {
		l.sys, syslogErr = openSyslog(syslogFacility(cfg.SyslogFacility)|syslog.LOG_INFO, cfg.SyslogIdent)
		if syslogErr == nil {
			sink := &syslogSink{w: l.sys}
			handlers = append(handlers, &syslogHandler{
				h: slog.NewTextHandler(sink, &slog.HandlerOptions{Level: &l.level, ReplaceAttr: dropTimeAndLevel}),
				s: sink,
			})
		}
	}
	l.logToSyslog = l.sys != nil
	if len(handlers) == 1 {
		l.logger = slog.New(handlers[0])
	} else {
		l.logger = slog.New(multiHandler(handlers))
	}
	if syslogErr != nil {
		l.logger.Warn("cannot open syslog; logging without it", "err", syslogErr)
	}

	// The audit lines: JSON to the audit file or, by default, the log's
	// stream and file; JSON without time and level to syslog.
	l.auditFile = &reopenFile{}
	if err := l.setAudit(cfg); err != nil {
		return nil, err
	}
	stream := &auditStream{l: l, log: teeWriter(outs)}
	l.auditSys = &syslogSink{w: l.sys}
	if l.sys == nil && cfg.Audit.Syslog {
		l.ownSys, syslogErr = openSyslog(syslogFacility(cfg.SyslogFacility)|syslog.LOG_INFO, cfg.SyslogIdent)
		if syslogErr != nil {
			l.logger.Warn("cannot open syslog for audit.syslog; audit lines go to the log instead", "err", syslogErr)
		}
		l.auditSys.w = l.ownSys
	}
	l.audit = slog.New(multiHandler{
		slog.NewJSONHandler(stream, nil),
		&auditSyslogHandler{l: l, h: &syslogHandler{h: slog.NewJSONHandler(l.auditSys, &slog.HandlerOptions{ReplaceAttr: dropTimeAndLevel}), s: l.auditSys}},
	})
	return l, nil
}

// setAudit applies the config's audit block: which destinations the audit
// lines go to, and the audit file (opened or switched to another name; the
// same name is reopened, for logrotate).
func (l *logging) setAudit(cfg *config.Config) error {
	err := l.auditFile.open(cfg.Audit.LogFile)
	if err != nil {
		err = fmt.Errorf("audit.log_file: %w", err)
	}
	l.auditMu.Lock()
	l.auditToLog = cfg.Audit.LogFile == "" && !cfg.Audit.Syslog
	l.auditToSys = cfg.Audit.Syslog
	l.auditMu.Unlock()
	return err
}

// auditStream is where the JSON audit lines go apart from syslog: the log's
// stream and file when no audit destination is configured, else the audit
// file (if any).
type auditStream struct {
	l   *logging
	log io.Writer
}

func (a *auditStream) Write(b []byte) (int, error) {
	a.l.auditMu.Lock()
	toLog := a.l.auditToLog
	a.l.auditMu.Unlock()
	if toLog {
		return a.log.Write(b)
	}
	return a.l.auditFile.Write(b)
}

// auditSyslogHandler sends the audit lines to syslog when audit.syslog is
// set, or, with no audit destination, when the log goes to syslog.
type auditSyslogHandler struct {
	l *logging
	h slog.Handler
}

func (h *auditSyslogHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	h.l.auditMu.Lock()
	on := h.l.auditToSys || h.l.auditToLog && h.l.logToSyslog
	h.l.auditMu.Unlock()
	return on && h.l.auditSys.w != nil && h.h.Enabled(ctx, lv)
}

func (h *auditSyslogHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.h.Handle(ctx, r)
}

func (h *auditSyslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &auditSyslogHandler{l: h.l, h: h.h.WithAttrs(as)}
}

func (h *auditSyslogHandler) WithGroup(name string) slog.Handler {
	return &auditSyslogHandler{l: h.l, h: h.h.WithGroup(name)}
}

// openSyslog connects to the local syslog daemon (a variable so that tests
// can point it at a socket of their own).
var openSyslog = syslog.New

// setLevel applies -v and the config's verbose: debug if either is set.
func (l *logging) setLevel(cfg *config.Config) {
	if l.verbose > 0 || cfg.Verbose > 0 {
		l.level.Set(slog.LevelDebug)
	} else {
		l.level.Set(slog.LevelInfo)
	}
}

// reconfigure applies a reloaded config: level, logfile name; the logfile
// is reopened either way.
func (l *logging) reconfigure(cfg *config.Config) {
	l.setLevel(cfg)
	if err := l.file.open(cfg.LogFile); err != nil {
		l.logger.Error("cannot reopen logfile", "err", err)
	}
	if err := l.setAudit(cfg); err != nil {
		l.logger.Error("cannot reopen the audit log file", "err", err)
	}
	if cfg.Audit.Syslog && l.auditSys.w == nil {
		l.logger.Warn("audit.syslog needs a restart when syslog was not in use at start")
	}
}

// reopen reopens the logfile and the audit file under their current names.
func (l *logging) reopen() {
	if err := l.file.reopen(); err != nil {
		l.logger.Error("cannot reopen logfile", "err", err)
	}
	if err := l.auditFile.reopen(); err != nil {
		l.logger.Error("cannot reopen the audit log file", "err", err)
	}
}

func (l *logging) Close() {
	_ = l.file.Close()
	_ = l.auditFile.Close()
	if l.sys != nil {
		_ = l.sys.Close()
	}
	if l.ownSys != nil {
		_ = l.ownSys.Close()
	}
}

// teeWriter writes to every writer, whatever errors some of them return (a
// closed standard error must not stop the logfile).
type teeWriter []io.Writer

func (t teeWriter) Write(b []byte) (int, error) {
	for _, w := range t {
		_, _ = w.Write(b)
	}
	return len(b), nil
}

// reopenFile is the logfile; open switches it to another name (or none),
// reopen reopens it under the same name (logrotate).
type reopenFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func (r *reopenFile) open(path string) error {
	var f *os.File
	if path != "" {
		var err error
		f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("open logfile: %w", err)
		}
	}
	r.mu.Lock()
	old := r.f
	r.f, r.path = f, path
	r.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (r *reopenFile) reopen() error {
	r.mu.Lock()
	path := r.path
	r.mu.Unlock()
	return r.open(path)
}

func (r *reopenFile) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return len(b), nil
	}
	return r.f.Write(b)
}

func (r *reopenFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// syslogFacility maps PgBouncer's syslog_facility names.
func syslogFacility(name string) syslog.Priority {
	switch name {
	case "auth":
		return syslog.LOG_AUTH
	case "authpriv":
		return syslog.LOG_AUTHPRIV
	case "user":
		return syslog.LOG_USER
	case "local0":
		return syslog.LOG_LOCAL0
	case "local1":
		return syslog.LOG_LOCAL1
	case "local2":
		return syslog.LOG_LOCAL2
	case "local3":
		return syslog.LOG_LOCAL3
	case "local4":
		return syslog.LOG_LOCAL4
	case "local5":
		return syslog.LOG_LOCAL5
	case "local6":
		return syslog.LOG_LOCAL6
	case "local7":
		return syslog.LOG_LOCAL7
	}
	return syslog.LOG_DAEMON
}

// dropTimeAndLevel leaves out what syslog records itself.
func dropTimeAndLevel(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
		return slog.Attr{}
	}
	return a
}

// syslogSink sends each formatted record to syslog at the record's level.
type syslogSink struct {
	mu    sync.Mutex
	w     *syslog.Writer
	level slog.Level
}

func (s *syslogSink) Write(b []byte) (int, error) {
	msg := strings.TrimRight(string(b), "\n")
	var err error
	switch {
	case s.level >= slog.LevelError:
		err = s.w.Err(msg)
	case s.level >= slog.LevelWarn:
		err = s.w.Warning(msg)
	case s.level >= slog.LevelInfo:
		err = s.w.Info(msg)
	default:
		err = s.w.Debug(msg)
	}
	return len(b), err
}

// syslogHandler formats with h into s, telling s the record's level first.
type syslogHandler struct {
	h slog.Handler
	s *syslogSink
}

func (h *syslogHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.level = r.Level
	return h.h.Handle(ctx, r)
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &syslogHandler{h: h.h.WithAttrs(as), s: h.s}
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	return &syslogHandler{h: h.h.WithGroup(name), s: h.s}
}

// multiHandler sends each record to every handler.
type multiHandler []slog.Handler

func (m multiHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range m {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (m multiHandler) Handle(ctx context.Context, r slog.Record) error {
	var first error
	for _, h := range m {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (m multiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(multiHandler, len(m))
	for i, h := range m {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (m multiHandler) WithGroup(name string) slog.Handler {
	out := make(multiHandler, len(m))
	for i, h := range m {
		out[i] = h.WithGroup(name)
	}
	return out
}
