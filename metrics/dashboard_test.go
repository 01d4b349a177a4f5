package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// dashboardPath is the Grafana dashboard shipped in deploy/grafana.
var dashboardPath = filepath.Join("..", "deploy", "grafana", "pgwarden.json")

// dashboardMetricRE finds pgwarden's and PgBouncer's metric names in PromQL:
// an identifier starting with pgbouncer_ or pgwarden_ that is not the tail
// of a longer identifier. Every such identifier is checked, whatever follows
// it ({, [, ), whitespace, a comma in label_values, or the end).
var dashboardMetricRE = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])((?:pgbouncer|pgwarden)_[a-zA-Z0-9_:]*)`)

// dashboardPanel is the part of a Grafana panel the test reads; rows nest
// their collapsed panels.
type dashboardPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboard struct {
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Definition string          `json:"definition"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// dashboardExprs returns every PromQL expression in the dashboard JSON,
// keyed by where it was found: panel targets (rows included) and the
// definitions and queries of query-type template variables.
func dashboardExprs(t *testing.T, data []byte) map[string][]string {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("parse dashboard: %v", err)
	}
	exprs := make(map[string][]string)
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					exprs["panel "+p.Title] = append(exprs["panel "+p.Title], tg.Expr)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		where := "variable " + v.Name
		if v.Definition != "" {
			exprs[where] = append(exprs[where], v.Definition)
		}
		if len(v.Query) == 0 {
			continue
		}
		// Grafana stores a variable's query either as a string or, since
		// the Prometheus variable editor, as {"query": "...", ...}.
		var s string
		if err := json.Unmarshal(v.Query, &s); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("%s: query is neither a string nor an object: %s", where, v.Query)
			}
			s = obj.Query
		}
		if s != "" {
			exprs[where] = append(exprs[where], s)
		}
	}
	return exprs
}

// exprMetricNames returns the metric names in a PromQL expression.
func exprMetricNames(expr string) []string {
	var names []string
	for _, m := range dashboardMetricRE.FindAllStringSubmatch(expr, -1) {
		names = append(names, m[1])
	}
	return names
}

// emittedLabels returns, for every family emittedFamilies finds, the
// label names its series carry.
func emittedLabels(t *testing.T) map[string]map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	touchAll(New(reg))
	reg.MustRegister(NewPgBouncerCollector(fakeSnapshot, testVersion))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]map[string]bool, len(mfs))
	for _, mf := range mfs {
		names := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				names[l.GetName()] = true
			}
		}
		if mf.GetType().String() == "HISTOGRAM" {
			names["le"] = true
		}
		out[mf.GetName()] = names
	}
	return out
}

// dashboardSelectorRE finds a metric name with its label matchers.
var dashboardSelectorRE = regexp.MustCompile(`((?:pgbouncer|pgwarden)_[a-zA-Z0-9_:]*)\{([^}]*)\}`)

// dashboardMatcherRE finds the label names of matchers.
var dashboardMatcherRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)

