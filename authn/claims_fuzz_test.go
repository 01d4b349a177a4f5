package authn_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
)

// fuzzClock is the fixed time of FuzzTokenClaims (2030-01-01T00:00:00Z),
// so that the seeds' exp, nbf and iat mean the same on every run.
var fuzzClock = time.Unix(1893456000, 0)

// FuzzTokenClaims: the payload of a token is the input, and the token is
// signed with the dev IdP's published key for tenant A, so that every
// input passes the signature check and reaches claim validation and
// extraction. In the payload, {tid} and {tidB} become tenant A (allowed)
// and B (served by the IdP, not allowed), {iss1}, {iss2} and {issB} the
// v1 and v2 issuers of A and the v1 issuer of B, {aud} the default
// audience.
//
// Checked: Validate never panics and refuses with an *AuthError of a known
// reason; what it accepts has, read independently from the payload (the
// last member whose name matches case-insensitively, as encoding/json
// reads it), tid = tenant A, iss = one of A's issuers, an aud among the
// configured audiences, exp in the future, nbf and iat not in the future
// (with the leeway), and a GUID oid; the Token carries those values.
//
//	go test -run '^$' -fuzz '^FuzzTokenClaims$' ./authn/
func FuzzTokenClaims(f *testing.F) {
	var keys []*rsa.PrivateKey
	pool := enPooledKeys()
	s := newEnIdPServer(f, devidp.Options{
		Tenants: []string{enTenantA, enTenantB},
		Now:     func() time.Time { return fuzzClock },
		GenerateKey: func() (*rsa.PrivateKey, error) {
			k, err := pool()
			keys = append(keys, k)
			return k, err
		},
	})
	cfg := s.config(nil)
	cfg.Tenants = []string{enTenantA}
	cfg.Now = func() time.Time { return fuzzClock }
	cfg.UnknownKIDMaxWait = 50 * time.Millisecond
	v := newEnValidator(f, cfg)
	leeway := authn.DefaultEntraLeeway

	// The key and kid tenant A's tokens are signed with.
	good := s.mint(f, devidp.TokenSpec{OID: enAliceOID})
	parts := strings.Split(good, ".")
	hdr, _ := jwt.NewParser().DecodeSegment(parts[0])
	var header map[string]any
	if err := json.Unmarshal(hdr, &header); err != nil {
		f.Fatal(err)
	}
	sig, _ := jwt.NewParser().DecodeSegment(parts[2])
	var key *rsa.PrivateKey
	for _, k := range keys {
		if jwt.SigningMethodRS256.Verify(parts[0]+"."+parts[1], sig, &k.PublicKey) == nil {
			key = k
		}
	}
	if key == nil {
		f.Fatal("no key signs tenant A's tokens")
	}
	if _, err := v.Validate(context.Background(), good); err != nil {
		f.Fatalf("a good token is refused: %v", err)
	}

	iss1, iss2, issB := s.idp.Issuer(enTenantA, "1.0"), s.idp.Issuer(enTenantA, "2.0"), s.idp.Issuer(enTenantB, "1.0")
	subst := strings.NewReplacer("{tid}", enTenantA, "{tidB}", enTenantB, "{iss1}", iss1, "{iss2}", iss2, "{issB}", issB,
		"{aud}", authn.DefaultEntraAudience)
	now := fuzzClock.Unix()
	base := func(extra string) string {
		return `{"aud":"{aud}","iss":"{iss1}","iat":` + strconv.FormatInt(now-60, 10) + `,"nbf":` + strconv.FormatInt(now-60, 10) +
			`,"exp":` + strconv.FormatInt(now+3600, 10) + `,"oid":"` + enAliceOID + `","tid":"{tid}","ver":"1.0"` + extra + `}`
	}
	for _, seed := range []string{
		base(`,"upn":"alice@contoso.com","unique_name":"alice@contoso.com","scp":"user_impersonation","amr":["pwd","mfa"],"appid":"04b07795-8ddb-461a-bbee-02f9e1bf7b46"`),
		base(`,"groups":["` + enGroupOID + `"],"roles":["r1"],"idtyp":"app"`),
		base(`,"_claim_names":{"groups":"src1"},"_claim_sources":{"src1":{"endpoint":"https://graph.windows.net/x"}},"hasgroups":true`),
		base(`,"tid":"{tidB}"`),
		base(`,"TID":"{tidB}"`),
		base(`,"iss":"{iss2}","ver":"2.0","azp":"x","preferred_username":"a@b"`),
		base(`,"iss":"{issB}"`),
		base(`,"aud":["nope","{aud}"]`),
		base(`,"aud":"https://management.core.windows.net/"`),
		base(`,"exp":` + strconv.FormatInt(now-3600, 10)),
		base(`,"exp":"` + strconv.FormatInt(now+60, 10) + `"`),
		base(`,"exp":1e400`),
		base(`,"nbf":` + strconv.FormatInt(now+3600, 10)),
		base(`,"iat":` + strconv.FormatInt(now+3600, 10)),
		base(`,"oid":"not-a-guid"`),
		base(`,"oid":null`),
		base(`,"groups":null,"roles":[1]`),
		base(`,"scp":5`),
		`{"tid":"{tid}","iss":"{iss1}","aud":"{aud}","exp":` + strconv.FormatInt(now+60, 10) + `}`,
		`{}`, `[]`, `null`, `{"tid":`, "\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		defer fuzzwatch.Watchdog(0, "FuzzTokenClaims")()
		p := []byte(subst.Replace(payload))
		h, _ := json.Marshal(header)
		signing := b64url(h) + "." + b64url(p)
		sg, err := jwt.SigningMethodRS256.Sign(signing, key)
		if err != nil {
			t.Fatal(err)
		}
		token := signing + "." + b64url(sg)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tok, err := v.Validate(ctx, token)
		if err != nil {
			var ae *authn.AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("%T %v", err, err)
			}
			if !enKnownReasons[ae.Reason] || ae.Public == "" || ae.SQLState == "" {
				t.Fatalf("reason %q public %q sqlstate %q", ae.Reason, ae.Public, ae.SQLState)
			}
			return
		}
		claims, ok := topLevel(p)
		if !ok {
			t.Fatalf("accepted a payload that is not a JSON object: %q", p)
		}
		str := func(name string) (string, bool) {
			var s string
			raw, ok := claims.get(name, false)
			return s, ok && json.Unmarshal(raw, &s) == nil
		}
		if tid, ok := str("tid"); !ok || tid != enTenantA || tok.TID != enTenantA {
			t.Fatalf("accepted tid %q (Token.TID %q): %s", tid, tok.TID, p)
		}
		if iss, ok := str("iss"); !ok || iss != tok.Issuer || (iss != iss1 && iss != iss2) {
			t.Fatalf("accepted iss %q (Token.Issuer %q): %s", iss, tok.Issuer, p)
		}
		if oid, ok := str("oid"); !ok || oid != tok.OID || !isGUID(oid) {
			t.Fatalf("accepted oid %q (Token.OID %q): %s", oid, tok.OID, p)
		}
		raw, _ := claims.get("aud", true)
		var auds []string
		if err := json.Unmarshal(raw, &auds); err != nil {
			var one string
			if json.Unmarshal(raw, &one) == nil {
				auds = []string{one}
			}
		}
		if !slices.Contains(auds, tok.Audience) || !slices.Contains(authn.DefaultEntraAudiences(), tok.Audience) {
			t.Fatalf("accepted aud %s (Token.Audience %q): %s", raw, tok.Audience, p)
		}
		exp, ok := claims.number("exp")
		if !ok || exp <= float64(fuzzClock.Add(-leeway).Unix()) {
			t.Fatalf("accepted exp %v (present %v): %s", exp, ok, p)
		}
		for _, name := range []string{"nbf", "iat"} {
			if _, present := claims.get(name, true); !present {
				continue
			}
			if n, ok := claims.number(name); !ok || n > float64(fuzzClock.Add(leeway).Unix()) {
				t.Fatalf("accepted %s %v: %s", name, n, p)
			}
		}
	})
}

// members are the top-level members of a JSON object, in order.
type members []struct {
	name string
	raw  json.RawMessage
}

// topLevel reads the members of the object p; ok is false when p is not
// one JSON object.
func topLevel(p []byte) (members, bool) {
	dec := json.NewDecoder(bytes.NewReader(p))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out members
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		out = append(out, struct {
			name string
			raw  json.RawMessage
		}{name, raw})
	}
	return out, true
}

// get returns the value encoding/json gives a struct field name: that of
// the last member whose name matches it case-insensitively. A null there
// clears a pointer or slice field (nullClears) and leaves any other as the
// members before it set it.
func (m members) get(name string, nullClears bool) (json.RawMessage, bool) {
	for i := len(m) - 1; i >= 0; i-- {
		if strings.EqualFold(m[i].name, name) {
			if string(m[i].raw) == "null" {
				if nullClears {
					return nil, false
				}
				continue
			}
			return m[i].raw, true
		}
	}
	return nil, false
}

// number reads a NumericDate member: a number, or a string holding one.
func (m members) number(name string) (float64, bool) {
	raw, ok := m.get(name, true)
	if !ok {
		return 0, false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(s)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
}

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func b64url(b []byte) string { return enB64(string(b)) }
