package authn

// Backend tokens: the Entra access token pgwarden obtains for ITSELF to log in
// to PostgreSQL servers whose password is a token (server_auth set to a managed
// identity, workload identity, client secret or client certificate). The
// providers are in backendtoken_managed.go (IMDS, App Service) and
// backendtoken_entra.go (Entra token endpoint: workload identity federation,
// client secret, client certificate); backendtoken_cache.go caches and refreshes
// their tokens; backendtoken_env.go picks one from the environment.
//
// Nothing here logs. Tokens, secrets, the IDENTITY_HEADER value and client
// assertions never appear in an error: errors carry the endpoint's own error
// text, with any secret the request carried blanked out.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// DefaultTokenResource is the resource (v1 audience) of Azure Database for
// PostgreSQL and MySQL in the public cloud, used when a provider is given no
// resource. The v2 scope is this plus "/.default".
const DefaultTokenResource = "https://ossrdbms-aad.database.windows.net"

// Provider names, as reported by [CachedProvider.Name], in [RefreshEvent] and
// in [ProviderError].
const (
	ProviderIMDS              = "imds"
	ProviderAppService        = "app_service"
	ProviderWorkloadIdentity  = "workload_identity"
	ProviderClientSecret      = "client_secret"
	ProviderClientCertificate = "client_certificate"
)

// AccessToken is an access token and the time it expires. Its String,
// GoString and LogValue methods never show the token itself, so printing or
// logging an AccessToken by mistake does not leak it.
type AccessToken struct {
	// Token is the access token (a JWT), used as the PostgreSQL password.
	Token string
	// ExpiresOn is when the token expires (its exp claim).
	ExpiresOn time.Time
}

// String describes the token without revealing it.
func (t AccessToken) String() string {
	return "AccessToken{ExpiresOn: " + t.ExpiresOn.UTC().Format(time.RFC3339) + ", Token: <redacted>}"
}

// GoString describes the token without revealing it (for %#v).
func (t AccessToken) GoString() string { return "authn." + t.String() }

// LogValue implements [slog.LogValuer]: only the expiry is logged.
func (t AccessToken) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expires_on", t.ExpiresOn), slog.String("token", "<redacted>"))
}

// TokenProvider hands out pgwarden's own access token for backend logins.
// Implementations cache the token and refresh it before it expires; Token is
// safe for concurrent use.
type TokenProvider interface {
	Token(ctx context.Context) (AccessToken, error) // cached; refreshed before expiry
}

// FetchFunc obtains a brand-new token, with no caching. [NewCachedProvider]
// turns one into a [TokenProvider].
type FetchFunc func(ctx context.Context) (AccessToken, error)

// RetryPolicy bounds the retries of one token request. Zero fields take the
// defaults, which follow Microsoft's IMDS guidance: 5 tries spaced 2, 4, 8 and
// 16 seconds apart (tries at about 0, 2, 6, 14 and 30 s), no wait longer than
// 60 s, and for HTTP 410 (IMDS being updated, "available within 70 seconds")
// further tries until 70 s have been spent waiting. A Retry-After header
// lengthens a wait (up to MaxDelay). Retried: transport errors and timeouts,
// 408, 429 and 5xx from every provider, plus 404 and 410 from the managed
// identity endpoints. Other statuses fail at once.
type RetryPolicy struct {
	// MaxAttempts is the number of tries, the first included (default 5;
	// 1 disables retries).
	MaxAttempts int
	// BaseDelay is the first wait; each later wait doubles it (default 2s).
	BaseDelay time.Duration
	// MaxDelay caps a single wait (default 60s).
	MaxDelay time.Duration
	// GoneBudget is how long, in total waits, an endpoint answering 410 is
	// retried, beyond MaxAttempts if need be (default 70s).
	GoneBudget time.Duration
}

const btMaxAttemptsHardCap = 32

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.MaxAttempts > btMaxAttemptsHardCap {
		p.MaxAttempts = btMaxAttemptsHardCap
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 2 * time.Second
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 60 * time.Second
	}
	if p.GoneBudget <= 0 {
		p.GoneBudget = 70 * time.Second
	}
	return p
}

// delay is the wait after the given (1-based) failed attempt.
func (p RetryPolicy) delay(attempt int) time.Duration {
	d := p.BaseDelay
	for i := 1; i < attempt && d < p.MaxDelay; i++ {
		d *= 2
	}
	return min(d, p.MaxDelay)
}

