package authn

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" // #nosec: x5t is by definition a SHA-1 thumbprint (an identifier, not a signature)
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultAuthorityHost is the Entra authority of the public cloud
// (AZURE_AUTHORITY_HOST's default).
const DefaultAuthorityHost = "https://login.microsoftonline.com/"

// ClientAssertionType is the client_assertion_type of JWT client assertions
// (federated tokens and certificate assertions).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Client assertion signing algorithms for [ClientCertificateOptions].
const (
	// AssertionRS256 signs with RSASSA-PKCS1-v1_5 and identifies the
	// certificate by "x5t" (base64url SHA-1 of the DER certificate).
	AssertionRS256 = "RS256"
	// AssertionPS256 signs with RSASSA-PSS and identifies the certificate by
	// "x5t#S256" (base64url SHA-256 of the DER certificate): Microsoft's
	// current guidance.
	AssertionPS256 = "PS256"
)

// btAssertionLifetime: "keep it short - 5-10 minutes after nbf at most"
// (certificate-credentials.md); MSAL uses 10 minutes.
const btAssertionLifetime = 10 * time.Minute

// WorkloadIdentityOptions configures [NewWorkloadIdentityProvider]
// (workload identity federation, e.g. AKS).
type WorkloadIdentityOptions struct {
	ProviderOptions
	// TenantID is the Entra tenant (AZURE_TENANT_ID), a GUID or domain name.
	TenantID string
	// ClientID is the application (client) ID (AZURE_CLIENT_ID).
	ClientID string
	// TokenFile is the federated token file (AZURE_FEDERATED_TOKEN_FILE). It
	// is read again for every request, as the platform rotates it.
	TokenFile string
	// AuthorityHost is the Entra authority (AZURE_AUTHORITY_HOST; default
	// [DefaultAuthorityHost]). It must be https, except on loopback.
	AuthorityHost string
	// TokenEndpoint, if set, replaces {AuthorityHost}{TenantID}/oauth2/v2.0/token.
	TokenEndpoint string
}

// ClientSecretOptions configures [NewClientSecretProvider].
type ClientSecretOptions struct {
	ProviderOptions
	// TenantID is the Entra tenant, a GUID or domain name.
	TenantID string
	// ClientID is the application (client) ID.
	ClientID string
	// ClientSecret is the application's client secret. It never appears in
	// errors.
	ClientSecret string
	// AuthorityHost is the Entra authority (default [DefaultAuthorityHost]).
	// It must be https, except on loopback.
	AuthorityHost string
	// TokenEndpoint, if set, replaces {AuthorityHost}{TenantID}/oauth2/v2.0/token.
	TokenEndpoint string
}

// ClientCertificateOptions configures [NewClientCertificateProvider]. Give
// either CertificateFile, or Certificates and PrivateKey.
type ClientCertificateOptions struct {
	ProviderOptions
	// TenantID is the Entra tenant, a GUID or domain name.
	TenantID string
	// ClientID is the application (client) ID.
	ClientID string
	// CertificateFile is a PEM file holding the RSA private key (PKCS #1 or
	// PKCS #8, unencrypted) and the certificate, optionally followed by its
	// chain. It is read at construction and again for every request, so a
	// renewed certificate is picked up.
	CertificateFile string
	// Certificates is the certificate (first, or the one matching PrivateKey)
	// and its chain, when CertificateFile is not used.
	Certificates []*x509.Certificate
	// PrivateKey is the certificate's RSA key, when CertificateFile is not used.
	PrivateKey *rsa.PrivateKey
	// Algorithm is [AssertionRS256] (default) or [AssertionPS256].
	Algorithm string
	// SendCertificateChain adds the "x5c" header (the certificate chain),
	// needed for subject name / issuer authentication.
	SendCertificateChain bool
	// AuthorityHost is the Entra authority (default [DefaultAuthorityHost]).
	// It must be https, except on loopback.
	AuthorityHost string
	// TokenEndpoint, if set, replaces {AuthorityHost}{TenantID}/oauth2/v2.0/token.
	// It is also the assertion's aud.
	TokenEndpoint string
}

