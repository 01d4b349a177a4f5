package pooler

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// Sign-in throttling (signin_throttle_*): every client address and every
// role name has a budget of failed sign-ins, a token bucket of burst tokens
// that gains one token back every refill. A refused sign-in takes a token;
// a successful one neither takes nor gives back. A sign-in whose address or
// role has no token left is held for up to signin_throttle_max_delay for
// one to come back, then refused with 53300 before the client is even asked
// for its password, so a storm of bad passwords or tokens costs neither
// SCRAM work nor key set (JWKS) or Microsoft Graph requests.
//
// Checks happen twice. Before the exchange, a sign-in goes on only if both
// of its buckets have a token (nothing is reserved: a client that never
// answers holds nothing). When pgwarden then has a credential to check (a
// password message arrived), it reserves a token of each bucket for as long
// as it works on that message; a key admits at most as many concurrent
// checks as it has tokens, so even concurrent attempts cannot make more
// failed checks than the budget. The reservation is dropped whenever
// pgwarden waits for the client again, so a slow client delays nobody.

// Scopes of a budget, in [SignInEvent.Throttle], the audit log, SHOW
// THROTTLE and the metrics.
const (
	// ThrottleScopeAddress: the client address's budget.
	ThrottleScopeAddress = "address"
	// ThrottleScopeRole: the budget of the role name asked for.
	ThrottleScopeRole = "role"
)

// ReasonThrottled is the [SignInEvent.Reason] of a sign-in refused by the
// sign-in throttle.
const ReasonThrottled = "throttled"

// throttleMaxKeys bounds each scope's table: past it, the least recently
// used key is forgotten (about 200 bytes a key).
const throttleMaxKeys = 65536

// bucketLimits are one scope's settings; burst 0 is off.
type bucketLimits struct {
	burst  int
	refill time.Duration
}

func (l bucketLimits) on() bool { return l.burst > 0 && l.refill > 0 }

// tokenBucket holds tokens as of at. It refills lazily.
type tokenBucket struct {
	tokens float64
	at     time.Time
}

// refill brings the bucket up to date at now, capped at the burst.
func (b *tokenBucket) refill(now time.Time, l bucketLimits) {
	if now.After(b.at) {
		b.tokens += float64(now.Sub(b.at)) / float64(l.refill)
		b.at = now
	}
	if limit := float64(l.burst); b.tokens > limit {
		b.tokens = limit
	}
}

// until is how long after b.at the bucket holds n tokens (0 if it does).
func (b *tokenBucket) until(n float64, l bucketLimits) time.Duration {
	if b.tokens >= n {
		return 0
	}
	return time.Duration(math.Ceil((n - b.tokens) * float64(l.refill)))
}

// take removes one token, never going below empty.
func (b *tokenBucket) take() {
	b.tokens = max(b.tokens-1, 0)
}

// full reports whether the bucket is back at its burst, so it carries
// nothing worth remembering.
func (b *tokenBucket) full(l bucketLimits) bool { return b.tokens >= float64(l.burst) }

// throttleEntry is one key's bucket in a throttleTable, guarded by the
// table's mutex.
type throttleEntry struct {
	key string
	tokenBucket
	// inflight counts the reservations: credentials of this key being
	// checked now.
	inflight int
	// failures counts the failed sign-ins since the key was last
	// forgotten; lastFailure is the latest.
	failures    int64
	lastFailure time.Time
	// wake, when not nil, is closed when a reservation is dropped.
	wake chan struct{}
	// gone is set when the entry left the table.
	gone bool
	// prev and next link the table's recency list.
	prev, next *throttleEntry
}

// throttleTable holds one scope's buckets. Keys whose bucket is full are
// forgotten; at most max keys are kept, the least recently used going
// first.
type throttleTable struct {
	scope string
	max   int
	now   func() time.Time

	mu   sync.Mutex
	lim  bucketLimits
	keys map[string]*throttleEntry
	// head is the most recently used entry, tail the least.
	head, tail *throttleEntry
}

