package config

// Entra ID settings in both formats.
//
// # pgbouncer.ini
//
// Two sections of pgwarden's own hold the Entra settings. PgBouncer does not
// know them and refuses a file that has them, as it refuses the two
// [databases] keys below; a pgbouncer.ini that uses any of them is
// pgwarden's only.
//
//	[entra]
//	; its presence enables Entra sign-in (Config.Entra.Enabled)
//	auth_mode = both
//	tenants = 72f988bf-86f1-41af-91ab-2d7cd011db47, 0b8b8b44-5f2a-4d1e-9a4c-3a3f2b1c0d9e
//	audiences = https://ossrdbms-aad.database.windows.net, https://ossrdbms-aad.database.windows.net/
//	authority = https://login.microsoftonline.com
//	clock_skew = 30
//	jwks_cache_file = /var/lib/pgwarden/jwks.json
//	jwks_refresh_interval = 3600
//	unknown_kid_refresh_interval = 300
//	allow_plaintext = 0
//	disconnect_on_token_expiry = 0
//	disconnect_on_revoke = 1
//	graph_endpoint = https://graph.microsoft.com
//	principal_query = pgaadauth
//	principal_query_database = app
//	principal_refresh_interval = 300
//	server_auth = managed_identity
//	client_id = 5c7a3b1e-2d4f-4e6a-8b9c-0d1e2f3a4b5c
//	object_id =
//	resource_id =
//	tenant_id =
//	client_secret_file =
//	client_cert_file =
//	token_resource = https://ossrdbms-aad.database.windows.net
//	imds_endpoint =
//	token_endpoint_authority =
//
//	[entra_principals]
//	; role = oid=<GUID> type=user|group|service [tenant=<GUID>] [admin=0|1] [mfa=0|1]
//	alice@contoso.com = oid=11111111-1111-1111-1111-111111111111 type=user admin=1 mfa=1
//	bob_fabrikam.com#EXT#@contoso.onmicrosoft.com = oid=22222222-2222-2222-2222-222222222222 type=user
//	"App Writers" = oid=33333333-3333-3333-3333-333333333333 type=group
//	billing-api = oid=44444444-4444-4444-4444-444444444444 type=service tenant=72f988bf-86f1-41af-91ab-2d7cd011db47
//
//	[databases]
//	app = host=10.0.0.5 auth_mode=entra server_auth=passthrough
//	legacy = host=10.0.0.6 auth_mode=password server_auth=password
//
// Every [entra] key is optional except tenants; the values shown for the
// others are the defaults, apart from principal_query,
// principal_query_database, server_auth and client_id (default: empty).
// Values follow the [pgbouncer] rules: flags are 0 or 1, times are seconds
// (decimals allowed, no unit), lists are comma-separated, and the value is
// the rest of the line: a ';' or '#' starts a comment only at the start of a
// line, so a comment cannot follow a value. See the Entra type for what each
// key means.
//
// principal_query is SQL returning (role, oid, type, admin) rows, or the
// word "pgaadauth" (PrincipalQueryPGAADAuth) for the built-in query that
// reads Azure's pgaadauth security labels; it runs in
// principal_query_database, a [databases] name.
//
// server_auth is one of passthrough, managed_identity, app_service,
// workload_identity, client_secret, client_certificate, or password (the
// default, as PgBouncer). client_secret needs client_id, tenant_id and an
// existing client_secret_file; client_certificate needs client_id, tenant_id
// and an existing client_cert_file (PEM: certificate and private key);
// managed_identity and app_service take at most one of client_id, object_id
// and resource_id (none: the system-assigned identity); workload_identity
// reads AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and
// AZURE_AUTHORITY_HOST when it runs; passthrough needs an auth mode that
// accepts tokens. Secrets are never written inline: only file names.
//
// In [entra_principals] the key is the role name (case-sensitive), and the
// value holds key=value pairs as in [databases]. Besides the usual key
// characters (letters, digits, _ . - *), a bare key there may contain '@' and
// '#', so user principal names and guest names (…#EXT#@…) need no quotes. A
// key may also be in double (or single) quotes, which allows any other
// character (a blank, an apostrophe) except that quote; a role name that
// starts with '#' or ';' must be quoted, since the line would be a comment.
// A role may be listed once.
//
// In [databases], auth_mode (password, entra, both) and server_auth (the
// values above) override the [entra] defaults for one database; auth_mode
// entra or both, and any server_auth but password, need an [entra] section.
//
// # pooler.yaml
//
// The same keys, in an entra: block (its presence enables Entra sign-in),
// with Go durations as elsewhere in pooler.yaml and the principals as a
// list:
//
//	entra:
//	  tenants: [72f988bf-86f1-41af-91ab-2d7cd011db47]
//	  clock_skew: 30s
//	  server_auth: managed_identity
//	  principals:
//	    - {role: alice@contoso.com, oid: 11111111-1111-1111-1111-111111111111, type: user, admin: true, mfa: true}
//	    - {role: "App Writers", oid: 33333333-3333-3333-3333-333333333333, type: group}
//	databases:
//	  app: {host: 10.0.0.5, auth_mode: entra, server_auth: passthrough}
//
// A principal's keys are role, oid, type, tenant, admin and mfa. Unknown keys
// are errors, as everywhere in pooler.yaml.

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Auth modes (Entra.AuthMode, Database.AuthMode): which credentials a client
// may sign in with.
const (
	// AuthModePassword accepts passwords only (auth_type decides how).
	AuthModePassword = "password"
	// AuthModeEntra accepts Entra access tokens only.
	AuthModeEntra = "entra"
	// AuthModeBoth accepts either.
	AuthModeBoth = "both"
)

