package main

// The development tools: `pgwarden dev-idp` serves the development identity
// provider (package authn/devidp) on loopback, and `pgwarden dev-token` asks
// a running one to mint an access token.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/authn/devidp"
)

// defaultDevIdPAddr is where `pgwarden dev-idp` listens without -listen.
const defaultDevIdPAddr = "127.0.0.1:8400"

const devIdPUsage = `Usage: pgwarden dev-idp [-listen 127.0.0.1:PORT] [-tenant GUID]...

Serves a DEVELOPMENT identity provider that imitates Microsoft Entra ID:
OpenID discovery (v1 and v2) and key sets per tenant, a token endpoint, an
IMDS-compatible managed-identity endpoint, an App Service identity endpoint,
Microsoft Graph checkMemberGroups, and a mint endpoint for pgwarden dev-token.
It signs any token it is asked for, so it listens on loopback addresses only.
Its signing keys live in memory: tokens it minted stop working when it stops.
It prints the [entra] settings to use and serves until SIGINT or SIGTERM.

Options:
  -listen ADDR     loopback address and port (default %s; port 0 picks a free one)
  -tenant GUID     a tenant to serve (repeatable; default: one fresh tenant ID)
  -group G=M,...   make object IDs M members of group G for Graph (repeatable)
  -h               show this help
`

// runDevIdP is `pgwarden dev-idp`.
func runDevIdP(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev-idp", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	listen := fs.String("listen", defaultDevIdPAddr, "")
	var tenants []string
	fs.Func("tenant", "", func(v string) error {
		tenants = append(tenants, strings.ToLower(strings.TrimSpace(v)))
		return nil
	})
	groups := map[string][]string{}
	fs.Func("group", "", func(v string) error {
		g, members, ok := strings.Cut(v, "=")
		if !ok || strings.TrimSpace(g) == "" {
			return errors.New("want GROUP_OID=MEMBER_OID[,MEMBER_OID...]")
		}
		g = strings.ToLower(strings.TrimSpace(g))
		groups[g] = append(groups[g], splitList(members)...)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, devIdPUsage, defaultDevIdPAddr)
			return nil
		}
		return &exitError{2, fmt.Errorf("dev-idp: %v\n\n%s", err, strings.TrimSpace(fmt.Sprintf(devIdPUsage, defaultDevIdPAddr)))}
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("dev-idp: unexpected argument %q\n\n%s", fs.Arg(0), strings.TrimSpace(fmt.Sprintf(devIdPUsage, defaultDevIdPAddr)))}
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return &exitError{2, fmt.Errorf("dev-idp: -listen %q: want HOST:PORT, e.g. %s", *listen, defaultDevIdPAddr)}
	}
	if !isLoopbackHost(host) {
		return &exitError{2, fmt.Errorf("dev-idp: refusing to listen on %s: the development identity provider signs any token it is asked for, so it listens on loopback addresses only (127.0.0.1, ::1 or localhost)", *listen)}
	}
	for _, t := range tenants {
		if !isGUID(t) {
			return &exitError{2, fmt.Errorf("dev-idp: -tenant %q is not a GUID (a tenant ID such as %s)", t, devidp.NewGUID())}
		}
	}
	for g, members := range groups {
		for _, id := range append([]string{g}, members...) {
			if !isGUID(id) {
				return &exitError{2, fmt.Errorf("dev-idp: -group: %q is not a GUID (an object ID)", id)}
			}
		}
	}

	// Signals are caught before anything starts, so that Ctrl-C always
	// stops the server cleanly.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	log := slog.New(slog.NewTextHandler(stderr, nil))
	idp, err := devidp.New(devidp.Options{Tenants: tenants, Groups: groups, Logger: log})
	if err != nil {
		return &exitError{1, err}
	}
	if strings.EqualFold(host, "localhost") {
		_, port, _ := net.SplitHostPort(*listen)
		*listen = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return &exitError{1, fmt.Errorf("dev-idp: %w", err)}
	}
	base := "http://" + ln.Addr().String()
	if err := idp.SetBaseURL(base); err != nil {
		ln.Close()
		return &exitError{1, err}
	}
	served := make(chan error, 1)
	go func() { served <- idp.Serve(ln) }()

	ts := idp.Tenants()
	mi := idp.ManagedIdentities()[0]
	fmt.Fprintf(stdout, `pgwarden dev-idp: a DEVELOPMENT identity provider. It signs any token it is
asked for: use it for tests and demos only, never as a real identity provider.

URL:     %[1]s
tenants: %[2]s

pgwarden settings ([entra] section of a pgbouncer.ini):

  authority = %[1]s
  graph_endpoint = %[1]s
  tenants = %[3]s

Mint a token:  pgwarden dev-token -idp %[1]s -oid OBJECT_ID
Managed identity (server_auth = managed_identity): imds_endpoint = %[1]s/metadata/identity/oauth2/token
  client_id %[4]s, object_id %[5]s
App Service (server_auth = app_service): IDENTITY_ENDPOINT=%[1]s/msi/token IDENTITY_HEADER=%[6]s
Signing keys are in memory: tokens stop working when dev-idp stops.
Press Ctrl-C to stop.
`, base, strings.Join(ts, " "), strings.Join(ts, ", "), mi.ClientID, mi.ObjectID, idp.IdentityHeader())

	select {
	case err := <-served:
		if err != nil {
			return &exitError{1, fmt.Errorf("dev-idp: %w", err)}
		}
		return nil
	case sig := <-sigs:
		log.Info("dev-idp stopping", "signal", sig.String())
		if err := idp.Shutdown(); err != nil {
			return &exitError{1, err}
		}
		<-served
		return nil
	}
}

