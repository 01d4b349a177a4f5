package deploy_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/pooler/pgtest"
)

// imageFiles is everything the image may hold: path → permission bits
// (directories end in "/"). Anything else in the exported file system, a
// shell above all, fails the test.
var imageFiles = map[string]os.FileMode{
	"etc/":                              0o755,
	"etc/passwd":                        0o644,
	"etc/group":                         0o644,
	"etc/pgwarden/":                     0o755,
	"etc/pgwarden/pooler.yaml":          0o644,
	"etc/ssl/":                          0o755,
	"etc/ssl/certs/":                    0o755,
	"etc/ssl/certs/ca-certificates.crt": 0o644,
	"usr/":                              0o755,
	"usr/local/":                        0o755,
	"usr/local/bin/":                    0o755,
	"usr/local/bin/pgwarden":            0o755,
}

// TestContainerImage builds the image with deploy/container/build.sh and
// podman, exports the file system of a container created from it (podman
// run is not needed), checks that it holds only the static binary, the CA
// bundle, passwd/group and the default config, and runs the binary taken
// out of the image against a throwaway PostgreSQL: a pgx and a psql query
// go through it.
func TestContainerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a container image")
	}
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed (Debian: apt-get install podman); the container image is not checked")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH; build.sh needs it to build the image's binary")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	// Build under a tag of our own, removed afterwards.
	suffix := make([]byte, 6)
	rand.Read(suffix)
	image := "localhost/pgwarden-test:" + hex.EncodeToString(suffix)
	build := exec.Command(filepath.Join(root, "deploy/container/build.sh"), "-t", image, "--builder", "podman")
	build.Env = append(os.Environ(), "GO="+goTool)
	var buildLog bytes.Buffer
	build.Stdout, build.Stderr = &buildLog, &buildLog
	if err := build.Run(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, buildLog.String())
	}
	t.Cleanup(func() {
		if out, err := exec.Command(podman, "rmi", "-f", image).CombinedOutput(); err != nil {
			t.Logf("podman rmi %s: %v\n%s", image, err, out)
		}
	})

	// Image config: non-root numeric user, the binary as entrypoint, the
	// config path as its argument.
	out, err := exec.Command(podman, "image", "inspect", "--format", "{{json .Config}}", image).Output()
	if err != nil {
		t.Fatalf("podman image inspect: %v", err)
	}
	var cfg struct {
		User         string
		Entrypoint   []string
		Cmd          []string
		ExposedPorts map[string]struct{}
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("image config %s: %v", out, err)
	}
	if cfg.User != "65532:65532" {
		t.Errorf("image user = %q, want 65532:65532 (numeric, so runAsNonRoot can check it)", cfg.User)
	}
	if strings.Join(cfg.Entrypoint, " ") != "/usr/local/bin/pgwarden" || strings.Join(cfg.Cmd, " ") != "/etc/pgwarden/pooler.yaml" {
		t.Errorf("entrypoint %q cmd %q, want [/usr/local/bin/pgwarden] [/etc/pgwarden/pooler.yaml]", cfg.Entrypoint, cfg.Cmd)
	}
	for _, p := range []string{"6432/tcp", "9127/tcp"} {
		if _, ok := cfg.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed (have %v)", p, cfg.ExposedPorts)
		}
	}

	// Export a created (never started) container's file system.
	out, err = exec.Command(podman, "create", image).Output()
	if err != nil {
		t.Fatalf("podman create: %v", err)
	}
	cid := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(podman, "rm", "-f", cid).Run() })
	export, err := exec.Command(podman, "export", cid).Output()
	if err != nil {
		t.Fatalf("podman export: %v", err)
	}
	files := make(map[string][]byte)
	tr := tar.NewReader(bytes.NewReader(export))
	seen := make(map[string]bool)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the exported tar: %v", err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag == tar.TypeDir && !strings.HasSuffix(name, "/") {
			name += "/"
		}
		if name == "" || name == "/" {
			continue
		}
		seen[name] = true
		want, ok := imageFiles[name]
		switch {
		case !ok:
			t.Errorf("unexpected entry in the image: %s (type %c, mode %v)", name, h.Typeflag, h.FileInfo().Mode())
			continue
		case h.Typeflag != tar.TypeDir && h.Typeflag != tar.TypeReg:
			t.Errorf("%s: type %c, want a regular file or directory", name, h.Typeflag)
		case h.FileInfo().Mode().Perm() != want:
			t.Errorf("%s: mode %v, want %v", name, h.FileInfo().Mode().Perm(), want)
		case h.Uid != 0 || h.Gid != 0:
			t.Errorf("%s: owned by %d:%d, want root (the nonroot user must not be able to change it)", name, h.Uid, h.Gid)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[name] = b
		}
	}
	for name := range imageFiles {
		if !seen[name] {
			t.Errorf("missing from the image: %s", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	if !strings.Contains(string(files["etc/passwd"]), "nonroot:x:65532:65532:") {
		t.Errorf("etc/passwd has no nonroot 65532 entry:\n%s", files["etc/passwd"])
	}
	if n := bytes.Count(files["etc/ssl/certs/ca-certificates.crt"], []byte("-----BEGIN CERTIFICATE-----")); n < 10 {
		t.Errorf("CA bundle holds %d certificates, want a system bundle", n)
	}

	// The binary is static: no program interpreter, no shared libraries.
	dir := t.TempDir()
	bin := filepath.Join(dir, "pgwarden")
	if err := os.WriteFile(bin, files["usr/local/bin/pgwarden"], 0o755); err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("the image's pgwarden is not an ELF binary: %v", err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the image's pgwarden has a program interpreter: it is dynamically linked (build with CGO_ENABLED=0)")
		}
	}
	if libs, _ := ef.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the image's pgwarden needs shared libraries %v", libs)
	}
	ef.Close()

	// The image's default config is valid as shipped.
	defaultCfg := filepath.Join(dir, "default-pooler.yaml")
	if err := os.WriteFile(defaultCfg, files["etc/pgwarden/pooler.yaml"], 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check-config", defaultCfg).CombinedOutput(); err != nil {
		t.Errorf("check-config of the image's default pooler.yaml: %v\n%s", err, out)
	}

	// Run the extracted binary in front of a throwaway PostgreSQL.
	runImageBinary(t, bin, dir)
}

