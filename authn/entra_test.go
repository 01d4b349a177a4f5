package authn_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

const (
	enAliceOID      = "11111111-1111-4111-8111-111111111111"
	enBobOID        = "22222222-2222-4222-8222-222222222222"
	enGuestOID      = "33333333-3333-4333-8333-333333333333"
	enSvcOID        = "44444444-4444-4444-8444-444444444444"
	enMIOID         = "55555555-5555-4555-8555-555555555555"
	enGroupOID      = "66666666-6666-4666-8666-666666666666"
	enOtherGroupOID = "77777777-7777-4777-8777-777777777777"
	enTenantA       = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	enTenantB       = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
)

func TestValidateGoodTokens(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA, enTenantB}})
	v := newEnValidator(t, s.config(nil))

	cases := []struct {
		name string
		spec devidp.TokenSpec
		want func(t *testing.T, tok *authn.Token)
	}{
		{"v1 user", devidp.TokenSpec{OID: enAliceOID, UPN: "alice@contoso.com", AMR: []string{"pwd", "mfa"}}, func(t *testing.T, tok *authn.Token) {
			if tok.OID != enAliceOID || tok.TID != enTenantA || tok.UPN != "alice@contoso.com" || tok.UniqueName != "alice@contoso.com" {
				t.Errorf("claims: %+v", tok)
			}
			if tok.Version != authn.EntraV1 || tok.IDType != authn.IDTypeUser || tok.IDTypeFrom != "scp" {
				t.Errorf("version %q idtype %q from %q", tok.Version, tok.IDType, tok.IDTypeFrom)
			}
			if tok.AppID != devidp.AzureCLIAppID || !slices.Equal(tok.Scopes, []string{"user_impersonation"}) || !tok.HasAMR("mfa") {
				t.Errorf("appid %q scopes %q amr %q", tok.AppID, tok.Scopes, tok.AMR)
			}
			if tok.UTI == "" || tok.KID == "" || tok.Exp.IsZero() || tok.IssuedAt.IsZero() || tok.Audience != authn.DefaultEntraAudience {
				t.Errorf("uti %q kid %q exp %v iat %v aud %q", tok.UTI, tok.KID, tok.Exp, tok.IssuedAt, tok.Audience)
			}
			if tok.Name() != "alice@contoso.com" || tok.Issuer != s.idp.Issuer(enTenantA, "1.0") {
				t.Errorf("name %q issuer %q", tok.Name(), tok.Issuer)
			}
		}},
		{"v2 user in second tenant", devidp.TokenSpec{Tenant: enTenantB, OID: enBobOID, UPN: "bob@fabrikam.com", Version: "2.0"}, func(t *testing.T, tok *authn.Token) {
			if tok.TID != enTenantB || tok.Version != authn.EntraV2 || tok.PreferredUsername != "bob@fabrikam.com" || tok.UPN != "" || tok.AppID != devidp.AzureCLIAppID {
				t.Errorf("claims: %+v", tok)
			}
		}},
		{"audience with trailing slash", devidp.TokenSpec{OID: enAliceOID, Audience: authn.DefaultEntraAudience + "/"}, func(t *testing.T, tok *authn.Token) {
			if tok.Audience != authn.DefaultEntraAudience+"/" {
				t.Errorf("aud %q", tok.Audience)
			}
		}},
		{"app token without idtyp", devidp.TokenSpec{OID: enSvcOID, Type: devidp.TypeApp, AppID: "app-1"}, func(t *testing.T, tok *authn.Token) {
			if tok.IDType != authn.IDTypeApp || tok.IDTypeFrom != "no_scp" || tok.AppID != "app-1" || tok.Name() != "app-1" {
				t.Errorf("claims: %+v", tok)
			}
		}},
		{"app token with idtyp", devidp.TokenSpec{OID: enSvcOID, Type: devidp.TypeApp, IDTyp: "app", Version: "2.0"}, func(t *testing.T, tok *authn.Token) {
			if tok.IDType != authn.IDTypeApp || tok.IDTypeFrom != "idtyp" {
				t.Errorf("claims: %+v", tok)
			}
		}},
		{"groups and overage", devidp.TokenSpec{OID: enAliceOID, Groups: []string{enGroupOID}, HasGroups: true}, func(t *testing.T, tok *authn.Token) {
			if !slices.Equal(tok.Groups, []string{enGroupOID}) || !tok.GroupOverage {
				t.Errorf("groups %q overage %v", tok.Groups, tok.GroupOverage)
			}
		}},
		{"token with surrounding newline", devidp.TokenSpec{OID: enAliceOID}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := s.mint(t, c.spec)
			if c.want == nil {
				raw = "\n" + raw + "\n"
			}
			tok, err := v.Validate(context.Background(), raw)
			if err != nil {
				t.Fatal(err)
			}
			if c.want != nil {
				c.want(t, tok)
			}
		})
	}
}