// ProviderOptions are the settings every provider shares.
type ProviderOptions struct {
	// Resource is the resource the token is for (its audience), without
	// "/.default" (default [DefaultTokenResource]). The Entra token endpoint
	// providers request the scope Resource+"/.default".
	Resource string
	// HTTPClient sends the requests. Default: a client with a 30 s timeout
	// per try; for IMDS and App Service it never uses a proxy. Redirects are
	// never followed, whatever the client says, so a secret is never re-sent
	// to another address.
	HTTPClient *http.Client
	// Retry bounds retries of one token request.
	Retry RetryPolicy
	// Cache configures the caching wrapper. Cache.Now is also the clock the
	// provider uses for expires_in and for client assertion times.
	Cache CacheOptions
}

func (o ProviderOptions) resource() string {
	if o.Resource == "" {
		return DefaultTokenResource
	}
	return o.Resource
}

func (o ProviderOptions) now() time.Time {
	if o.Cache.Now != nil {
		return o.Cache.Now()
	}
	return time.Now()
}

// httpClient returns the client to use: never following redirects, never
// using a proxy for local endpoints unless the caller supplied its own client.
func (o ProviderOptions) httpClient(direct bool) *http.Client {
	var c http.Client
	if o.HTTPClient != nil {
		c = *o.HTTPClient
	} else {
		c.Timeout = 30 * time.Second
		if direct {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.Proxy = nil
			c.Transport = tr
		}
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// ProviderError is a failed token request. Its message carries the endpoint's
// own error text (OAuth error and error_description, or the body's message)
// with every secret of the request blanked out; it never holds a token, a
// client secret, the IDENTITY_HEADER value or a client assertion.
type ProviderError struct {
	// Provider is the provider name, e.g. [ProviderIMDS].
	Provider string
	// Endpoint is the URL asked, without its query.
	Endpoint string
	// StatusCode is the HTTP status of the last answer (0 when there was none).
	StatusCode int
	// Code is the OAuth "error" value (or the body's error code), if any.
	Code string
	// Description is the endpoint's error text (error_description, message,
	// or the start of the body), if any.
	Description string
	// Attempts is the number of tries made.
	Attempts int
	// Err is the underlying error (transport, file, parse), if any.
	Err error
}

// Error describes the failure.
func (e *ProviderError) Error() string {
	var b strings.Builder
	b.WriteString("authn: ")
	b.WriteString(e.Provider)
	b.WriteString(" token request")
	if e.Endpoint != "" {
		b.WriteString(" to ")
		b.WriteString(e.Endpoint)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (%d attempts)", e.Attempts)
	}
	b.WriteString(" failed")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *ProviderError) Unwrap() error { return e.Err }

// btRequest describes one provider's token request.
type btRequest struct {
	provider string
	client   *http.Client
	policy   RetryPolicy
	// managedIdentity: also retry 404 and 410.
	managedIdentity bool
	now             func() time.Time
	// build makes the request for one try, and the secrets it carries (to be
	// blanked out of any error text).
	build func(ctx context.Context) (*http.Request, []string, error)
}

func (r *btRequest) retryable(status int) bool {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests:
		return true
	case status >= 500 && status != http.StatusNotImplemented && status != http.StatusHTTPVersionNotSupported:
		return true
	case r.managedIdentity && (status == http.StatusNotFound || status == http.StatusGone):
		return true
	}
	return false
}

const btMaxResponse = 1 << 20

// do runs the request with retries and parses the token response.
func (r *btRequest) do(ctx context.Context) (AccessToken, error) {
	p := r.policy.withDefaults()
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		tok, perr, retryAfter := r.try(ctx)
		if perr == nil {
			return tok, nil
		}
		perr.Attempts = attempt
		retry := perr.StatusCode != 0 && r.retryable(perr.StatusCode) ||
			perr.StatusCode == 0 && errors.Is(perr.Err, errBTTransport) && ctx.Err() == nil
		if !retry {
			return AccessToken{}, perr
		}
		d := p.delay(attempt)
		if retryAfter > d {
			d = min(retryAfter, p.MaxDelay)
		}
		if attempt >= p.MaxAttempts {
			if perr.StatusCode != http.StatusGone || waited >= p.GoneBudget || attempt >= btMaxAttemptsHardCap {
				return AccessToken{}, perr
			}
			d = min(d, p.GoneBudget-waited)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			perr.Err = errors.Join(perr.Err, ctx.Err())
			return AccessToken{}, perr
		case <-t.C:
		}
		waited += d
	}
}

// errBTTransport marks transport failures (retryable).
var errBTTransport = errors.New("transport error")

