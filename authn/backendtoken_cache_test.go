package authn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// btFakeSource is a FetchFunc handing out numbered tokens with a fixed
// lifetime, or failing while fail is set.
type btFakeSource struct {
	clock    *btClock
	lifetime time.Duration
	calls    atomic.Int32
	fail     atomic.Bool
	block    chan struct{} // if non-nil, each fetch waits for a value
}

func (s *btFakeSource) fetch(ctx context.Context) (AccessToken, error) {
	n := s.calls.Add(1)
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return AccessToken{}, ctx.Err()
		}
	}
	if s.fail.Load() {
		return AccessToken{}, &ProviderError{Provider: "fake", StatusCode: 500, Code: "server_error", Description: "IMDS is down"}
	}
	return AccessToken{Token: fmt.Sprintf("tok-%d", n), ExpiresOn: s.clock.Now().Add(s.lifetime)}, nil
}

func TestBackendTokenRefreshPoint(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		life, want time.Duration
		jitter     float64
	}{
		{time.Hour, 30 * time.Minute, 0},                                       // half-life (= min(exp−5m, half-life))
		{90 * time.Minute, 45 * time.Minute, 0},                                // Entra default upper bound
		{24 * time.Hour, 12 * time.Hour, 0},                                    // managed identity, long-lived
		{10 * time.Minute, 5 * time.Minute, 0},                                 // boundary: both rules agree
		{4 * time.Minute, 2 * time.Minute, 0},                                  // short token: half-life, not "5 min before"
		{time.Minute, 30 * time.Second, 0},                                     // very short
		{time.Hour, 33 * time.Minute, 0.1},                                     // +10 % jitter
		{time.Hour, 27 * time.Minute, -0.1},                                    // −10 % jitter
		{10*time.Minute + 30*time.Second, 5*time.Minute + 30*time.Second, 0.1}, // jitter never past exp − 5 min
		{4 * time.Minute, 2*time.Minute + 12*time.Second, 0.1},                 // short: jitter applies
	}
	for _, tc := range tests {
		got := btRefreshPoint(t0, t0.Add(tc.life), tc.jitter).Sub(t0)
		if got != tc.want {
			t.Errorf("lifetime %v jitter %v: refresh after %v, want %v", tc.life, tc.jitter, got, tc.want)
		}
	}
	if got := btRefreshPoint(t0, t0.Add(-time.Second), 0); !got.Equal(t0) {
		t.Errorf("expired token: refresh at %v", got)
	}
	for _, tc := range []struct{ life, margin, want time.Duration }{
		{time.Hour, time.Minute, 59 * time.Minute},
		{2 * time.Minute, time.Minute, 90 * time.Second}, // margin capped at a quarter of the lifetime
		{time.Hour, 0, time.Hour},
	} {
		if got := btUsableUntil(t0, t0.Add(tc.life), tc.margin).Sub(t0); got != tc.want {
			t.Errorf("usable until %v, want %v (life %v margin %v)", got, tc.want, tc.life, tc.margin)
		}
	}
}

func TestBackendTokenCacheRefreshBeforeExpiry(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	src := &btFakeSource{clock: clock, lifetime: time.Hour}
	events := newBTEvents()
	p := NewCachedProvider("fake", src.fetch, CacheOptions{Now: clock.Now, Observer: events.observe, NoJitter: true})
	defer p.Close()

	tok := btToken(t, p)
	if tok.Token != "tok-1" {
		t.Fatalf("first token %q", tok.Token)
	}
	if ev := events.next(t); ev.Result != RefreshOK || ev.Provider != "fake" || !ev.ExpiresOn.Equal(tok.ExpiresOn) || ev.Err != nil {
		t.Fatalf("event %+v", ev)
	}

	// Before the half-life: cached, nothing fetched.
	clock.Advance(29 * time.Minute)
	for range 5 {
		if got := btToken(t, p); got.Token != "tok-1" {
			t.Fatalf("token %q before half-life", got.Token)
		}
	}
	events.none(t)
	if src.calls.Load() != 1 {
		t.Fatalf("%d fetches before half-life", src.calls.Load())
	}

	// Past the half-life: the current token is still handed out at once,
	// and one background refresh runs.
	clock.Advance(2 * time.Minute)
	if got := btToken(t, p); got.Token != "tok-1" {
		t.Fatalf("token %q while refreshing", got.Token)
	}
	if ev := events.next(t); ev.Result != RefreshOK {
		t.Fatalf("event %+v", ev)
	}
	if got := btToken(t, p); got.Token != "tok-2" || !got.ExpiresOn.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("after refresh: %q %v", got.Token, got.ExpiresOn)
	}
	if src.calls.Load() != 2 {
		t.Fatalf("%d fetches", src.calls.Load())
	}

	// Short-lived tokens are refreshed at their half-life.
	src.lifetime = 4 * time.Minute
	clock.Advance(31 * time.Minute)
	btToken(t, p) // starts refresh of tok-2 → tok-3 (4 min)
	events.next(t)
	if got := btToken(t, p); got.Token != "tok-3" {
		t.Fatalf("token %q", got.Token)
	}
	clock.Advance(119 * time.Second)
	btToken(t, p)
	events.none(t)
	clock.Advance(2 * time.Second)
	btToken(t, p)
	if ev := events.next(t); ev.Result != RefreshOK {
		t.Fatalf("event %+v", ev)
	}
	if got := btToken(t, p); got.Token != "tok-4" {
		t.Fatalf("token %q", got.Token)
	}
}

