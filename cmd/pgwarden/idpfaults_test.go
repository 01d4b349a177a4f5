package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
	"github.com/pgwarden/pgwarden/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// idpResult writes the IDP-RESULT line of an identity provider fault test
// when it ends (format: see authn/idpfaults_test.go).
func idpResult(t testing.TB, item string, fields map[string]any) {
	t.Cleanup(func() {
		fields["item"], fields["test"], fields["outcome"] = item, t.Name(), "pass"
		if t.Failed() {
			fields["outcome"] = "fail"
		}
		b, _ := json.Marshal(fields)
		t.Logf("IDP-RESULT %s", b)
	})
}

// fetchRecorder records the key set requests and forwards every event to
// the binary's observer.
type fetchRecorder struct {
	*observer
	mu     sync.Mutex
	events []authn.JWKSFetchEvent
	at     []time.Time
}

func (r *fetchRecorder) JWKSFetch(ev authn.JWKSFetchEvent) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.at = append(r.at, time.Now())
	r.mu.Unlock()
	r.observer.JWKSFetch(ev)
}

// failedRounds returns the distinct times of failed background refreshes
// (not unknown-kid fetches) since since.
func (r *fetchRecorder) failedRounds(since time.Time) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Time
	for i, ev := range r.events {
		if ev.Err != nil && ev.Trigger != authn.TriggerUnknownKID && !r.at[i].Before(since) && (len(out) == 0 || !out[len(out)-1].Equal(r.at[i])) {
			out = append(out, r.at[i])
		}
	}
	return out
}

// gaugeValue reads a gauge from reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// TestIdPDownForAnHour: with the production defaults (hourly refresh, 10 s
// first retry), the identity provider is unreachable from 0:30 to 1:30 of
// simulated time (testing/synctest; the IdP is reached in process). A
// fresh token signs in every minute from the cached keys; the failed
// refreshes back off (10 s, 20 s, 40 s, ...); pgwarden_jwks_last_success_age_seconds,
// fed by the binary's observer, grows through the outage; an unknown kid is
// refused with jwks_unavailable; and the keys are fetched again at the
// first retry after the IdP is back.
func TestIdPDownForAnHour(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fig := map[string]any{}
		idpResult(t, "jwks_down_one_hour", fig)
		tenant := "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
		oid := "11111111-1111-4111-8111-111111111111"
		quiet := slog.New(slog.DiscardHandler)
		idp, err := devidp.New(devidp.Options{Tenants: []string{tenant}, Logger: quiet, BaseURL: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		obs := &fetchRecorder{observer: newObserver(metrics.New(reg))}
		cfg := authn.EntraConfig{Authority: idp.BaseURL(), Tenants: idp.Tenants(), HTTPClient: idp.HTTPClient(), Observer: obs}
		t0 := time.Now()
		v, err := authn.NewValidator(t.Context(), cfg, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		ctx := context.Background()
		signIn := func(spec devidp.TokenSpec) error {
			tok, err := idp.Mint(spec)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Validate(ctx, tok)
			return err
		}

		time.Sleep(30 * time.Minute)
		down := time.Now()
		idp.SetServerFaults(devidp.ServerFaults{Down: true})
		ok, maxAge := 0, 0.0
		for minute := 1; minute <= 60; minute++ {
			time.Sleep(time.Minute)
			synctest.Wait()
			if err := signIn(devidp.TokenSpec{OID: oid}); err != nil {
				t.Errorf("minute %d of the outage: %v", minute, err)
			} else {
				ok++
			}
			age := gaugeValue(t, reg, "pgwarden_jwks_last_success_age_seconds")
			if want := time.Since(t0).Seconds(); math.Abs(age-want) > 1 {
				t.Errorf("minute %d: last success age %v s, want %v s", minute, age, want)
			}
			maxAge = max(maxAge, age)
			if minute == 45 {
				err := signIn(devidp.TokenSpec{OID: oid, Fault: devidp.FaultUnknownKID})
				if r := authn.ReasonOf(err); r != authn.ReasonJWKSUnavailable {
					t.Errorf("unknown kid during the outage: %q (%v)", r, err)
				}
				fig["unknown_kid_reason"] = authn.ReasonOf(err)
			}
		}
		fig["simulated_outage_s"] = time.Since(down).Seconds()
		fig["signins_ok"], fig["signins_tried"] = ok, 60
		fig["max_last_success_age_s"] = maxAge
		for _, ks := range v.KeySets() {
			if ks.Keys != 1 || ks.LastError == "" {
				t.Errorf("key set at the end of the outage: %+v", ks)
			}
		}

		rounds := obs.failedRounds(down)
		var gaps []float64
		for i := 1; i < len(rounds); i++ {
			gaps = append(gaps, rounds[i].Sub(rounds[i-1]).Seconds())
		}
		fig["failed_refresh_rounds"], fig["backoff_gaps_s"] = len(rounds), gaps
		if len(rounds) == 0 || !rounds[0].Equal(t0.Add(authn.DefaultJWKSRefreshInterval)) {
			t.Errorf("failed rounds %v: want the first at the hourly refresh", rounds)
		}
		for i, g := range gaps {
			want := authn.DefaultJWKSRetryInterval.Seconds() * math.Pow(2, float64(i))
			if g != min(want, authn.DefaultJWKSRefreshInterval.Seconds()) {
				t.Errorf("backoff gaps %v s: want doubling from %v", gaps, authn.DefaultJWKSRetryInterval)
				break
			}
		}

		// The identity provider is back: the next retry gets the keys.
		idp.SetServerFaults(devidp.ServerFaults{})
		healed := time.Now()
		for time.Since(healed) < 2*time.Hour {
			time.Sleep(10 * time.Second)
			synctest.Wait()
			if gaugeValue(t, reg, "pgwarden_jwks_last_success_age_seconds") < 10 {
				break
			}
		}
		recovered := time.Since(healed)
		fig["recovered_after_heal_s"] = recovered.Seconds()
		next := rounds[len(rounds)-1].Add(time.Duration(gaps[len(gaps)-1]*2) * time.Second)
		if want := next.Sub(healed); recovered < want || recovered > want+10*time.Second {
			t.Errorf("recovered %v after the IdP came back, want at the next retry (%v)", recovered, want)
		}
		for _, ks := range v.KeySets() {
			if ks.LastError != "" || ks.Source != authn.SourceNetwork {
				t.Errorf("key set after recovery: %+v", ks)
			}
		}
		if err := signIn(devidp.TokenSpec{OID: oid, Extra: map[string]any{"after": true}}); err != nil {
			t.Errorf("after recovery: %v", err)
		}
	})
}