// unknownSelectorLabels returns "where: metric{label}" for every label
// matcher naming a label the metric does not have (such as database on
// pgbouncer_databases_*, whose pool label is name).
func unknownSelectorLabels(labels map[string]map[string]bool, exprs map[string][]string) []string {
	var bad []string
	for where, list := range exprs {
		for _, expr := range list {
			for _, m := range dashboardSelectorRE.FindAllStringSubmatch(expr, -1) {
				name := m[1]
				fam, ok := labels[name]
				if !ok {
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if base, cut := strings.CutSuffix(name, suffix); cut {
							if fam, ok = labels[base]; ok {
								break
							}
						}
					}
				}
				if !ok {
					continue // reported by unknownDashboardMetrics
				}
				for _, lm := range dashboardMatcherRE.FindAllStringSubmatch(m[2], -1) {
					if !fam[lm[1]] {
						bad = append(bad, where+": "+name+"{"+lm[1]+"}")
					}
				}
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// emittedFamilies gathers a registry holding metrics.New and a pool
// collector over fakeSnapshot, with every vector touched so that each
// family has a sample, and returns the family names with their types (HISTOGRAM, COUNTER, ...).
func emittedFamilies(t *testing.T) map[string]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	touchAll(New(reg))
	reg.MustRegister(NewPgBouncerCollector(fakeSnapshot, testVersion))

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := make(map[string]string, len(mfs))
	for _, mf := range mfs {
		fams[mf.GetName()] = mf.GetType().String()
	}
	return fams
}

// knownMetric reports whether name, as written in PromQL, is a series of one
// of fams: the family itself, or a histogram's or summary's _bucket, _sum or
// _count series.
func knownMetric(fams map[string]string, name string) bool {
	if _, ok := fams[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch fams[base] {
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			return true
		case "SUMMARY":
			if suffix != "_bucket" {
				return true
			}
		}
	}
	return false
}

// unknownDashboardMetrics returns "where: name" for every metric name in
// exprs that fams does not produce, and the number of names checked.
func unknownDashboardMetrics(fams map[string]string, exprs map[string][]string) (unknown []string, checked int) {
	for where, list := range exprs {
		for _, expr := range list {
			for _, name := range exprMetricNames(expr) {
				checked++
				if !knownMetric(fams, name) {
					unknown = append(unknown, where+": "+name)
				}
			}
		}
	}
	slices.Sort(unknown)
	return unknown, checked
}

func TestDashboardMetricsExist(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	exprs := dashboardExprs(t, data)
	fams := emittedFamilies(t)

	unknown, checked := unknownDashboardMetrics(fams, exprs)
	for _, u := range unknown {
		t.Errorf("dashboard queries a metric pgwarden does not emit: %s", u)
	}
	// Guard against the extraction silently finding nothing.
	if checked < 30 {
		t.Errorf("checked %d metric references in %d places, want at least 30", checked, len(exprs))
	}
	for _, v := range []string{"variable database", "variable user"} {
		if len(exprs[v]) == 0 {
			t.Errorf("dashboard has no query for %s", v)
		}
	}

	labels := emittedLabels(t)
	for _, u := range unknownSelectorLabels(labels, exprs) {
		t.Errorf("dashboard selects on a label the metric does not have: %s", u)
	}
	if bad := unknownSelectorLabels(labels, map[string][]string{"test": {`pgwarden_query_duration_seconds_bucket{db="x",le="1"}`}}); len(bad) != 1 {
		t.Errorf("a matcher on a missing label went unnoticed: %v", bad)
	}

	// Every panel and variable expression must name at least one metric,
	// so that a name the regexp cannot see (another prefix) is noticed.
	for where, list := range exprs {
		for _, expr := range list {
			if len(exprMetricNames(expr)) == 0 {
				t.Errorf("%s: expression names no pgbouncer_/pgwarden_ metric: %s", where, expr)
			}
		}
	}
}

// TestDashboardCheckCatchesMisspelling makes sure the check above would fail
// for a misspelt or suffix-confused metric name.
func TestDashboardCheckCatchesMisspelling(t *testing.T) {
	t.Parallel()
	fams := emittedFamilies(t)
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`sum(rate(pgwarden_signin_attempts_total[5m]))`, true},
		{`histogram_quantile(0.99, sum by (le) (rate(pgwarden_signin_duration_seconds_bucket[5m])))`, true},
		{`rate(pgwarden_signin_duration_seconds_count[5m])`, true},
		{`label_values(pgbouncer_pools_client_active_connections, database)`, true},
		{`pgwarden_backend_token_expiry_timestamp_seconds - time()`, true},
		{`sum(rate(pgwarden_signin_attempt_total[5m]))`, false},
		{`sum(rate(pgwarden_signin_attempts[5m]))`, false},
		{`pgbouncer_pools_client_active_connection{database="a"}`, false},
		{`rate(pgbouncer_stats_totals_sql_transactions_pooled[5m])`, false},
		{`label_values(pgbouncer_pools_client_activ_connections, database)`, false},
		{`pgwarden_jwks_keys_bucket`, false},
		{`rate(pgwarden_client_errors_total_count[5m])`, false},
		{`pgwarden_backend_token_expiry_seconds - time()`, false},
	} {
		unknown, checked := unknownDashboardMetrics(fams, map[string][]string{"test": {tc.expr}})
		if checked == 0 {
			t.Errorf("%s: no metric name extracted", tc.expr)
		}
		if got := len(unknown) == 0; got != tc.ok {
			t.Errorf("%s: accepted = %v, want %v (unknown %v)", tc.expr, got, tc.ok, unknown)
		}
	}
}
