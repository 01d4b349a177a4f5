package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	tenantA = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	tenantB = "0b8b8b44-5f2a-4d1e-9a4c-3a3f2b1c0d9e"
	oidA    = "11111111-1111-1111-1111-111111111111"
	oidB    = "22222222-2222-2222-2222-222222222222"
)

// wantFullEntra is what testdata/entra_full.ini and entra_full.yaml hold
// (File and Line left out).
var wantFullEntra = Entra{
	Enabled:                   true,
	AuthMode:                  AuthModeEntra,
	Authority:                 "http://127.0.0.1:8400",
	Tenants:                   []string{tenantA, tenantB},
	Audiences:                 []string{"api://pgwarden", "https://ossrdbms-aad.database.usgovcloudapi.net"},
	ClockSkew:                 2500 * time.Millisecond,
	JWKSCacheFile:             "testdata/jwks.json",
	JWKSRefreshInterval:       30 * time.Minute,
	UnknownKidRefreshInterval: time.Minute,
	AllowPlaintext:            true,
	DisconnectOnTokenExpiry:   true,
	DisconnectOnRevoke:        false,
	GraphEndpoint:             "http://[::1]:8401",
	PrincipalQuery:            "SELECT role, oid, type, admin FROM entra_roles WHERE note <> 'a;b#c'",
	PrincipalQueryDatabase:    "app",
	PrincipalRefreshInterval:  0,
	Principals: []EntraPrincipal{
		{Role: "alice@contoso.com", OID: oidA, Type: "user", Admin: true, MFA: true},
		{Role: "bob_fabrikam.com#EXT#@contoso.onmicrosoft.com", OID: oidB, Type: "user"},
		{Role: "carol_example.org#EXT#@contoso.onmicrosoft.com", OID: "aaaaaaaa-2222-2222-2222-222222222222", Type: "user"},
		{Role: "App Writers", OID: "33333333-3333-3333-3333-333333333333", Type: "group"},
		{Role: "o'brien@contoso.com", OID: "55555555-5555-5555-5555-555555555555", Type: "user", Tenant: tenantB},
		{Role: "billing-api", OID: "44444444-4444-4444-4444-444444444444", Type: "service", Tenant: tenantA},
		{Role: "#hash-first", OID: "66666666-6666-6666-6666-666666666666", Type: "group"},
	},
	ServerAuth:             ServerAuthClientSecret,
	ClientID:               "5c7a3b1e-2d4f-4e6a-8b9c-0d1e2f3a4b5c",
	TenantID:               "contoso.onmicrosoft.com",
	ClientSecretFile:       "testdata/entra_secret.txt",
	ClientCertFile:         "testdata/entra_cert.pem",
	TokenResource:          "https://ossrdbms-aad.database.usgovcloudapi.net",
	IMDSEndpoint:           "http://localhost:8402/metadata/identity/oauth2/token",
	TokenEndpointAuthority: "http://localhost:8403/",
}

// withoutPositions returns e's principals without File and Line.
func withoutPositions(e Entra) Entra {
	e.Principals = slices.Clone(e.Principals)
	for i := range e.Principals {
		e.Principals[i].File, e.Principals[i].Line = "", 0
	}
	return e
}

// TestEntraFullBothFormats loads every key from both formats: the same
// Config.Entra, databases and SHOW CONFIG rows come out.
func TestEntraFullBothFormats(t *testing.T) {
	ini, err := LoadINI("testdata/entra_full.ini")
	if err != nil {
		t.Fatalf("LoadINI: %v", err)
	}
	yml, err := LoadYAML("testdata/entra_full.yaml")
	if err != nil {
		t.Fatalf("LoadYAML: %v", err)
	}
	for _, c := range []*Config{ini, yml} {
		if len(c.Warnings) != 0 {
			t.Errorf("%s: warnings %v", c.Path, c.Warnings)
		}
		if got := withoutPositions(c.Entra); !reflect.DeepEqual(got, wantFullEntra) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.Path, got, wantFullEntra)
		}
		for _, db := range []struct{ name, authMode, serverAuth, effMode, effServer string }{
			{"app", "both", "passthrough", "both", "passthrough"},
			{"legacy", "password", "password", "password", ""},
			{"mi", "", "managed_identity", "entra", "managed_identity"},
			{"plain", "", "", "entra", "client_secret"},
		} {
			d := c.Databases[db.name]
			if d.AuthMode != db.authMode || d.ServerAuth != db.serverAuth {
				t.Errorf("%s: database %s: auth_mode %q server_auth %q", c.Path, db.name, d.AuthMode, d.ServerAuth)
			}
			if m, s := c.EffectiveAuthMode(d), c.EffectiveServerAuth(d); m != db.effMode || s != db.effServer {
				t.Errorf("%s: database %s: effective %q %q, want %q %q", c.Path, db.name, m, s, db.effMode, db.effServer)
			}
		}
	}
	// Positions: file order, each principal's own line.
	wantLines := map[string][]int{ini.Path: {34, 35, 36, 37, 38, 39, 41}, yml.Path: {20, 21, 24, 25, 26, 27, 28}}
	for _, c := range []*Config{ini, yml} {
		var lines []int
		for _, p := range c.Entra.Principals {
			if p.File != c.Path {
				t.Errorf("principal %s: file %q", p.Role, p.File)
			}
			lines = append(lines, p.Line)
		}
		if !slices.Equal(lines, wantLines[c.Path]) {
			t.Errorf("%s: principal lines %v, want %v", c.Path, lines, wantLines[c.Path])
		}
	}
	for i := range ini.Settings {
		a, b := ini.Settings[i], yml.Settings[i]
		if a.Key != "conffile" && a != b {
			t.Errorf("SHOW CONFIG differs:\n ini %+v\nyaml %+v", a, b)
		}
	}
}