type btTransportError struct{ err error }

func (e btTransportError) Error() string        { return e.err.Error() }
func (e btTransportError) Unwrap() []error      { return []error{e.err, errBTTransport} }
func (e btTransportError) Is(target error) bool { return target == errBTTransport }

// try makes one attempt. On failure it returns a ProviderError (StatusCode
// set for HTTP errors; Err wrapping errBTTransport for transport errors) and
// the Retry-After the endpoint asked for.
func (r *btRequest) try(ctx context.Context) (AccessToken, *ProviderError, time.Duration) {
	req, secrets, err := r.build(ctx)
	if err != nil {
		return AccessToken{}, &ProviderError{Provider: r.provider, Err: err}, 0
	}
	endpoint := btEndpointString(req.URL)
	perr := &ProviderError{Provider: r.provider, Endpoint: endpoint}
	resp, err := r.client.Do(req)
	if err != nil {
		perr.Err = btTransportError{errors.New(btRedact(btUnwrapURLError(err).Error(), secrets))}
		return AccessToken{}, perr, 0
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, btMaxResponse+1))
	if err != nil {
		perr.StatusCode = resp.StatusCode
		if resp.StatusCode == http.StatusOK {
			perr.StatusCode = 0
			perr.Err = btTransportError{fmt.Errorf("reading response: %s", btRedact(err.Error(), secrets))}
		}
		return AccessToken{}, perr, 0
	}
	if resp.StatusCode != http.StatusOK {
		perr.StatusCode = resp.StatusCode
		perr.Code, perr.Description = btErrorText(body, secrets)
		return AccessToken{}, perr, btRetryAfter(resp.Header.Get("Retry-After"), r.now())
	}
	if len(body) > btMaxResponse {
		perr.Err = errors.New("response larger than 1 MiB")
		return AccessToken{}, perr, 0
	}
	tok, err := btParseTokenResponse(body, r.now())
	if err != nil {
		perr.Err = err
		return AccessToken{}, perr, 0
	}
	return tok, nil, 0
}

// btUnwrapURLError drops *url.Error's "Get \"url\":" prefix: the endpoint is
// already in the ProviderError.
func btUnwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

func btEndpointString(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	c.Fragment = ""
	c.User = nil
	return c.String()
}

// btRedact blanks out every secret (and its URL-encoded form) from s.
func btRedact(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) < 4 {
			continue
		}
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
		if q := url.QueryEscape(sec); q != sec {
			s = strings.ReplaceAll(s, q, "[REDACTED]")
		}
	}
	return s
}

const btMaxErrorText = 1024

// btErrorText extracts the error code and description from an error body:
// OAuth {"error","error_description"}, {"error":{"code","message"}},
// {"message"} or {"Message"}; else the start of the body as text.
func btErrorText(body []byte, secrets []string) (code, desc string) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil {
		str := func(keys ...string) string {
			for _, k := range keys {
				var s string
				if raw, ok := m[k]; ok && json.Unmarshal(raw, &s) == nil && s != "" {
					return s
				}
			}
			return ""
		}
		code = str("error", "code", "Code")
		desc = str("error_description", "message", "Message")
		if raw, ok := m["error"]; ok && code == "" {
			var inner struct{ Code, Message string }
			if json.Unmarshal(raw, &inner) == nil {
				code = inner.Code
				if desc == "" {
					desc = inner.Message
				}
			}
		}
		if code != "" || desc != "" {
			return btCleanText(code, secrets, 128), btCleanText(desc, secrets, btMaxErrorText)
		}
	}
	return "", btCleanText(string(body), secrets, 256)
}

// btCleanText redacts secrets, turns control characters into spaces, and
// truncates.
func btCleanText(s string, secrets []string, max int) string {
	s = btRedact(s, secrets)
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		cut := max
		for cut > 0 && !btUTF8RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func btUTF8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// btRetryAfter parses a Retry-After header (seconds or an HTTP date).
func btRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, 3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), time.Hour)
	}
	return 0
}

// btTokenResponse is the JSON of IMDS, App Service and the Entra token
// endpoint (the fields we use).
type btTokenResponse struct {
	AccessToken string          `json:"access_token"`
	ExpiresOn   json.RawMessage `json:"expires_on"`
	ExpiresIn   json.RawMessage `json:"expires_in"`
}

