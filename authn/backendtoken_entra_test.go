package authn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// btEntraAnswer answers like the Entra v2 token endpoint.
func btEntraAnswer(w http.ResponseWriter, token string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":%q}`, token)
}

func btFormKeys(f map[string][]string) []string {
	var keys []string
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func btCheckEntraRequest(t *testing.T, r btSeen, path, clientID string, extra ...string) {
	t.Helper()
	if r.Method != http.MethodPost || r.Path != path {
		t.Errorf("request %s %s, want POST %s", r.Method, r.Path, path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type %q", ct)
	}
	if len(r.Query) != 0 {
		t.Errorf("query %v: credentials belong in the body", r.Query)
	}
	want := append([]string{"client_id", "grant_type", "scope"}, extra...)
	sort.Strings(want)
	if got := btFormKeys(r.Form); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("form fields %v, want %v", got, want)
	}
	for k, v := range map[string]string{
		"grant_type": "client_credentials",
		"client_id":  clientID,
		"scope":      "https://ossrdbms-aad.database.windows.net/.default",
	} {
		if got := r.Form.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestBackendTokenWorkloadIdentityRequestShapeAndRotation(t *testing.T) {
	t.Parallel()
	clock := newBTClock()
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(file, []byte("eyJfederated.one.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		btEntraAnswer(w, fmt.Sprintf("wi-%d", n))
	})
	events := newBTEvents()
	p, err := NewWorkloadIdentityProvider(WorkloadIdentityOptions{
		ProviderOptions: ProviderOptions{Cache: CacheOptions{Now: clock.Now, Observer: events.observe, NoJitter: true}},
		TenantID:        "72f988bf-86f1-41af-91ab-2d7cd011db47",
		ClientID:        "app-client-id",
		TokenFile:       file,
		AuthorityHost:   srv.URL + "/", // AZURE_AUTHORITY_HOST form, with trailing slash
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Name() != ProviderWorkloadIdentity {
		t.Errorf("Name = %q", p.Name())
	}
	tok := btToken(t, p)
	if tok.Token != "wi-1" || !tok.ExpiresOn.Equal(clock.Now().Add(3599*time.Second)) {
		t.Fatalf("token %v", tok)
	}
	events.next(t)
	r := srv.requests()[0]
	btCheckEntraRequest(t, r, "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token", "app-client-id", "client_assertion", "client_assertion_type")
	if got := r.Form.Get("client_assertion_type"); got != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Errorf("client_assertion_type %q", got)
	}
	if got := r.Form.Get("client_assertion"); got != "eyJfederated.one.sig" {
		t.Errorf("client_assertion %q", got)
	}

	// Kubernetes rotates the file; the next refresh sends the new content.
	if err := os.WriteFile(file, []byte("eyJfederated.two.sig"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(31 * time.Minute)
	btToken(t, p)
	if ev := events.next(t); ev.Result != RefreshOK {
		t.Fatalf("event %+v", ev)
	}
	if got := srv.requests()[1].Form.Get("client_assertion"); got != "eyJfederated.two.sig" {
		t.Fatalf("after rotation client_assertion = %q", got)
	}
	if got := btToken(t, p); got.Token != "wi-2" {
		t.Fatalf("token %q", got.Token)
	}

	// The file vanishing makes the refresh fail with an error naming the
	// file; the current token stays in use.
	os.Remove(file)
	clock.Advance(31 * time.Minute)
	if got := btToken(t, p); got.Token != "wi-2" {
		t.Fatalf("token %q", got.Token)
	}
	ev := events.next(t)
	if ev.Result != RefreshFailedKeptToken || !strings.Contains(ev.Err.Error(), file) {
		t.Fatalf("event %+v", ev)
	}
}

func TestBackendTokenWorkloadIdentityChecks(t *testing.T) {
	t.Parallel()
	base := WorkloadIdentityOptions{TenantID: "t", ClientID: "c", TokenFile: "/x"}
	for name, mut := range map[string]func(*WorkloadIdentityOptions){
		"no file":          func(o *WorkloadIdentityOptions) { o.TokenFile = "" },
		"no client":        func(o *WorkloadIdentityOptions) { o.ClientID = "" },
		"no tenant":        func(o *WorkloadIdentityOptions) { o.TenantID = "" },
		"http authority":   func(o *WorkloadIdentityOptions) { o.AuthorityHost = "http://login.example.com/" },
		"bad tenant":       func(o *WorkloadIdentityOptions) { o.TenantID = "a/b" },
		"http endpoint":    func(o *WorkloadIdentityOptions) { o.TokenEndpoint = "http://example.com/token" },
		"not a URL at all": func(o *WorkloadIdentityOptions) { o.AuthorityHost = "::" },
	} {
		o := base
		mut(&o)
		if _, err := NewWorkloadIdentityProvider(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewWorkloadIdentityProvider(base); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
	// Empty file.
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	o := base
	o.TokenFile = empty
	o.TokenEndpoint = "http://127.0.0.1:1/token"
	p, _ := NewWorkloadIdentityProvider(o)
	if err := btTokenErr(t, p); !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("error %v", err)
	}
}

func TestBackendTokenClientSecretRequestShape(t *testing.T) {
	t.Parallel()
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		btEntraAnswer(w, "cs-token")
	})
	p, err := NewClientSecretProvider(ClientSecretOptions{
		ProviderOptions: ProviderOptions{Resource: "https://ossrdbms-aad.database.windows.net"},
		TenantID:        "contoso.onmicrosoft.com",
		ClientID:        "cid",
		ClientSecret:    "s3cr3t~value+/=",
		AuthorityHost:   srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != ProviderClientSecret {
		t.Errorf("Name = %q", p.Name())
	}
	if tok := btToken(t, p); tok.Token != "cs-token" {
		t.Fatalf("token %v", tok)
	}
	r := srv.requests()[0]
	btCheckEntraRequest(t, r, "/contoso.onmicrosoft.com/oauth2/v2.0/token", "cid", "client_secret")
	if got := r.Form.Get("client_secret"); got != "s3cr3t~value+/=" {
		t.Errorf("client_secret %q", got)
	}
	if _, err := NewClientSecretProvider(ClientSecretOptions{TenantID: "t", ClientID: "c"}); err == nil {
		t.Error("empty secret accepted")
	}
}

// Errors carry the endpoint's text but never the secret or the assertion,
// even when the endpoint echoes them.
func TestBackendTokenErrorsNeverCarrySecrets(t *testing.T) {
	t.Parallel()
	// An endpoint (or proxy) echoing the request body back, raw and decoded.
	echo := func(w http.ResponseWriter, seen btSeen) {
		btWriteError(w, http.StatusUnauthorized, "invalid_client",
			"AADSTS7000215: Invalid client secret provided. Request: "+seen.Body+" raw: "+seen.Form.Get("client_secret")+seen.Form.Get("client_assertion"))
	}
	file := filepath.Join(t.TempDir(), "fed")
	os.WriteFile(file, []byte("eyJfederated-secret-assertion.payload.signature"), 0o600)
	certFile := btWriteCertPEM(t, false)

	mk := map[string]func(url string) (*CachedProvider, string){
		ProviderClientSecret: func(u string) (*CachedProvider, string) {
			p, err := NewClientSecretProvider(ClientSecretOptions{TenantID: "t", ClientID: "c", ClientSecret: "Xy7~super+secret/value", AuthorityHost: u})
			if err != nil {
				t.Fatal(err)
			}
			return p, "Xy7~super+secret/value"
		},
		ProviderWorkloadIdentity: func(u string) (*CachedProvider, string) {
			p, err := NewWorkloadIdentityProvider(WorkloadIdentityOptions{TenantID: "t", ClientID: "c", TokenFile: file, AuthorityHost: u})
			if err != nil {
				t.Fatal(err)
			}
			return p, "eyJfederated-secret-assertion"
		},
		ProviderClientCertificate: func(u string) (*CachedProvider, string) {
			p, err := NewClientCertificateProvider(ClientCertificateOptions{TenantID: "t", ClientID: "c", CertificateFile: certFile, AuthorityHost: u})
			if err != nil {
				t.Fatal(err)
			}
			return p, "eyJ" // every JWT assertion starts so
		},
	}
	for name, f := range mk {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var srv *btServer
			srv = newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				echo(w, srv.requests()[n-1])
			})
			p, secret := f(srv.URL)
			err := btTokenErr(t, p)
			msg := fmt.Sprintf("%v %+v %#v", err, err, err)
			if strings.Contains(msg, secret) {
				t.Fatalf("error carries the secret: %s", msg)
			}
			sent := srv.requests()[0]
			for _, k := range []string{"client_secret", "client_assertion"} {
				if v := sent.Form.Get(k); v != "" && (strings.Contains(msg, v) || strings.Contains(msg, url.QueryEscape(v))) {
					t.Fatalf("error carries %s: %s", k, msg)
				}
			}
			if !strings.Contains(sent.Body, "client_secret=") && !strings.Contains(sent.Body, "client_assertion=") {
				t.Fatalf("no credential sent: %s", sent.Body)
			}
			if !strings.Contains(msg, "HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided.") || !strings.Contains(msg, "[REDACTED]") {
				t.Fatalf("error lacks the endpoint's text: %s", msg)
			}
		})
	}
}

// ---- client certificate ----

var btTestKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func btTestCert(t *testing.T, key *rsa.PrivateKey, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// btWriteCertPEM writes key + certificate (+ an unrelated CA certificate
// before the leaf) to a PEM file and returns its path.
func btWriteCertPEM(t *testing.T, pkcs1 bool) string {
	t.Helper()
	key := btTestKey()
	leaf := btTestCert(t, key, "pgwarden")
	var buf strings.Builder
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: btTestCert(t, other, "some CA").Raw})
	if pkcs1 {
		pem.Encode(&buf, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	} else {
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	path := filepath.Join(t.TempDir(), "client.pem")
	if err := os.WriteFile(path, []byte(buf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var btUUIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestBackendTokenClientCertificateAssertion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		alg       string
		sendChain bool
		pkcs1     bool
	}{
		{"RS256 x5t (default)", "", false, false},
		{"RS256 PKCS#1 key, x5c", AssertionRS256, true, true},
		{"PS256 x5t#S256", AssertionPS256, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newBTClock()
			clock.Advance(time.Until(clock.Now()).Truncate(time.Second)) // near real time: jwt checks exp/nbf
			certFile := btWriteCertPEM(t, tc.pkcs1)
			srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				btEntraAnswer(w, "cert-token")
			})
			p, err := NewClientCertificateProvider(ClientCertificateOptions{
				ProviderOptions:      ProviderOptions{Cache: CacheOptions{Now: clock.Now}},
				TenantID:             "tenant-9",
				ClientID:             "cert-client",
				CertificateFile:      certFile,
				Algorithm:            tc.alg,
				SendCertificateChain: tc.sendChain,
				AuthorityHost:        srv.URL,
			})
			if err != nil {
				t.Fatal(err)
			}
			if p.Name() != ProviderClientCertificate {
				t.Errorf("Name = %q", p.Name())
			}
			if tok := btToken(t, p); tok.Token != "cert-token" {
				t.Fatalf("token %v", tok)
			}
			p.Invalidate("cert-token")
			btToken(t, p) // a second request: a fresh assertion

			endpoint := srv.URL + "/tenant-9/oauth2/v2.0/token"
			leaf := btTestCert(t, btTestKey(), "x") // only for its public key
			reqs := srv.requests()
			var jtis []string
			for _, r := range reqs {
				btCheckEntraRequest(t, r, "/tenant-9/oauth2/v2.0/token", "cert-client", "client_assertion", "client_assertion_type")
				if got := r.Form.Get("client_assertion_type"); got != ClientAssertionType {
					t.Errorf("client_assertion_type %q", got)
				}
				wantAlg := "RS256"
				if tc.alg == AssertionPS256 {
					wantAlg = "PS256"
				}
				claims := jwt.MapClaims{}
				tok, err := jwt.ParseWithClaims(r.Form.Get("client_assertion"), claims, func(tok *jwt.Token) (any, error) {
					return leaf.PublicKey, nil
				}, jwt.WithValidMethods([]string{wantAlg}), jwt.WithAudience(endpoint), jwt.WithIssuer("cert-client"),
					jwt.WithSubject("cert-client"), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
					jwt.WithTimeFunc(clock.Now))
				if err != nil {
					t.Fatalf("assertion does not verify with the certificate's public key: %v", err)
				}
				if tok.Header["typ"] != "JWT" || tok.Header["alg"] != wantAlg {
					t.Errorf("header %v", tok.Header)
				}
				pemCerts, _, err := btParseCertificatePEM(btMust(os.ReadFile(certFile)))
				if err != nil {
					t.Fatal(err)
				}
				der := pemCerts[0].Raw
				if wantAlg == "RS256" {
					sum := sha1.Sum(der)
					if tok.Header["x5t"] != base64.RawURLEncoding.EncodeToString(sum[:]) || tok.Header["x5t#S256"] != nil {
						t.Errorf("x5t header %v", tok.Header)
					}
				} else {
					sum := sha256.Sum256(der)
					if tok.Header["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sum[:]) || tok.Header["x5t"] != nil {
						t.Errorf("x5t#S256 header %v", tok.Header)
					}
				}
				if x5c, ok := tok.Header["x5c"].([]any); tc.sendChain {
					if !ok || len(x5c) != 2 || x5c[0] != base64.StdEncoding.EncodeToString(der) {
						t.Errorf("x5c %v", tok.Header["x5c"])
					}
				} else if tok.Header["x5c"] != nil {
					t.Errorf("x5c sent: %v", tok.Header["x5c"])
				}
				now := clock.Now().Unix()
				if claims["nbf"] != float64(now) || claims["iat"] != float64(now) || claims["exp"] != float64(now+600) {
					t.Errorf("times nbf=%v iat=%v exp=%v, want %d, %d, %d", claims["nbf"], claims["iat"], claims["exp"], now, now, now+600)
				}
				jti, _ := claims["jti"].(string)
				if !btUUIDRE.MatchString(jti) {
					t.Errorf("jti %q is not a UUID", jti)
				}
				jtis = append(jtis, jti)
			}
			if len(jtis) != 2 || jtis[0] == jtis[1] {
				t.Errorf("jti values %v: want two different", jtis)
			}
		})
	}
}

func btMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestBackendTokenClientCertificateProgrammatic(t *testing.T) {
	t.Parallel()
	key := btTestKey()
	leaf := btTestCert(t, key, "leaf")
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) { btEntraAnswer(w, "ok") })
	p, err := NewClientCertificateProvider(ClientCertificateOptions{TenantID: "t", ClientID: "c",
		Certificates: []*x509.Certificate{leaf}, PrivateKey: key, TokenEndpoint: srv.URL + "/custom/token"})
	if err != nil {
		t.Fatal(err)
	}
	btToken(t, p)
	r := srv.requests()[0]
	if r.Path != "/custom/token" {
		t.Fatalf("path %q", r.Path)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(r.Form.Get("client_assertion"), claims, func(*jwt.Token) (any, error) { return &key.PublicKey, nil }); err != nil {
		t.Fatal(err)
	}
	if claims["aud"] != srv.URL+"/custom/token" {
		t.Errorf("aud %v, want the token endpoint", claims["aud"])
	}
}

func TestBackendTokenClientCertificatePEMErrors(t *testing.T) {
	t.Parallel()
	key := btTestKey()
	leaf := btTestCert(t, key, "leaf")
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ec)
	keyPEM := func(k *rsa.PrivateKey) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))
	tests := map[string]struct{ pem, want string }{
		"no key":          {certPEM, "no RSA private key"},
		"no certificate":  {keyPEM(key), "no certificate"},
		"wrong key":       {keyPEM(other) + certPEM, "no certificate matches"},
		"two keys":        {keyPEM(key) + keyPEM(key) + certPEM, "more than one private key"},
		"EC key":          {string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})) + certPEM, "RSA key is required"},
		"EC PKCS#8 key":   {string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecPKCS8})) + certPEM, "RSA key is required"},
		"encrypted PKCS8": {string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})) + certPEM, "encrypted"},
		"encrypted PEM":   {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte{1}})) + certPEM, "encrypted"},
		"garbage key":     {string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})) + certPEM, "cannot be parsed"},
		"empty":           {"", "no RSA private key"},
	}
	for name, tc := range tests {
		path := filepath.Join(t.TempDir(), "c.pem")
		os.WriteFile(path, []byte(tc.pem), 0o600)
		_, err := NewClientCertificateProvider(ClientCertificateOptions{TenantID: "t", ClientID: "c", CertificateFile: path})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
	if _, err := NewClientCertificateProvider(ClientCertificateOptions{TenantID: "t", ClientID: "c", CertificateFile: "/nonexistent/c.pem"}); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := NewClientCertificateProvider(ClientCertificateOptions{TenantID: "t", ClientID: "c", Certificates: []*x509.Certificate{leaf}, PrivateKey: key, Algorithm: "HS256"}); err == nil {
		t.Error("HS256 accepted")
	}
	if _, err := NewClientCertificateProvider(ClientCertificateOptions{TenantID: "t", ClientID: "c", Certificates: []*x509.Certificate{leaf}, PrivateKey: key, CertificateFile: "x"}); err == nil {
		t.Error("both file and certificates accepted")
	}
}

func TestBackendTokenOptionsNeverPrintSecrets(t *testing.T) {
	t.Parallel()
	key := btTestKey()
	for _, v := range []any{
		ClientSecretOptions{TenantID: "t", ClientID: "c", ClientSecret: "Sup3rSecretValue"},
		&ClientSecretOptions{ClientSecret: "Sup3rSecretValue"},
		AppServiceOptions{Endpoint: "http://x", IdentityHeader: "Sup3rSecretValue"},
		ClientCertificateOptions{TenantID: "t", PrivateKey: key},
	} {
		for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
			s := fmt.Sprintf(f, v)
			if strings.Contains(s, "Sup3rSecretValue") || strings.Contains(s, key.D.String()[:20]) || strings.Contains(s, key.Primes[0].String()[:20]) {
				t.Fatalf("%s of %T leaks: %s", f, v, s)
			}
			if !strings.Contains(s, "<redacted>") {
				t.Errorf("%s of %T: %s", f, v, s)
			}
		}
	}
}