// Backend credential sources (Entra.ServerAuth, Database.ServerAuth): how
// pgwarden logs in to PostgreSQL.
const (
	// ServerAuthPassword is the configured password or SCRAM secret, as
	// PgBouncer. Entra.ServerAuth stores it as "".
	ServerAuthPassword = "password"
	// ServerAuthPassthrough logs in as role R with the freshest unexpired
	// validated token of a client signed in as R.
	ServerAuthPassthrough = "passthrough"
	// ServerAuthManagedIdentity gets pgwarden's own token from IMDS.
	ServerAuthManagedIdentity = "managed_identity"
	// ServerAuthAppService gets it from IDENTITY_ENDPOINT (App Service,
	// Functions, Container Apps).
	ServerAuthAppService = "app_service"
	// ServerAuthWorkloadIdentity exchanges AZURE_FEDERATED_TOKEN_FILE.
	ServerAuthWorkloadIdentity = "workload_identity"
	// ServerAuthClientSecret uses an app registration's client secret.
	ServerAuthClientSecret = "client_secret"
	// ServerAuthClientCertificate uses an app registration's certificate.
	ServerAuthClientCertificate = "client_certificate"
)

// Principal types (EntraPrincipal.Type), as in pgaadauth security labels.
const (
	// EntraPrincipalUser is a user (member or guest); delegated tokens.
	EntraPrincipalUser = "user"
	// EntraPrincipalGroup is a group: any member signs in as the group role.
	EntraPrincipalGroup = "group"
	// EntraPrincipalService is a service principal or managed identity;
	// app-only tokens.
	EntraPrincipalService = "service"
)

// PrincipalQueryPGAADAuth, as Entra.PrincipalQuery, selects the built-in
// query that reads Azure's pgaadauth security labels.
const PrincipalQueryPGAADAuth = "pgaadauth"

// Defaults of the [entra] keys that have one.
const (
	defaultEntraAuthority = "https://login.microsoftonline.com"
	defaultEntraAudience  = "https://ossrdbms-aad.database.windows.net"
	defaultGraphEndpoint  = "https://graph.microsoft.com"
)

// entraParams lists every [entra] key, sorted, with its default in
// pgbouncer.ini spelling. SHOW CONFIG shows them as "entra.<key>"; all can
// be changed by RELOAD.
var entraParams = []param{
	{"allow_plaintext", "0", false, bBool(func(c *Config) *bool { return &c.Entra.AllowPlaintext })},
	{"audiences", defaultEntraAudience + "," + defaultEntraAudience + "/", false, bList(func(c *Config) *[]string { return &c.Entra.Audiences })},
	{"auth_mode", AuthModeBoth, false, bStr(func(c *Config) *string { return &c.Entra.AuthMode })},
	{"authority", defaultEntraAuthority, false, bStr(func(c *Config) *string { return &c.Entra.Authority })},
	{"client_cert_file", "", false, bStr(func(c *Config) *string { return &c.Entra.ClientCertFile })},
	{"client_id", "", false, bStr(func(c *Config) *string { return &c.Entra.ClientID })},
	{"client_secret_file", "", false, bStr(func(c *Config) *string { return &c.Entra.ClientSecretFile })},
	{"clock_skew", "30", false, bTime(func(c *Config) *time.Duration { return &c.Entra.ClockSkew })},
	{"disconnect_on_revoke", "1", false, bBool(func(c *Config) *bool { return &c.Entra.DisconnectOnRevoke })},
	{"disconnect_on_token_expiry", "0", false, bBool(func(c *Config) *bool { return &c.Entra.DisconnectOnTokenExpiry })},
	{"graph_endpoint", defaultGraphEndpoint, false, bStr(func(c *Config) *string { return &c.Entra.GraphEndpoint })},
	{"imds_endpoint", "", false, bStr(func(c *Config) *string { return &c.Entra.IMDSEndpoint })},
	{"jwks_cache_file", "", false, bStr(func(c *Config) *string { return &c.Entra.JWKSCacheFile })},
	{"jwks_refresh_interval", "3600", false, bTime(func(c *Config) *time.Duration { return &c.Entra.JWKSRefreshInterval })},
	{"object_id", "", false, bStr(func(c *Config) *string { return &c.Entra.ObjectID })},
	{"principal_query", "", false, bStr(func(c *Config) *string { return &c.Entra.PrincipalQuery })},
	{"principal_query_database", "", false, bStr(func(c *Config) *string { return &c.Entra.PrincipalQueryDatabase })},
	{"principal_refresh_interval", "300", false, bTime(func(c *Config) *time.Duration { return &c.Entra.PrincipalRefreshInterval })},
	{"resource_id", "", false, bStr(func(c *Config) *string { return &c.Entra.ResourceID })},
	{"server_auth", "", false, bStr(func(c *Config) *string { return &c.Entra.ServerAuth })},
	{"tenant_id", "", false, bStr(func(c *Config) *string { return &c.Entra.TenantID })},
	{"tenants", "", false, bList(func(c *Config) *[]string { return &c.Entra.Tenants })},
	{"token_endpoint_authority", "", false, bStr(func(c *Config) *string { return &c.Entra.TokenEndpointAuthority })},
	{"token_resource", defaultEntraAudience, false, bStr(func(c *Config) *string { return &c.Entra.TokenResource })},
	{"unknown_kid_refresh_interval", "300", false, bTime(func(c *Config) *time.Duration { return &c.Entra.UnknownKidRefreshInterval })},
}

