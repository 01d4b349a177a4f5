package pooler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// Entra ID sign-in: the client sends an access token as its password (in
// clear text inside TLS), the pooler validates it against the cached JWKS
// and maps it to the role the client asked for by object ID, as Azure
// Database for PostgreSQL does. The validation and the rules live in authn;
// this file decides when a sign-in is an Entra one, runs the exchange and
// feeds the backend credentials (passthrough) and the audit record.

// entraSignIn is the Entra method of one Server. It is replaced as a whole
// when a reload changes the Entra settings; principals change in place.
type entraSignIn struct {
	v          *authn.Validator
	cfg        config.Entra // the settings v was built from
	principals atomic.Pointer[authn.Principals]
	// queried are the principals the last principal_query found.
	queried atomic.Pointer[[]authn.Principal]
	cancel  context.CancelFunc
}

// newEntraSignIn builds the validator (OIDC discovery, JWKS, cache file) for
// cfg.Entra. It fails when the keys can be had neither from the identity
// provider nor from the cache file. obs receives the validator's events.
func newEntraSignIn(cfg *config.Config, log *slog.Logger, obs Observer) (*entraSignIn, error) {
	e := cfg.Entra
	ctx, cancel := context.WithCancel(context.Background())
	leeway := e.ClockSkew
	if leeway == 0 {
		leeway = -1 // explicitly none (authn reads 0 as its default)
	}
	ec := authn.EntraConfig{
		Authority:                 e.Authority,
		Tenants:                   e.Tenants,
		Audiences:                 e.Audiences,
		Leeway:                    leeway,
		RefreshInterval:           e.JWKSRefreshInterval,
		UnknownKIDRefreshInterval: e.UnknownKidRefreshInterval,
		JWKSCacheFile:             e.JWKSCacheFile,
		GraphEndpoint:             e.GraphEndpoint,
		Observer:                  obs,
	}
	if isTokenProvider(e.ServerAuth) {
		// Group overage: Graph is asked with pgwarden's own identity (the
		// global server_auth provider), for Graph's resource.
		ge := e
		// The resource is the Graph endpoint itself (national clouds
		// have their own); a development Graph on loopback stands in for
		// the public one.
		ge.TokenResource = strings.TrimSuffix(e.GraphEndpoint, "/")
		if !strings.HasPrefix(ge.TokenResource, "https://") {
			ge.TokenResource = authn.DefaultGraphEndpoint
		}
		prov, err := newTokenProvider(ge, e.ServerAuth, log, obs)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("entra: Graph token provider: %w", err)
		}
		ec.GraphToken = func(ctx context.Context, _ string) (string, error) {
			t, err := prov.Token(ctx)
			return t.Token, err
		}
	}
	v, err := authn.NewValidator(ctx, ec, log)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("entra: %w", err)
	}
	es := &entraSignIn{v: v, cfg: e, cancel: cancel}
	if err := es.setPrincipals(e.Principals); err != nil {
		es.close()
		return nil, err
	}
	return es, nil
}

func (es *entraSignIn) close() {
	es.v.Close()
	es.cancel()
}

// setPrincipals installs the configured principals.
func (es *entraSignIn) setPrincipals(list []config.EntraPrincipal) error {
	set, err := authn.NewPrincipals(configPrincipals(list))
	if err != nil {
		return fmt.Errorf("entra principals: %w", err)
	}
	es.principals.Store(set)
	return nil
}

// configPrincipals converts [entra_principals] entries.
func configPrincipals(list []config.EntraPrincipal) []authn.Principal {
	ps := make([]authn.Principal, 0, len(list))
	for _, p := range list {
		ps = append(ps, authn.Principal{Role: p.Role, OID: strings.ToLower(p.OID), Type: p.Type, Tenant: strings.ToLower(p.Tenant), Admin: p.Admin, MFA: p.MFA, Source: "config"})
	}
	return ps
}

