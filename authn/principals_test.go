package authn_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/authn/devidp"
)

const (
	enAliceRole = "alice@contoso.com"
	enGuestRole = "guest_fabrikam.com#EXT#@contoso.onmicrosoft.com"
	enSvcRole   = "billing-app"
	enMIRole    = "vm-identity"
	enGroupRole = "Prod DB Readonly"
)

func enPrincipals(t *testing.T) *authn.Principals {
	t.Helper()
	ps, err := authn.NewPrincipals([]authn.Principal{
		{Role: enAliceRole, OID: enAliceOID, Type: "user", Source: "config"},
		{Role: "alice-admin", OID: enAliceOID, Type: "user", Admin: true, MFA: true},
		{Role: enGuestRole, OID: enGuestOID, Type: "user"},
		{Role: enSvcRole, OID: enSvcOID, Type: "service"},
		{Role: enMIRole, OID: enMIOID, Type: "SERVICE", Tenant: strings.ToUpper(enTenantA)},
		{Role: enGroupRole, OID: enGroupOID, Type: "group"},
		{Role: "other-tenant-only", OID: enAliceOID, Type: "user", Tenant: enTenantB},
		{Role: "mfa-group", OID: enGroupOID, Type: "group", MFA: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// TestAuthorize covers every principal rule with tokens from the dev IdP.
func TestAuthorize(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA, enTenantB},
		Groups: map[string][]string{enGroupOID: {enBobOID, enSvcOID}}})
	trap := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the overage endpoint from the token was called: %s", r.URL)
	}))
	defer trap.Close()
	obs := &enCountObserver{}
	v := newEnValidator(t, s.config(obs))
	ps := enPrincipals(t)

	type tc struct {
		name   string
		role   string
		spec   devidp.TokenSpec
		reason string // "" = allowed
		public string
		state  string
	}
	userMsg := authn.MsgAppTokenForUserRole
	svcMsg := authn.MsgUserTokenForServiceRole
	cases := []tc{
		{name: "user", role: enAliceRole, spec: devidp.TokenSpec{OID: enAliceOID, UPN: enAliceRole}},
		{name: "user, v2 token", role: enAliceRole, spec: devidp.TokenSpec{OID: enAliceOID, UPN: enAliceRole, Version: "2.0"}},
		{name: "user, token of another user", role: enAliceRole, spec: devidp.TokenSpec{OID: enBobOID, UPN: enAliceRole},
			reason: authn.ReasonOIDMismatch, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "user re-created with the same UPN", role: enAliceRole, spec: devidp.TokenSpec{UPN: enAliceRole},
			reason: authn.ReasonOIDMismatch, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "user, app token", role: enAliceRole, spec: devidp.TokenSpec{OID: enAliceOID, Type: devidp.TypeApp},
			reason: authn.ReasonTokenTypeMismatch, public: userMsg(enAliceRole), state: "28000"},
		{name: "user, app token with idtyp", role: enAliceRole, spec: devidp.TokenSpec{OID: enAliceOID, Type: devidp.TypeApp, IDTyp: "app"},
			reason: authn.ReasonTokenTypeMismatch, public: userMsg(enAliceRole), state: "28000"},
		{name: "role names are case-sensitive", role: "Alice@contoso.com", spec: devidp.TokenSpec{OID: enAliceOID},
			reason: authn.ReasonUnknownRole, public: `password authentication failed for user "Alice@contoso.com"`, state: "28P01"},
		{name: "unknown role", role: "mallory", spec: devidp.TokenSpec{OID: enAliceOID},
			reason: authn.ReasonUnknownRole, public: `password authentication failed for user "mallory"`, state: "28P01"},
		{name: "guest without upn", role: enGuestRole, spec: devidp.TokenSpec{OID: enGuestOID}},
		{name: "mfa role without mfa", role: "alice-admin", spec: devidp.TokenSpec{OID: enAliceOID, AMR: []string{"pwd"}},
			reason: authn.ReasonMFARequired, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "mfa role with mfa", role: "alice-admin", spec: devidp.TokenSpec{OID: enAliceOID, AMR: []string{"pwd", "mfa"}}},
		{name: "tenant-bound role, other tenant", role: "other-tenant-only", spec: devidp.TokenSpec{OID: enAliceOID},
			reason: authn.ReasonTenantMismatch, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "tenant-bound role, its tenant", role: "other-tenant-only", spec: devidp.TokenSpec{OID: enAliceOID, Tenant: enTenantB}},
		{name: "service principal", role: enSvcRole, spec: devidp.TokenSpec{OID: enSvcOID, Type: devidp.TypeApp}},
		{name: "service, user token", role: enSvcRole, spec: devidp.TokenSpec{OID: enSvcOID},
			reason: authn.ReasonTokenTypeMismatch, public: svcMsg(enSvcRole), state: "28000"},
		{name: "service, idtyp user without scp", role: enSvcRole, spec: devidp.TokenSpec{OID: enSvcOID, Type: devidp.TypeApp, IDTyp: "user"},
			reason: authn.ReasonTokenTypeMismatch, public: svcMsg(enSvcRole), state: "28000"},
		{name: "service, other app", role: enSvcRole, spec: devidp.TokenSpec{OID: enMIOID, Type: devidp.TypeApp},
			reason: authn.ReasonOIDMismatch, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "managed identity", role: enMIRole, spec: devidp.TokenSpec{OID: enMIOID, Type: devidp.TypeApp}},
		{name: "group via claim", role: enGroupRole, spec: devidp.TokenSpec{OID: enAliceOID, Groups: []string{enOtherGroupOID, enGroupOID}}},
		{name: "group, not in claim", role: enGroupRole, spec: devidp.TokenSpec{OID: enAliceOID, Groups: []string{enOtherGroupOID}},
			reason: authn.ReasonNotGroupMember, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "group, empty claim", role: enGroupRole, spec: devidp.TokenSpec{OID: enAliceOID, Groups: []string{}},
			reason: authn.ReasonNotGroupMember, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "group via Graph on overage", role: enGroupRole, spec: devidp.TokenSpec{OID: enBobOID, Overage: true, OverageEndpoint: trap.URL}},
		{name: "group via Graph on hasgroups", role: enGroupRole, spec: devidp.TokenSpec{OID: enBobOID, HasGroups: true}},
		{name: "group, overage, not a member", role: enGroupRole, spec: devidp.TokenSpec{OID: enAliceOID, Overage: true, OverageEndpoint: trap.URL},
			reason: authn.ReasonNotGroupMember, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "group, service principal member via Graph", role: enGroupRole, spec: devidp.TokenSpec{OID: enSvcOID, Type: devidp.TypeApp}},
		{name: "group, service principal not a member", role: enGroupRole, spec: devidp.TokenSpec{OID: enMIOID, Type: devidp.TypeApp},
			reason: authn.ReasonNotGroupMember, public: authn.MsgTokenInvalid, state: "28P01"},
		{name: "group with mfa, member without mfa", role: "mfa-group", spec: devidp.TokenSpec{OID: enAliceOID, Groups: []string{enGroupOID}},
			reason: authn.ReasonMFARequired, public: authn.MsgTokenInvalid, state: "28P01"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := v.Validate(context.Background(), s.mint(t, c.spec))
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			p, err := v.Authorize(context.Background(), c.role, tok, ps)
			if c.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if p.Role != c.role {
					t.Errorf("principal %+v", p)
				}
				return
			}
			if err == nil {
				t.Fatalf("allowed as %+v", p)
			}
			ae := enAuthErr(t, err)
			if ae.Reason != c.reason || ae.Public != c.public || ae.SQLState != c.state {
				t.Errorf("got %q %q %q, want %q %q %q (%v)", ae.Reason, ae.Public, ae.SQLState, c.reason, c.public, c.state, err)
			}
		})
	}
	if p, ok := ps.Lookup(enMIRole); !ok || p.Type != "service" || p.Tenant != enTenantA {
		t.Errorf("normalized principal %+v", p)
	}
}

