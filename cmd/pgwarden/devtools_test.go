package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/authn/devidp"
)

const (
	devTenant = "5d3f7a1c-2b4e-4f60-8a9b-0c1d2e3f4a5b"
	aliceOID  = "11111111-1111-4111-8111-111111111111"
	opsOID    = "22222222-2222-4222-8222-222222222222"
)

// startDevIdP runs `pgwarden dev-idp` on a free loopback port with a fixed
// tenant and returns the process and its URL.
func startDevIdP(t *testing.T, extra ...string) (*proc, string) {
	t.Helper()
	p := startPgwarden(t, t.TempDir(), append([]string{"dev-idp", "-listen", "127.0.0.1:0", "-tenant", devTenant}, extra...)...)
	p.waitOutput("Press Ctrl-C to stop.", 30*time.Second)
	m := regexp.MustCompile(`(?m)^\s*authority = (http://127\.0\.0\.1:\d+)$`).FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("dev-idp printed no authority:\n%s", p.stdout.String())
	}
	return p, m[1]
}

// devToken runs `pgwarden dev-token -idp url args…`, which must succeed
// and print only the token, and returns the token.
func devToken(t *testing.T, url string, args ...string) string {
	t.Helper()
	stdout, stderr, code := runBinary(t, t.TempDir(), append([]string{"dev-token", "-idp", url}, args...)...)
	if code != 0 {
		t.Fatalf("dev-token %q: exit %d\nstderr: %s", args, code, stderr)
	}
	if !strings.HasSuffix(stdout, "\n") || strings.Count(stdout, "\n") != 1 || strings.Count(stdout, ".") != 2 {
		t.Fatalf("dev-token %q: stdout is not one token line: %q", args, stdout)
	}
	return strings.TrimSuffix(stdout, "\n")
}