func TestBackendTokenCacheExpiredTokenWaitsForRefresh(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	src := &btFakeSource{clock: clock, lifetime: time.Hour}
	p := NewCachedProvider("fake", src.fetch, CacheOptions{Now: clock.Now, NoJitter: true})
	btToken(t, p)
	// Within the 1-minute expiry margin the old token is no longer handed
	// out: the caller waits for a new one.
	clock.Advance(59*time.Minute + time.Second)
	if got := btToken(t, p); got.Token != "tok-2" {
		t.Fatalf("token %q inside the expiry margin", got.Token)
	}
}

func TestBackendTokenCacheFailureKeepsTokenUntilExpiry(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	src := &btFakeSource{clock: clock, lifetime: time.Hour}
	events := newBTEvents()
	p := NewCachedProvider(ProviderIMDS, src.fetch, CacheOptions{Now: clock.Now, Observer: events.observe, NoJitter: true})
	defer p.Close()
	first := btToken(t, p)
	events.next(t)

	src.fail.Store(true)
	clock.Advance(31 * time.Minute)
	if got := btToken(t, p); got.Token != "tok-1" {
		t.Fatalf("token %q", got.Token)
	}
	ev := events.next(t)
	if ev.Result != RefreshFailedKeptToken || ev.Provider != ProviderIMDS || !ev.ExpiresOn.Equal(first.ExpiresOn) {
		t.Fatalf("event %+v", ev)
	}
	var perr *ProviderError
	if !errors.As(ev.Err, &perr) || !strings.Contains(ev.Err.Error(), "IMDS is down") {
		t.Fatalf("event error %v", ev.Err)
	}

	// The failed refresh is not retried on every call: at most every 30 s.
	for range 10 {
		if got := btToken(t, p); got.Token != "tok-1" {
			t.Fatalf("token %q", got.Token)
		}
	}
	events.none(t)
	clock.Advance(31 * time.Second)
	btToken(t, p)
	if ev := events.next(t); ev.Result != RefreshFailedKeptToken {
		t.Fatalf("event %+v", ev)
	}
	if src.calls.Load() != 3 {
		t.Fatalf("%d fetches", src.calls.Load())
	}

	// Up to the expiry margin the old token is still served.
	clock.Advance(27*time.Minute + 28*time.Second) // 58:59 after issue
	if got := btToken(t, p); got.Token != "tok-1" {
		t.Fatalf("token %q", got.Token)
	}
	events.next(t)

	// Then it is not: callers get the endpoint's error.
	clock.Advance(2 * time.Second)
	err := btTokenErr(t, p)
	if !errors.As(err, &perr) || perr.StatusCode != 500 || !strings.Contains(err.Error(), "IMDS is down") {
		t.Fatalf("error %v", err)
	}
	if ev := events.next(t); ev.Result != RefreshFailed || !ev.ExpiresOn.IsZero() {
		t.Fatalf("event %+v", ev)
	}

	// Recovery.
	src.fail.Store(false)
	if got := btToken(t, p); got.Token == "tok-1" || !got.ExpiresOn.After(clock.Now()) {
		t.Fatalf("token %v", got)
	}
	if ev := events.next(t); ev.Result != RefreshOK {
		t.Fatalf("event %+v", ev)
	}
}

func TestBackendTokenCacheExpiryMarginZero(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	src := &btFakeSource{clock: clock, lifetime: time.Hour}
	p := NewCachedProvider("fake", src.fetch, CacheOptions{Now: clock.Now, NoJitter: true, ExpiryMargin: -1})
	btToken(t, p)
	src.fail.Store(true)
	clock.Advance(time.Hour - time.Second)
	if got := btToken(t, p); got.Token != "tok-1" {
		t.Fatalf("token %q one second before expiry", got.Token)
	}
	clock.Advance(time.Second)
	btTokenErr(t, p)
}

