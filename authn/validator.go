package authn

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Validator checks Entra ID access tokens presented as passwords, without a
// call to the identity provider per sign-in, and decides which roles they may
// sign in as ([Validator.Authorize]). It is safe for concurrent use.
//
// For each allowed tenant it keeps two key sets, found by OpenID discovery:
// v1 ({authority}/{tid}/.well-known/openid-configuration) and v2
// ({authority}/{tid}/v2.0/.well-known/openid-configuration). A token is
// checked against the set whose issuer equals its iss. Key sets are fetched
// again every RefreshInterval; a token naming an unknown kid causes at most
// one fetch per UnknownKIDRefreshInterval and set, which any number of
// concurrent sign-ins share, each waiting at most UnknownKIDMaxWait. A
// failed fetch keeps the keys in use.
type Validator struct {
	cfg EntraConfig
	log *slog.Logger
	obs Observer

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	lifeMu sync.Mutex
	closed bool

	sets    map[string]*[2]*entraKeySet
	setList []*entraKeySet

	persistMu sync.Mutex

	cache *entraTokenCache
	graph *entraGraph

	full, times *jwt.Validator
	resource    string
}

// NewValidator builds a Validator and loads its keys.
//
// Keys come from EntraConfig.JWKSCacheFile when it has them (NewValidator
// then returns at once and fetches fresh keys in the background), else from
// the identity provider (NewValidator waits, at most HTTPTimeout per
// request). If some tenant has no keys from either source, NewValidator
// fails with an error wrapping [ErrJWKSUnavailable], unless
// AllowStartWithoutKeys is set. Failed fetches are retried in the
// background.
//
// ctx bounds the validator's life: background refreshes stop when ctx is
// done or [Validator.Close] is called, so pass the server's context, not a
// start-up timeout. A nil logger means slog.Default().
func NewValidator(ctx context.Context, cfg EntraConfig, logger *slog.Logger) (*Validator, error) {
	cfg, err := cfg.entraNormalize()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	v := &Validator{cfg: cfg, log: logger, obs: cfg.Observer, sets: map[string]*[2]*entraKeySet{}}
	v.ctx, v.cancel = context.WithCancel(ctx)
	for _, t := range cfg.Tenants {
		p := &[2]*entraKeySet{
			{v: v, tenant: t, version: EntraV1, discoveryURL: cfg.Authority + "/" + t + "/.well-known/openid-configuration"},
			{v: v, tenant: t, version: EntraV2, discoveryURL: cfg.Authority + "/" + t + "/v2.0/.well-known/openid-configuration"},
		}
		v.sets[t] = p
		v.setList = append(v.setList, p[0], p[1])
	}
	v.cache = newEntraTokenCache(cfg.TokenCacheSize, cfg.Leeway, cfg.Now)
	v.graph = newEntraGraph(v)
	v.resource = strings.TrimRight(cfg.Audiences[0], "/")
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(cfg.Leeway), jwt.WithTimeFunc(cfg.Now)}
	v.times = jwt.NewValidator(opts...)
	v.full = jwt.NewValidator(append(opts, jwt.WithAudience(cfg.Audiences...))...)

	v.loadCacheFile()
	var waits, pending []*entraFlight
	var waitSets []*entraKeySet
	for _, s := range v.setList {
		f := s.start(TriggerStart, true)
		if s.snap.Load() == nil {
			waits = append(waits, f)
			waitSets = append(waitSets, s)
		} else {
			pending = append(pending, f) // loaded from the cache file
		}
	}
	failed := false
	for i, f := range waits {
		select {
		case <-f.done:
		case <-ctx.Done():
			v.Close()
			return nil, ctx.Err()
		}
		if f.err != nil {
			failed = true
			s := waitSets[i]
			v.log.Warn("entra: no signing keys yet", "tenant", s.tenant, "version", s.version, "err", f.err)
		}
	}
	var missing []error
	for _, t := range cfg.Tenants {
		p := v.sets[t]
		if p[0].snap.Load() == nil && p[1].snap.Load() == nil {
			var errs []error
			for _, s := range p {
				s.mu.Lock()
				errs = append(errs, s.lastErr)
				s.mu.Unlock()
			}
			missing = append(missing, fmt.Errorf("tenant %s: %w", t, errors.Join(errs...)))
		}
	}
	if len(missing) > 0 && !cfg.AllowStartWithoutKeys {
		v.Close()
		where := "no jwks_cache_file configured"
		if cfg.JWKSCacheFile != "" {
			where = fmt.Sprintf("none in the cache file %q", cfg.JWKSCacheFile)
		}
		return nil, fmt.Errorf("%w (%s): %w", ErrJWKSUnavailable, where, errors.Join(missing...))
	}
	v.goBackground(func() {
		// Fetches of sets loaded from the cache file run on: wait for them
		// before deciding when to fetch next.
		for _, f := range pending {
			select {
			case <-f.done:
				failed = failed || f.err != nil
			case <-v.ctx.Done():
				return
			}
		}
		delay, trigger := cfg.RefreshInterval, TriggerInterval
		if failed {
			delay, trigger = cfg.RetryInterval, TriggerRetry
		}
		v.loop(delay, trigger)
	})
	return v, nil
}

