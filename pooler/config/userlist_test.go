package config

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestLoadAuthFile(t *testing.T) {
	users, err := LoadAuthFile("testdata/userlist.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"postgres": "md545f2603610af569b6155c45067268c6b",
		"monitor":  "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5c3Q=:c2VydmVya2V5c2VydmVya2V5c2VydmVya2V5c2U=",
		`quo"te`:   `pa"ss"`,
		"empty":    "",
	}
	if len(users) != len(want) {
		t.Errorf("got %d users, want %d: %q", len(users), len(want), users)
	}
	for u, s := range want {
		if got, ok := users[u]; !ok || got != s {
			t.Errorf("%q: got %q (present %v), want %q", u, got, ok, s)
		}
	}
}

func TestLoadAuthFileBroken(t *testing.T) {
	_, err := LoadAuthFile("testdata/userlist_broken.txt")
	if err == nil {
		t.Fatal("broken file accepted")
	}
	ps := problems(t, err)
	wantProblem(t, ps, 2, "testdata/userlist_broken.txt:2: broken auth file")
	wantProblem(t, ps, 3, "testdata/userlist_broken.txt:3: broken auth file")
	if len(ps) != 2 {
		t.Errorf("got %d problems: %v", len(ps), err)
	}
}

func TestLoadAuthFileMissing(t *testing.T) {
	_, err := LoadAuthFile("testdata/nope.txt")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestAuthFileCases(t *testing.T) {
	long := strings.Repeat("eyJ0eXAiOiJKV1Qi", 640) // 10240 bytes, an Entra-token-sized secret
	tests := []struct {
		name    string
		content string
		want    map[string]string
		wantErr string
	}{
		{"10 KB secret", `"entra" "` + long + "\"\n", map[string]string{"entra": long}, ""},
		{"64 KiB secret", `"big" "` + strings.Repeat("x", 64*1024) + `"`, map[string]string{"big": strings.Repeat("x", 64*1024)}, ""},
		{"too long secret", `"big" "` + strings.Repeat("x", 64*1024+1) + `"`, nil, "secret too long"},
		{"too long user", `"` + strings.Repeat("u", 128) + `" "x"`, nil, "user name too long"},
		{"escapes", `"a""b" """"`, map[string]string{`a"b`: `"`}, ""},
		{"blank lines and indent", "\n\n   \t\"a\" \"1\"\r\n\n\"b\" \"2\"", map[string]string{"a": "1", "b": "2"}, ""},
		{"later entry wins", "\"a\" \"1\"\n\"a\" \"2\"\n", map[string]string{"a": "2"}, ""},
		{"comment", ";\"a\" \"1\"\n\"b\" \"2\"", map[string]string{"b": "2"}, ""},
		{"hash is not a comment", "# x\n", nil, ":1: broken auth file"},
		{"unterminated user", `"a`, nil, "unterminated user name"},
		{"no secret", `"a"`, nil, "no secret"},
		{"unterminated secret", `"a" "b`, nil, "unterminated secret"},
		{"empty file", "", map[string]string{}, ""},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, "u.txt", tt.content)
			got, err := LoadAuthFile(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d users, want %d", len(got), len(tt.want))
			}
			for u, s := range tt.want {
				if got[u] != s {
					t.Errorf("%q: got %d bytes, want %d", u, len(got[u]), len(s))
				}
			}
		})
	}
}

func TestAuthFileLoadedWithINI(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "users.txt", "broken\n")
	p := writeFile(t, dir, "p.ini", "[pgbouncer]\nauth_file = "+dir+"/users.txt\n")
	_, err := LoadINI(p)
	if err == nil || !strings.Contains(err.Error(), "users.txt:1: broken auth file") {
		t.Fatalf("err = %v", err)
	}

	// A missing auth file is only a warning.
	p = writeFile(t, dir, "q.ini", "[pgbouncer]\nauth_file = missing.txt\n")
	c, err := LoadINI(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Error(), `q.ini:2: auth_file: auth_file "missing.txt" not found; no user can sign in with a password`) {
		t.Errorf("warnings: %v", c.Warnings)
	}
}