// NewWorkloadIdentityProvider returns a cached provider that exchanges the
// federated token in TokenFile for an access token: POST
// {authority}{tenant}/oauth2/v2.0/token with grant_type=client_credentials,
// client_id, scope={resource}/.default,
// client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
// and client_assertion={file content}.
func NewWorkloadIdentityProvider(opts WorkloadIdentityOptions) (*CachedProvider, error) {
	fetch, err := newWorkloadIdentityFetch(opts)
	if err != nil {
		return nil, err
	}
	return NewCachedProvider(ProviderWorkloadIdentity, fetch, opts.Cache), nil
}

func newWorkloadIdentityFetch(opts WorkloadIdentityOptions) (FetchFunc, error) {
	if opts.TokenFile == "" {
		return nil, errors.New("authn: workload identity: no federated token file (AZURE_FEDERATED_TOKEN_FILE)")
	}
	file := opts.TokenFile
	return newEntraFetch(ProviderWorkloadIdentity, opts.ProviderOptions, opts.TenantID, opts.ClientID,
		opts.AuthorityHost, opts.TokenEndpoint,
		func(string, time.Time) (url.Values, []string, error) {
			assertion, err := btReadFederatedToken(file)
			if err != nil {
				return nil, nil, err
			}
			return url.Values{
				"client_assertion_type": {ClientAssertionType},
				"client_assertion":      {assertion},
			}, []string{assertion}, nil
		})
}

// NewClientSecretProvider returns a cached provider that obtains tokens with
// the client credentials grant and a client secret: POST
// {authority}{tenant}/oauth2/v2.0/token with grant_type=client_credentials,
// client_id, client_secret and scope={resource}/.default.
func NewClientSecretProvider(opts ClientSecretOptions) (*CachedProvider, error) {
	fetch, err := newClientSecretFetch(opts)
	if err != nil {
		return nil, err
	}
	return NewCachedProvider(ProviderClientSecret, fetch, opts.Cache), nil
}

func newClientSecretFetch(opts ClientSecretOptions) (FetchFunc, error) {
	if opts.ClientSecret == "" {
		return nil, errors.New("authn: client secret provider: no client secret")
	}
	secret := opts.ClientSecret
	return newEntraFetch(ProviderClientSecret, opts.ProviderOptions, opts.TenantID, opts.ClientID,
		opts.AuthorityHost, opts.TokenEndpoint,
		func(string, time.Time) (url.Values, []string, error) {
			return url.Values{"client_secret": {secret}}, []string{secret}, nil
		})
}

// NewClientCertificateProvider returns a cached provider that obtains tokens
// with the client credentials grant and a certificate: POST
// {authority}{tenant}/oauth2/v2.0/token with grant_type=client_credentials,
// client_id, scope={resource}/.default, client_assertion_type and
// client_assertion, a JWT signed with the certificate's key: header alg
// (RS256 or PS256), typ JWT, x5t (RS256) or x5t#S256 (PS256), optional x5c;
// claims aud = the token endpoint, iss = sub = client ID, jti = a random
// UUID, iat = nbf = now, exp = now + 10 min. A new assertion is made for
// every request.
func NewClientCertificateProvider(opts ClientCertificateOptions) (*CachedProvider, error) {
	fetch, err := newClientCertificateFetch(opts)
	if err != nil {
		return nil, err
	}
	return NewCachedProvider(ProviderClientCertificate, fetch, opts.Cache), nil
}