// TestEntraIssuers checks that tokens carrying Entra's real issuer strings
// validate when discovery publishes them.
func TestEntraIssuers(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}, EntraIssuers: true})
	v := newEnValidator(t, s.config(nil))
	for _, ver := range []string{"1.0", "2.0"} {
		tok, err := v.Validate(context.Background(), s.mint(t, devidp.TokenSpec{OID: enAliceOID, Version: ver}))
		if err != nil {
			t.Fatal(ver, err)
		}
		want := "https://sts.windows.net/" + enTenantA + "/"
		if ver == "2.0" {
			want = "https://login.microsoftonline.com/" + enTenantA + "/v2.0"
		}
		if tok.Issuer != want {
			t.Errorf("issuer %q, want %q", tok.Issuer, want)
		}
	}
	// The issuer of another tenant is refused.
	_, err := v.Validate(context.Background(), s.mint(t, devidp.TokenSpec{OID: enAliceOID, Issuer: "https://sts.windows.net/" + enTenantB + "/"}))
	if r := authn.ReasonOf(err); r != authn.ReasonWrongIssuer {
		t.Errorf("reason %q, want wrong_issuer", r)
	}
}

// TestBadTokenCorpus is the "Done when" corpus for validation: every
// bad token is refused with the right reason and client message, and no
// error text contains the token.
func TestBadTokenCorpus(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	obs := &enCountObserver{}
	v := newEnValidator(t, s.config(obs))
	resource := `Please acquire a new token for the resource "https://ossrdbms-aad.database.windows.net".`

	garbage := make([]byte, 100<<10)
	for i := range garbage {
		garbage[i] = "ABCxyz.-_"[i%9]
	}
	cases := []struct {
		name   string
		token  string
		reason string
		public string
	}{
		{"alg none", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultAlgNone}), authn.ReasonAlgNotAllowed, authn.MsgTokenInvalid},
		{"HS256 signed with the public key", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultHS256PublicKey}), authn.ReasonAlgNotAllowed, authn.MsgTokenInvalid},
		{"RS512", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultAlgRS512}), authn.ReasonAlgNotAllowed, authn.MsgTokenInvalid},
		{"tampered payload", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultTamperedPayload}), authn.ReasonBadSignature, authn.MsgTokenInvalid},
		{"wrong key under a published kid", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultWrongKey}), authn.ReasonBadSignature, authn.MsgTokenInvalid},
		{"expired", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultExpired}), authn.ReasonExpired, authn.MsgTokenExpired},
		{"not yet valid", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultNotYetValid}), authn.ReasonNotYetValid, authn.MsgTokenInvalid},
		{"issued in the future", s.mint(t, devidp.TokenSpec{OID: enAliceOID, IssuedAt: time.Now().Add(time.Hour), NotBefore: time.Now()}), authn.ReasonNotYetValid, authn.MsgTokenInvalid},
		{"wrong aud", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultWrongAudience}), authn.ReasonWrongAudience, "The access token does not have a valid audience claim. " + resource},
		{"wrong iss", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultWrongIssuer}), authn.ReasonWrongIssuer, authn.MsgTokenInvalid},
		{"foreign issuer", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Issuer: "https://evil.example/" + enTenantA + "/v2.0"}), authn.ReasonWrongIssuer, authn.MsgTokenInvalid},
		{"wrong tid", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultWrongTenant}), authn.ReasonTenantNotAllowed, authn.MsgTokenInvalid},
		{"unknown kid", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultUnknownKID}), authn.ReasonUnknownKID, authn.MsgTokenInvalid},
		{"no kid", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultNoKID}), authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"missing oid", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultMissingOID}), authn.ReasonMissingClaim, authn.MsgTokenInvalid},
		{"missing exp", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultMissingExp}), authn.ReasonMissingClaim, authn.MsgTokenInvalid},
		{"missing tid", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Extra: map[string]any{"tid": ""}}), authn.ReasonMissingClaim, authn.MsgTokenInvalid},
		{"oid not a GUID", s.mint(t, devidp.TokenSpec{OID: "alice"}), authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"exp of the wrong type", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Extra: map[string]any{"exp": "tomorrow"}}), authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"groups of the wrong type", s.mint(t, devidp.TokenSpec{OID: enAliceOID, Extra: map[string]any{"groups": "all"}}), authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"100 KiB garbage", string(garbage), authn.ReasonTokenTooLong, authn.MsgTokenInvalid},
		{"64 KiB + 1", strings.Repeat("a", authn.MaxEntraTokenLength+1), authn.ReasonTokenTooLong, authn.MsgTokenInvalid},
		{"empty", "", authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"a password", "correct horse battery staple", authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"three dots", "...", authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"bad base64 signature", enB64(`{"alg":"RS256","kid":"k"}`) + ".e30.!!!", authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"bad base64 header", "!!!.e30.e30", authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"header not JSON", "bm90anNvbg.e30.", authn.ReasonMalformed, authn.MsgTokenInvalid},
		{"unknown alg", enB64(`{"alg":"XX999","kid":"k"}`) + "." + enB64(`{}`) + ".", authn.ReasonAlgNotAllowed, authn.MsgTokenInvalid},
		{"crit header", enWithHeader(t, s.mint(t, devidp.TokenSpec{OID: enAliceOID}), "crit", []string{"exp"}), authn.ReasonMalformed, authn.MsgTokenInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := v.Validate(context.Background(), c.token)
			if err == nil {
				t.Fatalf("accepted: %+v", tok)
			}
			ae := enAuthErr(t, err)
			if ae.Reason != c.reason || ae.Public != c.public || ae.SQLState != authn.SQLStateInvalidPassword {
				t.Errorf("got reason %q public %q sqlstate %q, want %q %q; err: %v", ae.Reason, ae.Public, ae.SQLState, c.reason, c.public, err)
			}
			if len(c.token) > 40 && strings.Contains(err.Error(), c.token[:40]) {
				t.Errorf("error contains the token: %v", err)
			}
		})
	}
	if n := obs.sigBad.Load(); n != 2 {
		t.Errorf("%d failed signature checks, want 2 (tampered payload, wrong key)", n)
	}
}

