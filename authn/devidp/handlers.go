package devidp

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Handler returns the IdP's HTTP handler (see the package documentation for
// its URLs).
func (p *IdP) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.serveIndex)
	mux.HandleFunc("GET /{tid}/.well-known/openid-configuration", p.serveDiscovery("1.0"))
	mux.HandleFunc("GET /{tid}/v2.0/.well-known/openid-configuration", p.serveDiscovery("2.0"))
	mux.HandleFunc("GET /{tid}/discovery/keys", p.serveJWKS("1.0"))
	mux.HandleFunc("GET /{tid}/discovery/v2.0/keys", p.serveJWKS("2.0"))
	mux.HandleFunc("POST /{tid}/oauth2/token", p.serveToken("1.0"))
	mux.HandleFunc("POST /{tid}/oauth2/v2.0/token", p.serveToken("2.0"))
	mux.HandleFunc("GET /metadata/identity/oauth2/token", p.serveIMDS)
	mux.HandleFunc("GET /msi/token", p.serveAppService)
	mux.HandleFunc("POST /v1.0/{kind}/{oid}/checkMemberGroups", p.serveCheckMemberGroups)
	mux.HandleFunc("POST /dev/token", p.serveMint)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		if !p.serveFault(sw, r) {
			mux.ServeHTTP(sw, r)
		}
		p.log.Debug("devidp: request", "method", r.Method, "path", r.URL.Path, "status", sw.status)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

// Unwrap returns the underlying ResponseWriter, for
// http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeader records the status code for the request log.
func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// oauthError writes an OAuth 2.0 error response.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// tenant returns the {tid} path value if the IdP serves it, else writes
// Entra's unknown-tenant error.
func (p *IdP) tenant(w http.ResponseWriter, r *http.Request) (string, bool) {
	tid := r.PathValue("tid")
	p.mu.Lock()
	_, ok := p.published[tid]
	p.mu.Unlock()
	if !ok {
		oauthError(w, http.StatusBadRequest, "invalid_tenant",
			fmt.Sprintf("AADSTS90002: Tenant '%s' not found. This development identity provider serves %v.", tid, p.Tenants()))
	}
	return tid, ok
}

func (p *IdP) serveIndex(w http.ResponseWriter, r *http.Request) {
	base := p.BaseURL()
	var b strings.Builder
	fmt.Fprintf(&b, "pgwarden development identity provider: for tests and demos only.\n\n")
	fmt.Fprintf(&b, "authority (entra.authority) and Graph endpoint: %s\n", base)
	for _, t := range p.Tenants() {
		fmt.Fprintf(&b, "tenant %s\n  v1 issuer %s\n  v2 issuer %s\n  keys %v\n", t, p.Issuer(t, "1.0"), p.Issuer(t, "2.0"), p.PublishedKIDs(t))
	}
	fmt.Fprintf(&b, "\nmint a token: curl -s -X POST %s/dev/token -d '{\"oid\":\"…\",\"upn\":\"alice@example.com\"}'\n", base)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(b.String()))
}

func (p *IdP) serveDiscovery(version string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tid, ok := p.tenant(w, r)
		if !ok {
			return
		}
		base := p.BaseURL()
		t := base + "/" + tid
		doc := map[string]any{
			"issuer":                                p.Issuer(tid, version),
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_modes_supported":              []string{"query", "fragment", "form_post"},
			"subject_types_supported":               []string{"pairwise"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
			"tenant_region_scope":                   "WW",
			"cloud_instance_name":                   "devidp.invalid",
			"msgraph_host":                          strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://"),
		}
		if version == "2.0" {
			doc["jwks_uri"] = t + "/discovery/v2.0/keys"
			doc["token_endpoint"] = t + "/oauth2/v2.0/token"
			doc["authorization_endpoint"] = t + "/oauth2/v2.0/authorize"
		} else {
			doc["jwks_uri"] = t + "/discovery/keys"
			doc["token_endpoint"] = t + "/oauth2/token"
			doc["authorization_endpoint"] = t + "/oauth2/authorize"
		}
		writeJSON(w, http.StatusOK, doc)
	}
}

func (p *IdP) serveJWKS(version string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tid, ok := p.tenant(w, r)
		if !ok {
			return
		}
		p.mu.Lock()
		pub := slices.Clone(p.published[tid])
		iss := p.issuerLocked(tid, version)
		p.mu.Unlock()
		keys := make([]map[string]any, 0, len(pub))
		for _, k := range pub {
			j := map[string]any{
				"kty": "RSA", "use": "sig", "kid": k.kid, "x5t": k.kid,
				"n":   base64.RawURLEncoding.EncodeToString(k.priv.N.Bytes()),
				"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.priv.E)).Bytes()),
				"x5c": []string{base64.StdEncoding.EncodeToString(k.certDER)},
			}
			if version == "2.0" {
				j["issuer"] = iss
			}
			keys = append(keys, j)
		}
		writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
	}
}