func newClientCertificateFetch(opts ClientCertificateOptions) (FetchFunc, error) {
	var method jwt.SigningMethod
	switch opts.Algorithm {
	case "", AssertionRS256:
		method = jwt.SigningMethodRS256
	case AssertionPS256:
		method = jwt.SigningMethodPS256
	default:
		return nil, fmt.Errorf("authn: client certificate provider: unsupported assertion algorithm %q (RS256 or PS256)", opts.Algorithm)
	}
	load := func() ([]*x509.Certificate, *rsa.PrivateKey, error) {
		return btOrderChain(opts.Certificates, opts.PrivateKey)
	}
	switch {
	case opts.CertificateFile != "" && (opts.Certificates != nil || opts.PrivateKey != nil):
		return nil, errors.New("authn: client certificate provider: give either CertificateFile or Certificates and PrivateKey, not both")
	case opts.CertificateFile != "":
		file := opts.CertificateFile
		load = func() ([]*x509.Certificate, *rsa.PrivateKey, error) {
			data, err := os.ReadFile(file)
			if err != nil {
				return nil, nil, fmt.Errorf("reading client certificate: %w", err)
			}
			return btParseCertificatePEM(data)
		}
	}
	if _, _, err := load(); err != nil {
		return nil, fmt.Errorf("authn: client certificate provider: %w", err)
	}
	clientID := opts.ClientID
	sendChain := opts.SendCertificateChain
	return newEntraFetch(ProviderClientCertificate, opts.ProviderOptions, opts.TenantID, opts.ClientID,
		opts.AuthorityHost, opts.TokenEndpoint,
		func(endpoint string, now time.Time) (url.Values, []string, error) {
			chain, key, err := load()
			if err != nil {
				return nil, nil, err
			}
			assertion, err := btSignAssertion(method, chain, key, sendChain, endpoint, clientID, now)
			if err != nil {
				return nil, nil, err
			}
			return url.Values{
				"client_assertion_type": {ClientAssertionType},
				"client_assertion":      {assertion},
			}, []string{assertion}, nil
		})
}

var btTenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

// btTokenEndpoint returns {authority}{tenant}/oauth2/v2.0/token, or the
// override, checked to be https (or http on loopback).
func btTokenEndpoint(authority, tenant, override string) (string, error) {
	if override != "" {
		u, err := btParseEndpoint("token endpoint", override, true)
		if err != nil {
			return "", err
		}
		return u.String(), nil
	}
	if !btTenantRE.MatchString(tenant) {
		if tenant == "" {
			return "", errors.New("authn: no tenant ID (AZURE_TENANT_ID)")
		}
		return "", fmt.Errorf("authn: tenant ID %q is not a tenant GUID or domain name", tenant)
	}
	if authority == "" {
		authority = DefaultAuthorityHost
	}
	u, err := btParseEndpoint("authority host", authority, true)
	if err != nil {
		return "", err
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("authn: authority host %q must not have a query or fragment", authority)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath = ""
	u.Path += tenant + "/oauth2/v2.0/token"
	return u.String(), nil
}

// btScope turns a resource into its v2 ".default" scope. The resource is
// used as given ("https://x/" gives "https://x//.default", as Entra expects
// for App ID URIs with a trailing slash).
func btScope(resource string) string {
	if strings.HasSuffix(resource, "/.default") {
		return resource
	}
	return resource + "/.default"
}

// newEntraFetch builds the client credentials request to the Entra token
// endpoint; cred adds the credential fields and returns the secrets they hold.
func newEntraFetch(provider string, opts ProviderOptions, tenant, clientID, authority, override string,
	cred func(endpoint string, now time.Time) (url.Values, []string, error)) (FetchFunc, error) {
	if clientID == "" {
		return nil, fmt.Errorf("authn: %s: no client ID (AZURE_CLIENT_ID)", provider)
	}
	endpoint, err := btTokenEndpoint(authority, tenant, override)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, provider)
	}
	scope := btScope(opts.resource())
	r := &btRequest{
		provider: provider,
		client:   opts.httpClient(false),
		policy:   opts.Retry,
		now:      opts.now,
		build: func(ctx context.Context) (*http.Request, []string, error) {
			form, secrets, err := cred(endpoint, opts.now())
			if err != nil {
				return nil, nil, err
			}
			form.Set("grant_type", "client_credentials")
			form.Set("client_id", clientID)
			form.Set("scope", scope)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
			if err != nil {
				return nil, nil, err
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Accept", "application/json")
			return req, secrets, nil
		},
	}
	return r.do, nil
}

const btMaxFederatedToken = 64 << 10