func enB64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// enWithHeader re-encodes tok's header with an extra member (the signature
// no longer matters: the header is refused first).
func enWithHeader(t *testing.T, tok, k string, val any) string {
	parts := strings.Split(tok, ".")
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var m map[string]any
	if err := json.Unmarshal(h, &m); err != nil {
		t.Fatal(err)
	}
	m[k] = val
	nh, _ := json.Marshal(m)
	return base64.RawURLEncoding.EncodeToString(nh) + "." + parts[1] + "." + parts[2]
}

func TestConfigChecks(t *testing.T) {
	good := authn.EntraConfig{Tenants: []string{enTenantA}}
	for _, c := range []struct {
		name string
		edit func(*authn.EntraConfig)
		want string
	}{
		{"http authority off loopback", func(c *authn.EntraConfig) { c.Authority = "http://login.example.com" }, "loopback"},
		{"ftp authority", func(c *authn.EntraConfig) { c.Authority = "ftp://127.0.0.1" }, "scheme"},
		{"authority with query", func(c *authn.EntraConfig) { c.Authority = "https://login.example.com/?x=1" }, "query"},
		{"http Graph off loopback", func(c *authn.EntraConfig) { c.GraphEndpoint = "http://graph.example.com" }, "loopback"},
		{"no tenants", func(c *authn.EntraConfig) { c.Tenants = nil }, "no tenants"},
		{"domain as tenant", func(c *authn.EntraConfig) { c.Tenants = []string{"contoso.onmicrosoft.com"} }, "not a tenant ID"},
		{"negative wait", func(c *authn.EntraConfig) { c.UnknownKIDMaxWait = -time.Second }, "negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			_, err := authn.NewValidator(context.Background(), cfg, enQuietLogger())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.Tenants = []string{strings.ToUpper(enTenantA)}
	cfg.Authority += "/"
	v := newEnValidator(t, cfg)
	got := v.Config()
	if got.Authority != s.srv.URL || !slices.Equal(got.Tenants, []string{enTenantA}) ||
		!slices.Equal(got.Audiences, authn.DefaultEntraAudiences()) || got.Leeway != authn.DefaultEntraLeeway ||
		got.RefreshInterval != time.Hour || got.UnknownKIDRefreshInterval != 5*time.Minute ||
		got.UnknownKIDMaxWait != 3*time.Second || got.TokenCacheSize != 10000 || got.GraphCacheTTL != 5*time.Minute {
		t.Errorf("defaults: %+v", got)
	}
}

func TestTokenCache(t *testing.T) {
	clock := newEnFakeClock()
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}, Now: clock.Now})
	obs := &enCountObserver{}
	cfg := s.config(obs)
	cfg.Now = clock.Now
	v := newEnValidator(t, cfg)
	raw := s.mint(t, devidp.TokenSpec{OID: enAliceOID, Lifetime: 10 * time.Minute})
	for i := range 5 {
		tok, err := v.Validate(context.Background(), raw)
		if err != nil {
			t.Fatal(i, err)
		}
		tok.Groups = append(tok.Groups, "mutated") // callers own their copy
	}
	if obs.sigOK.Load() != 1 || obs.hits.Load() != 4 || obs.misses.Load() != 1 {
		t.Errorf("signatures %d, hits %d, misses %d; want 1, 4, 1", obs.sigOK.Load(), obs.hits.Load(), obs.misses.Load())
	}
	tok, _ := v.Validate(context.Background(), raw)
	if len(tok.Groups) != 0 {
		t.Errorf("cached token was mutated by a caller: %q", tok.Groups)
	}
	// Time claims are re-checked on a hit: past exp + leeway, refused.
	clock.Advance(10*time.Minute + authn.DefaultEntraLeeway + time.Second)
	_, err := v.Validate(context.Background(), raw)
	if ae := enAuthErr(t, err); ae.Reason != authn.ReasonExpired || ae.Public != authn.MsgTokenExpired {
		t.Errorf("after exp: %v", err)
	}
	if obs.sigOK.Load() != 1 {
		t.Errorf("expired cached token cost a signature check")
	}

	// nbf is honoured on a hit too, with leeway.
	raw = s.mint(t, devidp.TokenSpec{OID: enAliceOID, NotBefore: clock.Now().Add(20 * time.Second)})
	if _, err := v.Validate(context.Background(), raw); err != nil {
		t.Fatalf("nbf within leeway: %v", err)
	}
	raw = s.mint(t, devidp.TokenSpec{OID: enAliceOID, NotBefore: clock.Now().Add(time.Minute)})
	if r := authn.ReasonOf(enMustFail(v.Validate(context.Background(), raw))); r != authn.ReasonNotYetValid {
		t.Errorf("nbf beyond leeway: %q", r)
	}
	clock.Advance(time.Minute)
	if _, err := v.Validate(context.Background(), raw); err != nil {
		t.Errorf("nbf reached: %v", err)
	}
}