// TestGraphCache: Graph answers (positive and negative) are cached, and
// concurrent identical questions share one call.
func TestGraphCache(t *testing.T) {
	clock := newEnFakeClock()
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}, Now: clock.Now,
		Groups: map[string][]string{enGroupOID: {enBobOID}}})
	obs := &enCountObserver{}
	cfg := s.config(obs)
	cfg.Now = clock.Now
	v := newEnValidator(t, cfg)
	ps := enPrincipals(t)
	ctx := context.Background()
	bob, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enBobOID, Overage: true}))
	if err != nil {
		t.Fatal(err)
	}
	alice, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enAliceOID, Overage: true}))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var fails atomic.Int64
	for range 50 {
		wg.Go(func() {
			if _, err := v.Authorize(ctx, enGroupRole, bob, ps); err != nil {
				fails.Add(1)
			}
		})
	}
	wg.Wait()
	if fails.Load() != 0 {
		t.Fatalf("%d refusals", fails.Load())
	}
	if _, err := v.Authorize(ctx, enGroupRole, alice, ps); authn.ReasonOf(err) != authn.ReasonNotGroupMember {
		t.Fatalf("alice: %v", err)
	}
	if _, err := v.Authorize(ctx, enGroupRole, alice, ps); authn.ReasonOf(err) != authn.ReasonNotGroupMember {
		t.Fatalf("alice again: %v", err)
	}
	if n := s.graph.Load(); n != 2 {
		t.Errorf("%d Graph calls, want 2 (one per question)", n)
	}
	// Membership changes show after the TTL.
	s.idp.AddGroupMember(enGroupOID, enAliceOID)
	s.idp.RemoveGroupMember(enGroupOID, enBobOID)
	if _, err := v.Authorize(ctx, enGroupRole, bob, ps); err != nil {
		t.Errorf("cached answer not used: %v", err)
	}
	clock.Advance(authn.DefaultGraphCacheTTL + 1)
	if _, err := v.Authorize(ctx, enGroupRole, alice, ps); err != nil {
		t.Errorf("alice after the TTL: %v", err)
	}
	if _, err := v.Authorize(ctx, enGroupRole, bob, ps); authn.ReasonOf(err) != authn.ReasonNotGroupMember {
		t.Errorf("bob after the TTL: %v", err)
	}
	if n := s.graph.Load(); n != 4 {
		t.Errorf("%d Graph calls, want 4", n)
	}
	if obs.graphCached.Load() == 0 || obs.graphCalls.Load() != 4 {
		t.Errorf("observer: %d calls %d cached", obs.graphCalls.Load(), obs.graphCached.Load())
	}
	// A flush forgets answers.
	v.FlushGraphCache()
	if _, err := v.Authorize(ctx, enGroupRole, alice, ps); err != nil {
		t.Error(err)
	}
	if n := s.graph.Load(); n != 5 {
		t.Errorf("%d Graph calls after a flush, want 5", n)
	}
}

