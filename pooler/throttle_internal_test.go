package pooler

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestTokenBucket: lazy refill at one token per refill, capped at the
// burst; until says when n tokens are there; take never goes below empty.
func TestTokenBucket(t *testing.T) {
	t.Parallel()
	l := bucketLimits{burst: 3, refill: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	b := tokenBucket{tokens: 3, at: t0}
	b.take()
	b.take()
	b.take()
	b.take() // already empty
	if b.tokens != 0 {
		t.Fatalf("tokens %v after four takes of three", b.tokens)
	}
	if w := b.until(1, l); w != 10*time.Second {
		t.Errorf("until one token: %v, want 10s", w)
	}
	b.refill(t0.Add(25*time.Second), l)
	if b.tokens != 2.5 {
		t.Errorf("tokens after 25s: %v, want 2.5", b.tokens)
	}
	if w := b.until(1, l); w != 0 {
		t.Errorf("until one token with 2.5: %v", w)
	}
	if w := b.until(3, l); w != 5*time.Second {
		t.Errorf("until three tokens: %v, want 5s", w)
	}
	// A clock going backwards changes nothing.
	b.refill(t0, l)
	if b.tokens != 2.5 || !b.at.Equal(t0.Add(25*time.Second)) {
		t.Errorf("backwards clock: %v at %v", b.tokens, b.at)
	}
	b.refill(t0.Add(time.Hour), l)
	if b.tokens != 3 || !b.full(l) {
		t.Errorf("tokens after an hour: %v, want the burst", b.tokens)
	}
	// A smaller burst (reload) caps the bucket at the next refill.
	b.refill(t0.Add(time.Hour), bucketLimits{burst: 1, refill: time.Second})
	if b.tokens != 1 {
		t.Errorf("tokens after the burst shrank: %v", b.tokens)
	}
}

// TestThrottleTableBudget: failures take tokens; the wait before the next
// attempt follows the refill; a key whose bucket is full again is
// forgotten; successes neither take nor give back.
func TestThrottleTableBudget(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	tb := newThrottleTable(ThrottleScopeAddress, 100, clk.now)
	tb.setLimits(bucketLimits{burst: 3, refill: 10 * time.Second})
	if w := tb.budgetWait("10.0.0.1"); w != 0 {
		t.Fatalf("unknown key waits %v", w)
	}
	for range 3 {
		e, ok, _, _ := tb.acquire("10.0.0.1")
		if !ok || e == nil {
			t.Fatal("a key with tokens left was not admitted")
		}
		tb.done("10.0.0.1", e, true)
	}
	if w := tb.budgetWait("10.0.0.1"); w != 10*time.Second {
		t.Fatalf("wait after three failures %v, want 10s", w)
	}
	if _, ok, w, _ := tb.acquire("10.0.0.1"); ok || w != 10*time.Second {
		t.Fatalf("acquire with no token: ok %v wait %v", ok, w)
	}
	if n := tb.throttled(); n != 1 {
		t.Errorf("throttled keys %d, want 1", n)
	}
	rows := tb.rows()
	if len(rows) != 1 || rows[0].Key != "10.0.0.1" || rows[0].Failures != 3 || rows[0].Tokens != 0 || rows[0].Burst != 3 ||
		!rows[0].Until.Equal(clk.now().Add(10*time.Second)) || !rows[0].LastFailure.Equal(clk.now()) {
		t.Fatalf("rows %+v", rows)
	}
	// Other keys are not affected.
	if w := tb.budgetWait("10.0.0.2"); w != 0 {
		t.Errorf("another key waits %v", w)
	}
	clk.advance(4 * time.Second)
	if w := tb.budgetWait("10.0.0.1"); w != 6*time.Second {
		t.Errorf("wait after 4s: %v, want 6s", w)
	}
	clk.advance(6 * time.Second)
	if w := tb.budgetWait("10.0.0.1"); w != 0 {
		t.Errorf("wait after the refill: %v", w)
	}
	// One token back: a success keeps it (no reset), a failure takes it.
	e, ok, _, _ := tb.acquire("10.0.0.1")
	if !ok {
		t.Fatal("not admitted after the refill")
	}
	tb.done("10.0.0.1", e, false)
	if w := tb.budgetWait("10.0.0.1"); w != 0 {
		t.Errorf("wait after a success: %v", w)
	}
	if r := tb.rows(); len(r) != 1 || r[0].Tokens != 1 || r[0].Failures != 3 {
		t.Errorf("a success changed the budget: %+v", r)
	}
	tb.done("10.0.0.1", nil, true) // a failure without a reservation (trust, cert, peer)
	if w := tb.budgetWait("10.0.0.1"); w != 10*time.Second {
		t.Errorf("wait after the fourth failure: %v", w)
	}
	clk.advance(30 * time.Second)
	if r := tb.rows(); len(r) != 0 {
		t.Errorf("a full bucket is still listed: %+v", r)
	}
	if n := tb.len(); n != 0 {
		t.Errorf("%d keys kept after the refill", n)
	}
	// A successful sign-in of a new key leaves nothing behind.
	e, _, _, _ = tb.acquire("10.0.0.3")
	tb.done("10.0.0.3", e, false)
	if n := tb.len(); n != 0 {
		t.Errorf("%d keys kept after a success", n)
	}
}

// TestThrottleTableReservations: a key admits at most as many concurrent
// checks as it has tokens; a released reservation wakes the waiters; a
// failure's token is taken in the same step as its reservation is
// dropped.
func TestThrottleTableReservations(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	tb := newThrottleTable(ThrottleScopeRole, 100, clk.now)
	tb.setLimits(bucketLimits{burst: 2, refill: time.Minute})
	a, ok1, _, _ := tb.acquire("alice")
	b, ok2, _, _ := tb.acquire("alice")
	_, ok3, wait, wake := tb.acquire("alice")
	if !ok1 || !ok2 || ok3 || wait != 0 || wake == nil {
		t.Fatalf("third concurrent check: ok %v wait %v wake %v", ok3, wait, wake)
	}
	if r := tb.rows(); len(r) != 0 {
		t.Fatalf("a key with its budget whole is listed: %+v", r)
	}
	tb.done("alice", a, true)
	select {
	case <-wake:
	default:
		t.Fatal("a dropped reservation woke nobody")
	}
	if r := tb.rows(); len(r) != 1 || r[0].InProgress != 1 || r[0].Tokens != 1 || r[0].Failures != 1 || !r[0].Until.IsZero() {
		t.Fatalf("rows %+v", r)
	}
	// One token left, and it is reserved: still nobody else.
	if _, ok, wait, _ := tb.acquire("alice"); ok || wait != 0 {
		t.Fatalf("check with the last token reserved: ok %v wait %v", ok, wait)
	}
	tb.done("alice", b, true)
	if _, ok, wait, _ := tb.acquire("alice"); ok || wait != time.Minute {
		t.Fatalf("check with the budget spent: ok %v wait %v", ok, wait)
	}
	// Turning the scope off forgets every key and lets everyone in.
	tb.setLimits(bucketLimits{})
	if e, ok, _, _ := tb.acquire("alice"); !ok || e != nil {
		t.Fatal("scope off, yet a reservation")
	}
	if tb.len() != 0 || tb.throttled() != 0 || tb.rows() != nil {
		t.Error("scope off keeps keys")
	}
}

// TestThrottleTableBounded: a spray from a million addresses keeps at
// most max keys, forgetting the least recently used; memory does not grow
// with the spray.
func TestThrottleTableBounded(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	const maxKeys = 1000
	tb := newThrottleTable(ThrottleScopeAddress, maxKeys, clk.now)
	tb.setLimits(bucketLimits{burst: 5, refill: time.Hour})
	key := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
	// A key failing all along stays, as it keeps being used.
	const n = 1_000_000
	var before runtime.MemStats
	for i := range n {
		tb.done(key(i), nil, true)
		if i%100 == 0 {
			tb.done("192.0.2.1", nil, true)
		}
		if i == 10_000 {
			runtime.GC()
			runtime.ReadMemStats(&before)
		}
		if i%100_000 == 0 && tb.len() > maxKeys {
			t.Fatalf("%d keys after %d addresses", tb.len(), i)
		}
	}
	if got := tb.len(); got != maxKeys {
		t.Fatalf("%d keys after a million addresses, want %d", got, maxKeys)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Errorf("heap grew by %d bytes between 10,000 and 1,000,000 addresses", grew)
	}
	if w := tb.budgetWait("192.0.2.1"); w == 0 {
		t.Error("the persistent key was forgotten")
	}
	if w := tb.budgetWait(key(n - 1)); w != 0 {
		// One failure of five: not throttled, but remembered.
		t.Errorf("the last key waits %v", w)
	}
	if r := tb.rows(); len(r) != maxKeys {
		t.Errorf("%d rows", len(r))
	}
	// The oldest keys went first.
	tb.mu.Lock()
	_, oldest := tb.keys[key(0)]
	_, newest := tb.keys[key(n-1)]
	tb.mu.Unlock()
	if oldest || !newest {
		t.Errorf("oldest kept %v, newest kept %v", oldest, newest)
	}
	// Refilled keys at the cold end make room before anything is
	// evicted.
	clk.advance(24 * time.Hour)
	tb.done("198.51.100.1", nil, true)
	if got := tb.len(); got > maxKeys {
		t.Errorf("%d keys", got)
	}
}

// TestAddressKey: IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by /64.
func TestAddressKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"::ffff:192.0.2.7":          "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":      "2001:db8:1:2::/64",
		"fe80::1%eth0":              "fe80::/64",
		"::1":                       "::/64",
		"2001:db8:1:3:3:4:5:6":      "2001:db8:1:3::/64",
		"2001:0db8:0001:0002::abcd": "2001:db8:1:2::/64",
	} {
		if got := addressKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// TestThrottleTicket: begin refuses at once with max_delay 0, holds a
// sign-in whose budget comes back within max_delay, and refuses one
// whose budget would come back after the login deadline; a held-up
// reservation wait ends when another check finishes.
func TestThrottleTicket(t *testing.T) {
	t.Parallel()
	th := newSigninThrottle(100, time.Now)
	th.configure(config.SignInThrottle{AddressBurst: 1, AddressRefill: time.Hour, RoleBurst: 2, RoleRefill: 200 * time.Millisecond})
	// Throttle off: no ticket, and nil tickets do nothing.
	off := newSigninThrottle(100, time.Now)
	off.configure(config.SignInThrottle{})
	if tk, err := off.begin("a", "r", time.Time{}, nil, nil); tk != nil || err != nil {
		t.Fatal("throttle off gave a ticket")
	}
	var nilTicket *throttleTicket
	if err := nilTicket.acquire(); err != nil {
		t.Fatal(err)
	}
	nilTicket.pause()
	nilTicket.end(true)

	tk, err := th.begin("10.0.0.1", "alice", time.Time{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.acquire(); err != nil {
		t.Fatal(err)
	}
	tk.end(true)
	tk, err = th.begin("10.0.0.1", "alice", time.Time{}, nil, nil)
	var af *AuthFailure
	if !errors.As(err, &af) || af.Reason != ReasonThrottled || tk.scope != ThrottleScopeAddress || tk.retryAfter <= 59*time.Minute {
		t.Fatalf("second attempt from a spent address: %v (scope %q, retry %v)", err, tk.scope, tk.retryAfter)
	}
	if pe := af.Public; pe.clientSQLState() != "53300" ||
		pe.clientMessage() != "too many failed sign-ins from this client address: try again in 3600 seconds (signin_throttle_address_burst)" {
		t.Fatalf("%s %q", pe.clientSQLState(), pe.clientMessage())
	}

	// The role's budget: two failures from two addresses, then a hold
	// of about 200ms within max_delay.
	th.configure(config.SignInThrottle{AddressBurst: 1, AddressRefill: time.Hour, RoleBurst: 2, RoleRefill: 200 * time.Millisecond, MaxDelay: 5 * time.Second})
	for _, a := range []string{"10.0.0.2", "10.0.0.3"} {
		tk, err := th.begin(a, "bob", time.Time{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = tk.acquire()
		tk.end(true)
	}
	start := time.Now()
	tk, err = th.begin("10.0.0.4", "bob", time.Time{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tk.scope != ThrottleScopeRole || tk.delayed <= 0 || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("not held: scope %q delayed %v", tk.scope, tk.delayed)
	}
	// Past the login deadline: refused, naming the role.
	for range 2 {
		tk, _ := th.begin("10.0.0.5", "carol", time.Time{}, nil, nil)
		_ = tk.acquire()
		tk.end(true)
		th.addr.setLimits(bucketLimits{}) // forget the address's failure
		th.addr.setLimits(bucketLimits{burst: 1, refill: time.Hour})
	}
	_, err = th.begin("10.0.0.6", "carol", time.Now().Add(50*time.Millisecond), nil, nil)
	if !errors.As(err, &af) || !strings.Contains(af.Public.clientMessage(), `for user "carol": try again in 1 second (signin_throttle_role_burst)`) {
		t.Fatalf("past the deadline: %v", err)
	}

	// A check waiting for a reservation goes on when the other one
	// ends well.
	th.configure(config.SignInThrottle{RoleBurst: 1, RoleRefill: time.Hour})
	first, _ := th.begin("10.0.0.7", "dave", time.Time{}, nil, nil)
	if err := first.acquire(); err != nil {
		t.Fatal(err)
	}
	second, _ := th.begin("10.0.0.8", "dave", time.Time{}, nil, nil)
	done := make(chan error, 1)
	go func() { done <- second.acquire() }()
	select {
	case err := <-done:
		t.Fatalf("second check ran beside the first: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	first.end(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// pause gives the reservation back while waiting for the client.
	second.pause()
	third, _ := th.begin("10.0.0.9", "dave", time.Time{}, nil, nil)
	if err := third.acquire(); err != nil {
		t.Fatal(err)
	}
	third.end(false)
	// A held wait ends with the stop channel.
	if err := second.acquire(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	fourth, _ := th.begin("10.0.0.10", "dave", time.Time{}, nil, stop)
	go func() { done <- fourth.acquire() }()
	close(stop)
	if err := <-done; asPgError(err) == nil || asPgError(err).code != codeShuttingDown {
		t.Fatalf("stopped wait: %v", err)
	}
	second.end(false)
}