// serveToken implements the client_credentials grant.
func (p *IdP) serveToken(version string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tid, ok := p.tenant(w, r)
		if !ok {
			return
		}
		body, err := readLimited(r.Body, 64<<10)
		if err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed form body")
			return
		}
		if g := form.Get("grant_type"); g != "client_credentials" {
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type",
				fmt.Sprintf("AADSTS70003: grant_type %q is not supported by the development identity provider (client_credentials only; mint other tokens with POST /dev/token)", g))
			return
		}
		cid := form.Get("client_id")
		c, ok := p.Client(cid)
		if !ok || c.Tenant != tid {
			oauthError(w, http.StatusBadRequest, "unauthorized_client",
				fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory '%s'.", cid, tid))
			return
		}
		endpoint := p.BaseURL() + r.URL.Path
		if desc := p.authenticateClient(c, form, endpoint); desc != "" {
			oauthError(w, http.StatusUnauthorized, "invalid_client", desc)
			return
		}
		var resource string
		if version == "2.0" {
			scope := form.Get("scope")
			if !strings.HasSuffix(scope, "/.default") || strings.Contains(scope, " ") {
				oauthError(w, http.StatusBadRequest, "invalid_scope",
					"AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.")
				return
			}
			resource = strings.TrimSuffix(scope, "/.default")
		} else {
			resource = form.Get("resource")
			if resource == "" {
				oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: The request body must contain the following parameter: 'resource'.")
				return
			}
		}
		tok, exp, err := p.mintApp(tid, c.OID, c.ClientID, resource, "")
		if err != nil {
			oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
			return
		}
		lifetime := int64(time.Until(exp).Seconds())
		if version == "2.0" {
			writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": tok})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{
			"token_type": "Bearer", "expires_in": strconv.FormatInt(lifetime, 10), "ext_expires_in": strconv.FormatInt(lifetime, 10),
			"expires_on": strconv.FormatInt(exp.Unix(), 10), "not_before": strconv.FormatInt(p.now().Unix(), 10),
			"resource": resource, "access_token": tok,
		})
	}
}

// authenticateClient checks client_secret or client_assertion and returns
// an Entra-style error description, or "" if the client is authenticated.
func (p *IdP) authenticateClient(c Client, form url.Values, endpoint string) string {
	if s := form.Get("client_secret"); s != "" {
		if c.Secret != "" && subtle.ConstantTimeCompare([]byte(s), []byte(c.Secret)) == 1 {
			return ""
		}
		return "AADSTS7000215: Invalid client secret provided."
	}
	a := form.Get("client_assertion")
	if a == "" {
		return "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
	}
	if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		return "AADSTS700024: client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	}
	if c.AcceptAnyAssertion {
		if strings.Count(a, ".") != 2 {
			return "AADSTS50027: client_assertion is not a JWT"
		}
		return ""
	}
	for _, k := range c.AssertionKeys {
		var claims jwt.RegisteredClaims
		_, err := jwt.ParseWithClaims(a, &claims, func(*jwt.Token) (any, error) { return k, nil },
			jwt.WithValidMethods([]string{"RS256", "PS256"}), jwt.WithExpirationRequired(),
			jwt.WithIssuer(c.ClientID), jwt.WithSubject(c.ClientID), jwt.WithAudience(endpoint), jwt.WithLeeway(time.Minute))
		if err == nil {
			return ""
		}
	}
	return "AADSTS700027: Client assertion failed signature validation, or its iss, sub, aud or exp is wrong."
}

// mintApp issues an app-only v1 token.
func (p *IdP) mintApp(tid, oid, appID, resource, miResID string) (string, time.Time, error) {
	spec := TokenSpec{Tenant: tid, OID: oid, Type: TypeApp, AppID: appID, Audience: resource}
	if miResID != "" {
		spec.Extra = map[string]any{"xms_mirid": miResID}
	}
	now := p.now().Truncate(time.Second)
	spec.IssuedAt = now
	tok, err := p.Mint(spec)
	return tok, now.Add(p.opts.TokenLifetime), err
}

// pickIdentity selects a managed identity by one of the given selectors; on
// failure it returns IMDS's error description.
func (p *IdP) pickIdentity(q url.Values, resParam string) (ManagedIdentity, string) {
	mis := p.ManagedIdentities()
	var sel []string
	for _, k := range []string{"client_id", "object_id", "principal_id", resParam} {
		if q.Get(k) != "" {
			sel = append(sel, k)
		}
	}
	if len(sel) > 1 {
		return ManagedIdentity{}, "only one of client_id, object_id, " + resParam + " may be given"
	}
	if len(sel) == 0 {
		if len(mis) > 1 {
			return ManagedIdentity{}, "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"
		}
		return mis[0], ""
	}
	v := q.Get(sel[0])
	for _, m := range mis {
		switch sel[0] {
		case "client_id":
			if strings.EqualFold(m.ClientID, v) {
				return m, ""
			}
		case "object_id", "principal_id":
			if strings.EqualFold(m.ObjectID, v) {
				return m, ""
			}
		default:
			if m.ResourceID != "" && strings.EqualFold(m.ResourceID, v) {
				return m, ""
			}
		}
	}
	return ManagedIdentity{}, "Identity not found"
}

