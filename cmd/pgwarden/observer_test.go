package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/metrics"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestObserver feeds the authn and pooler events that traffic tests cannot
// easily cause (Graph answers, backend token refreshes, failed key set
// fetches) through the observer into a fresh registry.
func TestObserver(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	o := newObserver(metrics.New(reg))
	exp := time.Unix(1_900_000_000, 0)
	o.BackendTokenRefresh(authn.RefreshEvent{Provider: authn.ProviderIMDS, Result: authn.RefreshOK, ExpiresOn: exp})
	o.BackendTokenRefresh(authn.RefreshEvent{Provider: authn.ProviderIMDS, Result: authn.RefreshFailedKeptToken, ExpiresOn: exp})
	o.BackendTokenRefresh(authn.RefreshEvent{Provider: authn.ProviderIMDS, Result: authn.RefreshFailed, Err: errors.New("down")})
	o.GraphLookup(authn.GraphLookupEvent{Result: authn.GraphMember})
	o.GraphLookup(authn.GraphLookupEvent{Result: authn.GraphMember, Cached: true}) // not a Graph call
	o.GraphLookup(authn.GraphLookupEvent{Result: authn.GraphError, Err: errors.New("503")})
	o.JWKSFetch(authn.JWKSFetchEvent{Kind: "jwks"}) // counted when installed
	o.JWKSFetch(authn.JWKSFetchEvent{Kind: "discovery", Err: errors.New("timeout")})
	o.KeysLoaded(authn.KeysLoadedEvent{Tenant: "t", Version: "2.0", Keys: 3, Source: authn.SourceNetwork})
	o.KeysLoaded(authn.KeysLoadedEvent{Tenant: "t", Version: "1.0", Keys: 2, Source: authn.SourceCacheFile})
	o.KeysLoaded(authn.KeysLoadedEvent{Tenant: "t", Version: "2.0", Keys: 4, Source: authn.SourceNetwork})
	o.TokenCache(true)
	o.TokenCache(false)
	o.SessionsRevoked(2)
	o.ClientError("auth_failed", "28P01")
	// Sign-ins held or refused by the sign-in throttle.
	o.SignIn(pooler.SignInEvent{Method: "scram", Reason: pooler.ReasonThrottled, Throttle: pooler.ThrottleScopeAddress, RetryAfter: time.Minute})
	o.SignIn(pooler.SignInEvent{Method: "scram", OK: true, Throttle: pooler.ThrottleScopeRole, ThrottleDelay: time.Second})
	o.SignIn(pooler.SignInEvent{Method: "scram", Reason: "wrong_password"})
	if p := o.Pool("app", "alice"); p == nil {
		t.Error("no pool observer")
	} else {
		p.Query(time.Millisecond)
		p.ServerLoginFailed("connect")
	}

	want := `
# HELP pgwarden_backend_token_expiry_timestamp_seconds Unix time at which the current backend sign-in token expires, by provider.
# TYPE pgwarden_backend_token_expiry_timestamp_seconds gauge
pgwarden_backend_token_expiry_timestamp_seconds{provider="imds"} 1.9e+09
# HELP pgwarden_backend_token_refreshes_total Refreshes of the token pgwarden uses to sign in to the backend, by provider and result.
# TYPE pgwarden_backend_token_refreshes_total counter
pgwarden_backend_token_refreshes_total{provider="imds",result="failed"} 1
pgwarden_backend_token_refreshes_total{provider="imds",result="failed_kept_token"} 1
pgwarden_backend_token_refreshes_total{provider="imds",result="success"} 1
# HELP pgwarden_graph_lookups_total Microsoft Graph group membership lookups (answers from the cache excluded), by result.
# TYPE pgwarden_graph_lookups_total counter
pgwarden_graph_lookups_total{result="error"} 1
pgwarden_graph_lookups_total{result="member"} 1
# HELP pgwarden_jwks_refreshes_total JWKS (signing key set) refreshes by result.
# TYPE pgwarden_jwks_refreshes_total counter
pgwarden_jwks_refreshes_total{result="failure"} 1
pgwarden_jwks_refreshes_total{result="success"} 2
# HELP pgwarden_revoked_sessions_total Client sessions closed because their principal's access was revoked.
# TYPE pgwarden_revoked_sessions_total counter
pgwarden_revoked_sessions_total 2
# HELP pgwarden_signin_throttled_total Sign-ins the sign-in throttle held (delayed) or refused, by the budget that did it (address or role).
# TYPE pgwarden_signin_throttled_total counter
pgwarden_signin_throttled_total{action="delayed",scope="role"} 1
pgwarden_signin_throttled_total{action="refused",scope="address"} 1
# HELP pgwarden_token_cache_hits_total Entra access tokens found already validated in the token cache.
# TYPE pgwarden_token_cache_hits_total counter
pgwarden_token_cache_hits_total 1
# HELP pgwarden_token_cache_misses_total Entra access tokens not in the token cache, which had to be validated in full.
# TYPE pgwarden_token_cache_misses_total counter
pgwarden_token_cache_misses_total 1
`
	names := []string{"pgwarden_backend_token_expiry_timestamp_seconds", "pgwarden_backend_token_refreshes_total", "pgwarden_graph_lookups_total",
		"pgwarden_jwks_refreshes_total", "pgwarden_revoked_sessions_total", "pgwarden_signin_throttled_total", "pgwarden_token_cache_hits_total", "pgwarden_token_cache_misses_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "pgwarden_server_login_failures_total"); n != 1 {
		t.Errorf("server login failure series = %d, want 1", n)
	}
}
