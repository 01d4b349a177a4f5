package authn_test

// Identity provider fault tests. Each test of an identity provider fault
// (here, in cmd/pgwarden and in pooler) writes one machine-readable line
// when it ends, for a reliability report to collect:
//
//	IDP-RESULT {"item":"jwks_slow","test":"TestIdPSlow","outcome":"pass",...}
//
// The text after "IDP-RESULT " is one JSON object: "item" names the fault
// (a short snake_case word, stable across runs), "test" the Go test,
// "outcome" is "pass" or "fail" (the test's own verdict), and any other
// members are the figures the test measured, named with their unit
// (signin_p50_ms, fetches, bytes_written, simulated_s, ...). The line is
// written with t.Log, so it shows with `go test -v` (and in a failed test's
// output): collect them with
//
//	go test -v -run 'IdP|Key|KID|Graph|Rotation' ./authn/ ./cmd/pgwarden/ ./pooler/ | grep 'IDP-RESULT '

import (
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

// idpReport accumulates the figures of one IDP-RESULT line, written when
// the test ends.
type idpReport struct {
	mu     sync.Mutex
	fields map[string]any
}

// idpResult starts the IDP-RESULT line of test t for item.
func idpResult(t testing.TB, item string) *idpReport {
	r := &idpReport{fields: map[string]any{"item": item, "test": t.Name()}}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.fields["outcome"] = "pass"
		if t.Failed() {
			r.fields["outcome"] = "fail"
		}
		b, _ := json.Marshal(r.fields)
		t.Logf("IDP-RESULT %s", b)
	})
	return r
}

// set records a figure; durations are written in milliseconds.
func (r *idpReport) set(key string, v any) {
	if d, ok := v.(time.Duration); ok {
		v = float64(d.Microseconds()) / 1000
	}
	r.mu.Lock()
	r.fields[key] = v
	r.mu.Unlock()
}

// enLatencies summarises sign-in latencies.
func enLatencies(r *idpReport, prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	r.set(prefix+"_n", len(ds))
	r.set(prefix+"_p50_ms", ds[len(ds)/2])
	r.set(prefix+"_p99_ms", ds[len(ds)*99/100])
	r.set(prefix+"_max_ms", ds[len(ds)-1])
}

