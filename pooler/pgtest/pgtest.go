// Package pgtest starts throwaway PostgreSQL clusters for pgwarden's tests.
// The clusters themselves come from package pgcluster (see there for how
// they are made, the binaries used and running as root); this package adds
// the helpers that need package testing. Import it from _test.go files only.
package pgtest

import (
	"fmt"
	"os"
	"testing"

	"github.com/pgwarden/pgwarden/internal/pgcluster"
)

// Cluster and Options are pgcluster's.
type (
	Cluster = pgcluster.Cluster
	Options = pgcluster.Options
)

// Defaults, as in pgcluster.
const (
	DefaultMaxConnections = pgcluster.DefaultMaxConnections
	DefaultSuperUser      = pgcluster.DefaultSuperUser
)

// Start, FreePort, PsqlPath, PgbenchPath and FindBinDir are pgcluster's.
var (
	Start       = pgcluster.Start
	FreePort    = pgcluster.FreePort
	PsqlPath    = pgcluster.PsqlPath
	PgbenchPath = pgcluster.PgbenchPath
	FindBinDir  = pgcluster.FindBinDir
)

// StartT starts a cluster for one test (opts[0] if given, else defaults),
// failing the test if it cannot, and stops it in t.Cleanup.
func StartT(tb testing.TB, opts ...Options) *Cluster {
	tb.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	c, err := Start(o)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// Main is for TestMain: it starts one cluster, calls run with it (run
// normally calls m.Run and returns its code), stops the cluster and exits
// with run's code. If the cluster cannot be started, for instance because
// the PostgreSQL binaries are not installed, it prints why and exits 1.
//
//	var cluster *pgtest.Cluster
//
//	func TestMain(m *testing.M) {
//		pgtest.Main(m, pgtest.Options{}, func(c *pgtest.Cluster) int {
//			cluster = c
//			return m.Run()
//		})
//	}
func Main(m *testing.M, opts Options, run func(c *Cluster) int) {
	_ = m // taken so that Main is called from TestMain only
	os.Exit(mainCode(opts, run))
}

func mainCode(opts Options, run func(c *Cluster) int) (code int) {
	c, err := Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cannot start PostgreSQL for the tests: %v\n", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "%v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()
	return run(c)
}
