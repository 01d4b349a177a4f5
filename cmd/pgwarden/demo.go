package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/pgwarden/pgwarden/internal/pgcluster"
	"github.com/pgwarden/pgwarden/pooler"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// runDemo starts a throwaway PostgreSQL from the installed server binaries,
// puts pgwarden in front of it in transaction mode with SCRAM sign-in, and
// prints a psql line that works. Ctrl-C stops both and removes the files.
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
`, cluster.Port, port, dir, filepath.Join(dir, "userlist.txt"))
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
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := pooler.New(cfg, pooler.Options{Logger: log})
	if err != nil {
		return &exitError{1, err}
	}
	if err := srv.Listen(); err != nil {
		return &exitError{1, err}
	}
	fmt.Fprintf(stdout, `
pgwarden is listening on 127.0.0.1:%[1]d in front of PostgreSQL on port %[2]d (transaction pooling).
In another terminal:

  psql "host=127.0.0.1 port=%[1]d dbname=demo user=demo password=%[3]s"

Admin console:  psql "host=127.0.0.1 port=%[1]d dbname=pgbouncer user=demo password=%[3]s" -c "SHOW POOLS"
Config in use:  %[4]s
Press Ctrl-C to stop.
`, port, cluster.Port, password, iniPath)
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
