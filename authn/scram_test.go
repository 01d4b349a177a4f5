package authn

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// RFC 7677, section 3: SCRAM-SHA-256 with user "user" and password "pencil".
const (
	rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcSalt        = "W22ZaJ0SNY7soEsUEjb6gQ=="
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func rfcSecret(t testing.TB) SCRAMSecret {
	t.Helper()
	salt, err := base64.StdEncoding.DecodeString(rfcSalt)
	if err != nil {
		t.Fatal(err)
	}
	return NewSCRAMSecret("pencil", salt, 4096)
}

func TestSCRAMServerRFC7677(t *testing.T) {
	s := NewSCRAMServer(rfcSecret(t))
	s.serverNonce = rfcServerNonce
	got, err := s.ServerFirst([]byte(rfcClientFirst))
	if err != nil || string(got) != rfcServerFirst {
		t.Fatalf("ServerFirst = %q, %v; want %q", got, err, rfcServerFirst)
	}
	if ck := s.ClientKey(); ck != nil {
		t.Errorf("ClientKey before ServerFinal = %x, want nil", ck)
	}
	got, err = s.ServerFinal([]byte(rfcClientFinal))
	if err != nil || string(got) != rfcServerFinal {
		t.Fatalf("ServerFinal = %q, %v; want %q", got, err, rfcServerFinal)
	}

	// The recovered ClientKey is HMAC(SaltedPassword, "Client Key").
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	salted, err := pbkdf2.Key(sha256.New, "pencil", salt, 4096, 32)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, salted)
	mac.Write([]byte("Client Key"))
	if want, got := mac.Sum(nil), s.ClientKey(); !bytes.Equal(got, want) {
		t.Errorf("ClientKey = %x, want %x", got, want)
	}
	// ClientKey returns a copy.
	s.ClientKey()[0] ^= 0xff
	if !bytes.Equal(s.ClientKey(), mac.Sum(nil)) {
		t.Errorf("ClientKey does not return a copy")
	}
}

func TestSCRAMClientRFC7677(t *testing.T) {
	c := NewSCRAMClient("pencil")
	c.user = "user"
	c.nonce = rfcClientNonce
	if got := string(c.ClientFirst()); got != rfcClientFirst {
		t.Fatalf("ClientFirst = %q, want %q", got, rfcClientFirst)
	}
	got, err := c.ClientFinal([]byte(rfcServerFirst))
	if err != nil || string(got) != rfcClientFinal {
		t.Fatalf("ClientFinal = %q, %v; want %q", got, err, rfcClientFinal)
	}
	if err := c.VerifyServerFinal([]byte(rfcServerFinal)); err != nil {
		t.Fatalf("VerifyServerFinal: %v", err)
	}
}

func TestSCRAMClientFirst(t *testing.T) {
	c := NewSCRAMClient("pencil")
	first := string(c.ClientFirst())
	nonce, ok := strings.CutPrefix(first, "n,,n=,r=")
	if !ok || len(nonce) != 24 || !isPrintable(nonce) {
		t.Fatalf("ClientFirst = %q, want n,,n=,r=<24 printable characters>", first)
	}
	if again := string(c.ClientFirst()); again != first {
		t.Errorf("second ClientFirst = %q, want %q", again, first)
	}
	if other := string(NewSCRAMClient("pencil").ClientFirst()); other == first {
		t.Errorf("two clients share the nonce %q", nonce)
	}
}

// exchange runs a whole exchange between c and s. It returns the error of
// the server (ServerFinal) and of the client (VerifyServerFinal).
func exchange(t *testing.T, c *SCRAMClient, s *SCRAMServer) (serverErr, clientErr error) {
	t.Helper()
	first, err := s.ServerFirst(c.ClientFirst())
	if err != nil {
		t.Fatalf("ServerFirst: %v", err)
	}
	final, err := c.ClientFinal(first)
	if err != nil {
		t.Fatalf("ClientFinal: %v", err)
	}
	serverFinal, serverErr := s.ServerFinal(final)
	if serverErr != nil {
		if serverFinal != nil {
			t.Errorf("ServerFinal returned %q with error %v", serverFinal, serverErr)
		}
		return serverErr, nil
	}
	return nil, c.VerifyServerFinal(serverFinal)
}