// entraIndex finds an [entra] key by its exact name.
var entraIndex = func() map[string]*param {
	m := make(map[string]*param, len(entraParams))
	for i := range entraParams {
		m[entraParams[i].name] = &entraParams[i]
	}
	return m
}()

// entraPos is the positions key of an [entra] setting ("entra.<key>");
// positions["entra"] is where the section (or block) starts and
// positions["entra_principals"] where [entra_principals] does.
func entraPos(name string) string { return "entra." + name }

// applyEntraDefaults sets every Entra field to its default; AuthMode is
// "password" until an [entra] section turns Enabled on (enableEntra).
func applyEntraDefaults(c *Config) {
	for i := range entraParams {
		p := &entraParams[i]
		v, err := parseValue(p.kind, p.def)
		if err != nil {
			panic(fmt.Sprintf("config: bad default for entra.%s: %v", p.name, err))
		}
		p.set(c, v)
	}
	c.Entra.AuthMode = AuthModePassword
}

// enableEntra marks the Entra settings present, at the first [entra]
// section or entra: block, and switches AuthMode to its enabled default
// (a later auth_mode key overrides it).
func enableEntra(c *Config, pos positions, at origin) {
	if c.Entra.Enabled {
		return
	}
	c.Entra.Enabled = true
	c.Entra.AuthMode = AuthModeBoth
	pos["entra"] = at
}

// isPrincipalKeyChar reports whether b may appear in a bare key of
// [entra_principals], besides the usual key characters.
func isPrincipalKeyChar(b byte) bool {
	return b == '@' || b == '#'
}

// setEntra sets one [entra] key.
func (l *iniLoader) setEntra(file string, lineNo int, key, value string) {
	p, ok := entraIndex[key]
	if !ok {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Message: "unknown parameter: entra/" + key})
		return
	}
	v, err := parseValue(p.kind, value)
	if err != nil {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: "entra/" + key, Message: fmt.Sprintf("invalid value %q: %v", value, err)})
		return
	}
	l.pos[entraPos(p.name)] = origin{file: file, line: lineNo, key: "entra/" + key}
	p.set(l.c, v)
}

// setEntraPrincipal parses one [entra_principals] entry: role = oid=…
// type=… [tenant=…] [admin=0|1] [mfa=0|1].
func (l *iniLoader) setEntraPrincipal(file string, lineNo int, role, value string) {
	pkey := "entra_principals/" + role
	fail := func(msg string) {
		l.errs = append(l.errs, Problem{File: file, Line: lineNo, Key: pkey, Message: msg})
	}
	pairs, err := parseConnString(value)
	if err != nil {
		fail(err.Error())
		return
	}
	pr := EntraPrincipal{Role: role, File: file, Line: lineNo}
	seen := map[string]bool{}
	ok := true
	for _, kv := range pairs {
		k, v := kv.key, kv.value
		var err error
		switch {
		case seen[k]:
			err = fmt.Errorf("%s is given twice", k)
		case k == "oid":
			pr.OID = v
		case k == "type":
			pr.Type = v
		case k == "tenant":
			pr.Tenant = v
		case k == "admin", k == "mfa":
			var b bool
			if b, err = parseINIBool(v); err != nil {
				err = fmt.Errorf("invalid value for %s: %w", k, err)
			} else if k == "admin" {
				pr.Admin = b
			} else {
				pr.MFA = b
			}
		default:
			err = fmt.Errorf("unrecognized principal parameter: %s (expected oid, type, tenant, admin or mfa)", k)
		}
		seen[k] = true
		if err != nil {
			fail(err.Error())
			ok = false
		}
	}
	if ok {
		l.c.Entra.Principals = append(l.c.Entra.Principals, pr)
	}
}

