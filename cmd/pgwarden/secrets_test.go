package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

// secretCorpus collects everything pgwarden shows to anyone: its log and
// audit output, the console's answers, /metrics, and what clients are told.
type secretCorpus struct {
	mu    sync.Mutex
	parts []string
}

func (c *secretCorpus) add(what, s string) {
	c.mu.Lock()
	c.parts = append(c.parts, "== "+what+" ==\n"+s)
	c.mu.Unlock()
}

func (c *secretCorpus) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.parts, "\n")
}

// tokenRecorder wraps the dev IdP and keeps every access token its token
// endpoints issue (pgwarden's own backend and Graph tokens).
type tokenRecorder struct {
	h      http.Handler
	mu     sync.Mutex
	issued []string
}

func (r *tokenRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !strings.Contains(req.URL.Path, "/oauth2/") && !strings.Contains(req.URL.Path, "/metadata/identity/") {
		r.h.ServeHTTP(w, req)
		return
	}
	rec := &bodyRecorder{ResponseWriter: w}
	r.h.ServeHTTP(rec, req)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal([]byte(rec.body.String()), &out) == nil && out.AccessToken != "" {
		r.mu.Lock()
		r.issued = append(r.issued, out.AccessToken)
		r.mu.Unlock()
	}
}

func (r *tokenRecorder) tokens() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.issued...)
}

type bodyRecorder struct {
	http.ResponseWriter
	body strings.Builder
}

func (b *bodyRecorder) Write(p []byte) (int, error) {
	b.body.Write(p)
	return b.ResponseWriter.Write(p)
}

func secretMark(what string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "Mark" + what + hex.EncodeToString(b)
}