func newThrottleTable(scope string, maxKeys int, now func() time.Time) *throttleTable {
	return &throttleTable{scope: scope, max: maxKeys, now: now, keys: map[string]*throttleEntry{}}
}

// setLimits installs new settings. Turning the scope off forgets every key
// and lets waiting sign-ins go on; a smaller burst caps the buckets.
func (t *throttleTable) setLimits(l bucketLimits) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lim = l
	if l.on() {
		return
	}
	for _, e := range t.keys {
		e.gone = true
		t.wakeLocked(e)
	}
	clear(t.keys)
	t.head, t.tail = nil, nil
}

// budgetWait returns how long key must wait for a token (0: it has one, or
// the scope is off). It reserves nothing.
func (t *throttleTable) budgetWait(key string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lim.on() {
		return 0
	}
	e := t.keys[key]
	if e == nil {
		return 0
	}
	e.refill(t.now(), t.lim)
	return e.until(1, t.lim)
}

// acquire reserves a token of key for one credential check. ok is true
// when the check may go on (e is nil when the scope is off). Otherwise wait
// is how long the budget needs to hold a token again (0 when it has one
// but every token is reserved), and wake is closed when a reservation is
// dropped.
func (t *throttleTable) acquire(key string) (e *throttleEntry, ok bool, wait time.Duration, wake <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lim.on() {
		return nil, true, 0, nil
	}
	now := t.now()
	e = t.entryLocked(key, now)
	e.refill(now, t.lim)
	if e.tokens-float64(e.inflight) >= 1 {
		e.inflight++
		return e, true, 0, nil
	}
	if e.wake == nil {
		e.wake = make(chan struct{})
	}
	return nil, false, e.until(1, t.lim), e.wake
}

// release drops a reservation made by acquire.
func (t *throttleTable) release(e *throttleEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.releaseLocked(e)
	t.forgetIfFullLocked(e)
}

func (t *throttleTable) releaseLocked(e *throttleEntry) {
	if e.inflight > 0 {
		e.inflight--
	}
	t.wakeLocked(e)
}

func (t *throttleTable) wakeLocked(e *throttleEntry) {
	if e.wake != nil {
		close(e.wake)
		e.wake = nil
	}
}

// done ends a sign-in of key: it drops the reservation e (nil for none)
// and, when the sign-in failed, takes a token, in one step so that no
// other check sees the token both free and taken.
func (t *throttleTable) done(key string, e *throttleEntry, failed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e != nil {
		t.releaseLocked(e)
	}
	if !t.lim.on() {
		return
	}
	now := t.now()
	if !failed {
		if e != nil {
			e.refill(now, t.lim)
			t.forgetIfFullLocked(e)
		}
		return
	}
	if e == nil || e.gone {
		e = t.entryLocked(key, now)
	}
	e.refill(now, t.lim)
	e.take()
	e.failures++
	e.lastFailure = now
	t.touchLocked(e)
}

// forgetIfFullLocked drops e when it holds nothing worth keeping.
func (t *throttleTable) forgetIfFullLocked(e *throttleEntry) {
	if !e.gone && e.inflight == 0 && e.full(t.lim) {
		t.removeLocked(e)
	}
}

// entryLocked returns key's entry, made full if it is new, as the most
// recently used. A new key first makes room: refilled entries at the cold
// end are dropped, and past max keys the least recently used one goes.
func (t *throttleTable) entryLocked(key string, now time.Time) *throttleEntry {
	if e := t.keys[key]; e != nil {
		t.touchLocked(e)
		return e
	}
	for i := 0; i < 2 && t.tail != nil; i++ {
		old := t.tail
		if old.inflight > 0 {
			break
		}
		old.refill(now, t.lim)
		if !old.full(t.lim) {
			break
		}
		t.removeLocked(old)
	}
	for len(t.keys) >= t.max && t.tail != nil {
		t.removeLocked(t.tail)
	}
	e := &throttleEntry{key: key, tokenBucket: tokenBucket{tokens: float64(t.lim.burst), at: now}}
	t.keys[key] = e
	t.pushFrontLocked(e)
	return e
}