func enMustFail(_ *authn.Token, err error) error { return err }

func TestTokenCacheBoundedAndDisabled(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	obs := &enCountObserver{}
	cfg := s.config(obs)
	cfg.TokenCacheSize = 2
	v := newEnValidator(t, cfg)
	toks := []string{s.mint(t, devidp.TokenSpec{OID: enAliceOID}), s.mint(t, devidp.TokenSpec{OID: enBobOID}), s.mint(t, devidp.TokenSpec{OID: enGuestOID})}
	for _, raw := range toks {
		if _, err := v.Validate(context.Background(), raw); err != nil {
			t.Fatal(err)
		}
	}
	// The first was evicted; the last two are cached.
	for _, raw := range []string{toks[2], toks[1], toks[0]} {
		if _, err := v.Validate(context.Background(), raw); err != nil {
			t.Fatal(err)
		}
	}
	if obs.sigOK.Load() != 4 || obs.hits.Load() != 2 {
		t.Errorf("signatures %d hits %d, want 4 and 2", obs.sigOK.Load(), obs.hits.Load())
	}

	obs2 := &enCountObserver{}
	cfg = s.config(obs2)
	cfg.TokenCacheSize = -1
	v = newEnValidator(t, cfg)
	for range 3 {
		if _, err := v.Validate(context.Background(), toks[0]); err != nil {
			t.Fatal(err)
		}
	}
	if obs2.sigOK.Load() != 3 || obs2.hits.Load()+obs2.misses.Load() != 0 {
		t.Errorf("disabled cache: signatures %d lookups %d", obs2.sigOK.Load(), obs2.hits.Load()+obs2.misses.Load())
	}
}