// TestSecretsNeverShown signs in through every path with distinctive
// secrets — plaintext, SCRAM and md5 passwords from the auth file, an
// auth_query password, a database entry's password, an Entra access token,
// pgwarden's own client secret and the backend token it gets with it —
// good and bad, runs the console's SHOW commands, scrapes /metrics, and
// searches everything shown (the verbose log, the audit lines, console
// answers, metrics, messages sent to clients) for the secrets and for the
// tokens' signatures. None may appear; a token's uti may.
func TestSecretsNeverShown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pw := map[string]string{}
	for _, r := range []string{"leak_plain", "leak_scram", "leak_md5", "leak_aq", "leak_authq", "leak_forced", "leak_writers"} {
		pw[r] = secretMark(strings.TrimPrefix(r, "leak_"))
		if err := pg.CreateRole(ctx, r, pw[r], "scram-sha-256"); err != nil {
			t.Fatal(err)
		}
	}
	adminPW, clientSecret := secretMark("admin"), secretMark("clientsecret")
	if err := pg.Exec(ctx,
		"GRANT ALL ON DATABASE app TO leak_plain, leak_scram, leak_md5, leak_aq, leak_forced, leak_writers",
		`CREATE OR REPLACE FUNCTION public.leak_lookup(i_username text, OUT uname name, OUT phash text)
		 RETURNS record AS $$ SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = i_username $$
		 LANGUAGE sql SECURITY DEFINER`,
		"GRANT EXECUTE ON FUNCTION public.leak_lookup(text) TO leak_authq",
	); err != nil {
		t.Fatal(err)
	}
	scramSecret, err := pg.RoleSecret(ctx, "leak_scram")
	if err != nil {
		t.Fatal(err)
	}
	md5Secret := authn.MD5Secret("leak_md5", pw["leak_md5"])
	aqSecret, err := pg.RoleSecret(ctx, "leak_aq")
	if err != nil {
		t.Fatal(err)
	}

	// The identity provider, in process, recording the tokens it issues.
	const groupOID = "66666666-6666-4666-8666-666666666666"
	const clientID = "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	idp, err := devidp.New(devidp.Options{
		Tenants: []string{devTenant}, Logger: slog.New(slog.DiscardHandler),
		Clients: []devidp.Client{{ClientID: clientID, Secret: clientSecret}},
		Groups:  map[string][]string{groupOID: {opsOID}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &tokenRecorder{h: idp.Handler()}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	if err := idp.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	port, mport := freePort(t), freePort(t)
	cert, key, err := writeSelfSignedCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "client_secret"), clientSecret+"\n")
	writeFile(t, filepath.Join(dir, "userlist.txt"), fmt.Sprintf(`"alice" "%s"
"admin" "%s"
"leak_plain" "%s"
"leak_scram" "%s"
"leak_md5" "%s"
"leak_authq" "%s"
"leak_writers" "%s"
`, alicePassword, adminPW, pw["leak_plain"], scramSecret, pw["leak_md5"], pw["leak_authq"], pw["leak_writers"]))
	writeFile(t, filepath.Join(dir, "hba.conf"), `hostssl all leak_scram 127.0.0.1/32 scram-sha-256
hostssl all leak_md5 127.0.0.1/32 md5
hostssl app alice 127.0.0.1/32 entra
hostssl app leak_writers 127.0.0.1/32 entra
hostssl all all 127.0.0.1/32 password
`)
	ini := filepath.Join(dir, "pgbouncer.ini")
	writeFile(t, ini, fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%[1]d dbname=app server_auth=password
postgres = host=127.0.0.1 port=%[1]d dbname=postgres server_auth=password
forced = host=127.0.0.1 port=%[1]d dbname=app user=leak_forced password=%[2]s server_auth=password
tokdb = host=127.0.0.1 port=%[1]d dbname=app server_auth=client_secret

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[3]d
unix_socket_dir = %[4]s
auth_type = hba
auth_hba_file = %[4]s/hba.conf
auth_file = %[4]s/userlist.txt
auth_user = leak_authq
auth_dbname = postgres
auth_query = SELECT uname, phash FROM public.leak_lookup($1)
admin_users = admin
stats_users = leak_plain
pool_mode = transaction
server_tls_sslmode = disable
client_tls_sslmode = require
client_tls_cert_file = %[5]s
client_tls_key_file = %[6]s
log_connections = 1
log_disconnections = 1
log_pooler_errors = 1
verbose = 2

[entra]
authority = %[7]s
graph_endpoint = %[7]s
tenants = %[8]s
auth_mode = password
server_auth = client_secret
client_id = %[9]s
tenant_id = %[8]s
client_secret_file = %[4]s/client_secret
token_endpoint_authority = %[7]s

[entra_principals]
alice = oid=%[10]s type=user
leak_writers = oid=%[11]s type=group

[metrics]
listen = 127.0.0.1:%[12]d
`, pg.Port, pw["leak_forced"], port, dir, cert, key, srv.URL, devTenant, clientID, aliceOID, groupOID, mport))
	p := startPgwarden(t, dir, "-v", "-v", ini)
	p.waitOutput("metrics listening", 30*time.Second)

	corpus := &secretCorpus{}
	dsn := func(user, password, db string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=require connect_timeout=10", port, user, password, db)
	}
	// signIn connects, runs a query, and records what the client was told.
	signIn := func(name, user, password, db string, wantOK bool) {
		t.Helper()
		conn, err := connect(ctx, dsn(user, password, db))
		if err == nil {
			var who string
			err = conn.QueryRow(ctx, "SELECT current_user").Scan(&who)
			conn.Close(context.Background())
			if err == nil {
				corpus.add(name, "signed in as "+who)
			}
		}
		if err != nil {
			corpus.add(name, err.Error())
		}
		if (err == nil) != wantOK {
			t.Errorf("%s: signed in %v, want %v (%v)", name, err == nil, wantOK, err)
		}
	}

	token, err := idp.Mint(devidp.TokenSpec{OID: aliceOID, UPN: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	overage, err := idp.Mint(devidp.TokenSpec{OID: opsOID, Type: devidp.TypeApp, Overage: true})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := idp.Mint(devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultExpired})
	if err != nil {
		t.Fatal(err)
	}
	tampered, err := idp.Mint(devidp.TokenSpec{OID: aliceOID, Fault: devidp.FaultTamperedPayload})
	if err != nil {
		t.Fatal(err)
	}
	signIn("plain", "leak_plain", pw["leak_plain"], "app", true)
	signIn("plain wrong", "leak_plain", secretMark("wrongplain"), "app", false)
	signIn("scram", "leak_scram", pw["leak_scram"], "app", true)
	signIn("scram wrong", "leak_scram", secretMark("wrongscram"), "app", false)
	signIn("md5", "leak_md5", pw["leak_md5"], "app", true)
	signIn("md5 wrong", "leak_md5", secretMark("wrongmd5"), "app", false)
	signIn("auth_query", "leak_aq", pw["leak_aq"], "app", true)
	signIn("auth_query wrong", "leak_aq", secretMark("wrongaq"), "app", false)
	signIn("forced user", "leak_plain", pw["leak_plain"], "forced", true)
	signIn("entra", "alice", token, "app", true)
	signIn("entra again (token cache)", "alice", token, "app", true)
	signIn("entra group overage (Graph with pgwarden's token)", "leak_writers", overage, "app", true)
	signIn("entra expired", "alice", expired, "app", false)
	signIn("entra tampered", "alice", tampered, "app", false)
	signIn("token to a password rule", "leak_plain", token, "app", false)
	signIn("backend token refused by PostgreSQL", "leak_plain", pw["leak_plain"], "tokdb", false)
	signIn("console wrong password", "admin", secretMark("wrongadmin"), "pgbouncer", false)
	backend := rec.tokens()
	if len(backend) == 0 {
		t.Fatal("pgwarden fetched no token of its own")
	}

	// The console, as the admin and as a stats user.
	admin, err := pgx.Connect(ctx, dsn("admin", adminPW, "pgbouncer")+" default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	held, err := connect(ctx, dsn("leak_plain", pw["leak_plain"], "app")) // a client to list
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())
	for _, cmd := range []string{"SHOW CONFIG", "SHOW USERS", "SHOW DATABASES", "SHOW CLIENTS", "SHOW SERVERS", "SHOW POOLS",
		"SHOW SOCKETS", "SHOW STATS", "SHOW LISTS", "SHOW JWKS", "SHOW PRINCIPALS", "SHOW SIGNINS", "SHOW STATE", "SHOW PEERS"} {
		corpus.add("admin "+cmd, consoleText(t, ctx, admin, cmd))
	}
	stats, err := pgx.Connect(ctx, dsn("leak_plain", pw["leak_plain"], "pgbouncer")+" default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close(context.Background())
	for _, cmd := range []string{"SHOW CONFIG", "SHOW DATABASES", "SHOW USERS", "SHOW CLIENTS"} {
		corpus.add("stats user "+cmd, consoleText(t, ctx, stats, cmd))
	}

	_, body := scrape(t, mport)
	corpus.add("/metrics", body)
	// SIGTERM: the log's last lines are written.
	p.signal(syscall.SIGTERM)
	p.wait(20 * time.Second)
	corpus.add("pgwarden stdout and stderr", p.output())

	all := corpus.String()
	secrets := map[string]string{
		"admin password":     adminPW,
		"client secret":      clientSecret,
		"SCRAM secret":       scramSecret,
		"md5 secret":         md5Secret,
		"auth_query secret":  aqSecret,
		"SCRAM secret's key": scramSecret[strings.LastIndexByte(scramSecret, ':')+1:],
	}
	for r, s := range pw {
		secrets[r+" password"] = s
	}
	for i, line := range strings.Split(all, "\n") {
		if strings.Contains(line, "Markwrong") {
			t.Errorf("a wrong password is shown, line %d: %s", i, line)
		}
	}
	addToken := func(name, tok string) {
		parts := strings.Split(tok, ".")
		secrets[name] = tok
		secrets[name+" signature"] = parts[2]
		secrets[name+" header.payload"] = parts[0] + "." + parts[1]
	}
	addToken("Entra token", token)
	addToken("overage token", overage)
	addToken("expired token", expired)
	addToken("tampered token", tampered)
	for i, b := range backend {
		addToken(fmt.Sprintf("pgwarden's own token #%d", i), b)
	}
	for name, s := range secrets {
		if i := strings.Index(all, s); i >= 0 {
			line := all[strings.LastIndexByte(all[:i], '\n')+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("%s is shown: %s", name, line)
		}
	}
	// The capture works: the token's uti is logged (audit), and the
	// refusals' reasons are there.
	uti := claims(t, token)["uti"].(string)
	for _, want := range []string{`"uti":"` + uti + `"`, `"reason":"wrong_password"`, `"reason":"expired"`, `"reason":"bad_signature"`, "pgwarden_signin_attempts_total", "leak_forced"} {
		if !strings.Contains(all, want) {
			t.Errorf("the captured output lacks %s", want)
		}
	}
	if t.Failed() {
		os.WriteFile(filepath.Join(t.TempDir(), "corpus.txt"), []byte(all), 0o600)
		t.Logf("captured output: %d bytes", len(all))
	}
}

// consoleText runs a console command and returns its rows as text (or the
// error).
func consoleText(t *testing.T, ctx context.Context, conn *pgx.Conn, cmd string) string {
	t.Helper()
	rows, err := conn.Query(ctx, cmd)
	if err != nil {
		return "ERROR " + err.Error()
	}
	defer rows.Close()
	var b strings.Builder
	for _, f := range rows.FieldDescriptions() {
		b.WriteString(f.Name + "|")
	}
	b.WriteString("\n")
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return b.String() + "ERROR " + err.Error()
		}
		for _, v := range vals {
			fmt.Fprintf(&b, "%v|", v)
		}
		b.WriteString("\n")
	}
	if err := rows.Err(); err != nil {
		b.WriteString("ERROR " + err.Error())
	}
	return b.String()
}
