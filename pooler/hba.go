package pooler

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"weak"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// auth_type = hba: PgBouncer's subset of PostgreSQL's pg_hba.conf.
//
// Syntax follows PostgreSQL: one rule per line, fields separated by blanks,
// '#' starts a comment, a trailing backslash continues the line, double
// quotes protect blanks, commas and '#' ("" inside quotes is a literal
// quote), and a quoted keyword (all, sameuser, replication…) is a plain
// name. Supported:
//
//	type      local, host, hostssl, hostnossl (hostgssenc and hostnogssenc
//	          are accepted with a warning and never match)
//	database  all, sameuser, replication, @file, names, comma lists
//	user      all, @file, names, comma lists
//	address   all, CIDR (1.2.3.0/24, ::1/128), or an address and a mask
//	          in two fields
//	method    trust, reject, md5, password, scram-sha-256, cert, peer
//	options   map=… (accepted and ignored, with a warning)
//
// Anything else (samerole, +group, samehost, samenet, host names, other
// methods and options, include directives) is an error naming the file and
// line. @file names are relative to the directory of the file naming them;
// the file holds names separated by blanks, commas or newlines.
//
// The file is read once per configuration: at the first sign-in after start
// and after each reload (a reload builds a new *config.Config). A file with
// errors is not used at all, as PostgreSQL does: the rules read for the
// previous configuration stay in force, or, when there are none, every
// client is refused with "no authentication method is found".

// hbaConnType is a rule's first field.
type hbaConnType int

const (
	hbaLocal hbaConnType = iota
	hbaHost
	hbaHostSSL
	hbaHostNoSSL
	hbaHostGSSEnc
	hbaHostNoGSSEnc
)

var hbaConnTypes = map[string]hbaConnType{
	"local":        hbaLocal,
	"host":         hbaHost,
	"hostssl":      hbaHostSSL,
	"hostnossl":    hbaHostNoSSL,
	"hostgssenc":   hbaHostGSSEnc,
	"hostnogssenc": hbaHostNoGSSEnc,
}

// hbaMethod is a rule's authentication method.
type hbaMethod int

const (
	hbaTrust hbaMethod = iota
	hbaReject
	hbaMD5
	hbaPassword
	hbaSCRAM
	hbaCert
	hbaPeer
	// hbaEntra is pgwarden's own method: an Entra ID access token as the
	// password (needs [entra]).
	hbaEntra
)

var hbaMethods = map[string]hbaMethod{
	"trust":         hbaTrust,
	"reject":        hbaReject,
	"md5":           hbaMD5,
	"password":      hbaPassword,
	"scram-sha-256": hbaSCRAM,
	"cert":          hbaCert,
	"peer":          hbaPeer,
	"entra":         hbaEntra,
}

// hbaUnsupportedMethods are PostgreSQL (or PgBouncer) methods pgwarden does
// not implement; they get a clearer message than an unknown word.
var hbaUnsupportedMethods = map[string]bool{
	"ldap": true, "pam": true, "gss": true, "sspi": true, "ident": true,
	"radius": true, "bsd": true, "oauth": true, "any": true,
}

func (m hbaMethod) String() string {
	for k, v := range hbaMethods {
		if v == m {
			return k
		}
	}
	return "?"
}

// authType is the auth_type whose exchange implements m (trust, password,
// md5, scram-sha-256 and cert); reject and peer have none.
func (m hbaMethod) authType() config.AuthType {
	switch m {
	case hbaTrust:
		return config.AuthTrust
	case hbaMD5:
		return config.AuthMD5
	case hbaPassword:
		return config.AuthPlain
	case hbaSCRAM:
		return config.AuthSCRAM
	case hbaCert:
		return config.AuthCert
	}
	return ""
}

// hbaNames is a database or user field.
type hbaNames struct {
	all         bool
	sameUser    bool // database field only: the database named like the user
	replication bool // database field only: physical replication connections
	names       map[string]bool
}

func (n *hbaNames) add(name string) {
	if n.names == nil {
		n.names = map[string]bool{}
	}
	n.names[name] = true
}