func TestKeyRotation(t *testing.T) {
	rep := idpResult(t, "jwks_key_rotation_overlap")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	obs := &enCountObserver{}
	v := newEnValidator(t, s.config(obs))
	ctx := context.Background()
	oldKID := s.idp.PublishedKIDs(enTenantA)[0]
	oldTok := s.mint(t, devidp.TokenSpec{OID: enAliceOID})
	if _, err := v.Validate(ctx, oldTok); err != nil {
		t.Fatal(err)
	}

	newKID, err := s.idp.Rotate(enTenantA)
	if err != nil {
		t.Fatal(err)
	}
	before := s.jwks.Load()
	newTok := s.mint(t, devidp.TokenSpec{OID: enBobOID})
	tok, err := v.Validate(ctx, newTok)
	if err != nil {
		t.Fatalf("new kid: %v", err)
	}
	if tok.KID != newKID {
		t.Errorf("kid %q, want %q", tok.KID, newKID)
	}
	if n := s.jwks.Load() - before; n != 1 {
		t.Errorf("unknown kid caused %d key set fetches, want 1", n)
	}
	rep.set("new_kid_fetches", s.jwks.Load()-before)
	// Both keys are published: both tokens pass (the old one freshly too).
	if _, err := v.Validate(ctx, oldTok); err != nil {
		t.Errorf("old kid while published: %v", err)
	}
	if _, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enGuestOID, KID: oldKID})); err != nil {
		t.Errorf("fresh token with the old kid: %v", err)
	}
	var kids []string
	for _, k := range v.Keys() {
		if k.Tenant == enTenantA && k.Version == authn.EntraV1 {
			kids = append(kids, k.KID)
			if k.Source != authn.SourceNetwork || k.FetchedAt.IsZero() || k.Issuer != s.idp.Issuer(enTenantA, "1.0") {
				t.Errorf("key info %+v", k)
			}
		}
	}
	if want := []string{oldKID, newKID}; !slices.Equal(kids, enSorted(want)) {
		t.Errorf("Keys() kids %q, want %q", kids, want)
	}

	// Withdrawn, then refreshed: refused, even though oldTok is cached.
	if err := s.idp.Withdraw(oldKID); err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{oldTok, s.mint(t, devidp.TokenSpec{OID: enGuestOID, KID: oldKID})} {
		_, err := v.Validate(ctx, raw)
		if r := authn.ReasonOf(err); r != authn.ReasonUnknownKID {
			t.Errorf("withdrawn kid: reason %q (%v)", r, err)
		}
	}
	if _, err := v.Validate(ctx, newTok); err != nil {
		t.Errorf("new kid after withdrawal: %v", err)
	}
	if err := s.idp.Withdraw(newKID); err == nil {
		t.Errorf("withdrawing the signing key succeeded")
	}
	obs.mu.Lock()
	var removed []string
	for _, e := range obs.loaded {
		removed = append(removed, e.Removed...)
	}
	obs.mu.Unlock()
	if !slices.Contains(removed, oldKID) {
		t.Errorf("KeysLoaded never reported %q removed: %q", oldKID, removed)
	}
}

func enSorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// TestUnknownKIDStorm: 1,000 concurrent sign-ins with unknown kids cause at
// most one key set fetch.
func TestUnknownKIDStorm(t *testing.T) {
	rep := idpResult(t, "jwks_unknown_kid_storm")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	v := newEnValidator(t, s.config(nil))
	toks := make([]string, 10)
	for i := range toks {
		toks[i] = s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultUnknownKID, Extra: map[string]any{"n": i}})
	}
	s.jwksDelay.Store(int64(100 * time.Millisecond))
	before := s.jwks.Load()
	reasons := enStorm(t, v, 1000, func(i int) string { return toks[i%len(toks)] })
	if n := s.jwks.Load() - before; n > 1 {
		t.Errorf("storm caused %d key set fetches, want at most 1", n)
	}
	rep.set("signins", 1000)
	rep.set("fetches", s.jwks.Load()-before)
	rep.set("refused_unknown_kid", reasons[authn.ReasonUnknownKID])
	for r, n := range reasons {
		if r != authn.ReasonUnknownKID {
			t.Errorf("%d sign-ins refused with %q", n, r)
		}
	}
	// Later unknown kids within the interval are refused without a fetch.
	s.jwksDelay.Store(0)
	if r := authn.ReasonOf(enMustFail(v.Validate(context.Background(), toks[0]))); r != authn.ReasonUnknownKID {
		t.Errorf("reason %q", r)
	}
	if n := s.jwks.Load() - before; n > 1 {
		t.Errorf("%d key set fetches after the storm", n)
	}
}

// TestRotationStorm: 1,000 concurrent sign-ins with a freshly rotated kid all
// succeed, sharing a single key set fetch.
func TestRotationStorm(t *testing.T) {
	rep := idpResult(t, "jwks_rotation_storm")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	v := newEnValidator(t, s.config(nil))
	if _, err := s.idp.Rotate(enTenantA); err != nil {
		t.Fatal(err)
	}
	toks := make([]string, 10)
	for i := range toks {
		toks[i] = s.mint(t, devidp.TokenSpec{OID: enAliceOID})
	}
	s.jwksDelay.Store(int64(100 * time.Millisecond))
	before := s.jwks.Load()
	reasons := enStorm(t, v, 1000, func(i int) string { return toks[i%len(toks)] })
	if n := s.jwks.Load() - before; n != 1 {
		t.Errorf("rotation storm caused %d key set fetches, want 1", n)
	}
	rep.set("signins", 1000)
	rep.set("fetches", s.jwks.Load()-before)
	rep.set("refused", len(reasons))
	if len(reasons) != 0 {
		t.Errorf("refusals: %v", reasons)
	}
}

// enStorm validates n tokens at once and counts refusal reasons.
func enStorm(t *testing.T, v *authn.Validator, n int, token func(int) string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	reasons := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := v.Validate(ctx, token(i)); err != nil {
				mu.Lock()
				reasons[authn.ReasonOf(err)]++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return reasons
}

func TestUnknownKIDWaitIsBounded(t *testing.T) {
	rep := idpResult(t, "jwks_unknown_kid_wait_bounded")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.UnknownKIDMaxWait = 100 * time.Millisecond
	cfg.HTTPTimeout = 2 * time.Second
	v := newEnValidator(t, cfg)
	s.jwksDelay.Store(int64(time.Second))
	start := time.Now()
	_, err := v.Validate(context.Background(), s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultUnknownKID}))
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Errorf("sign-in waited %v", d)
	}
	rep.set("bound_ms", cfg.UnknownKIDMaxWait)
	rep.set("waited_ms", time.Since(start))
	rep.set("reason", authn.ReasonOf(err))
	if r := authn.ReasonOf(err); r != authn.ReasonJWKSUnavailable {
		t.Errorf("reason %q (%v)", r, err)
	}
	// The sign-in's own context is honoured as well.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.jwksDelay.Store(0)
	v2 := newEnValidator(t, s.config(nil))
	s.jwksDelay.Store(int64(time.Second))
	_, err = v2.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultUnknownKID}))
	if r := authn.ReasonOf(err); r != authn.ReasonJWKSUnavailable {
		t.Errorf("cancelled context: reason %q (%v)", r, err)
	}
}

