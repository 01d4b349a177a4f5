package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnits checks deploy/systemd with systemd-analyze: verify
// (unknown keys and bad values print warnings, which fail the test) and the
// offline security score of the hardening. The units' pgwarden path is
// pointed at an existing executable, as verify checks that it exists.
func TestSystemdUnits(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: apt-get install systemd); the unit files are not checked")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	units := map[string]string{}
	for _, name := range []string{"pgwarden.service", "pgwarden.socket"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		units[name] = string(b)
		text := strings.ReplaceAll(string(b), "/usr/local/bin/pgwarden", self)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// What the README and the pooler rely on.
	for _, want := range []string{"\nType=notify\n", "\nExecReload=/bin/kill -HUP $MAINPID\n", "\nNoNewPrivileges=yes\n",
		"\nProtectSystem=strict\n", "\nCapabilityBoundingSet=\n", "\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n", "\nLimitNOFILE="} {
		if !strings.Contains(units["pgwarden.service"], want) {
			t.Errorf("pgwarden.service has no %q", strings.TrimSpace(want))
		}
	}
	for _, want := range []string{"\nListenStream=6432\n", "\nListenStream=/run/pgwarden/.s.PGSQL.6432\n", "\nService=pgwarden.service\n"} {
		if !strings.Contains(units["pgwarden.socket"], want) {
			t.Errorf("pgwarden.socket has no %q", strings.TrimSpace(want))
		}
	}

	verify := exec.Command(sa, "verify", "./pgwarden.socket", "./pgwarden.service")
	verify.Dir = dir
	out, err := verify.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Exposure 0 (locked down) … 10 (unsafe); the unit scores about 1.5.
	sec := exec.Command(sa, "security", "--offline=true", "--threshold=20", "--no-pager", "./pgwarden.service")
	sec.Dir = dir
	out, err = sec.CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0 (or an error): %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "Overall exposure level") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
