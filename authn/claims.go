package authn

import (
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token kinds, in [Token.IDType].
const (
	// IDTypeUser is a delegated token: an application acting for a signed-in
	// user (Azure's AAD_AUTH_TOKENTYPE_APP_USER or _APP_OBO).
	IDTypeUser = "user"
	// IDTypeApp is an app-only token: a service principal or managed
	// identity acting as itself.
	IDTypeApp = "app"
)

// Token is a validated Entra access token: the claims pgwarden uses. It never
// holds the token itself. A Token returned by [Validator.Validate] belongs to
// the caller.
type Token struct {
	// OID is the object ID of the user, service principal or managed
	// identity (lower-case GUID). Roles are matched on it.
	OID string
	// TID is the tenant ID (lower-case GUID).
	TID string
	// UPN is the upn claim (v1; often absent for guests and always for
	// app-only tokens).
	UPN string
	// PreferredUsername is the preferred_username claim (v2).
	PreferredUsername string
	// UniqueName is the unique_name claim (v1).
	UniqueName string
	// AppID is the client application ID: appid (v1) or azp (v2).
	AppID string
	// IDType is [IDTypeUser] or [IDTypeApp].
	IDType string
	// IDTypeFrom says how IDType was decided: "idtyp" (the claim was
	// present), "scp" (no idtyp; scp present, so delegated) or "no_scp" (no
	// idtyp and no scp, so app-only), as in Microsoft's guidance.
	IDTypeFrom string
	// Scopes are the delegated scopes (scp, split on spaces).
	Scopes []string
	// Roles are the application roles (roles claim).
	Roles []string
	// Groups are the group object IDs of the groups claim.
	Groups []string
	// GroupOverage is true when the groups claim overflowed
	// (_claim_names.groups or hasgroups): membership must be asked of Graph.
	GroupOverage bool
	// AMR are the authentication methods (amr), e.g. "pwd", "mfa".
	AMR []string
	// UTI is the unique token identifier (uti): log this, never the token.
	UTI string
	// Issuer, Audience and KID are the iss, aud and header kid the token
	// was validated with.
	Issuer, Audience, KID string
	// Exp, NotBefore and IssuedAt are exp, nbf and iat (zero if absent).
	Exp, NotBefore, IssuedAt time.Time
	// Version is "1.0" or "2.0": which of the tenant's issuers matched.
	Version string

	// groupsClaim is true when the token has a groups claim at all.
	groupsClaim bool
}

// Name returns the best human-readable name: upn, else preferred_username,
// else unique_name, else the AppID for app-only tokens.
func (t *Token) Name() string {
	switch {
	case t.UPN != "":
		return t.UPN
	case t.PreferredUsername != "":
		return t.PreferredUsername
	case t.UniqueName != "":
		return t.UniqueName
	}
	return t.AppID
}

// HasAMR reports whether method (e.g. "mfa") is in the amr claim.
func (t *Token) HasAMR(method string) bool { return slices.Contains(t.AMR, method) }

// clone returns a copy that shares nothing mutable with t.
func (t *Token) clone() *Token {
	c := *t
	c.Scopes = slices.Clone(t.Scopes)
	c.Roles = slices.Clone(t.Roles)
	c.Groups = slices.Clone(t.Groups)
	c.AMR = slices.Clone(t.AMR)
	return &c
}

// entraClaims is the JSON shape of an Entra access token payload.
type entraClaims struct {
	jwt.RegisteredClaims
	OID               string            `json:"oid"`
	TID               string            `json:"tid"`
	UPN               string            `json:"upn"`
	UniqueName        string            `json:"unique_name"`
	PreferredUsername string            `json:"preferred_username"`
	AppID             string            `json:"appid"`
	AZP               string            `json:"azp"`
	IDTyp             string            `json:"idtyp"`
	SCP               string            `json:"scp"`
	Roles             []string          `json:"roles"`
	Ver               string            `json:"ver"`
	UTI               string            `json:"uti"`
	Groups            *[]string         `json:"groups"`
	ClaimNames        map[string]string `json:"_claim_names"`
	HasGroups         bool              `json:"hasgroups"`
	AMR               []string          `json:"amr"`
}

// token builds the Token for validated claims.
func (c *entraClaims) token(version, kid string, aud string) *Token {
	t := &Token{
		OID:               c.OID,
		TID:               c.TID,
		UPN:               c.UPN,
		PreferredUsername: c.PreferredUsername,
		UniqueName:        c.UniqueName,
		AppID:             c.AppID,
		Scopes:            strings.Fields(c.SCP),
		Roles:             slices.Clone(c.Roles),
		AMR:               slices.Clone(c.AMR),
		UTI:               c.UTI,
		Issuer:            c.Issuer,
		Audience:          aud,
		KID:               kid,
		Version:           version,
	}
	if t.AppID == "" {
		t.AppID = c.AZP
	}
	if c.Groups != nil {
		t.groupsClaim = true
		t.Groups = slices.Clone(*c.Groups)
	}
	if _, ok := c.ClaimNames["groups"]; ok || c.HasGroups {
		t.GroupOverage = true
	}
	switch {
	case c.IDTyp == IDTypeApp:
		t.IDType, t.IDTypeFrom = IDTypeApp, "idtyp"
	case c.IDTyp == IDTypeUser:
		t.IDType, t.IDTypeFrom = IDTypeUser, "idtyp"
	case c.SCP != "":
		t.IDType, t.IDTypeFrom = IDTypeUser, "scp"
	default:
		t.IDType, t.IDTypeFrom = IDTypeApp, "no_scp"
	}
	if c.ExpiresAt != nil {
		t.Exp = c.ExpiresAt.Time
	}
	if c.NotBefore != nil {
		t.NotBefore = c.NotBefore.Time
	}
	if c.IssuedAt != nil {
		t.IssuedAt = c.IssuedAt.Time
	}
	return t
}