// TestEntraDefaults checks the defaults with a minimal [entra], and without
// one.
func TestEntraDefaults(t *testing.T) {
	dir := t.TempDir()
	want := Entra{
		Enabled:                   true,
		AuthMode:                  AuthModeBoth,
		Authority:                 "https://login.microsoftonline.com",
		Tenants:                   []string{tenantA},
		Audiences:                 []string{"https://ossrdbms-aad.database.windows.net", "https://ossrdbms-aad.database.windows.net/"},
		ClockSkew:                 30 * time.Second,
		JWKSRefreshInterval:       time.Hour,
		UnknownKidRefreshInterval: 5 * time.Minute,
		DisconnectOnRevoke:        true,
		GraphEndpoint:             "https://graph.microsoft.com",
		PrincipalRefreshInterval:  5 * time.Minute,
		TokenResource:             "https://ossrdbms-aad.database.windows.net",
	}
	ini := writeFile(t, dir, "m.ini", "[pgbouncer]\nauth_user = a\n[entra]\ntenants = "+tenantA+"\n")
	yml := writeFile(t, dir, "m.yaml", "auth: {user: a}\nentra:\n  tenants: ["+tenantA+"]\n")
	for _, p := range []string{ini, yml} {
		c, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c.Entra, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", p, c.Entra, want)
		}
		if c.EffectiveAuthMode(nil) != AuthModeBoth || c.EffectiveServerAuth(nil) != "" {
			t.Errorf("%s: effective %q %q", p, c.EffectiveAuthMode(nil), c.EffectiveServerAuth(nil))
		}
		// Minimal: no principals (warning) and tokens without TLS (warning).
		var ws []string
		for _, w := range c.Warnings {
			ws = append(ws, w.Error())
		}
		joined := strings.Join(ws, "\n")
		if len(ws) != 2 || !strings.Contains(joined, "no principals and no principal_query") || !strings.Contains(joined, "every token sign-in is refused") {
			t.Errorf("%s: warnings:\n%s", p, joined)
		}
	}

	// No [entra]: disabled, password only, the other defaults in place.
	for _, p := range []string{
		writeFile(t, dir, "none.ini", "[pgbouncer]\nauth_user = a\n"),
		writeFile(t, dir, "none.yaml", "auth: {user: a}\n"),
		writeFile(t, dir, "commented.yaml", "auth: {user: a}\n# entra:\n#   tenants: [x]\n"),
	} {
		c, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		off := want
		off.Enabled, off.AuthMode, off.Tenants = false, AuthModePassword, nil
		if !reflect.DeepEqual(c.Entra, off) {
			t.Errorf("%s:\n got %+v\nwant %+v", p, c.Entra, off)
		}
		if c.EffectiveAuthMode(nil) != AuthModePassword || len(c.Warnings) != 0 {
			t.Errorf("%s: mode %q warnings %v", p, c.EffectiveAuthMode(nil), c.Warnings)
		}
	}

	// An empty auth_mode is the default.
	p := writeFile(t, dir, "e.yaml", "auth: {user: a}\nentra: {tenants: ["+tenantA+"], auth_mode: \"\"}\n")
	if c, err := Load(p); err != nil || c.Entra.AuthMode != AuthModeBoth {
		t.Errorf("auth_mode \"\": %v", err)
	}

	// An empty entra: block enables Entra (and then tenants are missing).
	p = writeFile(t, dir, "empty.yaml", "auth: {user: a}\nentra:\n")
	_, err := Load(p)
	if err == nil {
		t.Fatal("entra: without tenants accepted")
	}
	wantProblem(t, problems(t, err), 2, "empty.yaml:2: entra.tenants: at least one tenant ID is required")

	// [entra] twice (here through %include) is one section.
	inc := writeFile(t, dir, "inc.ini", "[entra]\nallow_plaintext = 1\n")
	p = writeFile(t, dir, "twice.ini", "[pgbouncer]\nauth_user = a\n[entra]\nauth_mode = entra\ntenants = "+tenantA+"\n%include "+inc+"\n[entra_principals]\nx = oid="+oidA+" type=user\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Entra.AuthMode != AuthModeEntra || !c.Entra.AllowPlaintext || len(c.Warnings) != 0 {
		t.Errorf("twice: %+v %v", c.Entra, c.Warnings)
	}
}

