package authn

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL implements it
// (src/backend/libpq/auth-scram.c for the server, libpq's fe-auth-scram.c for
// the client):
//
//   - only the SCRAM-SHA-256 mechanism, never SCRAM-SHA-256-PLUS: the server
//     accepts the gs2 channel-binding flags "n" and "y" and rejects "p=";
//     the client sends "n";
//   - no authorization identity ("a=") and no mandatory extension ("m=");
//   - the username in client-first-message is ignored (PostgreSQL takes it
//     from the startup packet; libpq sends "n=" empty), and the client sends
//     "n=";
//   - nonces are 18 random bytes in base64 (24 characters);
//   - passwords are prepared with SASLprep, falling back to the raw bytes
//     when SASLprep rejects them (see NewSCRAMClient).
//
// Messages are the payloads of the SASLInitialResponse/SASLResponse and
// AuthenticationSASLContinue/AuthenticationSASLFinal protocol messages,
// without any framing.

const (
	// SCRAMMechanism is the SASL mechanism name to advertise in
	// AuthenticationSASL and to expect in SASLInitialResponse.
	SCRAMMechanism = "SCRAM-SHA-256"

	// DefaultSCRAMIterations is PostgreSQL's default PBKDF2 iteration count
	// (scram_iterations), used by NewSCRAMServerFromPlain and
	// NewMockSCRAMServer when given a count below 1.
	DefaultSCRAMIterations = 4096

	// MaxSCRAMIterations is the largest iteration count SCRAMClient accepts
	// from a server; a larger count is treated as a protocol violation rather
	// than spending minutes of CPU on PBKDF2.
	MaxSCRAMIterations = 10_000_000

	// scramNonceLen is the number of random bytes in a nonce
	// (PostgreSQL's SCRAM_RAW_NONCE_LEN).
	scramNonceLen = 18

	// maxSCRAMMessageLen bounds every SCRAM message, like PostgreSQL's
	// PG_MAX_AUTH_TOKEN_LENGTH.
	maxSCRAMMessageLen = 65535
)

var (
	// ErrProtocol is wrapped by the errors for malformed or out-of-sequence
	// SCRAM messages: the peer does not speak SCRAM-SHA-256 as PostgreSQL
	// does, or the exchange was driven in the wrong order.
	ErrProtocol = errors.New("authn: SCRAM protocol violation")

	// ErrAuthFailed is returned (possibly wrapped) when the messages are well
	// formed but the credentials do not match: a wrong password on the
	// server side (always for a mock server), a server that does not know
	// the password on the client side.
	ErrAuthFailed = errors.New("authn: authentication failed")

	// errUnusableSecret reports a SCRAMSecret or passthrough keys that
	// cannot drive an exchange (a configuration problem, not the peer's).
	errUnusableSecret = errors.New("authn: unusable SCRAM secret (needs iterations > 0, a salt and 32-byte keys)")
)

// protocolError returns an error wrapping ErrProtocol. msg must not contain
// secrets.
func protocolError(msg string) error {
	return fmt.Errorf("%w: %s", ErrProtocol, msg)
}

// exchange states.
const (
	stateStart = iota
	stateFirstDone
	stateFinalDone // client only: ClientFinal done, VerifyServerFinal pending
	stateOver
)

// SCRAMServer runs the server side of one SCRAM-SHA-256 exchange: a client
// signing in to the pooler. Call ServerFirst with the client-first-message
// (the SASLInitialResponse data), send its result in
// AuthenticationSASLContinue, then call ServerFinal with the
// client-final-message (the SASLResponse data) and send its result in
// AuthenticationSASLFinal followed by AuthenticationOk.
//
// A SCRAMServer is single-use and not safe for concurrent use: create one per
// exchange and drive it from one goroutine (normally the one serving the
// client connection). Any error ends the exchange; later calls fail with
// ErrProtocol.
type SCRAMServer struct {
	secret      SCRAMSecret
	mock        bool // unknown user: always fail at the end
	unusable    bool // the secret cannot drive an exchange
	serverNonce string
	state       int

	gs2Header       string // "n,," or "y,,"
	clientFirstBare string
	serverFirst     string
	nonce           string // client nonce + server nonce
	clientKey       []byte
}

