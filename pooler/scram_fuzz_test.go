package pooler

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
)

// FuzzClientSCRAM is the client leg of SCRAM-SHA-256 (auth_type =
// scram-sha-256) with a client that sends anything as its
// SASLInitialResponse (first: mechanism, length, client-first-message) and
// SASLResponse (final) bodies. The harness frames them and puts the
// exchange's nonce in place of "{nonce}"; a final body of exactly
// "{proof}" is replaced by the right client-final-message, computed from
// the user's password and what the client and the pooler said, so that the
// fuzzer also walks the successful path. user picks carol (a SCRAM secret
// in userlist.txt), alice (a plain-text one), bob (an md5 secret, which
// cannot do SCRAM) or an unknown user (the mock exchange).
//
// Checked, beyond FuzzStartup's checks: the sign-in never succeeds without
// the right proof (the pooler then goes on to log in to the server, which
// fails with "server login failed"); refusals are 28P01 or 08P01.
//
//	go test -run '^$' -fuzz '^FuzzClientSCRAM$' ./pooler/
func FuzzClientSCRAM(f *testing.F) {
	env := newStartupEnv(f)
	cfg := env.cfgs[0] // auth_type = scram-sha-256
	zeros := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	initial := func(mech, data string) []byte {
		return append(append(cstr(mech), be32(len(data))...), data...)
	}
	seeds := []struct {
		first, final string
		user         uint8
	}{
		{string(initial("SCRAM-SHA-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO")), "{proof}", 0},
		{string(initial("SCRAM-SHA-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO")), "{proof}", 1},
		{string(initial("SCRAM-SHA-256", "y,,n=carol,r=abc")), "{proof}", 0},
		{string(initial("SCRAM-SHA-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO")), "c=biws,r={nonce},p=" + zeros, 0},
		{string(initial("SCRAM-SHA-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO")), "c=biws,r={nonce},p=" + zeros, 2},
		{string(initial("SCRAM-SHA-256", "n,,n=,r=rOprNGfwEbeRWgbNEkqO")), "c=biws,r={nonce},p=" + zeros, 3},
		{string(initial("SCRAM-SHA-256", "n,,n=,r=x,ext=1")), "c=biws,r={nonce},e=x,p=" + zeros, 0},
		{string(initial("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc")), "", 0},
		{string(initial("SCRAM-SHA-256", "p=tls-unique,,n=,r=abc")), "c=cD10bHMtdW5pcXVlLCw=,r={nonce},p=" + zeros, 0},
		{string(append(cstr("SCRAM-SHA-256"), be32(-1)...)), "", 0},
		{string(append(cstr("SCRAM-SHA-256"), be32(1<<30)...)), "", 0},
		{"SCRAM-SHA-256", "", 0},
		{string(initial("SCRAM-SHA-256", "n,a=admin,n=,r=abc")), "c=biws,r={nonce},p=" + zeros, 0},
		{string(initial("SCRAM-SHA-256", "n,,m=ext,n=,r=abc")), "c=biws", 0},
		{string(initial("SCRAM-SHA-256", "n,,n=,r=abc")), "c=biws,r={nonce}", 0},
		{string(initial("SCRAM-SHA-256", "n,,n=,r=abc")), "c=biws,r={nonce},p=" + zeros + ",x=1", 0},
	}
	for _, s := range seeds {
		f.Add([]byte(s.first), []byte(s.final), s.user)
	}
	users := []struct{ name, password string }{
		{"carol", fuzzCarolPw}, {"alice", fuzzAlicePw}, {"bob", fuzzBobPw}, {"nobody", "x"},
	}
	f.Fuzz(func(t *testing.T, first, final []byte, user uint8) {
		defer fuzzwatch.Watchdog(0, "FuzzClientSCRAM")()
		u := users[int(user)%len(users)]
		done := allocGuard(t)
		s := env.server(t, cfg)
		c := env.client(t, s)
		data := startupPacket("user", u.name, "database", "app")
		data = append(data, fuzzMessage('p', first)...)
		data = append(data, fuzzMessage('p', final)...)
		proofAsked := string(final) == "{proof}"
		proof := func(serverFirst []byte) []byte {
			return scramClientFinal(u.password, first, serverFirst)
		}
		st := runStartupClient(t, c, data, false, proof)
		s.wg.Wait()
		done()
		if st.ready || st.authOK {
			t.Fatalf("signed in without a server: %+v", st)
		}
		passed := strings.HasPrefix(st.fatalMsg, "server login failed")
		if passed && !proofAsked {
			t.Fatalf("signed in as %s without the proof: %+v", u.name, st)
		}
		if passed && u.name != "carol" && u.name != "alice" {
			t.Fatalf("%s signed in with SCRAM: %+v", u.name, st)
		}
		if !passed && st.fatal != "" && st.fatal != "28P01" && st.fatal != "08P01" {
			t.Fatalf("refused with SQLSTATE %s: %s", st.fatal, st.fatalMsg)
		}
	})
}

