package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	poolerconfig "github.com/pgwarden/pgwarden/pooler/config"
)

func TestParsePgbenchOutput(t *testing.T) {
	const out = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: prepared
number of clients: 50
number of threads: 2
maximum number of tries: 1
duration: 5 s
number of transactions actually processed: 12345
number of failed transactions: 0 (0.000%)
latency average = 2.021 ms
initial connection time = 31.234 ms
tps = 24700.123456 (without initial connection time)
pgbench: error: client 3 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_0" already exists
pgbench: error: client 4 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_0" already exists
pgbench: error: Run was aborted; the above results are incomplete.
`
	r := &runResult{ExitCode: 2}
	(&harness{}).parsePgbenchOutput(r, out)
	if r.Transactions != 12345 || r.TPS != 24700.123456 || r.LatencyAvgMs != 2.021 || r.ConnTimeMs != 31.234 {
		t.Errorf("parsed %+v", r)
	}
	if r.AbortedClients != 2 {
		t.Errorf("aborted clients = %d, want 2", r.AbortedClients)
	}
	// The two clients' errors differ only in numbers: counted once.
	if len(r.Errors) != 2 {
		t.Errorf("errors = %q, want 2 distinct", r.Errors)
	}
	if r.ok() {
		t.Error("a run with aborted clients is not ok")
	}
}

func TestReadPgbenchLogsAndSteadyCPU(t *testing.T) {
	dir := t.TempDir()
	// Two clients; client 1 starts late (t0+1s) and both end by t0+4s.
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	line := func(client, n int, lat int, at time.Time) string {
		us := at.UnixMicro()
		return itoa(client) + " " + itoa(n) + " " + itoa(lat) + " 0 " + itoa(int(us/1e6)) + " " + itoa(int(us%1e6)) + "\n"
	}
	var a, b string
	for i := range 40 {
		a += line(0, i, 100+i, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	for i := range 30 {
		b += line(1, i, 200, t0.Add(time.Second+time.Duration(i)*100*time.Millisecond))
	}
	b += "1 30 failed 0 0 0\n"
	if err := os.WriteFile(filepath.Join(dir, "pgbench_log.1"), []byte(a), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pgbench_log.1.1"), []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
	lat, ends, failed, err := readPgbenchLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 70 || len(ends) != 70 || failed != 1 {
		t.Fatalf("got %d latencies, %d ends, %d failed", len(lat), len(ends), failed)
	}
	// CPU samples every 500 ms: 10 ticks each.
	var samples []cpuSample
	for i := range 10 {
		samples = append(samples, cpuSample{t0.Add(time.Duration(i) * 500 * time.Millisecond), uint64(i * 10)})
	}
	r := &runResult{}
	steadyCPU(r, samples, ends)
	// Window: the sample at 1.0 s (client 1's first end) to the last at
	// or before 3.9 s (client 0's last end): 1.0 s to 3.5 s.
	if r.SteadyWindowS != 2.5 {
		t.Fatalf("window %v s, want 2.5", r.SteadyWindowS)
	}
	if want := 50 / clockTicks / 2.5; r.SteadyCoresUsed < want*0.99 || r.SteadyCoresUsed > want*1.01 {
		t.Errorf("cores %v, want %v", r.SteadyCoresUsed, want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestPercentile(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(i + 1)
	}
	if p := percentile(v, 0.5); p != 50 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(v, 0.99); p != 99 {
		t.Errorf("p99 = %v", p)
	}
}

func TestProcReaders(t *testing.T) {
	if clockTicks <= 0 {
		t.Fatal("no CLK_TCK")
	}
	pid := os.Getpid()
	if _, err := procCPU(pid); err != nil {
		t.Error(err)
	}
	if rss, err := procRSS(pid); err != nil || rss <= 0 {
		t.Errorf("rss %d, %v", rss, err)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"-quick", "-note", "it's busy"})
	if want := `-quick -note 'it'\''s busy'`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestNormalizeINI(t *testing.T) {
	ini := iniText(5432, 6001, 100, "/w/main-pgwarden", iniOptions{authType: "scram-sha-256"}, tlsFiles{})
	other := iniText(5432, 6002, 100, "/w/main-pgbouncer", iniOptions{authType: "scram-sha-256"}, tlsFiles{})
	if a, b := normalizeINI(ini, "/w/main-pgwarden", 6001, "/w"), normalizeINI(other, "/w/main-pgbouncer", 6002, "/w"); a != b {
		t.Errorf("normalized configs differ:\n%s\n%s", a, b)
	}
}