// NewSCRAMServer returns a server for one exchange against sec, typically
// parsed from pg_authid or an auth_file with ParseSecret. The secret is
// copied. If sec is unusable (iterations < 1, empty salt, keys not 32 bytes)
// ServerFirst returns an error that wraps neither ErrProtocol nor
// ErrAuthFailed.
func NewSCRAMServer(sec SCRAMSecret) *SCRAMServer {
	return &SCRAMServer{
		secret: SCRAMSecret{
			Iterations: sec.Iterations,
			Salt:       bytes.Clone(sec.Salt),
			StoredKey:  bytes.Clone(sec.StoredKey),
			ServerKey:  bytes.Clone(sec.ServerKey),
		},
		unusable:    !sec.valid(),
		serverNonce: newNonce(),
	}
}

// NewSCRAMServerFromPlain returns a server for one exchange against a
// cleartext password (a plain auth_file entry), deriving a secret with a
// fresh random 16-byte salt and the given iteration count
// (DefaultSCRAMIterations if below 1). The derivation costs iterations PBKDF2
// rounds, spent here.
func NewSCRAMServerFromPlain(password string, iterations int) *SCRAMServer {
	if iterations < 1 {
		iterations = DefaultSCRAMIterations
	}
	salt := make([]byte, scramSaltLen)
	rand.Read(salt)
	return NewSCRAMServer(NewSCRAMSecret(password, salt, iterations))
}

// SCRAMPlainCache derives the SCRAM secret of a cleartext password (a plain
// auth_file entry, an auth_query answer) once and reuses it for the later
// exchanges of the same user and password, as PostgreSQL reuses the secret
// it stores: one PBKDF2 derivation (iterations rounds, about a millisecond
// at 4096) per user and password instead of one per sign-in. Each entry has
// its own random salt. A changed password is a new entry; when the cache
// holds max entries it starts over. Safe for concurrent use.
type SCRAMPlainCache struct {
	mu  sync.Mutex
	m   map[scramPlainKey]SCRAMSecret
	max int
}

type scramPlainKey struct {
	user, password string
	iterations     int
}

// NewSCRAMPlainCache returns a cache of at most max entries (1024 if below 1).
func NewSCRAMPlainCache(max int) *SCRAMPlainCache {
	if max < 1 {
		max = 1024
	}
	return &SCRAMPlainCache{m: map[scramPlainKey]SCRAMSecret{}, max: max}
}

// Server returns a server for one exchange of user against password
// (iterations as for NewSCRAMServerFromPlain).
func (c *SCRAMPlainCache) Server(user, password string, iterations int) *SCRAMServer {
	if iterations < 1 {
		iterations = DefaultSCRAMIterations
	}
	k := scramPlainKey{user, password, iterations}
	c.mu.Lock()
	sec, ok := c.m[k]
	c.mu.Unlock()
	if !ok {
		salt := make([]byte, scramSaltLen)
		rand.Read(salt)
		sec = NewSCRAMSecret(password, salt, iterations)
		c.mu.Lock()
		if len(c.m) >= c.max {
			clear(c.m)
		}
		if prev, raced := c.m[k]; raced {
			sec = prev // another sign-in derived it first: keep one salt
		} else {
			c.m[k] = sec
		}
		c.mu.Unlock()
	}
	return NewSCRAMServer(sec)
}

// mockKey is the per-process random key behind mock salts.
var mockKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
})

// NewMockSCRAMServer returns a server for a user that does not exist (or has
// no usable secret), so that the exchange looks like a real one and does not
// reveal which users exist: the salt is derived from user and a per-process
// random key (the same user always gets the same salt within a process, as a
// real user would), the iteration count is iterations (DefaultSCRAMIterations
// if below 1), and ServerFinal always returns ErrAuthFailed once the
// client-final-message has been checked, like PostgreSQL's mock
// authentication.
func NewMockSCRAMServer(user string, iterations int) *SCRAMServer {
	if iterations < 1 {
		iterations = DefaultSCRAMIterations
	}
	key := mockKey()
	salt := hmacSHA256(key, []byte("salt\x00"+user))[:scramSaltLen]
	s := NewSCRAMServer(SCRAMSecret{
		Iterations: iterations,
		Salt:       salt,
		StoredKey:  hmacSHA256(key, []byte("stored-key\x00"+user)),
		ServerKey:  hmacSHA256(key, []byte("server-key\x00"+user)),
	})
	s.mock = true
	return s
}

