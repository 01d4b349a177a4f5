package pooler

import (
	"maps"
	"runtime"
	"sort"
	"strings"
	"sync"
	"weak"
)

// Tracked session parameters (PgBouncer's varcache). Each client expects
// certain values of the tracked parameters (client_encoding, DateStyle,
// TimeZone, search_path, …): those it sent at startup, else the pool's
// defaults, updated when it SETs one. Most clients of a pool expect the
// same values, so the sets are interned: clients that expect the same
// values share one immutable paramSet, and an idle client costs a pointer
// instead of a map of its own. A client that changes a value gets another
// set (copy on write); a set nobody uses any more is collected, and its
// entry in the intern table goes with it.

// paramSet is an immutable set of tracked parameter values, keyed by
// lower-case name, with its fingerprint. Never modify m: it is shared.
type paramSet struct {
	m map[string]string
	// fp is m in a canonical form (paramsFingerprint): a server whose
	// fingerprint equals a client's needs no SET before the client uses
	// it.
	fp string
}

// paramSets is a Server's intern table of parameter sets, by fingerprint.
// The table holds them weakly: it never keeps a set alive by itself.
type paramSets struct {
	mu sync.Mutex
	m  map[string]weak.Pointer[paramSet]
}

// intern returns the shared set with m's values, making one from m (which
// the caller must not use afterwards) when there is none.
func (t *paramSets) intern(m map[string]string) *paramSet {
	fp := paramsFingerprint(m)
	t.mu.Lock()
	defer t.mu.Unlock()
	if wp, ok := t.m[fp]; ok {
		if p := wp.Value(); p != nil {
			return p
		}
	}
	if t.m == nil {
		t.m = make(map[string]weak.Pointer[paramSet])
	}
	p := &paramSet{m: m, fp: fp}
	wp := weak.Make(p)
	t.m[fp] = wp
	runtime.AddCleanup(p, t.forget, paramSetKey{fp: fp, wp: wp})
	return p
}

// paramSetKey names an intern table entry for its cleanup.
type paramSetKey struct {
	fp string
	wp weak.Pointer[paramSet]
}

// forget removes a collected set's entry, unless the fingerprint has a
// newer set by now.
func (t *paramSets) forget(k paramSetKey) {
	t.mu.Lock()
	if t.m[k.fp] == k.wp {
		delete(t.m, k.fp)
	}
	t.mu.Unlock()
}

// size is the number of entries (for tests).
func (t *paramSets) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// with returns the set that has p's values changed by set (name → value).
func (t *paramSets) with(p *paramSet, set map[string]string) *paramSet {
	m := make(map[string]string, len(p.m)+len(set))
	maps.Copy(m, p.m)
	maps.Copy(m, set)
	return t.intern(m)
}

// paramsFingerprint renders tracked parameter values in a canonical form.
func paramsFingerprint(params map[string]string) string {
	keys := make([]string, 0, len(params))
	n := 0
	for k, v := range params {
		keys = append(keys, k)
		n += len(k) + len(v) + 2
	}
	sort.Strings(keys)
	var b strings.Builder
	b.Grow(n)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(params[k])
		b.WriteByte(0)
	}
	return b.String()
}
