package deploy_test

import (
	"os/exec"
	"testing"
)

// TestPrometheusRules checks the alert rules with promtool and runs their
// unit tests (prometheus/pgwarden-alerts.test.yaml).
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install prometheus); the alert rules are not checked")
	}
	for _, args := range [][]string{
		{"check", "rules", "pgwarden-alerts.yaml"},
		{"test", "rules", "pgwarden-alerts.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		} else {
			t.Logf("promtool %v:\n%s", args, out)
		}
	}
}