func TestSCRAMRoundTrip(t *testing.T) {
	for _, pw := range []string{"pencil", "p\u00e4ssw\u00f6rd", "\ufb01x", " ", "\u05d0\u05d1"} {
		sec := NewSCRAMSecret(pw, []byte("0123456789abcdef"), 4096)
		if serr, cerr := exchange(t, NewSCRAMClient(pw), NewSCRAMServer(sec)); serr != nil || cerr != nil {
			t.Errorf("%+q: server %v, client %v", pw, serr, cerr)
		}
		serr, _ := exchange(t, NewSCRAMClient(pw+"x"), NewSCRAMServer(sec))
		if !errors.Is(serr, ErrAuthFailed) || errors.Is(serr, ErrProtocol) {
			t.Errorf("%+q: wrong password gives %v, want ErrAuthFailed", pw, serr)
		}
		if strings.Contains(serr.Error(), pw+"x") {
			t.Errorf("error %q contains the password", serr)
		}
	}
	// SASLprep-equivalent passwords sign in.
	sec := NewSCRAMSecret("\ufb01x", []byte("0123456789abcdef"), 4096)
	if serr, cerr := exchange(t, NewSCRAMClient("fix"), NewSCRAMServer(sec)); serr != nil || cerr != nil {
		t.Errorf("equivalent password: server %v, client %v", serr, cerr)
	}
}

func TestSCRAMServerFromPlain(t *testing.T) {
	s := NewSCRAMServerFromPlain("pencil", 0)
	if s.secret.Iterations != DefaultSCRAMIterations || len(s.secret.Salt) != 16 {
		t.Errorf("iterations %d, %d-byte salt", s.secret.Iterations, len(s.secret.Salt))
	}
	if serr, cerr := exchange(t, NewSCRAMClient("pencil"), s); serr != nil || cerr != nil {
		t.Errorf("server %v, client %v", serr, cerr)
	}
	if serr, _ := exchange(t, NewSCRAMClient("Pencil"), NewSCRAMServerFromPlain("pencil", 4096)); !errors.Is(serr, ErrAuthFailed) {
		t.Errorf("wrong password gives %v, want ErrAuthFailed", serr)
	}
	a, b := NewSCRAMServerFromPlain("pencil", 1), NewSCRAMServerFromPlain("pencil", 1)
	if bytes.Equal(a.secret.Salt, b.secret.Salt) {
		t.Errorf("two servers share the salt")
	}
}

func TestSCRAMPassthrough(t *testing.T) {
	sec := ParseSecret(pgSCRAMSecrets[1].secret).SCRAM // PostgreSQL's, password "pencil"

	// A client signs in to the pooler...
	front := NewSCRAMServer(sec)
	if serr, cerr := exchange(t, NewSCRAMClient("pencil"), front); serr != nil || cerr != nil {
		t.Fatalf("client to pooler: server %v, client %v", serr, cerr)
	}
	clientKey := front.ClientKey()
	if len(clientKey) != 32 {
		t.Fatalf("ClientKey = %x", clientKey)
	}

	// ...and the pooler signs in to servers storing the same secret, as many
	// times as it needs.
	for i := range 2 {
		c := NewSCRAMClientFromKeys(clientKey, sec.ServerKey)
		if serr, cerr := exchange(t, c, NewSCRAMServer(sec)); serr != nil || cerr != nil {
			t.Fatalf("pooler to server #%d: server %v, client %v", i, serr, cerr)
		}
	}

	// A server with another secret for the same password (other salt)
	// rejects the proof.
	other := NewSCRAMSecret("pencil", []byte("another salt 123"), 4096)
	if serr, _ := exchange(t, NewSCRAMClientFromKeys(clientKey, sec.ServerKey), NewSCRAMServer(other)); !errors.Is(serr, ErrAuthFailed) {
		t.Errorf("other salt: server gives %v, want ErrAuthFailed", serr)
	}

	// A server that does not know ServerKey cannot fake the server signature.
	c := NewSCRAMClientFromKeys(clientKey, other.ServerKey)
	if _, cerr := exchange(t, c, NewSCRAMServer(sec)); !errors.Is(cerr, ErrAuthFailed) {
		t.Errorf("wrong ServerKey: client gives %v, want ErrAuthFailed", cerr)
	}

	// The keys are copied.
	c = NewSCRAMClientFromKeys(clientKey, sec.ServerKey)
	clientKey[0] ^= 0xff
	if serr, cerr := exchange(t, c, NewSCRAMServer(sec)); serr != nil || cerr != nil {
		t.Errorf("keys not copied: server %v, client %v", serr, cerr)
	}

	// Unusable keys.
	c = NewSCRAMClientFromKeys(clientKey[:16], sec.ServerKey)
	first, err := NewSCRAMServer(sec).ServerFirst(c.ClientFirst())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClientFinal(first); err == nil || errors.Is(err, ErrProtocol) || errors.Is(err, ErrAuthFailed) {
		t.Errorf("short ClientKey: ClientFinal error %v", err)
	}
}