func (t *throttleTable) removeLocked(e *throttleEntry) {
	delete(t.keys, e.key)
	e.gone = true
	t.unlinkLocked(e)
	t.wakeLocked(e)
}

func (t *throttleTable) touchLocked(e *throttleEntry) {
	if t.head == e {
		return
	}
	t.unlinkLocked(e)
	t.pushFrontLocked(e)
}

func (t *throttleTable) pushFrontLocked(e *throttleEntry) {
	e.prev, e.next = nil, t.head
	if t.head != nil {
		t.head.prev = e
	}
	t.head = e
	if t.tail == nil {
		t.tail = e
	}
}

func (t *throttleTable) unlinkLocked(e *throttleEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if t.head == e {
		t.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if t.tail == e {
		t.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// len is the number of keys remembered.
func (t *throttleTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// throttleRow is one key of SHOW THROTTLE.
type throttleRow struct {
	Scope, Key  string
	Failures    int64
	Tokens      float64
	Burst       int
	InProgress  int
	LastFailure time.Time
	// Until is when the key may sign in again; zero when it may now.
	Until time.Time
}

// rows returns the keys with part of their budget spent, refilled to now;
// keys found full are forgotten on the way (unless a check is under way).
func (t *throttleTable) rows() []throttleRow {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lim.on() {
		return nil
	}
	now := t.now()
	out := make([]throttleRow, 0, len(t.keys))
	for _, e := range t.keys {
		e.refill(now, t.lim)
		if e.full(t.lim) {
			t.forgetIfFullLocked(e)
			continue
		}
		r := throttleRow{Scope: t.scope, Key: e.key, Failures: e.failures, Tokens: e.tokens, Burst: t.lim.burst,
			InProgress: e.inflight, LastFailure: e.lastFailure}
		if w := e.until(1, t.lim); w > 0 {
			r.Until = now.Add(w)
		}
		out = append(out, r)
	}
	return out
}

// throttled counts the keys with no token left now.
func (t *throttleTable) throttled() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lim.on() {
		return 0
	}
	now := t.now()
	n := 0
	for _, e := range t.keys {
		e.refill(now, t.lim)
		if e.tokens < 1 {
			n++
		}
	}
	return n
}

// signinThrottle is a Server's two tables and its hold limit.
type signinThrottle struct {
	addr, role *throttleTable
	maxDelay   atomic.Int64 // signin_throttle_max_delay
	enabled    atomic.Bool
}

func newSigninThrottle(maxKeys int, now func() time.Time) *signinThrottle {
	return &signinThrottle{addr: newThrottleTable(ThrottleScopeAddress, maxKeys, now), role: newThrottleTable(ThrottleScopeRole, maxKeys, now)}
}

// configure installs the signin_throttle_* settings (start and reload).
func (t *signinThrottle) configure(c config.SignInThrottle) {
	t.addr.setLimits(bucketLimits{burst: c.AddressBurst, refill: c.AddressRefill})
	t.role.setLimits(bucketLimits{burst: c.RoleBurst, refill: c.RoleRefill})
	t.maxDelay.Store(int64(c.MaxDelay))
	t.enabled.Store(c.Enabled())
}

func (t *signinThrottle) table(scope string) *throttleTable {
	if scope == ThrottleScopeAddress {
		return t.addr
	}
	return t.role
}

// throttleTicket is one sign-in's way through the throttle, owned by the
// client's goroutine. A nil ticket (throttle off) lets everything through.
type throttleTicket struct {
	t                *signinThrottle
	addrKey, roleKey string
	// addr and role are the reservations held (nil for none); held says
	// a credential check is under way.
	addr, role *throttleEntry
	held       bool
	// deadline is the end of the login phase (zero: none); killed and
	// shutdown end a hold early (nil: never).
	deadline         time.Time
	killed, shutdown <-chan struct{}
	// delayLeft is what remains of signin_throttle_max_delay.
	delayLeft time.Duration
	// scope names the budget that held or refused the sign-in; delayed is
	// how long it was held; retryAfter is set when it was refused.
	scope      string
	delayed    time.Duration
	retryAfter time.Duration
}

// begin checks a new sign-in of (addrKey, roleKey) before any exchange,
// holding it while its budget comes back within signin_throttle_max_delay.
// It returns a nil ticket when the throttle is off, and an *AuthFailure
// when the sign-in is refused.
func (t *signinThrottle) begin(addrKey, roleKey string, deadline time.Time, killed, shutdown <-chan struct{}) (*throttleTicket, error) {
	if !t.enabled.Load() {
		return nil, nil
	}
	tk := &throttleTicket{t: t, addrKey: addrKey, roleKey: roleKey, deadline: deadline, killed: killed, shutdown: shutdown,
		delayLeft: time.Duration(t.maxDelay.Load())}
	for {
		scope, wait := ThrottleScopeAddress, t.addr.budgetWait(addrKey)
		if w := t.role.budgetWait(roleKey); w > wait {
			scope, wait = ThrottleScopeRole, w
		}
		if wait == 0 {
			return tk, nil
		}
		if err := tk.hold(scope, wait, nil); err != nil {
			return tk, err
		}
	}
}

// acquire reserves a token of both budgets before a credential is checked
// (the address's first, and none is sat on while waiting for the other).
func (tk *throttleTicket) acquire() error {
	if tk == nil || tk.held {
		return nil
	}
	for {
		e, ok, wait, wake := tk.t.addr.acquire(tk.addrKey)
		if !ok {
			if err := tk.hold(ThrottleScopeAddress, wait, wake); err != nil {
				return err
			}
			continue
		}
		r, ok, wait, wake := tk.t.role.acquire(tk.roleKey)
		if !ok {
			if e != nil {
				tk.t.addr.release(e)
			}
			if err := tk.hold(ThrottleScopeRole, wait, wake); err != nil {
				return err
			}
			continue
		}
		tk.addr, tk.role, tk.held = e, r, true
		return nil
	}
}

// pause drops the reservations while pgwarden waits for the client.
func (tk *throttleTicket) pause() {
	if tk == nil || !tk.held {
		return
	}
	if tk.addr != nil {
		tk.t.addr.release(tk.addr)
	}
	if tk.role != nil {
		tk.t.role.release(tk.role)
	}
	tk.addr, tk.role, tk.held = nil, nil, false
}

// end records the sign-in's outcome: a failure takes a token of both
// budgets. It drops any reservation.
func (tk *throttleTicket) end(failed bool) {
	if tk == nil {
		return
	}
	tk.t.addr.done(tk.addrKey, tk.addr, failed)
	tk.t.role.done(tk.roleKey, tk.role, failed)
	tk.addr, tk.role, tk.held = nil, nil, false
}

// hold waits for scope's budget: wait is the time until it has a token
// again (0: it has one, all reserved; wake then says when one is
// released). A budget wait longer than what remains of
// signin_throttle_max_delay, or past the login deadline, refuses the
// sign-in instead.
func (tk *throttleTicket) hold(scope string, wait time.Duration, wake <-chan struct{}) error {
	if wait == 0 && wake == nil {
		return nil
	}
	now := time.Now()
	if wait > 0 && (wait > tk.delayLeft || !tk.deadline.IsZero() && now.Add(wait).After(tk.deadline)) {
		tk.scope, tk.retryAfter = scope, wait
		return &AuthFailure{Reason: ReasonThrottled, Public: throttledError(scope, tk.roleKey, wait)}
	}
	var timeout <-chan time.Time
	if wait > 0 {
		tm := time.NewTimer(wait)
		defer tm.Stop()
		timeout = tm.C
	}
	var deadline <-chan time.Time
	if !tk.deadline.IsZero() {
		tm := time.NewTimer(time.Until(tk.deadline))
		defer tm.Stop()
		deadline = tm.C
	}
	var err error
	select {
	case <-timeout:
	case <-wake:
	case <-deadline:
		err = newError(codeClientLoginTimeout, "")
	case <-tk.killed:
		// The killer's error is what the client gets (reportError).
		err = newError(codeShuttingDown, "")
	case <-tk.shutdown:
		err = newError(codeShuttingDown, "")
	}
	if wait > 0 {
		// Only waits for the budget are throttling; waits for a
		// reservation are a queue.
		d := time.Since(now)
		tk.scope = scope
		tk.delayed += d
		tk.delayLeft -= d
	}
	return err
}

// throttledError is what a throttled client is told: which budget, and
// when to try again. It says nothing about whether the role exists: role
// budgets are kept for any name asked for.
func throttledError(scope, role string, wait time.Duration) *pgError {
	secs := int64(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	unit := "seconds"
	if secs == 1 {
		unit = "second"
	}
	var msg string
	if scope == ThrottleScopeAddress {
		msg = fmt.Sprintf("too many failed sign-ins from this client address: try again in %d %s (signin_throttle_address_burst)", secs, unit)
	} else {
		msg = fmt.Sprintf("too many failed sign-ins for user \"%s\": try again in %d %s (signin_throttle_role_burst)", role, secs, unit)
	}
	return &pgError{code: codeSignInThrottled, msg: msg}
}

// throttleAddressKey is the address budget's key of a client: its IPv4
// address, its IPv6 /64 (one host or site usually owns a /64), or on the
// Unix socket the peer's uid.
func throttleAddressKey(c *clientConn) string {
	if c.unix {
		if uid, ok := peerUID(c.raw); ok {
			return "uid:" + strconv.FormatUint(uint64(uid), 10)
		}
		return "unix"
	}
	var a netip.Addr
	switch ra := c.raw.RemoteAddr().(type) {
	case *net.TCPAddr:
		a = ra.AddrPort().Addr()
	default:
		ap, err := netip.ParseAddrPort(c.remote)
		if err != nil {
			return c.remote
		}
		a = ap.Addr()
	}
	return addressKey(a)
}

// addressKey is an IP address's key: IPv4 addresses (IPv4-mapped IPv6
// ones included) as they are, IPv6 ones by their /64.
func addressKey(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}

// peerUID returns the uid of the process at the other end of a Unix
// socket.
func peerUID(conn net.Conn) (uint32, bool) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *syscall.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, _ = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if cred == nil {
		return 0, false
	}
	return cred.Uid, true
}

var throttleColumns = []column{{"scope", oidText}, {"key", oidText}, {"failures", oidInt8}, {"tokens", oidNumeric},
	{"burst", oidInt4}, {"in_progress", oidInt4}, {"last_failure", oidText}, {"throttled_until", oidText}}

// throttleRows is SHOW THROTTLE: every key with part of its budget spent,
// by scope and key.
func (s *Server) throttleRows() [][]*string {
	all := append(s.throttle.addr.rows(), s.throttle.role.rows()...)
	sort.Slice(all, func(i, j int) bool {
		if all[i].Scope != all[j].Scope {
			return all[i].Scope < all[j].Scope
		}
		return all[i].Key < all[j].Key
	})
	rows := make([][]*string, 0, len(all))
	for _, r := range all {
		var last, until *string
		if !r.LastFailure.IsZero() {
			last = sp(pgTime(r.LastFailure))
		}
		if !r.Until.IsZero() {
			until = sp(pgTime(r.Until))
		}
		rows = append(rows, []*string{sp(r.Scope), sp(r.Key), ip(r.Failures), sp(strconv.FormatFloat(r.Tokens, 'f', 2, 64)),
			ip(int64(r.Burst)), ip(int64(r.InProgress)), last, until})
	}
	return rows
}

// ThrottledKeys is the number of client addresses (scope "address") or
// role names ("role") whose failed sign-in budget is spent now.
func (s *Server) ThrottledKeys(scope string) int {
	return s.throttle.table(scope).throttled()
}