func TestIdPDownAtStartWithCacheFile(t *testing.T) {
	rep := idpResult(t, "jwks_down_at_start_cache_file")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA, enTenantB}})
	path := filepath.Join(t.TempDir(), "jwks.json")
	cfg := s.config(nil)
	cfg.JWKSCacheFile = path
	v1 := newEnValidator(t, cfg)
	v1.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v", st.Mode())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}

	s.down.Store(true)
	obs := &enCountObserver{}
	cfg.Observer = obs
	v := newEnValidator(t, cfg)
	for _, tenant := range []string{enTenantA, enTenantB} {
		for _, ver := range []string{"1.0", "2.0"} {
			if _, err := v.Validate(context.Background(), s.mint(t, devidp.TokenSpec{Tenant: tenant, OID: enAliceOID, Version: ver})); err != nil {
				t.Errorf("tenant %s v%s with the IdP down: %v", tenant, ver, err)
			}
		}
	}
	for _, k := range v.Keys() {
		if k.Source != authn.SourceCacheFile {
			t.Errorf("key %+v not from the cache file", k)
		}
	}
	if len(v.Keys()) != 4 {
		t.Errorf("%d keys, want 4", len(v.Keys()))
	}
	rep.set("keys_from_cache_file", len(v.Keys()))
	for _, ks := range v.KeySets() {
		if ks.Source != authn.SourceCacheFile || ks.Keys != 1 {
			t.Errorf("key set %+v", ks)
		}
	}
	// The start's fetch (in the background) fails while the IdP is down.
	enWaitFor(t, 5*time.Second, func() bool { return obs.fetchErr.Load() > 0 })
	// The identity provider comes back: the background retry picks it up.
	s.down.Store(false)
	enWaitFor(t, 5*time.Second, func() bool {
		for _, k := range v.Keys() {
			if k.Source != authn.SourceNetwork {
				return false
			}
		}
		return true
	})
}

func enWaitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIdPDownAtStartWithoutCacheFile(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	s.down.Store(true)
	cfg := s.config(nil)
	cfg.JWKSCacheFile = filepath.Join(t.TempDir(), "absent.json")
	_, err := authn.NewValidator(context.Background(), cfg, enQuietLogger())
	if !errors.Is(err, authn.ErrJWKSUnavailable) {
		t.Fatalf("NewValidator: %v, want ErrJWKSUnavailable", err)
	}

	// Opt-in: start anyway, refuse with jwks_unavailable, recover in the
	// background.
	cfg.AllowStartWithoutKeys = true
	v := newEnValidator(t, cfg)
	raw := s.mint(t, devidp.TokenSpec{OID: enAliceOID})
	_, err = v.Validate(context.Background(), raw)
	if ae := enAuthErr(t, err); ae.Reason != authn.ReasonJWKSUnavailable || ae.Public != authn.MsgTokenInvalid {
		t.Errorf("without keys: %v", err)
	}
	s.down.Store(false)
	enWaitFor(t, 5*time.Second, func() bool { return len(v.Keys()) == 2 })
	if _, err := v.Validate(context.Background(), raw); err != nil {
		t.Errorf("after recovery: %v", err)
	}
	enWaitFor(t, 5*time.Second, func() bool {
		_, err := os.Stat(cfg.JWKSCacheFile)
		return err == nil
	})
}

func TestCacheFileOfAnotherAuthorityIgnored(t *testing.T) {
	s1 := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	path := filepath.Join(t.TempDir(), "jwks.json")
	cfg := s1.config(nil)
	cfg.JWKSCacheFile = path
	newEnValidator(t, cfg).Close()

	s2 := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	s2.down.Store(true)
	cfg2 := s2.config(nil)
	cfg2.JWKSCacheFile = path
	if _, err := authn.NewValidator(context.Background(), cfg2, enQuietLogger()); !errors.Is(err, authn.ErrJWKSUnavailable) {
		t.Fatalf("foreign cache file used: %v", err)
	}
	// A corrupt file is ignored too (and the network is used).
	os.WriteFile(path, []byte("{not json"), 0o600)
	v := newEnValidator(t, cfg)
	if _, err := v.Validate(context.Background(), s1.mint(t, devidp.TokenSpec{OID: enAliceOID})); err != nil {
		t.Fatal(err)
	}
}

