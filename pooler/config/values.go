package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// parseValue parses a pgbouncer.ini value of the given kind, with PgBouncer's
// rules. The Go type of the result is fixed per kind: int (kindInt,
// kindUint), uint32 (kindFileMode), bool, time.Duration (kindTime,
// kindSeconds, kindMillis), string, []string, PoolMode, AuthType, TLSMode.
// The error says what was expected.
func parseValue(kind paramKind, s string) (any, error) {
	switch kind {
	case kindInt:
		n, err := parseINIInt(s, math.MinInt32, math.MaxInt32)
		if err != nil {
			return nil, err
		}
		return int(n), nil
	case kindUint:
		n, err := parseINIInt(s, 0, math.MaxUint32)
		if err != nil {
			return nil, err
		}
		return int(n), nil
	case kindFileMode:
		n, err := parseINIInt(s, 0, 0o7777)
		if err != nil {
			return nil, fmt.Errorf("%w (a file mode such as 0777)", err)
		}
		return uint32(n), nil
	case kindBool:
		return parseINIBool(s)
	case kindTime:
		return parseINISeconds(s)
	case kindSeconds, kindMillis:
		n, err := parseINIInt(s, math.MinInt32, math.MaxInt32)
		if err != nil {
			return nil, err
		}
		if kind == kindSeconds {
			return time.Duration(n) * time.Second, nil
		}
		return time.Duration(n) * time.Millisecond, nil
	case kindString:
		return s, nil
	case kindList:
		return splitList(s), nil
	case kindPoolMode:
		m, ok := ParsePoolMode(strings.ToLower(s))
		if !ok {
			return nil, errors.New("expected one of session, transaction, statement")
		}
		return m, nil
	case kindAuthType:
		t, ok := parseAuthType(s)
		if !ok {
			return nil, errors.New("expected one of any, trust, plain, md5, scram-sha-256, cert, hba, ldap, pam")
		}
		return t, nil
	case kindTLSMode:
		m, ok := parseTLSMode(s)
		if !ok {
			return nil, errors.New("expected one of disable, allow, prefer, require, verify-ca, verify-full")
		}
		return m, nil
	}
	return nil, fmt.Errorf("internal error: unknown kind %d", kind)
}

// renderValue renders a value as PgBouncer's SHOW CONFIG does: integers in
// decimal, flags as 0/1, times as seconds ("%g"), lists comma-joined.
func renderValue(kind paramKind, v any) string {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case bool:
		if x {
			return "1"
		}
		return "0"
	case time.Duration:
		switch kind {
		case kindSeconds:
			return strconv.FormatInt(int64(x/time.Second), 10)
		case kindMillis:
			return strconv.FormatInt(int64(x/time.Millisecond), 10)
		}
		return formatSeconds(x)
	case string:
		return x
	case []string:
		return strings.Join(x, ",")
	case PoolMode:
		return x.String()
	case AuthType:
		return string(x)
	case TLSMode:
		return string(x)
	}
	return fmt.Sprint(v)
}

// formatSeconds renders a duration as C's "%g" of its seconds.
func formatSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'g', 6, 64)
}

// parseINIInt parses an integer as strtol(s, &end, 0) does (0777 is octal,
// 0x10 hex) and checks its range.
func parseINIInt(s string, lo, hi int64) (int64, error) {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		if lo >= 0 {
			return 0, errors.New("expected a non-negative integer (such as 20, 0x14 or 024)")
		}
		return 0, errors.New("expected an integer (such as 20, 0x14 or 024)")
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("expected an integer from %d to %d", lo, hi)
	}
	return n, nil
}

// parseINIBool parses a PgBouncer flag: an integer, 0 or 1.
func parseINIBool(s string) (bool, error) {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil || (n != 0 && n != 1) {
		return false, fmt.Errorf("expected 0 or 1 (PgBouncer booleans are integers; %q is not accepted)", s)
	}
	return n == 1, nil
}

// parseINISeconds parses a CF_TIME_USEC value: decimal seconds, no unit,
// not negative.
func parseINISeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(s, "_xXpP") {
		return 0, errors.New("expected a number of seconds such as 15 or 2.5, without a unit")
	}
	if f < 0 {
		return 0, errors.New("expected a number of seconds; it must not be negative")
	}
	if f*float64(time.Second) >= math.MaxInt64 {
		return 0, errors.New("expected a number of seconds; this one is too large")
	}
	return time.Duration(f * float64(time.Second)), nil
}

// parseAuthType parses an auth_type value (case-insensitive), including the
// methods PgBouncer has but pgwarden does not (Validate refuses those).
func parseAuthType(s string) (AuthType, bool) {
	t := AuthType(strings.ToLower(s))
	switch t {
	case AuthAny, AuthTrust, AuthPlain, AuthMD5, AuthSCRAM, AuthHBA, AuthCert, authLDAP, authPAM:
		return t, true
	}
	return "", false
}

// ldap and pam: PgBouncer spells them so; pgwarden does not support them.
const (
	authLDAP AuthType = "ldap"
	authPAM  AuthType = "pam"
)

// parseTLSMode parses an sslmode (case-insensitive).
func parseTLSMode(s string) (TLSMode, bool) {
	m := TLSMode(strings.ToLower(s))
	switch m {
	case TLSDisable, TLSAllow, TLSPrefer, TLSRequire, TLSVerifyCA, TLSVerifyFull:
		return m, true
	}
	return "", false
}