// yamlEntra is pooler.yaml's entra: block; the keys are [entra]'s.
type yamlEntra struct {
	AuthMode                  *string         `yaml:"auth_mode"`
	Authority                 *string         `yaml:"authority"`
	Tenants                   *[]string       `yaml:"tenants"`
	Audiences                 *[]string       `yaml:"audiences"`
	ClockSkew                 *yamlDuration   `yaml:"clock_skew"`
	JWKSCacheFile             *string         `yaml:"jwks_cache_file"`
	JWKSRefreshInterval       *yamlDuration   `yaml:"jwks_refresh_interval"`
	UnknownKidRefreshInterval *yamlDuration   `yaml:"unknown_kid_refresh_interval"`
	AllowPlaintext            *bool           `yaml:"allow_plaintext"`
	DisconnectOnTokenExpiry   *bool           `yaml:"disconnect_on_token_expiry"`
	DisconnectOnRevoke        *bool           `yaml:"disconnect_on_revoke"`
	GraphEndpoint             *string         `yaml:"graph_endpoint"`
	PrincipalQuery            *string         `yaml:"principal_query"`
	PrincipalQueryDatabase    *string         `yaml:"principal_query_database"`
	PrincipalRefreshInterval  *yamlDuration   `yaml:"principal_refresh_interval"`
	Principals                []yamlPrincipal `yaml:"principals"`
	ServerAuth                *string         `yaml:"server_auth"`
	ClientID                  *string         `yaml:"client_id"`
	ObjectID                  *string         `yaml:"object_id"`
	ResourceID                *string         `yaml:"resource_id"`
	TenantID                  *string         `yaml:"tenant_id"`
	ClientSecretFile          *string         `yaml:"client_secret_file"`
	ClientCertFile            *string         `yaml:"client_cert_file"`
	TokenResource             *string         `yaml:"token_resource"`
	IMDSEndpoint              *string         `yaml:"imds_endpoint"`
	TokenEndpointAuthority    *string         `yaml:"token_endpoint_authority"`
}

// yamlPrincipal is one entra.principals item.
type yamlPrincipal struct {
	Role   string `yaml:"role"`
	OID    string `yaml:"oid"`
	Type   string `yaml:"type"`
	Tenant string `yaml:"tenant"`
	Admin  bool   `yaml:"admin"`
	MFA    bool   `yaml:"mfa"`
}

// leaves maps each [entra] key to its decoded field.
func (e *yamlEntra) leaves() map[string]any {
	return map[string]any{
		"auth_mode":                    e.AuthMode,
		"authority":                    e.Authority,
		"tenants":                      e.Tenants,
		"audiences":                    e.Audiences,
		"clock_skew":                   e.ClockSkew,
		"jwks_cache_file":              e.JWKSCacheFile,
		"jwks_refresh_interval":        e.JWKSRefreshInterval,
		"unknown_kid_refresh_interval": e.UnknownKidRefreshInterval,
		"allow_plaintext":              e.AllowPlaintext,
		"disconnect_on_token_expiry":   e.DisconnectOnTokenExpiry,
		"disconnect_on_revoke":         e.DisconnectOnRevoke,
		"graph_endpoint":               e.GraphEndpoint,
		"principal_query":              e.PrincipalQuery,
		"principal_query_database":     e.PrincipalQueryDatabase,
		"principal_refresh_interval":   e.PrincipalRefreshInterval,
		"server_auth":                  e.ServerAuth,
		"client_id":                    e.ClientID,
		"object_id":                    e.ObjectID,
		"resource_id":                  e.ResourceID,
		"tenant_id":                    e.TenantID,
		"client_secret_file":           e.ClientSecretFile,
		"client_cert_file":             e.ClientCertFile,
		"token_resource":               e.TokenResource,
		"imds_endpoint":                e.IMDSEndpoint,
		"token_endpoint_authority":     e.TokenEndpointAuthority,
	}
}

