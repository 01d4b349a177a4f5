// Package devidp is a development identity provider that imitates the parts
// of Microsoft Entra ID pgwarden talks to: OpenID discovery (v1 and v2) and
// key sets for one or more tenants, a token endpoint (client credentials), an
// IMDS-compatible managed-identity endpoint, an App Service identity
// endpoint, Microsoft Graph checkMemberGroups, and a "mint" endpoint that
// issues any token a test needs, including deliberately broken ones.
//
// It is a development tool: it serves over plain HTTP on loopback only, keeps
// its keys in memory, and issues whatever it is asked for. Tests serve
// [IdP.Handler] with httptest.NewServer and call [IdP.SetBaseURL];
// `pgwarden dev-idp` uses [IdP.ListenAndServe].
//
// # URLs
//
// With base the server's URL and tid a tenant ID:
//
//	GET  {base}/{tid}/.well-known/openid-configuration       v1 discovery
//	GET  {base}/{tid}/v2.0/.well-known/openid-configuration  v2 discovery
//	GET  {base}/{tid}/discovery/keys                         v1 key set
//	GET  {base}/{tid}/discovery/v2.0/keys                    v2 key set (keys carry "issuer")
//	POST {base}/{tid}/oauth2/token                           v1 token endpoint (resource=)
//	POST {base}/{tid}/oauth2/v2.0/token                      v2 token endpoint (scope=…/.default)
//	GET  {base}/metadata/identity/oauth2/token               IMDS (header Metadata: true)
//	GET  {base}/msi/token                                    App Service (header X-IDENTITY-HEADER)
//	POST {base}/v1.0/directoryObjects/{oid}/checkMemberGroups Graph (also /users/ and /servicePrincipals/)
//	POST {base}/dev/token                                    mint: JSON TokenSpec in, {"access_token":…} out
//
// [IdP.SetServerFaults] makes it misbehave (down, slow, garbage or huge documents,
// Graph down) for reliability tests, and [IdP.Rotate] and [IdP.Withdraw]
// change its signing keys.
//
// so base is both the authority (EntraConfig.Authority) and the Graph
// endpoint (EntraConfig.GraphEndpoint) of a validator.
//
// # Issuers
//
// Entra's issuers are https://sts.windows.net/{tid}/ (v1) and
// https://login.microsoftonline.com/{tid}/v2.0 (v2). By default the dev IdP
// publishes {base}/{tid}/ and {base}/{tid}/v2.0 instead, so its tokens can
// never be mistaken for real ones; with Options.EntraIssuers it publishes
// Entra's exact strings. Either way the discovery documents name the issuers
// tokens carry, and a validator that reads its issuers from discovery (as
// pgwarden's does) accepts them.
package devidp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Well-known values.
const (
	// DefaultAudience is the Azure Database for PostgreSQL resource.
	DefaultAudience = "https://ossrdbms-aad.database.windows.net"
	// GraphAudience is Microsoft Graph's resource; Graph calls must carry a
	// token for it.
	GraphAudience = "https://graph.microsoft.com"
	// AzureCLIAppID is the Azure CLI's application ID, the appid of user
	// tokens minted without one.
	AzureCLIAppID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
	// DefaultTokenLifetime is the lifetime of tokens minted without one.
	DefaultTokenLifetime = time.Hour
)

// Client is an application registration for the token endpoint's
// client_credentials grant.
type Client struct {
	// ClientID is the application (client) ID. Required.
	ClientID string
	// Tenant is the tenant the client lives in; default the first tenant.
	Tenant string
	// OID is the object ID of its service principal (the oid of its tokens);
	// default a fresh GUID.
	OID string
	// Secret, if set, is accepted as client_secret.
	Secret string
	// AssertionKeys, if set, verify a client_assertion (RS256 or PS256
	// JWT with iss = sub = ClientID), as for certificate credentials.
	AssertionKeys []*rsa.PublicKey
	// AcceptAnyAssertion accepts a client_assertion without checking its
	// signature (workload identity federation: the dev IdP cannot verify a
	// Kubernetes service-account token).
	AcceptAnyAssertion bool
}

