// Package authn signs clients in: password verifiers now, Entra ID token
// validation later. It is a leaf package: it imports nothing from pgwarden.
//
// The password primitives follow PostgreSQL exactly, so that a secret copied
// from pg_authid (or written to a PgBouncer auth_file) works the same through
// the pooler as it does against the server:
//
//   - [ParseSecret] reads a stored secret: plain text, "md5..." or
//     "SCRAM-SHA-256$...".
//   - [VerifyPlain] and [VerifyMD5] check a cleartext password or an MD5
//     challenge response against a secret.
//   - [SCRAMServer] runs the server side of SCRAM-SHA-256 (a client signing in
//     to the pooler); [SCRAMClient] runs the client side (the pooler signing
//     in to PostgreSQL), either from a password or, for SCRAM passthrough, from
//     the ClientKey recovered by a [SCRAMServer].
//
// Functions are safe for concurrent use. [SCRAMServer] and [SCRAMClient]
// values are single-use: each drives one exchange and must be used by one
// goroutine at a time (normally the goroutine serving the connection).
//
// Secrets are compared in constant time, and no error returned by this
// package contains a password, a secret or a proof.
package authn

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strconv"
	"strings"
)

// SecretKind says how a [Secret] is stored.
type SecretKind int

const (
	// SecretPlain is a cleartext password.
	SecretPlain SecretKind = iota
	// SecretMD5 is PostgreSQL's MD5 hash: "md5" + hex(md5(password + user)).
	SecretMD5
	// SecretSCRAM is a SCRAM-SHA-256 verifier.
	SecretSCRAM
)

// String returns "plain", "md5" or "SCRAM-SHA-256".
func (k SecretKind) String() string {
	switch k {
	case SecretPlain:
		return "plain"
	case SecretMD5:
		return "md5"
	case SecretSCRAM:
		return "SCRAM-SHA-256"
	}
	return "SecretKind(" + strconv.Itoa(int(k)) + ")"
}

// Secret is a password as stored in PgBouncer's auth_file or PostgreSQL's
// pg_authid.rolpassword. Only the field matching Kind is meaningful.
//
// Its String and GoString methods never reveal the secret, so a Secret
// printed by mistake (with %v, %+v or %#v) leaks only its kind.
type Secret struct {
	// Kind tells which of the other fields holds the secret.
	Kind SecretKind
	// Plain is the cleartext password (SecretPlain).
	Plain string
	// MD5 is "md5" followed by 32 lowercase hex digits (SecretMD5).
	MD5 string
	// SCRAM is the SCRAM-SHA-256 verifier (SecretSCRAM).
	SCRAM SCRAMSecret
}

// String describes the secret without revealing it, e.g. "md5 secret".
func (s Secret) String() string { return s.Kind.String() + " secret" }

// GoString is like String, so that %#v does not reveal the secret either.
func (s Secret) GoString() string { return "authn.Secret{Kind: " + s.Kind.String() + ", <redacted>}" }

// SCRAMSecret is a SCRAM-SHA-256 verifier: what the server stores instead of
// the password. StoredKey and ServerKey are 32 bytes each.
//
// StoredKey and ServerKey are password equivalents for SCRAM: anyone holding
// them can impersonate the server to a client, so handle them like passwords.
type SCRAMSecret struct {
	// Iterations is the PBKDF2 iteration count (PostgreSQL's default is 4096).
	Iterations int
	// Salt is the PBKDF2 salt (PostgreSQL uses 16 random bytes).
	Salt []byte
	// StoredKey is SHA-256(ClientKey).
	StoredKey []byte
	// ServerKey is HMAC(SaltedPassword, "Server Key").
	ServerKey []byte
}

const (
	scramKeyLen      = sha256.Size // 32
	scramSaltLen     = 16          // PostgreSQL's SCRAM_DEFAULT_SALT_LEN
	scramSecretTag   = "SCRAM-SHA-256"
	md5SecretLen     = 3 + 2*16 // "md5" + 32 hex digits
	maxSecretIterInt = 1<<31 - 1
)

// String returns the secret in PostgreSQL's text form,
// "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" with standard
// padded base64, as found in pg_authid and accepted by CREATE ROLE ...
// PASSWORD and by PgBouncer's auth_file.
func (s SCRAMSecret) String() string {
	enc := base64.StdEncoding
	return scramSecretTag + "$" + strconv.Itoa(s.Iterations) + ":" + enc.EncodeToString(s.Salt) +
		"$" + enc.EncodeToString(s.StoredKey) + ":" + enc.EncodeToString(s.ServerKey)
}

// valid reports whether s can be used for an exchange.
func (s SCRAMSecret) valid() bool {
	return s.Iterations > 0 && len(s.Salt) > 0 &&
		len(s.StoredKey) == scramKeyLen && len(s.ServerKey) == scramKeyLen
}

// ParseSecret classifies a stored password the way PostgreSQL does
// (get_password_type):
//
//   - "md5" followed by exactly 32 lowercase hex digits is an MD5 secret;
//   - "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" (base64 fields,
//     32-byte keys) is a SCRAM secret;
//   - anything else, including SCRAM text that does not parse, is a plain
//     password.
//
// ParseSecret is slightly stricter than PostgreSQL about SCRAM text: the
// iteration count must be a plain decimal number between 1 and 2^31-1 and the
// salt must not be empty; such malformed text is treated as a plain password,
// as PostgreSQL treats any unparsable SCRAM text.
func ParseSecret(s string) Secret {
	if isMD5Secret(s) {
		return Secret{Kind: SecretMD5, MD5: s}
	}
	if sec, ok := parseSCRAMSecret(s); ok {
		return Secret{Kind: SecretSCRAM, SCRAM: sec}
	}
	return Secret{Kind: SecretPlain, Plain: s}
}