// TestEntraPrincipalKeys checks the key syntax of [entra_principals].
func TestEntraPrincipalKeys(t *testing.T) {
	head := "[pgbouncer]\nauth_user = a\n[entra]\nallow_plaintext = 1\ntenants = " + tenantA + "\n"
	tests := []struct {
		line     string
		wantRole string
		wantErr  string
	}{
		{"alice@contoso.com = oid=" + oidA + " type=user", "alice@contoso.com", ""},
		{"alice_fabrikam.com#EXT#@contoso.onmicrosoft.com = oid=" + oidA + " type=user", "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com", ""},
		{"alice_fabrikam.com#EXT#@contoso.onmicrosoft.com=oid=" + oidA + " type=user", "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com", ""},
		{`"alice_fabrikam.com#EXT#@contoso.onmicrosoft.com" = oid=` + oidA + " type=user", "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com", ""},
		{`"Sales & Marketing" = oid=` + oidA + " type=group", "Sales & Marketing", ""},
		{`'quoted' = oid=` + oidA + " type=group", "quoted", ""},
		{`"#starts-with-hash" = oid=` + oidA + " type=user", "#starts-with-hash", ""},
		{"Dept.Finance-2*_x = oid=" + oidA + " type=group", "Dept.Finance-2*_x", ""},
		{"o'brien@contoso.com = oid=" + oidA + " type=user", "", "syntax error: expected key = value"},
		{"two words = oid=" + oidA + " type=user", "", "syntax error: expected key = value"},
		{`"open = oid=` + oidA, "", "unterminated or empty quoted key"},
		{"a@b = oid=" + oidA + " type=user bogus=1", "", "entra_principals/a@b: unrecognized principal parameter: bogus"},
		{"a@b = oid=" + oidA + " type=user admin=yes", "", `invalid value for admin: expected 0 or 1`},
		{"a@b = oid=" + oidA + " type=user mfa=2", "", `invalid value for mfa: expected 0 or 1`},
		{"a@b = oid=" + oidA + " oid=" + oidB + " type=user", "", "oid is given twice"},
		{"a@b = oid='" + oidA, "", "unterminated quoted value"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			p := writeFile(t, dir, "p.ini", head+"[entra_principals]\n"+tt.line+"\n")
			c, err := LoadINI(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "p.ini:7") {
					t.Fatalf("err = %v, want %q at p.ini:7", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Entra.Principals) != 1 || c.Entra.Principals[0].Role != tt.wantRole || c.Entra.Principals[0].Line != 7 {
				t.Errorf("principals = %+v", c.Entra.Principals)
			}
		})
	}

	// '@' and '#' stay outside the key syntax of the other sections, and a
	// line starting with '#' is a comment in [entra_principals] too.
	p := writeFile(t, dir, "db.ini", "[pgbouncer]\nauth_user = a\n[databases]\na@b = host=x\n")
	if _, err := LoadINI(p); err == nil || !strings.Contains(err.Error(), "db.ini:4: syntax error") {
		t.Errorf("[databases] a@b: %v", err)
	}
	// A role listed again in an included file names the first file.
	inc := writeFile(t, dir, "inc.ini", "[entra_principals]\nalice@contoso.com = oid="+oidB+" type=user\n")
	p = writeFile(t, dir, "m.ini", head+"[entra_principals]\nalice@contoso.com = oid="+oidA+" type=user\n%include "+inc+"\n")
	if _, err := LoadINI(p); err == nil || !strings.Contains(err.Error(), inc+`:2: entra_principals/alice@contoso.com: role "alice@contoso.com" is listed twice (first at `+p+":7)") {
		t.Errorf("duplicate across files: %v", err)
	}
	p = writeFile(t, dir, "c.ini", head+"[entra_principals]\n#EXT# = oid=nonsense\n; x = y\n")
	if c, err := LoadINI(p); err != nil || len(c.Entra.Principals) != 0 {
		t.Errorf("comment lines: %v", err)
	}
}

// entraCase builds a pgbouncer.ini: [pgbouncer], [databases] with app and
// the case's lines, then (unless noEntra) [entra] with a tenant,
// allow_plaintext and the case's lines, and [entra_principals] with alice
// and the case's lines.
type entraCase struct {
	name       string
	db         string // [databases] lines
	entra      string // [entra] lines
	principals string // [entra_principals] lines
	noEntra    bool
	wantErr    string // fragment of an error; "" = no error
	wantWarn   string // fragment of a warning; "" = no warning at all
	at         string // the problem is at the line containing this (default: none checked)
}

func (tc entraCase) file() string {
	var b strings.Builder
	b.WriteString("[pgbouncer]\nauth_user = a\n[databases]\napp = host=127.0.0.1\n")
	b.WriteString(tc.db)
	if !tc.noEntra {
		b.WriteString("[entra]\ntenants = " + tenantA + "\nallow_plaintext = 1\n")
		b.WriteString(tc.entra)
		b.WriteString("[entra_principals]\nalice@contoso.com = oid=" + oidA + " type=user\n")
	} else if tc.principals != "" {
		b.WriteString("[entra_principals]\n")
	}
	b.WriteString(tc.principals)
	return b.String()
}

// lineOf returns the 1-based line of text holding fragment, or 0.
func lineOf(text, fragment string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, fragment) {
			return i + 1
		}
	}
	return 0
}