// Close stops background refreshes and waits for them to end. Validate keeps
// working with the keys already loaded.
func (v *Validator) Close() {
	v.once.Do(func() {
		v.lifeMu.Lock()
		v.closed = true
		v.lifeMu.Unlock()
		v.cancel()
		v.wg.Wait()
	})
}

// goBackground runs fn in a goroutine that Close waits for, unless the
// validator is closed; it reports whether fn was started.
func (v *Validator) goBackground(fn func()) bool {
	v.lifeMu.Lock()
	defer v.lifeMu.Unlock()
	if v.closed {
		return false
	}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		fn()
	}()
	return true
}

// Refresh fetches every tenant's discovery documents and key sets now (e.g.
// on RELOAD) and waits for the result or for ctx. It is not rate-limited. On
// failure the keys in use stay and the error says which sets failed.
func (v *Validator) Refresh(ctx context.Context) error {
	return v.refreshAll(ctx, TriggerManual)
}

// Config returns the validator's configuration with defaults filled in.
func (v *Validator) Config() EntraConfig { return v.cfg }

// Validate checks token and returns its claims, or an [*AuthError] saying
// why it is refused. It never panics on any input and never logs the token.
//
// Checks, in order: length (at most [MaxEntraTokenLength]); compact JWS with
// a JSON header and payload; header alg exactly RS256 and a kid; tid among
// the allowed tenants; iss equal to the v1 or v2 issuer of that tid (from
// discovery); the key named by kid in that issuer's key set (waiting for a
// rate-limited refresh if it is unknown); the RS256 signature; exp
// (required), nbf and iat with leeway; aud among the audiences; oid present.
//
// A token that passed is remembered (by SHA-256, until exp): validating it
// again costs no RSA verification, but exp/nbf/iat are checked again and the
// key must still be published.
func (v *Validator) Validate(ctx context.Context, token string) (*Token, error) {
	if len(token) > MaxEntraTokenLength {
		return nil, entraTokenErr(ReasonTokenTooLong, fmt.Errorf("token is %d bytes, more than %d", len(token), MaxEntraTokenLength))
	}
	token = strings.TrimSpace(token)
	sum := sha256.Sum256([]byte(token))
	if e := v.cache.get(sum); e != nil {
		if err := v.checkCached(e); err != nil {
			v.obs.TokenCache(false)
			return nil, err
		}
		v.obs.TokenCache(true)
		return e.tok.clone(), nil
	}
	if v.cache != nil {
		v.obs.TokenCache(false)
	}
	e, err := v.validate(ctx, token)
	if err != nil {
		return nil, err
	}
	v.cache.put(sum, e)
	return e.tok.clone(), nil
}

// checkCached re-checks the time claims of a cached token and that its key
// is still published.
func (v *Validator) checkCached(e *entraCacheEntry) *AuthError {
	if err := v.times.Validate(e.claims); err != nil {
		v.cache.remove(e)
		return v.claimsError(err)
	}
	snap := e.set.snap.Load()
	if k, ok := snap.keys[e.tok.KID]; !ok || !k.key.Equal(e.key) {
		v.cache.remove(e)
		return entraTokenErr(ReasonUnknownKID, fmt.Errorf("key %s is no longer published", entraQuote(e.tok.KID)))
	}
	return nil
}

var entraParser = jwt.NewParser()

