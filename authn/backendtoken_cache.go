package authn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrTokenProviderClosed is returned by [CachedProvider.Token] after Close.
var ErrTokenProviderClosed = errors.New("authn: token provider closed")

// CacheOptions configures a [CachedProvider]. Zero fields take the defaults.
//
// Refresh rules (entra.md §2.6): a token is due for refresh at
// min(exp − 5 min, t + lifetime/2), where t is when it was obtained and
// lifetime = exp − t; a token too short for the 5-minute window (lifetime
// under 10 min) is refreshed at its half-life instead. Both rules put the
// refresh point at the half-life, which for a token of 10 minutes or more is
// never later than 5 minutes before expiry. The refresh point gets ±10 %
// jitter (never past exp − 5 min for tokens of 10 min or more).
//
// A due token is still handed out while one background refresh runs; a token
// is handed out at all only until ExpiryMargin before it expires (entra.md:
// "keep serving the old token until it is within 1 min of exp"). When there is
// no token that may be handed out, callers wait for the refresh, which all
// concurrent callers share. A failed refresh keeps the current token in use
// (until its margin) and is retried no sooner than FailureBackoff later.
type CacheOptions struct {
	// Now is the clock (default time.Now). Providers also use it for
	// expires_in and client assertion times.
	Now func() time.Time
	// Observer, if set, is called after every refresh, success or failure,
	// from the goroutine that ran it. It must not block for long or call back
	// into the provider's Token. Use it to log and count refreshes.
	Observer func(RefreshEvent)
	// ExpiryMargin: a token is not handed out within this of its expiry
	// (default 1 min; at most a quarter of the token's lifetime). Negative
	// means zero: hand it out until it expires.
	ExpiryMargin time.Duration
	// FailureBackoff is the least time between a failed refresh and the next
	// background refresh while the current token is still usable (default
	// 30 s). It does not delay a refresh that callers are waiting for.
	FailureBackoff time.Duration
	// RefreshTimeout bounds one refresh, retries included (default 2 min).
	// A refresh does not stop when the caller that started it gives up: other
	// callers may be waiting for it.
	RefreshTimeout time.Duration
	// NoJitter turns off the ±10 % jitter of the refresh point (for tests).
	NoJitter bool
}

// btRefreshWindow: refresh at least this long before expiry when the
// lifetime allows it (entra.md §2.6, MSAL's and azcore's 5 minutes).
const btRefreshWindow = 5 * time.Minute

func (o CacheOptions) withDefaults() CacheOptions {
	if o.Now == nil {
		o.Now = time.Now
	}
	switch {
	case o.ExpiryMargin == 0:
		o.ExpiryMargin = time.Minute
	case o.ExpiryMargin < 0:
		o.ExpiryMargin = 0
	}
	if o.FailureBackoff <= 0 {
		o.FailureBackoff = 30 * time.Second
	}
	if o.RefreshTimeout <= 0 {
		o.RefreshTimeout = 2 * time.Minute
	}
	return o
}

// RefreshResult is the outcome of one refresh.
type RefreshResult string

// Refresh outcomes.
const (
	// RefreshOK: a new token was obtained.
	RefreshOK RefreshResult = "ok"
	// RefreshFailedKeptToken: the refresh failed; the current token is still
	// handed out (until its expiry margin).
	RefreshFailedKeptToken RefreshResult = "failed_kept_token"
	// RefreshFailed: the refresh failed and there is no usable token; callers
	// waiting for it got the error.
	RefreshFailed RefreshResult = "failed"
)

// RefreshEvent reports one refresh to [CacheOptions.Observer]. It never
// holds a token.
type RefreshEvent struct {
	// Provider is the provider name, e.g. [ProviderIMDS].
	Provider string
	// Result is the outcome.
	Result RefreshResult
	// ExpiresOn is the expiry of the token in use after the refresh: the new
	// token's on success, the kept token's on RefreshFailedKeptToken, zero on
	// RefreshFailed.
	ExpiresOn time.Time
	// Duration is how long the refresh took.
	Duration time.Duration
	// Err is the failure (nil on success); a *[ProviderError] for HTTP,
	// transport and response problems.
	Err error
}

// CachedProvider is the caching [TokenProvider] wrapped around every provider.
// It is safe for concurrent use. See [CacheOptions] for the refresh rules.
type CachedProvider struct {
	name  string
	fetch FetchFunc
	opts  CacheOptions

	ctx    context.Context // cancelled by Close; parent of every refresh
	cancel context.CancelFunc

	mu          sync.Mutex
	cur         *btCacheEntry
	flight      *btFlight
	nextAttempt time.Time // no background refresh before this (after a failure)
	closed      bool
}

type btCacheEntry struct {
	tok         AccessToken
	refreshAt   time.Time // due for a background refresh from here
	usableUntil time.Time // handed out until here
}

type btFlight struct {
	done chan struct{}
	tok  AccessToken
	err  error
}

