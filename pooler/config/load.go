package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Load loads a configuration file, choosing the format by extension: .yaml
// or .yml is pgwarden's native format (LoadYAML), anything else is
// PgBouncer's pgbouncer.ini (LoadINI).
//
// Either way the result starts from PgBouncer 1.25's defaults, has its
// auth_file loaded into AuthUsers, is validated (Validate), and has Settings
// filled for SHOW CONFIG. On failure the error holds every problem found,
// joined (errors.Join of Problem values, each "file:line: key: message"),
// and the Config is nil. Non-fatal findings are in Config.Warnings.
//
// Relative file names in the configuration (%include, auth_file,
// auth_hba_file, TLS files) are resolved against the working directory, as
// PgBouncer does; when a file is not found there, the directory of the
// configuration file is tried, and the Config then holds that path.
func Load(path string) (*Config, error) {
	return result(load(path))
}

// Check loads path as Load does and returns every problem, one per element:
// first the errors (Problem values), then the warnings (Warning values, whose
// Error() starts with "warning: "). An empty result means the file is good.
// pgwarden check-config prints them one per line.
func Check(path string) []error {
	_, errs, warns := load(path)
	out := make([]error, 0, len(errs)+len(warns))
	for _, p := range errs {
		out = append(out, p)
	}
	for _, w := range warns {
		out = append(out, Warning{w})
	}
	return out
}

// IsYAML reports whether Load reads path as pooler.yaml (by extension).
func IsYAML(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return true
	}
	return false
}

// load dispatches on the extension and returns the Config with its errors
// and warnings.
func load(path string) (*Config, []Problem, []Problem) {
	if IsYAML(path) {
		return loadYAML(path)
	}
	return loadINI(path)
}

// result turns a loader's output into Load's (Config, error).
func result(c *Config, errs, warns []Problem) (*Config, error) {
	if len(errs) > 0 {
		return nil, joinProblems(errs)
	}
	c.Warnings = warns
	return c, nil
}

// finish is the part of loading both formats share, after parsing:
// normalise overrides, resolve file names, load the auth file, validate and
// fill Settings. baseDir is the configuration file's directory; pos says
// where each pgbouncer key was set; extra holds unimplemented keys' values.
func finish(c *Config, baseDir string, pos positions, extra map[string]string) (errs, warns []Problem) {
	normalizeOverrides(c)
	for _, f := range []*string{&c.AuthHBAFile, &c.ClientTLS.KeyFile, &c.ClientTLS.CertFile, &c.ClientTLS.CAFile, &c.ServerTLS.KeyFile, &c.ServerTLS.CertFile, &c.ServerTLS.CAFile} {
		if *f != "" {
			*f, _ = resolvePath(*f, baseDir)
		}
	}
	resolveEntraFiles(c, baseDir)
	if c.AuthFile != "" {
		p, found := resolvePath(c.AuthFile, baseDir)
		if !found {
			warns = append(warns, pos.problem(c.Path, "auth_file", fmt.Sprintf("auth_file %q not found; no user can sign in with a password from it", c.AuthFile)))
		} else {
			c.AuthFile = p
			users, problems, err := loadAuthFile(p)
			switch {
			case err != nil:
				errs = append(errs, pos.problem(c.Path, "auth_file", err.Error()))
			case len(problems) > 0:
				errs = append(errs, problems...)
			default:
				c.AuthUsers = users
			}
		}
	}
	verrs, vwarns := c.validate(pos)
	errs = append(errs, verrs...)
	warns = append(warns, vwarns...)
	buildSettings(c, extra)
	return errs, warns
}

// resolvePath finds a file named in a configuration: an absolute name as is;
// a relative one in the working directory, else in baseDir. It returns the
// name to use and whether the file exists (if in neither place, the name as
// given and false).
func resolvePath(name, baseDir string) (string, bool) {
	if exists(name) {
		return name, true
	}
	if filepath.IsAbs(name) || baseDir == "" {
		return name, false
	}
	alt := filepath.Join(baseDir, name)
	if exists(alt) {
		return alt, true
	}
	return name, false
}

// exists reports whether a file exists (a stat error other than "does not
// exist", such as permission denied, counts as existing so that opening it
// reports the real error).
func exists(name string) bool {
	_, err := os.Stat(name)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}
