package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket is a stand-in for systemd's notification socket.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// next returns the next message, failing the test after timeout.
func (n *notifySocket) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	_ = n.conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	k, err := n.conn.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify message within %v: %v", timeout, err)
	}
	return string(buf[:k])
}

// activated starts pgwarden as systemd would with socket activation: the
// listening sockets as file descriptors 3, 4, … and LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID (set by a shell that then execs pgwarden,
// so that the pid is pgwarden's), plus NOTIFY_SOCKET.
func activated(t *testing.T, dir, config, notify string, files []*os.File, names string) *proc {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, pgwardenBin, config)
	cmd.Dir = dir
	cmd.Env = append(binEnv(), "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+names, "NOTIFY_SOCKET="+notify)
	cmd.ExtraFiles = files
	return startProc(t, "pgwarden (socket-activated)", cmd)
}

// TestSocketActivation: pgwarden adopts the sockets it is given instead of
// binding listen_addr and unix_socket_dir, tells the notification socket
// READY=1, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 on
// SIGTERM; and a client that connects while no pgwarden runs waits in the
// socket's queue and is served by the next process, as with a systemd
// .socket unit across a restart.
func TestSocketActivation(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist)
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	sockDir := t.TempDir()
	unixPath := filepath.Join(sockDir, ".s.PGSQL.6432")
	unixLn, err := net.Listen("unix", unixPath)
	if err != nil {
		t.Fatal(err)
	}
	unixLn.(*net.UnixListener).SetUnlinkOnClose(false)
	defer unixLn.Close()
	tcpFile, err := tcpLn.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer tcpFile.Close()
	unixFile, err := unixLn.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer unixFile.Close()
	port := tcpLn.Addr().(*net.TCPAddr).Port

	// The configured address must not be used.
	unused := freePort(t)
	config := filepath.Join(dir, "pgbouncer.ini")
	writeFile(t, config, fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir = %s
auth_type = scram-sha-256
auth_file = userlist.txt
pool_mode = transaction
server_tls_sslmode = disable
`, pg.Port, unused, dir))

	notify := newNotifySocket(t)
	files := []*os.File{tcpFile, unixFile}
	p := activated(t, dir, config, notify.path, files, "pgwarden-tcp:pgwarden-unix")
	if msg := notify.next(t, 30*time.Second); !strings.HasPrefix(msg, "READY=1\n") || !strings.Contains(msg, "MAINPID=") {
		t.Fatalf("first sd_notify message %q, want READY=1 with MAINPID", msg)
	}
	if out, err := psql(t, dsn(port, appUser, alicePassword, "app"), "SELECT 1"); err != nil || out != "1" {
		t.Fatalf("query over the inherited TCP socket: %v %s", err, out)
	}
	unixDSN := fmt.Sprintf("host=%s port=6432 user=%s password=%s dbname=app", sockDir, appUser, alicePassword)
	if out, err := psql(t, unixDSN, "SELECT 2"); err != nil || out != "2" {
		t.Fatalf("query over the inherited Unix socket: %v %s", err, out)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(unused)), time.Second); err == nil {
		c.Close()
		t.Error("pgwarden also bound listen_port although it was given sockets")
	}
	if _, err := os.Stat(filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(unused))); err == nil {
		t.Error("pgwarden also made a socket in unix_socket_dir although it was given sockets")
	}
	if !strings.Contains(p.output(), "sockets passed by the service manager") {
		t.Error("no log line about the inherited sockets")
	}

	p.signal(syscall.SIGHUP)
	if msg := notify.next(t, 10*time.Second); !strings.HasPrefix(msg, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("sd_notify on SIGHUP %q, want RELOADING=1 with MONOTONIC_USEC", msg)
	}
	if msg := notify.next(t, 10*time.Second); msg != "READY=1" {
		t.Errorf("sd_notify after the reload %q, want READY=1", msg)
	}

	p.signal(syscall.SIGTERM)
	if msg := notify.next(t, 10*time.Second); !strings.HasPrefix(msg, "STOPPING=1") {
		t.Errorf("sd_notify on SIGTERM %q, want STOPPING=1", msg)
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if _, err := os.Stat(unixPath); err != nil {
		t.Errorf("pgwarden removed the service manager's socket file: %v", err)
	}

	// No pgwarden runs now: a client's connection waits in the queue of
	// the socket (still held here, as systemd holds it) …
	type result struct {
		out string
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		conn, err := connect(ctx, dsn(port, appUser, alicePassword, "app"))
		if err != nil {
			res <- result{err: err}
			return
		}
		defer conn.Close(context.Background())
		var v int
		err = conn.QueryRow(ctx, "SELECT 3").Scan(&v)
		res <- result{out: strconv.Itoa(v), err: err}
	}()
	select {
	case r := <-res:
		t.Fatalf("the client finished while no pgwarden was running: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	// … and the next process serves it.
	p2 := activated(t, dir, config, notify.path, files, "pgwarden-tcp:pgwarden-unix")
	if msg := notify.next(t, 30*time.Second); !strings.HasPrefix(msg, "READY=1") {
		t.Errorf("second process: sd_notify %q", msg)
	}
	if r := <-res; r.err != nil || r.out != "3" {
		t.Errorf("the client queued across the restart got %q, %v", r.out, r.err)
	}
	p2.signal(syscall.SIGTERM)
	if code := p2.wait(15 * time.Second); code != 0 {
		t.Errorf("second process: exit code %d", code)
	}
}

// TestSocketActivationOtherPID: LISTEN_FDS meant for another process (a
// LISTEN_PID that is not ours) is ignored and the configured address used.
func TestSocketActivationOtherPID(t *testing.T) {
	p := startPoolerEnv(t, "LISTEN_PID=1", "LISTEN_FDS=1")
	if out, err := psql(t, p.tcpDSN(), "SELECT 1"); err != nil || out != "1" {
		t.Fatalf("query: %v %s", err, out)
	}
	if strings.Contains(p.output(), "sockets passed by the service manager") {
		t.Error("pgwarden took sockets meant for another process")
	}
}

// startPoolerEnv is startPooler (ini) with extra environment variables.
func startPoolerEnv(t *testing.T, env ...string) *pgw {
	t.Helper()
	dir := t.TempDir()
	p := &pgw{format: "ini", dir: dir, path: filepath.Join(dir, "pgbouncer.ini"), port: freePort(t), poolSize: 20}
	writeFile(t, filepath.Join(dir, "userlist.txt"), userlist)
	p.writeConfig(t)
	cmd := exec.Command(pgwardenBin, p.path)
	cmd.Dir = dir
	cmd.Env = append(binEnv(), env...)
	p.proc = startProc(t, "pgwarden", cmd)
	waitReady(t, p.proc, p.port)
	return p
}