// TestIdPSlow: the identity provider answers after 10 s. A validator with a
// cache file starts at once; sign-ins with known kids run while the slow
// fetches are in flight and never wait for them; a sign-in with an unknown
// kid waits at most the documented bound (3 s, UnknownKIDMaxWait's
// default) and is refused with jwks_unavailable and the generic message.
func TestIdPSlow(t *testing.T) {
	rep := idpResult(t, "jwks_slow")
	const slow = 10 * time.Second
	rep.set("idp_delay_ms", slow)
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.JWKSCacheFile = filepath.Join(t.TempDir(), "jwks.json")
	newEnValidator(t, cfg).Close()

	s.idp.SetServerFaults(devidp.ServerFaults{Delay: slow})
	start := time.Now()
	v := newEnValidator(t, cfg) // NewValidator's own fetches are now slow
	rep.set("start_ms", time.Since(start))
	// Its fetches reach the IdP in the background, and hang there.
	enWaitFor(t, 5*time.Second, func() bool { return s.inflight.Load() > 0 })

	// An unknown kid, and at the same time many known-kid sign-ins.
	type outcome struct {
		d   time.Duration
		err error
	}
	unknown := make(chan outcome, 1)
	go func() {
		tok := s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultUnknownKID})
		t0 := time.Now()
		_, err := v.Validate(context.Background(), tok)
		unknown <- outcome{time.Since(t0), err}
	}()
	toks := make([]string, 200)
	for i := range toks {
		toks[i] = s.mint(t, devidp.TokenSpec{OID: enAliceOID, Extra: map[string]any{"n": i}})
	}
	lat := make([]time.Duration, len(toks))
	var failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(toks); i += 8 {
				t0 := time.Now()
				if _, err := v.Validate(context.Background(), toks[i]); err != nil {
					failed.Add(1)
					t.Errorf("known kid while the IdP is slow: %v", err)
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	// The slow answers are still pending: no sign-in waited for them.
	if s.inflight.Load() == 0 {
		t.Errorf("the slow fetches ended before the known-kid sign-ins did: they may have waited")
	}
	enLatencies(rep, "known_kid_signin", lat)
	rep.set("known_kid_failures", failed.Load())

	u := <-unknown
	rep.set("unknown_kid_wait_ms", u.d)
	rep.set("unknown_kid_reason", authn.ReasonOf(u.err))
	ae := enAuthErr(t, u.err)
	if ae.Reason != authn.ReasonJWKSUnavailable || ae.Public != authn.MsgTokenInvalid || ae.SQLState != authn.SQLStateInvalidPassword {
		t.Errorf("unknown kid: %+v", ae)
	}
	bound := authn.DefaultUnknownKIDMaxWait
	rep.set("unknown_kid_bound_ms", bound)
	if u.d < bound-100*time.Millisecond || u.d > bound+2*time.Second {
		t.Errorf("unknown-kid sign-in waited %v, want about %v (the IdP answers after %v)", u.d, bound, slow)
	}
}

// TestIdPGarbage: discovery documents or key sets that are not JSON (an
// HTML error page with binary bytes) are refused; the keys in use stay, so
// known-kid sign-ins go on, and a sign-in that needs new keys is refused
// with jwks_unavailable.
func TestIdPGarbage(t *testing.T) {
	rep := idpResult(t, "jwks_garbage")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.TokenCacheSize = -1
	v := newEnValidator(t, cfg)
	ctx := context.Background()
	signins, refused, refreshErrs := 0, 0, 0
	for _, tc := range []struct {
		name string
		docs devidp.Documents
	}{{"discovery", devidp.Discovery}, {"keys", devidp.Keys}, {"both", devidp.AllDocuments}} {
		t.Run(tc.name, func(t *testing.T) {
			s.idp.SetServerFaults(devidp.ServerFaults{Garbage: tc.docs})
			defer s.idp.SetServerFaults(devidp.ServerFaults{})
			err := v.Refresh(ctx)
			if err == nil {
				t.Fatal("Refresh accepted garbage")
			}
			refreshErrs++
			for _, ks := range v.KeySets() {
				if ks.Keys != 1 || ks.LastError == "" {
					t.Errorf("key set after garbage: %+v", ks)
				}
			}
			for i := range 20 {
				if _, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enAliceOID, Extra: map[string]any{"n": i}})); err != nil {
					t.Errorf("known kid: %v", err)
				}
				signins++
			}
			if tc.docs&devidp.Keys != 0 {
				// An unknown kid fetches the key set only (rate-limited:
				// once per validator here).
				_, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultUnknownKID}))
				if r := authn.ReasonOf(err); r != authn.ReasonJWKSUnavailable && r != authn.ReasonUnknownKID {
					t.Errorf("unknown kid with a garbage key set: %q (%v)", r, err)
				}
				refused++
			}
		})
	}
	// Healed: the next refresh installs keys again.
	if err := v.Refresh(ctx); err != nil {
		t.Errorf("after the garbage: %v", err)
	}
	rep.set("known_kid_signins", signins)
	rep.set("undecidable_refused", refused)
	rep.set("refreshes_refused", refreshErrs)
}

// TestIdPHugeDocument: a 50 MiB discovery document or key set, with or
// without a Content-Length, is refused by the 1 MiB cap without being read
// whole: the validator allocates a few MiB per fetch at most, the server could write
// only a fraction of the document before the connection was dropped, and
// the keys in use stay.
func TestIdPHugeDocument(t *testing.T) {
	rep := idpResult(t, "jwks_huge_document")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.TokenCacheSize = -1
	v := newEnValidator(t, cfg)
	ctx := context.Background()
	const huge = devidp.DefaultHugeSize
	rep.set("document_bytes", huge)
	for _, tc := range []struct {
		name    string
		docs    devidp.Documents
		chunked bool
	}{
		{"discovery", devidp.Discovery, false},
		{"discovery_chunked", devidp.Discovery, true},
		{"keys", devidp.Keys, false},
		{"keys_chunked", devidp.Keys, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var written []int64
			s.idp.SetServerFaults(devidp.ServerFaults{Huge: tc.docs, HugeChunked: tc.chunked, OnHugeWritten: func(n int64) {
				mu.Lock()
				written = append(written, n)
				mu.Unlock()
			}})
			defer s.idp.SetServerFaults(devidp.ServerFaults{})
			runtime.GC()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			err := v.Refresh(ctx)
			runtime.ReadMemStats(&m1)
			if err == nil || !strings.Contains(err.Error(), "larger than") {
				t.Fatalf("Refresh: %v, want a size refusal", err)
			}
			alloc := int64(m1.TotalAlloc - m0.TotalAlloc)
			// The handlers end once the client has dropped the connection.
			enWaitFor(t, 10*time.Second, func() bool { return s.inflight.Load() == 0 })
			mu.Lock()
			maxWritten := int64(0)
			for _, n := range written {
				maxWritten = max(maxWritten, n)
			}
			n := len(written)
			mu.Unlock()
			if n == 0 {
				t.Fatal("no huge document was served")
			}
			if maxWritten >= huge/2 {
				t.Errorf("the server wrote %d of %d bytes: the read was not stopped", maxWritten, huge)
			}
			// Two key sets (v1 and v2) refresh at once; each read stops
			// one byte past the 1 MiB cap, io.ReadAll's growth costing
			// a few times that. Reading the document whole would cost
			// hundreds of MiB.
			if alloc > 24<<20 {
				t.Errorf("the refresh allocated %d bytes for a capped document", alloc)
			}
			rep.set(tc.name+"_alloc_bytes", alloc)
			rep.set(tc.name+"_server_wrote_bytes", maxWritten)
			for _, ks := range v.KeySets() {
				if ks.Keys != 1 {
					t.Errorf("keys lost: %+v", ks)
				}
			}
			if _, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enAliceOID})); err != nil {
				t.Errorf("known kid after a huge document: %v", err)
			}
		})
	}
}

