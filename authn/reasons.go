package authn

import (
	"errors"
	"strings"
)

// Reason codes carried by [AuthError.Reason]. They name the precise cause of
// a refused Entra sign-in and are meant for the audit log and metrics only:
// clients see [AuthError.Public] instead.
const (
	// ReasonExpired: exp (plus leeway) is in the past.
	ReasonExpired = "expired"
	// ReasonNotYetValid: nbf or iat (minus leeway) is in the future.
	ReasonNotYetValid = "not_yet_valid"
	// ReasonBadSignature: the RS256 signature does not verify with the key
	// named by kid (tampered header or payload, or the wrong key).
	ReasonBadSignature = "bad_signature"
	// ReasonUnknownKID: no published key of the token's tenant has the
	// token's kid, even after the rate-limited refresh.
	ReasonUnknownKID = "unknown_kid"
	// ReasonWrongAudience: aud is not one of EntraConfig.Audiences.
	ReasonWrongAudience = "wrong_audience"
	// ReasonWrongIssuer: iss is neither the v1 nor the v2 issuer of the
	// token's own tid, or the signing key is bound to another issuer.
	ReasonWrongIssuer = "wrong_issuer"
	// ReasonTenantNotAllowed: tid is not in EntraConfig.Tenants.
	ReasonTenantNotAllowed = "tenant_not_allowed"
	// ReasonMalformed: not a compact JWS, bad base64 or JSON, a claim of the
	// wrong type, no kid, a crit header, or an oid/tid that is not a GUID.
	ReasonMalformed = "malformed"
	// ReasonAlgNotAllowed: the header alg is anything but RS256 (none, HS256,
	// RS512, PS256, ...).
	ReasonAlgNotAllowed = "alg_not_allowed"
	// ReasonMissingClaim: a required claim (exp, aud, tid, oid) is absent.
	ReasonMissingClaim = "missing_claim"
	// ReasonTokenTooLong: the password is longer than [MaxEntraTokenLength].
	ReasonTokenTooLong = "token_too_long"
	// ReasonJWKSUnavailable: the keys needed to check the token could not
	// be obtained (identity provider unreachable and nothing cached, or the
	// unknown-kid refresh failed or did not finish in time).
	ReasonJWKSUnavailable = "jwks_unavailable"

	// ReasonUnknownRole: no principal maps the requested role name.
	ReasonUnknownRole = "unknown_role"
	// ReasonOIDMismatch: the token's oid is not the role's object ID.
	ReasonOIDMismatch = "oid_mismatch"
	// ReasonTokenTypeMismatch: an app-only token for a user role, or a
	// delegated (user) token for a service role.
	ReasonTokenTypeMismatch = "token_type_mismatch"
	// ReasonNotGroupMember: the token's principal is not a member of the
	// group role's group.
	ReasonNotGroupMember = "not_group_member"
	// ReasonMFARequired: the role requires MFA and amr has no "mfa".
	ReasonMFARequired = "mfa_required"
	// ReasonTenantMismatch: the principal is bound to a tenant other than
	// the token's tid.
	ReasonTenantMismatch = "tenant_mismatch"
	// ReasonGraphUnavailable: group membership had to be asked of Microsoft
	// Graph (groups overage, or an app-only token) and the answer could not
	// be obtained (no Graph token source configured, or the call failed).
	ReasonGraphUnavailable = "graph_unavailable"
)

// Client-facing messages, verbatim from Azure Database for PostgreSQL so that
// searches for them lead to the right documentation.
const (
	// MsgTokenExpired is sent for [ReasonExpired].
	MsgTokenExpired = "The access token has expired. Please acquire a new token and retry."
	// MsgTokenInvalid is sent for every other token or rule failure that has
	// no more specific Azure message.
	MsgTokenInvalid = "An error occurred while validating the access token. Please acquire a new token and retry."
)

// SQLSTATE codes used by [AuthError].
const (
	// SQLStateInvalidPassword is 28P01 (invalid_password): token failures and
	// unknown roles, as PostgreSQL reports failed password authentication.
	SQLStateInvalidPassword = "28P01"
	// SQLStateInvalidAuthorization is 28000
	// (invalid_authorization_specification): token type mismatches.
	SQLStateInvalidAuthorization = "28000"
)

// MsgWrongAudience returns Azure's wrong-audience message naming resource,
// the audience a client should request a token for.
func MsgWrongAudience(resource string) string {
	return `The access token does not have a valid audience claim. Please acquire a new token for the resource "` + resource + `".`
}

// MsgUnknownRole returns PostgreSQL's message for a role that does not
// exist or cannot sign in, as Azure sends it for an unknown Entra role.
func MsgUnknownRole(role string) string {
	return `password authentication failed for user "` + role + `"`
}

// MsgAppTokenForUserRole returns Azure's message for an app-only token
// presented for a user role.
func MsgAppTokenForUserRole(role string) string {
	return `Microsoft Entra user token for role "` + role + `" is neither an AAD_AUTH_TOKENTYPE_APP_USER or an AAD_AUTH_TOKENTYPE_APP_OBO token.`
}

// MsgUserTokenForServiceRole returns Azure's message for a delegated (user)
// token presented for a service-principal or managed-identity role.
func MsgUserTokenForServiceRole(role string) string {
	return `Service principals cannot generate AAD_AUTH_TOKENTYPE_APP_USER tokens for role "` + role + `"`
}

// AuthError is the error returned by [Validator.Validate] and
// [Validator.Authorize] when a sign-in is refused.
//
// Reason (one of the Reason* constants) goes to the audit log; Public and
// SQLState go to the client in the FATAL ErrorResponse. Neither the message
// nor Err ever contains the token.
type AuthError struct {
	// Reason is the precise cause, e.g. [ReasonExpired].
	Reason string
	// Public is the message for the client.
	Public string
	// SQLState is the SQLSTATE for the client's ErrorResponse.
	SQLState string
	// Err is the underlying detail, for logs; it may be nil.
	Err error
}

// Error returns "entra: <reason>: <detail>".
func (e *AuthError) Error() string {
	var b strings.Builder
	b.WriteString("entra: ")
	b.WriteString(e.Reason)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns Err.
func (e *AuthError) Unwrap() error { return e.Err }

// ErrJWKSUnavailable is wrapped by [NewValidator]'s error when a configured
// tenant's discovery documents or keys can be obtained neither from the
// identity provider nor from the cache file.
var ErrJWKSUnavailable = errors.New("entra: signing keys unavailable")

// ReasonOf returns the Reason of the [*AuthError] in err's chain, or "" if
// there is none.
func ReasonOf(err error) string {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

// entraTokenErr builds a token-validation AuthError with the generic public
// message.
func entraTokenErr(reason string, err error) *AuthError {
	return &AuthError{Reason: reason, Public: MsgTokenInvalid, SQLState: SQLStateInvalidPassword, Err: err}
}