// sameValidatorSettings reports whether a and b need the same validator
// (everything but the principals).
func sameValidatorSettings(a, b config.Entra) bool {
	return a.Authority == b.Authority && slices.Equal(a.Tenants, b.Tenants) && slices.Equal(a.Audiences, b.Audiences) &&
		a.ClockSkew == b.ClockSkew && a.JWKSRefreshInterval == b.JWKSRefreshInterval &&
		a.UnknownKidRefreshInterval == b.UnknownKidRefreshInterval && a.JWKSCacheFile == b.JWKSCacheFile &&
		a.GraphEndpoint == b.GraphEndpoint &&
		// The Graph token comes from the global server_auth provider.
		a.ServerAuth == b.ServerAuth && a.IMDSEndpoint == b.IMDSEndpoint && a.ClientID == b.ClientID &&
		a.ObjectID == b.ObjectID && a.ResourceID == b.ResourceID && a.TenantID == b.TenantID &&
		a.ClientSecretFile == b.ClientSecretFile && a.ClientCertFile == b.ClientCertFile &&
		a.TokenEndpointAuthority == b.TokenEndpointAuthority
}

// applyEntra builds, replaces or drops the Entra method for a new config,
// and ends the sessions of principals that are gone (entra
// disconnect_on_revoke).
func (s *Server) applyEntra(cfg *config.Config) error {
	old := s.entra.Load()
	if !cfg.Entra.Enabled {
		if old != nil {
			s.entra.Store(nil)
			old.close()
		}
		return nil
	}
	if old != nil && sameValidatorSettings(old.cfg, cfg.Entra) {
		old.cfg = cfg.Entra
		return old.mergePrincipals(s, cfg, old.queriedPrincipals())
	}
	next, err := newEntraSignIn(cfg, s.log, s.opts.Observer)
	if err != nil {
		return err
	}
	if old != nil {
		// Start from what the old method knew, so that only principals
		// that are really gone lose their sessions.
		next.principals.Store(old.principals.Load())
		if err := next.mergePrincipals(s, cfg, old.queriedPrincipals()); err != nil {
			next.close()
			return err
		}
	}
	s.entra.Store(next)
	if old != nil {
		old.close()
	}
	return nil
}