// applyYAMLEntra copies a decoded entra: block into c. present says the file
// has an entra: key (even with an empty value); lines and badLines are
// loadYAML's. It returns the problems of values it could not use.
func applyYAMLEntra(c *Config, y *yamlEntra, present bool, path string, lines map[string]int, badLines map[int]bool, pos positions) []Problem {
	if !present {
		return nil
	}
	enableEntra(c, pos, origin{file: path, line: lines["entra"], key: "entra"})
	if y == nil {
		return nil
	}
	var errs []Problem
	for _, p := range entraParams {
		yp := "entra." + p.name
		line, set := lines[yp]
		if !set || badLines[line] {
			continue
		}
		pos[entraPos(p.name)] = origin{file: path, line: line, key: yp}
		v, ok, err := leafValue(p.kind, y.leaves()[p.name])
		if err != nil {
			errs = append(errs, Problem{File: path, Line: line, Key: yp, Message: err.Error()})
			continue
		}
		if ok {
			p.set(c, v)
		}
	}
	for i, yp := range y.Principals {
		c.Entra.Principals = append(c.Entra.Principals, EntraPrincipal{
			Role: yp.Role, OID: yp.OID, Type: yp.Type, Tenant: yp.Tenant, Admin: yp.Admin, MFA: yp.MFA,
			File: path, Line: lines[fmt.Sprintf("entra.principals[%d]", i)],
		})
	}
	return errs
}

// normalizeEntra lower-cases the Entra enumerations and GUIDs, replaces an
// empty auth_mode by its default, maps a global server_auth of "password"
// to "", and lower-cases the per-database overrides (where "password"
// stays: "" means inherit).
func normalizeEntra(c *Config) {
	e := &c.Entra
	e.AuthMode = strings.ToLower(e.AuthMode)
	if e.AuthMode == "" {
		e.AuthMode = c.EffectiveAuthMode(nil)
	}
	e.ServerAuth = strings.ToLower(e.ServerAuth)
	if e.ServerAuth == ServerAuthPassword {
		e.ServerAuth = ""
	}
	for i, t := range e.Tenants {
		e.Tenants[i] = strings.ToLower(t)
	}
	for i := range e.Principals {
		p := &e.Principals[i]
		p.OID, p.Type, p.Tenant = strings.ToLower(p.OID), strings.ToLower(p.Type), strings.ToLower(p.Tenant)
	}
	for _, db := range c.Databases {
		db.AuthMode = strings.ToLower(db.AuthMode)
		db.ServerAuth = strings.ToLower(db.ServerAuth)
	}
}

// EffectiveAuthMode returns a database's auth mode: its own auth_mode, else
// Entra.AuthMode, else AuthModeBoth when Entra is enabled and
// AuthModePassword when not. db may be nil.
func (c *Config) EffectiveAuthMode(db *Database) string {
	switch {
	case db != nil && db.AuthMode != "":
		return db.AuthMode
	case c.Entra.AuthMode != "":
		return c.Entra.AuthMode
	case c.Entra.Enabled:
		return AuthModeBoth
	}
	return AuthModePassword
}

// EffectiveServerAuth returns how pgwarden logs in to a database's server:
// the database's server_auth, else Entra.ServerAuth; "" means the
// configured password (ServerAuthPassword is returned as ""). db may be nil.
func (c *Config) EffectiveServerAuth(db *Database) string {
	s := c.Entra.ServerAuth
	if db != nil && db.ServerAuth != "" {
		s = db.ServerAuth
	}
	if s == ServerAuthPassword {
		return ""
	}
	return s
}

// EffectiveUserServerAuth is EffectiveServerAuth with the [users] override
// of the pool's role applied first.
func (c *Config) EffectiveUserServerAuth(db *Database, user string) string {
	if u, ok := c.Users[user]; ok && u.ServerAuth != "" {
		if u.ServerAuth == ServerAuthPassword {
			return ""
		}
		return u.ServerAuth
	}
	return c.EffectiveServerAuth(db)
}

// validAuthMode reports whether m is an auth mode.
func validAuthMode(m string) bool {
	return m == AuthModePassword || m == AuthModeEntra || m == AuthModeBoth
}

// serverAuthValues are the server_auth values, as listed in messages.
var serverAuthValues = []string{ServerAuthPassword, ServerAuthPassthrough, ServerAuthManagedIdentity, ServerAuthAppService,
	ServerAuthWorkloadIdentity, ServerAuthClientSecret, ServerAuthClientCertificate}

// validServerAuth reports whether s is a server_auth value ("" is password).
func validServerAuth(s string) bool {
	return s == "" || slices.Contains(serverAuthValues, s)
}

// acceptsTokens reports whether an auth mode signs clients in with tokens.
func acceptsTokens(mode string) bool {
	return mode == AuthModeEntra || mode == AuthModeBoth
}

// guidRE matches a GUID in its usual 8-4-4-4-12 hex form.
var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// isGUID reports whether s is a GUID such as an Entra object or tenant ID.
func isGUID(s string) bool { return guidRE.MatchString(s) }