// scramClientFinal computes the client-final-message a client with
// password sends after the SASLInitialResponse body first (as the fuzz
// client sent it) and the pooler's server-first-message; nil when either
// is not what a client could go on from.
func scramClientFinal(password string, first, serverFirst []byte) []byte {
	// first: mechanism, NUL, length, client-first-message.
	i := bytes.IndexByte(first, 0)
	if i < 0 || len(first) < i+5 {
		return nil
	}
	cf := string(first[i+5:])
	// gs2-header: two comma-separated fields and a comma.
	a := strings.IndexByte(cf, ',')
	if a < 0 {
		return nil
	}
	b := strings.IndexByte(cf[a+1:], ',')
	if b < 0 {
		return nil
	}
	gs2, bare := cf[:a+1+b+1], cf[a+1+b+1:]
	var nonce, salt string
	iter := 0
	for _, f := range strings.Split(string(serverFirst), ",") {
		switch {
		case strings.HasPrefix(f, "r="):
			nonce = f[2:]
		case strings.HasPrefix(f, "s="):
			salt = f[2:]
		case strings.HasPrefix(f, "i="):
			iter, _ = strconv.Atoi(f[2:])
		}
	}
	saltB, err := base64.StdEncoding.DecodeString(salt)
	if err != nil || iter < 1 || iter > 100000 {
		return nil
	}
	salted, err := pbkdf2.Key(sha256.New, password, saltB, iter, 32)
	if err != nil {
		return nil
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(gs2)) + ",r=" + nonce
	sig := mac(stored[:], bare+","+string(serverFirst)+","+withoutProof)
	for i := range sig {
		sig[i] ^= clientKey[i]
	}
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(sig))
}

// TestClientSCRAMProof checks the harness of FuzzClientSCRAM: with
// "{proof}", carol and alice get past the sign-in (to the server login,
// which fails: there is no server), so the fuzzer starts from a successful
// exchange; a wrong proof is refused.
func TestClientSCRAMProof(t *testing.T) {
	env := newStartupEnv(t)
	first := append(append(cstr("SCRAM-SHA-256"), be32(len("n,,n=,r=abc"))...), "n,,n=,r=abc"...)
	for _, tc := range []struct {
		user, password, final string
		pass                  bool
	}{
		{"carol", fuzzCarolPw, "{proof}", true},
		{"alice", fuzzAlicePw, "{proof}", true},
		{"carol", "wrong", "{proof}", false},
		{"nobody", "x", "{proof}", false},
	} {
		t.Run(tc.user, func(t *testing.T) {
			s := env.server(t, env.cfgs[0])
			data := append(startupPacket("user", tc.user, "database", "app"), fuzzMessage('p', first)...)
			data = append(data, fuzzMessage('p', []byte(tc.final))...)
			st := runStartupClient(t, env.client(t, s), data, false, func(sf []byte) []byte { return scramClientFinal(tc.password, first, sf) })
			if passed := strings.HasPrefix(st.fatalMsg, "server login failed"); passed != tc.pass || (!tc.pass && st.fatal != "28P01") {
				t.Fatalf("%+v", st)
			}
		})
	}
}
