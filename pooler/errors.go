package pooler

import (
	"errors"
	"fmt"
)

// errorCode is the pooler's one error taxonomy: each code fixes the SQLSTATE,
// the severity and the text a client sees, and names the counter the metrics
// side bumps. Errors produced by PostgreSQL itself are never wrapped in a
// code: they are relayed untouched.
type errorCode int

const (
	codeInternal errorCode = iota
	codeProtocolViolation
	codeStartupTooLarge
	codeUnsupportedProtocol
	codeNoUsername
	codeUnsupportedStartupParam
	codeUnsupportedOptions
	codeSSLRequired
	codeUnencryptedAfterSSL
	codeAuthFailed
	codeSASLFailed
	codeTrustFailed
	codeNotAllowed
	codeNoSuchDatabase
	codeDatabaseDisabled
	codeMaxClientConn
	codeMaxDBClientConn
	codeMaxUserClientConn
	codeQueryWaitTimeout
	codeQueryTimeout
	codeIdleTransactionTimeout
	codeClientIdleTimeout
	codeClientLoginTimeout
	codeServerLoginFailed
	codeServerLoginRetry
	codeServerConnCrashed
	codeStatementModeTx
	codeShuttingDown
	codeAdminForcedDisconnect
	codeDatabaseRemoved
	codeConfigError
	codePasswordEmpty
	codeMessageTooLarge
	codeTransactionTimeout
	codeCertFailed
	codeNoAuthMethod
	codeLoginRejected
	codePeerFailed
	codeEntraFailed
	codeEntraTLSRequired
	codeEntraRevoked
	codeEntraTokenExpired
	codeSignInThrottled
	codeReplicationInvalid
	codeReplicationNotAllowed
	codeReplicationConsole
	codeReplicationClosed
)

// codeInfo is what a code means to the client and to the metrics.
type codeInfo struct {
	name     string // metric label and log tag
	sqlstate string
	message  string // client-visible text; "%s" filled from pgError.arg
}

