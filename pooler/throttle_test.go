package pooler_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgwarden/pgwarden/authn/devidp"
	"github.com/pgwarden/pgwarden/pooler"
)

// Sign-in throttling against the real pooler: clients are told apart by
// their address, so they dial from other loopback addresses (Linux routes
// all of 127.0.0.0/8 to lo).

// signInFrom signs in from the local address local.
func (in *instance) signInFrom(local, user, password, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(in.dsn(user, password, db, "default_query_exec_mode=exec"))
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	cfg.DialFunc = d.DialContext
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// mustSignInFrom signs in from local and runs a query.
func (in *instance) mustSignInFrom(t *testing.T, local, user, password, db string) {
	t.Helper()
	conn, err := in.signInFrom(local, user, password, db)
	if err != nil {
		t.Fatalf("%s from %s: %v", user, local, err)
	}
	defer conn.Close(context.Background())
	queryInt(t, conn, "SELECT 1")
}

// refusedFrom signs in from local, expecting a refusal with SQLSTATE code,
// and returns the message.
func (in *instance) refusedFrom(t *testing.T, local, user, password, db, code string) string {
	t.Helper()
	conn, err := in.signInFrom(local, user, password, db)
	if err == nil {
		conn.Close(context.Background())
		t.Fatalf("%s from %s signed in", user, local)
	}
	if got := pgCode(err); got != code {
		t.Fatalf("%s from %s: SQLSTATE %q (%v), want %s", user, local, got, err, code)
	}
	return pgMessage(err)
}

// throttlePooler starts a pooler (SCRAM from the auth file) with extra
// [pgbouncer] lines; the audit lines go to the returned sink.
func throttlePooler(t *testing.T, extra string) (*instance, *auditSink) {
	t.Helper()
	audit := &auditSink{}
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\n"+extra, func(o *pooler.Options) {
		o.AuditLogger = slog.New(slog.NewJSONHandler(audit, nil))
	})
	return in, audit
}

// throttled picks the audit lines of throttled sign-ins.
func throttled(evs []map[string]any) []map[string]any {
	var out []map[string]any
	for _, ev := range evs {
		if ev["reason"] == pooler.ReasonThrottled {
			out = append(out, ev)
		}
	}
	return out
}

var addressThrottledRE = regexp.MustCompile(`^too many failed sign-ins from this client address: try again in (\d+) seconds \(signin_throttle_address_burst\)$`)

