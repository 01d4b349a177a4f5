package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

const (
	benchUser     = "bench"
	benchPassword = "bench-password-7e1d"
	benchDB       = "bench"
	poolSize      = 20
	scale         = 10
)

// workspace is the harness's temporary directory and the account the
// servers run as.
type workspace struct {
	dir  string
	cred *syscall.Credential // nil: run everything as ourselves
	uid  int
	gid  int
}

// newWorkspace makes the temporary directory. As root, PostgreSQL and
// PgBouncer refuse to run, so they (and pgwarden, for equal treatment) run
// as the user pgtest uses: $PGTEST_USER, else postgres, else nobody.
func newWorkspace() (*workspace, error) {
	ws := &workspace{uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		var u *user.User
		var err error
		names := []string{"postgres", "nobody"}
		if n := os.Getenv("PGTEST_USER"); n != "" {
			names = []string{n}
		}
		for _, n := range names {
			if u, err = user.Lookup(n); err == nil {
				break
			}
		}
		if u == nil {
			return nil, fmt.Errorf("running as root, and none of %v exists to run the servers as", names)
		}
		ws.uid, _ = strconv.Atoi(u.Uid)
		ws.gid, _ = strconv.Atoi(u.Gid)
		ws.cred = &syscall.Credential{Uid: uint32(ws.uid), Gid: uint32(ws.gid), Groups: []uint32{}}
	}
	var lastErr error
	for _, parent := range []string{os.TempDir(), "/tmp"} {
		dir, err := os.MkdirTemp(parent, "pgwarden-bench-")
		if err != nil {
			lastErr = err
			continue
		}
		ws.dir = dir
		if err := ws.mkdirOwned(dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if ws.cred == nil || ws.canTraverse(dir) {
			return ws, nil
		}
		os.RemoveAll(dir)
		lastErr = fmt.Errorf("%s is not reachable by uid %d", parent, ws.uid)
	}
	return nil, fmt.Errorf("no usable temporary directory: %w", lastErr)
}

// canTraverse checks, by the mode bits, that the server user can reach dir.
func (ws *workspace) canTraverse(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		var st syscall.Stat_t
		if syscall.Stat(d, &st) != nil {
			return false
		}
		bit := uint32(0o001)
		switch {
		case int(st.Uid) == ws.uid:
			bit = 0o100
		case int(st.Gid) == ws.gid:
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func (ws *workspace) remove() { os.RemoveAll(ws.dir) }

// mkdirOwned makes dir (if needed), mode 0755, owned by the server user.
func (ws *workspace) mkdirOwned(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return ws.chown(dir)
}

func (ws *workspace) chown(path string) error {
	if ws.uid < 0 {
		return nil
	}
	return os.Chown(path, ws.uid, ws.gid)
}

// writeOwned writes a file owned by the server user.
func (ws *workspace) writeOwned(path, content string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		return err
	}
	if err := os.Chmod(path, mode); err != nil {
		return err
	}
	return ws.chown(path)
}

// serverCmd makes a command that runs as the server user.
func (ws *workspace) serverCmd(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	if ws.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: ws.cred}
	}
	return cmd
}

// cleanEnv is the environment without PG* variables (a PGHOST or PGSSLMODE
// of the caller's must not leak into the measurements), plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "GODEBUG=") || strings.HasPrefix(kv, "GOMAXPROCS=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// tlsFiles is the self-signed certificate every server uses for client TLS.
type tlsFiles struct {
	cert, key string
}