// claims decodes a token's payload without checking it.
func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// startEntraPooler runs pgwarden with TLS (a self-signed certificate) and
// Entra sign-in against the identity provider at authority: role alice is
// the user aliceOID, role ops the service principal opsOID with console
// rights.
func startEntraPooler(t *testing.T, authority string) (*proc, int) {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cert, key, err := writeSelfSignedCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist)
	path := filepath.Join(dir, "pgbouncer.ini")
	writeFile(t, path, fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
admin_users = %s
server_tls_sslmode = disable
client_tls_sslmode = require
client_tls_cert_file = %s
client_tls_key_file = %s

[entra]
authority = %s
graph_endpoint = %s
tenants = %s

[entra_principals]
alice = oid=%s type=user
ops = oid=%s type=service admin=1
`, pg.Port, port, dir, filepath.Join(dir, "userlist.txt"), adminUser, cert, key, authority, authority, devTenant, aliceOID, opsOID))
	if out, _, code := runBinary(t, dir, "check-config", path); code != 0 {
		t.Fatalf("check-config: %s", out)
	}
	p := startPgwarden(t, dir, path)
	p.waitOutput("listening", 30*time.Second)
	return p, port
}

// TestDevIdPAndDevToken signs in through pgwarden with tokens that
// `pgwarden dev-token` gets from `pgwarden dev-idp`, as the README shows.
func TestDevIdPAndDevToken(t *testing.T) {
	idp, url := startDevIdP(t)
	out := idp.stdout.String()
	for _, s := range []string{"DEVELOPMENT", "tenants = " + devTenant, "graph_endpoint = " + url, url + "/metadata/identity/oauth2/token"} {
		if !strings.Contains(out, s) {
			t.Errorf("dev-idp's output lacks %q:\n%s", s, out)
		}
	}
	pgw, port := startEntraPooler(t, url)
	conn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=alice sslmode=require connect_timeout=5", port)

	// A user token for alice's object ID signs in as alice over TLS.
	tok := devToken(t, url, "-oid", aliceOID, "-upn", "alice@example.com")
	if c := claims(t, tok); c["oid"] != aliceOID || c["tid"] != devTenant || c["upn"] != "alice@example.com" || c["aud"] != devidp.DefaultAudience {
		t.Errorf("claims %v", c)
	}
	if got, err := psqlEnv(t, []string{"PGPASSWORD=" + tok}, conn, "SELECT current_user"); err != nil || got != "alice" {
		t.Fatalf("psql with the token: %v, output %q", err, got)
	}
	pgw.waitOutput(`"result":"ok","client"`, 10*time.Second)
	if !strings.Contains(pgw.stderr.String(), `"oid":"`+aliceOID+`"`) {
		t.Errorf("no audit line with alice's oid:\n%s", pgw.stderr.String())
	}
	// Over plain TCP the token is not accepted.
	plain := strings.Replace(conn, "sslmode=require", "sslmode=disable", 1)
	if got, err := psqlEnv(t, []string{"PGPASSWORD=" + tok}, plain, "SELECT 1"); err == nil {
		t.Errorf("token over plain TCP: %q", got)
	}

	// An app-only token for the service principal ops may use the console
	// (admin=1), although ops is not in admin_users.
	app := devToken(t, url, "-type", "app", "-oid", opsOID)
	console := fmt.Sprintf("host=127.0.0.1 port=%d dbname=pgbouncer user=ops sslmode=require connect_timeout=5", port)
	if got, err := psqlEnv(t, []string{"PGPASSWORD=" + app}, console, "SHOW VERSION"); err != nil || !strings.Contains(got, "PgBouncer") {
		t.Errorf("console with an app token: %v, output %q", err, got)
	}

	// Wrong tokens are refused with Azure's messages; the audit line has
	// the precise reason.
	for _, tc := range []struct {
		args         []string
		msg, reason  string
		auditMatches bool
	}{
		{[]string{"-oid", aliceOID, "-fault", "expired"}, "The access token has expired. Please acquire a new token and retry.", "expired", true},
		{[]string{"-oid", aliceOID, "-fault", "wrong_audience"}, "does not have a valid audience claim", "wrong_audience", true},
		{[]string{"-oid", aliceOID, "-fault", "alg_none"}, "An error occurred while validating the access token", "", false},
		{[]string{"-oid", aliceOID, "-fault", "tampered_payload"}, "An error occurred while validating the access token", "bad_signature", true},
		{[]string{"-oid", opsOID}, "", "oid_mismatch", true},
		{[]string{"-oid", aliceOID, "-type", "app"}, "is neither an AAD_AUTH_TOKENTYPE_APP_USER or an AAD_AUTH_TOKENTYPE_APP_OBO token", "token_type_mismatch", true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			bad := devToken(t, url, tc.args...)
			before := strings.Count(pgw.stderr.String(), `"result":"refused"`)
			got, err := psqlEnv(t, []string{"PGPASSWORD=" + bad}, conn, "SELECT 1")
			if err == nil {
				t.Fatalf("signed in: %q", got)
			}
			if tc.msg != "" && !strings.Contains(got, tc.msg) {
				t.Errorf("psql says %q, want %q", got, tc.msg)
			}
			deadline := time.Now().Add(10 * time.Second)
			for strings.Count(pgw.stderr.String(), `"result":"refused"`) == before && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			lines := strings.Split(strings.TrimSpace(pgw.stderr.String()), "\n")
			last := ""
			for _, l := range slices.Backward(lines) {
				if strings.Contains(l, `"result":"refused"`) {
					last = l
					break
				}
			}
			if tc.auditMatches && !strings.Contains(last, `"reason":"`+tc.reason+`"`) {
				t.Errorf("audit line %q, want reason %s", last, tc.reason)
			}
		})
	}
	if strings.Contains(pgw.output(), tok) {
		t.Error("a token appears in pgwarden's output")
	}

	// SIGINT stops dev-idp; dev-token then says what is wrong.
	idp.signal(syscall.SIGINT)
	if code := idp.wait(30 * time.Second); code != 0 {
		t.Errorf("dev-idp exit code %d after SIGINT, want 0", code)
	}
	stdout, stderr, code := runBinary(t, t.TempDir(), "dev-token", "-idp", url, "-oid", aliceOID)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "is pgwarden dev-idp running at "+url) {
		t.Errorf("dev-token with dev-idp stopped: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestDevTokenClaims checks that each dev-token option reaches the token.
func TestDevTokenClaims(t *testing.T) {
	_, url := startDevIdP(t)
	g1, g2 := devidp.NewGUID(), devidp.NewGUID()

	c := claims(t, devToken(t, url, "-oid", aliceOID, "-groups", g1+","+g2, "-amr", "pwd,mfa", "-lifetime", "10m"))
	if got := fmt.Sprint(c["groups"]); got != fmt.Sprint([]any{g1, g2}) {
		t.Errorf("groups %s", got)
	}
	if got := fmt.Sprint(c["amr"]); got != "[pwd mfa]" {
		t.Errorf("amr %s", got)
	}
	if exp, iat := c["exp"].(float64), c["iat"].(float64); exp-iat != 600 {
		t.Errorf("exp - iat = %v, want 600", exp-iat)
	}
	if c["scp"] == nil {
		t.Errorf("a user token without scp: %v", c)
	}

	c = claims(t, devToken(t, url, "-oid", aliceOID, "-groups", g1, "-overage"))
	if c["groups"] != nil || c["_claim_names"] == nil {
		t.Errorf("overage token: %v", c)
	}

	c = claims(t, devToken(t, url, "-type", "app", "-oid", opsOID))
	if c["scp"] != nil || c["oid"] != opsOID {
		t.Errorf("app token: %v", c)
	}

	otherTenant := devidp.NewGUID()
	if c = claims(t, devToken(t, url, "-oid", aliceOID, "-tenant", otherTenant)); c["tid"] != otherTenant {
		t.Errorf("tid %v, want %s", c["tid"], otherTenant)
	}

	// Without -oid a fresh one is used, and said on stderr only.
	stdout, stderr, code := runBinary(t, t.TempDir(), "dev-token", "-idp", url)
	if code != 0 || !strings.Contains(stderr, "fresh object ID") {
		t.Fatalf("dev-token without -oid: exit %d, stderr %q", code, stderr)
	}
	if oid, _ := claims(t, strings.TrimSpace(stdout))["oid"].(string); !strings.Contains(stderr, oid) || oid == "" {
		t.Errorf("stderr %q does not name the oid %q", stderr, oid)
	}
}

// TestDevToolsUsage checks the help and the refusals that need no server.
func TestDevToolsUsage(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	tests := []struct {
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{args: []string{"-h"}, stdout: []string{"dev-idp", "dev-token"}},
		{args: []string{"dev-idp", "-h"}, stdout: []string{"Usage: pgwarden dev-idp", "-listen", "-tenant", "loopback"}},
		{args: []string{"dev-token", "-h"}, stdout: append([]string{"Usage: pgwarden dev-token", "-idp URL", "-overage", "-lifetime"}, faultList()...)},
		{args: []string{"dev-idp", "-listen", fmt.Sprintf("0.0.0.0:%d", port)}, code: 2,
			stderr: []string{fmt.Sprintf("refusing to listen on 0.0.0.0:%d", port), "loopback addresses only"}},
		{args: []string{"dev-idp", "-listen", fmt.Sprintf("[::]:%d", port)}, code: 2, stderr: []string{"refusing to listen", "loopback addresses only"}},
		{args: []string{"dev-idp", "-listen", fmt.Sprintf(":%d", port)}, code: 2, stderr: []string{"refusing to listen", "loopback addresses only"}},
		{args: []string{"dev-idp", "-listen", "nonsense"}, code: 2, stderr: []string{"want HOST:PORT"}},
		{args: []string{"dev-idp", "-tenant", "contoso.com"}, code: 2, stderr: []string{"not a GUID"}},
		{args: []string{"dev-idp", "-bogus"}, code: 2, stderr: []string{"-bogus", "Usage: pgwarden dev-idp"}},
		{args: []string{"dev-token"}, code: 2, stderr: []string{"-idp URL is required"}},
		{args: []string{"dev-token", "-idp", "http://127.0.0.1:1", "-fault", "bogus"}, code: 2, stderr: append([]string{`unknown -fault "bogus"`}, faultList()...)},
		{args: []string{"dev-token", "-idp", "http://127.0.0.1:1", "-type", "robot"}, code: 2, stderr: []string{"want user or app"}},
		{args: []string{"dev-token", "-idp", "http://127.0.0.1:1", "-oid", "alice"}, code: 2, stderr: []string{"not a GUID"}},
		{args: []string{"dev-token", "-idp", "http://127.0.0.1:1", "-lifetime", "0s"}, code: 2, stderr: []string{"must be positive"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runBinary(t, dir, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if tc.code != 0 && stdout != "" {
				t.Errorf("unexpected stdout:\n%s", stdout)
			}
		})
	}
	// Nothing was left listening on the refused port.
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on port %d", port)
	}
}

func faultList() []string {
	var out []string
	for _, f := range devidp.Faults {
		out = append(out, string(f))
	}
	return out
}

// TestDevIdPGroupOverage signs in as a group role with an overage token:
// pgwarden asks the dev-idp's Graph (membership from dev-idp -group) with
// its own managed-identity token from the dev-idp's IMDS endpoint. It also
// runs without TLS, as allow_plaintext permits.
func TestDevIdPGroupOverage(t *testing.T) {
	const role = "dev_writers"
	group, member, outsider := devidp.NewGUID(), devidp.NewGUID(), devidp.NewGUID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.CreateRole(ctx, role, "writers-pw", "scram-sha-256"); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	_, url := startDevIdP(t, "-group", group+"="+member)
	dir := t.TempDir()
	port := freePort(t)
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist+`"`+role+`" "writers-pw"`+"\n")
	path := filepath.Join(dir, "pgbouncer.ini")
	writeFile(t, path, fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app server_auth=password

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = scram-sha-256
auth_file = %s
server_tls_sslmode = disable

[entra]
authority = %s
graph_endpoint = %s
tenants = %s
allow_plaintext = 1
server_auth = managed_identity
imds_endpoint = %s/metadata/identity/oauth2/token

[entra_principals]
%s = oid=%s type=group
`, pg.Port, port, dir, filepath.Join(dir, "userlist.txt"), url, url, devTenant, url, role, group))
	p := startPgwarden(t, dir, path)
	p.waitOutput("listening", 30*time.Second)
	conn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=app user=%s sslmode=disable connect_timeout=5", port, role)

	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"groups claim", []string{"-oid", member, "-groups", group}, true},
		{"overage, member", []string{"-oid", member, "-overage"}, true},
		{"overage, not a member", []string{"-oid", outsider, "-overage"}, false},
	} {
		tok := devToken(t, url, tc.args...)
		got, err := psqlEnv(t, []string{"PGPASSWORD=" + tok}, conn, "SELECT current_user")
		switch {
		case tc.ok && (err != nil || got != role):
			t.Errorf("%s: %v, output %q", tc.name, err, got)
		case !tc.ok && err == nil:
			t.Errorf("%s: signed in as %q", tc.name, got)
		}
	}
	p.waitOutput(`"reason":"not_group_member"`, 10*time.Second)
}
