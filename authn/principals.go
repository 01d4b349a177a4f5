package authn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Principal types, in [Principal.Type], as in pgaadauth security labels.
const (
	// PrincipalUser is a user (member or guest); it signs in with a
	// delegated token.
	PrincipalUser = "user"
	// PrincipalGroup is a group; any member (user, service principal or
	// managed identity) signs in with its own token, as the group role.
	PrincipalGroup = "group"
	// PrincipalService is a service principal or managed identity; it signs
	// in with an app-only token.
	PrincipalService = "service"
)

// Principal maps a PostgreSQL role name to an Entra object, as Azure's
// pgaadauth security labels do. Roles are matched by object ID, never by
// name: a user deleted and re-created with the same name has a new OID and
// is refused.
type Principal struct {
	// Role is the PostgreSQL role name the client sends as its user name
	// (case-sensitive).
	Role string
	// OID is the object ID of the user, group or service principal
	// (lower-case GUID).
	OID string
	// Type is PrincipalUser, PrincipalGroup or PrincipalService.
	Type string
	// Tenant, if not empty, is the tenant ID the token's tid must equal;
	// empty means any allowed tenant.
	Tenant string
	// Admin marks a principal allowed to use the admin console.
	Admin bool
	// MFA requires "mfa" in the token's amr claim.
	MFA bool
	// Source says where the mapping came from, for SHOW and logs (e.g.
	// "config", "principal_query", "security_label").
	Source string
}

// Principals is an immutable set of principals indexed by role name. A nil
// *Principals is an empty set. Several roles may share one OID.
type Principals struct {
	byRole map[string]*Principal
	list   []Principal
}