// serveIMDS imitates GET http://169.254.169.254/metadata/identity/oauth2/token.
func (p *IdP) serveIMDS(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata") != "true" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
		return
	}
	q := r.URL.Query()
	if q.Get("api-version") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
		return
	}
	p.serveMI(w, q, "msi_res_id")
}

// serveAppService imitates the App Service IDENTITY_ENDPOINT.
func (p *IdP) serveAppService(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Get("X-IDENTITY-HEADER")
	if subtle.ConstantTimeCompare([]byte(h), []byte(p.header)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_request", "X-IDENTITY-HEADER is missing or wrong")
		return
	}
	q := r.URL.Query()
	if q.Get("api-version") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "api-version is missing")
		return
	}
	p.serveMI(w, q, "mi_res_id")
}

func (p *IdP) serveMI(w http.ResponseWriter, q url.Values, resParam string) {
	resource := strings.TrimSuffix(q.Get("resource"), "/.default")
	if resource == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "Required query variable 'resource' is missing")
		return
	}
	mi, desc := p.pickIdentity(q, resParam)
	if desc != "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", desc)
		return
	}
	tok, exp, err := p.mintApp(mi.Tenant, mi.ObjectID, mi.ClientID, resource, mi.ResourceID)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	now := p.now()
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token": tok, "refresh_token": "",
		"expires_in": strconv.FormatInt(int64(exp.Sub(now).Seconds()), 10), "expires_on": strconv.FormatInt(exp.Unix(), 10),
		"not_before": strconv.FormatInt(now.Unix(), 10), "resource": resource, "token_type": "Bearer", "client_id": mi.ClientID,
	})
}

// graphError writes a Microsoft Graph error.
func graphError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// serveCheckMemberGroups imitates POST /v1.0/{directoryObjects|users|servicePrincipals}/{oid}/checkMemberGroups.
func (p *IdP) serveCheckMemberGroups(w http.ResponseWriter, r *http.Request) {
	switch r.PathValue("kind") {
	case "directoryObjects", "users", "servicePrincipals":
	default:
		graphError(w, http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+r.PathValue("kind")+"'.")
		return
	}
	if err := p.checkGraphToken(r.Header.Get("Authorization")); err != nil {
		graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure: "+err.Error())
		return
	}
	body, err := readLimited(r.Body, 64<<10)
	if err != nil {
		graphError(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	var in struct {
		GroupIDs []string `json:"groupIds"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&in); err != nil || len(in.GroupIDs) == 0 || len(in.GroupIDs) > 20 {
		graphError(w, http.StatusBadRequest, "Request_BadRequest", "groupIds must list 1 to 20 group IDs")
		return
	}
	oid := strings.ToLower(r.PathValue("oid"))
	out := []string{}
	for _, g := range in.GroupIDs {
		if p.IsMember(oid, g) {
			out = append(out, g)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"@odata.context": p.BaseURL() + "/v1.0/$metadata#Collection(Edm.String)", "value": out})
}

// checkGraphToken verifies a Bearer token for Graph issued by this IdP.
func (p *IdP) checkGraphToken(h string) error {
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return errors.New("no bearer token")
	}
	_, err := jwt.Parse(tok, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		p.mu.Lock()
		defer p.mu.Unlock()
		k, ok := p.keys[kid]
		if !ok || !slices.Contains(p.published[k.tenant], k) {
			return nil, errors.New("unknown kid")
		}
		return &k.priv.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired(),
		jwt.WithAudience(GraphAudience, GraphAudience+"/"), jwt.WithTimeFunc(p.now))
	return err
}

// MintResponse is the answer of POST /dev/token.
type MintResponse struct {
	// AccessToken is the minted token.
	AccessToken string `json:"access_token"`
	// TokenType is "Bearer".
	TokenType string `json:"token_type"`
}

// serveMint mints a token from a JSON TokenSpec.
func (p *IdP) serveMint(w http.ResponseWriter, r *http.Request) {
	body, err := readLimited(r.Body, 1<<20)
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	var spec TokenSpec
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "TokenSpec: "+err.Error())
			return
		}
	}
	tok, err := p.Mint(spec)
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, MintResponse{AccessToken: tok, TokenType: "Bearer"})
}

// RequestToken asks the dev IdP at base (e.g. "http://127.0.0.1:8400") to
// mint a token for spec through POST /dev/token: what `pgwarden dev-token`
// does against a running `pgwarden dev-idp`. A nil client means
// http.DefaultClient.
func RequestToken(ctx context.Context, client *http.Client, base string, spec TokenSpec) (string, error) {
	if client == nil {
		client = http.DefaultClient
	}
	body, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/dev/token", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := readLimited(resp.Body, 1<<20)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Desc string `json:"error_description"`
		}
		json.Unmarshal(data, &e)
		return "", fmt.Errorf("devidp: POST /dev/token: HTTP %d: %s", resp.StatusCode, e.Desc)
	}
	var out MintResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return "", err
	}
	return out.AccessToken, nil
}
