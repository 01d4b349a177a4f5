package devidp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

const (
	tenant = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	userID = "11111111-1111-4111-8111-111111111111"
	spID   = "44444444-4444-4444-8444-444444444444"
	grp    = "66666666-6666-4666-8666-666666666666"
	inner  = "77777777-7777-4777-8777-777777777777"
)

var keys = sync.OnceValue(func() []*rsa.PrivateKey {
	out := make([]*rsa.PrivateKey, 4)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			out[i] = k
		})
	}
	wg.Wait()
	return out
})

func newIdP(t *testing.T, opts devidp.Options) (*devidp.IdP, *httptest.Server) {
	t.Helper()
	n := 0
	opts.GenerateKey = func() (*rsa.PrivateKey, error) {
		n++
		if n > len(keys()) {
			return rsa.GenerateKey(rand.Reader, 2048)
		}
		return keys()[n-1], nil
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if opts.Tenants == nil {
		opts.Tenants = []string{tenant}
	}
	p, err := devidp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	if err := p.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	return p, srv
}

func getJSON(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, m
}

func get(t *testing.T, u string, hdr ...string) (int, map[string]any) {
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return getJSON(t, req)
}

func post(t *testing.T, u string, form url.Values, hdr ...string) (int, map[string]any) {
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return getJSON(t, req)
}

// claims decodes a token's header and payload without verifying it.
func claims(t *testing.T, tok string) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	var h, c map[string]any
	for i, dst := range []*map[string]any{&h, &c} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	return h, c
}

func TestDiscoveryAndKeys(t *testing.T) {
	p, srv := newIdP(t, devidp.Options{})
	for _, c := range []struct{ path, iss, jwks string }{
		{"/" + tenant + "/.well-known/openid-configuration", srv.URL + "/" + tenant + "/", srv.URL + "/" + tenant + "/discovery/keys"},
		{"/" + tenant + "/v2.0/.well-known/openid-configuration", srv.URL + "/" + tenant + "/v2.0", srv.URL + "/" + tenant + "/discovery/v2.0/keys"},
	} {
		code, doc := get(t, srv.URL+c.path)
		if code != 200 || doc["issuer"] != c.iss || doc["jwks_uri"] != c.jwks {
			t.Errorf("%s: %d %v", c.path, code, doc)
		}
	}
	if code, doc := get(t, srv.URL+"/"+inner+"/.well-known/openid-configuration"); code != 400 || doc["error"] != "invalid_tenant" {
		t.Errorf("unknown tenant: %d %v", code, doc)
	}
	kid1 := p.PublishedKIDs(tenant)[0]
	kid2, err := p.Rotate(tenant)
	if err != nil {
		t.Fatal(err)
	}
	_, set := get(t, srv.URL+"/"+tenant+"/discovery/v2.0/keys")
	ks := set["keys"].([]any)
	if len(ks) != 2 {
		t.Fatalf("keys: %v", ks)
	}
	for i, k := range ks {
		m := k.(map[string]any)
		if m["kty"] != "RSA" || m["use"] != "sig" || m["kid"] != []string{kid1, kid2}[i] || m["x5t"] != m["kid"] ||
			m["issuer"] != p.Issuer(tenant, "2.0") || len(m["x5c"].([]any)) != 1 {
			t.Errorf("key %d: %v", i, m)
		}
	}
	if err := p.Withdraw(kid1); err != nil {
		t.Fatal(err)
	}
	if err := p.Withdraw(kid1); err == nil {
		t.Error("withdrew twice")
	}
	_, set = get(t, srv.URL+"/"+tenant+"/discovery/keys")
	if ks := set["keys"].([]any); len(ks) != 1 || ks[0].(map[string]any)["kid"] != kid2 || ks[0].(map[string]any)["issuer"] != nil {
		t.Errorf("after withdrawal: %v", ks)
	}
	// A withdrawn key still signs on request.
	tok, err := p.Mint(devidp.TokenSpec{KID: kid1})
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := claims(t, tok); h["kid"] != kid1 {
		t.Errorf("header %v", h)
	}
}