// hbaRule is one parsed line.
type hbaRule struct {
	file   string
	line   int
	conn   hbaConnType
	db     hbaNames
	user   hbaNames
	anyIP  bool       // address "all" (and local rules, which have none)
	ip     netip.Addr // with mask: the rule matches a client c when c&mask == ip&mask
	mask   []byte
	method hbaMethod
}

// hbaRules is a parsed auth_hba_file: the rules in order, and the warnings
// found while reading it (to be logged once).
type hbaRules struct {
	path     string
	rules    []*hbaRule
	warnings []string
}

// hbaConn describes a client for matching.
type hbaConn struct {
	unix        bool
	tls         bool
	addr        netip.Addr // invalid when unknown
	database    string
	user        string
	replication bool
}

// newHBAConn describes a sign-in; client is "ip:port" for TCP.
func newHBAConn(unix bool, client string, tls bool, database, user string) hbaConn {
	c := hbaConn{unix: unix, tls: tls, database: database, user: user}
	if !unix {
		if ap, err := netip.ParseAddrPort(client); err == nil {
			c.addr = ap.Addr().Unmap()
		}
	}
	return c
}

// match returns the first rule matching c, or nil.
func (h *hbaRules) match(c hbaConn) *hbaRule {
	if h == nil {
		return nil
	}
	for _, r := range h.rules {
		if r.matches(c) {
			return r
		}
	}
	return nil
}

func (r *hbaRule) matches(c hbaConn) bool {
	switch r.conn {
	case hbaLocal:
		if !c.unix {
			return false
		}
	case hbaHost, hbaHostSSL, hbaHostNoSSL:
		if c.unix || (r.conn == hbaHostSSL && !c.tls) || (r.conn == hbaHostNoSSL && c.tls) {
			return false
		}
		if !r.anyIP && !r.matchAddr(c.addr) {
			return false
		}
	default: // hostgssenc, hostnogssenc: pgwarden has no GSSAPI encryption
		return false
	}
	if c.replication {
		if !r.db.replication {
			return false
		}
	} else if !r.db.all && !(r.db.sameUser && c.database == c.user) && !r.db.names[c.database] {
		return false
	}
	return r.user.all || r.user.names[c.user]
}

func (r *hbaRule) matchAddr(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	if a.Is4() != r.ip.Is4() {
		return false
	}
	cb, rb := a.AsSlice(), r.ip.AsSlice()
	for i := range rb {
		if cb[i]&r.mask[i] != rb[i]&r.mask[i] {
			return false
		}
	}
	return true
}

// Warnings returns what was accepted but is ignored or can never match,
// as "file:line: message".
func (h *hbaRules) Warnings() []string { return append([]string(nil), h.warnings...) }

// Match returns the method and line of the first rule matching a sign-in
// ("" and 0 when none matches): client is "unix" for the Unix socket, else
// "ip:port", as AuthExchange.Client. For tools and tests.
func (h *hbaRules) Match(client string, tls bool, database, user string) (method string, line int) {
	r := h.match(newHBAConn(client == "unix", client, tls, database, user))
	if r == nil {
		return "", 0
	}
	return r.method.String(), r.line
}

// String renders the rules, one per line, in a canonical form:
// "line: type db user [address/mask] method" with names sorted.
func (h *hbaRules) String() string {
	var b strings.Builder
	for _, r := range h.rules {
		fmt.Fprintf(&b, "%d: %s %s %s", r.line, r.conn, r.db.String(true), r.user.String(false))
		if r.conn != hbaLocal {
			if r.anyIP {
				b.WriteString(" all")
			} else {
				mask, _ := netip.AddrFromSlice(r.mask)
				fmt.Fprintf(&b, " %s/%s", r.ip, mask)
			}
		}
		fmt.Fprintf(&b, " %s\n", r.method)
	}
	return b.String()
}

func (t hbaConnType) String() string {
	for k, v := range hbaConnTypes {
		if v == t {
			return k
		}
	}
	return "?"
}

// String renders a name field: keywords first, then the names sorted and
// quoted.
func (n *hbaNames) String(isDB bool) string {
	var parts []string
	if n.all {
		parts = append(parts, "all")
	}
	if isDB && n.sameUser {
		parts = append(parts, "sameuser")
	}
	if isDB && n.replication {
		parts = append(parts, "replication")
	}
	names := make([]string, 0, len(n.names))
	for name := range n.names {
		names = append(names, strconv.Quote(name))
	}
	slices.Sort(names)
	parts = append(parts, names...)
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, ",")
}

