package devidp

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token kinds, in TokenSpec.Type.
const (
	// TypeUser is a delegated token (a user signed in to an application,
	// e.g. the Azure CLI): it has scp.
	TypeUser = "user"
	// TypeApp is an app-only token (service principal or managed
	// identity): no scp.
	TypeApp = "app"
)

// Fault is a deliberate defect of a minted token, for negative tests.
type Fault string

// Faults understood by [IdP.Mint].
const (
	// FaultNone mints a good token.
	FaultNone Fault = ""
	// FaultAlgNone: header alg "none" and an empty signature.
	FaultAlgNone Fault = "alg_none"
	// FaultHS256PublicKey: alg HS256, HMAC-signed with the tenant's public
	// key (PEM) as the secret: the classic algorithm-confusion attack.
	FaultHS256PublicKey Fault = "hs256_public_key"
	// FaultAlgRS512: correctly signed with the tenant's key, but RS512.
	FaultAlgRS512 Fault = "alg_rs512"
	// FaultTamperedPayload: a good token whose payload is then changed
	// (another oid) without re-signing.
	FaultTamperedPayload Fault = "tampered_payload"
	// FaultUnknownKID: signed with a key the IdP never publishes, under its
	// own kid.
	FaultUnknownKID Fault = "unknown_kid"
	// FaultWrongKey: signed with an unpublished key but under the kid of
	// the tenant's published key.
	FaultWrongKey Fault = "wrong_key"
	// FaultNoKID: no kid (nor x5t) in the header.
	FaultNoKID Fault = "no_kid"
	// FaultExpired: exp one hour ago.
	FaultExpired Fault = "expired"
	// FaultNotYetValid: nbf one hour ahead.
	FaultNotYetValid Fault = "not_yet_valid"
	// FaultWrongAudience: aud is Azure Resource Manager's.
	FaultWrongAudience Fault = "wrong_audience"
	// FaultWrongIssuer: iss is the issuer of another tenant.
	FaultWrongIssuer Fault = "wrong_issuer"
	// FaultWrongTenant: tid (and the matching iss) of a tenant the IdP does
	// not serve, signed with the first tenant's key.
	FaultWrongTenant Fault = "wrong_tenant"
	// FaultMissingOID: no oid claim.
	FaultMissingOID Fault = "missing_oid"
	// FaultMissingExp: no exp claim.
	FaultMissingExp Fault = "missing_exp"
)

// Faults lists every Fault but FaultNone.
var Faults = []Fault{
	FaultAlgNone, FaultHS256PublicKey, FaultAlgRS512, FaultTamperedPayload, FaultUnknownKID, FaultWrongKey, FaultNoKID,
	FaultExpired, FaultNotYetValid, FaultWrongAudience, FaultWrongIssuer, FaultWrongTenant, FaultMissingOID, FaultMissingExp,
}

// WrongAudience is the aud of FaultWrongAudience tokens (Azure Resource
// Manager).
const WrongAudience = "https://management.core.windows.net/"

// TokenSpec describes a token for [IdP.Mint]. Zero fields take defaults that
// look like a token the Azure CLI gets for Azure Database for PostgreSQL.
type TokenSpec struct {
	// Tenant is the tid; default the first tenant. A tenant the IdP does
	// not serve is signed with the first tenant's key.
	Tenant string `json:"tenant,omitempty"`
	// OID is the object ID; default a fresh GUID.
	OID string `json:"oid,omitempty"`
	// Type is TypeUser (default) or TypeApp.
	Type string `json:"type,omitempty"`
	// UPN is the user principal name (upn and unique_name in v1,
	// preferred_username in v2). Empty means none, as in many guest
	// tokens.
	UPN string `json:"upn,omitempty"`
	// Name is the display name (name claim).
	Name string `json:"name,omitempty"`
	// AppID is the client application (appid/azp); default the Azure CLI
	// for user tokens and a fresh GUID for app tokens.
	AppID string `json:"appid,omitempty"`
	// Scopes are the delegated scopes (scp) of a user token; default
	// ["user_impersonation"]. Ignored for app tokens.
	Scopes []string `json:"scp,omitempty"`
	// Roles are application roles (roles claim).
	Roles []string `json:"roles,omitempty"`
	// IDTyp, if set, is emitted as the idtyp claim ("app" or "user").
	IDTyp string `json:"idtyp,omitempty"`
	// Groups are group object IDs for the groups claim.
	Groups []string `json:"groups,omitempty"`
	// Overage replaces the groups claim by the overage markers
	// _claim_names/_claim_sources, as Entra does past 200 groups.
	Overage bool `json:"overage,omitempty"`
	// OverageEndpoint is the URL put in _claim_sources (a validator must
	// never call it); default an Azure AD Graph URL.
	OverageEndpoint string `json:"overage_endpoint,omitempty"`
	// HasGroups emits hasgroups: true (the implicit-flow overage marker).
	HasGroups bool `json:"hasgroups,omitempty"`
	// AMR are the authentication methods; default ["pwd"] for user tokens.
	// Include "mfa" for MFA-protected roles.
	AMR []string `json:"amr,omitempty"`
	// Lifetime is exp - iat; default Options.TokenLifetime.
	Lifetime time.Duration `json:"lifetime,omitempty"`
	// IssuedAt is iat; default now.
	IssuedAt time.Time `json:"iat,omitzero"`
	// NotBefore is nbf; default IssuedAt.
	NotBefore time.Time `json:"nbf,omitzero"`
	// Expires is exp; default IssuedAt + Lifetime.
	Expires time.Time `json:"exp,omitzero"`
	// Audience is aud; default Options.Audience.
	Audience string `json:"aud,omitempty"`
	// Version is "1.0" (default, as for Azure Database for PostgreSQL) or
	// "2.0"; it selects the issuer and the claim set.
	Version string `json:"ver,omitempty"`
	// Issuer overrides iss.
	Issuer string `json:"iss,omitempty"`
	// KID signs with that key (published or withdrawn) instead of the
	// tenant's current one.
	KID string `json:"kid,omitempty"`
	// Extra claims are added last (overriding any other).
	Extra map[string]any `json:"extra,omitempty"`
	// Fault makes the token defective on purpose.
	Fault Fault `json:"fault,omitempty"`
}