// ManagedIdentity is an identity the IMDS and App Service endpoints issue
// tokens for.
type ManagedIdentity struct {
	// ClientID is the identity's client ID (appid of its tokens); default a
	// fresh GUID.
	ClientID string
	// ObjectID is its service principal's object ID (oid); default a fresh
	// GUID.
	ObjectID string
	// ResourceID is its ARM resource ID (msi_res_id / mi_res_id, and the
	// xms_mirid claim); optional.
	ResourceID string
	// Tenant is its tenant; default the first tenant.
	Tenant string
}

// Options configure an [IdP]. The zero value gives one fresh tenant, one
// system-assigned managed identity and no clients.
type Options struct {
	// Tenants are the tenant IDs (GUIDs). Default: one fresh GUID.
	Tenants []string
	// Audience is the default aud of minted tokens. Default
	// [DefaultAudience].
	Audience string
	// BaseURL is the URL the IdP is reached at (issuers and discovery
	// documents depend on it). Usually set later with [IdP.SetBaseURL] or
	// by [IdP.ListenAndServe].
	BaseURL string
	// EntraIssuers publishes Entra's exact issuer strings instead of
	// base-derived ones (see the package documentation).
	EntraIssuers bool
	// Clients are the applications the token endpoint knows.
	Clients []Client
	// ManagedIdentities are the identities of the IMDS and App Service
	// endpoints. Default: one system-assigned identity with fresh IDs.
	ManagedIdentities []ManagedIdentity
	// Groups maps a group object ID to its members' object IDs (users,
	// service principals, or groups: membership is transitive), for Graph
	// checkMemberGroups.
	Groups map[string][]string
	// IdentityHeader is the X-IDENTITY-HEADER value the App Service endpoint
	// requires. Default: a fresh random value (see [IdP.IdentityHeader]).
	IdentityHeader string
	// TokenLifetime is the lifetime of tokens issued by the endpoints and of
	// minted tokens without one. Default [DefaultTokenLifetime].
	TokenLifetime time.Duration
	// GenerateKey makes signing keys; default RSA-2048 from crypto/rand.
	// Tests may hand out precomputed keys to save time.
	GenerateKey func() (*rsa.PrivateKey, error)
	// Logger receives request logs (never tokens); default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// signingKey is one RSA key and its self-signed certificate.
type signingKey struct {
	kid     string
	tenant  string
	priv    *rsa.PrivateKey
	certDER []byte
}

// IdP is a development identity provider. Its methods are safe for
// concurrent use.
type IdP struct {
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	header string

	mu        sync.Mutex
	base      string
	tenants   []string
	published map[string][]*signingKey // tenant -> published keys, oldest first; the last one signs
	keys      map[string]*signingKey   // kid -> key, published or withdrawn
	rogue     *signingKey              // never published (unknown kid / wrong key faults)
	clients   map[string]Client
	mis       []ManagedIdentity
	groups    map[string]map[string]bool
	srv       *http.Server
	faults    ServerFaults
}

var guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// NewGUID returns a random (version 4) GUID in Entra's lower-case form.
func NewGUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// New creates an IdP with one signing key per tenant.
func New(opts Options) (*IdP, error) {
	if opts.Audience == "" {
		opts.Audience = DefaultAudience
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = DefaultTokenLifetime
	}
	if opts.GenerateKey == nil {
		opts.GenerateKey = func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &IdP{
		opts: opts, log: opts.Logger, now: opts.Now, header: opts.IdentityHeader,
		published: map[string][]*signingKey{}, keys: map[string]*signingKey{},
		clients: map[string]Client{}, groups: map[string]map[string]bool{},
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.header == "" {
		p.header = NewGUID()
	}
	if opts.BaseURL != "" {
		if err := p.SetBaseURL(opts.BaseURL); err != nil {
			return nil, err
		}
	}
	tenants := opts.Tenants
	if len(tenants) == 0 {
		tenants = []string{NewGUID()}
	}
	for _, t := range tenants {
		t = strings.ToLower(t)
		if !guidRE.MatchString(t) {
			return nil, fmt.Errorf("devidp: tenant %q is not a GUID", t)
		}
		if slices.Contains(p.tenants, t) {
			continue
		}
		p.tenants = append(p.tenants, t)
		k, err := p.newKey(t)
		if err != nil {
			return nil, err
		}
		p.published[t] = []*signingKey{k}
		p.keys[k.kid] = k
	}
	for _, c := range opts.Clients {
		if c.ClientID == "" {
			return nil, errors.New("devidp: client without ClientID")
		}
		if c.Tenant == "" {
			c.Tenant = p.tenants[0]
		}
		if c.OID == "" {
			c.OID = NewGUID()
		}
		p.clients[c.ClientID] = c
	}
	p.mis = slices.Clone(opts.ManagedIdentities)
	if len(p.mis) == 0 {
		p.mis = []ManagedIdentity{{}}
	}
	for i := range p.mis {
		m := &p.mis[i]
		if m.ClientID == "" {
			m.ClientID = NewGUID()
		}
		if m.ObjectID == "" {
			m.ObjectID = NewGUID()
		}
		if m.Tenant == "" {
			m.Tenant = p.tenants[0]
		}
	}
	for g, members := range opts.Groups {
		for _, m := range members {
			p.addMemberLocked(g, m)
		}
	}
	return p, nil
}

// newKey generates a key with a self-signed certificate; its kid is the
// certificate's SHA-1 thumbprint (x5t), as in Entra.
func (p *IdP) newKey(tenant string) (*signingKey, error) {
	priv, err := p.opts.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("devidp: generating a key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := p.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "pgwarden dev-idp " + tenant},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, fmt.Errorf("devidp: self-signing a certificate: %w", err)
	}
	sum := sha1.Sum(der)
	return &signingKey{kid: base64.RawURLEncoding.EncodeToString(sum[:]), tenant: tenant, priv: priv, certDER: der}, nil
}

// SetBaseURL sets the URL the IdP is reached at, e.g. an httptest server's
// URL. It must be http or https without a path, query or fragment.
func (p *IdP) SetBaseURL(base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("devidp: base URL %q: want http(s)://host[:port]", base)
	}
	p.mu.Lock()
	p.base = strings.TrimRight(base, "/")
	p.mu.Unlock()
	return nil
}

// BaseURL returns the URL set by SetBaseURL or ListenAndServe: the
// authority and Graph endpoint to configure in a validator.
func (p *IdP) BaseURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.base
}

// Tenants returns the tenant IDs.
func (p *IdP) Tenants() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.tenants)
}

