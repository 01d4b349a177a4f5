package pooler

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os/user"
	"slices"
	"strconv"
	"syscall"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// Client authentication. A ClientAuthenticator runs the exchange with a
// client over an AuthExchange and returns who the client is. The built-in
// password methods (trust, any, plain, md5, scram-sha-256, auth_query) live
// here; other methods (Entra ID tokens) plug in through Options.

// ClientAuthenticator signs a client in. Claims returns true when this
// authenticator is responsible for the exchange (for example, the Entra
// method for databases or roles configured for it); Authenticate then runs
// the exchange. A returned *AuthFailure is reported to the audit sink with
// its reason, and the client sees only its public message.
type ClientAuthenticator interface {
	Claims(ex *AuthExchange) bool
	Authenticate(ctx context.Context, ex *AuthExchange) (*Identity, error)
}

// AuthExchange is one client's sign-in conversation. It is owned by the
// client's goroutine for the duration of Authenticate.
type AuthExchange struct {
	User     string
	Database string
	TLS      bool
	Unix     bool
	Client   string // remote address
	c        *clientConn
	rd       msgReader
	// gate reserves the sign-in throttle's budget while a credential
	// the client sent is checked (nil when the throttle is off).
	gate *throttleTicket
	// physical is set for a physical replication connection, which only
	// hba rules for the replication keyword match.
	physical bool
}

// Identity is the result of a successful sign-in.
type Identity struct {
	// Method names the method for logs and metrics: trust, plain, md5,
	// scram, any, peer, entra, ….
	Method string
	// ClientKey and ServerKey are set after a SCRAM sign-in and allow
	// SCRAM passthrough to the server.
	ClientKey []byte
	ServerKey []byte
	// BackendPassword, when set, is used to log in to the server for this
	// role (the client's real password when the stored secret is a hash).
	BackendPassword string
	// Token and Principal are set after an Entra ID sign-in: the
	// validated token's claims and the principal it matched.
	Token     *authn.Token
	Principal *authn.Principal
	// rawToken is the token itself, kept only for server_auth =
	// passthrough; it is never logged.
	rawToken string
	// processOwner is set for the console's own_user: the Unix-socket
	// peer runs as pgwarden's user (SO_PEERCRED). HBA peer sign-ins are
	// not this.
	processOwner bool
}

// AuthFailure is a refused sign-in: Reason goes to the audit log, Public is
// what the client is told (a *pgError).
type AuthFailure struct {
	Reason string
	Public *pgError
	// Identity, when set, is what was learnt before the refusal (the
	// token's claims), for the audit record.
	Identity *Identity
}

func (f *AuthFailure) Error() string { return "sign-in refused: " + f.Reason }
func (f *AuthFailure) Unwrap() error { return f.Public }

// Cleartext asks the client for its password in clear text.
func (ex *AuthExchange) Cleartext() (string, error) {
	if err := writeAll(ex.c, appendAuthRequest(nil, 3, nil)); err != nil {
		return "", err
	}
	body, err := ex.readResponse()
	if err != nil {
		return "", err
	}
	pw, _, ok := cstring(body)
	if !ok {
		return "", newError(codeProtocolViolation, "invalid password message")
	}
	return pw, nil
}

// MD5 asks the client for an md5 response with the given salt.
func (ex *AuthExchange) MD5(salt [4]byte) (string, error) {
	if err := writeAll(ex.c, appendAuthRequest(nil, 5, salt[:])); err != nil {
		return "", err
	}
	body, err := ex.readResponse()
	if err != nil {
		return "", err
	}
	resp, _, ok := cstring(body)
	if !ok {
		return "", newError(codeProtocolViolation, "invalid password message")
	}
	return resp, nil
}

