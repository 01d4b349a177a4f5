package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pgwarden/pgwarden/authn/devidp"
	"github.com/pgwarden/pgwarden/internal/pgcluster"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// runDemo starts a throwaway PostgreSQL from the installed server binaries, a
// development identity provider on loopback, and pgwarden in front of the
// PostgreSQL in transaction mode, with TLS (a self-signed certificate) and
// both password and Entra ID token sign-in. It prints psql lines that work,
// one with the password and one with a token. Ctrl-C stops everything and
// removes the files.
func runDemo(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return &exitError{2, fmt.Errorf("demo takes no arguments")}
	}
	// Catch Ctrl-C from the start, so that the cluster is always removed.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	interrupted := func() error {
		select {
		case sig := <-sigs:
			return &exitError{1, fmt.Errorf("interrupted by %v; the throwaway PostgreSQL is removed", sig)}
		default:
			return nil
		}
	}
	fmt.Fprintln(stdout, "Starting a throwaway PostgreSQL…")
	cluster, err := pgcluster.Start(pgcluster.Options{})
	if err != nil {
		if ierr := interrupted(); ierr != nil {
			return ierr
		}
		return &exitError{1, fmt.Errorf("cannot start PostgreSQL (is the postgresql server package installed?): %w", err)}
	}
	stopped := false
	stopCluster := func() {
		if !stopped {
			stopped = true
			if err := cluster.Stop(); err != nil {
				fmt.Fprintln(stderr, "pgwarden demo:", err)
			}
		}
	}
	defer stopCluster()
	if err := interrupted(); err != nil {
		return err
	}
	ctx := context.Background()
	const user, password = "demo", "demo-password"
	if err := cluster.CreateRole(ctx, user, password, "scram-sha-256"); err != nil {
		return &exitError{1, err}
	}
	if err := cluster.Exec(ctx, "CREATE DATABASE demo OWNER demo"); err != nil {
		return &exitError{1, err}
	}
	dir, err := os.MkdirTemp("", "pgwarden-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port := 6432
	if ln, err := net.Listen("tcp", "127.0.0.1:6432"); err == nil {
		ln.Close()
	} else if port, err = pgcluster.FreePort(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The development identity provider, on a free loopback port: the
	// demo's Entra authority, Graph endpoint and token mint.
	idp, err := devidp.New(devidp.Options{Logger: log})
	if err != nil {
		return &exitError{1, err}
	}
	idpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return &exitError{1, err}
	}
	if err := idp.SetBaseURL("http://" + idpLn.Addr().String()); err != nil {
		idpLn.Close()
		return &exitError{1, err}
	}
	idpDone := make(chan struct{})
	go func() {
		defer close(idpDone)
		if err := idp.Serve(idpLn); err != nil {
			fmt.Fprintln(stderr, "pgwarden demo: dev IdP:", err)
		}
	}()
	defer func() {
		_ = idp.Shutdown()
		<-idpDone
	}()
	base, tenant, oid := idp.BaseURL(), idp.Tenants()[0], devidp.NewGUID()

	// Tokens travel as passwords, so the demo uses TLS as production
	// would, with a self-signed certificate.
	certFile, keyFile, err := writeSelfSignedCert(dir)
	if err != nil {
		return &exitError{1, err}
	}
	ini := fmt.Sprintf(`[databases]
demo = host=127.0.0.1 port=%d dbname=demo

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
admin_users = demo
client_tls_sslmode = require
client_tls_cert_file = %s
client_tls_key_file = %s

; Microsoft Entra ID sign-in against the demo's development identity
; provider. auth_mode both: a password or a token.
[entra]
authority = %s
graph_endpoint = %s
tenants = %s
auth_mode = both

[entra_principals]
demo = oid=%s type=user
`, cluster.Port, port, dir, filepath.Join(dir, "userlist.txt"), certFile, keyFile, base, base, tenant, oid)
	iniPath := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(iniPath, []byte(ini), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(`"demo" "`+password+`"`+"\n"), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(iniPath)
	if err != nil {
		return &exitError{1, err}
	}
	srv, err := pooler.New(cfg, pooler.Options{Logger: log})
	if err != nil {
		return &exitError{1, err}
	}
	if err := srv.Listen(); err != nil {
		return &exitError{1, err}
	}
	token, err := idp.Mint(devidp.TokenSpec{OID: oid, UPN: "demo@devidp.example"})
	if err != nil {
		srv.Shutdown(pooler.ShutdownImmediate)
		return &exitError{1, err}
	}
	conn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=demo user=demo sslmode=require", port)
	console := fmt.Sprintf("host=127.0.0.1 port=%d dbname=pgbouncer user=demo password=%s sslmode=require", port, password)
	fmt.Fprintf(stdout, `
pgwarden is listening on 127.0.0.1:%[1]d in front of PostgreSQL on port %[2]d
(transaction pooling, TLS with a self-signed certificate). In another terminal,
sign in with the password:

  psql "host=127.0.0.1 port=%[1]d dbname=demo user=demo password=%[4]s sslmode=require"

or with a Microsoft Entra ID access token for role demo, valid for an hour,
minted by the demo's development identity provider for the object ID that
[entra_principals] maps to demo (%[5]s):

  PGPASSWORD='%[6]s' psql "%[3]s"

A fresh token for the same role:

  PGPASSWORD=$(%[7]s dev-token -idp %[8]s -oid %[5]s) psql "%[3]s"

Admin console:  psql "%[11]s" -c "SHOW POOLS"
Dev IdP:        %[8]s (tenant %[9]s); a development tool that signs any token
Config in use:  %[10]s
Every sign-in attempt writes one JSON audit line to standard error.
Press Ctrl-C to stop.
`, port, cluster.Port, conn, password, oid, token, selfCommand(), base, tenant, iniPath, console)
	if err := interrupted(); err != nil {
		srv.Shutdown(pooler.ShutdownImmediate)
		return err
	}
	go func() {
		<-sigs
		srv.Shutdown(pooler.ShutdownImmediate)
	}()
	err = srv.Serve(ctx)
	stopCluster()
	fmt.Fprintln(stdout, "\nStopped; the throwaway PostgreSQL on port "+strconv.Itoa(cluster.Port)+" is removed.")
	return err
}

// selfCommand returns how to run this binary from the current directory, as
// a shell word: "pgwarden" if that is what PATH finds, else a relative path
// such as bin/pgwarden, else the absolute path.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "pgwarden"
	}
	exe, _ = filepath.EvalSymlinks(exe)
	if p, err := exec.LookPath("pgwarden"); err == nil {
		if p, _ = filepath.EvalSymlinks(p); p == exe {
			return "pgwarden"
		}
	}
	cmd := exe
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, exe); err == nil && !strings.HasPrefix(rel, "..") {
			cmd = rel
			if !strings.Contains(rel, "/") {
				cmd = "./" + rel
			}
		}
	}
	return shellQuote(cmd)
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+:@,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
