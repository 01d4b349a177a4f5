package pooler_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// consoleHelp returns the console's SHOW HELP list as user, one command
// form a line ("PAUSE [<db>]", "SHOW HELP|CONFIG|...").
func consoleHelp(t *testing.T, in *instance, user, password string) []string {
	t.Helper()
	cfg, err := pgx.ParseConfig(in.dsn(user, password, "pgbouncer", "default_query_exec_mode=simple_protocol"))
	if err != nil {
		t.Fatal(err)
	}
	var detail string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { detail = n.Detail }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	consoleOK(t, conn, "SHOW HELP")
	var out []string
	for _, l := range strings.Split(detail, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) < 10 {
		t.Fatalf("SHOW HELP detail %q", detail)
	}
	return out
}

// consoleCommandsFromHelp turns SHOW HELP's forms into runnable commands:
// every alternative, each optional argument with and without a value.
func consoleCommandsFromHelp(forms []string) (shows, others []string) {
	for _, f := range forms {
		words := strings.Fields(f)
		switch {
		case words[0] == "SHOW":
			for _, w := range strings.Split(words[1], "|") {
				shows = append(shows, "SHOW "+w)
			}
		case words[0] == "SET":
			others = append(others, "SET default_pool_size = 7", "SET admin_users = 'alice'", "SET stats_users = 'bob'")
		case len(words) == 1:
			others = append(others, words[0])
		default:
			switch arg := words[1]; {
			case arg == "[<db>]":
				others = append(others, words[0], words[0]+" app")
			case arg == "<db>":
				others = append(others, words[0]+" app")
			case arg == "<client_id>":
				others = append(others, words[0]+" 1")
			default:
				for _, w := range strings.Split(arg, "|") {
					others = append(others, words[0]+" "+w)
				}
			}
		}
	}
	return shows, others
}

// TestConsoleRights: the console admits admin_users (full rights) and
// stats_users (read-only) and refuses everyone else with a correct
// password; a stats user can run every SHOW but FDS and none of the
// commands SHOW HELP lists, and those attempts change nothing.
func TestConsoleRights(t *testing.T) {
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\nstats_users = alice")
	ctx := context.Background()

	// Signed in correctly, but in neither list: refused.
	for _, c := range []struct{ user, pw string }{{"bob", "bob-pw"}, {"carol", "carol-pw"}} {
		conn, err := pgx.Connect(ctx, in.dsn(c.user, c.pw, "pgbouncer"))
		if err == nil {
			conn.Close(ctx)
			t.Fatalf("%s got the console", c.user)
		}
		if code, msg := pgCode(err), pgMessage(err); code != "28000" || msg != "not allowed" {
			t.Errorf("%s: %s %q, want 28000 \"not allowed\"", c.user, code, msg)
		}
	}
	// A wrong password for an admin or stats user: refused before the
	// console (the same answer as for any role).
	for _, u := range []string{"admin", "alice"} {
		if conn, err := pgx.Connect(ctx, in.dsn(u, "wrong", "pgbouncer")); err == nil {
			conn.Close(ctx)
			t.Fatalf("%s with a wrong password got the console", u)
		} else if pgCode(err) != "28P01" {
			t.Errorf("%s with a wrong password: %v", u, err)
		}
	}

	admin := in.connect(t, "admin", "admin-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	stats := in.connect(t, "alice", "alice-pw", "pgbouncer", "default_query_exec_mode=simple_protocol")
	client := in.connect(t, "bob", "bob-pw", "app", "default_query_exec_mode=exec")
	queryInt(t, client, "SELECT 1")
	shows, others := consoleCommandsFromHelp(consoleHelp(t, in, "alice", "alice-pw"))
	for _, q := range shows {
		code, msg := consoleErr(stats, q)
		switch {
		case q == "SHOW FDS":
			if code != "08P01" || msg != "admin access needed" {
				t.Errorf("%s as a stats user: %s %q", q, code, msg)
			}
		case msg != "":
			t.Errorf("%s as a stats user: %s %q", q, code, msg)
		}
	}
	for _, q := range others {
		if code, msg := consoleErr(stats, q); code != "08P01" || msg != "admin access needed" {
			t.Errorf("%s as a stats user: %s %q, want 08P01 \"admin access needed\"", q, code, msg)
		}
	}
	if len(others) < 15 {
		t.Errorf("only %d commands from SHOW HELP: %q", len(others), others)
	}
	// Nothing changed: not paused or suspended, settings as before, the
	// client still served, the stats user still not an admin.
	if s := stateOf(t, admin); s != "active" {
		t.Errorf("state after the stats user's attempts: %q", s)
	}
	_, _, rows := consoleResult(t, admin, "SHOW CONFIG")
	conf := map[string]map[string]string{}
	for _, r := range rows {
		conf[r["key"]] = r
	}
	if r := conf["default_pool_size"]; r["value"] != r["default"] {
		t.Errorf("default_pool_size changed to %s", r["value"])
	}
	if conf["admin_users"]["value"] != "admin" || conf["stats_users"]["value"] != "alice" {
		t.Errorf("admin_users %q, stats_users %q", conf["admin_users"]["value"], conf["stats_users"]["value"])
	}
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Ping(ctx2); err != nil {
		t.Errorf("the client after the stats user's attempts: %v", err)
	}
	// The admin may do what the stats user may not.
	consoleOK(t, admin, "PAUSE app")
	consoleOK(t, admin, "RESUME app")
	consoleOK(t, admin, "SHOW FDS")
	var pe *pgconn.PgError
	if _, err := stats.Exec(ctx, "SHOW FDS"); !errors.As(err, &pe) {
		t.Errorf("SHOW FDS as stats: %v", err)
	}
}