// isLoopbackHost reports whether host (without brackets or port) is
// localhost or a loopback address (127.0.0.0/8, ::1).
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkEntraURL checks an absolute http(s) URL setting; plain http is
// allowed only on loopback hosts unless anyHTTP. It returns "" or what is
// wrong.
func checkEntraURL(raw string, anyHTTP bool) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		return fmt.Sprintf("%q is not an absolute http:// or https:// URL", raw)
	case u.User != nil:
		return fmt.Sprintf("%q must not carry a user name or password", raw)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Sprintf("%q must not have a query or fragment", raw)
	case u.Scheme == "http" && !anyHTTP && !isLoopbackHost(u.Hostname()):
		return fmt.Sprintf("%q must use https:// (http:// only on loopback: localhost, 127.0.0.0/8, ::1)", raw)
	}
	return ""
}

// maxRoleNameLen is PostgreSQL's NAMEDATALEN-1: longer user names are
// truncated by the server.
const maxRoleNameLen = 63

// largeClockSkew is the clock_skew above which a warning is given.
const largeClockSkew = 5 * time.Minute

// entraSection names the Entra settings' home in the file's format, for
// messages.
func (c *Config) entraSection() string {
	if c.Format == "yaml" {
		return "an entra: block"
	}
	return "an [entra] section"
}

// entraProblem locates a problem at an [entra] key: where the file set it,
// else at the section (or block) start, else at the file.
func (c *Config) entraProblem(pos positions, name, msg string) Problem {
	if o, ok := pos[entraPos(name)]; ok {
		return Problem{File: o.file, Line: o.line, Key: o.key, Message: msg}
	}
	p := Problem{File: c.Path, Key: c.entryKey("entra", name), Message: msg}
	if o, ok := pos["entra"]; ok {
		p.File, p.Line = o.file, o.line
	}
	return p
}

// principalProblem locates a problem at principal i.
func (c *Config) principalProblem(i int, msg string) Problem {
	pr := c.Entra.Principals[i]
	p := Problem{File: c.Path, Line: pr.Line, Key: "entra_principals/" + pr.Role, Message: msg}
	if c.Format == "yaml" {
		p.Key = fmt.Sprintf("entra.principals[%d]", i)
	}
	if pr.File != "" {
		p.File = pr.File
	}
	return p
}

