package pgtest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// cluster is shared by the tests of this package (started by pgtest.Main).
var cluster *pgtest.Cluster

// orphanEnv makes the test binary act as a helper that starts a cluster,
// prints where it is and dies without stopping it (see TestWatchdogCleansUp).
const orphanEnv = "PGTEST_ORPHAN_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(orphanEnv) == "1" {
		orphanHelper()
		return
	}
	pgtest.Main(m, pgtest.Options{
		HBA: []string{"host all md5user 127.0.0.1/32 md5"},
	}, func(c *pgtest.Cluster) int {
		cluster = c
		return m.Run()
	})
}

func orphanHelper() {
	c, err := pgtest.Start(pgtest.Options{MaxConnections: 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Printf("%s %d\n", c.DataDir, c.Port)
	// Die as a killed test binary would: no Stop, no deferred calls.
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Kill()
	select {}
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, c *pgtest.Cluster, user, password string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), c.ConnString(user, password, "postgres"))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func show(t *testing.T, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(ctx(t), "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatalf("current_setting(%s): %v", name, err)
	}
	return v
}

func TestSuperuserSCRAM(t *testing.T) {
	c := cluster
	if c.Host != "127.0.0.1" || c.Port == 0 || c.SuperUser == "" || c.SuperPassword == "" {
		t.Fatalf("incomplete cluster: %+v", c)
	}
	conn := connect(t, c, c.SuperUser, c.SuperPassword)
	var super bool
	if err := conn.QueryRow(ctx(t), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil || !super {
		t.Fatalf("superuser: %v %v", super, err)
	}
	for name, want := range map[string]string{
		"password_encryption":     "scram-sha-256",
		"max_connections":         "200",
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": c.SocketDir,
		"port":                    strconv.Itoa(c.Port),
		"fsync":                   "off",
		"synchronous_commit":      "off",
		"full_page_writes":        "off",
		"log_min_messages":        "warning",
		"data_directory":          c.DataDir,
	} {
		if got := show(t, conn, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	secret, err := c.RoleSecret(ctx(t), c.SuperUser)
	if err != nil || !strings.HasPrefix(secret, "SCRAM-SHA-256$") {
		t.Errorf("superuser secret %q, %v", secret, err)
	}
	var rules []string
	rows, err := conn.Query(ctx(t), "SELECT type, auth_method FROM pg_hba_file_rules ORDER BY line_number")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ, method string
		if err := rows.Scan(&typ, &method); err != nil {
			t.Fatal(err)
		}
		rules = append(rules, typ+" "+method)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rules) < 3 || rules[0] != "host md5" || rules[1] != "local scram-sha-256" || rules[2] != "host scram-sha-256" {
		t.Errorf("pg_hba rules: %v", rules)
	}
}

func TestWrongPasswordRefusedAndLogged(t *testing.T) {
	c := cluster
	_, err := pgx.Connect(ctx(t), c.ConnString(c.SuperUser, "wrong", "postgres"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("connect with a wrong password: %v, want SQLSTATE 28P01", err)
	}
	// FATAL is above log_min_messages=warning, so it is in the log.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(c.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), `password authentication failed for user "`+c.SuperUser+`"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s lacks the failed login:\n%s", c.LogFile(), b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUnixSocket(t *testing.T) {
	c := cluster
	if _, err := os.Stat(filepath.Join(c.SocketDir, fmt.Sprintf(".s.PGSQL.%d", c.Port))); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=postgres", c.SocketDir, c.Port, c.SuperUser, c.SuperPassword)
	conn, err := pgx.Connect(ctx(t), dsn)
	if err != nil {
		t.Fatalf("connect on the unix socket: %v", err)
	}
	defer conn.Close(context.Background())
	var addr *string
	if err := conn.QueryRow(ctx(t), "SELECT inet_client_addr()::text").Scan(&addr); err != nil || addr != nil {
		t.Errorf("inet_client_addr on a unix socket = %v, %v; want NULL", addr, err)
	}
}

func TestRoles(t *testing.T) {
	c := cluster
	ctx := ctx(t)
	if err := c.CreateRole(ctx, "md5user", "md5 pass'word", "md5"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateRole(ctx, "scramuser", `scram\pass word`, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	md5, err := c.RoleSecret(ctx, "md5user")
	if err != nil || !strings.HasPrefix(md5, "md5") || len(md5) != 35 {
		t.Errorf("md5user secret %q, %v", md5, err)
	}
	scram, err := c.RoleSecret(ctx, "scramuser")
	if err != nil || !strings.HasPrefix(scram, "SCRAM-SHA-256$4096:") {
		t.Errorf("scramuser secret %q, %v", scram, err)
	}
	if _, err := c.RoleSecret(ctx, "nosuchrole"); err == nil {
		t.Error("RoleSecret of a missing role: no error")
	}
	if err := c.CreateRole(ctx, "x", "y", "password"); err == nil {
		t.Error("CreateRole with method password: no error")
	}

	for _, u := range []struct{ user, password string }{
		{"md5user", "md5 pass'word"},
		{"scramuser", `scram\pass word`},
	} {
		conn := connect(t, c, u.user, u.password)
		var who string
		if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != u.user {
			t.Errorf("current_user = %q, %v; want %q", who, err, u.user)
		}
		if _, err := pgx.Connect(ctx, c.ConnString(u.user, "wrong", "postgres")); err == nil {
			t.Errorf("%s connected with a wrong password", u.user)
		}
	}

	// An existing role is altered: new password, new method.
	if err := c.CreateRole(ctx, "md5user", "newpass", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.RoleSecret(ctx, "md5user"); err != nil || !strings.HasPrefix(s, "SCRAM-SHA-256$") {
		t.Errorf("md5user secret after ALTER %q, %v", s, err)
	}
	// pg_hba says md5 for md5user; a SCRAM secret is then used with SCRAM.
	connect(t, c, "md5user", "newpass")

	if err := c.Exec(ctx, "DROP DATABASE IF EXISTS pgtest_db", "CREATE DATABASE pgtest_db OWNER scramuser", "CREATE TABLE t (i int); INSERT INTO t VALUES (1); DROP TABLE t"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.ConnString("scramuser", `scram\pass word`, "pgtest_db"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.Exec(ctx, "SELECT * FROM no_such_table"); err == nil {
		t.Error("Exec of a failing statement: no error")
	}
}

func TestPsqlAndPgbench(t *testing.T) {
	c := cluster
	psql := pgtest.PsqlPath()
	if psql == "" {
		t.Fatal("psql not found")
	}
	out, err := exec.Command(psql, "-X", "-At", "-d", c.ConnString(c.SuperUser, c.SuperPassword, "postgres"), "-c", "SELECT 40 + 2").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	pgbench := pgtest.PgbenchPath()
	if pgbench == "" {
		t.Fatal("pgbench not found")
	}
	if out, err := exec.Command(pgbench, "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "pgbench") {
		t.Fatalf("pgbench --version: %v\n%s", err, out)
	}
}

func TestFreePort(t *testing.T) {
	p, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d from FreePort is not free: %v", p, err)
	}
	l.Close()
}

// TestOwnCluster covers StartT with options, Restart and Stop on a second
// cluster, leaving the shared one alone.
func TestOwnCluster(t *testing.T) {
	c := pgtest.StartT(t, pgtest.Options{
		MaxConnections: 37,
		ExtraConf:      map[string]string{"work_mem": "7MB", "application_name": "it's pgtest"},
	})
	if c.Port == cluster.Port || c.DataDir == cluster.DataDir {
		t.Fatalf("second cluster shares port or data dir with the first")
	}
	conn := connect(t, c, c.SuperUser, c.SuperPassword)
	for name, want := range map[string]string{"max_connections": "37", "work_mem": "7MB", "application_name": "it's pgtest"} {
		if got := show(t, conn, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	conn.Close(context.Background())

	for _, mode := range []string{"fast", "immediate"} {
		if err := c.Restart(mode); err != nil {
			t.Fatalf("Restart(%s): %v", mode, err)
		}
		conn := connect(t, c, c.SuperUser, c.SuperPassword)
		if got := show(t, conn, "work_mem"); got != "7MB" {
			t.Errorf("after Restart(%s): work_mem = %q", mode, got)
		}
		conn.Close(context.Background())
	}
	if err := c.Restart("bogus"); err == nil {
		t.Error("Restart(bogus): no error")
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(c.DataDir); !os.IsNotExist(err) {
		t.Errorf("data dir after Stop: %v", err)
	}
	if _, err := pgx.Connect(ctx(t), c.ConnString(c.SuperUser, c.SuperPassword, "postgres")); err == nil {
		t.Error("connected after Stop")
	}
}

// TestWatchdogCleansUp runs this test binary as a helper that starts a
// cluster and kills itself, then checks the server goes away and its
// directory is removed.
func TestWatchdogCleansUp(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanEnv+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	_ = cmd.Wait()
	dataDir, portStr, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		t.Fatalf("helper printed %q", line)
	}
	port, _ := strconv.Atoi(portStr)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, statErr := os.Stat(dataDir)
		conn, dialErr := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if dialErr == nil {
			conn.Close()
		}
		if os.IsNotExist(statErr) && dialErr != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the helper died: data dir %s: %v; port %d dial: %v", dataDir, statErr, port, dialErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