// SASLStart offers the mechanisms and returns the client's choice and its
// initial response.
func (ex *AuthExchange) SASLStart(mechs ...string) (string, []byte, error) {
	var extra []byte
	for _, m := range mechs {
		extra = appendCString(extra, m)
	}
	extra = append(extra, 0)
	if err := writeAll(ex.c, appendAuthRequest(nil, 10, extra)); err != nil {
		return "", nil, err
	}
	body, err := ex.readResponse()
	if err != nil {
		return "", nil, err
	}
	mech, rest, ok := cstring(body)
	if !ok || len(rest) < 4 {
		return "", nil, newError(codeProtocolViolation, "invalid SASLInitialResponse message")
	}
	n := int32(binary.BigEndian.Uint32(rest))
	rest = rest[4:]
	if n < 0 {
		return mech, nil, nil
	}
	if int(n) != len(rest) {
		return "", nil, newError(codeProtocolViolation, "invalid SASLInitialResponse message")
	}
	return mech, append([]byte(nil), rest...), nil
}

// SASLContinue sends AuthenticationSASLContinue with data and returns the
// client's next response.
func (ex *AuthExchange) SASLContinue(data []byte) ([]byte, error) {
	if err := writeAll(ex.c, appendAuthRequest(nil, 11, data)); err != nil {
		return nil, err
	}
	body, err := ex.readResponse()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), body...), nil
}

// SASLFinal sends AuthenticationSASLFinal with data.
func (ex *AuthExchange) SASLFinal(data []byte) error {
	return writeAll(ex.c, appendAuthRequest(nil, 12, data))
}

// readResponse reads the client's next password message. No throttle
// budget is reserved while it waits for the client; one is reserved before
// pgwarden goes on to check what arrived (throttle.go).
func (ex *AuthExchange) readResponse() ([]byte, error) {
	ex.gate.pause()
	t, body, err := ex.rd.readMessage()
	if err != nil {
		switch {
		case errors.Is(err, errMessageTooLarge):
			return nil, newError(codeMessageTooLarge, "password message longer than 64 KiB")
		case errors.Is(err, errBadMessageLength):
			return nil, newError(codeProtocolViolation, "invalid message length")
		}
		return nil, err
	}
	if t != 'p' {
		return nil, newError(codeProtocolViolation, fmt.Sprintf("expected password response, got message type %q", t))
	}
	if err := ex.gate.acquire(); err != nil {
		return nil, err
	}
	return body, nil
}

// fail builds an AuthFailure for user with a reason for the audit log.
func authFail(code errorCode, user, reason string) *AuthFailure {
	return &AuthFailure{Reason: reason, Public: newError(code, user)}
}

// userSecret finds the stored secret for a client user: the auth file
// first, then auth_query through auth_user. ok is false for an unknown user.
func (s *Server) userSecret(ctx context.Context, cfg *config.Config, user, database string) (authn.Secret, bool, error) {
	if sec, ok := cfg.AuthUsers[user]; ok {
		return authn.ParseSecret(sec), true, nil
	}
	authUser, _ := effectiveAuthUser(cfg, database)
	if authUser == "" {
		return authn.Secret{}, false, nil
	}
	sec, ok, err := s.pools.authQuery(ctx, cfg, database, user)
	if err != nil || !ok {
		return authn.Secret{}, false, err
	}
	return authn.ParseSecret(sec), true, nil
}

func effectiveAuthUser(cfg *config.Config, database string) (string, string) {
	if db, ok := cfg.LookupDatabase(database); ok {
		if db.AuthUser != "" {
			q := db.AuthQuery
			if q == "" {
				q = cfg.AuthQuery
			}
			return db.AuthUser, q
		}
	}
	return cfg.AuthUser, cfg.AuthQuery
}

