package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
)

// The configuration parsers' fuzz targets. Each writes its input to a file
// in a fresh directory and loads it the way the binary does (Load), so that
// %include, auth_file and validation run too. Seeds are the files in
// testdata/ plus testdata/fuzz/FuzzXxx.
//
//	go test -run '^$' -fuzz '^FuzzLoadINI$' ./pooler/config/

// fuzzFileSafe reports whether a fuzz input may be loaded: a name that
// reaches a device or a kernel file (%include /dev/zero, auth_file =
// /dev/stdin, ../../proc/kmsg) would make the load block or run forever,
// which says nothing about the parser. Only the administrator writes these
// files.
func fuzzFileSafe(s string) bool {
	for _, bad := range []string{"dev/", "/dev", "proc/", "/proc", "sys/", "/sys"} {
		if strings.Contains(s, bad) {
			return false
		}
	}
	return true
}

func fuzzSeedFiles(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		names, err := filepath.Glob(filepath.Join("testdata", p))
		if err != nil {
			f.Fatal(err)
		}
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// checkLoaded holds for every load: exactly one of the Config and the error
// is set; every problem names the file; Check agrees with Load; a loaded
// Config validates again and every reloadable [pgbouncer] setting can be
// SET back to the value SHOW CONFIG shows for it. (The [entra] keys change
// by RELOAD only, and SET auth_file reads the file, which may be missing:
// Load only warns about that.)
func checkLoaded(t *testing.T, path string) {
	t.Helper()
	cfg, err := Load(path)
	if (cfg == nil) == (err == nil) {
		t.Fatalf("Load returned config %v and error %v", cfg != nil, err)
	}
	checked := Check(path)
	var hard []error
	for _, e := range checked {
		var w Warning
		if errors.As(e, &w) {
			continue
		}
		var p Problem
		if !errors.As(e, &p) {
			t.Fatalf("Check returned %T %v", e, e)
		}
		if p.File == "" || p.Message == "" {
			t.Fatalf("problem without a file or a message: %#v", p)
		}
		hard = append(hard, e)
	}
	if (err != nil) != (len(hard) > 0) {
		t.Fatalf("Load error %v, but Check found %d errors", err, len(hard))
	}
	if err != nil {
		if err.Error() == "" {
			t.Fatal("empty error")
		}
		return
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a loaded config does not validate again: %v", err)
	}
	for _, st := range cfg.Settings {
		// The keys the file set (the others hold their defaults, which
		// the package's tests SET already).
		if !st.Changeable || st.Value == st.Default || strings.HasPrefix(st.Key, "entra.") || st.Key == "auth_file" {
			continue
		}
		if _, err := cfg.WithSetting(st.Key, st.Value); err != nil {
			t.Fatalf("SET %s = %q (the value SHOW CONFIG shows) is refused: %v", st.Key, st.Value, err)
		}
	}
}

// FuzzLoadINI loads arbitrary pgbouncer.ini text.
func FuzzLoadINI(f *testing.F) {
	fuzzSeedFiles(f, "*.ini", "include/*.ini")
	f.Add([]byte("[pgbouncer]\n"))
	f.Add([]byte("[databases]\n* = host=/tmp port=5432 auth_user=x\n[users]\nbob = pool_mode=statement max_user_connections=3\n[pgbouncer]\nauth_type = any\n"))
	f.Add([]byte("[databases]\na = host='h1,h2' port=5432,5433 dbname='x y' load_balance_hosts=round-robin\n[pgbouncer]\nlisten_port=6432\n"))
	f.Add([]byte("[pgbouncer]\n%include pgbouncer.ini\n"))
	f.Add([]byte("[pgbouncer]\nmax_client_conn = 99999999999999999999\nquery_timeout = -1.5\n"))
	dir := f.TempDir()
	path := filepath.Join(dir, "pgbouncer.ini")
	f.Fuzz(func(t *testing.T, data []byte) {
		if !fuzzFileSafe(string(data)) {
			t.Skip()
		}
		defer fuzzwatch.Watchdog(10*time.Second, t.Name())()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		checkLoaded(t, path)
	})
}

// FuzzLoadYAML loads arbitrary pooler.yaml text.
func FuzzLoadYAML(f *testing.F) {
	fuzzSeedFiles(f, "*.yaml")
	f.Add([]byte("databases:\n  app: {host: 127.0.0.1, port: 5432}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("pgbouncer: {pool_mode: 3}\n"))
	f.Add([]byte("---\n...\n---\n"))
	dir := f.TempDir()
	path := filepath.Join(dir, "pooler.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if !fuzzFileSafe(string(data)) {
			t.Skip()
		}
		defer fuzzwatch.Watchdog(10*time.Second, t.Name())()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		checkLoaded(t, path)
	})
}

// FuzzAuthFile parses arbitrary userlist.txt text. What it accepts must
// print back (quotes doubled) to a file that parses to the same users.
func FuzzAuthFile(f *testing.F) {
	fuzzSeedFiles(f, "userlist*.txt")
	f.Add([]byte(`"a""b" "c""""d" trailing`))
	f.Add([]byte("\"multi\nline\" \"x\"\n;comment\n  \"u\" \"\"\n"))
	f.Add([]byte(`"u"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, problems := parseAuthFile("userlist.txt", data)
		if len(problems) > 0 {
			for _, p := range problems {
				if p.Line < 1 || p.Message == "" {
					t.Fatalf("problem %#v", p)
				}
			}
			return
		}
		var b strings.Builder
		for u, s := range users {
			if len(u) > maxAuthUserLen || len(s) > maxAuthSecretLen {
				t.Fatalf("accepted an entry over the limits: %d, %d bytes", len(u), len(s))
			}
			b.WriteString(`"` + strings.ReplaceAll(u, `"`, `""`) + `" "` + strings.ReplaceAll(s, `"`, `""`) + "\"\n")
		}
		again, problems := parseAuthFile("userlist.txt", []byte(b.String()))
		if len(problems) > 0 || len(again) != len(users) {
			t.Fatalf("printed back as %q: %d users, problems %v", b.String(), len(again), problems)
		}
		for u, s := range users {
			if again[u] != s {
				t.Fatalf("user %q: %q printed back reads %q", u, s, again[u])
			}
		}
	})
}
