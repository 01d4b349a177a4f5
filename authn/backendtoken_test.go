package authn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- helpers shared by the backendtoken tests ----

// btClock is a settable clock.
type btClock struct {
	mu sync.Mutex
	t  time.Time
}

func newBTClock() *btClock { return &btClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *btClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *btClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// btSeen is a request as the test server saw it.
type btSeen struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Form   url.Values
	Body   string
}

// btServer is an httptest server that records requests and answers with
// handler (n is the 1-based request number).
type btServer struct {
	*httptest.Server
	mu      sync.Mutex
	seen    []btSeen
	handler func(w http.ResponseWriter, r *http.Request, n int)
}

func newBTServer(t *testing.T, handler func(w http.ResponseWriter, r *http.Request, n int)) *btServer {
	t.Helper()
	s := &btServer{handler: handler}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		s.mu.Lock()
		s.seen = append(s.seen, btSeen{r.Method, r.URL.Path, r.URL.Query(), r.Header.Clone(), form, string(body)})
		n := len(s.seen)
		s.mu.Unlock()
		s.handler(w, r, n)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *btServer) requests() []btSeen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]btSeen(nil), s.seen...)
}

func (s *btServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// btWriteToken answers with an IMDS-style token (numbers as strings).
func btWriteToken(w http.ResponseWriter, token string, exp time.Time) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"refresh_token":"","expires_in":"3599","expires_on":"%d","not_before":"%d","resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer"}`,
		token, exp.Unix(), exp.Add(-time.Hour).Unix())
}

// btWriteError answers with an OAuth error body.
func btWriteError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// btFastRetry is a retry policy with tiny waits.
var btFastRetry = RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, GoneBudget: 10 * time.Millisecond}

// btEvents collects observer events.
type btEvents chan RefreshEvent

func newBTEvents() btEvents { return make(btEvents, 64) }

func (e btEvents) observe(ev RefreshEvent) { e <- ev }

func (e btEvents) next(t *testing.T) RefreshEvent {
	t.Helper()
	select {
	case ev := <-e:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no refresh event")
		return RefreshEvent{}
	}
}

func (e btEvents) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-e:
		t.Fatalf("unexpected refresh event %+v", ev)
	case <-time.After(20 * time.Millisecond):
	}
}

func btToken(t *testing.T, p TokenProvider) AccessToken {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := p.Token(ctx)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok
}

func btTokenErr(t *testing.T, p TokenProvider) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := p.Token(ctx)
	if err == nil {
		t.Fatalf("Token succeeded (expires %v), want an error", tok.ExpiresOn)
	}
	return err
}

// ---- response parsing ----

func TestBackendTokenParseExpiresOnVariants(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exp := time.Unix(1772370000, 0).UTC()
	tests := []struct {
		name string
		body string
		want time.Time
	}{
		{"epoch string", `{"access_token":"t","expires_on":"1772370000"}`, exp},
		{"epoch number", `{"access_token":"t","expires_on":1772370000}`, exp},
		{"epoch float", `{"access_token":"t","expires_on":1772370000.5}`, exp.Add(500 * time.Millisecond)},
		{"epoch string padded", `{"access_token":"t","expires_on":" 1772370000 "}`, exp},
		{"RFC 3339", `{"access_token":"t","expires_on":"2026-03-01T13:00:00Z"}`, time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)},
		{"RFC 3339 offset", `{"access_token":"t","expires_on":"2026-03-01T14:00:00+01:00"}`, time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)},
		{"ISO space", `{"access_token":"t","expires_on":"2026-03-01 13:00:00"}`, time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)},
		{"US date", `{"access_token":"t","expires_on":"03/01/2026 13:00:00"}`, time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)},
		{"App Service 2017", `{"access_token":"t","expires_on":"3/1/2026 1:00:00 PM +00:00"}`, time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)},
		{"expires_in number (Entra v2)", `{"token_type":"Bearer","access_token":"t","expires_in":3599,"ext_expires_in":3599}`, now.Add(3599 * time.Second)},
		{"expires_in string", `{"access_token":"t","expires_in":"600"}`, now.Add(600 * time.Second)},
		{"expires_on wins over expires_in", `{"access_token":"t","expires_on":"1772370000","expires_in":"5"}`, exp},
		{"bad expires_on, good expires_in", `{"access_token":"t","expires_on":"soon","expires_in":60}`, now.Add(time.Minute)},
		{"empty expires_on, good expires_in", `{"access_token":"t","expires_on":"","expires_in":60}`, now.Add(time.Minute)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := btParseTokenResponse([]byte(tc.body), now)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Token != "t" || !tok.ExpiresOn.Equal(tc.want) {
				t.Fatalf("got %v, want expiry %v", tok.ExpiresOn, tc.want)
			}
		})
	}

	bad := []struct{ name, body, want string }{
		{"no expiry", `{"access_token":"t"}`, "neither expires_on nor expires_in"},
		{"garbage expiry", `{"access_token":"t","expires_on":"tomorrow"}`, "neither Unix seconds nor a known date form"},
		{"zero expires_in", `{"access_token":"t","expires_in":0}`, "expires_in"},
		{"negative epoch", `{"access_token":"t","expires_on":-5}`, "out of range"},
		{"no token", `{"expires_on":"1772370000"}`, "no access_token"},
		{"not JSON", `<html>proxy error</html>`, "not JSON"},
		{"token wrong type", `{"access_token":5,"expires_on":"1772370000"}`, "wrong type"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := btParseTokenResponse([]byte(tc.body), now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestBackendTokenErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, code, desc string }{
		{`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`, "invalid_client", "AADSTS7000215: Invalid client secret provided."},
		{`{"error":{"code":"BadRequest","message":"No identity"}}`, "BadRequest", "No identity"},
		{`{"statusCode":400,"message":"Unable to load the proper Managed Identity."}`, "", "Unable to load the proper Managed Identity."},
		{"upstream\x00 connect\nerror", "", "upstream connect error"},
	}
	for _, tc := range tests {
		code, desc := btErrorText([]byte(tc.body), nil)
		if code != tc.code || desc != tc.desc {
			t.Errorf("btErrorText(%q) = %q, %q; want %q, %q", tc.body, code, desc, tc.code, tc.desc)
		}
	}
	_, desc := btErrorText([]byte(strings.Repeat("é", 2000)), nil)
	if len(desc) > 300 || !strings.HasSuffix(desc, "…") {
		t.Errorf("long body not truncated: %d bytes", len(desc))
	}
	_, desc = btErrorText([]byte(`{"error":"x","error_description":"bad secret s3cr3t-value and s3cr3t-value%2B"}`), []string{"s3cr3t-value", "s3cr3t-value+"})
	if strings.Contains(desc, "s3cr3t") {
		t.Errorf("secret not redacted: %q", desc)
	}
}

func TestBackendTokenAccessTokenNeverPrinted(t *testing.T) {
	t.Parallel()
	tok := AccessToken{Token: "eyJsecret.payload.sig", ExpiresOn: time.Unix(1772370000, 0)}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "tok", tok)
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok), logged.String()} {
		if strings.Contains(s, "eyJ") {
			t.Fatalf("token printed: %s", s)
		}
		if !strings.Contains(s, "2026") {
			t.Fatalf("expiry missing: %s", s)
		}
	}
}

// ---- retries ----

func TestBackendTokenRetryDelays(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{}.withDefaults()
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 60 * time.Second, 60 * time.Second}
	for i, w := range want {
		if got := p.delay(i + 1); got != w {
			t.Errorf("delay(%d) = %v, want %v", i+1, got, w)
		}
	}
	if p.MaxAttempts != 5 || p.GoneBudget != 70*time.Second {
		t.Errorf("defaults %+v", p)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for v, w := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "-1": 0, "x": 0,
		now.Add(5 * time.Second).Format(http.TimeFormat): 5 * time.Second} {
		if got := btRetryAfter(v, now); got != w {
			t.Errorf("btRetryAfter(%q) = %v, want %v", v, got, w)
		}
	}
}

func TestBackendTokenProviderRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		steps    []int // statuses before success; 200 = success
		always   int   // if set, every answer has this status
		policy   RetryPolicy
		want     int  // requests made
		wantErr  bool // final error expected
		entra    bool // token endpoint rather than IMDS
		contains string
	}{
		{name: "429 then ok", steps: []int{429, 429}, policy: btFastRetry, want: 3},
		{name: "500 then ok", steps: []int{500, 503, 500}, policy: btFastRetry, want: 4},
		{name: "410 then ok", steps: []int{410}, policy: btFastRetry, want: 2},
		{name: "404 then ok (IMDS)", steps: []int{404}, policy: btFastRetry, want: 2},
		{name: "500 forever is bounded", always: 500, policy: btFastRetry, want: 5, wantErr: true, contains: "HTTP 500: server_error: try later"},
		{name: "MaxAttempts 2", always: 429, policy: RetryPolicy{MaxAttempts: 2, BaseDelay: time.Millisecond}, want: 2, wantErr: true, contains: "(2 attempts)"},
		{name: "MaxAttempts 1 disables retries", always: 503, policy: RetryPolicy{MaxAttempts: 1}, want: 1, wantErr: true},
		{name: "410 retried past MaxAttempts within GoneBudget", always: 410,
			policy: RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, GoneBudget: 5 * time.Millisecond}, want: 6, wantErr: true},
		{name: "400 not retried", always: 400, policy: btFastRetry, want: 1, wantErr: true, contains: "HTTP 400: server_error"},
		{name: "501 not retried", always: 501, policy: btFastRetry, want: 1, wantErr: true},
		{name: "404 not retried by token endpoint", always: 404, policy: btFastRetry, want: 1, wantErr: true, entra: true},
		{name: "429 retried by token endpoint", steps: []int{429}, policy: btFastRetry, want: 2, entra: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				status := tc.always
				if status == 0 && n <= len(tc.steps) {
					status = tc.steps[n-1]
				}
				if status != 0 && status != 200 {
					if status == 429 {
						w.Header().Set("Retry-After", "0")
					}
					btWriteError(w, status, "server_error", "try later")
					return
				}
				btWriteToken(w, "tok", time.Now().Add(time.Hour))
			})
			var p *CachedProvider
			var err error
			if tc.entra {
				p, err = NewClientSecretProvider(ClientSecretOptions{ProviderOptions: ProviderOptions{Retry: tc.policy},
					TenantID: "t1", ClientID: "c1", ClientSecret: "secret-value", AuthorityHost: srv.URL})
			} else {
				p, err = NewIMDSProvider(IMDSOptions{ProviderOptions: ProviderOptions{Retry: tc.policy}, Endpoint: srv.URL + "/metadata/identity/oauth2/token"})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if tc.wantErr {
				err := btTokenErr(t, p)
				var perr *ProviderError
				if !errors.As(err, &perr) || perr.StatusCode != tc.always {
					t.Fatalf("error %v (%T), want a ProviderError with status %d", err, err, tc.always)
				}
				if perr.Attempts != tc.want {
					t.Errorf("Attempts = %d, want %d", perr.Attempts, tc.want)
				}
				if tc.contains != "" && !strings.Contains(err.Error(), tc.contains) {
					t.Errorf("error %q does not contain %q", err, tc.contains)
				}
			} else if tok := btToken(t, p); tok.Token != "tok" {
				t.Fatalf("token %q", tok.Token)
			}
			if got := srv.count(); got != tc.want {
				t.Fatalf("%d requests, want %d", got, tc.want)
			}
		})
	}
}

func TestBackendTokenProviderRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	var first time.Time
	var gap time.Duration
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			btWriteError(w, 429, "throttled", "slow down")
			return
		}
		gap = time.Since(first)
		btWriteToken(w, "tok", time.Now().Add(time.Hour))
	})
	p, err := NewIMDSProvider(IMDSOptions{ProviderOptions: ProviderOptions{Retry: RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Second}}, Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	btToken(t, p)
	if gap < 900*time.Millisecond {
		t.Fatalf("retried after %v despite Retry-After: 1", gap)
	}
}

func TestBackendTokenProviderTransportErrorsRetried(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	p, err := NewIMDSProvider(IMDSOptions{ProviderOptions: ProviderOptions{Retry: RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond}}, Endpoint: "http://" + addr + "/token"})
	if err != nil {
		t.Fatal(err)
	}
	err = btTokenErr(t, p)
	var perr *ProviderError
	if !errors.As(err, &perr) || perr.Attempts != 3 || perr.StatusCode != 0 || perr.Err == nil {
		t.Fatalf("error %#v, want a transport ProviderError after 3 attempts", err)
	}
	if !strings.Contains(err.Error(), "http://"+addr+"/token") {
		t.Errorf("error %q does not name the endpoint", err)
	}
}

func TestBackendTokenProviderContextCancelStopsRetries(t *testing.T) {
	t.Parallel()
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		btWriteError(w, 503, "unavailable", "")
	})
	fetch, err := newIMDSFetch(IMDSOptions{ProviderOptions: ProviderOptions{Retry: RetryPolicy{BaseDelay: time.Hour, MaxDelay: time.Hour}}, Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = fetch(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
	if srv.count() != 1 {
		t.Fatalf("%d requests", srv.count())
	}
}

func TestBackendTokenProviderRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	elsewhere := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		btWriteToken(w, "stolen", time.Now().Add(time.Hour))
	})
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		http.Redirect(w, r, elsewhere.URL+"/grab", http.StatusTemporaryRedirect)
	})
	p, err := NewClientSecretProvider(ClientSecretOptions{ProviderOptions: ProviderOptions{Retry: btFastRetry},
		TenantID: "t1", ClientID: "c1", ClientSecret: "do-not-forward", TokenEndpoint: srv.URL + "/token"})
	if err != nil {
		t.Fatal(err)
	}
	err = btTokenErr(t, p)
	if !strings.Contains(err.Error(), "HTTP 307") {
		t.Fatalf("error %v", err)
	}
	if elsewhere.count() != 0 {
		t.Fatal("the redirect was followed")
	}
}

func TestBackendTokenProviderRejectsHugeResponse(t *testing.T) {
	t.Parallel()
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		fmt.Fprintf(w, `{"access_token":"%s","expires_in":60}`, strings.Repeat("a", btMaxResponse))
	})
	p, _ := NewIMDSProvider(IMDSOptions{Endpoint: srv.URL})
	if err := btTokenErr(t, p); !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Fatalf("error %v", err)
	}
}

func TestBackendTokenProviderEndpointChecks(t *testing.T) {
	t.Parallel()
	good := []struct{ authority, tenant, want string }{
		{"", "contoso.onmicrosoft.com", "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"},
		{"https://login.microsoftonline.us", "72f988bf-86f1-41af-91ab-2d7cd011db47", "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"},
		{"https://login.chinacloudapi.cn/", "t", "https://login.chinacloudapi.cn/t/oauth2/v2.0/token"},
		{"http://127.0.0.1:8080/base", "t", "http://127.0.0.1:8080/base/t/oauth2/v2.0/token"},
		{"http://localhost:1", "t", "http://localhost:1/t/oauth2/v2.0/token"},
		{"http://[::1]:1/", "t", "http://[::1]:1/t/oauth2/v2.0/token"},
	}
	for _, tc := range good {
		got, err := btTokenEndpoint(tc.authority, tc.tenant, "")
		if err != nil || got != tc.want {
			t.Errorf("btTokenEndpoint(%q, %q) = %q, %v; want %q", tc.authority, tc.tenant, got, err, tc.want)
		}
	}
	bad := []struct{ authority, tenant, override string }{
		{"http://login.example.com/", "t", ""}, // plain http off loopback
		{"ftp://login.example.com/", "t", ""},  // not http(s)
		{"login.microsoftonline.com", "t", ""}, // not absolute
		{"https://a/?x=1", "t", ""},            // query
		{"", "", ""},                           // no tenant
		{"", "../evil", ""},                    // path in tenant
		{"", "t/x", ""},                        // path in tenant
		{"", "t?x", ""},                        // query in tenant
		{"", "t", "http://10.0.0.1/token"},     // override over plain http
		{"", "t", "https://user:pw@x/token"},   // credentials in URL
		{"https://u:p@login.example.com", "t", ""},
	}
	for _, tc := range bad {
		if got, err := btTokenEndpoint(tc.authority, tc.tenant, tc.override); err == nil {
			t.Errorf("btTokenEndpoint(%q, %q, %q) = %q, want an error", tc.authority, tc.tenant, tc.override, got)
		}
	}
	for in, want := range map[string]string{
		"https://ossrdbms-aad.database.windows.net":          "https://ossrdbms-aad.database.windows.net/.default",
		"https://ossrdbms-aad.database.windows.net/.default": "https://ossrdbms-aad.database.windows.net/.default",
		"https://management.core.windows.net/":               "https://management.core.windows.net//.default",
	} {
		if got := btScope(in); got != want {
			t.Errorf("btScope(%q) = %q, want %q", in, got, want)
		}
	}
	if got := btMIResource("https://ossrdbms-aad.database.windows.net/.default"); got != DefaultTokenResource {
		t.Errorf("btMIResource = %q", got)
	}
	for _, e := range []string{"169.254.169.254/token", "file:///etc/passwd", "http://u:p@127.0.0.1/x", "://x"} {
		if _, err := NewIMDSProvider(IMDSOptions{Endpoint: e}); err == nil {
			t.Errorf("IMDS endpoint %q accepted", e)
		}
	}
}