// isMD5Secret reports whether s is "md5" followed by 32 lowercase hex digits.
func isMD5Secret(s string) bool {
	if len(s) != md5SecretLen || !strings.HasPrefix(s, "md5") {
		return false
	}
	for i := 3; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// parseSCRAMSecret parses PostgreSQL's text form of a SCRAM-SHA-256 secret.
func parseSCRAMSecret(s string) (SCRAMSecret, bool) {
	scheme, rest, ok := strings.Cut(s, "$")
	if !ok || scheme != scramSecretTag {
		return SCRAMSecret{}, false
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return SCRAMSecret{}, false
	}
	iterStr, saltStr, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return SCRAMSecret{}, false
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return SCRAMSecret{}, false
	}
	iter, ok := parseIterations(iterStr, maxSecretIterInt)
	if !ok {
		return SCRAMSecret{}, false
	}
	enc := base64.StdEncoding
	salt, err := enc.DecodeString(saltStr)
	if err != nil || len(salt) == 0 {
		return SCRAMSecret{}, false
	}
	stored, err := enc.DecodeString(storedStr)
	if err != nil || len(stored) != scramKeyLen {
		return SCRAMSecret{}, false
	}
	server, err := enc.DecodeString(serverStr)
	if err != nil || len(server) != scramKeyLen {
		return SCRAMSecret{}, false
	}
	return SCRAMSecret{Iterations: iter, Salt: salt, StoredKey: stored, ServerKey: server}, true
}

// parseIterations parses a decimal iteration count in [1, limit]: digits only,
// no sign, no spaces.
func parseIterations(s string, limit int) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > limit {
		return 0, false
	}
	return n, true
}

// NewSCRAMSecret derives the SCRAM-SHA-256 verifier of password with the
// given salt and iteration count, as CREATE ROLE ... PASSWORD does:
// SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations),
// StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")),
// ServerKey = HMAC(SaltedPassword, "Server Key").
//
// The password is prepared like PostgreSQL does (SASLprep, falling back to
// the raw bytes; see the SCRAMClient documentation). The cost is linear in
// iterations; the caller chooses them, so it should pass a sane value
// (PostgreSQL's default is 4096). An iteration count below 1 is treated as 1.
// The salt is copied.
func NewSCRAMSecret(password string, salt []byte, iterations int) SCRAMSecret {
	iterations = max(iterations, 1)
	clientKey, serverKey := scramKeys(scramPassword(password), salt, iterations)
	stored := sha256.Sum256(clientKey)
	return SCRAMSecret{
		Iterations: iterations,
		Salt:       append([]byte(nil), salt...),
		StoredKey:  stored[:],
		ServerKey:  serverKey,
	}
}

// scramKeys returns ClientKey and ServerKey for an already prepared password.
func scramKeys(password, salt []byte, iterations int) (clientKey, serverKey []byte) {
	salted := hi(password, salt, iterations)
	clientKey = hmacSHA256(salted, []byte("Client Key"))
	serverKey = hmacSHA256(salted, []byte("Server Key"))
	clear(salted)
	return clientKey, serverKey
}

// hi is RFC 5802's Hi(): PBKDF2 with HMAC-SHA-256 and a single output block.
func hi(password, salt []byte, iterations int) []byte {
	mac := hmac.New(sha256.New, password)
	mac.Write(salt)
	mac.Write([]byte{0, 0, 0, 1})
	u := mac.Sum(nil)
	out := append([]byte(nil), u...)
	for i := 1; i < iterations; i++ {
		mac.Reset()
		mac.Write(u)
		u = mac.Sum(u[:0])
		subtle.XORBytes(out, out, u)
	}
	return out
}

// hmacSHA256 returns HMAC-SHA-256(key, msg).
func hmacSHA256(key, msg []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(msg)
	return mac.Sum(nil)
}

// VerifyPlain reports whether password, received in cleartext from user
// (PostgreSQL's "password" authentication), matches sec:
//
//   - plain: the passwords' SHA-256 digests are compared in constant time;
//   - md5: MD5Secret(user, password) is compared with the stored hash;
//   - SCRAM: the keys are derived from password with the secret's salt and
//     iteration count and compared with StoredKey and ServerKey.
//
// A SCRAM secret costs its iteration count in PBKDF2 rounds. Like PostgreSQL
// and PgBouncer, an empty password never matches, nor does an empty plain
// secret or an unusable one (unknown kind, malformed MD5 or SCRAM fields).
func VerifyPlain(sec Secret, user, password string) bool {
	if password == "" {
		return false
	}
	switch sec.Kind {
	case SecretPlain:
		// Digests, not the passwords: ConstantTimeCompare returns at
		// once on a length mismatch, which would tell the stored
		// password's length.
		if sec.Plain == "" {
			return false
		}
		want, got := sha256.Sum256([]byte(sec.Plain)), sha256.Sum256([]byte(password))
		return subtle.ConstantTimeCompare(want[:], got[:]) == 1
	case SecretMD5:
		return isMD5Secret(sec.MD5) && subtle.ConstantTimeCompare([]byte(sec.MD5), []byte(MD5Secret(user, password))) == 1
	case SecretSCRAM:
		s := sec.SCRAM
		if !s.valid() {
			return false
		}
		clientKey, serverKey := scramKeys(scramPassword(password), s.Salt, s.Iterations)
		stored := sha256.Sum256(clientKey)
		ok := subtle.ConstantTimeCompare(stored[:], s.StoredKey) &
			subtle.ConstantTimeCompare(serverKey, s.ServerKey)
		return ok == 1
	}
	return false
}