func TestEntraValidationINI(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret.txt", "s")
	cert := writeFile(t, dir, "cert.pem", "c")
	missing := filepath.Join(dir, "missing.txt")
	tests := []entraCase{
		{name: "valid", entra: "", wantErr: ""},

		// [entra] keys.
		{name: "tenants missing", entra: "tenants =  \n", wantErr: "entra/tenants: at least one tenant ID is required", at: "tenants =  "},
		{name: "tenants missing, no key", noEntra: true, db: "[entra]\nallow_plaintext = 1\n", wantErr: "t.ini:5: entra/tenants: at least one tenant ID is required"},
		{name: "tenant not a GUID", entra: "tenants = " + tenantA + ", contoso.onmicrosoft.com\n", wantErr: `tenant "contoso.onmicrosoft.com" is not a GUID`, at: "contoso.onmicrosoft.com"},
		{name: "tenant GUID in braces", entra: "tenants = {" + tenantA + "}\n", wantErr: "is not a GUID"},
		{name: "audiences empty", entra: "audiences = ,\n", wantErr: "entra/audiences: at least one audience is required", at: "audiences"},
		{name: "auth_mode bogus", entra: "auth_mode = tokens\n", wantErr: `entra/auth_mode: invalid auth_mode "tokens" (expected password, entra or both)`, at: "auth_mode"},
		{name: "auth_mode password", entra: "auth_mode = PASSWORD\n"},
		{name: "auth_mode empty", entra: "auth_mode =\n"},
		{name: "authority http remote", entra: "authority = http://login.example.com\n", wantErr: "entra/authority: \"http://login.example.com\" must use https://", at: "authority"},
		{name: "authority http localhost", entra: "authority = http://localhost:8400\n"},
		{name: "authority http 127/8", entra: "authority = http://127.3.4.5:8400/\n"},
		{name: "authority http ::1", entra: "authority = http://[::1]:8400\n"},
		{name: "authority http 169.254", entra: "authority = http://169.254.169.254\n", wantErr: "must use https://"},
		{name: "authority not absolute", entra: "authority = login.microsoftonline.com\n", wantErr: "is not an absolute http:// or https:// URL"},
		{name: "authority ftp", entra: "authority = ftp://login.microsoftonline.com\n", wantErr: "is not an absolute http:// or https:// URL"},
		{name: "authority empty", entra: "authority =\n", wantErr: `"" is not an absolute`},
		{name: "authority user info", entra: "authority = https://u:p@login.microsoftonline.com\n", wantErr: "must not carry a user name or password"},
		{name: "authority query", entra: "authority = https://login.microsoftonline.com/?x=1\n", wantErr: "must not have a query or fragment"},
		{name: "graph_endpoint http remote", entra: "graph_endpoint = http://graph.example.com\n", wantErr: "entra/graph_endpoint", at: "graph_endpoint"},
		{name: "token_endpoint_authority http remote", entra: "token_endpoint_authority = http://login.example.com/\n", wantErr: "entra/token_endpoint_authority: \"http://login.example.com/\" must use https://"},
		{name: "token_endpoint_authority loopback", entra: "token_endpoint_authority = http://127.0.0.1:1/\n"},
		{name: "imds_endpoint real address", entra: "imds_endpoint = http://169.254.169.254/metadata/identity/oauth2/token\n"},
		{name: "imds_endpoint not a URL", entra: "imds_endpoint = 169.254.169.254\n", wantErr: "entra/imds_endpoint"},
		{name: "clock_skew negative", entra: "clock_skew = -1\n", wantErr: "entra/clock_skew: invalid value \"-1\"", at: "clock_skew"},
		{name: "clock_skew unit", entra: "clock_skew = 30s\n", wantErr: "without a unit"},
		{name: "clock_skew large", entra: "clock_skew = 600\n", wantWarn: "entra/clock_skew: 10m0s is a large clock skew", at: "clock_skew"},
		{name: "clock_skew zero", entra: "clock_skew = 0\n"},
		{name: "jwks_refresh_interval zero", entra: "jwks_refresh_interval = 0\n", wantErr: "entra/jwks_refresh_interval: must be positive", at: "jwks_refresh_interval"},
		{name: "unknown_kid_refresh_interval zero", entra: "unknown_kid_refresh_interval = 0\n", wantErr: "entra/unknown_kid_refresh_interval: must be positive"},
		{name: "principal_refresh_interval zero", entra: "principal_refresh_interval = 0\n"},
		{name: "allow_plaintext yes", entra: "allow_plaintext = yes\n", wantErr: "entra/allow_plaintext: invalid value \"yes\": expected 0 or 1"},
		{name: "unknown key", entra: "tenant = " + tenantA + "\n", wantErr: "unknown parameter: entra/tenant", at: "tenant = "},
		{name: "jwks_cache_file dir missing", entra: "jwks_cache_file = " + filepath.Join(dir, "nope", "jwks.json") + "\n", wantWarn: "the key cache cannot be written", at: "jwks_cache_file"},
		{name: "plaintext tokens", entra: "allow_plaintext = 0\n", wantWarn: "client_tls_sslmode: client_tls_sslmode is disable and allow_plaintext is off"},
		{name: "plaintext, password only", entra: "allow_plaintext = 0\nauth_mode = password\n"},

		// Principals and the principal query.
		{name: "no principals", noEntra: true, db: "[entra]\nallow_plaintext = 1\ntenants = " + tenantA + "\n", wantWarn: "no principals and no principal_query"},
		{name: "principal_query without database", entra: "principal_query = pgaadauth\n", wantErr: "entra/principal_query_database: principal_query needs principal_query_database"},
		{name: "principal_query unknown database", entra: "principal_query = pgaadauth\nprincipal_query_database = nope\n", wantErr: `database "nope" is not configured`, at: "principal_query_database"},
		{name: "principal_query admin database", entra: "principal_query = pgaadauth\nprincipal_query_database = pgbouncer\n", wantErr: "must not be the admin database"},
		{name: "principal_query fallback database", db: "* = host=127.0.0.1\n", entra: "principal_query = pgaadauth\nprincipal_query_database = other\n"},
		{name: "principal_query_database alone", entra: "principal_query_database = app\n", wantWarn: "entra/principal_query_database: ignored: principal_query is not set"},
		{name: "principal_query only", noEntra: true, db: "[entra]\nallow_plaintext = 1\ntenants = " + tenantA + "\nprincipal_query = pgaadauth\nprincipal_query_database = app\n"},
		{name: "oid missing", principals: "bob = type=user\n", wantErr: "entra_principals/bob: oid is required", at: "bob = "},
		{name: "oid not a GUID", principals: "bob = oid=bob type=user\n", wantErr: `entra_principals/bob: oid "bob" is not a GUID`, at: "bob = "},
		{name: "type missing", principals: "bob = oid=" + oidB + "\n", wantErr: "type is required (user, group or service)", at: "bob = "},
		{name: "type bogus", principals: "bob = oid=" + oidB + " type=robot\n", wantErr: `invalid type "robot" (expected user, group or service)`, at: "bob = "},
		{name: "type upper case", principals: "bob = oid=" + oidB + " type=Service\n"},
		{name: "tenant not a GUID", principals: "bob = oid=" + oidB + " type=user tenant=contoso\n", wantErr: `tenant "contoso" is not a GUID`, at: "bob = "},
		{name: "tenant not allowed", principals: "bob = oid=" + oidB + " type=user tenant=" + tenantB + "\n", wantWarn: "entra_principals/bob: tenant " + tenantB + " is not in tenants", at: "bob = "},
		{name: "duplicate role", principals: "alice@contoso.com = oid=" + oidB + " type=user\n", wantErr: `role "alice@contoso.com" is listed twice (first at line 9)`, at: "oid=" + oidB},
		{name: "duplicate quoted role", principals: `"alice@contoso.com" = oid=` + oidA + " type=group\n", wantErr: "is listed twice"},
		{name: "roles differ in case", principals: "Alice@contoso.com = oid=" + oidA + " type=user\n"},
		{name: "several roles share an oid", principals: "alice-admin = oid=" + oidA + " type=user admin=1\n"},
		{name: "long role", principals: strings.Repeat("r", 64) + " = oid=" + oidB + " type=user\n", wantWarn: "longer than 63 bytes"},
		{name: "principals without [entra]", noEntra: true, principals: "bob = oid=" + oidB + " type=user\n", wantErr: "t.ini:5: [entra_principals]: Entra principals need an [entra] section"},

		// Databases.
		{name: "db auth_mode entra without [entra]", noEntra: true, db: "x = host=h auth_mode=entra\n", wantErr: "databases/x: auth_mode entra needs an [entra] section", at: "x = "},
		{name: "db auth_mode both without [entra]", noEntra: true, db: "x = host=h auth_mode=both\n", wantErr: "auth_mode both needs an [entra] section"},
		{name: "db auth_mode password without [entra]", noEntra: true, db: "x = host=h auth_mode=password server_auth=password\n"},
		{name: "db server_auth without [entra]", noEntra: true, db: "x = host=h server_auth=managed_identity\n", wantErr: "databases/x: server_auth managed_identity needs an [entra] section", at: "x = "},
		{name: "db auth_mode bogus", db: "x = host=h auth_mode=sometimes\n", wantErr: `databases/x: invalid auth_mode "sometimes"`, at: "x = "},
		{name: "db server_auth bogus", db: "x = host=h server_auth=kerberos\n", wantErr: `databases/x: invalid server_auth "kerberos" (expected password, passthrough, managed_identity`, at: "x = "},
		{name: "db passthrough, password mode", db: "x = host=h server_auth=passthrough auth_mode=password\n", wantErr: "databases/x: server_auth passthrough needs auth_mode entra or both", at: "x = "},
		{name: "db password mode, global passthrough", entra: "server_auth = passthrough\n", db: "x = host=h auth_mode=password\n", wantErr: "databases/x: server_auth passthrough needs auth_mode entra or both"},
		{name: "db passthrough, global password mode", entra: "auth_mode = password\n", db: "x = host=h server_auth=passthrough\n", wantErr: "databases/x: server_auth passthrough"},
		{name: "db passthrough, own mode", entra: "auth_mode = password\n", db: "x = host=h server_auth=passthrough auth_mode=entra\n"},
		{name: "db client_secret", db: "x = host=h server_auth=client_secret\n", wantErr: "entra/client_id: server_auth client_secret (database x) needs client_id"},

		// Backend credentials.
		{name: "server_auth bogus", entra: "server_auth = token\n", wantErr: `entra/server_auth: invalid server_auth "token"`, at: "server_auth"},
		{name: "server_auth password", entra: "server_auth = Password\n"},
		{name: "passthrough, password mode", entra: "server_auth = passthrough\nauth_mode = password\n", wantErr: "entra/server_auth: server_auth passthrough needs auth_mode entra or both", at: "server_auth"},
		{name: "passthrough", entra: "server_auth = passthrough\ntoken_resource =\n"},
		{name: "client_secret needs everything", entra: "server_auth = client_secret\n", wantErr: "entra/client_id: server_auth client_secret needs client_id"},
		{name: "client_secret needs tenant_id", entra: "server_auth = client_secret\nclient_id = c\nclient_secret_file = " + secret + "\n", wantErr: "t.ini:5: entra/tenant_id: server_auth client_secret needs tenant_id"},
		{name: "client_secret needs file", entra: "server_auth = client_secret\nclient_id = c\ntenant_id = t\n", wantErr: "entra/client_secret_file: server_auth client_secret needs client_secret_file"},
		{name: "client_secret file missing", entra: "server_auth = client_secret\nclient_id = c\ntenant_id = t\nclient_secret_file = " + missing + "\n", wantErr: "entra/client_secret_file: file", at: "client_secret_file"},
		{name: "client_secret complete", entra: "server_auth = client_secret\nclient_id = c\ntenant_id = t\nclient_secret_file = " + secret + "\n"},
		{name: "client_certificate needs everything", entra: "server_auth = client_certificate\n", wantErr: "entra/client_cert_file: server_auth client_certificate needs client_cert_file"},
		{name: "client_certificate needs client_id", entra: "server_auth = client_certificate\ntenant_id = t\nclient_cert_file = " + cert + "\n", wantErr: "server_auth client_certificate needs client_id"},
		{name: "client_cert_file missing", entra: "client_cert_file = " + missing + "\n", wantErr: "entra/client_cert_file: file"},
		{name: "client_certificate complete", entra: "server_auth = client_certificate\nclient_id = c\ntenant_id = t\nclient_cert_file = " + cert + "\n"},
		{name: "managed_identity", entra: "server_auth = managed_identity\n"},
		{name: "managed_identity by object id", entra: "server_auth = managed_identity\nobject_id = o\n"},
		{name: "managed_identity two ids", entra: "server_auth = managed_identity\nclient_id = c\nresource_id = r\n", wantErr: "entra/resource_id: server_auth managed_identity takes at most one of client_id, object_id and resource_id (got client_id and resource_id)", at: "resource_id"},
		{name: "app_service two ids", db: "x = host=h server_auth=app_service\n", entra: "client_id = c\nobject_id = o\n", wantErr: "server_auth app_service (database x) takes at most one"},
		{name: "workload_identity needs nothing", entra: "server_auth = workload_identity\n"},
		{name: "token_resource empty", entra: "server_auth = workload_identity\ntoken_resource =\n", wantErr: "entra/token_resource: server_auth workload_identity needs token_resource"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := tc.file()
			p := writeFile(t, dir, "t.ini", text)
			c, err := LoadINI(p)
			line := 0
			if tc.at != "" {
				if line = lineOf(text, tc.at); line == 0 {
					t.Fatalf("%q is not in the file", tc.at)
				}
			}
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("accepted; want %q\n%s", tc.wantErr, text)
				}
				wantProblem(t, problems(t, err), line, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("err = %v\n%s", err, text)
			}
			var ws []string
			for _, w := range c.Warnings {
				ws = append(ws, w.Error())
			}
			switch {
			case tc.wantWarn == "" && len(ws) > 0:
				t.Errorf("unexpected warnings: %v", ws)
			case tc.wantWarn != "":
				wantProblem(t, c.Warnings, line, tc.wantWarn)
			}
		})
	}
}