func TestIdPDownMidRun(t *testing.T) {
	idpResult(t, "jwks_down_mid_run")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.TokenCacheSize = -1
	v := newEnValidator(t, cfg)
	ctx := context.Background()
	if _, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enAliceOID})); err != nil {
		t.Fatal(err)
	}
	s.down.Store(true)
	if err := v.Refresh(ctx); err == nil {
		t.Errorf("Refresh succeeded with the IdP down")
	}
	if _, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enBobOID})); err != nil {
		t.Errorf("cached keys stopped working: %v", err)
	}
	for _, ks := range v.KeySets() {
		if ks.LastError == "" || ks.Keys != 1 || ks.Source != authn.SourceNetwork {
			t.Errorf("key set %+v", ks)
		}
	}
	// An unknown kid while the IdP is down: the refresh fails.
	_, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enAliceOID, Fault: devidp.FaultUnknownKID}))
	if r := authn.ReasonOf(err); r != authn.ReasonJWKSUnavailable {
		t.Errorf("unknown kid with the IdP down: %q (%v)", r, err)
	}
}

// TestBadKeySetKeepsKeys: a key set without usable keys, or a discovery
// document naming a non-loopback http jwks_uri, is refused and the keys in
// use stay.
func TestBadKeySetKeepsKeys(t *testing.T) {
	idpResult(t, "jwks_bad_key_set")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	var mode atomic.Int32
	intercept := func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case mode.Load() == 1 && strings.Contains(r.URL.Path, "/discovery/"):
			w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"x"},{"kty":"RSA","kid":"short","n":"AQAB","e":"AQAB"}]}`))
		case mode.Load() == 2 && strings.Contains(r.URL.Path, "openid-configuration"):
			w.Write([]byte(`{"issuer":"x","jwks_uri":"http://jwks.example.com/keys"}`))
		default:
			return false
		}
		return true
	}
	s.intercept.Store(&intercept)
	v := newEnValidator(t, s.config(nil))
	for m := int32(1); m <= 2; m++ {
		mode.Store(m)
		if err := v.Refresh(context.Background()); err == nil {
			t.Errorf("mode %d: Refresh accepted a bad document", m)
		}
		if _, err := v.Validate(context.Background(), s.mint(t, devidp.TokenSpec{OID: enAliceOID, Extra: map[string]any{"m": m}})); err != nil {
			t.Errorf("mode %d: keys lost: %v", m, err)
		}
	}
}

func TestBackgroundRefresh(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.RefreshInterval = 50 * time.Millisecond
	v := newEnValidator(t, cfg)
	kid, err := s.idp.Rotate(enTenantA)
	if err != nil {
		t.Fatal(err)
	}
	enWaitFor(t, 5*time.Second, func() bool {
		for _, k := range v.Keys() {
			if k.KID == kid {
				return true
			}
		}
		return false
	})
	v.Close()
	n := s.jwks.Load()
	time.Sleep(200 * time.Millisecond)
	// A key set request that Close cancelled may still reach the
	// server after Close returned (it counts requests as it serves
	// them); refreshes that went on would add about four in 200 ms.
	if got := s.jwks.Load(); got > n+1 {
		t.Errorf("refreshes continued after Close: %d key set requests after it", got-n)
	}
}

// TestKeyIssuerBinding: a JWK carrying an "issuer" member may only validate
// tokens with that iss (Microsoft's multi-tenant rule).
func TestKeyIssuerBinding(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}})
	h := s.idp.Handler()
	intercept := func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/discovery/v2.0/keys") {
			return false
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := strings.ReplaceAll(rec.Body.String(), `"issuer":"`+s.idp.Issuer(enTenantA, "2.0")+`"`, `"issuer":"https://other.example/{tenantid}/v2.0"`)
		w.Write([]byte(body))
		return true
	}
	s.intercept.Store(&intercept)
	v := newEnValidator(t, s.config(nil))
	_, err := v.Validate(context.Background(), s.mint(t, devidp.TokenSpec{OID: enAliceOID, Version: "2.0"}))
	if r := authn.ReasonOf(err); r != authn.ReasonWrongIssuer {
		t.Errorf("reason %q (%v)", r, err)
	}
	if _, err := v.Validate(context.Background(), s.mint(t, devidp.TokenSpec{OID: enAliceOID})); err != nil {
		t.Errorf("v1 token: %v", err)
	}
}