// revoke ends the open sessions of removed principals.
func (s *Server) revoke(removed []authn.Principal) {
	if len(removed) == 0 {
		return
	}
	gone := map[string]bool{}
	for _, p := range removed {
		gone[p.Role+"\x00"+p.OID] = true
	}
	s.mu.Lock()
	var victims []*clientConn
	for c := range s.mu.clients {
		c.mu.Lock()
		id := c.identity
		c.mu.Unlock()
		if id != nil && id.Principal != nil && gone[id.Principal.Role+"\x00"+id.Principal.OID] {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		s.log.Info("ending the session of a removed principal", "user", c.st.user, "client", c.remote)
		c.endSession(newError(codeEntraRevoked, ""))
	}
	s.opts.Observer.SessionsRevoked(len(victims))
}

// entraAuthMode returns password, entra or both for a sign-in to database.
func entraAuthMode(cfg *config.Config, database string) string {
	if !cfg.Entra.Enabled {
		return config.AuthModePassword
	}
	if database != "pgbouncer" {
		if db, ok := cfg.LookupDatabase(database); ok {
			return cfg.EffectiveAuthMode(db)
		}
	}
	if cfg.Entra.AuthMode == "" {
		return config.AuthModeBoth
	}
	return cfg.Entra.AuthMode
}

// looksLikeJWT tells a token from a password: three base64url segments
// whose header starts like a JSON object.
func looksLikeJWT(s string) bool {
	return strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2 && len(s) > 100
}

// entraAuth runs a sign-in for auth mode entra or both: the client is asked
// for its password in clear text (inside TLS); a token is validated and
// mapped to the role, anything else is a password (mode both only).
func (s *Server) entraAuth(ctx context.Context, cfg *config.Config, ex *AuthExchange, mode string) (*Identity, error) {
	es := s.entra.Load()
	if es == nil {
		return nil, &AuthFailure{Reason: "jwks_unavailable", Public: newError(codeEntraFailed, "")}
	}
	secure := ex.TLS || ex.Unix || cfg.Entra.AllowPlaintext
	if mode == config.AuthModeBoth && !secure {
		// No token may travel here, so there is no reason to ask for a
		// clear-text password either: the configured password method
		// (SCRAM, md5, …) runs as without [entra].
		return s.passwordAuth(ctx, cfg, ex)
	}
	if mode == config.AuthModeEntra && !secure {
		// Do not even ask: the token would cross the network in clear.
		return nil, &AuthFailure{Reason: "tls_required", Public: newError(codeEntraTLSRequired, "")}
	}
	pw, err := ex.Cleartext()
	if err != nil {
		return nil, err
	}
	if !looksLikeJWT(pw) {
		if mode == config.AuthModeEntra {
			return nil, &AuthFailure{Reason: "not_a_token", Public: newError(codeAuthFailed, ex.User)}
		}
		return s.verifyCleartext(ctx, cfg, ex, pw)
	}
	if !secure {
		return nil, &AuthFailure{Reason: "tls_required", Public: newError(codeEntraTLSRequired, "")}
	}
	tok, err := es.v.Validate(ctx, pw)
	if err != nil {
		return nil, entraFailure(err, ex.User)
	}
	id := &Identity{Method: "entra", Token: tok, rawToken: pw}
	p, err := es.v.Authorize(ctx, ex.User, tok, es.principals.Load())
	if err != nil {
		f := entraFailure(err, ex.User)
		f.Identity = id
		return nil, f
	}
	id.Principal = p
	return id, nil
}

// entraFailure turns a validation or authorization error into a refusal.
func entraFailure(err error, user string) *AuthFailure {
	var ae *authn.AuthError
	if errors.As(err, &ae) {
		return &AuthFailure{Reason: ae.Reason, Public: &pgError{code: codeEntraFailed, sqlstate: ae.SQLState, msg: ae.Public}}
	}
	return &AuthFailure{Reason: "internal", Public: newError(codeEntraFailed, "")}
}

// verifyCleartext checks a cleartext password against the user's secret
// (mode both: passwords still work, through the same cleartext exchange).
func (s *Server) verifyCleartext(ctx context.Context, cfg *config.Config, ex *AuthExchange, pw string) (*Identity, error) {
	if pw == "" {
		return nil, &AuthFailure{Reason: "empty_password", Public: newError(codePasswordEmpty, "")}
	}
	sec, known, err := s.userSecret(ctx, cfg, ex.User, ex.Database)
	if err != nil {
		return nil, err
	}
	return checkCleartext(sec, known, ex.User, pw)
}

// checkCleartext verifies a clear-text password against the user's stored
// secret (plain, md5 or SCRAM).
func checkCleartext(sec authn.Secret, known bool, user, pw string) (*Identity, error) {
	if pw == "" {
		return nil, &AuthFailure{Reason: "empty_password", Public: newError(codePasswordEmpty, "")}
	}
	if !known {
		return nil, authFail(codeAuthFailed, user, "unknown_role")
	}
	if !authn.VerifyPlain(sec, user, pw) {
		return nil, authFail(codeAuthFailed, user, "wrong_password")
	}
	id := &Identity{Method: "plain"}
	if sec.Kind != authn.SecretPlain {
		// The client gave us the real password: use it for the server
		// too.
		id.BackendPassword = pw
	}
	return id, nil
}

// passthroughTokens keeps, per pool, the freshest unexpired token of a client
// signed in as the pool's role: a new server connection for that role logs
// in with it (server_auth = passthrough, as Azure's own PgBouncer does).
type passthroughTokens struct {
	mu  sync.Mutex
	tok string
	exp time.Time
}

func (pt *passthroughTokens) offer(tok string, exp time.Time) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if exp.After(pt.exp) {
		pt.tok, pt.exp = tok, exp
	}
}

func (pt *passthroughTokens) current(now time.Time) (string, bool) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.tok == "" || !now.Before(pt.exp) {
		return "", false
	}
	return pt.tok, true
}
