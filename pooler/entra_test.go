package pooler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/authn/devidp"
	"github.com/pgwarden/pgwarden/pooler"
)

// entraIdP starts a development identity provider on loopback.
func entraIdP(t *testing.T) (*devidp.IdP, string) {
	t.Helper()
	idp, err := devidp.New(devidp.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(idp.Handler())
	t.Cleanup(srv.Close)
	if err := idp.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	return idp, idp.Tenants()[0]
}

func mint(t *testing.T, idp *devidp.IdP, spec devidp.TokenSpec) string {
	t.Helper()
	tok, err := idp.Mint(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// auditSink captures the JSON audit lines.
type auditSink struct{ syncBuffer }

func (a *auditSink) events(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(a.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func (a *auditSink) last(t *testing.T) map[string]any {
	ev := a.events(t)
	if len(ev) == 0 {
		t.Fatal("no audit line")
	}
	return ev[len(ev)-1]
}

const (
	aliceOID  = "11111111-1111-4111-8111-111111111111"
	appOID    = "22222222-2222-4222-8222-222222222222"
	groupOID  = "33333333-3333-4333-8333-333333333333"
	memberOID = "44444444-4444-4444-8444-444444444444"
)

func entraPooler(t *testing.T, base, tid, extra string) (*instance, *auditSink) {
	t.Helper()
	audit := &auditSink{}
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\n"+extra+fmt.Sprintf(`
[entra]
authority = %s
tenants = %s
graph_endpoint = %s
allow_plaintext = 1
[entra_principals]
alice = oid=%s type=user
bob = oid=%s type=service
writers = oid=%s type=group
admin = oid=%s type=user admin=1
`, base, tid, base, aliceOID, appOID, groupOID, aliceOID), func(o *pooler.Options) {
		o.AuditLogger = slog.New(slog.NewJSONHandler(audit, nil))
	})
	return in, audit
}

func TestEntraSignIn(t *testing.T) {
	idp, tid := entraIdP(t)
	in, audit := entraPooler(t, idp.BaseURL(), tid, "")
	ctx := context.Background()

	// A user token for alice's object ID signs in as alice; the server
	// session uses alice's configured password.
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID, UPN: "alice@contoso.com"})
	conn := in.connect(t, "alice", tok, "app", "default_query_exec_mode=exec")
	if u := queryString(t, conn, "SELECT current_user"); u != "alice" {
		t.Fatal(u)
	}
	ev := audit.last(t)
	if ev["result"] != "ok" || ev["method"] != "entra" || ev["oid"] != aliceOID || ev["principal_type"] != "user" || ev["uti"] == "" {
		t.Fatalf("audit line %v", ev)
	}
	if strings.Contains(audit.String(), tok) || strings.Contains(in.logs.String(), tok) {
		t.Fatal("the token appears in a log")
	}

	// Passwords still work in mode both.
	pconn := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, pconn, "SELECT 1")

	// A service principal (app-only token) signs in as bob.
	app := mint(t, idp, devidp.TokenSpec{OID: appOID, Type: devidp.TypeApp})
	bconn := in.connect(t, "bob", app, "app", "default_query_exec_mode=exec")
	if u := queryString(t, bconn, "SELECT current_user"); u != "bob" {
		t.Fatal(u)
	}

	// A group member signs in as the group role writers.
	member := mint(t, idp, devidp.TokenSpec{OID: memberOID, Groups: []string{groupOID}})
	cconn := in.connect(t, "writers", member, "app", "default_query_exec_mode=exec")
	if u := queryString(t, cconn, "SELECT current_user"); u != "writers" {
		t.Fatal(u)
	}

	// The admin principal may use the console with its token.
	adm := in.connect(t, "admin", tok, "pgbouncer", "default_query_exec_mode=simple_protocol")
	if v := queryString(t, adm, "SHOW VERSION"); !strings.HasPrefix(v, "PgBouncer") {
		t.Fatal(v)
	}

	for _, tc := range []struct {
		name, role, reason, msg string
		spec                    devidp.TokenSpec
	}{
		{"expired", "alice", "expired", "The access token has expired", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultExpired}},
		{"wrong audience", "alice", "wrong_audience", "", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultWrongAudience}},
		{"tampered", "alice", "bad_signature", "An error occurred while validating the access token", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultTamperedPayload}},
		{"alg none", "alice", "", "An error occurred while validating the access token", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultAlgNone}},
		{"HS256 with the public key", "alice", "", "An error occurred while validating the access token", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultHS256PublicKey}},
		{"not yet valid", "alice", "not_yet_valid", "", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultNotYetValid}},
		{"wrong issuer", "alice", "wrong_issuer", "", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultWrongIssuer}},
		{"wrong tenant", "alice", "tenant_not_allowed", "", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultWrongTenant}},
		{"unknown kid", "alice", "unknown_kid", "", devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultUnknownKID}},
		{"missing oid", "alice", "missing_claim", "", devidp.TokenSpec{Fault: devidp.FaultMissingOID}},
		{"other oid", "alice", "oid_mismatch", "", devidp.TokenSpec{OID: memberOID}},
		{"user token for a service role", "bob", "token_type_mismatch", "", devidp.TokenSpec{OID: appOID}},
		{"not a member", "writers", "not_group_member", "", devidp.TokenSpec{OID: aliceOID, Groups: []string{memberOID}}},
		{"unknown role", "nobody", "unknown_role", `password authentication failed for user "nobody"`, devidp.TokenSpec{OID: aliceOID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := mint(t, idp, tc.spec)
			_, err := pgx.Connect(ctx, in.dsn(tc.role, bad, "app"))
			if err == nil {
				t.Fatal("signed in")
			}
			if tc.msg != "" && !strings.Contains(pgMessage(err), tc.msg) {
				t.Fatalf("message %q, want %q", pgMessage(err), tc.msg)
			}
			ev := audit.last(t)
			if ev["result"] != "refused" || (tc.reason != "" && ev["reason"] != tc.reason) {
				t.Fatalf("audit %v, want reason %q", ev, tc.reason)
			}
		})
	}
	// 100 KiB of garbage as a password: refused, the process is fine.
	_, err := pgx.Connect(ctx, in.dsn("alice", "eyJ"+strings.Repeat("A.", 50_000), "app"))
	if err == nil {
		t.Fatal("garbage signed in")
	}
	queryInt(t, conn, "SELECT 1")
}

func TestEntraRequiresTLS(t *testing.T) {
	idp, tid := entraIdP(t)
	in, audit := entraPooler(t, idp.BaseURL(), tid, "")
	_ = in
	// Same pooler without allow_plaintext: reload with it off.
	b, _ := os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "allow_plaintext = 1", "allow_plaintext = 0", 1)), 0o600)
	in.reload(t, "")
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID})
	// Mode both over plain TCP: the password method (SCRAM) runs as
	// without [entra]; passwords work, a token is just a wrong password.
	pw := in.connect(t, "alice", "alice-pw", "app")
	queryInt(t, pw, "SELECT 1")
	if ev := audit.last(t); ev["method"] != "scram" {
		t.Fatalf("mode both over plain TCP used %v", ev["method"])
	}
	if _, err := pgx.Connect(context.Background(), in.dsn("alice", tok, "app")); err == nil {
		t.Fatal("a token signed in over plain TCP")
	}
	// Mode entra: refused before the token is sent, with a hint.
	b, _ = os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "[entra]\n", "[entra]\nauth_mode = entra\n", 1)), 0o600)
	in.reload(t, "")
	_, err := pgx.Connect(context.Background(), in.dsn("alice", tok, "app"))
	if err == nil || !strings.Contains(pgMessage(err), "sslmode=require") {
		t.Fatalf("token over plaintext TCP: %v", err)
	}
	if ev := audit.last(t); ev["reason"] != "tls_required" {
		t.Fatalf("audit %v", ev)
	}
	// Over the Unix socket (local) it is accepted.
	conn, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s port=%d user=alice password=%s dbname=app", in.dir, in.port, tok))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
}

func TestEntraRevocationEndsSessions(t *testing.T) {
	idp, tid := entraIdP(t)
	in, _ := entraPooler(t, idp.BaseURL(), tid, "")
	tok := mint(t, idp, devidp.TokenSpec{OID: appOID, Type: devidp.TypeApp})
	conn := in.connect(t, "bob", tok, "app", "default_query_exec_mode=exec")
	queryInt(t, conn, "SELECT 1")
	// Remove bob's principal and reload.
	b, _ := os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "bob = oid="+appOID+" type=service\n", "", 1)), 0o600)
	in.reload(t, "")
	_, err := conn.Exec(context.Background(), "SELECT 1")
	if err == nil {
		t.Fatal("the removed principal's session still works")
	}
	_, err = pgx.Connect(context.Background(), in.dsn("bob", tok, "app"))
	if err == nil {
		t.Fatal("the removed principal signed in again")
	}
}

func TestEntraPassthrough(t *testing.T) {
	idp, tid := entraIdP(t)
	ctx := context.Background()
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID, Lifetime: time.Hour})
	// A PostgreSQL role whose password is the token, as a pgaadauth server
	// would accept it.
	if err := pg.CreateRole(ctx, "tokrole", tok, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "GRANT ALL ON DATABASE app TO tokrole"); err != nil {
		t.Fatal(err)
	}
	in, _ := entraPooler(t, idp.BaseURL(), tid, fmt.Sprintf("[databases]\npassapp = host=127.0.0.1 port=%d dbname=app server_auth=passthrough auth_mode=entra\n", pg.Port))
	b, _ := os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, append(b, []byte("tokrole = oid="+aliceOID+" type=user\n")...), 0o600)
	in.reload(t, "")
	conn := in.connect(t, "tokrole", tok, "passapp", "default_query_exec_mode=exec")
	if u := queryString(t, conn, "SELECT current_user"); u != "tokrole" {
		t.Fatal(u)
	}
	// Entra only: a password is refused.
	if _, err := pgx.Connect(ctx, in.dsn("alice", "alice-pw", "passapp")); err == nil {
		t.Fatal("a password signed in to an entra-only database")
	}
}

// TestEntraManagedIdentityBackend: server connections log in with
// pgwarden's own token from the managed-identity endpoint (IMDS).
func TestEntraManagedIdentityBackend(t *testing.T) {
	idp, tid := entraIdP(t)
	ctx := context.Background()
	// pgwarden's own token, as IMDS hands it out; PostgreSQL knows it as
	// the role's password.
	own := mint(t, idp, devidp.TokenSpec{OID: appOID, Type: devidp.TypeApp, Lifetime: time.Hour})
	var imdsCalls atomic.Int32
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" || r.URL.Query().Get("resource") != "https://ossrdbms-aad.database.windows.net" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		imdsCalls.Add(1)
		fmt.Fprintf(w, `{"access_token":%q,"expires_on":"%d","resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer"}`, own, time.Now().Add(time.Hour).Unix())
	}))
	defer imds.Close()
	if err := pg.CreateRole(ctx, "mirole", own, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "GRANT ALL ON DATABASE app TO mirole"); err != nil {
		t.Fatal(err)
	}
	in, _ := entraPooler(t, idp.BaseURL(), tid, fmt.Sprintf("[databases]\nmiapp = host=127.0.0.1 port=%d dbname=app server_auth=managed_identity\n", pg.Port))
	b, _ := os.ReadFile(in.iniPath)
	s := strings.Replace(string(b), "[entra]\n", "[entra]\nimds_endpoint = "+imds.URL+"/metadata/identity/oauth2/token\n", 1)
	_ = os.WriteFile(in.iniPath, []byte(s+"mirole = oid="+aliceOID+" type=user\n"), 0o600)
	in.reload(t, "")
	// Two clients signed in with their own tokens; the server sessions run
	// as mirole with pgwarden's token.
	for i := 0; i < 2; i++ {
		tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID})
		conn := in.connect(t, "mirole", tok, "miapp", "default_query_exec_mode=exec")
		if u := queryString(t, conn, "SELECT current_user"); u != "mirole" {
			t.Fatal(u)
		}
	}
	if n := imdsCalls.Load(); n != 1 {
		t.Fatalf("%d IMDS requests for one cached token", n)
	}
}

func TestEntraDisconnectOnTokenExpiry(t *testing.T) {
	idp, tid := entraIdP(t)
	in, _ := entraPooler(t, idp.BaseURL(), tid, "")
	b, _ := os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "[entra]\n", "[entra]\ndisconnect_on_token_expiry = 1\nclock_skew = 0\n", 1)), 0o600)
	in.reload(t, "")
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID, Lifetime: 2 * time.Second})
	conn := in.connect(t, "alice", tok, "app", "default_query_exec_mode=exec")
	queryInt(t, conn, "SELECT 1")
	time.Sleep(2500 * time.Millisecond) // past the token's exp, on purpose
	_, err := conn.Exec(context.Background(), "SELECT 1")
	if err == nil {
		t.Fatal("session outlived its token")
	}
	if !strings.Contains(pgMessage(err), "The access token has expired") && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("got %v", err)
	}
}

func TestEntraPrincipalQuery(t *testing.T) {
	idp, tid := entraIdP(t)
	ctx := context.Background()
	owner, err := pg.Connect(ctx, "alice", "alice-pw", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, "CREATE TABLE IF NOT EXISTS entra_map (role text, oid text, type text, admin bool)"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, "DELETE FROM entra_map; INSERT INTO entra_map VALUES ('bob', '"+appOID+"', 'service', false)"); err != nil {
		t.Fatal(err)
	}
	in, _ := entraPooler(t, idp.BaseURL(), tid, fmt.Sprintf("[databases]\npq = host=127.0.0.1 port=%d dbname=app user=alice password=alice-pw\n", pg.Port))
	b, _ := os.ReadFile(in.iniPath)
	s := strings.Replace(string(b), "[entra]\n", "[entra]\nprincipal_query = SELECT role, oid, type, admin FROM entra_map\nprincipal_query_database = pq\n", 1)
	// bob comes from the table only.
	s = strings.Replace(s, "bob = oid="+appOID+" type=service\n", "", 1)
	_ = os.WriteFile(in.iniPath, []byte(s), 0o600)
	in.reload(t, "")
	tok := mint(t, idp, devidp.TokenSpec{OID: appOID, Type: devidp.TypeApp})
	var conn *pgx.Conn
	waitFor(t, 10*time.Second, "bob's principal to be read from the table", func() bool {
		c, err := pgx.Connect(ctx, in.dsn("bob", tok, "app", "default_query_exec_mode=exec"))
		if err != nil {
			return false
		}
		conn = c
		return true
	})
	defer conn.Close(ctx)
	queryInt(t, conn, "SELECT 1")
	// Remove the row; a RELOAD re-reads the table and ends bob's session.
	if _, err := owner.Exec(ctx, "DELETE FROM entra_map"); err != nil {
		t.Fatal(err)
	}
	in.reload(t, "")
	waitFor(t, 10*time.Second, "bob's session to end", func() bool {
		_, err := conn.Exec(ctx, "SELECT 1")
		return err != nil
	})
	if _, err := pgx.Connect(ctx, in.dsn("bob", tok, "app")); err == nil {
		t.Fatal("bob signed in after his row was removed")
	}
}

// TestEntraHBAMethod: "entra" in an HBA file selects token sign-in for the
// rules that name it.
func TestEntraHBAMethod(t *testing.T) {
	idp, tid := entraIdP(t)
	hba := t.TempDir() + "/pg_hba.conf"
	if err := os.WriteFile(hba, []byte("host app alice 127.0.0.1/32 entra\nhost all all 127.0.0.1/32 scram-sha-256\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in, audit := entraPooler(t, idp.BaseURL(), tid, "auth_type = hba\nauth_hba_file = "+hba+"\n[databases]\n")
	b, _ := os.ReadFile(in.iniPath)
	// auth_mode = password globally: only the HBA rule asks for tokens.
	_ = os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "[entra]\n", "[entra]\nauth_mode = password\n", 1)), 0o600)
	in.reload(t, "")
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID})
	conn := in.connect(t, "alice", tok, "app", "default_query_exec_mode=exec")
	queryInt(t, conn, "SELECT 1")
	if ev := audit.last(t); ev["method"] != "entra" {
		t.Fatalf("audit %v", ev)
	}
	if _, err := pgx.Connect(context.Background(), in.dsn("alice", "alice-pw", "app")); err == nil {
		t.Fatal("a password passed an entra rule")
	}
	// Other rules keep SCRAM.
	bconn := in.connect(t, "bob", "bob-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, bconn, "SELECT 1")
}

// TestEntraGroupOverage: a member whose token has too many groups to list
// is checked with Graph checkMemberGroups, using pgwarden's own
// managed-identity token.
func TestEntraGroupOverage(t *testing.T) {
	idp, err := devidp.New(devidp.Options{Logger: slog.New(slog.DiscardHandler), Groups: map[string][]string{groupOID: {memberOID}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(idp.Handler())
	defer srv.Close()
	if err := idp.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	tid := idp.Tenants()[0]
	in, audit := entraPooler(t, srv.URL, tid, fmt.Sprintf("[databases]\ngapp = host=127.0.0.1 port=%d dbname=app server_auth=password\n", pg.Port))
	b, _ := os.ReadFile(in.iniPath)
	s := strings.Replace(string(b), "[entra]\n", "[entra]\nserver_auth = managed_identity\nimds_endpoint = "+srv.URL+"/metadata/identity/oauth2/token\n", 1)
	// The harness's databases keep password logins.
	s = strings.Replace(s, "dbname=app\n", "dbname=app server_auth=password\n", 1)
	s = strings.Replace(s, "dbname=postgres\n", "dbname=postgres server_auth=password\n", 1)
	_ = os.WriteFile(in.iniPath, []byte(s), 0o600)
	in.reload(t, "")
	member := mint(t, idp, devidp.TokenSpec{OID: memberOID, Overage: true})
	conn := in.connect(t, "writers", member, "gapp", "default_query_exec_mode=exec")
	if u := queryString(t, conn, "SELECT current_user"); u != "writers" {
		t.Fatal(u)
	}
	outsider := mint(t, idp, devidp.TokenSpec{OID: aliceOID, Overage: true})
	if _, err := pgx.Connect(context.Background(), in.dsn("writers", outsider, "gapp")); err == nil {
		t.Fatal("a non-member signed in through Graph")
	}
	if ev := audit.last(t); ev["reason"] != "not_group_member" {
		t.Fatalf("audit %v", ev)
	}
}

// TestEntraIdPDownAtStart: with jwks_cache_file, a pgwarden that starts
// while the identity provider is unreachable still signs people in.
func TestEntraIdPDownAtStart(t *testing.T) {
	idpResult(t, "jwks_down_at_start_pooler", map[string]any{})
	idp, err := devidp.New(devidp.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(idp.Handler())
	if err := idp.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	tid := idp.Tenants()[0]
	cache := t.TempDir() + "/jwks.json"
	first, _ := entraPooler(t, srv.URL, tid, "")
	b, _ := os.ReadFile(first.iniPath)
	withCache := strings.Replace(string(b), "[entra]\n", "[entra]\njwks_cache_file = "+cache+"\n", 1)
	_ = os.WriteFile(first.iniPath, []byte(withCache), 0o600)
	first.reload(t, "")
	waitFor(t, 10*time.Second, "the JWKS cache file", func() bool { _, err := os.Stat(cache); return err == nil })
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID})
	srv.Close() // the identity provider goes away

	second, _ := entraPooler(t, srv.URL, tid, "[entra]\njwks_cache_file = "+cache+"\n")
	conn := second.connect(t, "alice", tok, "app", "default_query_exec_mode=exec")
	queryInt(t, conn, "SELECT 1")
}

// TestEntraOverTLS: the production path, tokens over TLS without
// allow_plaintext, with pgx and psql.
func TestEntraOverTLS(t *testing.T) {
	idp, tid := entraIdP(t)
	f := newTLSFixture(t, t.TempDir(), nil)
	in, _ := entraPooler(t, idp.BaseURL(), tid, f.clientTLS("require")+"\n")
	b, _ := os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "allow_plaintext = 1", "allow_plaintext = 0", 1)), 0o600)
	in.reload(t, "")
	for _, spec := range []devidp.TokenSpec{
		{OID: aliceOID, UPN: "alice@contoso.com"},                               // user
		{OID: appOID, Type: devidp.TypeApp},                                     // service principal / managed identity
		{OID: memberOID, Groups: []string{groupOID}},                            // group member
		{OID: aliceOID, UPN: "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com"}, // guest
	} {
		role := map[string]string{aliceOID: "alice", appOID: "bob", memberOID: "writers"}[spec.OID]
		tok := mint(t, idp, spec)
		conn := mustConnect(t, in.tlsDSN("127.0.0.1", role, tok, "app", "sslmode=require", "default_query_exec_mode=exec"))
		if u := queryString(t, conn, "SELECT current_user"); u != role {
			t.Fatalf("%s: current_user %q", role, u)
		}
		ci := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=app sslmode=require", in.port, role)
		out, err := psql(t, ci, tok, "-Atc", "SELECT current_user")
		if err != nil || strings.TrimSpace(out) != role {
			t.Fatalf("psql with a token as %s: %v\n%s", role, err, out)
		}
	}
}

// TestEntraPassthroughPerUser: server_auth set for one role in [users].
func TestEntraPassthroughPerUser(t *testing.T) {
	idp, tid := entraIdP(t)
	ctx := context.Background()
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID, Lifetime: time.Hour})
	if err := pg.CreateRole(ctx, "tokuser", tok, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "GRANT ALL ON DATABASE app TO tokuser"); err != nil {
		t.Fatal(err)
	}
	in, _ := entraPooler(t, idp.BaseURL(), tid, "[users]\ntokuser = server_auth=passthrough\n")
	b, _ := os.ReadFile(in.iniPath)
	_ = os.WriteFile(in.iniPath, append(b, []byte("tokuser = oid="+aliceOID+" type=user\n")...), 0o600)
	in.reload(t, "")
	conn := in.connect(t, "tokuser", tok, "app", "default_query_exec_mode=exec")
	if u := queryString(t, conn, "SELECT current_user"); u != "tokuser" {
		t.Fatal(u)
	}
	// Other roles on the same database keep their passwords.
	a := in.connect(t, "alice", "alice-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, a, "SELECT 1")
}

// TestEntraConsoleViews: SHOW PRINCIPALS, SHOW SIGNINS and SHOW JWKS.
func TestEntraConsoleViews(t *testing.T) {
	idp, tid := entraIdP(t)
	in, _ := entraPooler(t, idp.BaseURL(), tid, "")
	ctx := context.Background()
	tok := mint(t, idp, devidp.TokenSpec{OID: aliceOID, UPN: "alice@contoso.com"})
	in.connect(t, "alice", tok, "app")
	if _, err := pgx.Connect(ctx, in.dsn("alice", "wrong", "app")); err == nil {
		t.Fatal("wrong password signed in")
	}
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	rows := func(q string) [][]any {
		r, err := admin.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var out [][]any
		for r.Next() {
			v, _ := r.Values()
			out = append(out, v)
		}
		return out
	}
	ps := rows("SHOW PRINCIPALS")
	if len(ps) != 4 || ps[0][0] == "" {
		t.Fatalf("SHOW PRINCIPALS: %v", ps)
	}
	si := rows("SHOW SIGNINS")
	// Newest first: the admin's own sign-in, the wrong password, the token.
	if len(si) < 3 || si[1][6] != "refused" || si[1][7] != "wrong_password" || si[2][4] != "entra" || si[2][9] != aliceOID || si[2][10] != "alice@contoso.com" {
		t.Fatalf("SHOW SIGNINS: %v", si)
	}
	keys := rows("SHOW JWKS")
	if len(keys) < 2 || keys[0][5] != "network" {
		t.Fatalf("SHOW JWKS: %v", keys)
	}
}