// hbaParseError is every problem in an HBA file, one per line
// ("file:line: message").
type hbaParseError struct {
	problems []string
}

func (e *hbaParseError) Error() string { return strings.Join(e.problems, "\n") }

// LoadHBA reads and parses an auth_hba_file. The error, when not nil, lists
// every bad line as "file:line: message", one per line of text; the rules are
// then nil. Warnings (accepted but ignored parts) are in the result.
func LoadHBA(path string) (*hbaRules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth_hba_file: %w", err)
	}
	return parseHBA(path, string(data))
}

// parseHBA parses the text of an HBA file read from path (used for
// messages and to resolve @file names).
func parseHBA(path, text string) (*hbaRules, error) {
	h := &hbaRules{path: path}
	var problems []string
	for _, rec := range splitHBARecords(text) {
		fields, err := tokenizeHBALine(rec.text)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s:%d: %v", path, rec.line, err))
			continue
		}
		if len(fields) == 0 {
			continue
		}
		rule, warns, err := parseHBARule(path, rec.line, fields)
		for _, w := range warns {
			h.warnings = append(h.warnings, fmt.Sprintf("%s:%d: %s", path, rec.line, w))
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s:%d: %v", path, rec.line, err))
			continue
		}
		h.rules = append(h.rules, rule)
	}
	if len(problems) > 0 {
		return nil, &hbaParseError{problems: problems}
	}
	return h, nil
}

// hbaRecord is one logical line (continuations joined) and the number of
// its first physical line.
type hbaRecord struct {
	line int
	text string
}

// splitHBARecords splits text into lines, joining a line that ends with a
// backslash to the next one, as PostgreSQL does (before looking for
// comments).
func splitHBARecords(text string) []hbaRecord {
	var recs []hbaRecord
	lines := strings.Split(text, "\n")
	var cur strings.Builder
	start, open := 0, false
	for i, ln := range lines {
		if i == len(lines)-1 && ln == "" && !open {
			break // the file's final newline
		}
		ln = strings.TrimRight(ln, "\r")
		if !open {
			start, open = i+1, true
		}
		if strings.HasSuffix(ln, "\\") {
			cur.WriteString(ln[:len(ln)-1])
			if i < len(lines)-1 {
				continue
			}
		} else {
			cur.WriteString(ln)
		}
		recs = append(recs, hbaRecord{line: start, text: cur.String()})
		cur.Reset()
		open = false
	}
	return recs
}

// hbaToken is one word; quoted is true when it started with a double quote
// (keywords and the @ and + prefixes then lose their meaning).
type hbaToken struct {
	s      string
	quoted bool
}

// tokenizeHBALine splits a logical line into fields; a field is a list of
// tokens separated by commas (a comma must follow its token directly;
// blanks may follow the comma).
func tokenizeHBALine(s string) ([][]hbaToken, error) {
	var fields [][]hbaToken
	var field []hbaToken
	i := 0
	isBlank := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v' }
	for {
		// Skip blanks and commas before the next token.
		for i < len(s) && (isBlank(s[i]) || s[i] == ',') {
			i++
		}
		if i >= len(s) || s[i] == '#' {
			break
		}
		var b strings.Builder
		inQuote, wasQuote, sawQuote, initialQuote, comma := false, false, false, false, false
		for i < len(s) && (inQuote || !isBlank(s[i])) {
			c := s[i]
			if c == '#' && !inQuote {
				i = len(s) // a comment runs to the end of the line
				break
			}
			if c == ',' && !inQuote {
				comma = true
				i++
				break
			}
			if c != '"' || wasQuote {
				b.WriteByte(c)
			}
			// A literal double quote is two double quotes.
			if inQuote && c == '"' {
				wasQuote = !wasQuote
			} else {
				wasQuote = false
			}
			if c == '"' {
				inQuote = !inQuote
				sawQuote = true
				if b.Len() == 0 {
					initialQuote = true
				}
			}
			i++
		}
		if inQuote {
			return nil, errors.New("unterminated quoted string")
		}
		if b.Len() > 0 || sawQuote {
			field = append(field, hbaToken{s: b.String(), quoted: initialQuote})
		}
		if !comma && len(field) > 0 {
			fields = append(fields, field)
			field = nil
		}
	}
	if len(field) > 0 {
		fields = append(fields, field)
	}
	return fields, nil
}

