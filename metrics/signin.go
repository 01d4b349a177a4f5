package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ResultSuccess is the result label value that [Metrics.JWKSFetch] treats
// as a successful refresh. Callers should use it, and "failure" or another
// short bounded word for the other outcomes, for every result label.
const ResultSuccess = "success"

// signInBuckets spans a cached-token sign-in (about a millisecond) up to one
// that waits on JWKS and Microsoft Graph round trips.
var signInBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics holds the sign-in audit metrics of pgwarden. It is created by
// [New], and all of its methods are safe for concurrent use. A nil *Metrics
// is valid and records nothing, so code paths may run without metrics.
type Metrics struct {
	signInAttempts       *prometheus.CounterVec
	signInDuration       *prometheus.HistogramVec
	tokenCacheHits       prometheus.Counter
	tokenCacheMisses     prometheus.Counter
	jwksRefreshes        *prometheus.CounterVec
	jwksKeys             atomic.Int64               // set by JWKSKeys
	jwksKeysFunc         atomic.Pointer[func() int] // set by JWKSKeysFrom; wins over jwksKeys
	graphLookups         *prometheus.CounterVec
	backendTokenRefresh  *prometheus.CounterVec
	backendTokenExpiry   *prometheus.GaugeVec
	revokedSessions      prometheus.Counter
	clientErrors         *prometheus.CounterVec
	signInThrottled      *prometheus.CounterVec
	throttledKeysFunc    atomic.Pointer[func(scope string) int] // set by ThrottledKeysFrom
	clientWait           *prometheus.HistogramVec
	queryDuration        *prometheus.HistogramVec
	xactDuration         *prometheus.HistogramVec
	serverLoginFailures  *prometheus.CounterVec
	jwksLastSuccessNanos atomic.Int64 // unix nanoseconds of the last successful JWKS refresh, or of New
	now                  func() time.Time
}

// New creates the sign-in audit metrics and registers them with reg (never
// the global registry). It panics if reg already holds metrics of the same
// names, as promauto does; call it once per registry.
func New(reg prometheus.Registerer) *Metrics {
	return newMetrics(reg, time.Now)
}

func newMetrics(reg prometheus.Registerer, now func() time.Time) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{now: now}
	m.jwksLastSuccessNanos.Store(now().UnixNano())
	m.signInAttempts = f.NewCounterVec(prometheus.CounterOpts{
		Name: "pgwarden_signin_attempts_total",
		Help: "Client sign-in attempts by authentication method, result, failure reason and principal type.",
	}, []string{"method", "result", "reason", "principal_type"})
	m.signInDuration = f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pgwarden_signin_duration_seconds",
		Help:    "Time from the client's startup message to the end of authentication, by method and result.",
		Buckets: signInBuckets,
	}, []string{"method", "result"})
	m.tokenCacheHits = f.NewCounter(prometheus.CounterOpts{
		Name: "pgwarden_token_cache_hits_total",
		Help: "Entra access tokens found already validated in the token cache.",
	})
	m.tokenCacheMisses = f.NewCounter(prometheus.CounterOpts{
		Name: "pgwarden_token_cache_misses_total",
		Help: "Entra access tokens not in the token cache, which had to be validated in full.",
	})
	m.jwksRefreshes = f.NewCounterVec(prometheus.CounterOpts{
		Name: "pgwarden_jwks_refreshes_total",
		Help: "JWKS (signing key set) refreshes by result.",
	}, []string{"result"})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgwarden_jwks_keys",
		Help: "Signing keys currently loaded from the JWKS.",
	}, func() float64 {
		if fn := m.jwksKeysFunc.Load(); fn != nil {
			return float64((*fn)())
		}
		return float64(m.jwksKeys.Load())
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgwarden_jwks_last_success_age_seconds",
		Help: "Seconds since the last successful JWKS refresh (since process start if none has succeeded yet).",
	}, func() float64 {
		return m.now().Sub(time.Unix(0, m.jwksLastSuccessNanos.Load())).Seconds()
	})
	m.graphLookups = f.NewCounterVec(prometheus.CounterOpts{
		Name: "pgwarden_graph_lookups_total",
		Help: "Microsoft Graph group membership lookups (answers from the cache excluded), by result.",
	}, []string{"result"})
	m.backendTokenRefresh = f.NewCounterVec(prometheus.CounterOpts{
		Name: "pgwarden_backend_token_refreshes_total",
		Help: "Refreshes of the token pgwarden uses to sign in to the backend, by provider and result.",
	}, []string{"provider", "result"})
	m.backendTokenExpiry = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pgwarden_backend_token_expiry_timestamp_seconds",
		Help: "Unix time at which the current backend sign-in token expires, by provider.",
	}, []string{"provider"})
	m.revokedSessions = f.NewCounter(prometheus.CounterOpts{
		Name: "pgwarden_revoked_sessions_total",
		Help: "Client sessions closed because their principal's access was revoked.",
	})
	m.clientErrors = f.NewCounterVec(prometheus.CounterOpts{
		Name: "pgwarden_client_errors_total",
		Help: "ErrorResponse messages pgwarden itself sent to clients, by pgwarden error code and SQLSTATE.",
	}, []string{"code", "sqlstate"})
	m.signInThrottled = f.NewCounterVec(prometheus.CounterOpts{
		Name: "pgwarden_signin_throttled_total",
		Help: "Sign-ins the sign-in throttle held (delayed) or refused, by the budget that did it (address or role).",
	}, []string{"scope", "action"})
	for _, scope := range []string{ThrottleScopeAddress, ThrottleScopeRole} {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "pgwarden_signin_throttled_keys",
			Help:        "Client addresses or role names whose failed sign-in budget is spent now, by scope.",
			ConstLabels: prometheus.Labels{"scope": scope},
		}, func() float64 {
			if fn := m.throttledKeysFunc.Load(); fn != nil {
				return float64((*fn)(scope))
			}
			return 0
		})
	}
	m.newDataPath(f)
	return m
}