func TestParseFlagsStormAuth(t *testing.T) {
	full, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"scram-sha-256", "plain", "entra"}; !slices.Equal(full.stormAuths, want) {
		t.Errorf("full -storm-auth %q, want %q", full.stormAuths, want)
	}
	if want := []bool{false, true}; !slices.Equal(full.stormTLS, want) {
		t.Errorf("full -storm-tls %v, want %v", full.stormTLS, want)
	}
	// Quick mode measures the Entra target's pair (PgBouncer plain,
	// pgwarden Entra) without TLS, in the time the SCRAM storms with and
	// without TLS took before.
	quick, err := parseFlags([]string{"-quick"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"scram-sha-256", "plain", "entra"}; !slices.Equal(quick.stormAuths, want) {
		t.Errorf("quick -storm-auth %q, want %q", quick.stormAuths, want)
	}
	if want := []bool{false}; !slices.Equal(quick.stormTLS, want) {
		t.Errorf("quick -storm-tls %v, want %v", quick.stormTLS, want)
	}
	// An explicit flag wins over the quick default.
	c, err := parseFlags([]string{"-quick", "-storm-auth", "entra", "-storm-tls", "on"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.stormAuths, []string{"entra"}) || !slices.Equal(c.stormTLS, []bool{true}) {
		t.Errorf("got -storm-auth %q -storm-tls %v", c.stormAuths, c.stormTLS)
	}
	if _, err := parseFlags([]string{"-storm-auth", "md5"}); err == nil {
		t.Error("-storm-auth md5 accepted")
	}
}

// testEntra is an entraSetup without a running IdP.
func testEntra() *entraSetup {
	return &entraSetup{authority: "http://127.0.0.1:40001", tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47",
		oid: "11111111-2222-4333-8444-555555555555", token: "eyJ.x.y"}
}

func TestEntraINI(t *testing.T) {
	dir := t.TempDir()
	ws := &workspace{dir: dir, uid: -1, gid: -1}
	tls, err := ws.makeCert()
	if err != nil {
		t.Fatal(err)
	}
	e := testEntra()
	for _, withTLS := range []bool{false, true} {
		inst := filepath.Join(dir, "storm-entra-pgwarden")
		if err := os.MkdirAll(inst, 0o755); err != nil {
			t.Fatal(err)
		}
		opts := iniOptions{authType: "plain", tls: withTLS, entra: e}
		ini := iniText(5432, 6001, 100, inst, opts, tls)
		for _, want := range []string{"\n[entra]\nauthority = " + e.authority + "\ngraph_endpoint = " + e.authority + "\ntenants = " + e.tenant + "\nauth_mode = entra\n",
			"\n[entra_principals]\nbench = oid=" + e.oid + " type=user\n"} {
			if !strings.Contains(ini, want) {
				t.Errorf("TLS %v: ini lacks %q:\n%s", withTLS, want, ini)
			}
		}
		if got := strings.Contains(ini, "allow_plaintext = 1"); got == withTLS {
			t.Errorf("TLS %v: allow_plaintext present = %v", withTLS, got)
		}
		// Without pgwarden's own sections it is what PgBouncer reads.
		plain := iniText(5432, 6001, 100, inst, iniOptions{authType: "plain", tls: withTLS}, tls)
		if got := sharedINI(ini); got != plain {
			t.Errorf("TLS %v: sharedINI:\n%s\nwant\n%s", withTLS, got, plain)
		}
		if sharedINI(plain) != plain {
			t.Error("sharedINI changed a file without pgwarden's sections")
		}
		// pgwarden accepts the file as it is written.
		if err := os.WriteFile(filepath.Join(inst, "userlist.txt"), []byte(userlistText()), 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(inst, "pgbouncer.ini")
		if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
			t.Fatal(err)
		}
		if problems := poolerconfig.Check(path); len(problems) > 0 {
			t.Errorf("TLS %v: pgwarden check-config: %v\n%s", withTLS, problems, ini)
		}
	}
	if got := e.normalize("authority = " + e.authority + "\ntenants = " + e.tenant + "\nbench = oid=" + e.oid); got != "authority = $IDP\ntenants = $TENANT\nbench = oid=$OID" {
		t.Errorf("normalize: %q", got)
	}
}

func TestSharedINIMiddle(t *testing.T) {
	in := "[databases]\na = b\n\n[entra]\nx = 1\n\n[Entra_Principals]\nr = oid=1\n\n[pgbouncer]\nk = v\n"
	if got, want := sharedINI(in), "[databases]\na = b\n[pgbouncer]\nk = v\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// testHarness is a harness with results but no processes.
func testHarness(stormTLS []bool) *harness {
	return &harness{
		cfg: &config{stormClients: 20, stormDuration: 5 * time.Second, rounds: 1, stormTLS: stormTLS,
			stormAuths: []string{"scram-sha-256", "plain", "entra"}, sections: []string{"storm"}, clients: []int{1, 50}},
		kinds:   []*poolerKind{{name: "pgwarden", isPgwarden: true, label: "pgwarden"}, {name: "pgbouncer", label: "PgBouncer 1.18.0"}},
		res:     &results{},
		started: time.Now(),
	}
}

func stormRun(auth string, tls bool, target string, tps float64) *runResult {
	return &runResult{Section: "storm", Protocol: "simple", Auth: auth, TLS: tls, Connect: true, Clients: 20, Target: target,
		TPS: tps, Transactions: int64(tps * 5)}
}

func entraVerdict(t *testing.T, h *harness) verdict {
	t.Helper()
	for _, v := range h.verdicts() {
		if strings.HasPrefix(v.target, "Entra-token sign-ins") {
			return v
		}
	}
	t.Fatal("no Entra verdict")
	return verdict{}
}

func TestEntraVerdictAndTable(t *testing.T) {
	h := testHarness([]bool{false, true})
	h.res.Runs = []*runResult{
		stormRun("plain", false, "pgwarden", 7000), stormRun("plain", false, "pgbouncer", 4000),
		stormRun("entra", false, "pgwarden", 6100),
		stormRun("plain", true, "pgwarden", 900), stormRun("plain", true, "pgbouncer", 1000),
		stormRun("entra", true, "pgwarden", 1400),
	}
	// TLS off: 6100 ≥ 1.5 × 4000; TLS on: 1400 < 1.5 × 1000.
	v := entraVerdict(t, h)
	if v.status != "MISSED" || len(v.details) != 2 ||
		!strings.Contains(v.details[0], "6100") || !strings.Contains(v.details[0], "1.52×") || !strings.HasSuffix(v.details[0], ": met") ||
		!strings.Contains(v.details[1], "1.40×") || !strings.HasSuffix(v.details[1], ": missed") {
		t.Errorf("verdict %+v", v)
	}
	if strings.Contains(strings.Join(v.details, "\n"), "where pgwarden's time goes") {
		t.Errorf("profile named without one: %+v", v)
	}
	h.res.EntraProfile = &profileResult{Supported: true, File: "results/x-pgwarden-entra-storm-cpu.pprof"}
	if v := entraVerdict(t, h); !strings.Contains(v.details[len(v.details)-1], "results/x-pgwarden-entra-storm-cpu.pprof") {
		t.Errorf("a miss does not name the profile: %+v", v)
	}
	h.res.Runs[5].TPS = 1600
	if v := entraVerdict(t, h); v.status != "MET" || len(v.details) != 2 {
		t.Errorf("verdict %+v", v)
	}
	// A failed Entra run misses, whatever its rate.
	h.res.Runs[2].AbortedClients = 1
	if v := entraVerdict(t, h); v.status != "MISSED" || !strings.Contains(v.details[0], "pgwarden had failures") {
		t.Errorf("verdict %+v", v)
	}
	h.res.Runs[2].AbortedClients = 0

	var b strings.Builder
	h.writeStorms(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) })
	md := b.String()
	for _, want := range []string{
		"| Entra token | off | pgwarden | 6100 | 0 |",
		"| Entra token | on | pgwarden | 1600 | 0 |",
		"| auth_type plain | on | PgBouncer 1.18.0 (Debian) | 1000 | 0 |",
		"| off | 6100 | 4000 | 1.52 | ≥ 1.5× |",
		"| on | 1600 | 1000 | 1.60 | ≥ 1.5× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("storm section lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(strings.ToLower(md), "not measured") {
		t.Errorf("storm section says not measured:\n%s", md)
	}

	// Quick mode: TLS off only, so the target is measured in part.
	h = testHarness([]bool{false})
	h.res.Runs = []*runResult{stormRun("plain", false, "pgbouncer", 4000), stormRun("entra", false, "pgwarden", 6100)}
	if v := entraVerdict(t, h); v.status != "PARTLY MEASURED (met where measured)" || !strings.Contains(v.details[1], "TLS on: not run") {
		t.Errorf("verdict %+v", v)
	}
	h.res.Runs = nil
	if v := entraVerdict(t, h); v.status != "NOT MEASURED" {
		t.Errorf("verdict %+v", v)
	}
}

func TestCheckINIsEntra(t *testing.T) {
	h := testHarness([]bool{false})
	e := testEntra()
	inst := func(label, kind string) string { return "/w/" + label + "-" + kind }
	norm := func(label, kind string, port int, opts iniOptions) string {
		return normalizeINI(iniText(5432, port, 100, inst(label, kind), opts, tlsFiles{}), inst(label, kind), port, "/w")
	}
	plainOpts := iniOptions{authType: "plain"}
	h.inis = map[string]map[string]string{
		"storm-plain": {"pgwarden": norm("storm-plain", "pgwarden", 6001, plainOpts), "pgbouncer": norm("storm-plain", "pgbouncer", 6002, plainOpts)},
		"storm-entra": {"pgwarden": norm("storm-entra", "pgwarden", 6003, iniOptions{authType: "plain", entra: e})},
	}
	h.checkINIs("storm-plain", plainOpts)
	h.checkINIs("storm-entra", iniOptions{authType: "plain", entra: e})
	if len(h.res.Problems) > 0 {
		t.Fatalf("problems: %q", h.res.Problems)
	}
	if want := "[entra]\nauthority = $IDP\ngraph_endpoint = $IDP\ntenants = $TENANT\nauth_mode = entra\nallow_plaintext = 1\n\n[entra_principals]\nbench = oid=$OID type=user\n"; h.res.Settings.EntraINI != want {
		t.Errorf("EntraINI %q, want %q", h.res.Settings.EntraINI, want)
	}
	// pgwarden's Entra file must not differ from PgBouncer's plain one in
	// the shared sections.
	h.inis["storm-entra"]["pgwarden"] = norm("storm-entra", "pgwarden", 6003, iniOptions{authType: "scram-sha-256", entra: e})
	h.checkINIs("storm-entra", iniOptions{authType: "plain", entra: e})
	if len(h.res.Problems) != 1 || !strings.Contains(h.res.Problems[0], "not PgBouncer's plain-password file") {
		t.Errorf("problems: %q", h.res.Problems)
	}
	// Nor may two poolers of one section read different files.
	h.res.Problems = nil
	h.inis["storm-plain"]["pgbouncer"] += "server_idle_timeout = 1\n"
	h.checkINIs("storm-plain", plainOpts)
	if len(h.res.Problems) != 1 || !strings.Contains(h.res.Problems[0], "differ beyond port and paths") {
		t.Errorf("problems: %q", h.res.Problems)
	}
}

func TestSetupText(t *testing.T) {
	h := testHarness([]bool{false})
	e := testEntra()
	ini := iniText(5432, 6001, 100, "/w/storm-scram-pgwarden", iniOptions{authType: "scram-sha-256"}, tlsFiles{})
	h.res.Settings = settingsInfo{PoolerINISection: "storm-scram", PoolerINI: map[string]string{"pgwarden": ini, "pgbouncer": ini},
		EntraINI: strings.TrimLeft(e.normalize(e.iniSections(false)), "\n")}
	h.res.Runs = []*runResult{{Connect: true, Auth: "entra", Command: "PGPASSWORD=$TOKEN PGSSLMODE=disable pgbench -n -S -C -p 6001"}}
	var b strings.Builder
	h.writeSetup(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) })
	md := b.String()
	for _, want := range []string{"connection storm `storm-scram`", "identical apart from the port and the paths",
		"```ini\n[entra]\nauthority = $IDP\n", "bench = oid=$OID type=user\n```", "PGPASSWORD=$TOKEN PGSSLMODE=disable pgbench -n -S -C -p $PORT"} {
		if !strings.Contains(md, want) {
			t.Errorf("setup lacks %q:\n%s", want, md)
		}
	}
}