func TestBackendTokenCacheRejectsExpiredOrEmptyToken(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	var mu sync.Mutex
	answer := AccessToken{Token: "t", ExpiresOn: clock.Now().Add(-time.Second)}
	p := NewCachedProvider("fake", func(context.Context) (AccessToken, error) {
		mu.Lock()
		defer mu.Unlock()
		return answer, nil
	}, CacheOptions{Now: clock.Now})
	if err := btTokenErr(t, p); !strings.Contains(err.Error(), "expired") {
		t.Fatalf("error %v", err)
	}
	mu.Lock()
	answer = AccessToken{ExpiresOn: clock.Now().Add(time.Hour)}
	mu.Unlock()
	if err := btTokenErr(t, p); !strings.Contains(err.Error(), "empty token") {
		t.Fatalf("error %v", err)
	}
}

// Concurrent callers share one refresh; a caller giving up does not cancel
// the refresh for the others.
func TestBackendTokenCacheSingleflight(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	src := &btFakeSource{clock: clock, lifetime: time.Hour, block: make(chan struct{})}
	p := NewCachedProvider("fake", src.fetch, CacheOptions{Now: clock.Now, NoJitter: true})
	defer p.Close()

	impatient, cancel := context.WithCancel(context.Background())
	impatientErr := make(chan error, 1)
	go func() {
		_, err := p.Token(impatient)
		impatientErr <- err
	}()
	const n = 32
	var wg sync.WaitGroup
	results := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := p.Token(context.Background())
			if err != nil {
				results <- err.Error()
				return
			}
			results <- tok.Token
		}()
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-impatientErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("impatient caller: %v", err)
	}
	src.block <- struct{}{}
	wg.Wait()
	close(results)
	for r := range results {
		if r != "tok-1" {
			t.Fatalf("caller got %q", r)
		}
	}
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("%d fetches, want 1", got)
	}
}

func TestBackendTokenCacheInvalidate(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	src := &btFakeSource{clock: clock, lifetime: time.Hour}
	p := NewCachedProvider("fake", src.fetch, CacheOptions{Now: clock.Now, NoJitter: true})
	tok := btToken(t, p)
	p.Invalidate("some-other-token") // not the cached one: kept
	if got := btToken(t, p); got.Token != tok.Token {
		t.Fatalf("token %q", got.Token)
	}
	p.Invalidate(tok.Token)
	if got := btToken(t, p); got.Token != "tok-2" {
		t.Fatalf("token %q after Invalidate", got.Token)
	}
}

func TestBackendTokenCacheClose(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	src := &btFakeSource{clock: clock, lifetime: time.Hour, block: make(chan struct{})}
	p := NewCachedProvider("fake", src.fetch, CacheOptions{Now: clock.Now})
	errc := make(chan error, 1)
	go func() {
		_, err := p.Token(context.Background())
		errc <- err
	}()
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	p.Close()
	if err := <-errc; !errors.Is(err, ErrTokenProviderClosed) {
		t.Fatalf("waiting caller: %v", err)
	}
	if _, err := p.Token(context.Background()); !errors.Is(err, ErrTokenProviderClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// The whole chain on a real provider: cached, refreshed, failure keeps the
// token and is reported.
func TestBackendTokenProviderCachingOverHTTP(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	var failing atomic.Bool
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if failing.Load() {
			btWriteError(w, 500, "server_error", "identity endpoint unavailable")
			return
		}
		btWriteToken(w, fmt.Sprintf("mi-%d", n), clock.Now().Add(24*time.Hour))
	})
	events := newBTEvents()
	p, err := NewIMDSProvider(IMDSOptions{Endpoint: srv.URL, ProviderOptions: ProviderOptions{Retry: btFastRetry,
		Cache: CacheOptions{Now: clock.Now, Observer: events.observe, NoJitter: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 20 {
		if got := btToken(t, p); got.Token != "mi-1" {
			t.Fatalf("token %q", got.Token)
		}
	}
	events.next(t)
	failing.Store(true)
	clock.Advance(13 * time.Hour) // past the half-life of a 24 h token
	if got := btToken(t, p); got.Token != "mi-1" {
		t.Fatalf("token %q", got.Token)
	}
	ev := events.next(t)
	if ev.Result != RefreshFailedKeptToken || ev.Provider != ProviderIMDS || !strings.Contains(ev.Err.Error(), "identity endpoint unavailable") {
		t.Fatalf("event %+v", ev)
	}
	if got := srv.count(); got != 1+5 {
		t.Fatalf("%d requests, want 1 + 5 attempts", got)
	}
	failing.Store(false)
	clock.Advance(time.Minute)
	btToken(t, p)
	if ev := events.next(t); ev.Result != RefreshOK {
		t.Fatalf("event %+v", ev)
	}
	if got := btToken(t, p); got.Token != "mi-7" {
		t.Fatalf("token %q", got.Token)
	}
}