// validateEntra checks the Entra settings and the databases' auth_mode and
// server_auth (see Validate).
func (c *Config) validateEntra(pos positions) (errs, warns []Problem) {
	e := &c.Entra
	bad := func(name, format string, args ...any) {
		errs = append(errs, c.entraProblem(pos, name, fmt.Sprintf(format, args...)))
	}
	warn := func(name, format string, args ...any) {
		warns = append(warns, c.entraProblem(pos, name, fmt.Sprintf(format, args...)))
	}
	const modes = "password, entra or both"
	serverAuths := strings.Join(serverAuthValues, ", ")

	// Databases: values, and what they need from [entra].
	for _, name := range c.databaseNames() {
		db := c.Databases[name]
		dbBad := func(format string, args ...any) {
			errs = append(errs, c.dbProblem(name, fmt.Sprintf(format, args...)))
		}
		if db.AuthMode != "" && !validAuthMode(db.AuthMode) {
			dbBad("invalid auth_mode %q (expected %s)", db.AuthMode, modes)
		} else if !e.Enabled && acceptsTokens(db.AuthMode) {
			dbBad("auth_mode %s needs %s", db.AuthMode, c.entraSection())
		}
		if db.ServerAuth != "" && !validServerAuth(db.ServerAuth) {
			dbBad("invalid server_auth %q (expected %s)", db.ServerAuth, serverAuths)
		} else if !e.Enabled && db.ServerAuth != "" && db.ServerAuth != ServerAuthPassword {
			dbBad("server_auth %s needs %s", db.ServerAuth, c.entraSection())
		} else if e.Enabled && (db.ServerAuth != "" || db.AuthMode != "") &&
			c.EffectiveServerAuth(db) == ServerAuthPassthrough && !acceptsTokens(c.EffectiveAuthMode(db)) {
			dbBad("server_auth passthrough needs auth_mode entra or both: it logs in with the tokens of clients")
		}
	}

	if !e.Enabled {
		if len(e.Principals) > 0 {
			p := Problem{File: c.Path, Key: "entra_principals", Message: "Entra principals need " + c.entraSection()}
			if o, ok := pos["entra_principals"]; ok {
				p.File, p.Line, p.Key = o.file, o.line, o.key
			}
			errs = append(errs, p)
		}
		if e.AuthMode != "" && e.AuthMode != AuthModePassword {
			bad("auth_mode", "auth_mode %s needs Entra enabled", e.AuthMode)
		}
		if e.ServerAuth != "" && e.ServerAuth != ServerAuthPassword {
			bad("server_auth", "server_auth %s needs Entra enabled", e.ServerAuth)
		}
		return errs, warns
	}

	// Client sign-in.
	if e.AuthMode != "" && !validAuthMode(e.AuthMode) {
		bad("auth_mode", "invalid auth_mode %q (expected %s)", e.AuthMode, modes)
	}
	if len(e.Tenants) == 0 {
		bad("tenants", "at least one tenant ID is required: the tid values (GUIDs) whose tokens are accepted")
	}
	for _, t := range e.Tenants {
		if !isGUID(t) {
			bad("tenants", "tenant %q is not a GUID (tenant IDs, not domain names)", t)
		}
	}
	if len(e.Audiences) == 0 {
		bad("audiences", "at least one audience is required")
	}
	for _, u := range []struct {
		name, value string
		optional    bool
		anyHTTP     bool
	}{
		{"authority", e.Authority, false, false},
		{"graph_endpoint", e.GraphEndpoint, false, false},
		{"token_endpoint_authority", e.TokenEndpointAuthority, true, false},
		{"imds_endpoint", e.IMDSEndpoint, true, true},
	} {
		if u.value == "" && u.optional {
			continue
		}
		if msg := checkEntraURL(u.value, u.anyHTTP); msg != "" {
			bad(u.name, "%s", msg)
		}
	}
	switch {
	case e.ClockSkew < 0:
		bad("clock_skew", "must not be negative (got %v)", e.ClockSkew)
	case e.ClockSkew > largeClockSkew:
		warn("clock_skew", "%v is a large clock skew: expired tokens are accepted that long", e.ClockSkew)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"jwks_refresh_interval", e.JWKSRefreshInterval},
		{"unknown_kid_refresh_interval", e.UnknownKidRefreshInterval},
	} {
		if d.v <= 0 {
			bad(d.name, "must be positive (got %v)", d.v)
		}
	}
	if e.PrincipalRefreshInterval < 0 {
		bad("principal_refresh_interval", "must not be negative (got %v)", e.PrincipalRefreshInterval)
	}
	if e.JWKSCacheFile != "" {
		if dir := filepath.Dir(e.JWKSCacheFile); !exists(dir) {
			warn("jwks_cache_file", "directory %q not found; the key cache cannot be written", dir)
		}
	}

	// Principals.
	switch {
	case e.PrincipalQuery != "" && e.PrincipalQueryDatabase == "":
		bad("principal_query_database", "principal_query needs principal_query_database (the database it runs in)")
	case e.PrincipalQuery != "" && e.PrincipalQueryDatabase == adminDBName:
		bad("principal_query_database", "principal_query_database must not be the admin database %q", adminDBName)
	case e.PrincipalQuery != "":
		if _, ok := c.LookupDatabase(e.PrincipalQueryDatabase); !ok {
			bad("principal_query_database", "database %q is not configured", e.PrincipalQueryDatabase)
		}
	case e.PrincipalQueryDatabase != "":
		warn("principal_query_database", "ignored: principal_query is not set")
	}
	if len(e.Principals) == 0 && e.PrincipalQuery == "" {
		warn("tenants", "no principals and no principal_query: no client can sign in with a token")
	}
	seen := map[string]int{}
	for i, p := range e.Principals {
		pBad := func(format string, args ...any) {
			errs = append(errs, c.principalProblem(i, fmt.Sprintf(format, args...)))
		}
		if p.Role == "" {
			pBad("role is required")
		} else if j, dup := seen[p.Role]; dup {
			first := e.Principals[j]
			where := fmt.Sprintf("line %d", first.Line)
			if first.File != p.File {
				where = Problem{File: first.File, Line: first.Line}.Error()
			}
			pBad("role %q is listed twice (first at %s)", p.Role, where)
		} else {
			seen[p.Role] = i
		}
		if len(p.Role) > maxRoleNameLen {
			warns = append(warns, c.principalProblem(i, fmt.Sprintf("role name is longer than %d bytes; PostgreSQL truncates user names to that length", maxRoleNameLen)))
		}
		switch {
		case p.OID == "":
			pBad("oid is required (the object ID of the user, group or service principal)")
		case !isGUID(p.OID):
			pBad("oid %q is not a GUID", p.OID)
		}
		switch p.Type {
		case EntraPrincipalUser, EntraPrincipalGroup, EntraPrincipalService:
		case "":
			pBad("type is required (user, group or service)")
		default:
			pBad("invalid type %q (expected user, group or service)", p.Type)
		}
		switch {
		case p.Tenant == "":
		case !isGUID(p.Tenant):
			pBad("tenant %q is not a GUID", p.Tenant)
		case len(e.Tenants) > 0 && !slices.Contains(e.Tenants, p.Tenant):
			warns = append(warns, c.principalProblem(i, fmt.Sprintf("tenant %s is not in tenants: this principal cannot sign in", p.Tenant)))
		}
	}

	// Backend credentials.
	if !validServerAuth(e.ServerAuth) {
		bad("server_auth", "invalid server_auth %q (expected %s)", e.ServerAuth, serverAuths)
	} else if e.ServerAuth == ServerAuthPassthrough && !acceptsTokens(c.EffectiveAuthMode(nil)) {
		bad("server_auth", "server_auth passthrough needs auth_mode entra or both: it logs in with the tokens of clients")
	}
	for _, f := range []struct{ name, value string }{
		{"client_secret_file", e.ClientSecretFile},
		{"client_cert_file", e.ClientCertFile},
	} {
		if f.value != "" && !exists(f.value) {
			bad(f.name, "file %q not found", f.value)
		}
	}
	// Each provider in use, with the first database that uses it when the
	// global default does not.
	used := map[string]string{}
	if e.ServerAuth != "" {
		used[e.ServerAuth] = ""
	}
	for _, name := range c.databaseNames() {
		if s := c.EffectiveServerAuth(c.Databases[name]); s != "" {
			if _, ok := used[s]; !ok {
				used[s] = name
			}
		}
	}
	for _, s := range serverAuthValues {
		dbName, ok := used[s]
		if !ok {
			continue
		}
		what := "server_auth " + s
		if dbName != "" {
			what = fmt.Sprintf("server_auth %s (database %s)", s, dbName)
		}
		need := func(name, value string) {
			if value == "" {
				bad(name, "%s needs %s", what, name)
			}
		}
		switch s {
		case ServerAuthClientSecret:
			need("client_id", e.ClientID)
			need("tenant_id", e.TenantID)
			need("client_secret_file", e.ClientSecretFile)
		case ServerAuthClientCertificate:
			need("client_id", e.ClientID)
			need("tenant_id", e.TenantID)
			need("client_cert_file", e.ClientCertFile)
		case ServerAuthManagedIdentity, ServerAuthAppService:
			var set []string
			for _, id := range []struct{ name, value string }{{"client_id", e.ClientID}, {"object_id", e.ObjectID}, {"resource_id", e.ResourceID}} {
				if id.value != "" {
					set = append(set, id.name)
				}
			}
			if len(set) > 1 {
				bad(set[1], "%s takes at most one of client_id, object_id and resource_id (got %s)", what, strings.Join(set, " and "))
			}
		}
		if s != ServerAuthPassthrough {
			need("token_resource", e.TokenResource)
		}
	}

	// Tokens travel as passwords: without TLS they are refused.
	if !e.AllowPlaintext && c.ClientTLS.Mode == TLSDisable && c.anyAcceptsTokens() {
		warns = append(warns, pos.problem(c.Path, "client_tls_sslmode", "client_tls_sslmode is disable and allow_plaintext is off: every token sign-in is refused"))
	}
	return errs, warns
}