// validate does the full check of a token not in the cache.
func (v *Validator) validate(ctx context.Context, token string) (*entraCacheEntry, *AuthError) {
	var c entraClaims
	parsed, parts, err := entraParser.ParseUnverified(token, &c)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenUnverifiable) {
			return nil, &AuthError{Reason: ReasonAlgNotAllowed, Public: MsgTokenInvalid, SQLState: SQLStateInvalidPassword, Err: err}
		}
		return nil, entraTokenErr(ReasonMalformed, err)
	}
	if alg, _ := parsed.Header["alg"].(string); alg != jwt.SigningMethodRS256.Alg() {
		return nil, entraTokenErr(ReasonAlgNotAllowed, fmt.Errorf("alg %s is not RS256", entraQuote(alg)))
	}
	if _, ok := parsed.Header["crit"]; ok {
		return nil, entraTokenErr(ReasonMalformed, errors.New("crit header not supported"))
	}
	kid, _ := parsed.Header["kid"].(string)
	if kid == "" {
		return nil, entraTokenErr(ReasonMalformed, errors.New("no kid in the header"))
	}
	if c.TID == "" {
		return nil, entraTokenErr(ReasonMissingClaim, errors.New("no tid claim"))
	}
	pair := v.sets[c.TID]
	if pair == nil {
		return nil, entraTokenErr(ReasonTenantNotAllowed, fmt.Errorf("tenant %s is not allowed", entraQuote(c.TID)))
	}
	var set *entraKeySet
	var snap *entraKeySnap
	unloaded := false
	for _, s := range pair {
		sn := s.snap.Load()
		if sn == nil {
			unloaded = true
			continue
		}
		if sn.issuer == c.Issuer {
			set, snap = s, sn
			break
		}
	}
	if set == nil {
		if unloaded {
			return nil, entraTokenErr(ReasonJWKSUnavailable, fmt.Errorf("issuer %s does not match a loaded issuer of tenant %s, and some of its keys are not loaded", entraQuote(c.Issuer), c.TID))
		}
		return nil, &AuthError{Reason: ReasonWrongIssuer, Public: MsgTokenInvalid, SQLState: SQLStateInvalidPassword,
			Err: fmt.Errorf("issuer %s is not an issuer of tenant %s", entraQuote(c.Issuer), c.TID)}
	}
	key, aerr := v.key(ctx, set, snap, kid)
	if aerr != nil {
		return nil, aerr
	}
	// Microsoft's multi-tenant rule: a v2 key carrying an issuer may only
	// validate tokens of that issuer. (v1 key sets carry no issuer; one
	// there is ignored rather than risk refusing every v1 token.)
	if set.version == EntraV2 && key.issuer != "" && strings.ReplaceAll(key.issuer, "{tenantid}", c.TID) != c.Issuer {
		return nil, entraTokenErr(ReasonWrongIssuer, fmt.Errorf("key %s is bound to issuer %s", entraQuote(kid), entraQuote(key.issuer)))
	}
	err = jwt.SigningMethodRS256.Verify(parts[0]+"."+parts[1], parsed.Signature, key.key)
	v.obs.SignatureCheck(err == nil)
	if err != nil {
		return nil, entraTokenErr(ReasonBadSignature, err)
	}
	if err := v.full.Validate(&c); err != nil {
		return nil, v.claimsError(err)
	}
	if c.OID == "" {
		return nil, entraTokenErr(ReasonMissingClaim, errors.New("no oid claim"))
	}
	if !entraIsGUID(c.OID) {
		return nil, entraTokenErr(ReasonMalformed, fmt.Errorf("oid %s is not a GUID", entraQuote(c.OID)))
	}
	aud := ""
	for _, a := range c.Audience {
		if slices.Contains(v.cfg.Audiences, a) {
			aud = a
			break
		}
	}
	return &entraCacheEntry{tok: c.token(set.version, kid, aud), claims: &c, set: set, key: key.key}, nil
}

// key finds kid in set, refreshing the set (rate-limited, shared by
// concurrent callers, waited for at most UnknownKIDMaxWait) if kid is
// unknown.
func (v *Validator) key(ctx context.Context, s *entraKeySet, snap *entraKeySnap, kid string) (entraKey, *AuthError) {
	if k, ok := snap.keys[kid]; ok {
		return k, nil
	}
	s.mu.Lock()
	f := s.flight
	if f == nil {
		// A fetch that ended has installed its keys before clearing
		// s.flight: look again.
		if k, ok := s.snap.Load().keys[kid]; ok {
			s.mu.Unlock()
			return k, nil
		}
		now := v.cfg.Now()
		if !s.lastUnknownKID.IsZero() && now.Sub(s.lastUnknownKID) < v.cfg.UnknownKIDRefreshInterval {
			s.mu.Unlock()
			return entraKey{}, entraTokenErr(ReasonUnknownKID, fmt.Errorf("kid %s is not published by %s (refresh rate-limited)", entraQuote(kid), snap.jwksURI))
		}
		s.lastUnknownKID = now
		f = s.startLocked(TriggerUnknownKID, false)
	}
	s.mu.Unlock()
	t := time.NewTimer(v.cfg.UnknownKIDMaxWait)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
		return entraKey{}, entraTokenErr(ReasonJWKSUnavailable, fmt.Errorf("key set refresh for kid %s did not finish within %s", entraQuote(kid), v.cfg.UnknownKIDMaxWait))
	case <-ctx.Done():
		return entraKey{}, entraTokenErr(ReasonJWKSUnavailable, fmt.Errorf("waiting for the key set refresh: %w", ctx.Err()))
	}
	if k, ok := s.snap.Load().keys[kid]; ok {
		return k, nil
	}
	if f.err != nil {
		return entraKey{}, entraTokenErr(ReasonJWKSUnavailable, fmt.Errorf("kid %s unknown and the key set refresh failed: %w", entraQuote(kid), f.err))
	}
	return entraKey{}, entraTokenErr(ReasonUnknownKID, fmt.Errorf("kid %s is not published by %s", entraQuote(kid), snap.jwksURI))
}

// claimsError maps a jwt claims validation error to an AuthError.
func (v *Validator) claimsError(err error) *AuthError {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return &AuthError{Reason: ReasonExpired, Public: MsgTokenExpired, SQLState: SQLStateInvalidPassword, Err: err}
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return entraTokenErr(ReasonNotYetValid, err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return &AuthError{Reason: ReasonWrongAudience, Public: MsgWrongAudience(v.resource), SQLState: SQLStateInvalidPassword, Err: err}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return entraTokenErr(ReasonMissingClaim, err)
	}
	return entraTokenErr(ReasonMalformed, err)
}

// entraQuote quotes an untrusted string for an error message, cut to 64
// bytes.
func entraQuote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", s)
}