var codeTable = map[errorCode]codeInfo{
	codeInternal:                {"internal", "XX000", "internal pooler error"},
	codeProtocolViolation:       {"protocol_violation", "08P01", "%s"},
	codeStartupTooLarge:         {"startup_too_large", "08P01", "startup packet too large"},
	codeUnsupportedProtocol:     {"unsupported_protocol", "08P01", "%s"},
	codeNoUsername:              {"no_username", "08P01", "no username supplied"},
	codeUnsupportedStartupParam: {"unsupported_startup_parameter", "08P01", "unsupported startup parameter: %s"},
	codeUnsupportedOptions:      {"unsupported_options", "08P01", "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed"},
	codeSSLRequired:             {"ssl_required", "28000", "SSL required"},
	codeUnencryptedAfterSSL:     {"unencrypted_after_ssl", "08P01", "received unencrypted data after SSL request"},
	codeAuthFailed:              {"auth_failed", "28P01", "password authentication failed for user \"%s\""},
	codeSASLFailed:              {"auth_failed", "28P01", "password authentication failed for user \"%s\""},
	codeTrustFailed:             {"auth_failed", "28000", "\"trust\" authentication failed"},
	codeNotAllowed:              {"not_allowed", "28000", "not allowed"},
	codeNoSuchDatabase:          {"no_such_database", "3D000", "no such database: %s"},
	codeDatabaseDisabled:        {"database_disabled", "55000", "database \"%s\" is disabled"},
	codeMaxClientConn:           {"max_client_conn", "53300", "no more connections allowed (max_client_conn)"},
	codeMaxDBClientConn:         {"max_db_client_conn", "53300", "client connections exceeded (max_db_client_connections)"},
	codeMaxUserClientConn:       {"max_user_client_conn", "53300", "client connections exceeded (max_user_client_connections)"},
	codeQueryWaitTimeout:        {"query_wait_timeout", "08P01", "query_wait_timeout"},
	codeQueryTimeout:            {"query_timeout", "57014", "query timeout"},
	codeIdleTransactionTimeout:  {"idle_transaction_timeout", "25P03", "idle transaction timeout"},
	codeClientIdleTimeout:       {"client_idle_timeout", "08P01", "client_idle_timeout"},
	codeClientLoginTimeout:      {"client_login_timeout", "08P01", "client_login_timeout"},
	codeServerLoginFailed:       {"server_login_failed", "08P01", "server login failed: %s"},
	codeServerLoginRetry:        {"server_login_retry", "08P01", "server login has been failing, cached error: %s (server_login_retry)"},
	codeServerConnCrashed:       {"server_conn_crashed", "08006", "server conn crashed?"},
	codeStatementModeTx:         {"statement_mode_transaction", "08P01", "transaction blocks not allowed in statement pooling mode"},
	codeShuttingDown:            {"shutting_down", "57P01", "pooler is shutting down"},
	codeAdminForcedDisconnect:   {"admin_forced_disconnect", "57P01", "admin forced disconnect"},
	codeDatabaseRemoved:         {"database_removed", "57P01", "database removed"},
	codeConfigError:             {"config_error", "08P01", "bouncer config error"},
	codePasswordEmpty:           {"auth_failed", "28P01", "empty password returned by client"},
	codeMessageTooLarge:         {"message_too_large", "08P01", "message too large: %s"},
	codeTransactionTimeout:      {"transaction_timeout", "25P04", "transaction timeout"},
	codeCertFailed:              {"auth_failed", "28000", "certificate authentication failed"},
	codeNoAuthMethod:            {"no_auth_method", "28000", "no authentication method is found"},
	codeLoginRejected:           {"login_rejected", "28000", "login rejected"},
	codePeerFailed:              {"auth_failed", "28000", "unix socket login rejected"},
	codeEntraFailed:             {"auth_failed", "28000", "An error occurred while validating the access token. Please acquire a new token and retry."},
	codeEntraTLSRequired:        {"auth_failed", "28000", "Microsoft Entra ID sign-in needs an encrypted connection: connect with sslmode=require"},
	codeEntraRevoked:            {"entra_revoked", "57P01", "terminating connection: the Microsoft Entra principal of this role was removed"},
	codeEntraTokenExpired:       {"entra_token_expired", "57P01", "The access token has expired. Please acquire a new token and retry."},
	// A throttled sign-in (throttle.go) is refused for what happened
	// before, not for its credentials: 53300, as PostgreSQL refuses
	// connections over a limit, which drivers treat as worth retrying
	// later; a 28xxx code would read as a wrong password. The message
	// (built in throttledError) says when to retry.
	codeSignInThrottled: {"signin_throttled", "53300", "too many failed sign-ins"},
	// PostgreSQL's own error for a bad replication startup parameter.
	codeReplicationInvalid: {"invalid_replication", "22023", "invalid value for parameter \"replication\": \"%s\""},
	// A database whose allow_replication refuses the client's kind of
	// replication: 28000, as PostgreSQL's pg_hba.conf refusals of
	// replication connections (the message is built with the kind).
	codeReplicationNotAllowed: {"replication_not_allowed", "28000", "replication connections to database \"%s\" are not allowed"},
	codeReplicationConsole:    {"replication_not_allowed", "0A000", "the admin console does not accept replication connections"},
	codeReplicationClosed:     {"replication_closed", "57P01", "terminating replication connection due to administrator command: the database's server connections are being renewed (RECONNECT, KILL, or RELOAD)"},
}

// String returns the code's metric label.
func (c errorCode) String() string { return codeTable[c].name }

// pgError is a pooler-generated error destined for a client. arg fills the
// message's %s; cause is for logs only and never reaches the client.
type pgError struct {
	code  errorCode
	arg   string
	cause error
	// sqlstate and msg override the table (used to forward a server's own
	// login error to waiting clients).
	sqlstate string
	msg      string
	// hint, when set, is sent as the error's HINT field.
	hint string
}

func (e *pgError) Error() string {
	s := e.clientMessage()
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *pgError) Unwrap() error { return e.cause }

func (e *pgError) clientMessage() string {
	if e.msg != "" {
		return e.msg
	}
	info := codeTable[e.code]
	if containsVerb(info.message) {
		return fmt.Sprintf(info.message, e.arg)
	}
	return info.message
}

// clientSQLState is the SQLSTATE the client gets: the override when it is
// a well-formed one (a broken or hostile server may send anything in its
// error's C field, and the pooler passes a server's login error on), else
// the code's own.
func (e *pgError) clientSQLState() string {
	if validSQLState(e.sqlstate) {
		return e.sqlstate
	}
	return codeTable[e.code].sqlstate
}

// validSQLState reports whether s is a SQLSTATE: five digits or upper-case
// ASCII letters.
func validSQLState(s string) bool {
	if len(s) != 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

func containsVerb(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '%' && s[i+1] == 's' {
			return true
		}
	}
	return false
}

func newError(code errorCode, arg string) *pgError { return &pgError{code: code, arg: arg} }

func wrapError(code errorCode, arg string, cause error) *pgError {
	return &pgError{code: code, arg: arg, cause: cause}
}

// asPgError extracts the client-facing error of err, or nil.
func asPgError(err error) *pgError {
	var pe *pgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}