// Mint issues a token for spec, signed with the tenant's current key (or
// spec.KID), or deliberately defective if spec.Fault is set. The base URL
// must be set unless Options.EntraIssuers is.
func (p *IdP) Mint(spec TokenSpec) (string, error) {
	if spec.Fault == FaultUnknownKID || spec.Fault == FaultWrongKey {
		if err := p.ensureRogue(); err != nil {
			return "", err
		}
	}
	p.mu.Lock()
	if p.base == "" && !p.opts.EntraIssuers {
		p.mu.Unlock()
		return "", errors.New("devidp: base URL not set (SetBaseURL or ListenAndServe first)")
	}
	if spec.Tenant == "" {
		spec.Tenant = p.tenants[0]
	}
	if spec.Fault == FaultWrongTenant {
		spec.Tenant = NewGUID()
	}
	spec.Tenant = strings.ToLower(spec.Tenant)
	keyTenant := spec.Tenant
	if _, ok := p.published[keyTenant]; !ok {
		keyTenant = p.tenants[0]
	}
	pub := p.published[keyTenant]
	key := pub[len(pub)-1]
	if spec.KID != "" {
		k, ok := p.keys[spec.KID]
		if !ok {
			p.mu.Unlock()
			return "", fmt.Errorf("devidp: unknown kid %q", spec.KID)
		}
		key = k
	}
	headerKID := key.kid
	switch spec.Fault {
	case FaultUnknownKID:
		key, headerKID = p.rogue, p.rogue.kid
	case FaultWrongKey:
		key = p.rogue
	}
	if spec.Version == "" {
		spec.Version = "1.0"
	}
	if spec.Version != "1.0" && spec.Version != "2.0" {
		p.mu.Unlock()
		return "", fmt.Errorf("devidp: version %q is not 1.0 or 2.0", spec.Version)
	}
	iss := p.issuerLocked(spec.Tenant, spec.Version)
	if spec.Fault == FaultWrongIssuer {
		iss = p.issuerLocked(NewGUID(), spec.Version)
	}
	lifetime := p.opts.TokenLifetime
	p.mu.Unlock()

	if spec.Issuer != "" {
		iss = spec.Issuer
	}
	now := p.now().Truncate(time.Second)
	if spec.Type == "" {
		spec.Type = TypeUser
	}
	if spec.Type != TypeUser && spec.Type != TypeApp {
		return "", fmt.Errorf("devidp: type %q is not user or app", spec.Type)
	}
	if spec.OID == "" {
		spec.OID = NewGUID()
	}
	if spec.Lifetime > 0 {
		lifetime = spec.Lifetime
	}
	iat := spec.IssuedAt
	if iat.IsZero() {
		iat = now
	}
	nbf := spec.NotBefore
	if nbf.IsZero() {
		nbf = iat
	}
	exp := spec.Expires
	if exp.IsZero() {
		exp = iat.Add(lifetime)
	}
	switch spec.Fault {
	case FaultExpired:
		iat, nbf, exp = now.Add(-2*time.Hour), now.Add(-2*time.Hour), now.Add(-time.Hour)
	case FaultNotYetValid:
		iat, nbf, exp = now, now.Add(time.Hour), now.Add(2*time.Hour)
	}
	aud := spec.Audience
	if aud == "" {
		aud = p.opts.Audience
	}
	if spec.Fault == FaultWrongAudience {
		aud = WrongAudience
	}

	c := map[string]any{
		"aud": aud, "iss": iss, "iat": iat.Unix(), "nbf": nbf.Unix(), "exp": exp.Unix(),
		"aio": randomString(40), "oid": spec.OID, "rh": "0." + randomString(60) + ".", "tid": spec.Tenant,
		"uti": randomString(22), "ver": spec.Version,
	}
	appID := spec.AppID
	v1 := spec.Version == "1.0"
	if spec.Type == TypeUser {
		if appID == "" {
			appID = AzureCLIAppID
		}
		scopes := spec.Scopes
		if len(scopes) == 0 {
			scopes = []string{"user_impersonation"}
		}
		c["scp"] = strings.Join(scopes, " ")
		c["sub"] = randomString(43)
		amr := spec.AMR
		if amr == nil {
			amr = []string{"pwd"}
		}
		if v1 {
			c["acr"] = "1"
			c["amr"] = amr
			if spec.UPN != "" {
				c["upn"] = spec.UPN
				c["unique_name"] = spec.UPN
			}
		} else {
			c["amr"] = amr
			if spec.UPN != "" {
				c["preferred_username"] = spec.UPN
			}
		}
		if spec.Name != "" {
			c["name"] = spec.Name
		}
	} else {
		if appID == "" {
			appID = NewGUID()
		}
		c["sub"] = spec.OID
		if v1 {
			c["idp"] = iss
		}
		if spec.AMR != nil {
			c["amr"] = spec.AMR
		}
	}
	if v1 {
		c["appid"] = appID
		c["appidacr"] = map[bool]string{true: "0", false: "1"}[spec.Type == TypeUser]
	} else {
		c["azp"] = appID
		c["azpacr"] = map[bool]string{true: "0", false: "1"}[spec.Type == TypeUser]
	}
	if len(spec.Roles) > 0 {
		c["roles"] = spec.Roles
	}
	if spec.IDTyp != "" {
		c["idtyp"] = spec.IDTyp
	}
	switch {
	case spec.Overage:
		ep := spec.OverageEndpoint
		if ep == "" {
			ep = "https://graph.windows.net/" + spec.Tenant + "/users/" + spec.OID + "/getMemberObjects"
		}
		c["_claim_names"] = map[string]string{"groups": "src1"}
		c["_claim_sources"] = map[string]any{"src1": map[string]string{"endpoint": ep}}
	case spec.Groups != nil:
		c["groups"] = spec.Groups
	}
	if spec.HasGroups {
		c["hasgroups"] = true
	}
	maps.Copy(c, spec.Extra)
	switch spec.Fault {
	case FaultMissingOID:
		delete(c, "oid")
	case FaultMissingExp:
		delete(c, "exp")
	}

	header := map[string]any{"typ": "JWT", "alg": "RS256", "kid": headerKID}
	if v1 {
		header["x5t"] = headerKID
	}
	if spec.Fault == FaultNoKID {
		delete(header, "kid")
		delete(header, "x5t")
	}

	switch spec.Fault {
	case FaultAlgNone:
		header["alg"] = "none"
		h, _ := json.Marshal(header)
		b, _ := json.Marshal(c)
		return b64(h) + "." + b64(b) + ".", nil
	case FaultHS256PublicKey:
		der, err := x509.MarshalPKIXPublicKey(&key.priv.PublicKey)
		if err != nil {
			return "", err
		}
		secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		return sign(jwt.SigningMethodHS256, header, c, secret)
	case FaultAlgRS512:
		return sign(jwt.SigningMethodRS512, header, c, key.priv)
	case FaultTamperedPayload:
		tok, err := sign(jwt.SigningMethodRS256, header, c, key.priv)
		if err != nil {
			return "", err
		}
		c["oid"] = NewGUID()
		b, _ := json.Marshal(c)
		parts := strings.Split(tok, ".")
		return parts[0] + "." + b64(b) + "." + parts[2], nil
	}
	return sign(jwt.SigningMethodRS256, header, c, key.priv)
}

// sign serializes header and claims and signs them with method and key.
func sign(method jwt.SigningMethod, header, claims map[string]any, key any) (string, error) {
	header["alg"] = method.Alg()
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	ss := b64(h) + "." + b64(b)
	sig, err := method.Sign(ss, key)
	if err != nil {
		return "", err
	}
	return ss + "." + b64(sig), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ensureRogue creates the never-published key used by the unknown-kid and
// wrong-key faults.
func (p *IdP) ensureRogue() error {
	p.mu.Lock()
	have := p.rogue != nil
	p.mu.Unlock()
	if have {
		return nil
	}
	k, err := p.newKey("rogue")
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.rogue == nil {
		p.rogue = k
	}
	p.mu.Unlock()
	return nil
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// randomString returns n random characters of the base64url alphabet.
func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