// btParseTokenResponse parses a token response. ExpiresOn comes from
// expires_on when present and parseable, else from now+expires_in.
func btParseTokenResponse(body []byte, now time.Time) (AccessToken, error) {
	var r btTokenResponse
	if err := json.Unmarshal(body, &r); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return AccessToken{}, fmt.Errorf("response is not JSON (syntax error at byte %d)", se.Offset)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return AccessToken{}, fmt.Errorf("response field %q has the wrong type (%s)", te.Field, te.Value)
		}
		return AccessToken{}, errors.New("response is not a JSON token response")
	}
	if r.AccessToken == "" {
		return AccessToken{}, errors.New("response has no access_token")
	}
	var onErr, inErr error
	if btPresent(r.ExpiresOn) {
		exp, err := btParseExpiresOn(r.ExpiresOn)
		if err == nil {
			return AccessToken{Token: r.AccessToken, ExpiresOn: exp}, nil
		}
		onErr = err
	}
	if btPresent(r.ExpiresIn) {
		secs, err := btParseSeconds(r.ExpiresIn)
		if err == nil && secs > 0 {
			return AccessToken{Token: r.AccessToken, ExpiresOn: now.Add(time.Duration(secs * float64(time.Second)))}, nil
		}
		if err == nil {
			err = errors.New("not positive")
		}
		inErr = fmt.Errorf("expires_in: %w", err)
	}
	if onErr == nil && inErr == nil {
		return AccessToken{}, errors.New("response has neither expires_on nor expires_in")
	}
	return AccessToken{}, errors.Join(onErr, inErr)
}

func btPresent(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null")) && !bytes.Equal(raw, []byte(`""`))
}

// btParseSeconds parses a JSON number or a string holding one.
func btParseSeconds(raw json.RawMessage) (float64, error) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(bytes.TrimSpace(raw))
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, errors.New("not a number")
	}
	return f, nil
}

// btExpiresOnLayouts are the date forms MSAL accepts for expires_on, plus the
// App Service 2017-09-01 form ("09/14/2017 00:00:00 PM +00:00").
var btExpiresOnLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05",
	"01/02/2006 15:04:05",
	"1/2/2006 3:04:05 PM -07:00",
}

// btParseExpiresOn parses expires_on: Unix seconds as a JSON number or a
// string, or one of btExpiresOnLayouts (UTC when there is no zone).
func btParseExpiresOn(raw json.RawMessage) (time.Time, error) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		s = string(bytes.TrimSpace(raw))
	}
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f <= 0 || f > 1e11 {
			return time.Time{}, fmt.Errorf("expires_on %q is out of range", btCleanText(s, nil, 40))
		}
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC(), nil
	}
	for _, layout := range btExpiresOnLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("expires_on %q is neither Unix seconds nor a known date form", btCleanText(s, nil, 40))
}

// btIsLoopbackHost reports whether host (no port) is localhost or a loopback IP.
func btIsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}

// btParseEndpoint checks an absolute http(s) URL. With secure, plain http is
// allowed only on a loopback address.
func btParseEndpoint(what, raw string, secure bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("authn: %s %q is not a URL", what, raw)
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("authn: %s %q is not an absolute http(s) URL", what, raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("authn: %s must not carry user information", what)
	}
	if secure && u.Scheme == "http" && !btIsLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("authn: %s %q must use https (plain http only on loopback)", what, raw)
	}
	return u, nil
}

const btRedacted = "<redacted>"

// String describes the options with the identity header redacted.
func (o AppServiceOptions) String() string {
	type plain AppServiceOptions
	p := plain(o)
	if p.IdentityHeader != "" {
		p.IdentityHeader = btRedacted
	}
	return fmt.Sprintf("%+v", p)
}

// GoString is String (for %#v).
func (o AppServiceOptions) GoString() string { return o.String() }

// String describes the options with the client secret redacted.
func (o ClientSecretOptions) String() string {
	type plain ClientSecretOptions
	p := plain(o)
	if p.ClientSecret != "" {
		p.ClientSecret = btRedacted
	}
	return fmt.Sprintf("%+v", p)
}

// GoString is String (for %#v).
func (o ClientSecretOptions) GoString() string { return o.String() }

// String describes the options without the private key.
func (o ClientCertificateOptions) String() string {
	type plain ClientCertificateOptions
	p := plain(o)
	key := ""
	if p.PrivateKey != nil {
		key = " PrivateKey:" + btRedacted
		p.PrivateKey = nil
	}
	s := fmt.Sprintf("%+v", p)
	return strings.TrimSuffix(s, "}") + key + "}"
}

// GoString is String (for %#v).
func (o ClientCertificateOptions) GoString() string { return o.String() }