// anyAcceptsTokens reports whether the global auth mode or some database's
// accepts tokens.
func (c *Config) anyAcceptsTokens() bool {
	if acceptsTokens(c.EffectiveAuthMode(nil)) {
		return true
	}
	for _, db := range c.Databases {
		if acceptsTokens(c.EffectiveAuthMode(db)) {
			return true
		}
	}
	return false
}

// entraSettings returns the SHOW CONFIG rows of the [entra] keys.
func entraSettings(c *Config) []Setting {
	out := make([]Setting, 0, len(entraParams))
	for i := range entraParams {
		p := &entraParams[i]
		s := Setting{Key: "entra." + p.name, Value: p.get(c), Default: p.def, Changeable: !p.restart}
		if p.name == "auth_mode" && !c.Entra.Enabled {
			s.Default = AuthModePassword
		}
		out = append(out, s)
	}
	return out
}

// resolveEntraFiles resolves the Entra file names as the other files of a
// configuration are (see resolvePath).
func resolveEntraFiles(c *Config, baseDir string) {
	for _, f := range []*string{&c.Entra.JWKSCacheFile, &c.Entra.ClientSecretFile, &c.Entra.ClientCertFile} {
		if *f != "" {
			*f, _ = resolvePath(*f, baseDir)
		}
	}
}

// validateUserServerAuth checks the [users] server_auth overrides.
func (c *Config) validateUserServerAuth() (errs []Problem) {
	for name, u := range c.Users {
		if u.ServerAuth == "" {
			continue
		}
		p := Problem{File: u.File, Line: u.Line, Key: "users/" + name}
		switch {
		case !validServerAuth(u.ServerAuth):
			p.Message = fmt.Sprintf("invalid server_auth %q (expected %s)", u.ServerAuth, strings.Join(serverAuthValues, ", "))
		case !c.Entra.Enabled && u.ServerAuth != ServerAuthPassword:
			p.Message = fmt.Sprintf("server_auth %s needs %s", u.ServerAuth, c.entraSection())
		default:
			continue
		}
		errs = append(errs, p)
	}
	return errs
}