// faultNames lists the devidp faults, comma-separated.
func faultNames() string {
	names := make([]string, 0, len(devidp.Faults))
	for _, f := range devidp.Faults {
		names = append(names, string(f))
	}
	return strings.Join(names, ", ")
}

const devTokenUsage = `Usage: pgwarden dev-token -idp URL [OPTION]...

Asks a running pgwarden dev-idp (or pgwarden demo) to mint an access token and
prints it, alone on one line, to standard output, so that for example

  PGPASSWORD=$(pgwarden dev-token -idp http://127.0.0.1:8400 -oid OID) psql "host=... user=ROLE sslmode=require"

signs in as the role that [entra_principals] maps to OID.

Options:
  -idp URL          the dev-idp's URL (required), e.g. http://127.0.0.1:8400
  -tenant GUID      the token's tid (default: the dev-idp's first tenant)
  -oid GUID         the object ID of the user or service principal (default: a fresh one)
  -type user|app    user: a delegated user token (default); app: an app-only token
                    (service principal or managed identity)
  -upn NAME         user principal name (upn claim), e.g. alice@contoso.com
  -groups G1,G2     group object IDs for the groups claim
  -overage          replace the groups claim by Entra's overage markers
                    (pgwarden then asks Graph checkMemberGroups)
  -amr pwd,mfa      authentication methods (default pwd for user tokens)
  -lifetime D       lifetime as a Go duration (default 1h)
  -fault NAME       mint a deliberately defective token; NAME is one of
                    %s
  -h                show this help
`

// runDevToken is `pgwarden dev-token`.
func runDevToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev-token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var spec devidp.TokenSpec
	idp := fs.String("idp", "", "")
	fs.StringVar(&spec.Tenant, "tenant", "", "")
	fs.StringVar(&spec.OID, "oid", "", "")
	fs.StringVar(&spec.Type, "type", devidp.TypeUser, "")
	fs.StringVar(&spec.UPN, "upn", "", "")
	groups := fs.String("groups", "", "")
	fs.BoolVar(&spec.Overage, "overage", false, "")
	amr := fs.String("amr", "", "")
	fs.DurationVar(&spec.Lifetime, "lifetime", devidp.DefaultTokenLifetime, "")
	fault := fs.String("fault", "", "")
	usage := fmt.Sprintf(devTokenUsage, wrapList(faultNames(), 58, strings.Repeat(" ", 20)))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		return &exitError{2, fmt.Errorf("dev-token: %v\n\n%s", err, usage)}
	}
	bad := func(format string, a ...any) error {
		return &exitError{2, fmt.Errorf("dev-token: "+format, a...)}
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected argument %q\n\n%s", fs.Arg(0), usage)
	case *idp == "":
		return bad("-idp URL is required: the URL pgwarden dev-idp (or pgwarden demo) prints\n\n%s", usage)
	case spec.Type != devidp.TypeUser && spec.Type != devidp.TypeApp:
		return bad("-type %q: want user or app", spec.Type)
	case spec.Tenant != "" && !isGUID(spec.Tenant):
		return bad("-tenant %q is not a GUID", spec.Tenant)
	case spec.OID != "" && !isGUID(spec.OID):
		return bad("-oid %q is not a GUID (an Entra object ID)", spec.OID)
	case spec.Lifetime <= 0:
		return bad("-lifetime %v: must be positive", spec.Lifetime)
	}
	if *fault != "" {
		ok := false
		for _, f := range devidp.Faults {
			ok = ok || string(f) == *fault
		}
		if !ok {
			return bad("unknown -fault %q; the faults are: %s", *fault, faultNames())
		}
		spec.Fault = devidp.Fault(*fault)
	}
	spec.Groups = splitList(*groups)
	for _, g := range spec.Groups {
		if !isGUID(g) {
			return bad("-groups: %q is not a GUID (a group object ID)", g)
		}
	}
	spec.AMR = splitList(*amr)
	if spec.OID == "" && spec.Fault != devidp.FaultMissingOID {
		spec.OID = devidp.NewGUID()
		fmt.Fprintf(stderr, "dev-token: no -oid given: minted for the fresh object ID %s\n", spec.OID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := devidp.RequestToken(ctx, &http.Client{Timeout: 30 * time.Second}, *idp, spec)
	if err != nil {
		return &exitError{1, fmt.Errorf("dev-token: %w (is pgwarden dev-idp running at %s?)", err, *idp)}
	}
	if tok == "" {
		return &exitError{1, fmt.Errorf("dev-token: %s answered without a token", *idp)}
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// wrapList wraps a comma-separated list at width, indenting continuation
// lines with indent.
func wrapList(list string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Split(list, ", ") {
		if i > 0 {
			b.WriteString(",")
			n++
			if n+1+len(w) > width {
				b.WriteString("\n" + indent)
				n = 0
			} else {
				b.WriteString(" ")
				n++
			}
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isGUID reports whether s has the 8-4-4-4-12 hex form of an Entra ID.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}