func (t hbaToken) is(keyword string) bool { return !t.quoted && t.s == keyword }

// single returns a field's only token, or an error naming what the field is.
func single(field []hbaToken, what string) (hbaToken, error) {
	if len(field) != 1 {
		return hbaToken{}, fmt.Errorf("multiple values specified for %s", what)
	}
	return field[0], nil
}

// parseHBARule interprets one line's fields. Warnings are returned even with
// an error.
func parseHBARule(path string, line int, fields [][]hbaToken) (*hbaRule, []string, error) {
	var warns []string
	typ, err := single(fields[0], "connection type")
	if err != nil {
		return nil, nil, err
	}
	switch {
	case typ.is("include"), typ.is("include_if_exists"), typ.is("include_dir"):
		return nil, nil, fmt.Errorf("%s is not supported", typ.s)
	}
	ct, ok := hbaConnTypes[typ.s]
	if !ok {
		return nil, nil, fmt.Errorf("invalid connection type %q", typ.s)
	}
	r := &hbaRule{file: path, line: line, conn: ct}
	if ct == hbaHostGSSEnc || ct == hbaHostNoGSSEnc {
		warns = append(warns, fmt.Sprintf("%s rules never match: pgwarden has no GSSAPI encryption", typ.s))
	}
	if len(fields) < 2 {
		return nil, warns, errors.New("end-of-line before database specification")
	}
	if err := parseHBANames(&r.db, fields[1], true, path, 0); err != nil {
		return nil, warns, err
	}
	if len(fields) < 3 {
		return nil, warns, errors.New("end-of-line before role specification")
	}
	if err := parseHBANames(&r.user, fields[2], false, path, 0); err != nil {
		return nil, warns, err
	}
	for _, f := range []struct {
		what string
		n    *hbaNames
	}{{"database", &r.db}, {"user", &r.user}} {
		if !f.n.all && !f.n.sameUser && !f.n.replication && len(f.n.names) == 0 {
			warns = append(warns, fmt.Sprintf("the %s field is empty; the rule never matches", f.what))
		}
	}
	next := 3
	if ct == hbaLocal {
		r.anyIP = true
	} else {
		if len(fields) < 4 {
			return nil, warns, errors.New("end-of-line before IP address specification")
		}
		used, w, err := r.parseAddress(fields[3:])
		warns = append(warns, w...)
		if err != nil {
			return nil, warns, err
		}
		next += used
	}
	if len(fields) <= next {
		return nil, warns, errors.New("end-of-line before authentication method")
	}
	mt, err := single(fields[next], "authentication type")
	if err != nil {
		return nil, warns, err
	}
	m, ok := hbaMethods[mt.s]
	switch {
	case ok:
		r.method = m
	case hbaUnsupportedMethods[mt.s]:
		return nil, warns, fmt.Errorf("authentication method %q is not supported by pgwarden", mt.s)
	default:
		return nil, warns, fmt.Errorf("invalid authentication method %q", mt.s)
	}
	switch {
	case m == hbaPeer && ct != hbaLocal:
		warns = append(warns, "peer authentication is only possible on Unix sockets; this rule refuses every client it matches")
	case m == hbaCert && ct != hbaHostSSL:
		warns = append(warns, "cert authentication needs TLS; on clients without a certificate this rule refuses the login (use hostssl)")
	}
	for _, f := range fields[next+1:] {
		for _, opt := range f {
			name, _, found := strings.Cut(opt.s, "=")
			switch {
			case !found:
				return nil, warns, fmt.Errorf("authentication option not in name=value format: %s", opt.s)
			case name == "map":
				warns = append(warns, fmt.Sprintf("option %s is ignored: user name maps (auth_ident_file) are not supported yet", opt.s))
			default:
				return nil, warns, fmt.Errorf("authentication option %q is not supported", name)
			}
		}
	}
	return r, warns, nil
}