// runImageBinary starts bin with a pooler.yaml for a fresh PostgreSQL and
// checks that pgx and psql queries go through it, that /healthz and /readyz
// answer, and that SIGTERM stops it cleanly.
func runImageBinary(t *testing.T, bin, dir string) {
	pg := pgtest.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const user, password = "imageuser", "image-test-secret"
	if err := pg.CreateRole(ctx, user, password, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	port, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	mport, err := pgtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	userlist := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(userlist, []byte(fmt.Sprintf("%q %q\n", user, password)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "pooler.yaml")
	cfg := fmt.Sprintf(`listen:
  addresses: ["127.0.0.1"]
  port: %d
  unix_socket_dir: ""
auth:
  type: scram-sha-256
  file: %s
pool:
  mode: transaction
tls:
  server:
    sslmode: disable
metrics:
  listen: 127.0.0.1:%d
databases:
  app:
    host: %s
    port: %d
    dbname: postgres
`, port, userlist, mport, pg.Host, pg.Port)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var logBuf syncBuffer
	cmd := exec.Command(bin, cfgPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the process has ended; waitErr is then set.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	// Ready when /readyz says so (polled, with the process watched).
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("pgwarden from the image exited before it was ready: %v\n%s", waitErr, logBuf.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgwarden from the image not ready after 30s\n%s", logBuf.String())
		}
	}
	if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=app sslmode=disable", port, user, password)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgx through the image's pgwarden: %v\n%s", err, logBuf.String())
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT current_user || '@' || current_database()").Scan(&got); err != nil {
		t.Fatalf("query through the image's pgwarden: %v", err)
	}
	conn.Close(ctx)
	if want := user + "@postgres"; got != want {
		t.Errorf("pgx query answered %q, want %q", got, want)
	}

	psql := exec.CommandContext(ctx, pgtest.PsqlPath(), "-X", "-A", "-t", "-c", "SELECT 40 + 2", dsn)
	psql.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	out, err := psql.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Errorf("psql through the image's pgwarden: %v: %q", err, out)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("pgwarden from the image after SIGTERM: %v\n%s", waitErr, logBuf.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("pgwarden from the image still running 30s after SIGTERM\n%s", logBuf.String())
	}
}