// passwordAuth is the built-in authenticator for auth_type trust, any,
// plain, md5, scram-sha-256, cert and hba, with PgBouncer's rules: an
// unknown user still gets a challenge and then "password authentication
// failed" (no user enumeration), md5 falls back to SCRAM for SCRAM secrets.
// With auth_type hba the method comes from the first auth_hba_file rule
// matching the connection (hba.go).
func (s *Server) passwordAuth(ctx context.Context, cfg *config.Config, ex *AuthExchange) (*Identity, error) {
	method := cfg.AuthType
	if method == config.AuthHBA {
		rule, err := s.hbaLookup(cfg, ex)
		if err != nil {
			return nil, err
		}
		switch rule.method {
		case hbaReject:
			return nil, &AuthFailure{Reason: "hba_reject", Public: errLoginRejected()}
		case hbaEntra:
			if !cfg.Entra.Enabled {
				return nil, &AuthFailure{Reason: "entra_not_configured", Public: newError(codeConfigError, "")}
			}
			return s.entraAuth(ctx, cfg, ex, config.AuthModeEntra)
		case hbaPeer:
			return s.peerAuth(cfg, ex)
		}
		method = rule.method.authType()
	}
	return s.authWith(ctx, cfg, ex, method)
}

// authWith runs the exchange of one auth_type (any but hba).
func (s *Server) authWith(ctx context.Context, cfg *config.Config, ex *AuthExchange, method config.AuthType) (*Identity, error) {
	switch method {
	case config.AuthAny:
		return &Identity{Method: "any"}, nil
	case config.AuthTrust:
		if knownUser(cfg, ex.User) {
			return &Identity{Method: "trust"}, nil
		}
		return nil, &AuthFailure{Reason: "unknown_role", Public: newError(codeTrustFailed, "")}
	case config.AuthCert:
		return certAuth(ex)
	}
	sec, known, err := s.userSecret(ctx, cfg, ex.User, ex.Database)
	if err != nil {
		return nil, err
	}
	switch method {
	case config.AuthPlain:
		pw, err := ex.Cleartext()
		if err != nil {
			return nil, err
		}
		return checkCleartext(sec, known, ex.User, pw)
	case config.AuthMD5:
		if !known || sec.Kind != authn.SecretSCRAM {
			var salt [4]byte
			_, _ = rand.Read(salt[:])
			resp, err := ex.MD5(salt)
			if err != nil {
				return nil, err
			}
			if resp == "" {
				return nil, &AuthFailure{Reason: "empty_password", Public: newError(codePasswordEmpty, "")}
			}
			if !known {
				return nil, authFail(codeAuthFailed, ex.User, "unknown_role")
			}
			if !authn.VerifyMD5(sec, ex.User, salt, resp) {
				return nil, authFail(codeAuthFailed, ex.User, "wrong_password")
			}
			return &Identity{Method: "md5"}, nil
		}
		return s.scramAuth(cfg, ex, sec, known)
	case config.AuthSCRAM:
		return s.scramAuth(cfg, ex, sec, known)
	}
	return nil, &AuthFailure{Reason: "unsupported_auth_type", Public: newError(codeConfigError, "")}
}

// knownUser reports whether user may sign in without a password check
// (trust, peer): it must be in the auth file or be an admin or stats user,
// as PgBouncer refuses its "mock" users there.
func knownUser(cfg *config.Config, user string) bool {
	_, ok := cfg.AuthUsers[user]
	return ok || isAdminUser(cfg, user)
}

// certAuth signs in with the client certificate, verified against
// client_tls_ca_file during the handshake: its Common Name must be the user.
func certAuth(ex *AuthExchange) (*Identity, error) {
	tc, ok := ex.c.conn.(*tls.Conn)
	if !ok {
		return nil, &AuthFailure{Reason: "tls_required", Public: newError(codeCertFailed, "")}
	}
	certs := tc.ConnectionState().VerifiedChains
	if len(certs) == 0 || len(certs[0]) == 0 {
		return nil, &AuthFailure{Reason: "no_client_certificate", Public: newError(codeCertFailed, "")}
	}
	if certs[0][0].Subject.CommonName != ex.User {
		return nil, &AuthFailure{Reason: "certificate_user_mismatch", Public: newError(codeCertFailed, "")}
	}
	return &Identity{Method: "cert"}, nil
}

