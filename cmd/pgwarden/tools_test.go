package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The metrics endpoint checked with the real tools operators use: the
// prometheus-community pgbouncer_exporter pointed at pgwarden's console,
// and a Prometheus server scraping /metrics (plus promtool's lint).

const (
	exporterModule  = "github.com/prometheus-community/pgbouncer_exporter"
	exporterVersion = "v0.12.1"
)

// exporterBinary returns a pgbouncer_exporter to run: $PGBOUNCER_EXPORTER,
// one on PATH, or one built from the Go module proxy into the test's
// temporary directory. It skips the test when none can be had.
func exporterBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PGBOUNCER_EXPORTER"); p != "" {
		return p
	}
	if p, err := exec.LookPath("pgbouncer_exporter"); err == nil {
		return p
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("pgbouncer_exporter not installed and no go tool to build it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Download the module (and with it its go.sum), then build it in its
	// own module directory, with its own dependency versions.
	dl := exec.CommandContext(ctx, goTool, "mod", "download", "-json", exporterModule+"@"+exporterVersion)
	dl.Dir = t.TempDir()
	out, err := dl.Output()
	if err != nil {
		t.Skipf("pgbouncer_exporter not installed, and %s@%s cannot be downloaded (%v); set PGBOUNCER_EXPORTER to run this test", exporterModule, exporterVersion, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Skipf("go mod download printed no module directory: %v %s", err, out)
	}
	bin := filepath.Join(t.TempDir(), "pgbouncer_exporter")
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	build.Dir = mod.Dir
	build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Skipf("pgbouncer_exporter %s does not build here (%v):\n%s", exporterVersion, err, b)
	}
	return bin
}

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP polls u until it answers 200 or p exits or 60 s pass.
func waitHTTP(t *testing.T, p *proc, u string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := httpGet(t, u)
		if code == http.StatusOK {
			return body
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s: no answer from %s (%d %s)", p.name, u, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parseSamples reads a text exposition into series → value.
func parseSamples(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestExternalTools: after some traffic, pgbouncer_exporter reads
// pgwarden's console with pgbouncer_up 1 and no errors, and every figure it
// reports is on pgwarden's own /metrics with the same value; a Prometheus
// server scrapes /metrics (up 1), and promtool check metrics is clean.
func TestExternalTools(t *testing.T) {
	_, idp := startDevIdP(t)
	p := startMetricsPooler(t, idp)
	if err := p.session(t, appUser, alicePassword, "app", "SELECT 1", "BEGIN", "SELECT 2", "COMMIT"); err != nil {
		t.Fatal(err)
	}
	_ = p.session(t, appUser, "wrong", "app")
	_ = p.session(t, appUser, alicePassword, "nodb")

	t.Run("pgbouncer_exporter", func(t *testing.T) {
		bin := exporterBinary(t)
		eport := freePort(t)
		// lib/pq sends extra_float_digits, which the config ignores as
		// the exporter's README asks.
		conn := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/pgbouncer?sslmode=require", adminUser, adminPassword, p.port)
		exp := startProc(t, "pgbouncer_exporter", exec.Command(bin,
			"--pgBouncer.connectionString="+conn, fmt.Sprintf("--web.listen-address=127.0.0.1:%d", eport), "--log.level=info"))
		body := waitHTTP(t, exp, fmt.Sprintf("http://127.0.0.1:%d/metrics", eport))
		theirs := parseSamples(t, body)
		_, ourBody := scrape(t, p.mport)
		ours := parseSamples(t, ourBody)
		if theirs["pgbouncer_up"] != 1 {
			t.Fatalf("exporter: pgbouncer_up %v\n%s", theirs["pgbouncer_up"], exp.output())
		}
		if log := exp.output(); strings.Contains(log, "level=WARN") || strings.Contains(log, "level=ERROR") || strings.Contains(log, "error") {
			t.Errorf("exporter logged problems:\n%s", log)
		}
		compared := 0
		for k, v := range theirs {
			if !strings.HasPrefix(k, "pgbouncer_") || strings.HasPrefix(k, "pgbouncer_exporter_") {
				continue
			}
			switch {
			case k == "pgbouncer_used_clients",
				strings.HasPrefix(k, "pgbouncer_client_connections{") && strings.Contains(k, `database="pgbouncer"`),
				strings.HasPrefix(k, "pgbouncer_pools_client_active_connections{") && strings.Contains(k, `database="pgbouncer"`):
				// The exporter's own console connection, present only
				// while it scrapes.
				continue
			}
			compared++
			o, ok := ours[k]
			if !ok {
				t.Errorf("exporter reports %s, /metrics does not", k)
				continue
			}
			if math.Abs(o-v) > 1e-9*math.Max(1, math.Abs(v)) {
				t.Errorf("%s: exporter %v, /metrics %v", k, v, o)
			}
		}
		t.Logf("%d series of pgbouncer_exporter %s equal on /metrics", compared, exporterVersion)
		if compared < 60 {
			t.Errorf("compared %d exporter series, want at least 60:\n%s", compared, body)
		}
		for _, s := range []string{`pgbouncer_pools_client_active_connections{database="app",user="alice"}`, `pgbouncer_stats_totals_sql_transactions_pooled_total{database="app"}`,
			`pgbouncer_databases_pool_size{database="app",force_user="",host="127.0.0.1",name="app",pool_mode="",port="` + fmt.Sprint(pg.Port) + `"}`} {
			if _, ok := theirs[s]; !ok {
				t.Errorf("exporter lacks %s", s)
			}
		}
		if theirs[`pgbouncer_stats_totals_sql_transactions_pooled_total{database="app"}`] < 2 {
			t.Errorf("exporter: transactions %v", theirs[`pgbouncer_stats_totals_sql_transactions_pooled_total{database="app"}`])
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		promBin, err := exec.LookPath("prometheus")
		if err != nil {
			t.Skip("prometheus not installed (Debian package prometheus)")
		}
		dir := t.TempDir()
		pport := freePort(t)
		cfg := filepath.Join(dir, "prometheus.yml")
		writeFile(t, cfg, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pgwarden
    static_configs:
      - targets: ["127.0.0.1:%d"]
`, p.mport))
		prom := startProc(t, "prometheus", exec.Command(promBin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			fmt.Sprintf("--web.listen-address=127.0.0.1:%d", pport)))
		api := fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=", pport)
		waitHTTP(t, prom, fmt.Sprintf("http://127.0.0.1:%d/-/ready", pport))
		// query returns the value of a one-sample instant query, or "".
		query := func(q string) string {
			code, body := httpGet(t, api+url.QueryEscape(q))
			if code != http.StatusOK {
				return ""
			}
			var r struct {
				Data struct {
					Result []struct {
						Value [2]any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.Data.Result) != 1 {
				return ""
			}
			s, _ := r.Data.Result[0].Value[1].(string)
			return s
		}
		deadline := time.Now().Add(60 * time.Second)
		for query(`up{job="pgwarden"}`) != "1" {
			if prom.exited() || time.Now().After(deadline) {
				t.Fatalf("Prometheus never saw up 1 for pgwarden:\n%s", prom.output())
			}
			time.Sleep(100 * time.Millisecond)
		}
		for q, want := range map[string]string{
			`pgbouncer_up{job="pgwarden"}`: "1",
			`pgwarden_signin_attempts_total{method="entra",result="failure",reason="wrong_password"}`: "1",
			`scrape_samples_post_metric_relabeling{job="pgwarden"} > bool 200`:                        "1",
		} {
			if got := query(q); got != want {
				t.Errorf("Prometheus: %s = %q, want %q", q, got, want)
			}
		}
	})

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool not installed (Debian package prometheus)")
		}
		_, body := scrape(t, p.mport)
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) != 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})
}
