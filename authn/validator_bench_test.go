package authn_test

import (
	"context"
	"testing"

	"github.com/pgwarden/pgwarden/authn/devidp"
)

// Token validation, the per-sign-in cost of an Entra login. Cached: the
// token was seen before (a SHA-256 and a map lookup, then the claim rules).
// Cold: the validated-token cache is off, so every call parses the JWT and
// verifies its RS256 signature against the cached JWKS (no network: the key
// set is fetched once when the validator starts).
//
//	go test -run '^$' -bench Validate -benchmem ./authn/

func BenchmarkValidateCached(b *testing.B) {
	s := newEnIdPServer(b, devidp.Options{Tenants: []string{enTenantA}})
	v := newEnValidator(b, s.config(nil))
	tok := s.mint(b, devidp.TokenSpec{OID: enAliceOID, UPN: "alice@contoso.com"})
	ctx := context.Background()
	if _, err := v.Validate(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidateCold(b *testing.B) {
	s := newEnIdPServer(b, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.TokenCacheSize = -1
	v := newEnValidator(b, cfg)
	tok := s.mint(b, devidp.TokenSpec{OID: enAliceOID, UPN: "alice@contoso.com"})
	ctx := context.Background()
	if _, err := v.Validate(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
