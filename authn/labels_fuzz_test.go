package authn_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/internal/fuzzwatch"
)

// FuzzSecurityLabels parses pgaadauth security labels, as principal_query
// returns them: the input is one label per line, "role<TAB>provider<TAB>
// label".
//
// Checked: no panic; every principal returned builds a set and comes from
// a pgaadauth or pgaadauth-int label of its role, once per role; the
// result does not depend on the order of the rows.
//
//	go test -run '^$' -fuzz '^FuzzSecurityLabels$' ./authn/
func FuzzSecurityLabels(f *testing.F) {
	oid := "6d2a9a2e-6cd5-4b8c-9d0b-8f2b0a1f3c44"
	for _, s := range []string{
		"alice\tpgaadauth\taadauth,oid=" + oid + ",type=user",
		"ops\tpgaadauth\taadauth,oid=" + oid + ",type=group,admin\nops\tpgaadauth-int\toid=" + oid + ",mfa",
		"svc\tpgaadauth-int\toid=" + strings.ToUpper(oid) + ",type=service,tenant_id=" + oid,
		"x\tpgaadauth\toid=" + oid + ",type=user",
		"x\tpgaadauth\taadauth,oid=" + oid + ",type=user,nosuch=1",
		"x\tpgaadauth\taadauth,oid=" + oid + ",type=user\nx\tpgaadauth-int\toid=11111111-1111-4111-8111-111111111111",
		"x\tselinux\tsystem_u:object_r:sepgsql_table_t:s0",
		"\tpgaadauth\taadauth,oid=" + oid + ",type=user",
		"x\tpgaadauth\taadauth, oid = " + oid + " , type = USER ,ADMIN",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		defer fuzzwatch.Watchdog(0, "FuzzSecurityLabels")()
		var labels []authn.SecurityLabel
		for _, line := range strings.Split(text, "\n") {
			parts := strings.SplitN(line, "\t", 3)
			for len(parts) < 3 {
				parts = append(parts, "")
			}
			labels = append(labels, authn.SecurityLabel{Role: parts[0], Provider: parts[1], Label: parts[2]})
		}
		got, _ := authn.PrincipalsFromSecurityLabels(labels)
		if _, err := authn.NewPrincipals(got); err != nil {
			t.Fatalf("principals from labels do not build a set: %v", err)
		}
		for _, p := range got {
			ok := slices.ContainsFunc(labels, func(l authn.SecurityLabel) bool {
				return l.Role == p.Role && (l.Provider == authn.LabelProviderPGAADAuth || l.Provider == authn.LabelProviderPGAADAuthInt)
			})
			if !ok || p.Source != "security_label" {
				t.Fatalf("principal %+v from no pgaadauth label of its role", p)
			}
		}
		reversed := slices.Clone(labels)
		slices.Reverse(reversed)
		again, _ := authn.PrincipalsFromSecurityLabels(reversed)
		if !slices.Equal(got, again) {
			t.Fatalf("the order of the rows matters:\n%+v\n%+v", got, again)
		}
	})
}
