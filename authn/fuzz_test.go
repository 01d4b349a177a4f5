package authn

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
)

var fuzzSecret = sync.OnceValue(func() SCRAMSecret {
	return NewSCRAMSecret("pencil", []byte("0123456789abcdef"), 16)
})

// FuzzSCRAMServer feeds arbitrary client-first and client-final messages to
// a SCRAMServer. "{nonce}" in the client-final-message is replaced with the
// nonce of the exchange, so that the fuzzer gets past the nonce check.
func FuzzSCRAMServer(f *testing.F) {
	sec := fuzzSecret()
	zeros := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	seeds := [][2]string{
		{rfcClientFirst, rfcClientFinal},
		{"n,,n=,r=abc", "c=biws,r={nonce},p=" + zeros},
		{"y,,n=*,r=abc,x=1", "c=eSws,r={nonce},y=2,p=" + zeros},
		{"p=tls-server-end-point,,n=,r=abc", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={nonce},p=" + zeros},
		{"n,a=admin,n=,r=abc", ""},
		{"n,,m=x,n=,r=abc", "c=biws"},
		{"n,,n=,r=abc", "c=biws,r={nonce},p=" + zeros + ",p="},
		{"n,,n=,r=abc", "c=biws,r={nonce}"},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, clientFirst, clientFinal []byte) {
		checkErr := func(err error) {
			if err != nil && errors.Is(err, ErrProtocol) == errors.Is(err, ErrAuthFailed) {
				t.Fatalf("error %v wraps neither or both of ErrProtocol and ErrAuthFailed", err)
			}
		}
		s := NewSCRAMServer(sec)
		first, err := s.ServerFirst(clientFirst)
		checkErr(err)
		if err != nil {
			if first != nil {
				t.Fatalf("ServerFirst returned %q with %v", first, err)
			}
			return
		}
		if !bytes.HasPrefix(first, []byte("r=")) || !bytes.Contains(first, []byte(s.serverNonce+",s=")) {
			t.Fatalf("ServerFirst = %q", first)
		}
		final := bytes.ReplaceAll(clientFinal, []byte("{nonce}"), []byte(s.nonce))
		out, err := s.ServerFinal(final)
		checkErr(err)
		if err != nil {
			if out != nil || s.ClientKey() != nil {
				t.Fatalf("ServerFinal returned %q with %v", out, err)
			}
			return
		}
		stored := sha256.Sum256(s.ClientKey())
		if !bytes.Equal(stored[:], sec.StoredKey) {
			t.Fatalf("ServerFinal accepted %q without the right ClientKey", final)
		}
	})
}

// FuzzSCRAMClient feeds arbitrary server-first and server-final messages to a
// SCRAMClient. It uses passthrough keys, so that a large iteration count
// costs nothing. "{nonce}" is replaced with the client nonce.
func FuzzSCRAMClient(f *testing.F) {
	sec := fuzzSecret()
	seeds := [][2]string{
		{rfcServerFirst, rfcServerFinal},
		{"r={nonce}xyz,s=QUJDRA==,i=4096", "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="},
		{"r={nonce}xyz,s=QUJDRA==,i=4096,x=1", "e=invalid-proof"},
		{"r={nonce}xyz,s=QUJDRA==,i=99999999999", "v="},
		{"m=x,r={nonce}xyz,s=QUJDRA==,i=1", ""},
		{"", ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, serverFirst, serverFinal []byte) {
		checkErr := func(err error) {
			if err != nil && errors.Is(err, ErrProtocol) == errors.Is(err, ErrAuthFailed) {
				t.Fatalf("error %v wraps neither or both of ErrProtocol and ErrAuthFailed", err)
			}
		}
		c := NewSCRAMClientFromKeys(make([]byte, 32), sec.ServerKey)
		c.ClientFirst()
		first := bytes.ReplaceAll(serverFirst, []byte("{nonce}"), []byte(c.nonce))
		final, err := c.ClientFinal(first)
		checkErr(err)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(final, []byte("c=biws,r="+c.nonce)) {
			t.Fatalf("ClientFinal = %q", final)
		}
		checkErr(c.VerifyServerFinal(serverFinal))
	})
}

// FuzzParseSecret checks that ParseSecret never panics and that what it
// parses as SCRAM prints back to text that parses to the same secret (the
// text may differ: base64 with non-zero padding bits is accepted, as by
// PostgreSQL, and printed canonically).
func FuzzParseSecret(f *testing.F) {
	for _, tc := range pgSCRAMSecrets {
		f.Add(tc.secret)
	}
	f.Add("md545f2603610af569b6155c45067268c6b")
	f.Add("SCRAM-SHA-256$4096:$:")
	f.Add("SCRAM-SHA-256$1:0000$0000000000000000000000000000000000000000001=:0000000000000000000000000000000000000000001=")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		sec := ParseSecret(s)
		switch sec.Kind {
		case SecretPlain:
			if sec.Plain != s {
				t.Fatalf("Plain = %q", sec.Plain)
			}
		case SecretMD5:
			if sec.MD5 != s {
				t.Fatalf("MD5 = %q", sec.MD5)
			}
		case SecretSCRAM:
			text := sec.SCRAM.String()
			again := ParseSecret(text)
			if again.Kind != SecretSCRAM || again.SCRAM.String() != text ||
				!bytes.Equal(again.SCRAM.Salt, sec.SCRAM.Salt) || again.SCRAM.Iterations != sec.SCRAM.Iterations ||
				!bytes.Equal(again.SCRAM.StoredKey, sec.SCRAM.StoredKey) || !bytes.Equal(again.SCRAM.ServerKey, sec.SCRAM.ServerKey) {
				t.Fatalf("SCRAM secret %q prints as %q, which parses differently", s, text)
			}
		default:
			t.Fatalf("Kind = %v", sec.Kind)
		}
	})
}