// NewCachedProvider wraps fetch, which obtains a new token on every call, in
// the caching and refreshing provider. name identifies the provider in
// events and errors (e.g. [ProviderIMDS]).
func NewCachedProvider(name string, fetch FetchFunc, opts CacheOptions) *CachedProvider {
	ctx, cancel := context.WithCancel(context.Background())
	return &CachedProvider{name: name, fetch: fetch, opts: opts.withDefaults(), ctx: ctx, cancel: cancel}
}

// Name returns the provider name.
func (c *CachedProvider) Name() string { return c.name }

// Token returns the cached token, obtaining or refreshing it when needed.
// While the cached token may still be handed out it returns at once (and, if
// the token is due, starts a background refresh); otherwise it waits for the
// one shared refresh, or until ctx is done.
func (c *CachedProvider) Token(ctx context.Context) (AccessToken, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return AccessToken{}, ErrTokenProviderClosed
	}
	now := c.opts.Now()
	if e := c.cur; e != nil && now.Before(e.usableUntil) {
		if !now.Before(e.refreshAt) && c.flight == nil && !now.Before(c.nextAttempt) {
			c.startLocked()
		}
		tok := e.tok
		c.mu.Unlock()
		return tok, nil
	}
	f := c.flight
	if f == nil {
		f = c.startLocked()
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return AccessToken{}, ctx.Err()
	}
}

// Invalidate drops the cached token if it is token (for example after a
// backend rejected it as expired), so the next Token call obtains a new one.
// A different (newer) cached token is kept.
func (c *CachedProvider) Invalidate(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && c.cur.tok.Token == token { // pgwarden's own token, handed back: not a credential check
		c.cur = nil
		c.nextAttempt = time.Time{}
	}
}

// Close stops any refresh in progress; later Token calls fail with
// [ErrTokenProviderClosed].
func (c *CachedProvider) Close() {
	c.mu.Lock()
	c.closed = true
	c.cur = nil
	c.mu.Unlock()
	c.cancel()
}

// startLocked starts a refresh; c.mu is held.
func (c *CachedProvider) startLocked() *btFlight {
	f := &btFlight{done: make(chan struct{})}
	c.flight = f
	go c.refresh(f)
	return f
}

func (c *CachedProvider) refresh(f *btFlight) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.RefreshTimeout)
	defer cancel()
	start := c.opts.Now()
	tok, err := c.fetch(ctx)
	end := c.opts.Now()
	if err == nil {
		switch {
		case tok.Token == "":
			err = fmt.Errorf("authn: %s returned an empty token", c.name)
		case !tok.ExpiresOn.After(end):
			err = fmt.Errorf("authn: %s returned a token that expired at %s", c.name, tok.ExpiresOn.UTC().Format(time.RFC3339))
		}
	}
	if err != nil && c.ctx.Err() != nil {
		err = ErrTokenProviderClosed
	}

	ev := RefreshEvent{Provider: c.name, Duration: end.Sub(start), Err: err}
	c.mu.Lock()
	if err == nil && c.closed {
		err = ErrTokenProviderClosed
		ev.Err = err
	}
	if err == nil {
		jitter := 0.0
		if !c.opts.NoJitter {
			jitter = rand.Float64()*0.2 - 0.1
		}
		c.cur = &btCacheEntry{
			tok:         tok,
			refreshAt:   btRefreshPoint(start, tok.ExpiresOn, jitter),
			usableUntil: btUsableUntil(start, tok.ExpiresOn, c.opts.ExpiryMargin),
		}
		c.nextAttempt = time.Time{}
		ev.Result, ev.ExpiresOn = RefreshOK, tok.ExpiresOn
		f.tok = tok
	} else {
		c.nextAttempt = end.Add(c.opts.FailureBackoff)
		if e := c.cur; e != nil && end.Before(e.usableUntil) {
			// Waiting callers (if the token became unusable meanwhile they
			// would not be here) get the kept token.
			ev.Result, ev.ExpiresOn = RefreshFailedKeptToken, e.tok.ExpiresOn
			f.tok = e.tok
		} else {
			ev.Result = RefreshFailed
			f.err = err
		}
	}
	c.flight = nil
	close(f.done)
	c.mu.Unlock()

	if c.opts.Observer != nil {
		c.opts.Observer(ev)
	}
}

// btRefreshPoint is when a token obtained at acquired and expiring at expires
// is due for refresh: its half-life (±jitter), never later than
// btRefreshWindow before expiry when the lifetime is at least twice that.
func btRefreshPoint(acquired, expires time.Time, jitter float64) time.Time {
	life := expires.Sub(acquired)
	if life <= 0 {
		return acquired
	}
	d := time.Duration(float64(life) / 2 * (1 + jitter))
	if life >= 2*btRefreshWindow && d > life-btRefreshWindow {
		d = life - btRefreshWindow
	}
	return acquired.Add(d)
}

// btUsableUntil is the last moment a token is handed out: margin before its
// expiry, the margin being at most a quarter of its lifetime.
func btUsableUntil(acquired, expires time.Time, margin time.Duration) time.Time {
	if life := expires.Sub(acquired); life > 0 {
		margin = min(margin, life/4)
	}
	return expires.Add(-margin)
}