// ServerFirst parses the client-first-message and returns the
// server-first-message "r=<client nonce><server nonce>,s=<salt>,i=<iterations>".
//
// It rejects (with ErrProtocol) a message requesting channel binding ("p="),
// an authorization identity, a mandatory extension, a missing or
// non-printable nonce, or malformed attributes. The username attribute must
// be present but its value is ignored, as in PostgreSQL: the user is the one
// from the startup packet.
func (s *SCRAMServer) ServerFirst(clientFirst []byte) ([]byte, error) {
	if s.state != stateStart {
		s.state = stateOver
		return nil, protocolError("client-first-message out of sequence")
	}
	s.state = stateOver // until success
	if s.unusable {
		return nil, errUnusableSecret
	}
	if err := checkMessage(clientFirst, "client-first-message"); err != nil {
		return nil, err
	}
	msg := string(clientFirst)

	// gs2-header: gs2-cbind-flag "," [authzid] ","
	flag, rest, ok := strings.Cut(msg, ",")
	if !ok {
		return nil, protocolError("client-first-message has no gs2 header")
	}
	switch {
	case flag == "n" || flag == "y":
		// "y": the client supports channel binding but thinks we do not,
		// which is true: we never offer SCRAM-SHA-256-PLUS.
	case strings.HasPrefix(flag, "p="):
		return nil, protocolError("client requested channel binding, but SCRAM-SHA-256-PLUS is not offered")
	default:
		return nil, protocolError("unexpected channel-binding flag in client-first-message")
	}
	authzid, bare, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, protocolError("malformed gs2 header in client-first-message")
	}
	if authzid != "" {
		if strings.HasPrefix(authzid, "a=") {
			return nil, protocolError("client uses an authorization identity, which is not supported")
		}
		return nil, protocolError("malformed gs2 header in client-first-message")
	}

	// client-first-message-bare: [reserved-mext ","] username "," nonce ["," extensions]
	fields := strings.Split(bare, ",")
	if strings.HasPrefix(fields[0], "m=") {
		return nil, protocolError("client requires an unsupported SCRAM extension")
	}
	if !strings.HasPrefix(fields[0], "n=") {
		return nil, protocolError("username attribute expected in client-first-message")
	}
	if len(fields) < 2 || !strings.HasPrefix(fields[1], "r=") {
		return nil, protocolError("nonce attribute expected in client-first-message")
	}
	clientNonce := fields[1][2:]
	if !isPrintable(clientNonce) {
		return nil, protocolError("client nonce is empty or contains invalid characters")
	}
	if err := checkExtensions(fields[2:], "client-first-message"); err != nil {
		return nil, err
	}

	s.gs2Header = flag + ",,"
	s.clientFirstBare = bare
	s.nonce = clientNonce + s.serverNonce
	s.serverFirst = "r=" + s.nonce +
		",s=" + base64.StdEncoding.EncodeToString(s.secret.Salt) +
		",i=" + strconv.Itoa(s.secret.Iterations)
	s.state = stateFirstDone
	return []byte(s.serverFirst), nil
}