func TestEntraValidationYAML(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, yaml string
		line       int
		want       []string
	}{
		{"tenants missing", "entra:\n  auth_mode: both\n", 1, []string{"t.yaml:1: entra.tenants: at least one tenant ID is required"}},
		{"tenant not a GUID", "entra:\n  tenants:\n    - contoso.com\n", 2, []string{`entra.tenants: tenant "contoso.com" is not a GUID`}},
		{"tenants a string", "entra:\n  tenants: " + tenantA + "\n", 2, []string{"entra.tenants: invalid value", "expected a list of strings"}},
		{"authority http", "entra:\n  tenants: [" + tenantA + "]\n  authority: http://login.example.com\n", 3, []string{"entra.authority: \"http://login.example.com\" must use https://"}},
		{"clock_skew bad", "entra:\n  tenants: [" + tenantA + "]\n  clock_skew: 30 seconds\n", 3, []string{`invalid duration "30 seconds"`}},
		{"unknown key", "entra:\n  tenants: [" + tenantA + "]\n  tenant: x\n", 3, []string{"t.yaml:3: entra.tenant: unknown key"}},
		{"principals a string", "entra:\n  tenants: [" + tenantA + "]\n  principals: alice\n", 3, []string{"entra.principals: invalid value", "expected a list of mappings"}},
		{"principal unknown key", "entra:\n  tenants: [" + tenantA + "]\n  principals:\n    - role: a\n      oid: " + oidA + "\n      type: user\n      is_admin: true\n", 7, []string{"entra.principals[0].is_admin: unknown key"}},
		{"principal admin not bool", "entra:\n  tenants: [" + tenantA + "]\n  principals:\n    - {role: a, oid: " + oidA + ", type: user, admin: yes please}\n", 4, []string{"invalid value \"yes please\": expected true or false"}},
		{"principal role missing", "entra:\n  tenants: [" + tenantA + "]\n  principals:\n    - {role: a, oid: " + oidA + ", type: user}\n    - {oid: " + oidA + ", type: user}\n", 5, []string{"t.yaml:5: entra.principals[1]: role is required"}},
		{"principal bad oid and type", "entra:\n  tenants: [" + tenantA + "]\n  principals:\n\n    - role: a\n      oid: 1\n      type: person\n", 5, []string{`entra.principals[0]: oid "1" is not a GUID`}},
		{"duplicate role", "entra:\n  tenants: [" + tenantA + "]\n  principals:\n    - {role: a, oid: " + oidA + ", type: user}\n    - {role: a, oid: " + oidB + ", type: user}\n", 5, []string{`entra.principals[1]: role "a" is listed twice (first at line 4)`}},
		{"db auth_mode without entra", "databases:\n  x:\n    host: h\n    auth_mode: entra\n", 2, []string{"databases.x: auth_mode entra needs an entra: block"}},
		{"db server_auth bogus", "entra:\n  tenants: [" + tenantA + "]\ndatabases:\n  x: {host: h, server_auth: nope}\n", 4, []string{`databases.x: invalid server_auth "nope"`}},
		{"client_secret incomplete", "entra:\n  tenants: [" + tenantA + "]\n  server_auth: client_secret\n  client_id: c\n", 1, []string{"t.yaml:1: entra.tenant_id: server_auth client_secret needs tenant_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, "t.yaml", tt.yaml)
			_, err := LoadYAML(p)
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.yaml)
			}
			wantProblem(t, problems(t, err), tt.line, tt.want...)
		})
	}

	// A bad principal reports every problem, each at its item.
	p := writeFile(t, dir, "all.yaml", "entra:\n  tenants: [x]\n  audiences: []\n  principals:\n    - {role: a, oid: 1, type: person, tenant: y}\n")
	_, err := LoadYAML(p)
	ps := problems(t, err)
	wantProblem(t, ps, 2, `tenant "x" is not a GUID`)
	wantProblem(t, ps, 3, "entra.audiences: at least one audience is required")
	wantProblem(t, ps, 5, `oid "1" is not a GUID`)
	wantProblem(t, ps, 5, `invalid type "person"`)
	wantProblem(t, ps, 5, `tenant "y" is not a GUID`)
	if len(ps) != 5 {
		t.Errorf("got %d problems: %v", len(ps), err)
	}
}

