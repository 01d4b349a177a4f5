package authn_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

// enTestKeys is a pool of RSA keys generated once, so that tests do not spend
// their time in rsa.GenerateKey. Each IdP takes keys from the pool in
// order, so keys are distinct within one IdP.
var enTestKeys = sync.OnceValue(func() []*rsa.PrivateKey {
	keys := make([]*rsa.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	return keys
})

func enPooledKeys() func() (*rsa.PrivateKey, error) {
	var n atomic.Int64
	return func() (*rsa.PrivateKey, error) {
		i := n.Add(1) - 1
		keys := enTestKeys()
		if int(i) >= len(keys) {
			return rsa.GenerateKey(rand.Reader, 2048)
		}
		return keys[i], nil
	}
}

// enFakeClock is a settable clock shared by an IdP and a validator.
type enFakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newEnFakeClock() *enFakeClock { return &enFakeClock{t: time.Now().Truncate(time.Second)} }

func (c *enFakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *enFakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// enCountObserver counts the Observer events.
type enCountObserver struct {
	hits, misses, sigOK, sigBad atomic.Int64
	graphCalls, graphCached     atomic.Int64
	fetchOK, fetchErr           atomic.Int64
	mu                          sync.Mutex
	loaded                      []authn.KeysLoadedEvent
	graph                       []authn.GraphLookupEvent
}

func (o *enCountObserver) JWKSFetch(e authn.JWKSFetchEvent) {
	if e.Err != nil {
		o.fetchErr.Add(1)
	} else {
		o.fetchOK.Add(1)
	}
}

func (o *enCountObserver) KeysLoaded(e authn.KeysLoadedEvent) {
	o.mu.Lock()
	o.loaded = append(o.loaded, e)
	o.mu.Unlock()
}

func (o *enCountObserver) TokenCache(hit bool) {
	if hit {
		o.hits.Add(1)
	} else {
		o.misses.Add(1)
	}
}

func (o *enCountObserver) SignatureCheck(ok bool) {
	if ok {
		o.sigOK.Add(1)
	} else {
		o.sigBad.Add(1)
	}
}

func (o *enCountObserver) GraphLookup(e authn.GraphLookupEvent) {
	if e.Cached {
		o.graphCached.Add(1)
	} else {
		o.graphCalls.Add(1)
	}
	o.mu.Lock()
	o.graph = append(o.graph, e)
	o.mu.Unlock()
}

// enIdPServer serves a dev IdP with request counters and a switch that makes
// it unreachable.
type enIdPServer struct {
	idp  *devidp.IdP
	srv  *httptest.Server
	down atomic.Bool
	// jwksDelay delays key set responses.
	jwksDelay atomic.Int64
	jwks      atomic.Int64 // key set requests served
	discovery atomic.Int64 // discovery requests served
	graph     atomic.Int64 // Graph requests served
	inflight  atomic.Int64 // requests being answered now
	// intercept, if set and returning true, has answered the request.
	intercept atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]
}

func newEnIdPServer(t testing.TB, opts devidp.Options) *enIdPServer {
	t.Helper()
	if opts.GenerateKey == nil {
		opts.GenerateKey = enPooledKeys()
	}
	if opts.Logger == nil {
		opts.Logger = enQuietLogger()
	}
	idp, err := devidp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := &enIdPServer{idp: idp}
	h := idp.Handler()
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		if s.down.Load() {
			http.Error(w, "identity provider down", http.StatusServiceUnavailable)
			return
		}
		if f := s.intercept.Load(); f != nil && (*f)(w, r) {
			return
		}
		switch {
		case strings.Contains(r.URL.Path, "/discovery/"):
			s.jwks.Add(1)
			if d := time.Duration(s.jwksDelay.Load()); d > 0 {
				time.Sleep(d)
			}
		case strings.Contains(r.URL.Path, "openid-configuration"):
			s.discovery.Add(1)
		case strings.HasPrefix(r.URL.Path, "/v1.0/"):
			s.graph.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	if err := idp.SetBaseURL(s.srv.URL); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *enIdPServer) mint(t testing.TB, spec devidp.TokenSpec) string {
	t.Helper()
	tok, err := s.idp.Mint(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// config returns a validator config for the IdP, with a Graph token source
// minted by the IdP.
func (s *enIdPServer) config(obs authn.Observer) authn.EntraConfig {
	return authn.EntraConfig{
		Authority:     s.srv.URL,
		Tenants:       s.idp.Tenants(),
		GraphEndpoint: s.srv.URL,
		GraphToken: func(ctx context.Context, tenant string) (string, error) {
			return s.idp.Mint(devidp.TokenSpec{Tenant: tenant, Type: devidp.TypeApp, Audience: devidp.GraphAudience})
		},
		Observer:      obs,
		RetryInterval: 50 * time.Millisecond,
	}
}

func newEnValidator(t testing.TB, cfg authn.EntraConfig) *authn.Validator {
	t.Helper()
	v, err := authn.NewValidator(context.Background(), cfg, enQuietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func enQuietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// enAuthErr asserts err is an *AuthError and returns it.
func enAuthErr(t testing.TB, err error) *authn.AuthError {
	t.Helper()
	var ae *authn.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *AuthError", err, err)
	}
	return ae
}

// enDecodeToken reads access_token from a token endpoint response.
func enDecodeToken(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error_description"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, out.Error)
	}
	return out.AccessToken
}
