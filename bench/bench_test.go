package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
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
