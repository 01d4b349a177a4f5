package config

import (
	"strings"
	"testing"
)

// TestMetricsSection: [metrics] (metrics: in YAML) with its keys, the same
// in both formats, and bad values refused.
func TestMetricsSection(t *testing.T) {
	dir := t.TempDir()
	ini := writeFile(t, dir, "m.ini", "[pgbouncer]\n[metrics]\nlisten = 127.0.0.1:9127\npprof = 1\nstats_names = totals\nclient_connections = 0\n")
	yml := writeFile(t, dir, "m.yaml", "metrics: {listen: \"127.0.0.1:9127\", pprof: true, stats_names: totals, client_connections: false}\n")
	want := Metrics{Listen: "127.0.0.1:9127", Pprof: true, StatsNames: StatsNamesTotals, NoClientConnections: true}
	for _, p := range []string{ini, yml} {
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if c.Metrics != want {
			t.Errorf("%s: %+v, want %+v", p, c.Metrics, want)
		}
	}
	if c, err := Load(writeFile(t, dir, "d.ini", "[pgbouncer]\n[metrics]\nlisten = 127.0.0.1:9127\n")); err != nil || c.Metrics.StatsNames != "" || c.Metrics.NoClientConnections {
		t.Errorf("defaults: %v %+v", err, c.Metrics)
	}
	for body, msg := range map[string]string{
		"stats_names = new\n":      "want both, totals or legacy",
		"client_connections = 2\n": "expected 0 or 1",
	} {
		_, err := Load(writeFile(t, dir, "bad.ini", "[pgbouncer]\n[metrics]\nlisten = 127.0.0.1:9127\n"+body))
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want %q", body, err, msg)
		}
	}
}