// maxHBAFileDepth bounds @file nesting.
const maxHBAFileDepth = 10

// parseHBANames fills n from a database (isDB) or user field. from is the
// file the field was read from: @file names are relative to its directory.
func parseHBANames(n *hbaNames, field []hbaToken, isDB bool, from string, depth int) error {
	for _, t := range field {
		switch {
		case t.is("all"):
			n.all = true
		case isDB && t.is("sameuser"):
			n.sameUser = true
		case isDB && t.is("replication"):
			n.replication = true
		case isDB && (t.is("samerole") || t.is("samegroup")):
			return fmt.Errorf("%s is not supported", t.s)
		case !isDB && !t.quoted && strings.HasPrefix(t.s, "+"):
			return fmt.Errorf("group membership (%s) is not supported", t.s)
		case !t.quoted && len(t.s) > 1 && t.s[0] == '@':
			if depth >= maxHBAFileDepth {
				return fmt.Errorf("%s: @file nesting deeper than %d", t.s, maxHBAFileDepth)
			}
			name := t.s[1:]
			if !filepath.IsAbs(name) {
				name = filepath.Join(filepath.Dir(from), name)
			}
			data, err := os.ReadFile(name)
			if err != nil {
				return fmt.Errorf("could not read %s: %w", t.s, err)
			}
			for _, rec := range splitHBARecords(string(data)) {
				fields, err := tokenizeHBALine(rec.text)
				if err != nil {
					return fmt.Errorf("%s:%d: %w", name, rec.line, err)
				}
				for _, f := range fields {
					if err := parseHBANames(n, f, isDB, name, depth+1); err != nil {
						return err
					}
				}
			}
		default:
			n.add(t.s)
		}
	}
	return nil
}

// parseAddress reads the address field (and the mask field after a bare
// address) from fields and returns how many fields it used.
func (r *hbaRule) parseAddress(fields [][]hbaToken) (int, []string, error) {
	tok, err := single(fields[0], "host address")
	if err != nil {
		return 0, nil, err
	}
	if !tok.quoted {
		switch tok.s {
		case "all":
			r.anyIP = true
			return 1, nil, nil
		case "samehost", "samenet":
			return 0, nil, fmt.Errorf("%s is not supported", tok.s)
		}
	}
	addrText, bits, hasBits := strings.Cut(tok.s, "/")
	ip, err := netip.ParseAddr(addrText)
	if err != nil || ip.Zone() != "" {
		if hasBits {
			return 0, nil, fmt.Errorf("invalid IP address %q", addrText)
		}
		return 0, nil, fmt.Errorf("host names are not supported (address %q): use an IP address with a mask", tok.s)
	}
	r.ip = ip
	used := 1
	if hasBits {
		n, err := strconv.Atoi(bits)
		if err != nil || n < 0 || n > ip.BitLen() {
			return 0, nil, fmt.Errorf("invalid CIDR mask in address %q", tok.s)
		}
		pfx := netip.PrefixFrom(netip.IPv6Unspecified(), n)
		if ip.Is4() {
			pfx = netip.PrefixFrom(netip.IPv4Unspecified(), n)
		}
		r.mask = prefixMask(pfx)
	} else {
		if len(fields) < 2 {
			return 0, nil, errors.New("end-of-line before netmask specification")
		}
		mt, err := single(fields[1], "netmask")
		if err != nil {
			return 0, nil, err
		}
		mask, err := netip.ParseAddr(mt.s)
		if err != nil || mask.Zone() != "" {
			return 0, nil, fmt.Errorf("invalid IP mask %q", mt.s)
		}
		if mask.Is4() != ip.Is4() {
			return 0, nil, fmt.Errorf("IP address and mask do not match (%s %s)", ip, mask)
		}
		r.mask = mask.AsSlice()
		used = 2
	}
	var warns []string
	ab := ip.AsSlice()
	for i := range ab {
		if ab[i]&^r.mask[i] != 0 {
			warns = append(warns, fmt.Sprintf("address %s has bits set outside its mask; they are ignored", tok.s))
			break
		}
	}
	return used, warns, nil
}