func TestMockSCRAMServer(t *testing.T) {
	first := func(s *SCRAMServer) string {
		out, err := s.ServerFirst([]byte("n,,n=,r=abc"))
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	salt := func(serverFirst string) string {
		return strings.Split(serverFirst, ",")[1]
	}
	a1, a2 := first(NewMockSCRAMServer("ghost", 4096)), first(NewMockSCRAMServer("ghost", 4096))
	b := first(NewMockSCRAMServer("spirit", 0))
	if salt(a1) != salt(a2) {
		t.Errorf("mock salt for one user varies: %s, %s", salt(a1), salt(a2))
	}
	if salt(a1) == salt(b) {
		t.Errorf("mock salt is the same for two users")
	}
	if raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(salt(a1), "s=")); err != nil || len(raw) != 16 {
		t.Errorf("mock salt %s: %d bytes, %v", salt(a1), len(raw), err)
	}
	if !strings.HasSuffix(a1, ",i=4096") || !strings.HasSuffix(b, ",i=4096") {
		t.Errorf("mock server-first-messages %q, %q", a1, b)
	}

	for _, pw := range []string{"", "pencil", "ghost"} {
		s := NewMockSCRAMServer("ghost", 4096)
		serr, _ := exchange(t, NewSCRAMClient(pw), s)
		if serr != ErrAuthFailed {
			t.Errorf("mock server with password %q: %v, want ErrAuthFailed", pw, serr)
		}
		if s.ClientKey() != nil {
			t.Errorf("mock server has a ClientKey")
		}
	}

	// A mock fails even when the proof is right.
	s := NewSCRAMServer(rfcSecret(t))
	s.mock = true
	if serr, _ := exchange(t, NewSCRAMClient("pencil"), s); serr != ErrAuthFailed {
		t.Errorf("mock server, right proof: %v, want ErrAuthFailed", serr)
	}

	// Protocol errors are still reported as such.
	s = NewMockSCRAMServer("ghost", 4096)
	s.ServerFirst([]byte("n,,n=,r=abc"))
	if _, err := s.ServerFinal([]byte("c=biws,r=abc,p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))); !errors.Is(err, ErrProtocol) {
		t.Errorf("mock server, wrong nonce: %v, want ErrProtocol", err)
	}
}

func TestSCRAMServerUnusableSecret(t *testing.T) {
	good := rfcSecret(t)
	for name, sec := range map[string]SCRAMSecret{
		"zero":          {},
		"no iterations": {Salt: good.Salt, StoredKey: good.StoredKey, ServerKey: good.ServerKey},
		"no salt":       {Iterations: 4096, StoredKey: good.StoredKey, ServerKey: good.ServerKey},
		"short key":     {Iterations: 4096, Salt: good.Salt, StoredKey: good.StoredKey[:31], ServerKey: good.ServerKey},
	} {
		_, err := NewSCRAMServer(sec).ServerFirst([]byte(rfcClientFirst))
		if err == nil || errors.Is(err, ErrProtocol) || errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s: ServerFirst error %v, want a configuration error", name, err)
		}
	}
}