// peerAuth signs in a Unix-socket client whose operating-system user (from
// SO_PEERCRED) has the name of the requested user (HBA method peer).
func (s *Server) peerAuth(cfg *config.Config, ex *AuthExchange) (*Identity, error) {
	if !ex.Unix {
		return nil, &AuthFailure{Reason: "peer_not_unix", Public: errPeerFailed()}
	}
	if !knownUser(cfg, ex.User) {
		return nil, &AuthFailure{Reason: "unknown_role", Public: errPeerFailed()}
	}
	name, err := peerUserName(ex.c.raw)
	if err != nil {
		s.log.Warn("peer authentication: cannot find the peer's user", "client", ex.Client, "user", ex.User, "err", err)
		return nil, &AuthFailure{Reason: "peer_lookup_failed", Public: errPeerFailed()}
	}
	if name != ex.User {
		return nil, &AuthFailure{Reason: "peer_user_mismatch", Public: errPeerFailed()}
	}
	return &Identity{Method: "peer"}, nil
}

// peerUserName returns the name of the operating-system user at the other
// end of a Unix socket.
func peerUserName(conn net.Conn) (string, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return "", fmt.Errorf("not a Unix socket (%T)", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "", err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return "", err
	}
	if credErr != nil {
		return "", credErr
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(cred.Uid), 10))
	if err != nil {
		return "", err
	}
	return u.Username, nil
}

func isAdminUser(cfg *config.Config, user string) bool {
	return slices.Contains(cfg.AdminUsers, user) || slices.Contains(cfg.StatsUsers, user)
}

// scramIterations is what the pooler uses when it has to build a SCRAM
// secret from a plain-text password (PostgreSQL's default).
const scramIterations = 4096

func (s *Server) scramAuth(cfg *config.Config, ex *AuthExchange, sec authn.Secret, known bool) (*Identity, error) {
	var srv *authn.SCRAMServer
	switch {
	case !known || sec.Kind == authn.SecretMD5:
		srv = authn.NewMockSCRAMServer(ex.User, scramIterations)
	case sec.Kind == authn.SecretSCRAM:
		srv = authn.NewSCRAMServer(sec.SCRAM)
	default:
		srv = s.scramPlain.Server(ex.User, sec.Plain, scramIterations)
	}
	mech, first, err := ex.SASLStart("SCRAM-SHA-256")
	if err != nil {
		return nil, err
	}
	if mech != "SCRAM-SHA-256" {
		return nil, &AuthFailure{Reason: "unsupported_sasl_mechanism", Public: newError(codeSASLFailed, ex.User)}
	}
	serverFirst, err := srv.ServerFirst(first)
	if err != nil {
		return nil, &AuthFailure{Reason: "malformed_scram", Public: newError(codeSASLFailed, ex.User)}
	}
	final, err := ex.SASLContinue(serverFirst)
	if err != nil {
		return nil, err
	}
	serverFinal, err := srv.ServerFinal(final)
	if err != nil {
		reason := "wrong_password"
		switch {
		case !known:
			reason = "unknown_role"
		case sec.Kind == authn.SecretMD5:
			reason = "md5_secret_for_scram"
		case !errors.Is(err, authn.ErrAuthFailed):
			reason = "malformed_scram"
		}
		return nil, &AuthFailure{Reason: reason, Public: newError(codeSASLFailed, ex.User)}
	}
	if err := ex.SASLFinal(serverFinal); err != nil {
		return nil, err
	}
	id := &Identity{Method: "scram", ClientKey: srv.ClientKey()}
	if sec.Kind == authn.SecretSCRAM {
		id.ServerKey = sec.SCRAM.ServerKey
	}
	return id, nil
}