// NewPrincipals checks list and builds a set from it. Type and the GUIDs are
// normalized to lower case. Every problem is reported (joined): an empty
// role, an unknown type, an OID or tenant that is not a GUID, a role listed
// twice.
func NewPrincipals(list []Principal) (*Principals, error) {
	ps := &Principals{byRole: make(map[string]*Principal, len(list)), list: make([]Principal, 0, len(list))}
	var errs []error
	for _, p := range list {
		p.Type = strings.ToLower(strings.TrimSpace(p.Type))
		p.OID = strings.ToLower(strings.TrimSpace(p.OID))
		p.Tenant = strings.ToLower(strings.TrimSpace(p.Tenant))
		switch {
		case p.Role == "":
			errs = append(errs, fmt.Errorf("entra principal with oid %q: empty role name", p.OID))
			continue
		case p.Type != PrincipalUser && p.Type != PrincipalGroup && p.Type != PrincipalService:
			errs = append(errs, fmt.Errorf("entra principal %q: type %q is not user, group or service", p.Role, p.Type))
			continue
		case !entraIsGUID(p.OID):
			errs = append(errs, fmt.Errorf("entra principal %q: oid %q is not an object ID (GUID)", p.Role, p.OID))
			continue
		case p.Tenant != "" && !entraIsGUID(p.Tenant):
			errs = append(errs, fmt.Errorf("entra principal %q: tenant %q is not a tenant ID (GUID)", p.Role, p.Tenant))
			continue
		}
		if _, dup := ps.byRole[p.Role]; dup {
			errs = append(errs, fmt.Errorf("entra principal %q: role listed twice", p.Role))
			continue
		}
		ps.list = append(ps.list, p)
		ps.byRole[p.Role] = &ps.list[len(ps.list)-1]
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(ps.list, func(a, b Principal) int { return strings.Compare(a.Role, b.Role) })
	for i := range ps.list {
		ps.byRole[ps.list[i].Role] = &ps.list[i]
	}
	return ps, nil
}

// Lookup returns the principal of role (exact, case-sensitive match).
func (ps *Principals) Lookup(role string) (Principal, bool) {
	if ps == nil {
		return Principal{}, false
	}
	p, ok := ps.byRole[role]
	if !ok {
		return Principal{}, false
	}
	return *p, true
}

// Len returns the number of principals.
func (ps *Principals) Len() int {
	if ps == nil {
		return 0
	}
	return len(ps.list)
}

// All returns the principals sorted by role.
func (ps *Principals) All() []Principal {
	if ps == nil {
		return nil
	}
	return slices.Clone(ps.list)
}

// ByOID returns the principals (roles) mapped to object ID oid.
func (ps *Principals) ByOID(oid string) []Principal {
	if ps == nil {
		return nil
	}
	var out []Principal
	for _, p := range ps.list {
		if p.OID == oid {
			out = append(out, p)
		}
	}
	return out
}

// Removed returns the principals of ps that next no longer grants: roles
// that are gone, or whose OID, Type, Tenant or MFA changed. After a reload,
// the pooler ends these roles' open client sessions. Admin and Source
// changes do not count.
func (ps *Principals) Removed(next *Principals) []Principal {
	var out []Principal
	for _, p := range ps.All() {
		q, ok := next.Lookup(p.Role)
		if !ok || q.OID != p.OID || q.Type != p.Type || q.Tenant != p.Tenant || (q.MFA && !p.MFA) {
			out = append(out, p)
		}
	}
	return out
}

// Authorize decides whether tok may sign in as role, with Azure's rules, and
// returns the matched principal. tok must come from [Validator.Validate]
// (which records whether the token had a groups claim at all). The rules:
//
//   - role must be in ps (else [ReasonUnknownRole], with PostgreSQL's
//     "password authentication failed" message);
//   - a principal bound to a tenant requires that tid ([ReasonTenantMismatch]);
//   - user role: a delegated token ([ReasonTokenTypeMismatch], SQLSTATE
//     28000, Azure's AAD_AUTH_TOKENTYPE message) whose oid is the role's
//     ([ReasonOIDMismatch]); guests need no upn claim;
//   - service role: an app-only token (same reason and SQLSTATE) whose oid
//     is the role's;
//   - group role: any token whose principal is a member of the group: the
//     groups claim lists the group's OID; if the claim overflowed, is
//     absent, or the token is app-only, Microsoft Graph checkMemberGroups is
//     asked (answers cached for GraphCacheTTL). Otherwise
//     [ReasonNotGroupMember]; no answer from Graph is
//     [ReasonGraphUnavailable];
//   - an MFA principal requires "mfa" in amr ([ReasonMFARequired]).
//
// These rules run on every sign-in, cached token or not.
func (v *Validator) Authorize(ctx context.Context, role string, tok *Token, ps *Principals) (*Principal, error) {
	p, ok := ps.Lookup(role)
	if !ok {
		return nil, &AuthError{Reason: ReasonUnknownRole, Public: MsgUnknownRole(role), SQLState: SQLStateInvalidPassword,
			Err: fmt.Errorf("no Entra principal for role %s", entraQuote(role))}
	}
	if p.Tenant != "" && p.Tenant != tok.TID {
		return nil, entraTokenErr(ReasonTenantMismatch, fmt.Errorf("role %s belongs to tenant %s, token to %s", entraQuote(role), p.Tenant, tok.TID))
	}
	switch p.Type {
	case PrincipalUser:
		if tok.IDType != IDTypeUser {
			return nil, &AuthError{Reason: ReasonTokenTypeMismatch, Public: MsgAppTokenForUserRole(role), SQLState: SQLStateInvalidAuthorization,
				Err: fmt.Errorf("app-only token (decided by %s) for user role %s", tok.IDTypeFrom, entraQuote(role))}
		}
		if tok.OID != p.OID {
			return nil, entraTokenErr(ReasonOIDMismatch, fmt.Errorf("token oid %s is not role %s's oid %s", tok.OID, entraQuote(role), p.OID))
		}
	case PrincipalService:
		if tok.IDType != IDTypeApp {
			return nil, &AuthError{Reason: ReasonTokenTypeMismatch, Public: MsgUserTokenForServiceRole(role), SQLState: SQLStateInvalidAuthorization,
				Err: fmt.Errorf("delegated token (decided by %s) for service role %s", tok.IDTypeFrom, entraQuote(role))}
		}
		if tok.OID != p.OID {
			return nil, entraTokenErr(ReasonOIDMismatch, fmt.Errorf("token oid %s is not role %s's oid %s", tok.OID, entraQuote(role), p.OID))
		}
	case PrincipalGroup:
		if err := v.checkGroup(ctx, role, tok, p); err != nil {
			return nil, err
		}
	default:
		return nil, entraTokenErr(ReasonUnknownRole, fmt.Errorf("role %s has principal type %q", entraQuote(role), p.Type))
	}
	if p.MFA && !tok.HasAMR("mfa") {
		return nil, entraTokenErr(ReasonMFARequired, fmt.Errorf("role %s requires MFA; amr is %q", entraQuote(role), tok.AMR))
	}
	return &p, nil
}

// checkGroup decides group membership from the groups claim, or from Graph.
func (v *Validator) checkGroup(ctx context.Context, role string, tok *Token, p Principal) error {
	for _, g := range tok.Groups {
		if strings.EqualFold(g, p.OID) {
			return nil
		}
	}
	if tok.groupsClaim && !tok.GroupOverage && tok.IDType == IDTypeUser {
		return entraTokenErr(ReasonNotGroupMember, fmt.Errorf("group %s (role %s) is not in the token's groups claim", p.OID, entraQuote(role)))
	}
	member, err := v.graph.isMember(ctx, tok.TID, tok.OID, p.OID)
	if err != nil {
		return entraTokenErr(ReasonGraphUnavailable, fmt.Errorf("membership of %s in group %s (role %s): %w", tok.OID, p.OID, entraQuote(role), err))
	}
	if !member {
		return entraTokenErr(ReasonNotGroupMember, fmt.Errorf("%s is not a member of group %s (role %s), says Graph", tok.OID, p.OID, entraQuote(role)))
	}
	return nil
}

// FlushGraphCache forgets every cached Graph membership answer (e.g. for an
// admin "flush" after a membership change).
func (v *Validator) FlushGraphCache() { v.graph.flush() }

// Security label providers read by [PrincipalsFromSecurityLabels].
const (
	// LabelProviderPGAADAuth is "pgaadauth": 'aadauth,oid=…,type=…[,admin]',
	// or just 'aadauth' when the details are in a pgaadauth-int label.
	LabelProviderPGAADAuth = "pgaadauth"
	// LabelProviderPGAADAuthInt is "pgaadauth-int", seen on newer servers:
	// 'type=…,oid=…,tenant_id=…'.
	LabelProviderPGAADAuthInt = "pgaadauth-int"
)

// SecurityLabel is one row of pg_seclabels for a role: what the default
// entra.principal_query returns.
type SecurityLabel struct {
	// Role is the role name (pg_seclabels.objname).
	Role string
	// Provider is the label provider, e.g. "pgaadauth".
	Provider string
	// Label is the label text.
	Label string
}

// PrincipalsFromSecurityLabels turns Azure pgaadauth security labels into
// principals, so that an existing Azure setup works as is. A role's
// "pgaadauth" and "pgaadauth-int" labels are merged. Grammar: comma-separated
// fields; "aadauth" (first field of a pgaadauth label, optional in
// pgaadauth-int); key=value fields oid, type, tenant_id; bare flags admin and
// mfa. Labels of other providers are ignored.
//
// Parsing fails closed per role: a role with an unknown field, a
// conflicting value, or no oid or type yields no principal, and its problem
// is in the returned (joined) error; the other roles are still returned,
// sorted by role, with Source "security_label".
func PrincipalsFromSecurityLabels(labels []SecurityLabel) ([]Principal, error) {
	type acc struct {
		p   Principal
		err error
	}
	byRole := map[string]*acc{}
	var order []string
	for _, l := range labels {
		if l.Provider != LabelProviderPGAADAuth && l.Provider != LabelProviderPGAADAuthInt {
			continue
		}
		a := byRole[l.Role]
		if a == nil {
			a = &acc{p: Principal{Role: l.Role, Source: "security_label"}}
			byRole[l.Role] = a
			order = append(order, l.Role)
		}
		if a.err == nil {
			a.err = entraMergeLabel(&a.p, l.Provider, l.Label)
		}
	}
	slices.Sort(order)
	var out []Principal
	var errs []error
	for _, role := range order {
		a := byRole[role]
		err := a.err
		if err == nil && (a.p.OID == "" || a.p.Type == "") {
			err = errors.New("no oid or type")
		}
		if err == nil {
			if _, err2 := NewPrincipals([]Principal{a.p}); err2 != nil {
				err = err2
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("security label of role %q: %w", role, err))
			continue
		}
		out = append(out, a.p)
	}
	return out, errors.Join(errs...)
}

// entraMergeLabel parses one label into p.
func entraMergeLabel(p *Principal, provider, label string) error {
	fields := strings.Split(label, ",")
	for i, f := range fields {
		f = strings.TrimSpace(f)
		if i == 0 && strings.EqualFold(f, "aadauth") {
			continue
		}
		if i == 0 && provider == LabelProviderPGAADAuth {
			return fmt.Errorf("%s label does not start with aadauth", provider)
		}
		k, val, hasVal := strings.Cut(f, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.TrimSpace(val)
		set := func(dst *string, v string) error {
			if *dst != "" && *dst != v {
				return fmt.Errorf("conflicting %s values %q and %q", k, *dst, v)
			}
			*dst = v
			return nil
		}
		var err error
		switch {
		case hasVal && k == "oid":
			err = set(&p.OID, strings.ToLower(val))
		case hasVal && k == "type":
			err = set(&p.Type, strings.ToLower(val))
		case hasVal && k == "tenant_id":
			err = set(&p.Tenant, strings.ToLower(val))
		case !hasVal && k == "admin":
			p.Admin = true
		case !hasVal && k == "mfa":
			p.MFA = true
		default:
			err = fmt.Errorf("unknown field %q in %s label", f, provider)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