// btReadFederatedToken reads the federated token file; its content never
// appears in an error.
func btReadFederatedToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading federated token file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, btMaxFederatedToken+1))
	if err != nil {
		return "", fmt.Errorf("reading federated token file %s: %w", path, err)
	}
	if len(data) > btMaxFederatedToken {
		return "", fmt.Errorf("federated token file %s is larger than 64 KiB", path)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("federated token file %s is empty", path)
	}
	return tok, nil
}

// btParseCertificatePEM reads a PEM bundle holding an RSA private key (PKCS #1
// "RSA PRIVATE KEY" or PKCS #8 "PRIVATE KEY", unencrypted) and one or more
// certificates. It returns the certificate matching the key first, then the
// others in file order, and the key.
func btParseCertificatePEM(data []byte) ([]*x509.Certificate, *rsa.PrivateKey, error) {
	var certs []*x509.Certificate
	var key *rsa.PrivateKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parsing certificate: %w", err)
			}
			certs = append(certs, c)
		case "RSA PRIVATE KEY", "PRIVATE KEY":
			if key != nil {
				return nil, nil, errors.New("more than one private key in the PEM data")
			}
			if _, encrypted := block.Headers["DEK-Info"]; encrypted {
				return nil, nil, errors.New("encrypted private keys are not supported")
			}
			var k any
			var err error
			if block.Type == "RSA PRIVATE KEY" {
				k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
			} else {
				k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
			}
			if err != nil {
				return nil, nil, errors.New("the private key cannot be parsed")
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, nil, fmt.Errorf("the private key is a %T; an RSA key is required", k)
			}
			key = rk
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, errors.New("encrypted private keys are not supported")
		case "EC PRIVATE KEY":
			return nil, nil, errors.New("the private key is an EC key; an RSA key is required")
		}
	}
	return btOrderChain(certs, key)
}

// btOrderChain checks the key and certificates and puts the certificate
// matching the key first.
func btOrderChain(certs []*x509.Certificate, key *rsa.PrivateKey) ([]*x509.Certificate, *rsa.PrivateKey, error) {
	if key == nil {
		return nil, nil, errors.New("no RSA private key")
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no certificate")
	}
	for i, c := range certs {
		if c == nil {
			continue
		}
		if pub, ok := c.PublicKey.(*rsa.PublicKey); ok && pub.Equal(&key.PublicKey) {
			out := make([]*x509.Certificate, 0, len(certs))
			out = append(out, c)
			for j, o := range certs {
				if j != i && o != nil {
					out = append(out, o)
				}
			}
			return out, key, nil
		}
	}
	return nil, nil, errors.New("no certificate matches the private key")
}

// btSignAssertion makes a client assertion JWT (certificate-credentials.md).
func btSignAssertion(method jwt.SigningMethod, chain []*x509.Certificate, key *rsa.PrivateKey, sendChain bool,
	endpoint, clientID string, now time.Time) (string, error) {
	jti, err := btUUID()
	if err != nil {
		return "", err
	}
	tok := jwt.NewWithClaims(method, jwt.MapClaims{
		"aud": endpoint,
		"iss": clientID,
		"sub": clientID,
		"jti": jti,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(btAssertionLifetime).Unix(),
	})
	leaf := chain[0]
	if method == jwt.SigningMethodPS256 {
		sum := sha256.Sum256(leaf.Raw)
		tok.Header["x5t#S256"] = base64.RawURLEncoding.EncodeToString(sum[:])
	} else {
		sum := sha1.Sum(leaf.Raw) // #nosec: thumbprint identifier
		tok.Header["x5t"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if sendChain {
		x5c := make([]string, len(chain))
		for i, c := range chain {
			x5c[i] = base64.StdEncoding.EncodeToString(c.Raw) // RFC 7515: x5c is standard base64
		}
		tok.Header["x5c"] = x5c
	}
	s, err := tok.SignedString(key)
	if err != nil {
		return "", errors.New("signing the client assertion failed")
	}
	return s, nil
}

// btUUID returns a random (version 4) UUID.
func btUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
