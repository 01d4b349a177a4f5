package config

import (
	"bytes"
	"fmt"
	"os"
)

// Auth file limits. PgBouncer ≤ 1.25.2 caps secrets at 2047 bytes; pgwarden
// allows 64 KiB because Entra ID access tokens are longer than that.
const (
	maxAuthUserLen   = 127       // PgBouncer's MAX_USERNAME - 1
	maxAuthSecretLen = 64 * 1024 // bytes, after unquoting
)

// LoadAuthFile reads a PgBouncer auth_file (userlist.txt) and returns user
// name → secret (plain text, "md5…" or "SCRAM-SHA-256$…").
//
// Format, as PgBouncer's load_auth_file reads it: each entry is
// "user" "secret" (anything after the secret on the line is ignored); ""
// inside quotes is a literal quote; leading whitespace and blank lines are
// skipped; lines starting with ';' are comments. Anything else is a "broken
// auth file" error naming file and line. A later entry for the same user
// wins. Secrets may be up to 64 KiB.
//
// All problems are returned joined (errors.Join of Problem values), and then
// the map is nil: a broken file is rejected as a whole. When the file cannot
// be read, the error wraps the os error (errors.Is(err, fs.ErrNotExist)
// works).
func LoadAuthFile(path string) (map[string]string, error) {
	users, problems, err := loadAuthFile(path)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, joinProblems(problems)
	}
	return users, nil
}

// loadAuthFile reads and parses path; err is only for a file that cannot be
// read.
func loadAuthFile(path string) (map[string]string, []Problem, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("could not open auth_file %s: %w", path, err)
	}
	users, problems := parseAuthFile(path, data)
	return users, problems, nil
}

// parseAuthFile parses userlist.txt contents, mirroring PgBouncer's scanner
// (which works on the whole buffer, so a quoted field may span lines). On a
// broken entry it reports the line and resumes at the next line.
func parseAuthFile(path string, data []byte) (map[string]string, []Problem) {
	users := map[string]string{}
	var problems []Problem
	line := 1
	i := 0
	// advance moves i to j, counting newlines.
	advance := func(j int) {
		line += bytes.Count(data[i:j], []byte{'\n'})
		i = j
	}
	skipLine := func() {
		if k := bytes.IndexByte(data[i:], '\n'); k >= 0 {
			advance(i + k)
		} else {
			advance(len(data))
		}
	}
	broken := func(msg string, at int) {
		problems = append(problems, Problem{File: path, Line: at, Message: msg})
	}
	for i < len(data) {
		// Skip whitespace, including empty lines.
		j := i
		for j < len(data) && isSpace(data[j]) {
			j++
		}
		advance(j)
		if i >= len(data) {
			break
		}
		start := line
		switch data[i] {
		case ';':
			skipLine()
			continue
		case '"':
		default:
			broken("broken auth file: an entry must look like \"user\" \"secret\"", start)
			skipLine()
			continue
		}
		// User name.
		user, end, ok := quotedField(data, i)
		if !ok {
			broken("broken auth file: unterminated user name", start)
			advance(len(data))
			break
		}
		advance(end)
		// Password: the next quote, wherever it is (PgBouncer's find_quote
		// with start=true skips anything in between).
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			broken("broken auth file: no secret after the user name", start)
			advance(len(data))
			break
		}
		advance(i + q)
		secret, end, ok := quotedField(data, i)
		if !ok {
			broken("broken auth file: unterminated secret", start)
			advance(len(data))
			break
		}
		advance(end)
		switch {
		case len(user) > maxAuthUserLen:
			broken(fmt.Sprintf("user name too long in auth file (%d bytes; at most %d)", len(user), maxAuthUserLen), start)
		case len(secret) > maxAuthSecretLen:
			broken(fmt.Sprintf("secret too long in auth file (%d bytes; at most %d)", len(secret), maxAuthSecretLen), start)
		default:
			users[user] = secret
		}
		// Ignore the rest of the line.
		skipLine()
	}
	return users, problems
}

// quotedField reads the double-quoted field whose opening quote is at
// data[at]; "" inside it is a literal quote. It returns the unquoted value and
// the index just after the closing quote.
func quotedField(data []byte, at int) (string, int, bool) {
	var b []byte
	for j := at + 1; j < len(data); j++ {
		if data[j] != '"' {
			b = append(b, data[j])
			continue
		}
		if j+1 < len(data) && data[j+1] == '"' {
			b = append(b, '"')
			j++
			continue
		}
		return string(b), j + 1, true
	}
	return "", len(data), false
}

// isSpace is C's isspace in the "C" locale.
func isSpace(b byte) bool {
	switch b {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return false
}