// proofFor computes the client-final-message for the given exchange, with
// extra attributes before the proof.
func proofFor(password string, sec SCRAMSecret, clientFirstBare, serverFirst, withoutProof string) string {
	clientKey, _ := scramKeys([]byte(password), sec.Salt, sec.Iterations)
	stored := sha256.Sum256(clientKey)
	sig := hmacSHA256(stored[:], []byte(clientFirstBare+","+serverFirst+","+withoutProof))
	for i := range sig {
		sig[i] ^= clientKey[i]
	}
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(sig)
}

func TestSCRAMServerAcceptsVariants(t *testing.T) {
	sec := NewSCRAMSecret("pencil", []byte("0123456789abcdef"), 16)
	tests := []struct{ name, clientFirst, cbind, extra string }{
		{"username ignored", "n,,n=someone else,r=abc", "biws", ""},
		{"star username", "n,,n=*,r=abc", "biws", ""},
		{"y flag", "y,,n=,r=abc", "eSws", ""},
		{"extensions", "n,,n=,r=abc,x=1,Y=", "biws", ",z=2"},
	}
	for _, tc := range tests {
		s := NewSCRAMServer(sec)
		first, err := s.ServerFirst([]byte(tc.clientFirst))
		if err != nil {
			t.Errorf("%s: ServerFirst: %v", tc.name, err)
			continue
		}
		bare := tc.clientFirst[strings.Index(tc.clientFirst, ",,")+2:]
		final := proofFor("pencil", sec, bare, string(first), "c="+tc.cbind+",r="+s.nonce+tc.extra)
		if _, err := s.ServerFinal([]byte(final)); err != nil {
			t.Errorf("%s: ServerFinal(%q): %v", tc.name, final, err)
		}
	}
}

func TestSCRAMServerMalformedClientFirst(t *testing.T) {
	sec := NewSCRAMSecret("pencil", []byte("0123456789abcdef"), 16)
	tests := []string{
		"",
		"n",
		"n,",
		"n,,",
		"n,,n=",
		"n,,n=,",
		"n,,n=,r=",
		"n,,n=,r=a b",
		"n,,n=,r=ab\x7f",
		"n,,n=,r=ab\xc3\xa4",
		"n,,n=,r=abc\x00",
		"n,,n=,r=abc,",
		"n,,n=,r=abc,1=x",
		"n,,n=,r=abc,x",
		"n,,n=,r=abc,=x",
		"n,,r=abc",
		"n,,r=abc,n=",
		"n,,m=ext,n=,r=abc",
		"n,a=admin,n=,r=abc",
		"n,admin,n=,r=abc",
		"p=tls-server-end-point,,n=,r=abc",
		"p,,n=,r=abc",
		"x,,n=,r=abc",
		"N,,n=,r=abc",
		",,n=,r=abc",
		"n,,n=,r=" + strings.Repeat("a", maxSCRAMMessageLen),
		"\x00",
	}
	for _, msg := range tests {
		s := NewSCRAMServer(sec)
		out, err := s.ServerFirst([]byte(msg))
		if !errors.Is(err, ErrProtocol) || out != nil {
			t.Errorf("ServerFirst(%q) = %q, %v; want ErrProtocol", msg, out, err)
			continue
		}
		// The exchange is over.
		if _, err := s.ServerFirst([]byte("n,,n=,r=abc")); !errors.Is(err, ErrProtocol) {
			t.Errorf("ServerFirst after error: %v, want ErrProtocol", err)
		}
	}
}

