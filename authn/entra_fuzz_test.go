package authn_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

var enKnownReasons = map[string]bool{
	authn.ReasonExpired: true, authn.ReasonNotYetValid: true, authn.ReasonBadSignature: true,
	authn.ReasonUnknownKID: true, authn.ReasonWrongAudience: true, authn.ReasonWrongIssuer: true,
	authn.ReasonTenantNotAllowed: true, authn.ReasonMalformed: true, authn.ReasonAlgNotAllowed: true,
	authn.ReasonMissingClaim: true, authn.ReasonTokenTooLong: true, authn.ReasonJWKSUnavailable: true,
}

// FuzzValidate: Validate never panics, and refuses anything but a good token
// with an *AuthError carrying a known reason and a client message.
func FuzzValidate(f *testing.F) {
	s := newEnIdPServer(f, devidp.Options{Tenants: []string{enTenantA}})
	cfg := s.config(nil)
	cfg.UnknownKIDMaxWait = 50 * time.Millisecond
	v := newEnValidator(f, cfg)
	good := s.mint(f, devidp.TokenSpec{OID: enAliceOID, UPN: "alice@contoso.com", Groups: []string{enGroupOID}})
	f.Add(good)
	f.Add(good[:len(good)-10])
	f.Add(strings.Replace(good, ".", "..", 1))
	for _, fault := range devidp.Faults {
		f.Add(s.mint(f, devidp.TokenSpec{OID: enAliceOID, Fault: fault}))
	}
	for _, seed := range []string{"", ".", "..", "...", "a.b.c", "e30.e30.e30", "eyJhbGciOiJSUzI1NiJ9.e30.", "\x00\xff.\x00.\x00",
		enB64(`{"alg":"RS256","kid":"x"}`) + "." + enB64(`{"tid":"`+enTenantA+`","iss":1}`) + ".AA",
		enB64(`{"alg":"RS256","kid":["x"]}`) + "." + enB64(`{"tid":7}`) + ".AA",
		enB64(`{"alg":"RS256","kid":"x","crit":5}`) + "." + enB64(`{"aud":[1,2]}`) + ".AA",
		enB64(`{"alg":"RS256","kid":"x"}`) + "." + enB64(`{"tid":"`+enTenantA+`","iss":"`+s.idp.Issuer(enTenantA, "1.0")+`","exp":1e400}`) + ".AA",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		tok, err := v.Validate(ctx, token)
		if err == nil {
			if tok.OID == "" || tok.TID != enTenantA {
				t.Fatalf("accepted a token without oid or tenant: %+v", tok)
			}
			return
		}
		var ae *authn.AuthError
		if !errors.As(err, &ae) {
			t.Fatalf("%T %v", err, err)
		}
		if !enKnownReasons[ae.Reason] || ae.Public == "" || ae.SQLState == "" {
			t.Fatalf("reason %q public %q sqlstate %q", ae.Reason, ae.Public, ae.SQLState)
		}
		if len(token) > 60 && strings.Contains(err.Error(), token) {
			t.Fatalf("error contains the token")
		}
	})
}