// ServerFinal parses the client-final-message "c=...,r=...,p=..." and checks
// the proof in constant time. On success it returns the server-final-message
// "v=<ServerSignature>" and ClientKey becomes available. A wrong proof, and
// any proof for a mock server, gives ErrAuthFailed; a malformed message, a
// channel-binding attribute that does not repeat the gs2 header, or a nonce
// that is not the one from ServerFirst gives ErrProtocol.
//
// On failure PostgreSQL sends an ErrorResponse (SQLSTATE 28P01, "password
// authentication failed for user ...") rather than a SCRAM "e=" message;
// the caller should do the same.
func (s *SCRAMServer) ServerFinal(clientFinal []byte) ([]byte, error) {
	if s.state != stateFirstDone {
		s.state = stateOver
		return nil, protocolError("client-final-message out of sequence")
	}
	s.state = stateOver
	if err := checkMessage(clientFinal, "client-final-message"); err != nil {
		return nil, err
	}
	msg := string(clientFinal)

	// client-final-message: channel-binding "," nonce ["," extensions] "," proof
	fields := strings.Split(msg, ",")
	if len(fields) < 3 {
		return nil, protocolError("client-final-message is incomplete")
	}
	cbind, ok := strings.CutPrefix(fields[0], "c=")
	if !ok {
		return nil, protocolError("channel-binding attribute expected in client-final-message")
	}
	if cbind != base64.StdEncoding.EncodeToString([]byte(s.gs2Header)) {
		return nil, protocolError("unexpected channel-binding attribute in client-final-message")
	}
	nonce, ok := strings.CutPrefix(fields[1], "r=")
	if !ok {
		return nil, protocolError("nonce attribute expected in client-final-message")
	}
	if subtle.ConstantTimeCompare([]byte(nonce), []byte(s.nonce)) != 1 {
		return nil, protocolError("nonce mismatch in client-final-message")
	}
	last := fields[len(fields)-1]
	extensions := fields[2 : len(fields)-1]
	if err := checkExtensions(extensions, "client-final-message"); err != nil {
		return nil, err
	}
	for _, f := range extensions {
		if f[0] == 'p' {
			return nil, protocolError("client-final-message does not end with the proof attribute")
		}
	}
	proofB64, ok := strings.CutPrefix(last, "p=")
	if !ok {
		return nil, protocolError("client-final-message does not end with the proof attribute")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != scramKeyLen {
		return nil, protocolError("malformed proof in client-final-message")
	}

	withoutProof := msg[:len(msg)-len(last)-1]
	authMessage := []byte(s.clientFirstBare + "," + s.serverFirst + "," + withoutProof)

	// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage);
	// the proof is right if H(ClientKey) == StoredKey.
	clientSignature := hmacSHA256(s.secret.StoredKey, authMessage)
	clientKey := make([]byte, scramKeyLen)
	subtle.XORBytes(clientKey, proof, clientSignature)
	storedKey := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(storedKey[:], s.secret.StoredKey) != 1 || s.mock {
		return nil, ErrAuthFailed
	}
	s.clientKey = clientKey
	serverSignature := hmacSHA256(s.secret.ServerKey, authMessage)
	return []byte("v=" + base64.StdEncoding.EncodeToString(serverSignature)), nil
}

// ClientKey returns a copy of the client's ClientKey, recovered from its
// proof (ClientProof XOR ClientSignature), once ServerFinal has succeeded;
// nil otherwise. Together with the secret's ServerKey it lets the pooler sign
// in to a server that stores the same SCRAM secret, without knowing the
// password (SCRAM passthrough, see NewSCRAMClientFromKeys). The ClientKey is
// a password equivalent for that secret: keep it in memory only.
func (s *SCRAMServer) ClientKey() []byte {
	return bytes.Clone(s.clientKey)
}

// SCRAMClient runs the client side of one SCRAM-SHA-256 exchange: the pooler
// signing in to PostgreSQL. Send ClientFirst in SASLInitialResponse (with
// mechanism SCRAMMechanism), pass the AuthenticationSASLContinue data to
// ClientFinal and send its result in SASLResponse, then pass the
// AuthenticationSASLFinal data to VerifyServerFinal. The sign-in succeeded
// only if VerifyServerFinal returned nil and the server then sent
// AuthenticationOk.
//
// A SCRAMClient is single-use and not safe for concurrent use: create one per
// exchange and drive it from one goroutine. Any error ends the exchange;
// later calls fail with ErrProtocol.
type SCRAMClient struct {
	password    []byte // prepared password; nil in passthrough mode
	clientKey   []byte // passthrough mode
	serverKey   []byte // passthrough mode
	passthrough bool
	user        string // value of the n= attribute: always empty, except in tests
	nonce       string
	state       int

	clientFirstBare string
	serverSignature []byte // expected in server-final-message
}

// NewSCRAMClient returns a client for one exchange with password.
//
// The password is prepared as PostgreSQL prepares it (pg_saslprep): a
// pure-ASCII password is used as is; otherwise SASLprep (RFC 4013) maps
// non-ASCII spaces to U+0020, drops the characters that map to nothing and
// normalises to NFKC (with golang.org/x/text/unicode/norm), and when
// SASLprep rejects the password (invalid UTF-8, prohibited or Unicode
// 3.2-unassigned code points, bidi rule violations, nothing left) the raw
// bytes are used instead. NewSCRAMSecret and VerifyPlain prepare passwords
// the same way.
func NewSCRAMClient(password string) *SCRAMClient {
	return &SCRAMClient{password: scramPassword(password), nonce: newNonce()}
}

// NewSCRAMClientFromKeys returns a client for SCRAM passthrough: it signs in
// with a ClientKey recovered by a SCRAMServer (SCRAMServer.ClientKey) instead
// of a password, and checks the server's signature with serverKey, the
// ServerKey of the SCRAM secret the client signed in against. The keys are
// copied.
//
// Without the password the client cannot derive keys, so the salt and
// iteration count in the server-first-message are only checked for sanity:
// passthrough works when the server stores the same SCRAM secret (same salt
// and iteration count) as the one the client was verified against. Otherwise
// the server rejects the proof, or VerifyServerFinal returns ErrAuthFailed.
// If either key is not 32 bytes, ClientFinal returns an error that wraps
// neither ErrProtocol nor ErrAuthFailed.
func NewSCRAMClientFromKeys(clientKey, serverKey []byte) *SCRAMClient {
	return &SCRAMClient{
		clientKey:   bytes.Clone(clientKey),
		serverKey:   bytes.Clone(serverKey),
		passthrough: true,
		nonce:       newNonce(),
	}
}

// ClientFirst returns the client-first-message "n,,n=,r=<nonce>": no channel
// binding, no authorization identity, an empty username (PostgreSQL uses the
// one from the startup packet) and 18 random bytes of nonce in base64.
// Calling it again returns the same message.
func (c *SCRAMClient) ClientFirst() []byte {
	if c.state == stateStart {
		c.clientFirstBare = "n=" + c.user + ",r=" + c.nonce
		c.state = stateFirstDone
	}
	return []byte("n,," + c.clientFirstBare)
}

// ClientFinal parses the server-first-message and returns the
// client-final-message "c=biws,r=<nonce>,p=<proof>". It checks, with
// ErrProtocol on failure, that the server's nonce extends ours with printable
// characters, that the salt is valid base64, and that the iteration count is
// between 1 and MaxSCRAMIterations. With a password it then spends the
// iteration count in PBKDF2 rounds.
func (c *SCRAMClient) ClientFinal(serverFirst []byte) ([]byte, error) {
	if c.state != stateFirstDone {
		c.state = stateOver
		return nil, protocolError("server-first-message out of sequence")
	}
	c.state = stateOver // until success
	if c.passthrough && (len(c.clientKey) != scramKeyLen || len(c.serverKey) != scramKeyLen) {
		return nil, errUnusableSecret
	}
	if err := checkMessage(serverFirst, "server-first-message"); err != nil {
		return nil, err
	}
	msg := string(serverFirst)

	// server-first-message: [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
	fields := strings.Split(msg, ",")
	if strings.HasPrefix(fields[0], "m=") {
		return nil, protocolError("server requires an unsupported SCRAM extension")
	}
	if len(fields) < 3 {
		return nil, protocolError("server-first-message is incomplete")
	}
	nonce, ok := strings.CutPrefix(fields[0], "r=")
	if !ok {
		return nil, protocolError("nonce attribute expected in server-first-message")
	}
	if len(nonce) <= len(c.nonce) || !strings.HasPrefix(nonce, c.nonce) {
		return nil, protocolError("server nonce does not extend the client nonce")
	}
	if !isPrintable(nonce) {
		return nil, protocolError("server nonce contains invalid characters")
	}
	saltB64, ok := strings.CutPrefix(fields[1], "s=")
	if !ok {
		return nil, protocolError("salt attribute expected in server-first-message")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil || len(salt) == 0 {
		return nil, protocolError("malformed salt in server-first-message")
	}
	iterStr, ok := strings.CutPrefix(fields[2], "i=")
	if !ok {
		return nil, protocolError("iteration-count attribute expected in server-first-message")
	}
	iterations, ok := parseIterations(iterStr, MaxSCRAMIterations)
	if !ok {
		return nil, protocolError("iteration count in server-first-message is not a number between 1 and " +
			strconv.Itoa(MaxSCRAMIterations))
	}
	if err := checkExtensions(fields[3:], "server-first-message"); err != nil {
		return nil, err
	}

	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte("n,,")) + ",r=" + nonce
	authMessage := []byte(c.clientFirstBare + "," + msg + "," + withoutProof)

	clientKey, serverKey := c.clientKey, c.serverKey
	if !c.passthrough {
		clientKey, serverKey = scramKeys(c.password, salt, iterations)
	}
	storedKey := sha256.Sum256(clientKey)
	clientSignature := hmacSHA256(storedKey[:], authMessage)
	proof := make([]byte, scramKeyLen)
	subtle.XORBytes(proof, clientKey, clientSignature)
	c.serverSignature = hmacSHA256(serverKey, authMessage)
	// Single use: forget the credentials now.
	clear(c.password)
	clear(clientKey)
	clear(serverKey)
	c.password, c.clientKey, c.serverKey = nil, nil, nil

	c.state = stateFinalDone
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// VerifyServerFinal checks the server-final-message. It returns nil if it is
// "v=<ServerSignature>" with the signature expected for the exchange
// (compared in constant time). A wrong signature gives ErrAuthFailed: the
// server does not know the secret. An "e=<error>" message gives an error
// carrying the server's text, wrapping ErrAuthFailed for "invalid-proof" and
// "unknown-user" and ErrProtocol otherwise. A malformed message gives
// ErrProtocol.
func (c *SCRAMClient) VerifyServerFinal(serverFinal []byte) error {
	if c.state != stateFinalDone {
		c.state = stateOver
		return protocolError("server-final-message out of sequence")
	}
	c.state = stateOver
	if err := checkMessage(serverFinal, "server-final-message"); err != nil {
		return err
	}
	fields := strings.Split(string(serverFinal), ",")
	if text, ok := strings.CutPrefix(fields[0], "e="); ok {
		base := ErrProtocol
		if text == "invalid-proof" || text == "unknown-user" {
			base = ErrAuthFailed
		}
		if len(text) > 100 {
			text = text[:100] + "..."
		}
		return fmt.Errorf("%w: server reported SCRAM error %q", base, text)
	}
	sigB64, ok := strings.CutPrefix(fields[0], "v=")
	if !ok {
		return protocolError("verifier attribute expected in server-final-message")
	}
	if err := checkExtensions(fields[1:], "server-final-message"); err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil || len(sig) != scramKeyLen {
		return protocolError("malformed server signature in server-final-message")
	}
	if subtle.ConstantTimeCompare(sig, c.serverSignature) != 1 {
		return fmt.Errorf("%w: wrong server signature in server-final-message (the server does not know the secret)", ErrAuthFailed)
	}
	return nil
}

// newNonce returns scramNonceLen random bytes in base64.
func newNonce() string {
	b := make([]byte, scramNonceLen)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// checkMessage applies the checks common to every SCRAM message: not empty,
// not too long, no NUL byte (PostgreSQL handles them as C strings).
func checkMessage(msg []byte, what string) error {
	switch {
	case len(msg) == 0:
		return protocolError(what + " is empty")
	case len(msg) > maxSCRAMMessageLen:
		return protocolError(what + " is too long")
	case bytes.IndexByte(msg, 0) >= 0:
		return protocolError(what + " contains a NUL byte")
	}
	return nil
}

// checkExtensions checks that every field is an optional extension
// attribute, "<letter>=<value>"; their values are ignored.
func checkExtensions(fields []string, what string) error {
	for _, f := range fields {
		if len(f) < 2 || f[1] != '=' || !isAttrName(f[0]) {
			return protocolError("malformed or unexpected attribute in " + what)
		}
	}
	return nil
}

// isAttrName reports whether c can name a SCRAM attribute (ALPHA).
func isAttrName(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// isPrintable reports whether s is a valid SCRAM nonce: one or more
// characters in %x21-2B / %x2D-7E (printable ASCII except ',').
func isPrintable(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}
