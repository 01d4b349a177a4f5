package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// TestPgBouncerCompat runs pgbench -S against real PgBouncer and then against
// pgwarden started with the very same pgbouncer.ini and userlist.txt,
// unchanged. Both must complete with no failed transaction.
func TestPgBouncerCompat(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the pgbench comparison")
	}
	bouncer := "/usr/sbin/pgbouncer"
	if _, err := os.Stat(bouncer); err != nil {
		p, err := exec.LookPath("pgbouncer")
		if err != nil {
			t.Skip("pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run installs it)")
		}
		bouncer = p
	}
	pgbench := pgtest.PgbenchPath()
	if pgbench == "" {
		t.Fatal("pgbench not found (install postgresql-contrib or postgresql-client)")
	}

	// PgBouncer refuses to run as root: then it runs as "postgres", and
	// the directory and files must be that user's.
	var cred *syscall.Credential
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root and there is no postgres user to run pgbouncer as")
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	dir, err := os.MkdirTemp("", "pgwarden-compat-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	own := func(path string) {
		t.Helper()
		if uid >= 0 {
			if err := os.Chown(path, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	own(dir)

	port := freePort(t)
	iniPath := filepath.Join(dir, "pgbouncer.ini")
	userlistPath := filepath.Join(dir, "userlist.txt")
	ini := fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = scram-sha-256
auth_file = %s
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
admin_users = %s
logfile = %s
pidfile = %s
`, pg.Port, port, dir, userlistPath, adminUser, filepath.Join(dir, "pooler.log"), filepath.Join(dir, "pooler.pid"))
	writeFile(t, iniPath, ini)
	own(iniPath)
	writeFile(t, userlistPath, userlist)
	own(userlistPath)
	sum := func() string {
		a, _ := os.ReadFile(iniPath)
		b, _ := os.ReadFile(userlistPath)
		return string(a) + "\x00" + string(b)
	}
	before := sum()

	// pgbench's tables, made directly on PostgreSQL by the database owner.
	initCmd := exec.Command(pgbench, "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.Port), "-U", appUser, "app")
	initCmd.Env = cleanEnv("PGPASSWORD=" + alicePassword)
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}

	bench := func(t *testing.T, who, mode string) float64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, pgbench, "-S", "-c", "50", "-j", "2", "-T", "5", "-M", mode,
			"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", appUser, "app")
		cmd.Env = cleanEnv("PGPASSWORD=" + alicePassword)
		out, err := cmd.CombinedOutput()
		text := string(out)
		if err != nil {
			t.Errorf("%s, -M %s: pgbench: %v\n%s", who, mode, err, text)
			return 0
		}
		m := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(text)
		if m == nil {
			t.Errorf("%s, -M %s: no failed-transactions line in pgbench's output:\n%s", who, mode, text)
		} else if m[1] != "0" {
			t.Errorf("%s, -M %s: %s failed transactions:\n%s", who, mode, m[1], text)
		}
		if m := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(text); m == nil || m[1] == "0" {
			t.Errorf("%s, -M %s: no transactions processed:\n%s", who, mode, text)
		}
		tm := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`).FindStringSubmatch(text)
		if tm == nil {
			t.Errorf("%s, -M %s: no tps line:\n%s", who, mode, text)
			return 0
		}
		tps, _ := strconv.ParseFloat(tm[1], 64)
		return tps
	}
	tps := map[string]float64{}

	// Real PgBouncer.
	cmd := exec.Command(bouncer, iniPath)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	pb := startProc(t, "pgbouncer", cmd)
	waitReady(t, pb, port)
	for _, mode := range []string{"simple", "extended"} {
		tps["pgbouncer "+mode] = bench(t, "pgbouncer", mode)
	}
	pb.signal(syscall.SIGINT)
	if code := pb.wait(30 * time.Second); code != 0 {
		t.Errorf("pgbouncer exit code %d after SIGINT", code)
	}

	// pgwarden with the same files.
	if sum() != before {
		t.Fatal("pgbouncer changed its config files")
	}
	pw := startPgwarden(t, dir, iniPath)
	waitReady(t, pw, port)
	for _, mode := range []string{"simple", "extended"} {
		tps["pgwarden "+mode] = bench(t, "pgwarden", mode)
	}
	pw.signal(syscall.SIGTERM)
	if code := pw.wait(30 * time.Second); code != 0 {
		t.Errorf("pgwarden exit code %d after SIGTERM", code)
	}
	if sum() != before {
		t.Error("pgwarden changed the config files")
	}
	for _, mode := range []string{"simple", "extended"} {
		t.Logf("pgbench -S -c 50 -j 2 -T 5 -M %-8s  PgBouncer %8.0f tps   pgwarden %8.0f tps (race detector: %v)",
			mode, tps["pgbouncer "+mode], tps["pgwarden "+mode], raceEnabled)
	}
}