func TestSCRAMServerMalformedClientFinal(t *testing.T) {
	sec := NewSCRAMSecret("pencil", []byte("0123456789abcdef"), 16)
	zeros := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		name, msg string
		want      error
	}{
		{"empty", "", ErrProtocol},
		{"only cbind", "c=biws", ErrProtocol},
		{"no proof", "c=biws,r={nonce}", ErrProtocol},
		{"no proof, extension", "c=biws,r={nonce},x=1", ErrProtocol},
		{"no cbind", "r={nonce},p=" + zeros, ErrProtocol},
		{"order", "r={nonce},c=biws,p=" + zeros, ErrProtocol},
		{"y cbind after n", "c=eSws,r={nonce},p=" + zeros, ErrProtocol},
		{"channel binding data", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsAAAA,r={nonce},p=" + zeros, ErrProtocol},
		{"bad cbind base64", "c=bi!s,r={nonce},p=" + zeros, ErrProtocol},
		{"wrong nonce", "c=biws,r=abc,p=" + zeros, ErrProtocol},
		{"nonce prefix", "c=biws,r={nonce}x,p=" + zeros, ErrProtocol},
		{"empty nonce", "c=biws,r=,p=" + zeros, ErrProtocol},
		{"bad proof base64", "c=biws,r={nonce},p=!!!!", ErrProtocol},
		{"unpadded proof", "c=biws,r={nonce},p=" + strings.TrimRight(zeros, "="), ErrProtocol},
		{"short proof", "c=biws,r={nonce},p=AAAA", ErrProtocol},
		{"long proof", "c=biws,r={nonce},p=" + base64.StdEncoding.EncodeToString(make([]byte, 33)), ErrProtocol},
		{"empty proof", "c=biws,r={nonce},p=", ErrProtocol},
		{"proof not last", "c=biws,r={nonce},p=" + zeros + ",x=1", ErrProtocol},
		{"two proofs", "c=biws,r={nonce},p=" + zeros + ",p=" + zeros, ErrProtocol},
		{"bad extension", "c=biws,r={nonce},1=x,p=" + zeros, ErrProtocol},
		{"trailing comma", "c=biws,r={nonce},p=" + zeros + ",", ErrProtocol},
		{"NUL", "c=biws,r={nonce},p=" + zeros + "\x00", ErrProtocol},
		{"wrong proof", "c=biws,r={nonce},p=" + zeros, ErrAuthFailed},
		{"wrong proof, extension", "c=biws,r={nonce},x=1,p=" + zeros, ErrAuthFailed},
	}
	for _, tc := range tests {
		s := NewSCRAMServer(sec)
		if _, err := s.ServerFirst([]byte("n,,n=,r=abc")); err != nil {
			t.Fatal(err)
		}
		msg := strings.ReplaceAll(tc.msg, "{nonce}", s.nonce)
		out, err := s.ServerFinal([]byte(msg))
		if !errors.Is(err, tc.want) || out != nil {
			t.Errorf("%s: ServerFinal(%q) = %q, %v; want %v", tc.name, msg, out, err, tc.want)
		}
		if tc.want == ErrProtocol && errors.Is(err, ErrAuthFailed) || tc.want == ErrAuthFailed && errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v wraps both errors", tc.name, err)
		}
		if s.ClientKey() != nil {
			t.Errorf("%s: ClientKey after failure", tc.name)
		}
		// The exchange is over.
		if _, err := s.ServerFinal([]byte(msg)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: ServerFinal again: %v, want ErrProtocol", tc.name, err)
		}
	}
}

