package pooler

import (
	"strings"
	"testing"
)

// TestParseDeallocate: which simple queries count as one DEALLOCATE of a
// name, and the name as PostgreSQL reads it.
func TestParseDeallocate(t *testing.T) {
	for _, tc := range []struct {
		q, name string
		ok      bool
	}{
		{"DEALLOCATE s1", "s1", true},
		{"deallocate S1;", "s1", true},
		{" \t\nDeAllocate PREPARE s_1$x ;  \n", "s_1$x", true},
		{`DEALLOCATE "Mixed ""Case"""`, `Mixed "Case"`, true},
		{`DEALLOCATE"q"`, "q", true},
		{`DEALLOCATE PREPARE"q";`, "q", true},
		{"DEALLOCATE prepare", "prepare", true},
		{"DEALLOCATE PREPARE prepare", "prepare", true},
		{`DEALLOCATE "all"`, "all", true},
		{`DEALLOCATE "select"`, "select", true},
		{"DEALLOCATE ÄÖ", "ÄÖ", true},
		{"DEALLOCATE ALL", "", false},
		{"DEALLOCATE PREPARE ALL", "", false},
		{"DEALLOCATE select", "", false},
		{"DEALLOCATE user", "", false},
		{"DEALLOCATE", "", false},
		{"DEALLOCATE ;", "", false},
		{`DEALLOCATE ""`, "", false},
		{`DEALLOCATE "open`, "", false},
		{"DEALLOCATE s1;;", "", false},
		{"DEALLOCATE s1; SELECT 1", "", false},
		{"DEALLOCATE s1 s2", "", false},
		{"DEALLOCATE 1x", "", false},
		{"DEALLOCATE s1 -- comment", "", false},
		{"DEALLOCATEs1", "", false},
		{`"DEALLOCATE" s1`, "", false},
		{"DEALLOCATE " + strings.Repeat("x", 64), "", false},
		{"DEALLOCATE " + strings.Repeat("x", 63), strings.Repeat("x", 63), true},
	} {
		name, ok := parseDeallocate(append([]byte(tc.q), 0))
		if name != tc.name || ok != tc.ok {
			t.Errorf("parseDeallocate(%q) = %q, %v; want %q, %v", tc.q, name, ok, tc.name, tc.ok)
		}
	}
}
