package authn

import (
	"container/list"
	"crypto/rsa"
	"sync"
	"time"
)

// entraCacheEntry is a validated token: its claims and the key that
// verified it.
type entraCacheEntry struct {
	sum    [32]byte
	tok    *Token
	claims *entraClaims
	set    *entraKeySet
	key    *rsa.PublicKey
	dead   time.Time // exp + leeway: the entry is useless from then on
	elem   *list.Element
}

// entraTokenCache is a bounded LRU of validated tokens keyed by the SHA-256
// of the token (never the token). Entries die at exp; the caller re-checks
// the time claims on every hit anyway.
type entraTokenCache struct {
	mu     sync.Mutex
	max    int
	leeway time.Duration
	now    func() time.Time
	puts   int
	m      map[[32]byte]*entraCacheEntry
	lru    list.List // front: most recently used
}

// entraSweepEvery is how many insertions pass between sweeps of dead
// entries.
const entraSweepEvery = 1024

// newEntraTokenCache returns a cache of at most max entries, or nil (a
// disabled cache, on which every method is a no-op) if max <= 0.
func newEntraTokenCache(max int, leeway time.Duration, now func() time.Time) *entraTokenCache {
	if max <= 0 {
		return nil
	}
	return &entraTokenCache{max: max, leeway: leeway, now: now, m: make(map[[32]byte]*entraCacheEntry)}
}

// get returns the entry for sum, or nil. An entry past exp + leeway is
// still returned (the caller's time check refuses it and removes it).
func (c *entraTokenCache) get(sum [32]byte) *entraCacheEntry {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[sum]
	if e != nil {
		c.lru.MoveToFront(e.elem)
	}
	return e
}

// put adds e under sum, evicting the least recently used entry when full.
func (c *entraTokenCache) put(sum [32]byte, e *entraCacheEntry) {
	if c == nil {
		return
	}
	e.sum = sum
	e.dead = e.tok.Exp.Add(c.leeway)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[sum]; old != nil {
		c.lru.Remove(old.elem)
		delete(c.m, sum)
	}
	c.puts++
	if c.puts%entraSweepEvery == 0 {
		c.sweepLocked()
	}
	for len(c.m) >= c.max {
		back := c.lru.Back()
		old := back.Value.(*entraCacheEntry)
		c.lru.Remove(back)
		delete(c.m, old.sum)
	}
	e.elem = c.lru.PushFront(e)
	c.m[sum] = e
}

// sweepLocked drops the entries past exp + leeway.
func (c *entraTokenCache) sweepLocked() {
	now := c.now()
	for sum, e := range c.m {
		if now.After(e.dead) {
			c.lru.Remove(e.elem)
			delete(c.m, sum)
		}
	}
}

// remove drops e if it is still cached.
func (c *entraTokenCache) remove(e *entraCacheEntry) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[e.sum] == e {
		c.lru.Remove(e.elem)
		delete(c.m, e.sum)
	}
}
