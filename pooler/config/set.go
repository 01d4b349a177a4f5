package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// ErrUnknownSetting and ErrRestartSetting are what WithSetting returns
// (wrapped) for a key that does not exist and for one that only a restart
// can change.
var (
	ErrUnknownSetting = errors.New("unknown setting")
	ErrRestartSetting = errors.New("setting needs a restart")
)

// WithSetting returns a copy of c with one [pgbouncer] key changed, as the
// admin console's SET key = value does: the value is read as pgbouncer.ini
// spells it, the result is validated as a whole (Validate) and its
// Settings are rebuilt. c itself is not changed.
//
// Keys marked changeable = no in SHOW CONFIG (listen_addr, listen_port,
// unix_socket_dir, pidfile, …) give ErrRestartSetting, unknown keys
// ErrUnknownSetting (PgBouncer ignores the former silently). A relative file
// name is resolved as at load time (working directory, then the
// configuration file's directory); auth_file is read at once.
func (c *Config) WithSetting(key, value string) (*Config, error) {
	p, ok := lookupParam(strings.ToLower(key))
	if !ok {
		return nil, settingError{ErrUnknownSetting, fmt.Sprintf("unknown setting %q", key)}
	}
	if p.restart {
		return nil, settingError{ErrRestartSetting, fmt.Sprintf("%s cannot be changed without a restart (changeable = no in SHOW CONFIG); edit the config file and restart", p.name)}
	}
	v, err := parseValue(p.kind, value)
	if err != nil {
		return nil, fmt.Errorf("invalid value %q for %s: %v", value, p.name, err)
	}
	n := *c
	n.Warnings = nil
	// The values of keys pgwarden does not implement live only in
	// Settings; carry them over.
	extra := map[string]string{}
	for _, s := range c.Settings {
		if q, ok := paramIndex[s.Key]; ok && q.get == nil {
			extra[s.Key] = s.Value
		}
	}
	if p.set == nil {
		extra[p.name] = renderValue(p.kind, v)
	} else {
		p.set(&n, v)
	}
	baseDir := ""
	if c.Path != "" {
		baseDir = filepath.Dir(c.Path)
	}
	switch p.name {
	case "auth_file":
		n.AuthUsers = nil
		if n.AuthFile != "" {
			path, found := resolvePath(n.AuthFile, baseDir)
			if !found {
				return nil, fmt.Errorf("auth_file %q not found", n.AuthFile)
			}
			users, problems, err := loadAuthFile(path)
			if err != nil {
				return nil, fmt.Errorf("auth_file: %v", err)
			}
			if len(problems) > 0 {
				return nil, joinProblems(problems)
			}
			n.AuthFile, n.AuthUsers = path, users
		}
	case "auth_hba_file", "client_tls_key_file", "client_tls_cert_file", "client_tls_ca_file",
		"server_tls_key_file", "server_tls_cert_file", "server_tls_ca_file":
		if s := p.get(&n); s != "" {
			path, _ := resolvePath(s, baseDir)
			p.set(&n, path)
		}
	}
	if errs, _ := n.validate(nil); len(errs) > 0 {
		return nil, joinProblems(errs)
	}
	buildSettings(&n, extra)
	return &n, nil
}

// Implemented reports whether pgwarden acts on a [pgbouncer] key (false for
// keys it accepts for compatibility only; unknown keys are false too).
func Implemented(key string) bool {
	p, ok := lookupParam(strings.ToLower(key))
	return ok && p.set != nil
}

// settingError is a WithSetting refusal: its text, and the sentinel it
// wraps.
type settingError struct {
	kind error
	msg  string
}

func (e settingError) Error() string { return e.msg }
func (e settingError) Unwrap() error { return e.kind }
