package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pgwarden/pgwarden/authn/devidp"
)

// entraSetup is what the Entra-token storm needs: the development identity
// provider the harness runs in its own process (OIDC discovery and key sets
// over HTTP on loopback), the object ID that [entra_principals] maps to the
// bench role, and one token minted for it.
type entraSetup struct {
	authority string // the dev IdP's URL: authority and graph_endpoint
	tenant    string
	oid       string
	token     string // PGPASSWORD of the Entra storm

	idp  *devidp.IdP
	done chan struct{}
}

// tokenLifetime is the validity of the one token of a run: the Entra storm
// rows take a few minutes at most, and pgwarden keeps a validated token
// cached until its expiry.
const tokenLifetime = time.Hour

// startEntra starts the development identity provider on a free loopback
// port and mints the bench role's token.
func startEntra() (*entraSetup, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	idp, err := devidp.New(devidp.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := idp.SetBaseURL("http://" + ln.Addr().String()); err != nil {
		ln.Close()
		return nil, err
	}
	e := &entraSetup{idp: idp, done: make(chan struct{}), authority: idp.BaseURL(), tenant: idp.Tenants()[0], oid: devidp.NewGUID()}
	go func() {
		defer close(e.done)
		if err := idp.Serve(ln); err != nil {
			log.Warn("dev IdP stopped", "err", err)
		}
	}()
	e.token, err = idp.Mint(devidp.TokenSpec{OID: e.oid, UPN: benchUser + "@devidp.example", Lifetime: tokenLifetime})
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("minting the bench token: %w", err)
	}
	return e, nil
}

// stop shuts the dev IdP down; the token stops being verifiable by a
// pooler that has not fetched the keys yet.
func (e *entraSetup) stop() {
	_ = e.idp.Shutdown()
	<-e.done
}

// iniSections are pgwarden's [entra] and [entra_principals] sections: the
// dev IdP is the authority and the Graph endpoint, its tenant is the only
// one accepted, auth_mode entra (tokens only: every sign-in of the storm is
// a token sign-in), and the token's object ID maps to the bench role. The
// pooler logs in to PostgreSQL with the bench password from the userlist
// (server_auth password, the default), as for password sign-ins. Without
// client TLS, allow_plaintext lets the token cross the loopback in clear;
// pgwarden refuses that by default.
func (e *entraSetup) iniSections(tls bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n[entra]\nauthority = %s\ngraph_endpoint = %s\ntenants = %s\nauth_mode = entra\n", e.authority, e.authority, e.tenant)
	if !tls {
		b.WriteString("allow_plaintext = 1\n")
	}
	fmt.Fprintf(&b, "\n[entra_principals]\n%s = oid=%s type=user\n", benchUser, e.oid)
	return b.String()
}

// normalize replaces the run's IdP URL, tenant and object ID in ini by
// $IDP, $TENANT and $OID, for the report.
func (e *entraSetup) normalize(ini string) string {
	return strings.NewReplacer(e.authority, "$IDP", e.tenant, "$TENANT", e.oid, "$OID").Replace(ini)
}