// Issuer returns the issuer of tokens of version ("1.0" or "2.0") for
// tenant, as the discovery documents publish it.
func (p *IdP) Issuer(tenant, version string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issuerLocked(tenant, version)
}

func (p *IdP) issuerLocked(tenant, version string) string {
	switch {
	case p.opts.EntraIssuers && version == "2.0":
		return "https://login.microsoftonline.com/" + tenant + "/v2.0"
	case p.opts.EntraIssuers:
		return "https://sts.windows.net/" + tenant + "/"
	case version == "2.0":
		return p.base + "/" + tenant + "/v2.0"
	}
	return p.base + "/" + tenant + "/"
}

// IdentityHeader returns the secret the App Service endpoint requires in
// X-IDENTITY-HEADER (IDENTITY_HEADER).
func (p *IdP) IdentityHeader() string { return p.header }

// ManagedIdentities returns the managed identities, with defaults filled in.
func (p *IdP) ManagedIdentities() []ManagedIdentity {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.mis)
}

// Client returns the registered client with ClientID id (with defaults
// filled in).
func (p *IdP) Client(id string) (Client, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.clients[id]
	return c, ok
}

// PublishedKIDs returns the kids tenant publishes, oldest first; the last
// one signs new tokens.
func (p *IdP) PublishedKIDs(tenant string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, k := range p.published[tenant] {
		out = append(out, k.kid)
	}
	return out
}

