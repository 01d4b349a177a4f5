package authn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Defaults for [EntraConfig].
const (
	// DefaultEntraAuthority is the public-cloud Entra ID authority host.
	DefaultEntraAuthority = "https://login.microsoftonline.com"
	// DefaultEntraAudience is the resource of Azure Database for PostgreSQL
	// (and MySQL) in the public cloud: what `az account get-access-token
	// --resource-type oss-rdbms` asks for.
	DefaultEntraAudience = "https://ossrdbms-aad.database.windows.net"
	// DefaultGraphEndpoint is Microsoft Graph in the public cloud.
	DefaultGraphEndpoint = "https://graph.microsoft.com"
	// DefaultEntraLeeway is the clock-skew allowance on exp, nbf and iat.
	DefaultEntraLeeway = 30 * time.Second
	// DefaultJWKSRefreshInterval is how often discovery documents and key
	// sets are fetched again (Microsoft's guidance: hourly).
	DefaultJWKSRefreshInterval = time.Hour
	// DefaultUnknownKIDRefreshInterval is the least time between two key
	// set fetches caused by tokens with an unknown kid (Microsoft's
	// guidance: no more often than every 5 minutes).
	DefaultUnknownKIDRefreshInterval = 5 * time.Minute
	// DefaultUnknownKIDMaxWait is the longest a sign-in waits for the key
	// set fetch its unknown kid caused.
	DefaultUnknownKIDMaxWait = 3 * time.Second
	// DefaultJWKSRetryInterval is the first delay before fetching again
	// after a failed refresh; it doubles up to the refresh interval.
	DefaultJWKSRetryInterval = 10 * time.Second
	// DefaultEntraHTTPTimeout bounds each discovery, JWKS and Graph request.
	DefaultEntraHTTPTimeout = 10 * time.Second
	// DefaultGraphCacheTTL is how long a Graph membership answer is reused.
	DefaultGraphCacheTTL = 5 * time.Minute
	// DefaultTokenCacheSize is the number of validated tokens remembered.
	DefaultTokenCacheSize = 10000
	// MaxEntraTokenLength is the longest token accepted (64 KiB). Longer
	// passwords are refused before any parsing.
	MaxEntraTokenLength = 64 << 10
)

// DefaultEntraAudiences returns the default audience list:
// [DefaultEntraAudience] with and without a trailing slash (v1 tokens may
// carry either spelling).
func DefaultEntraAudiences() []string {
	return []string{DefaultEntraAudience, DefaultEntraAudience + "/"}
}

// EntraConfig configures a [Validator]. The zero value of every field but
// Tenants selects its default; a Validator copies the config, so changing it
// afterwards has no effect.
type EntraConfig struct {
	// Authority is the identity provider's base URL (entra.authority).
	// Discovery documents are read from
	// {Authority}/{tenant}/.well-known/openid-configuration (v1) and
	// {Authority}/{tenant}/v2.0/.well-known/openid-configuration (v2); the
	// issuers and jwks_uri they name are used verbatim, so public cloud,
	// sovereign clouds and a local development issuer work the same way.
	// Default [DefaultEntraAuthority]. It must be https, except that http is
	// allowed for loopback hosts (localhost, 127.0.0.0/8, ::1).
	Authority string

	// Tenants are the allowed tenant IDs (the tid claim; GUIDs, not domain
	// names). Required. Each tenant's keys are discovered separately.
	Tenants []string

	// Audiences are the accepted aud values (entra.audiences). Default
	// [DefaultEntraAudiences]. The first one, without a trailing slash,
	// is named in the wrong-audience message.
	Audiences []string

	// Leeway is the clock-skew allowance on exp, nbf and iat. Zero selects
	// [DefaultEntraLeeway]; a negative value means no leeway.
	Leeway time.Duration

	// RefreshInterval is how often discovery documents and keys are fetched
	// again in the background. Default [DefaultJWKSRefreshInterval].
	RefreshInterval time.Duration

	// UnknownKIDRefreshInterval is the least time between two key set
	// fetches caused by unknown kids, per tenant and token version. Default
	// [DefaultUnknownKIDRefreshInterval].
	UnknownKIDRefreshInterval time.Duration

	// UnknownKIDMaxWait is the longest a sign-in with an unknown kid waits
	// for a key set fetch in flight. Default [DefaultUnknownKIDMaxWait].
	UnknownKIDMaxWait time.Duration

	// RetryInterval is the first delay before a failed background refresh
	// is retried; the delay doubles up to RefreshInterval. Default
	// [DefaultJWKSRetryInterval].
	RetryInterval time.Duration

	// HTTPTimeout bounds each discovery, JWKS and Graph request. Default
	// [DefaultEntraHTTPTimeout].
	HTTPTimeout time.Duration

	// HTTPClient makes the discovery, JWKS and Graph requests. Default: a
	// client honouring the proxy environment variables that refuses
	// redirects. Its Timeout is not changed; HTTPTimeout applies anyway.
	HTTPClient *http.Client

	// JWKSCacheFile (entra.jwks_cache_file), if set, is where the last good
	// discovery documents and key sets are written (atomically, mode 0600)
	// after each successful fetch, and read at start, so that the pooler
	// starts and signs people in while the identity provider is
	// unreachable. Entries for another authority are ignored. The file
	// decides which keys are trusted: keep it writable by pgwarden only.
	JWKSCacheFile string

	// AllowStartWithoutKeys makes [NewValidator] succeed even when a
	// tenant's keys can be obtained neither from the network nor from the
	// cache file; that tenant's tokens are then refused with
	// [ReasonJWKSUnavailable] until a background retry succeeds. By
	// default NewValidator fails with an error wrapping [ErrJWKSUnavailable].
	AllowStartWithoutKeys bool

	// GraphEndpoint is Microsoft Graph's base URL, used for group
	// membership when a token's groups claim overflowed or the token is
	// app-only. Default [DefaultGraphEndpoint]. Same scheme rule as
	// Authority. A URL found in a token is never called.
	GraphEndpoint string

	// GraphToken returns an access token for GraphEndpoint in the given
	// tenant (app permission GroupMember.Read.All or Directory.Read.All).
	// If nil, Graph is not called and group roles rely on the groups claim
	// alone; an overflowed claim is then refused with
	// [ReasonGraphUnavailable].
	GraphToken func(ctx context.Context, tenant string) (string, error)

	// GraphCacheTTL is how long a Graph membership answer (positive or
	// negative) is reused. Default [DefaultGraphCacheTTL].
	GraphCacheTTL time.Duration

	// TokenCacheSize bounds the validated-token cache (keyed by the SHA-256
	// of the token; entries die at exp). Zero selects
	// [DefaultTokenCacheSize]; a negative value disables the cache.
	TokenCacheSize int

	// Observer, if set, receives counters for metrics. Its methods are
	// called synchronously and concurrently; they must be quick.
	Observer Observer

	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
}

var entraGUIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// entraIsGUID reports whether s is a lower-case GUID, as Entra writes them.
func entraIsGUID(s string) bool { return len(s) == 36 && entraGUIDRE.MatchString(s) }

// entraNormalize fills defaults and checks the config.
func (c EntraConfig) entraNormalize() (EntraConfig, error) {
	var errs []error
	if c.Authority == "" {
		c.Authority = DefaultEntraAuthority
	}
	a, err := entraCheckBaseURL("authority", c.Authority)
	if err != nil {
		errs = append(errs, err)
	}
	c.Authority = a
	if len(c.Tenants) == 0 {
		errs = append(errs, errors.New("entra: no tenants configured (entra.tenants lists the allowed tenant IDs)"))
	}
	seen := map[string]bool{}
	tenants := make([]string, 0, len(c.Tenants))
	for _, t := range c.Tenants {
		t = strings.ToLower(strings.TrimSpace(t))
		if !entraIsGUID(t) {
			errs = append(errs, fmt.Errorf("entra: tenant %q is not a tenant ID (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47; domain names are not accepted)", t))
			continue
		}
		if !seen[t] {
			seen[t] = true
			tenants = append(tenants, t)
		}
	}
	c.Tenants = tenants
	if len(c.Audiences) == 0 {
		c.Audiences = DefaultEntraAudiences()
	} else {
		c.Audiences = append([]string(nil), c.Audiences...)
		for _, a := range c.Audiences {
			if a == "" {
				errs = append(errs, errors.New("entra: empty audience"))
			}
		}
	}
	switch {
	case c.Leeway == 0:
		c.Leeway = DefaultEntraLeeway
	case c.Leeway < 0:
		c.Leeway = 0
	}
	def := func(d *time.Duration, v time.Duration, name string) {
		if *d == 0 {
			*d = v
		} else if *d < 0 {
			errs = append(errs, fmt.Errorf("entra: negative %s", name))
		}
	}
	def(&c.RefreshInterval, DefaultJWKSRefreshInterval, "refresh interval")
	def(&c.UnknownKIDRefreshInterval, DefaultUnknownKIDRefreshInterval, "unknown-kid refresh interval")
	def(&c.UnknownKIDMaxWait, DefaultUnknownKIDMaxWait, "unknown-kid wait")
	def(&c.RetryInterval, DefaultJWKSRetryInterval, "retry interval")
	def(&c.HTTPTimeout, DefaultEntraHTTPTimeout, "HTTP timeout")
	def(&c.GraphCacheTTL, DefaultGraphCacheTTL, "Graph cache TTL")
	if c.RetryInterval > c.RefreshInterval {
		c.RetryInterval = c.RefreshInterval
	}
	if c.GraphEndpoint == "" {
		c.GraphEndpoint = DefaultGraphEndpoint
	}
	g, err := entraCheckBaseURL("Graph endpoint", c.GraphEndpoint)
	if err != nil {
		errs = append(errs, err)
	}
	c.GraphEndpoint = g
	if c.TokenCacheSize == 0 {
		c.TokenCacheSize = DefaultTokenCacheSize
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Observer == nil {
		c.Observer = NopObserver{}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				TLSHandshakeTimeout:   5 * time.Second,
				ResponseHeaderTimeout: c.HTTPTimeout,
				MaxIdleConnsPerHost:   4,
				IdleConnTimeout:       90 * time.Second,
				ForceAttemptHTTP2:     true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errors.New("redirect refused")
			},
		}
	}
	return c, errors.Join(errs...)
}

// entraCheckBaseURL checks an authority-like URL (https, or http on a
// loopback host; no query or fragment) and returns it without a trailing
// slash.
func entraCheckBaseURL(what, raw string) (string, error) {
	if _, err := entraCheckURL(what, raw); err != nil {
		return raw, err
	}
	return strings.TrimRight(raw, "/"), nil
}

// entraCheckURL parses raw and enforces the https-or-loopback rule.
func entraCheckURL(what, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("entra: %s %q: %v", what, raw, err)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("entra: %s %q: want an absolute URL without user info, query or fragment", what, raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !entraIsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("entra: %s %q: http is allowed for loopback hosts only; use https", what, raw)
		}
	default:
		return nil, fmt.Errorf("entra: %s %q: scheme must be https (or http on loopback)", what, raw)
	}
	return u, nil
}

// entraIsLoopbackHost reports whether host is "localhost" or a loopback IP.
func entraIsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