// prefixMask returns the mask bytes of p's length for p's family.
func prefixMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen() / 8
	m := make([]byte, n)
	bits := p.Bits()
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

// ---- per-configuration cache ----

// hbaEntry is the outcome of reading the HBA file for one configuration.
type hbaEntry struct {
	rules *hbaRules // nil when unusable
}

// hbaCache remembers the rules read for each configuration (weakly: a
// configuration that is no longer referenced drops out), and per file the
// last rules that parsed, kept in force when a reload brings a broken file.
var hbaCache struct {
	mu       sync.Mutex
	byCfg    map[weak.Pointer[config.Config]]*hbaEntry
	lastGood map[string]*hbaRules
}

// hbaRulesFor returns the HBA rules in force for cfg, reading
// cfg.AuthHBAFile the first time cfg is seen and logging its warnings and
// errors then. nil means no usable rules: every client is refused.
func (s *Server) hbaRulesFor(cfg *config.Config) *hbaRules {
	key := weak.Make(cfg)
	hbaCache.mu.Lock()
	defer hbaCache.mu.Unlock()
	if e, ok := hbaCache.byCfg[key]; ok {
		return e.rules
	}
	if hbaCache.byCfg == nil {
		hbaCache.byCfg = map[weak.Pointer[config.Config]]*hbaEntry{}
		hbaCache.lastGood = map[string]*hbaRules{}
	}
	for k := range hbaCache.byCfg {
		if k.Value() == nil {
			delete(hbaCache.byCfg, k)
		}
	}
	e := &hbaEntry{}
	path := cfg.AuthHBAFile
	var rules *hbaRules
	var err error
	if path != "" {
		rules, err = LoadHBA(path)
	}
	switch {
	case path == "":
		s.log.Error("auth_type is hba but auth_hba_file is not set; refusing every client")
	case err != nil:
		var pe *hbaParseError
		if errors.As(err, &pe) {
			for _, p := range pe.problems {
				s.log.Error("auth_hba_file: " + p)
			}
		} else {
			s.log.Error(err.Error())
		}
		if prev := hbaCache.lastGood[path]; prev != nil {
			s.log.Error("auth_hba_file has errors; keeping the rules read before", "file", path)
			e.rules = prev
		} else {
			s.log.Error("auth_hba_file has errors; refusing every client until it is fixed and reloaded", "file", path)
		}
	default:
		for _, w := range rules.warnings {
			s.log.Warn("auth_hba_file: " + w)
		}
		s.log.Debug("auth_hba_file loaded", "file", path, "rules", len(rules.rules))
		hbaCache.lastGood[path] = rules
		e.rules = rules
	}
	hbaCache.byCfg[key] = e
	return e.rules
}

// hbaLookup finds the rule for a sign-in, or returns the failure to report.
func (s *Server) hbaLookup(cfg *config.Config, ex *AuthExchange) (*hbaRule, error) {
	rules := s.hbaRulesFor(cfg)
	if rules == nil {
		return nil, &AuthFailure{Reason: "hba_file_error", Public: errNoAuthMethod()}
	}
	hc := newHBAConn(ex.Unix, ex.Client, ex.TLS, ex.Database, ex.User)
	// As PostgreSQL: the replication keyword matches physical replication
	// connections, which match nothing else; logical ones match the rules
	// of their database.
	hc.replication = ex.physical
	r := rules.match(hc)
	if r == nil {
		return nil, &AuthFailure{Reason: "hba_no_match", Public: errNoAuthMethod()}
	}
	s.log.Debug("hba rule matched", "file", r.file, "line", r.line, "method", r.method.String(), "db", ex.Database, "user", ex.User, "client", ex.Client)
	return r, nil
}

// Client-facing errors of HBA sign-ins. They are built here until errors.go
// has codes for them (codeNoAuthMethod, codeLoginRejected, codePeerFailed);
// the overrides keep the text and SQLSTATE right meanwhile.
func errNoAuthMethod() *pgError {
	return newError(codeNoAuthMethod, "")
}

func errLoginRejected() *pgError {
	return newError(codeLoginRejected, "")
}

func errPeerFailed() *pgError {
	return newError(codePeerFailed, "")
}