func TestParseTestOutputAndRender(t *testing.T) {
	out := []byte(`=== RUN   TestFaultX
    faults_test.go:10: FAULT-RESULT {"fault":"reset","clients":[{"case":"a|b","sqlstate":"08006","message":"crashed","elapsed_ms":1.5}],"recovery_ms":33,"leak":{"ok":true,"goroutines_base":10,"goroutines_end":10,"fds_base":1,"fds_end":1,"server_conns_base":0,"server_conns_end":0}}
--- PASS: TestFaultX (0.50s)
=== RUN   TestIdPSlow
    idp_test.go:5: IDP-RESULT {"item":"jwks_slow","outcome":"pass","test":"TestIdPSlow","wait_ms":3001.027}
--- FAIL: TestIdPSlow (3.00s)
FAIL
FAIL	github.com/pgwarden/pgwarden/authn	3.1s
`)
	res := parseTestOutput(out)
	if len(res) != 2 || !res[0].Passed || res[1].Passed || res[0].Seconds != 0.5 || len(res[0].Results) != 1 || len(res[1].Results) != 1 {
		t.Fatalf("%+v", res)
	}
	if res[1].Package != "github.com/pgwarden/pgwarden/authn" {
		t.Fatalf("package %q", res[1].Package)
	}
	f := renderResult(res[0].Results[0])
	for _, want := range []string{"**reset**", `a\|b: 08006 crashed (1.5 ms)`, "recovery 33 ms", "leak check: true (goroutines 10→10"} {
		if !strings.Contains(f, want) {
			t.Errorf("fault cell %q lacks %q", f, want)
		}
	}
	if g := renderResult(res[1].Results[0]); g != "item=jwks_slow, outcome=pass, wait_ms=3001.0" {
		t.Errorf("idp cell %q", g)
	}
}

func TestTargetBounds(t *testing.T) {
	pb := &cell{runs: []*runResult{{TPS: 16763, CPUPerTxUs: 27.8, MachineCPUPerTxUs: 119, Jobs: 2}}}
	b, ok := throughputBudget(pb, 1.1)
	if !ok || b < 16.9 || b > 17.1 {
		t.Errorf("throughputBudget = %.2f, %v; want 17.0", b, ok)
	}
	if b, _ := throughputBudget(pb, 1.5); b >= 0 {
		t.Errorf("throughputBudget at 1.5× = %.2f; want below zero", b)
	}
	if _, ok := throughputBudget(&cell{runs: []*runResult{{TPS: 1, CPUPerTxUs: 1}}}, 1.1); ok {
		t.Error("throughputBudget without the machine's CPU: want not known")
	}
	storm := &cell{runs: []*runResult{{TPS: 3604, CPUPerTxUs: 107.9, Jobs: 2}}}
	r, ok := stormBound(storm, storm.jobs())
	if !ok || r < 4470 || r > 4480 {
		t.Errorf("stormBound = %.0f, %v; want about 4474", r, ok)
	}
}