// makeCert writes a self-signed RSA-2048 certificate for 127.0.0.1 and
// localhost, readable by the server user (key mode 0600, as PostgreSQL
// requires).
func (ws *workspace) makeCert() (tlsFiles, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tlsFiles{}, err
	}
	return ws.selfSigned("tls", key, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment|x509.KeyUsageCertSign)
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and localhost
// with key into the workspace's directory dirName (server.crt, and
// server.key with mode 0600).
func (ws *workspace) selfSigned(dirName string, key crypto.Signer, usage x509.KeyUsage) (tlsFiles, error) {
	dir := filepath.Join(ws.dir, dirName)
	if err := ws.mkdirOwned(dir); err != nil {
		return tlsFiles{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tlsFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tlsFiles{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tlsFiles{}, err
	}
	f := tlsFiles{cert: filepath.Join(dir, "server.crt"), key: filepath.Join(dir, "server.key")}
	if err := ws.writeOwned(f.cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644); err != nil {
		return tlsFiles{}, err
	}
	if err := ws.writeOwned(f.key, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), 0o600); err != nil {
		return tlsFiles{}, err
	}
	return f, nil
}

// pgSettings are the postgresql.conf settings the harness adds to pgtest's
// (fsync, synchronous_commit and full_page_writes off, logging to a file).
func pgSettings(maxConn int, tls tlsFiles) map[string]string {
	return map[string]string{
		"max_connections": strconv.Itoa(maxConn),
		// Scale 10 is about 160 MB; keep it all in shared buffers.
		"shared_buffers": "256MB",
		"ssl":            "on",
		"ssl_cert_file":  tls.cert,
		"ssl_key_file":   tls.key,
	}
}

// startPostgres starts the throwaway cluster, creates the bench role and
// database, and fills it with pgbench -i -s 10.
func startPostgres(ctx context.Context, maxConn int, tls tlsFiles, pgbench string, logf func(string, ...any)) (*pgtest.Cluster, error) {
	c, err := pgtest.Start(pgtest.Options{MaxConnections: maxConn, ExtraConf: pgSettings(maxConn, tls)})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*pgtest.Cluster, error) {
		_ = c.Stop()
		return nil, err
	}
	if err := c.CreateRole(ctx, benchUser, benchPassword, "scram-sha-256"); err != nil {
		return fail(err)
	}
	if err := c.Exec(ctx, "CREATE DATABASE "+benchDB+" OWNER "+benchUser); err != nil {
		return fail(err)
	}
	logf("pgbench -i -s %d (PostgreSQL on port %d)", scale, c.Port)
	cmd := exec.CommandContext(ctx, pgbench, "-i", "-s", strconv.Itoa(scale), "-q",
		"-h", c.Host, "-p", strconv.Itoa(c.Port), "-U", benchUser, benchDB)
	cmd.Env = cleanEnv("PGPASSWORD="+benchPassword, "PGSSLMODE=disable")
	setProcessGroup(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pgbench -i: %w\n%s", err, out))
	}
	return c, nil
}

// moduleRoot finds the directory of pgwarden's go.mod, from the working
// directory upwards.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/pgwarden/pgwarden")) {
			return dir, nil
		}
		if parent := filepath.Dir(dir); parent != dir {
			dir = parent
			continue
		}
		return "", errors.New("run the harness inside the pgwarden module (go run ./bench from the repository root)")
	}
}

// buildPgwarden builds cmd/pgwarden (no -race) into dir.
func buildPgwarden(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "pgwarden")
	// -trimpath: the profiles saved beside the results name source files
	// by module path, not by where this checkout happens to be.
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-o", out, "./cmd/pgwarden")
	cmd.Dir = root
	cmd.Env = cleanEnv("CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pgwarden: %w\n%s", err, b)
	}
	return out, nil
}

// goTool is the go command: the one on PATH, else the usual install place.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if p := "/usr/local/go/bin/go"; isExecutable(p) {
		return p
	}
	return "go"
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// copyExecutable copies a binary into the workspace, where the server user
// can run it.
func (ws *workspace) copyExecutable(src, name string) (string, error) {
	dst := filepath.Join(ws.dir, "bin", name)
	if err := ws.mkdirOwned(filepath.Dir(dst)); err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}

// findPgbouncer returns the Debian package's pgbouncer, installing the
// package with apt-get when it is missing and we are root.
func findPgbouncer(ctx context.Context, logf func(string, ...any)) (string, error) {
	look := func() string {
		if isExecutable("/usr/sbin/pgbouncer") {
			return "/usr/sbin/pgbouncer"
		}
		if p, err := exec.LookPath("pgbouncer"); err == nil {
			return p
		}
		return ""
	}
	if p := look(); p != "" {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", errors.New("pgbouncer is not installed and we are not root (Debian: apt-get install pgbouncer), or pass -pgbouncer PATH")
	}
	logf("pgbouncer is missing: apt-get install pgbouncer")
	env := append(cleanEnv(), "DEBIAN_FRONTEND=noninteractive")
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "pgbouncer")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install pgbouncer: %w\n%s", err, out)
		}
		return nil
	}
	if err := install(); err != nil {
		upd := exec.CommandContext(ctx, "apt-get", "update", "-q")
		upd.Env = env
		if out, uerr := upd.CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("apt-get update: %w\n%s", uerr, out)
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	// The package starts its own service on port 6432; the harness does
	// not use that one.
	if p := look(); p != "" {
		return p, nil
	}
	return "", errors.New("pgbouncer still not found after apt-get install")
}