func TestEntraIssuersOption(t *testing.T) {
	p, srv := newIdP(t, devidp.Options{EntraIssuers: true})
	if p.Issuer(tenant, "1.0") != "https://sts.windows.net/"+tenant+"/" || p.Issuer(tenant, "2.0") != "https://login.microsoftonline.com/"+tenant+"/v2.0" {
		t.Errorf("issuers %q %q", p.Issuer(tenant, "1.0"), p.Issuer(tenant, "2.0"))
	}
	_, doc := get(t, srv.URL+"/"+tenant+"/.well-known/openid-configuration")
	if doc["issuer"] != "https://sts.windows.net/"+tenant+"/" {
		t.Errorf("discovery issuer %v", doc["issuer"])
	}
}

func TestMint(t *testing.T) {
	p, srv := newIdP(t, devidp.Options{})
	pub := keys()[0].Public()
	parse := func(tok string) (*jwt.Token, error) {
		return jwt.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithValidMethods([]string{"RS256"}))
	}
	tok, err := p.Mint(devidp.TokenSpec{OID: userID, UPN: "alice@contoso.com", Groups: []string{grp}, AMR: []string{"pwd", "mfa"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parse(tok); err != nil {
		t.Fatal(err)
	}
	h, c := claims(t, tok)
	if h["alg"] != "RS256" || h["kid"] == nil || h["x5t"] != h["kid"] {
		t.Errorf("header %v", h)
	}
	for k, want := range map[string]any{"oid": userID, "tid": tenant, "upn": "alice@contoso.com", "unique_name": "alice@contoso.com",
		"scp": "user_impersonation", "ver": "1.0", "aud": devidp.DefaultAudience, "iss": srv.URL + "/" + tenant + "/", "appid": devidp.AzureCLIAppID} {
		if c[k] != want {
			t.Errorf("%s = %v, want %v", k, c[k], want)
		}
	}
	if c["exp"].(float64)-c["iat"].(float64) != 3600 || c["uti"] == "" {
		t.Errorf("exp/iat/uti: %v", c)
	}

	_, c = claims(t, mustMint(t, p, devidp.TokenSpec{OID: spID, Type: devidp.TypeApp, Version: "2.0", Overage: true}))
	if c["scp"] != nil || c["azp"] == nil || c["appid"] != nil || c["groups"] != nil || c["_claim_names"] == nil || c["sub"] != spID {
		t.Errorf("v2 app token: %v", c)
	}

	for _, fault := range devidp.Faults {
		tok := mustMint(t, p, devidp.TokenSpec{OID: userID, Fault: fault})
		_, err := parse(tok)
		switch fault {
		case devidp.FaultExpired, devidp.FaultNotYetValid:
			if err == nil {
				t.Errorf("%s: parsed", fault)
			}
		case devidp.FaultWrongAudience, devidp.FaultWrongIssuer, devidp.FaultWrongTenant, devidp.FaultMissingOID, devidp.FaultMissingExp, devidp.FaultNoKID:
			if err != nil { // structurally fine, signed with the real key
				t.Errorf("%s: %v", fault, err)
			}
		default:
			if err == nil {
				t.Errorf("%s: signature verified with the tenant key", fault)
			}
		}
	}
	h, _ = claims(t, mustMint(t, p, devidp.TokenSpec{Fault: devidp.FaultAlgNone}))
	if h["alg"] != "none" {
		t.Errorf("alg none header %v", h)
	}
	h, _ = claims(t, mustMint(t, p, devidp.TokenSpec{Fault: devidp.FaultHS256PublicKey}))
	if h["alg"] != "HS256" {
		t.Errorf("HS256 header %v", h)
	}

	if _, err := p.Mint(devidp.TokenSpec{Type: "robot"}); err == nil {
		t.Error("bad type accepted")
	}
	if _, err := p.Mint(devidp.TokenSpec{KID: "nope"}); err == nil {
		t.Error("unknown kid accepted")
	}
	q, err := devidp.New(devidp.Options{Tenants: []string{tenant}, GenerateKey: func() (*rsa.PrivateKey, error) { return keys()[0], nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Mint(devidp.TokenSpec{}); err == nil {
		t.Error("minted without a base URL")
	}
}

func mustMint(t *testing.T, p *devidp.IdP, spec devidp.TokenSpec) string {
	t.Helper()
	tok, err := p.Mint(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestMintEndpoint(t *testing.T) {
	_, srv := newIdP(t, devidp.Options{})
	tok, err := devidp.RequestToken(context.Background(), nil, srv.URL, devidp.TokenSpec{OID: userID, UPN: "bob@contoso.com", Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	_, c := claims(t, tok)
	if c["oid"] != userID || c["exp"].(float64)-c["iat"].(float64) != 60 {
		t.Errorf("claims %v", c)
	}
	resp, err := http.Post(srv.URL+"/dev/token", "application/json", strings.NewReader(`{"oid":"x","bogus":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("unknown field: HTTP %d", resp.StatusCode)
	}
	if _, err := devidp.RequestToken(context.Background(), nil, srv.URL, devidp.TokenSpec{Version: "3.0"}); err == nil || !strings.Contains(err.Error(), "3.0") {
		t.Errorf("bad version: %v", err)
	}
}

func TestTokenEndpoint(t *testing.T) {
	certKey := keys()[3]
	_, srv := newIdP(t, devidp.Options{Clients: []devidp.Client{
		{ClientID: "secret-client", OID: spID, Secret: "s3cret"},
		{ClientID: "cert-client", AssertionKeys: []*rsa.PublicKey{&certKey.PublicKey}},
		{ClientID: "wi-client", AcceptAnyAssertion: true},
	}})
	v2 := srv.URL + "/" + tenant + "/oauth2/v2.0/token"
	v1 := srv.URL + "/" + tenant + "/oauth2/token"
	scope := devidp.DefaultAudience + "/.default"
	code, out := post(t, v2, url.Values{"grant_type": {"client_credentials"}, "client_id": {"secret-client"}, "client_secret": {"s3cret"}, "scope": {scope}})
	if code != 200 || out["token_type"] != "Bearer" || out["expires_in"].(float64) < 3500 {
		t.Fatalf("v2: %d %v", code, out)
	}
	_, c := claims(t, out["access_token"].(string))
	if c["oid"] != spID || c["appid"] != "secret-client" || c["aud"] != devidp.DefaultAudience || c["scp"] != nil {
		t.Errorf("claims %v", c)
	}
	code, out = post(t, v1, url.Values{"grant_type": {"client_credentials"}, "client_id": {"secret-client"}, "client_secret": {"s3cret"}, "resource": {devidp.DefaultAudience}})
	if code != 200 || out["expires_on"] == nil || out["resource"] != devidp.DefaultAudience {
		t.Fatalf("v1: %d %v", code, out)
	}

	assertion := func(key *rsa.PrivateKey, aud string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodPS256, jwt.MapClaims{"iss": "cert-client", "sub": "cert-client", "aud": aud,
			"exp": time.Now().Add(5 * time.Minute).Unix(), "nbf": time.Now().Unix(), "jti": devidp.NewGUID()})
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	jb := "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	for _, c := range []struct {
		name string
		form url.Values
		code int
	}{
		{"certificate", url.Values{"client_id": {"cert-client"}, "client_assertion_type": {jb}, "client_assertion": {assertion(certKey, v2)}}, 200},
		{"certificate, wrong key", url.Values{"client_id": {"cert-client"}, "client_assertion_type": {jb}, "client_assertion": {assertion(keys()[2], v2)}}, 401},
		{"certificate, wrong aud", url.Values{"client_id": {"cert-client"}, "client_assertion_type": {jb}, "client_assertion": {assertion(certKey, v1)}}, 401},
		{"federated", url.Values{"client_id": {"wi-client"}, "client_assertion_type": {jb}, "client_assertion": {"a.b.c"}}, 200},
		{"federated, not a JWT", url.Values{"client_id": {"wi-client"}, "client_assertion_type": {jb}, "client_assertion": {"abc"}}, 401},
		{"wrong secret", url.Values{"client_id": {"secret-client"}, "client_secret": {"nope"}}, 401},
		{"no credential", url.Values{"client_id": {"secret-client"}}, 401},
		{"unknown client", url.Values{"client_id": {"who"}, "client_secret": {"x"}}, 400},
		{"scope without .default", url.Values{"client_id": {"secret-client"}, "client_secret": {"s3cret"}, "scope": {devidp.DefaultAudience}}, 400},
		{"password grant", url.Values{"grant_type": {"password"}, "client_id": {"secret-client"}}, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.form.Get("grant_type") == "" {
				c.form.Set("grant_type", "client_credentials")
			}
			if c.form.Get("scope") == "" {
				c.form.Set("scope", scope)
			}
			code, out := post(t, v2, c.form)
			if code != c.code {
				t.Errorf("HTTP %d, want %d: %v", code, c.code, out)
			}
		})
	}
}

func TestManagedIdentityEndpoints(t *testing.T) {
	p, srv := newIdP(t, devidp.Options{ManagedIdentities: []devidp.ManagedIdentity{
		{ClientID: "mi-a", ObjectID: spID, ResourceID: "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a"},
		{ClientID: "mi-b"},
	}})
	imds := srv.URL + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + url.QueryEscape(devidp.DefaultAudience)
	if code, out := get(t, imds+"&client_id=mi-a"); code != 400 || !strings.Contains(out["error_description"].(string), "metadata header") {
		t.Errorf("no Metadata header: %d %v", code, out)
	}
	if code, out := get(t, imds, "Metadata", "true"); code != 400 || !strings.Contains(out["error_description"].(string), "Multiple") {
		t.Errorf("ambiguous identity: %d %v", code, out)
	}
	for _, sel := range []string{"&client_id=mi-a", "&object_id=" + spID, "&msi_res_id=" + url.QueryEscape(p.ManagedIdentities()[0].ResourceID)} {
		code, out := get(t, imds+sel, "Metadata", "true")
		if code != 200 || out["client_id"] != "mi-a" || out["refresh_token"] != "" {
			t.Fatalf("%s: %d %v", sel, code, out)
		}
		for _, k := range []string{"expires_in", "expires_on", "not_before"} {
			if _, ok := out[k].(string); !ok {
				t.Errorf("%s is not a string: %v", k, out[k])
			}
		}
		_, c := claims(t, out["access_token"].(string))
		if c["oid"] != spID || c["appid"] != "mi-a" || c["xms_mirid"] == nil || c["scp"] != nil {
			t.Errorf("claims %v", c)
		}
	}
	if code, _ := get(t, imds+"&client_id=nobody", "Metadata", "true"); code != 400 {
		t.Errorf("unknown identity: %d", code)
	}

	as := srv.URL + "/msi/token?api-version=2019-08-01&resource=" + url.QueryEscape(devidp.DefaultAudience+"/.default") + "&client_id=mi-b"
	if code, _ := get(t, as, "X-IDENTITY-HEADER", "wrong"); code != 401 {
		t.Errorf("wrong identity header: %d", code)
	}
	code, out := get(t, as, "X-IDENTITY-HEADER", p.IdentityHeader())
	if code != 200 || out["resource"] != devidp.DefaultAudience {
		t.Errorf("App Service: %d %v", code, out)
	}
}

func TestGraph(t *testing.T) {
	p, srv := newIdP(t, devidp.Options{Groups: map[string][]string{grp: {inner}, inner: {userID}}})
	graphTok := mustMint(t, p, devidp.TokenSpec{Type: devidp.TypeApp, Audience: devidp.GraphAudience})
	call := func(kind, oid, tok, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", srv.URL+"/v1.0/"+kind+"/"+oid+"/checkMemberGroups", strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return getJSON(t, req)
	}
	body := `{"groupIds":["` + grp + `","` + inner + `","88888888-8888-4888-8888-888888888888"]}`
	code, out := call("directoryObjects", userID, graphTok, body)
	if code != 200 || len(out["value"].([]any)) != 2 {
		t.Errorf("transitive membership: %d %v", code, out)
	}
	if code, out = call("users", spID, graphTok, body); code != 200 || len(out["value"].([]any)) != 0 {
		t.Errorf("non-member: %d %v", code, out)
	}
	p.AddGroupMember(grp, spID)
	if code, out = call("servicePrincipals", spID, graphTok, body); code != 200 || len(out["value"].([]any)) != 1 {
		t.Errorf("service principal member: %d %v", code, out)
	}
	if code, _ = call("directoryObjects", userID, "", body); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _ = call("directoryObjects", userID, mustMint(t, p, devidp.TokenSpec{Type: devidp.TypeApp}), body); code != 401 {
		t.Errorf("token for another audience: %d", code)
	}
	if code, _ = call("directoryObjects", userID, mustMint(t, p, devidp.TokenSpec{Type: devidp.TypeApp, Audience: devidp.GraphAudience, Fault: devidp.FaultUnknownKID}), body); code != 401 {
		t.Errorf("unknown kid: %d", code)
	}
	if code, _ = call("groups", userID, graphTok, body); code != 400 {
		t.Errorf("bad kind: %d", code)
	}
	if code, _ = call("users", userID, graphTok, `{"groupIds":[]}`); code != 400 {
		t.Errorf("no ids: %d", code)
	}
}

func TestListenAndServe(t *testing.T) {
	p, err := devidp.New(devidp.Options{Tenants: []string{tenant}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		GenerateKey: func() (*rsa.PrivateKey, error) { return keys()[0], nil }})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8400", "example.com:80", "nonsense"} {
		if err := p.ListenAndServe(addr); err == nil || (addr != "nonsense" && !strings.Contains(err.Error(), "loopback")) {
			t.Errorf("%s: %v", addr, err)
		}
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Serve(ln); err == nil {
		t.Error("Serve accepted a wildcard listener")
	}

	done := make(chan error, 1)
	go func() { done <- p.ListenAndServe("localhost:0") }()
	deadline := time.Now().Add(5 * time.Second)
	for p.BaseURL() == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.HasPrefix(p.BaseURL(), "http://127.0.0.1:") {
		t.Fatalf("base URL %q", p.BaseURL())
	}
	var resp *http.Response
	for time.Now().Before(deadline) {
		if resp, err = http.Get(p.BaseURL() + "/"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "development identity provider") || !strings.Contains(string(b), tenant) {
		t.Errorf("index: %s", b)
	}
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
}

func TestNewOptions(t *testing.T) {
	if _, err := devidp.New(devidp.Options{Tenants: []string{"contoso.com"}}); err == nil {
		t.Error("non-GUID tenant accepted")
	}
	if _, err := devidp.New(devidp.Options{Tenants: []string{tenant}, BaseURL: "ftp://x",
		GenerateKey: func() (*rsa.PrivateKey, error) { return keys()[0], nil }}); err == nil {
		t.Error("bad base URL accepted")
	}
	p, err := devidp.New(devidp.Options{GenerateKey: func() (*rsa.PrivateKey, error) { return keys()[0], nil }})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tenants()) != 1 || len(p.ManagedIdentities()) != 1 || p.IdentityHeader() == "" {
		t.Errorf("defaults: %v %v", p.Tenants(), p.ManagedIdentities())
	}
	if g := devidp.NewGUID(); len(g) != 36 || g[14] != '4' {
		t.Errorf("GUID %q", g)
	}
}