// TestEntraValidate checks Validate on Configs built in code.
func TestEntraValidate(t *testing.T) {
	enabled := func(c *Config) {
		c.Entra.Enabled, c.Entra.AuthMode, c.Entra.Tenants = true, AuthModeBoth, []string{tenantA}
		c.Entra.Principals = []EntraPrincipal{{Role: "a", OID: oidA, Type: EntraPrincipalUser}}
	}
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr string
	}{
		{"disabled", func(c *Config) {}, ""},
		{"enabled", enabled, ""},
		{"enabled, AuthMode empty", func(c *Config) { enabled(c); c.Entra.AuthMode = "" }, ""},
		{"disabled with auth_mode", func(c *Config) { c.Entra.AuthMode = AuthModeEntra }, "v.ini: entra/auth_mode: auth_mode entra needs Entra enabled"},
		{"disabled with server_auth", func(c *Config) { c.Entra.ServerAuth = ServerAuthPassthrough }, "server_auth passthrough needs Entra enabled"},
		{"disabled with principals", func(c *Config) { c.Entra.Principals = []EntraPrincipal{{Role: "a"}} }, "entra_principals: Entra principals need an [entra] section"},
		{"negative clock skew", func(c *Config) { enabled(c); c.Entra.ClockSkew = -time.Second }, "entra/clock_skew: must not be negative"},
		{"negative principal refresh", func(c *Config) { enabled(c); c.Entra.PrincipalRefreshInterval = -1 }, "principal_refresh_interval: must not be negative"},
		{"principal without role", func(c *Config) { enabled(c); c.Entra.Principals[0].Role = "" }, "entra_principals/: role is required"},
		{"upper-case server_auth", func(c *Config) { enabled(c); c.Entra.ServerAuth = "Passthrough" }, `invalid server_auth "Passthrough"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConfig("v.ini", "ini")
			tt.mutate(c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestEntraEffective(t *testing.T) {
	c := newConfig("", "ini")
	if c.EffectiveAuthMode(nil) != AuthModePassword || c.EffectiveServerAuth(nil) != "" {
		t.Error("disabled defaults")
	}
	c.Entra.Enabled, c.Entra.AuthMode = true, ""
	if c.EffectiveAuthMode(nil) != AuthModeBoth {
		t.Error("enabled, AuthMode unset: both")
	}
	c.Entra.AuthMode, c.Entra.ServerAuth = AuthModeEntra, ServerAuthManagedIdentity
	tests := []struct {
		db               *Database
		mode, serverAuth string
	}{
		{nil, AuthModeEntra, ServerAuthManagedIdentity},
		{&Database{}, AuthModeEntra, ServerAuthManagedIdentity},
		{&Database{AuthMode: AuthModePassword, ServerAuth: ServerAuthPassword}, AuthModePassword, ""},
		{&Database{AuthMode: AuthModeBoth, ServerAuth: ServerAuthPassthrough}, AuthModeBoth, ServerAuthPassthrough},
	}
	for _, tt := range tests {
		if m, s := c.EffectiveAuthMode(tt.db), c.EffectiveServerAuth(tt.db); m != tt.mode || s != tt.serverAuth {
			t.Errorf("%+v: %q %q, want %q %q", tt.db, m, s, tt.mode, tt.serverAuth)
		}
	}
	// The "*" fallback hands its overrides to the databases it makes.
	c.Databases["*"] = &Database{Name: "*", AuthMode: AuthModeBoth, ServerAuth: ServerAuthPassthrough}
	if db, ok := c.LookupDatabase("x"); !ok || c.EffectiveAuthMode(db) != AuthModeBoth || c.EffectiveServerAuth(db) != ServerAuthPassthrough {
		t.Errorf("fallback: %+v", db)
	}
}

func TestEntraSettings(t *testing.T) {
	c, err := LoadINI("testdata/entra_full.ini")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(c.Settings, func(a, b Setting) int { return strings.Compare(a.Key, b.Key) }) {
		t.Error("settings not sorted")
	}
	var keys []string
	for _, s := range c.Settings {
		if name, ok := strings.CutPrefix(s.Key, "entra."); ok {
			keys = append(keys, name)
			if !s.Changeable {
				t.Errorf("%s not changeable", s.Key)
			}
		}
	}
	wantKeys := []string{"allow_plaintext", "audiences", "auth_mode", "authority", "client_cert_file", "client_id",
		"client_secret_file", "clock_skew", "disconnect_on_revoke", "disconnect_on_token_expiry", "graph_endpoint",
		"imds_endpoint", "jwks_cache_file", "jwks_refresh_interval", "object_id", "principal_query",
		"principal_query_database", "principal_refresh_interval", "resource_id", "server_auth", "tenant_id", "tenants",
		"token_endpoint_authority", "token_resource", "unknown_kid_refresh_interval"}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("entra keys %v\nwant %v", keys, wantKeys)
	}
	aud := "https://ossrdbms-aad.database.windows.net,https://ossrdbms-aad.database.windows.net/"
	want := []Setting{
		{"entra.allow_plaintext", "1", "0", true},
		{"entra.audiences", "api://pgwarden,https://ossrdbms-aad.database.usgovcloudapi.net", aud, true},
		{"entra.auth_mode", "entra", "both", true},
		{"entra.authority", "http://127.0.0.1:8400", "https://login.microsoftonline.com", true},
		{"entra.clock_skew", "2.5", "30", true},
		{"entra.client_secret_file", "testdata/entra_secret.txt", "", true},
		{"entra.disconnect_on_revoke", "0", "1", true},
		{"entra.jwks_refresh_interval", "1800", "3600", true},
		{"entra.principal_refresh_interval", "0", "300", true},
		{"entra.server_auth", "client_secret", "", true},
		{"entra.tenants", tenantA + "," + tenantB, "", true},
		{"entra.object_id", "", "", true},
		{"entra.unknown_kid_refresh_interval", "60", "300", true},
	}
	for _, w := range want {
		found := false
		for _, s := range c.Settings {
			if s.Key == w.Key {
				found = true
				if s != w {
					t.Errorf("got %+v, want %+v", s, w)
				}
			}
		}
		if !found {
			t.Errorf("missing %s", w.Key)
		}
	}

	// Without [entra] the rows are there, at their defaults; auth_mode is
	// password.
	d, err := LoadINI("testdata/debian118.ini")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range d.Settings {
		if !strings.HasPrefix(s.Key, "entra.") {
			continue
		}
		if s.Value != s.Default {
			t.Errorf("%s = %q, default %q", s.Key, s.Value, s.Default)
		}
		if s.Key == "entra.auth_mode" && s.Value != "password" {
			t.Errorf("auth_mode = %q", s.Value)
		}
	}
}

// TestPoolerYAMLEntraExample uncomments the entra: block of the
// repository's pooler.yaml: it loads, and the keys it presents as defaults
// are the defaults.
func TestPoolerYAMLEntraExample(t *testing.T) {
	data, err := os.ReadFile("../../pooler.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for l := range strings.SplitSeq(string(data), "\n") {
		switch {
		case l == "# entra:":
			in = true
		case in && !strings.HasPrefix(l, "#  "):
			in = false
		}
		if in {
			l = strings.TrimPrefix(l, "# ")
		}
		out = append(out, l)
	}
	p := writeFile(t, t.TempDir(), "pooler.yaml", strings.Join(out, "\n"))
	c, err := Load(p)
	if err != nil {
		t.Fatalf("the uncommented example: %v", err)
	}
	if !c.Entra.Enabled || len(c.Entra.Principals) != 4 || c.Entra.Principals[1].Role != "bob_fabrikam.com#EXT#@contoso.onmicrosoft.com" {
		t.Fatalf("entra = %+v", c.Entra)
	}
	d := newConfig("", "")
	d.Entra.AuthMode = AuthModeBoth
	for _, p := range entraParams {
		switch p.name {
		case "tenants":
			continue
		}
		if got, want := p.get(c), p.get(d); got != want {
			t.Errorf("pooler.yaml entra.%s = %q, but the default is %q", p.name, got, want)
		}
	}
}
