package authn

import "testing"

func TestSCRAMPassword(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"ascii", "pencil", "pencil"},
		{"ascii controls kept", "a\x01\x7f b", "a\x01\x7f b"},
		{"empty", "", ""},
		{"invalid UTF-8 kept", "p\xffss\xc3", "p\xffss\xc3"},
		{"NFC kept", "p\u00e4ss", "p\u00e4ss"},
		{"NFD composed", "pa\u0308ss", "p\u00e4ss"},
		{"ligature", "\ufb01x", "fix"},
		{"fullwidth", "\uff50\uff41\uff53\uff53", "pass"},
		{"roman numeral", "\u2168", "IX"},
		{"non-ASCII spaces", "a\u00a0b\u2003c\u3000d\u200be", "a b c d e"},
		{"mapped to nothing", "a\u00adb\u034fc\ufe0fd\ufeffe", "abcde"},
		{"nothing left", "\u00ad\ufeff", "\u00ad\ufeff"},
		{"prohibited C.2.2", "\ufb01\u0085", "\ufb01\u0085"},
		{"prohibited C.2.1", "\ufb01\n", "\ufb01\n"},
		{"private use", "\ufb01\ue000", "\ufb01\ue000"},
		{"non-character", "\ufb01\ufdd0", "\ufb01\ufdd0"},
		{"unassigned in 3.2", "\ufb01\U0001F600", "\ufb01\U0001F600"},
		{"hebrew", "\u05d0\u05d1", "\u05d0\u05d1"},
		{"hebrew with digit inside", "\u05d01\u05d1", "\u05d01\u05d1"},
		{"hebrew ending with a digit", "\u05d0\u05d11\u00ad", "\u05d0\u05d11\u00ad"},
		{"hebrew and latin", "\u05d0a\ufb01\u05d1", "\u05d0a\ufb01\u05d1"},
		{"hebrew presentation form", "\ufb21\u05d1", "\u05d0\u05d1"},
		{"small at", "a\ufe6bb", "a@b"},
	}
	for _, tc := range tests {
		if got := string(scramPassword(tc.in)); got != tc.want {
			t.Errorf("%s: scramPassword(%+q) = %+q, want %+q", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestInTable(t *testing.T) {
	tables := map[string][]runeRange{
		"nonASCIISpace": nonASCIISpace, "mappedToNothing": mappedToNothing,
		"prohibitedOutput": prohibitedOutput, "unassignedCodePoints": unassignedCodePoints,
		"randALCat": randALCat, "lCat": lCat,
	}
	for name, tab := range tables {
		for i, r := range tab {
			if r.lo > r.hi || i > 0 && tab[i-1].hi >= r.lo {
				t.Fatalf("%s[%d] = %v: not sorted and disjoint", name, i, r)
			}
			for _, c := range []rune{r.lo, r.hi, (r.lo + r.hi) / 2} {
				if !inTable(c, tab) {
					t.Errorf("inTable(%U, %s) = false", c, name)
				}
			}
			if (i == 0 || tab[i-1].hi < r.lo-1) && inTable(r.lo-1, tab) {
				t.Errorf("inTable(%U, %s) = true", r.lo-1, name)
			}
			if (i == len(tab)-1 || tab[i+1].lo > r.hi+1) && inTable(r.hi+1, tab) {
				t.Errorf("inTable(%U, %s) = true", r.hi+1, name)
			}
		}
	}
	for _, c := range []rune{'a', 0x00a1, 0x05d0, 0x10ffff} {
		if inTable(c, nonASCIISpace) {
			t.Errorf("inTable(%U, nonASCIISpace) = true", c)
		}
	}
}