// binaryVersion runs "bin --version" and returns its first line.
func binaryVersion(bin string) string {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

var releaseTag = regexp.MustCompile(`^pgbouncer_(\d+)_(\d+)_(\d+)$`)

// buildUpstreamPgbouncer builds the newest PgBouncer release tag (or $tag)
// of a git directory of github.com/pgbouncer/pgbouncer, and caches the
// binary under the user cache directory. Nothing of PgBouncer's source is
// kept in the repository: it is exported into a temporary directory, built
// there and removed.
func buildUpstreamPgbouncer(ctx context.Context, gitDir, tag string, logf func(string, ...any)) (string, error) {
	git := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"--git-dir=" + gitDir}, args...)...).Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if st, err := os.Stat(filepath.Join(gitDir, ".git")); err == nil && st.IsDir() {
		gitDir = filepath.Join(gitDir, ".git")
	}
	if tag == "" {
		tags, err := git("tag", "--list", "pgbouncer_*")
		if err != nil {
			return "", err
		}
		type ver struct {
			tag string
			n   [3]int
		}
		var vs []ver
		for _, t := range strings.Fields(tags) {
			m := releaseTag.FindStringSubmatch(t)
			if m == nil {
				continue
			}
			var v ver
			v.tag = t
			for i := range 3 {
				v.n[i], _ = strconv.Atoi(m[i+1])
			}
			vs = append(vs, v)
		}
		if len(vs) == 0 {
			return "", fmt.Errorf("no pgbouncer_X_Y_Z tag in %s", gitDir)
		}
		sort.Slice(vs, func(i, j int) bool {
			a, b := vs[i].n, vs[j].n
			if a[0] != b[0] {
				return a[0] < b[0]
			}
			if a[1] != b[1] {
				return a[1] < b[1]
			}
			return a[2] < b[2]
		})
		tag = vs[len(vs)-1].tag
	}
	commit, err := git("rev-parse", tag+"^{commit}")
	if err != nil {
		return "", err
	}
	cacheRoot, err := os.UserCacheDir()
	if err != nil {
		cacheRoot = os.TempDir()
	}
	cache := filepath.Join(cacheRoot, "pgwarden-bench", tag+"-"+commit[:12])
	bin := filepath.Join(cache, "pgbouncer")
	if isExecutable(bin) {
		return bin, nil
	}
	if lsTree, err := git("ls-tree", commit, "lib"); err == nil && strings.Contains(lsTree, " commit ") {
		return "", fmt.Errorf("%s records lib/ as a submodule; build it by hand and pass PGWARDEN_BENCH_PGBOUNCER_BIN", tag)
	}
	if err := installBuildDeps(ctx, logf); err != nil {
		return "", err
	}
	logf("building PgBouncer %s (%s) from %s; this takes a few minutes", tag, commit[:12], gitDir)
	src, err := os.MkdirTemp("", "pgbouncer-src-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	archive := exec.CommandContext(ctx, "git", "--git-dir="+gitDir, "archive", "--format=tar", commit)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", err
	}
	untar.Stdin = pipe
	if err := archive.Start(); err != nil {
		return "", err
	}
	if out, err := untar.CombinedOutput(); err != nil {
		_ = archive.Wait()
		return "", fmt.Errorf("tar -x: %w\n%s", err, out)
	}
	if err := archive.Wait(); err != nil {
		return "", fmt.Errorf("git archive: %w", err)
	}
	logPath := filepath.Join(src, "build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close()
	steps := [][]string{
		{"./autogen.sh"},
		{"./configure", "--prefix=/nonexistent", "--with-cares", "--without-systemd", "--without-pam", "--without-ldap"},
		{"make", "-j" + strconv.Itoa(runtime.NumCPU()), "pgbouncer"},
	}
	for _, s := range steps {
		cmd := exec.CommandContext(ctx, s[0], s[1:]...)
		cmd.Dir = src
		cmd.Stdout = logFile
		cmd.Stderr = logFile
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%s: %w\n%s", strings.Join(s, " "), err, fileTail(logPath, 30))
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	in, err := os.ReadFile(filepath.Join(src, "pgbouncer"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(bin+".tmp", in, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		return "", err
	}
	return bin, nil
}

// installBuildDeps installs PgBouncer's Debian build dependencies that are
// missing (root only).
func installBuildDeps(ctx context.Context, logf func(string, ...any)) error {
	var missing []string
	for _, p := range []string{"build-essential", "autoconf", "automake", "libtool", "pkg-config", "libevent-dev", "libssl-dev", "libc-ares-dev", "python3"} {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.Contains(string(out), "install ok installed") {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("PgBouncer's build dependencies are missing (%s) and we are not root", strings.Join(missing, " "))
	}
	logf("apt-get install %s", strings.Join(missing, " "))
	env := append(cleanEnv(), "DEBIAN_FRONTEND=noninteractive")
	upd := exec.CommandContext(ctx, "apt-get", "update", "-q")
	upd.Env = env
	if out, err := upd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %w\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-q"}, missing...)...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install: %w\n%s", err, out)
	}
	return nil
}