func TestGraphUnavailable(t *testing.T) {
	idpResult(t, "graph_unavailable")
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA}, Groups: map[string][]string{enGroupOID: {enBobOID}}})
	ps := enPrincipals(t)
	ctx := context.Background()

	cfg := s.config(nil)
	cfg.GraphToken = nil
	v := newEnValidator(t, cfg)
	bob, err := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enBobOID, Overage: true}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authorize(ctx, enGroupRole, bob, ps); authn.ReasonOf(err) != authn.ReasonGraphUnavailable {
		t.Errorf("no token source: %v", err)
	}
	// Without a groups claim at all, Graph is asked too.
	noClaim, _ := v.Validate(ctx, s.mint(t, devidp.TokenSpec{OID: enBobOID}))
	if _, err := v.Authorize(ctx, enGroupRole, noClaim, ps); authn.ReasonOf(err) != authn.ReasonGraphUnavailable {
		t.Errorf("no groups claim, no Graph: %v", err)
	}

	// A Graph token the IdP refuses (wrong audience): an error, not "not a
	// member", and not cached.
	cfg = s.config(nil)
	cfg.GraphToken = func(ctx context.Context, tenant string) (string, error) {
		return s.idp.Mint(devidp.TokenSpec{Tenant: tenant, Type: devidp.TypeApp})
	}
	v = newEnValidator(t, cfg)
	if _, err := v.Authorize(ctx, enGroupRole, bob, ps); authn.ReasonOf(err) != authn.ReasonGraphUnavailable {
		t.Errorf("Graph 401: %v", err)
	}
	// The IdP (and Graph) down.
	v = newEnValidator(t, s.config(nil))
	s.down.Store(true)
	if _, err := v.Authorize(ctx, enGroupRole, bob, ps); authn.ReasonOf(err) != authn.ReasonGraphUnavailable {
		t.Errorf("Graph down: %v", err)
	}
	s.down.Store(false)
	if _, err := v.Authorize(ctx, enGroupRole, bob, ps); err != nil {
		t.Errorf("Graph back: %v", err)
	}
}

