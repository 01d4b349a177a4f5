package config

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Error renders the problem as "file:line: key: message", leaving out the
// parts that are empty (and the line when it is 0).
func (p Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(p.Line))
		}
	} else if p.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(p.Line))
	}
	for _, part := range []string{p.Key, p.Message} {
		if part == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(part)
	}
	return b.String()
}

// Warning is a non-fatal Problem as returned by Check. Its Error() is the
// Problem's text prefixed with "warning: ", so a caller printing Check's
// result one per line tells warnings from errors.
type Warning struct {
	Problem
}

// Error renders "warning: file:line: key: message".
func (w Warning) Error() string {
	return "warning: " + w.Problem.Error()
}

// joinProblems returns the problems as one error (errors.Join of the Problem
// values), or nil when there are none.
func joinProblems(ps []Problem) error {
	if len(ps) == 0 {
		return nil
	}
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// sortProblems orders problems by file, then line, keeping the order of
// discovery for ties.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
}

// origin says where a setting was given: file, line and the key as written
// there (a pgbouncer.ini key, or a dotted path such as "pool.mode" in YAML).
type origin struct {
	file string
	line int
	key  string
}

// positions maps a pgbouncer.ini key name to where the loaded file set it, so
// that validation can point at the right line in either format.
type positions map[string]origin

// problem builds a Problem for the pgbouncer key, located where the file set
// it, else at the config file with the pgbouncer key name.
func (p positions) problem(file, key, msg string) Problem {
	if o, ok := p[key]; ok {
		return Problem{File: o.file, Line: o.line, Key: o.key, Message: msg}
	}
	return Problem{File: file, Key: key, Message: msg}
}