// TestKeyWithdrawn: the IdP rotates its key and later withdraws the old
// one. Until the next hourly refresh the old key is trusted; after it,
// tokens signed with the old key are refused with unknown_kid and the
// generic message, cached ones included, while tokens of the new key pass.
// Simulated time (testing/synctest), with the IdP reached in process.
func TestKeyWithdrawn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rep := idpResult(t, "jwks_key_withdrawn")
		idp, err := devidp.New(devidp.Options{Tenants: []string{enTenantA}, GenerateKey: enPooledKeys(), Logger: enQuietLogger(), BaseURL: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		obs := &enCountObserver{}
		cfg := authn.EntraConfig{Authority: idp.BaseURL(), Tenants: idp.Tenants(), HTTPClient: idp.HTTPClient(), Observer: obs}
		v, err := authn.NewValidator(t.Context(), cfg, enQuietLogger())
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		ctx := context.Background()
		mint := func(spec devidp.TokenSpec) string {
			spec.Lifetime = 3 * time.Hour
			tok, err := idp.Mint(spec)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		oldKID := idp.PublishedKIDs(enTenantA)[0]
		newKID, err := idp.Rotate(enTenantA)
		if err != nil {
			t.Fatal(err)
		}
		oldTok := mint(devidp.TokenSpec{OID: enAliceOID, KID: oldKID})
		newTok := mint(devidp.TokenSpec{OID: enBobOID})
		for _, tok := range []string{oldTok, newTok} {
			if _, err := v.Validate(ctx, tok); err != nil { // the new kid is fetched on demand
				t.Fatal(err)
			}
		}
		if err := idp.Withdraw(oldKID); err != nil {
			t.Fatal(err)
		}
		withdrawn := time.Now()
		// Until the hourly refresh, the old key is still trusted.
		time.Sleep(30 * time.Minute)
		if _, err := v.Validate(ctx, mint(devidp.TokenSpec{OID: enAliceOID, KID: oldKID})); err != nil {
			t.Errorf("old kid before the refresh: %v", err)
		}
		time.Sleep(time.Hour) // passes the refresh
		synctest.Wait()
		var removedAt time.Duration = -1
		obs.mu.Lock()
		for _, e := range obs.loaded {
			if slices.Contains(e.Removed, oldKID) {
				removedAt = e.FetchedAt.Sub(withdrawn)
			}
		}
		obs.mu.Unlock()
		if removedAt < 0 {
			t.Fatal("the refresh did not report the withdrawn key removed")
		}
		rep.set("removed_after_withdrawal_s", removedAt.Seconds())
		refused := 0
		for name, tok := range map[string]string{"cached": oldTok, "fresh": mint(devidp.TokenSpec{OID: enGuestOID, KID: oldKID})} {
			_, err := v.Validate(ctx, tok)
			ae := enAuthErr(t, err)
			if ae.Reason != authn.ReasonUnknownKID || ae.Public != authn.MsgTokenInvalid || ae.SQLState != authn.SQLStateInvalidPassword {
				t.Errorf("%s token of the withdrawn kid: %+v", name, ae)
			} else {
				refused++
			}
			rep.set("withdrawn_"+name+"_reason", ae.Reason)
		}
		rep.set("withdrawn_refused", refused)
		ok := 0
		for _, tok := range []string{newTok, mint(devidp.TokenSpec{OID: enGuestOID})} {
			if tk, err := v.Validate(ctx, tok); err != nil || tk.KID != newKID {
				t.Errorf("token of the current key: %v", err)
			} else {
				ok++
			}
		}
		rep.set("current_key_accepted", ok)
	})
}