// Rotate adds a new signing key to tenant and makes it the one that signs;
// the previous keys stay published until [IdP.Withdraw]. It returns the new
// kid.
func (p *IdP) Rotate(tenant string) (string, error) {
	p.mu.Lock()
	_, ok := p.published[tenant]
	p.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("devidp: unknown tenant %q", tenant)
	}
	k, err := p.newKey(tenant)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published[tenant] = append(p.published[tenant], k)
	p.keys[k.kid] = k
	p.log.Info("devidp: signing key rotated", "tenant", tenant, "kid", k.kid)
	return k.kid, nil
}

// Withdraw stops publishing the key kid. The key can still sign tokens
// minted with TokenSpec.KID (which validators should then refuse). The key
// that currently signs cannot be withdrawn: Rotate first.
func (p *IdP) Withdraw(kid string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.keys[kid]
	if !ok {
		return fmt.Errorf("devidp: unknown kid %q", kid)
	}
	list := p.published[k.tenant]
	i := slices.Index(list, k)
	switch {
	case i < 0:
		return fmt.Errorf("devidp: kid %q is already withdrawn", kid)
	case i == len(list)-1:
		return fmt.Errorf("devidp: kid %q signs new tokens; rotate before withdrawing it", kid)
	}
	p.published[k.tenant] = slices.Delete(slices.Clone(list), i, i+1)
	p.log.Info("devidp: signing key withdrawn", "tenant", k.tenant, "kid", kid)
	return nil
}

// AddGroupMember makes member (an object ID) a member of group, for Graph.
func (p *IdP) AddGroupMember(group, member string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addMemberLocked(group, member)
}

func (p *IdP) addMemberLocked(group, member string) {
	group, member = strings.ToLower(group), strings.ToLower(member)
	if p.groups[group] == nil {
		p.groups[group] = map[string]bool{}
	}
	p.groups[group][member] = true
}

// RemoveGroupMember removes member from group.
func (p *IdP) RemoveGroupMember(group, member string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.groups[strings.ToLower(group)], strings.ToLower(member))
}

// IsMember reports whether object oid is a transitive member of group.
func (p *IdP) IsMember(oid, group string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.isMemberLocked(strings.ToLower(oid), strings.ToLower(group), map[string]bool{})
}

func (p *IdP) isMemberLocked(oid, group string, seen map[string]bool) bool {
	if seen[group] {
		return false
	}
	seen[group] = true
	for m := range p.groups[group] {
		if m == oid || p.isMemberLocked(oid, m, seen) {
			return true
		}
	}
	return false
}

// ListenAndServe serves the IdP on addr, which must be a loopback address
// (e.g. "127.0.0.1:8400" or "localhost:0"), and sets the base URL to
// http://{the address it listens on}. It logs that this is a development
// tool and returns when the server stops ([IdP.Shutdown]).
func (p *IdP) ListenAndServe(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("devidp: address %q: %w", addr, err)
	}
	if !isLoopback(host) {
		return fmt.Errorf("devidp: refusing to listen on %q: the development identity provider issues any token it is asked for, so it listens on loopback addresses only", addr)
	}
	if strings.EqualFold(host, "localhost") {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return p.Serve(ln)
}

// Serve serves the IdP on ln, which must listen on a loopback address, and
// sets the base URL from it.
func (p *IdP) Serve(ln net.Listener) error {
	ta, ok := ln.Addr().(*net.TCPAddr)
	if !ok || !ta.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("devidp: refusing to serve on %v: loopback addresses only", ln.Addr())
	}
	if err := p.SetBaseURL("http://" + ta.String()); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	p.log.Warn("devidp: DEVELOPMENT identity provider: it signs any token it is asked for; never trust it outside tests and demos",
		"url", p.BaseURL(), "tenants", p.Tenants())
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops a server started by ListenAndServe or Serve.
func (p *IdP) Shutdown() error {
	p.mu.Lock()
	srv := p.srv
	p.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readLimited reads at most n bytes of r.
func readLimited(r io.Reader, n int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, n+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > n {
		return nil, errors.New("request body too large")
	}
	return b, nil
}
