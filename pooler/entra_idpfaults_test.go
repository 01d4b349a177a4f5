package pooler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

// idpResult writes the IDP-RESULT line of an identity provider fault test
// when it ends (format: see authn/idpfaults_test.go).
func idpResult(t testing.TB, item string, fields map[string]any) {
	t.Cleanup(func() {
		fields["item"], fields["test"], fields["outcome"] = item, t.Name(), "pass"
		if t.Failed() {
			fields["outcome"] = "fail"
		}
		b, _ := json.Marshal(fields)
		t.Logf("IDP-RESULT %s", b)
	})
}

// TestEntraGraphDownDuringOverage: Microsoft Graph is down while members
// whose tokens' groups claim overflowed sign in as a group role, end to end
// through pgwarden. Those sign-ins cannot be decided: the client gets the
// generic token message with SQLSTATE 28P01 and the audit line says
// graph_unavailable. Sign-ins that need no Graph (a user role, a group
// member whose token lists the group) keep working; when Graph is back,
// the overage member signs in.
func TestEntraGraphDownDuringOverage(t *testing.T) {
	fig := map[string]any{}
	idpResult(t, "graph_down_group_overage", fig)
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
	s = strings.Replace(s, "dbname=app\n", "dbname=app server_auth=password\n", 1)
	s = strings.Replace(s, "dbname=postgres\n", "dbname=postgres server_auth=password\n", 1)
	_ = os.WriteFile(in.iniPath, []byte(s), 0o600)
	in.reload(t, "")

	idp.SetServerFaults(devidp.ServerFaults{GraphDown: true})
	ctx := context.Background()
	overage := mint(t, idp, devidp.TokenSpec{OID: memberOID, Overage: true})
	start := time.Now()
	_, err = pgx.Connect(ctx, in.dsn("writers", overage, "gapp"))
	fig["undecidable_signin_ms"] = float64(time.Since(start).Microseconds()) / 1000
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("overage sign-in with Graph down: %v, want a PostgreSQL error", err)
	}
	fig["client_message"], fig["client_sqlstate"] = pe.Message, pe.Code
	if pe.Message != authn.MsgTokenInvalid || pe.Code != authn.SQLStateInvalidPassword || pe.Severity != "FATAL" {
		t.Errorf("client got %s %s %q", pe.Severity, pe.Code, pe.Message)
	}
	ev := audit.last(t)
	fig["audit_reason"] = ev["reason"]
	if ev["result"] != "refused" || ev["reason"] != authn.ReasonGraphUnavailable || ev["role"] != "writers" || ev["oid"] != memberOID {
		t.Errorf("audit %v, want refused with reason %s", ev, authn.ReasonGraphUnavailable)
	}

	// Decidable sign-ins are unaffected.
	decided := 0
	for _, c := range []struct{ role, tok string }{
		{"alice", mint(t, idp, devidp.TokenSpec{OID: aliceOID})},
		{"writers", mint(t, idp, devidp.TokenSpec{OID: memberOID, Groups: []string{groupOID}})},
	} {
		start := time.Now()
		conn, err := pgx.Connect(ctx, in.dsn(c.role, c.tok, "gapp"))
		if err != nil {
			t.Errorf("%s with Graph down: %v", c.role, err)
			continue
		}
		fig["decidable_signin_ms_"+c.role] = float64(time.Since(start).Microseconds()) / 1000
		if u := queryString(t, conn, "SELECT current_user"); u != c.role {
			t.Errorf("signed in as %s, want %s", u, c.role)
		}
		conn.Close(ctx)
		decided++
	}
	fig["decidable_ok"] = decided

	// Graph back: failures were not cached, the member signs in.
	idp.SetServerFaults(devidp.ServerFaults{})
	conn, err := pgx.Connect(ctx, in.dsn("writers", overage, "gapp"))
	if err != nil {
		t.Fatalf("overage sign-in with Graph back: %v", err)
	}
	defer conn.Close(ctx)
	fig["recovered"] = true
}