func TestSCRAMServerSequence(t *testing.T) {
	s := NewSCRAMServer(rfcSecret(t))
	if _, err := s.ServerFinal([]byte(rfcClientFinal)); !errors.Is(err, ErrProtocol) {
		t.Errorf("ServerFinal first: %v, want ErrProtocol", err)
	}
	s = NewSCRAMServer(rfcSecret(t))
	s.serverNonce = rfcServerNonce
	if _, err := s.ServerFirst([]byte(rfcClientFirst)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ServerFirst([]byte(rfcClientFirst)); !errors.Is(err, ErrProtocol) {
		t.Errorf("ServerFirst twice: %v, want ErrProtocol", err)
	}
	if _, err := s.ServerFinal([]byte(rfcClientFinal)); !errors.Is(err, ErrProtocol) {
		t.Errorf("ServerFinal after a failed ServerFirst: %v, want ErrProtocol", err)
	}
	s = NewSCRAMServer(rfcSecret(t))
	s.serverNonce = rfcServerNonce
	s.ServerFirst([]byte(rfcClientFirst))
	if _, err := s.ServerFinal([]byte(rfcClientFinal)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ServerFinal([]byte(rfcClientFinal)); !errors.Is(err, ErrProtocol) {
		t.Errorf("ServerFinal twice: %v, want ErrProtocol", err)
	}
}

func TestSCRAMClientMalformedServerFirst(t *testing.T) {
	tests := []struct{ name, msg string }{
		{"empty", ""},
		{"NUL", "r={nonce}xyz,s=QUJDRA==,i=4096\x00"},
		{"no salt", "r={nonce}xyz"},
		{"no iterations", "r={nonce}xyz,s=QUJDRA=="},
		{"order", "s=QUJDRA==,r={nonce}xyz,i=4096"},
		{"mandatory extension", "m=x,r={nonce}xyz,s=QUJDRA==,i=4096"},
		{"wrong nonce", "r=abcdefxyz,s=QUJDRA==,i=4096"},
		{"nonce not extended", "r={nonce},s=QUJDRA==,i=4096"},
		{"nonce truncated", "r={short},s=QUJDRA==,i=4096"},
		{"nonce with space", "r={nonce}x z,s=QUJDRA==,i=4096"},
		{"nonce with DEL", "r={nonce}x\x7f,s=QUJDRA==,i=4096"},
		{"bad salt", "r={nonce}xyz,s=QUJD!A==,i=4096"},
		{"empty salt", "r={nonce}xyz,s=,i=4096"},
		{"zero iterations", "r={nonce}xyz,s=QUJDRA==,i=0"},
		{"negative iterations", "r={nonce}xyz,s=QUJDRA==,i=-1"},
		{"huge iterations", "r={nonce}xyz,s=QUJDRA==,i=10000001"},
		{"overflowing iterations", "r={nonce}xyz,s=QUJDRA==,i=99999999999999999999999"},
		{"iterations with garbage", "r={nonce}xyz,s=QUJDRA==,i=4096x"},
		{"empty iterations", "r={nonce}xyz,s=QUJDRA==,i="},
		{"bad extension", "r={nonce}xyz,s=QUJDRA==,i=4096,junk"},
		{"trailing comma", "r={nonce}xyz,s=QUJDRA==,i=4096,"},
	}
	for _, tc := range tests {
		c := NewSCRAMClient("pencil")
		c.ClientFirst()
		msg := strings.ReplaceAll(tc.msg, "{nonce}", c.nonce)
		msg = strings.ReplaceAll(msg, "{short}", c.nonce[:len(c.nonce)-1])
		start := time.Now()
		out, err := c.ClientFinal([]byte(msg))
		if !errors.Is(err, ErrProtocol) || out != nil {
			t.Errorf("%s: ClientFinal(%q) = %q, %v; want ErrProtocol", tc.name, msg, out, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: ClientFinal took %v", tc.name, d)
		}
		if err := c.VerifyServerFinal([]byte(rfcServerFinal)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: VerifyServerFinal after error: %v, want ErrProtocol", tc.name, err)
		}
	}

	// Accepted: extensions after the iteration count.
	c := NewSCRAMClient("pencil")
	c.ClientFirst()
	if _, err := c.ClientFinal([]byte("r=" + c.nonce + "xyz,s=QUJDRA==,i=1,x=whatever")); err != nil {
		t.Errorf("extension: %v", err)
	}
}

func TestSCRAMClientServerFinal(t *testing.T) {
	newClient := func() *SCRAMClient {
		c := NewSCRAMClient("pencil")
		c.user = "user"
		c.nonce = rfcClientNonce
		c.ClientFirst()
		if _, err := c.ClientFinal([]byte(rfcServerFirst)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name, msg string
		want      error
		text      string
	}{
		{"ok with extension", rfcServerFinal + ",x=1", nil, ""},
		{"empty", "", ErrProtocol, ""},
		{"no verifier", "x=1", ErrProtocol, ""},
		{"bad base64", "v=!!!", ErrProtocol, ""},
		{"short", "v=AAAA", ErrProtocol, ""},
		{"empty verifier", "v=", ErrProtocol, ""},
		{"bad extension", rfcServerFinal + ",junk", ErrProtocol, ""},
		{"wrong signature", "v=" + base64.StdEncoding.EncodeToString(make([]byte, 32)), ErrAuthFailed, ""},
		{"invalid-proof", "e=invalid-proof", ErrAuthFailed, `"invalid-proof"`},
		{"unknown-user", "e=unknown-user", ErrAuthFailed, `"unknown-user"`},
		{"other error", "e=other-error", ErrProtocol, `"other-error"`},
		{"long error", "e=" + strings.Repeat("x", 1000), ErrProtocol, "xxx..."},
	}
	for _, tc := range tests {
		err := newClient().VerifyServerFinal([]byte(tc.msg))
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: VerifyServerFinal(%q) = %v", tc.name, tc.msg, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: VerifyServerFinal(%q) = %v, want %v", tc.name, tc.msg, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.text) || len(err.Error()) > 300 {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, err, tc.text)
		}
	}
}

func TestSCRAMClientSequence(t *testing.T) {
	c := NewSCRAMClient("pencil")
	if _, err := c.ClientFinal([]byte(rfcServerFirst)); !errors.Is(err, ErrProtocol) {
		t.Errorf("ClientFinal before ClientFirst: %v, want ErrProtocol", err)
	}
	c = NewSCRAMClient("pencil")
	c.ClientFirst()
	if err := c.VerifyServerFinal([]byte(rfcServerFinal)); !errors.Is(err, ErrProtocol) {
		t.Errorf("VerifyServerFinal before ClientFinal: %v, want ErrProtocol", err)
	}
	c = NewSCRAMClient("pencil")
	c.user = "user"
	c.nonce = rfcClientNonce
	c.ClientFirst()
	if _, err := c.ClientFinal([]byte(rfcServerFirst)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClientFinal([]byte(rfcServerFirst)); !errors.Is(err, ErrProtocol) {
		t.Errorf("ClientFinal twice: %v, want ErrProtocol", err)
	}
	if err := c.VerifyServerFinal([]byte(rfcServerFinal)); !errors.Is(err, ErrProtocol) {
		t.Errorf("VerifyServerFinal after a failed call: %v, want ErrProtocol", err)
	}
}

func TestSCRAMErrorsDoNotLeakSecrets(t *testing.T) {
	const pw = "correct horse battery staple"
	sec := NewSCRAMSecret(pw, []byte("0123456789abcdef"), 16)
	secretText := sec.String()
	check := func(err error) {
		t.Helper()
		if err == nil {
			return
		}
		msg := err.Error()
		for _, leak := range []string{pw, secretText[strings.LastIndex(secretText, "$")+1:][:20]} {
			if strings.Contains(msg, leak) {
				t.Errorf("error %q leaks %q", msg, leak)
			}
		}
	}
	s := NewSCRAMServer(sec)
	_, err := s.ServerFirst([]byte("n,,n=" + pw + ",r=abc,m=" + pw))
	check(err)
	s = NewSCRAMServer(sec)
	s.ServerFirst([]byte("n,,n=,r=abc"))
	_, err = s.ServerFinal([]byte("c=biws,r=" + s.nonce + ",p=" + base64.StdEncoding.EncodeToString(make([]byte, 32))))
	check(err)
	serr, cerr := exchange(t, NewSCRAMClient(pw+"!"), NewSCRAMServer(sec))
	check(serr)
	check(cerr)
}

func TestSCRAMPlainCache(t *testing.T) {
	c := NewSCRAMPlainCache(2)
	a := c.Server("alice", "pw1", 4096)
	b := c.Server("alice", "pw1", 4096)
	if !bytes.Equal(a.secret.Salt, b.secret.Salt) || !bytes.Equal(a.secret.StoredKey, b.secret.StoredKey) {
		t.Fatal("same user and password: the derived secret was not reused")
	}
	if want := NewSCRAMSecret("pw1", a.secret.Salt, 4096); !bytes.Equal(want.StoredKey, a.secret.StoredKey) || !bytes.Equal(want.ServerKey, a.secret.ServerKey) {
		t.Fatal("cached secret differs from a fresh derivation with its salt")
	}
	if d := c.Server("alice", "pw2", 4096); bytes.Equal(d.secret.StoredKey, a.secret.StoredKey) {
		t.Fatal("a changed password reused the old secret")
	}
	if e := c.Server("bob", "pw1", 4096); bytes.Equal(e.secret.Salt, a.secret.Salt) {
		t.Fatal("two users share a salt")
	}
	if n := len(c.m); n > 2 {
		t.Fatalf("cache holds %d entries, max 2", n)
	}
}