// TestSignInThrottleAddress: after signin_throttle_address_burst failed
// sign-ins from one address, the next ones from it are refused (53300)
// before their credentials are checked, even the right password and other
// roles; other addresses sign in as before. Every refusal is audited, SHOW
// THROTTLE lists the address, and turning the scope off (SET) frees it.
func TestSignInThrottleAddress(t *testing.T) {
	in, audit := throttlePooler(t, "signin_throttle_address_burst = 3\nsignin_throttle_address_refill = 3600\n")
	for range 3 {
		in.refusedFrom(t, "127.0.0.2", "alice", "wrong", "app", "28P01")
	}
	msg := in.refusedFrom(t, "127.0.0.2", "alice", "alice-pw", "app", "53300")
	if m := addressThrottledRE.FindStringSubmatch(msg); m == nil || (m[1] != "3600" && m[1] != "3599") {
		t.Fatalf("throttled message %q", msg)
	}
	// The budget is the address's: another role from it is refused too,
	// the console included.
	in.refusedFrom(t, "127.0.0.2", "bob", "bob-pw", "app", "53300")
	in.refusedFrom(t, "127.0.0.2", "admin", "admin-pw", "pgbouncer", "53300")
	// Other addresses are not affected, for the same role.
	in.mustSignInFrom(t, "127.0.0.3", "alice", "alice-pw", "app")
	in.mustSignInFrom(t, "127.0.0.1", "alice", "alice-pw", "app")

	evs := audit.events(t)
	th := throttled(evs)
	if len(th) != 3 {
		t.Fatalf("%d throttled audit lines, want 3: %v", len(th), evs)
	}
	for _, ev := range th {
		if ev["result"] != "refused" || ev["throttle"] != pooler.ThrottleScopeAddress || !strings.HasPrefix(ev["client"].(string), "127.0.0.2:") ||
			ev["retry_after_s"].(float64) < 3599 || ev["event"] != "signin" {
			t.Errorf("throttled audit line %v", ev)
		}
	}
	if ev := th[0]; ev["role"] != "alice" || ev["database"] != "app" || ev["method"] != "scram-sha-256" && ev["method"] != "scram" {
		t.Errorf("first throttled line %v", ev)
	}
	wrong := 0
	for _, ev := range evs {
		if ev["reason"] == "wrong_password" {
			wrong++
		}
	}
	if wrong != 3 {
		t.Errorf("%d wrong_password lines, want 3", wrong)
	}

	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	cols, _, rows := consoleResult(t, admin, "SHOW THROTTLE")
	if strings.Join(cols, ",") != "scope,key,failures,tokens,burst,in_progress,last_failure,throttled_until" {
		t.Fatalf("SHOW THROTTLE columns %v", cols)
	}
	if len(rows) != 1 {
		t.Fatalf("SHOW THROTTLE: %v", rows)
	}
	r := rows[0]
	if r["scope"] != "address" || r["key"] != "127.0.0.2" || r["failures"] != "3" || r["tokens"] != "0.00" || r["burst"] != "3" ||
		r["in_progress"] != "0" || r["last_failure"] == "<NULL>" || r["throttled_until"] == "<NULL>" {
		t.Fatalf("SHOW THROTTLE row %v", r)
	}
	_, _, si := consoleResult(t, admin, "SHOW SIGNINS")
	found := false
	for _, row := range si {
		found = found || row["reason"] == "throttled" && row["result"] == "refused" && strings.HasPrefix(row["client"], "127.0.0.2:")
	}
	if !found {
		t.Errorf("SHOW SIGNINS has no throttled row: %v", si)
	}
	_, _, cfgRows := consoleResult(t, admin, "SHOW CONFIG")
	keys := map[string]string{}
	for _, row := range cfgRows {
		keys[row["key"]] = row["value"] + "|" + row["default"] + "|" + row["changeable"]
	}
	for k, want := range map[string]string{
		"signin_throttle_address_burst":  "3|0|yes",
		"signin_throttle_address_refill": "3600|60|yes",
		"signin_throttle_role_burst":     "0|0|yes",
		"signin_throttle_role_refill":    "60|60|yes",
		"signin_throttle_max_delay":      "0|0|yes",
	} {
		if keys[k] != want {
			t.Errorf("SHOW CONFIG %s: %q, want %q", k, keys[k], want)
		}
	}

	// Off (live, as a reload would): the address signs in again.
	consoleOK(t, admin, "SET signin_throttle_address_burst = 0")
	in.mustSignInFrom(t, "127.0.0.2", "alice", "alice-pw", "app")
	if _, _, rows := consoleResult(t, admin, "SHOW THROTTLE"); len(rows) != 0 {
		t.Errorf("SHOW THROTTLE with the throttle off: %v", rows)
	}
}

var roleThrottledRE = regexp.MustCompile(`^too many failed sign-ins for user "([^"]*)": try again in [1-4] seconds? \(signin_throttle_role_burst\)$`)

