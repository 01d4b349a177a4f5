package authn

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"strings"
)

// MD5Secret returns PostgreSQL's MD5 secret for user and password:
// "md5" + hex(md5(password + user)), as stored in pg_authid when
// password_encryption is md5.
func MD5Secret(user, password string) string {
	return md5Hex(password, user)
}

// MD5Response returns the response to an AuthenticationMD5Password challenge
// carrying salt, computed from an MD5 secret: "md5" + hex(md5(h + salt)),
// where h is md5secret without its "md5" prefix (32 hex digits). This is what
// libpq sends, and what the pooler sends to a server that asks for md5 when
// it only knows the MD5 secret.
func MD5Response(md5secret string, salt [4]byte) string {
	return md5Hex(strings.TrimPrefix(md5secret, "md5"), string(salt[:]))
}

// md5Hex returns "md5" + hex(md5(a + b)).
func md5Hex(a, b string) string {
	h := md5.New()
	h.Write([]byte(a))
	h.Write([]byte(b))
	var sum [md5.Size]byte
	out := make([]byte, 3+hex.EncodedLen(md5.Size))
	copy(out, "md5")
	hex.Encode(out[3:], h.Sum(sum[:0]))
	return string(out)
}

// VerifyMD5 reports whether response, the client's answer to an
// AuthenticationMD5Password challenge carrying salt, is right for user and
// sec. It works for plain secrets (the MD5 secret is computed from the
// password) and MD5 secrets; it always fails for SCRAM secrets, which cannot
// answer an MD5 challenge (as in PostgreSQL). Like PgBouncer, it also fails
// for an empty plain password and for an MD5 field that is not "md5" + 32
// lowercase hex digits. The comparison is constant time.
func VerifyMD5(sec Secret, user string, salt [4]byte, response string) bool {
	var md5secret string
	switch sec.Kind {
	case SecretPlain:
		if sec.Plain == "" {
			return false
		}
		md5secret = MD5Secret(user, sec.Plain)
	case SecretMD5:
		if !isMD5Secret(sec.MD5) {
			return false
		}
		md5secret = sec.MD5
	default:
		return false
	}
	want := MD5Response(md5secret, salt)
	return subtle.ConstantTimeCompare([]byte(want), []byte(response)) == 1
}