// TestClientCredentialsAndIMDSTokens signs in service roles with tokens the
// dev IdP issues through its token and IMDS endpoints.
func TestClientCredentialsAndIMDSTokens(t *testing.T) {
	s := newEnIdPServer(t, devidp.Options{Tenants: []string{enTenantA},
		Clients:           []devidp.Client{{ClientID: "billing-client", OID: enSvcOID, Secret: "s3cret"}},
		ManagedIdentities: []devidp.ManagedIdentity{{ObjectID: enMIOID, ClientID: "mi-client"}},
	})
	v := newEnValidator(t, s.config(nil))
	ps := enPrincipals(t)
	ctx := context.Background()

	resp, err := http.PostForm(s.srv.URL+"/"+enTenantA+"/oauth2/v2.0/token", map[string][]string{
		"grant_type": {"client_credentials"}, "client_id": {"billing-client"}, "client_secret": {"s3cret"},
		"scope": {authn.DefaultEntraAudience + "/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := enDecodeToken(t, resp)
	tok, err := v.Validate(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := v.Authorize(ctx, enSvcRole, tok, ps); err != nil || p.Role != enSvcRole {
		t.Errorf("client credentials: %v", err)
	}
	if tok.AppID != "billing-client" || tok.IDType != authn.IDTypeApp {
		t.Errorf("token %+v", tok)
	}

	req, _ := http.NewRequest("GET", s.srv.URL+"/metadata/identity/oauth2/token?api-version=2018-02-01&resource="+authn.DefaultEntraAudience, nil)
	req.Header.Set("Metadata", "true")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tok, err = v.Validate(ctx, enDecodeToken(t, resp))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Authorize(ctx, enMIRole, tok, ps); err != nil {
		t.Errorf("IMDS: %v", err)
	}
}

func TestNewPrincipalsErrors(t *testing.T) {
	_, err := authn.NewPrincipals([]authn.Principal{
		{Role: "", OID: enAliceOID, Type: "user"},
		{Role: "a", OID: "not-a-guid", Type: "user"},
		{Role: "b", OID: enAliceOID, Type: "robot"},
		{Role: "c", OID: enAliceOID, Type: "user", Tenant: "contoso.com"},
		{Role: "d", OID: enAliceOID, Type: "user"},
		{Role: "d", OID: enBobOID, Type: "user"},
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"empty role", `"a": oid`, `"b": type "robot"`, `"c": tenant`, `"d": role listed twice`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	var nilSet *authn.Principals
	if _, ok := nilSet.Lookup("x"); ok || nilSet.Len() != 0 || nilSet.All() != nil {
		t.Error("nil set not empty")
	}
}

func TestPrincipalsRemovedAndByOID(t *testing.T) {
	ps := enPrincipals(t)
	if got := ps.ByOID(enAliceOID); len(got) != 3 {
		t.Errorf("ByOID: %+v", got)
	}
	next, err := authn.NewPrincipals([]authn.Principal{
		{Role: enAliceRole, OID: enAliceOID, Type: "user", Admin: true, Source: "query"}, // admin/source changes: kept
		{Role: "alice-admin", OID: enAliceOID, Type: "user", Admin: true, MFA: true},
		{Role: enGuestRole, OID: enBobOID, Type: "user"}, // re-created: new oid
		{Role: enSvcRole, OID: enSvcOID, Type: "service"},
		{Role: enMIRole, OID: enMIOID, Type: "service"}, // tenant dropped
		{Role: enGroupRole, OID: enGroupOID, Type: "group", MFA: true},
		{Role: "mfa-group", OID: enGroupOID, Type: "group"}, // MFA relaxed: kept
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps.Removed(next) {
		got = append(got, p.Role)
	}
	want := []string{enGroupRole, enGuestRole, "other-tenant-only", enMIRole}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Removed: %q, want %q", got, want)
	}
}

func TestPrincipalsFromSecurityLabels(t *testing.T) {
	labels := []authn.SecurityLabel{
		{Role: "alice@contoso.com", Provider: "pgaadauth", Label: "aadauth,oid=" + enAliceOID + ",type=user"},
		{Role: "admin-group", Provider: "pgaadauth", Label: "aadauth,oid=" + strings.ToUpper(enGroupOID) + ",type=group,admin"},
		{Role: "svc", Provider: "pgaadauth", Label: "aadauth, oid=" + enSvcOID + ", type=service, admin, mfa"},
		// Newer servers: bare "aadauth" plus the details in pgaadauth-int.
		{Role: "new-group", Provider: "pgaadauth", Label: "aadauth"},
		{Role: "new-group", Provider: "pgaadauth-int", Label: "type=group,oid=" + enOtherGroupOID + ",tenant_id=" + enTenantA},
		// Both forms agreeing.
		{Role: "both", Provider: "pgaadauth", Label: "aadauth,oid=" + enBobOID + ",type=user,admin"},
		{Role: "both", Provider: "pgaadauth-int", Label: "type=user,oid=" + enBobOID + ",tenant_id=" + enTenantB},
		// Failures, each for its role only.
		{Role: "conflict", Provider: "pgaadauth", Label: "aadauth,oid=" + enBobOID + ",type=user"},
		{Role: "conflict", Provider: "pgaadauth-int", Label: "type=user,oid=" + enAliceOID},
		{Role: "unknown-field", Provider: "pgaadauth", Label: "aadauth,oid=" + enBobOID + ",type=user,superuser"},
		{Role: "no-prefix", Provider: "pgaadauth", Label: "oid=" + enBobOID + ",type=user"},
		{Role: "bare", Provider: "pgaadauth", Label: "aadauth"},
		{Role: "bad-type", Provider: "pgaadauth", Label: "aadauth,oid=" + enBobOID + ",type=robot"},
		{Role: "ignored", Provider: "sepgsql", Label: "system_u:object_r:sepgsql_table_t:s0"},
	}
	got, err := authn.PrincipalsFromSecurityLabels(labels)
	want := []authn.Principal{
		{Role: "admin-group", OID: enGroupOID, Type: "group", Admin: true, Source: "security_label"},
		{Role: "alice@contoso.com", OID: enAliceOID, Type: "user", Source: "security_label"},
		{Role: "both", OID: enBobOID, Type: "user", Tenant: enTenantB, Admin: true, Source: "security_label"},
		{Role: "new-group", OID: enOtherGroupOID, Type: "group", Tenant: enTenantA, Source: "security_label"},
		{Role: "svc", OID: enSvcOID, Type: "service", Admin: true, MFA: true, Source: "security_label"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("principal %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, role := range []string{"conflict", "unknown-field", "no-prefix", "bare", "bad-type"} {
		if err == nil || !strings.Contains(err.Error(), `"`+role+`"`) {
			t.Errorf("error %v does not name role %q", err, role)
		}
	}
	if err != nil && strings.Contains(err.Error(), "ignored") {
		t.Errorf("other providers are not ignored: %v", err)
	}
	if _, err := authn.NewPrincipals(got); err != nil {
		t.Errorf("labels give an invalid set: %v", err)
	}
}