// TestSignInThrottleRole: failures for one role name from several
// addresses spend the role's budget; that role is then refused from
// anywhere (an unknown role the same way, so the refusal tells nothing
// about which roles exist), other roles are not; the role signs in again
// once the budget has refilled.
func TestSignInThrottleRole(t *testing.T) {
	in, audit := throttlePooler(t, "signin_throttle_role_burst = 2\nsignin_throttle_role_refill = 4\n")
	in.refusedFrom(t, "127.0.0.2", "bob", "wrong", "app", "28P01")
	in.refusedFrom(t, "127.0.0.3", "bob", "wrong", "app", "28P01")
	msg := in.refusedFrom(t, "127.0.0.4", "bob", "bob-pw", "app", "53300")
	if m := roleThrottledRE.FindStringSubmatch(msg); m == nil || m[1] != "bob" {
		t.Fatalf("throttled message %q", msg)
	}
	in.refusedFrom(t, "127.0.0.2", "mallory", "x", "app", "28P01")
	in.refusedFrom(t, "127.0.0.3", "mallory", "y", "app", "28P01")
	msg = in.refusedFrom(t, "127.0.0.4", "mallory", "z", "app", "53300")
	if m := roleThrottledRE.FindStringSubmatch(msg); m == nil || m[1] != "mallory" {
		t.Fatalf("throttled message for an unknown role %q", msg)
	}
	// Other roles sign in, from the same addresses.
	in.mustSignInFrom(t, "127.0.0.2", "alice", "alice-pw", "app")
	in.mustSignInFrom(t, "127.0.0.4", "carol", "carol-pw", "app")
	for _, ev := range throttled(audit.events(t)) {
		if ev["throttle"] != pooler.ThrottleScopeRole {
			t.Errorf("audit %v", ev)
		}
	}
	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	_, _, rows := consoleResult(t, admin, "SHOW THROTTLE")
	if len(rows) != 2 || rows[0]["key"] != "bob" || rows[1]["key"] != "mallory" || rows[0]["scope"] != "role" || rows[0]["failures"] != "2" {
		t.Fatalf("SHOW THROTTLE: %v", rows)
	}
	// Recovery: a throttled attempt costs nothing, so polling is safe;
	// one token comes back after 4 seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := in.signInFrom("127.0.0.5", "bob", "bob-pw", "app")
		if err == nil {
			queryInt(t, conn, "SELECT 1")
			conn.Close(context.Background())
			break
		}
		if pgCode(err) != "53300" || time.Now().After(deadline) {
			t.Fatalf("bob after the refill: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSignInThrottleHold: with signin_throttle_max_delay, a sign-in whose
// budget comes back in time is held, not refused, and its audit line says
// how long.
func TestSignInThrottleHold(t *testing.T) {
	in, audit := throttlePooler(t, "signin_throttle_role_burst = 1\nsignin_throttle_role_refill = 1\nsignin_throttle_max_delay = 20\n")
	in.refusedFrom(t, "127.0.0.2", "carol", "wrong", "app", "28P01")
	in.mustSignInFrom(t, "127.0.0.2", "carol", "carol-pw", "app")
	var ok map[string]any
	for _, ev := range audit.events(t) {
		if ev["role"] == "carol" && ev["result"] == "ok" {
			ok = ev
		}
	}
	if ok == nil || ok["throttle"] != pooler.ThrottleScopeRole || ok["throttle_delay_ms"] == nil || ok["throttle_delay_ms"].(float64) <= 0 {
		t.Fatalf("audit of the held sign-in: %v", ok)
	}
	if _, has := ok["retry_after_s"]; has {
		t.Errorf("a held sign-in has retry_after_s: %v", ok)
	}
}

// countingIdP serves a development identity provider and counts the key
// set and Graph requests it gets.
type countingIdP struct {
	idp         *devidp.IdP
	url, tid    string
	jwks, graph atomic.Int64
}

func newCountingIdP(t *testing.T, opts devidp.Options) *countingIdP {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	idp, err := devidp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	c := &countingIdP{idp: idp}
	h := idp.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/keys"):
			c.jwks.Add(1)
		case strings.HasSuffix(r.URL.Path, "/checkMemberGroups"):
			c.graph.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	if err := idp.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	c.url, c.tid = srv.URL, idp.Tenants()[0]
	return c
}

// editEntra adds lines to the [entra] section and reloads.
func (in *instance) editEntra(t *testing.T, lines string) {
	t.Helper()
	b, err := os.ReadFile(in.iniPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.iniPath, []byte(strings.Replace(string(b), "[entra]\n", "[entra]\n"+lines, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	in.reload(t, "")
}

// storm signs in with each password in turn, n times in all, from
// workers concurrent clients, and returns how many were refused with each
// SQLSTATE (a sign-in that succeeds fails the test).
func (in *instance) storm(t *testing.T, user, db string, passwords []string, n, workers int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				conn, err := in.signInFrom("127.0.0.1", user, passwords[int(i)%len(passwords)], db)
				if err == nil {
					conn.Close(context.Background())
					t.Error("a bad token signed in")
					return
				}
				mu.Lock()
				codes[pgCode(err)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return codes
}

// TestSignInThrottleJWKSStorm: 500 bad Entra tokens from one address
// (unknown key ids, which make the validator fetch the key set again, and
// bad signatures) with unknown_kid_refresh_interval all but off. Without
// the throttle the identity provider gets a key set request for most of
// them; with signin_throttle_address_burst = 5 exactly five tokens are
// checked, so at most five requests reach it, and 495 sign-ins are
// refused (53300) without any work.
func TestSignInThrottleJWKSStorm(t *testing.T) {
	const n, workers, burst = 500, 20, 5
	run := func(t *testing.T, pgbouncer string) (*countingIdP, *auditSink, map[string]int, int64) {
		idp := newCountingIdP(t, devidp.Options{})
		in, audit := entraPooler(t, idp.url, idp.tid, pgbouncer)
		in.editEntra(t, "unknown_kid_refresh_interval = 0.001\n")
		var toks []string
		for i := range 50 {
			f := devidp.FaultUnknownKID
			if i%2 == 1 {
				f = devidp.FaultWrongKey
			}
			toks = append(toks, mint(t, idp.idp, devidp.TokenSpec{OID: aliceOID, Fault: f}))
		}
		before := idp.jwks.Load()
		codes := in.storm(t, "alice", "app", toks, n, workers)
		return idp, audit, codes, idp.jwks.Load() - before
	}

	_, _, codes, open := run(t, "")
	t.Logf("without the throttle: %d bad tokens, %d key set requests, refusals %v", n, open, codes)
	if codes["28P01"] != n || open <= burst {
		t.Fatalf("without the throttle: refusals %v, %d key set requests", codes, open)
	}

	_, audit, codes, fetched := run(t, fmt.Sprintf("signin_throttle_address_burst = %d\nsignin_throttle_address_refill = 3600\n", burst))
	t.Logf("with signin_throttle_address_burst = %d: %d key set requests, refusals %v", burst, fetched, codes)
	t.Logf(`THROTTLE-RESULT {"item":"bad-token storm, one address","tokens":%d,"jwks_requests_unthrottled":%d,"address_burst":%d,"jwks_requests_throttled":%d,"refused_28P01":%d,"throttled_53300":%d}`,
		n, open, burst, fetched, codes["28P01"], codes["53300"])
	if codes["28P01"] != burst || codes["53300"] != n-burst {
		t.Fatalf("refusals %v, want %d token refusals (28P01) and %d throttled (53300)", codes, burst, n-burst)
	}
	if fetched > burst {
		t.Fatalf("%d key set requests, more than the %d tokens the budget allows", fetched, burst)
	}
	// Every attempt is audited: five token refusals, 495 throttled.
	reasons := map[string]int{}
	for _, ev := range audit.events(t) {
		if ev["result"] == "refused" {
			reasons[ev["reason"].(string)]++
		}
	}
	if reasons["throttled"] != n-burst || reasons["unknown_kid"]+reasons["bad_signature"] != burst {
		t.Fatalf("audit reasons %v", reasons)
	}
}

// TestSignInThrottleGraphStorm: 200 tokens of non-members for the group
// role writers, each needing a Microsoft Graph question (groups overage,
// a different object each time, so no cached answer helps). With
// signin_throttle_role_burst = 3, Graph is asked three times.
func TestSignInThrottleGraphStorm(t *testing.T) {
	const n, workers, burst = 200, 10, 3
	idp := newCountingIdP(t, devidp.Options{Groups: map[string][]string{groupOID: {memberOID}}})
	in, audit := entraPooler(t, idp.url, idp.tid, fmt.Sprintf("signin_throttle_role_burst = %d\nsignin_throttle_role_refill = 3600\n", burst))
	in.editEntra(t, "server_auth = managed_identity\nimds_endpoint = "+idp.url+"/metadata/identity/oauth2/token\n")
	var toks []string
	for range n {
		toks = append(toks, mint(t, idp.idp, devidp.TokenSpec{OID: devidp.NewGUID(), Overage: true}))
	}
	before := idp.graph.Load()
	codes := in.storm(t, "writers", "app", toks, n, workers)
	asked := idp.graph.Load() - before
	t.Logf("%d non-member tokens: %d Graph requests, refusals %v", n, asked, codes)
	t.Logf(`THROTTLE-RESULT {"item":"group-overage storm, one role","tokens":%d,"role_burst":%d,"graph_requests":%d,"throttled_53300":%d}`, n, burst, asked, codes["53300"])
	if asked != burst || codes["53300"] != n-burst {
		t.Fatalf("%d Graph requests (want %d), refusals %v", asked, burst, codes)
	}
	reasons := map[string]int{}
	for _, ev := range audit.events(t) {
		reasons[fmt.Sprint(ev["reason"])]++
	}
	if reasons["not_group_member"] != burst || reasons["throttled"] != n-burst {
		t.Fatalf("audit reasons %v", reasons)
	}
}
