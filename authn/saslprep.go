package authn

import (
	"slices"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// runeRange is an inclusive range of code points in a SASLprep table.
type runeRange struct{ lo, hi rune }

// inTable reports whether r falls in one of the sorted, disjoint ranges of t.
func inTable(r rune, t []runeRange) bool {
	_, found := slices.BinarySearchFunc(t, r, func(rr runeRange, r rune) int {
		switch {
		case rr.hi < r:
			return -1
		case rr.lo > r:
			return 1
		}
		return 0
	})
	return found
}

// scramPassword returns the bytes that PostgreSQL feeds to PBKDF2 for
// password, in both the server (CREATE ROLE ... PASSWORD, SCRAM verification)
// and libpq. It mirrors pg_saslprep in PostgreSQL's src/common/saslprep.c:
//
//   - a pure-ASCII password is used as is (control characters included);
//   - a password that is not valid UTF-8 is used as is;
//   - otherwise SASLprep (RFC 4013) is applied: non-ASCII spaces (RFC 3454
//     table C.1.2) become U+0020, the characters of table B.1 are dropped,
//     and the result is normalised to NFKC;
//   - when SASLprep rejects the password (it maps to nothing, or contains a
//     prohibited or Unicode 3.2-unassigned code point, or breaks the bidi
//     rules of RFC 3454 section 6), the raw bytes are used instead, as
//     RFC 5802 allows and PostgreSQL does.
//
// Like PostgreSQL, the prohibited-character and bidi checks look at the
// mapped string before normalisation. Normalisation uses
// golang.org/x/text/unicode/norm rather than PostgreSQL's own tables; the
// two agree on every string that passes the Unicode 3.2 checks, because
// normalisation forms are stable across Unicode versions for assigned
// characters.
func scramPassword(password string) []byte {
	if isASCII(password) || !utf8.ValidString(password) {
		return []byte(password)
	}
	mapped := make([]rune, 0, len(password))
	for _, r := range password {
		switch {
		case inTable(r, nonASCIISpace):
			mapped = append(mapped, ' ')
		case inTable(r, mappedToNothing):
			// Mapped to nothing.
		default:
			mapped = append(mapped, r)
		}
	}
	if len(mapped) == 0 {
		return []byte(password)
	}
	hasRandAL := false
	for _, r := range mapped {
		if inTable(r, prohibitedOutput) || inTable(r, unassignedCodePoints) {
			return []byte(password)
		}
		if inTable(r, randALCat) {
			hasRandAL = true
		}
	}
	if hasRandAL {
		for _, r := range mapped {
			if inTable(r, lCat) {
				return []byte(password)
			}
		}
		if !inTable(mapped[0], randALCat) || !inTable(mapped[len(mapped)-1], randALCat) {
			return []byte(password)
		}
	}
	return norm.NFKC.Bytes([]byte(string(mapped)))
}

// isASCII reports whether s holds only 7-bit bytes.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