// Scopes of the sign-in throttle, for [Metrics.SignInThrottled] and the
// pgwarden_signin_throttled_keys gauge.
const (
	ThrottleScopeAddress = "address"
	ThrottleScopeRole    = "role"
)

// Actions of the sign-in throttle, for [Metrics.SignInThrottled].
const (
	// ThrottleDelayed: the sign-in was held until its budget came back.
	ThrottleDelayed = "delayed"
	// ThrottleRefused: the sign-in was refused.
	ThrottleRefused = "refused"
)

// SignInThrottled records one sign-in held or refused by the sign-in
// throttle: scope is [ThrottleScopeAddress] or [ThrottleScopeRole], action
// [ThrottleDelayed] or [ThrottleRefused].
func (m *Metrics) SignInThrottled(scope, action string) {
	if m == nil {
		return
	}
	m.signInThrottled.WithLabelValues(scope, action).Inc()
}

// ThrottledKeysFrom makes pgwarden_signin_throttled_keys read, at every
// scrape, the number of keys of each scope whose budget is spent from f.
// f must be safe to call from the scraping goroutine.
func (m *Metrics) ThrottledKeysFrom(f func(scope string) int) {
	if m == nil {
		return
	}
	m.throttledKeysFunc.Store(&f)
}

// SignIn records one client sign-in attempt and its duration. method is the
// authentication method (for example "entra" or "scram-sha-256"), result its
// outcome ([ResultSuccess] or "failure"), reason a short bounded failure
// reason ("" on success) and principalType the kind of principal ("user",
// "group", "service_principal", "managed_identity" or "").
func (m *Metrics) SignIn(method, result, reason, principalType string, d time.Duration) {
	if m == nil {
		return
	}
	m.signInAttempts.WithLabelValues(method, result, reason, principalType).Inc()
	m.signInDuration.WithLabelValues(method, result).Observe(d.Seconds())
}

// TokenCacheHit records a token found in the validated-token cache.
func (m *Metrics) TokenCacheHit() {
	if m == nil {
		return
	}
	m.tokenCacheHits.Inc()
}

// TokenCacheMiss records a token that was not in the validated-token cache.
func (m *Metrics) TokenCacheMiss() {
	if m == nil {
		return
	}
	m.tokenCacheMisses.Inc()
}

// JWKSFetch records one JWKS refresh. A result of [ResultSuccess] also resets
// pgwarden_jwks_last_success_age_seconds to zero.
func (m *Metrics) JWKSFetch(result string) {
	if m == nil {
		return
	}
	m.jwksRefreshes.WithLabelValues(result).Inc()
	if result == ResultSuccess {
		m.jwksLastSuccessNanos.Store(m.now().UnixNano())
	}
}

// JWKSKeys sets the number of signing keys currently loaded.
func (m *Metrics) JWKSKeys(n int) {
	if m == nil {
		return
	}
	m.jwksKeys.Store(int64(n))
}

// JWKSKeysFrom makes pgwarden_jwks_keys read the number of signing keys
// from f at every scrape (the live key sets) instead of [Metrics.JWKSKeys].
// f must be safe to call from the scraping goroutine.
func (m *Metrics) JWKSKeysFrom(f func() int) {
	if m == nil {
		return
	}
	m.jwksKeysFunc.Store(&f)
}

// GraphLookup records one Microsoft Graph lookup and its result.
func (m *Metrics) GraphLookup(result string) {
	if m == nil {
		return
	}
	m.graphLookups.WithLabelValues(result).Inc()
}

// BackendTokenRefresh records one refresh of the backend sign-in token from
// provider (for example "entra" or "static") with its result.
func (m *Metrics) BackendTokenRefresh(provider, result string) {
	if m == nil {
		return
	}
	m.backendTokenRefresh.WithLabelValues(provider, result).Inc()
}

// BackendTokenExpiry sets when provider's current backend token expires.
func (m *Metrics) BackendTokenExpiry(provider string, expiry time.Time) {
	if m == nil {
		return
	}
	m.backendTokenExpiry.WithLabelValues(provider).Set(float64(expiry.UnixNano()) / 1e9)
}

// SessionsRevoked adds n client sessions closed because access was revoked.
// Negative n is ignored.
func (m *Metrics) SessionsRevoked(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.revokedSessions.Add(float64(n))
}

// ClientError records one ErrorResponse sent to a client: code is
// pgwarden's name for the error, sqlstate the SQLSTATE sent.
func (m *Metrics) ClientError(code, sqlstate string) {
	if m == nil {
		return
	}
	m.clientErrors.WithLabelValues(code, sqlstate).Inc()
}
