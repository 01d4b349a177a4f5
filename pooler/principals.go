package pooler

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// Principals from the database (entra.principal_query): Azure keeps the
// role ↔ object ID mapping in pgaadauth security labels on the roles;
// pgwarden reads them (or the rows of any query returning role, oid, type,
// admin) on a server connection, at start, every
// principal_refresh_interval and at RELOAD, and merges them with the
// configured principals (the configuration wins for a role in both).

// pgaadauthQuery reads Azure's security labels on roles.
const pgaadauthQuery = `SELECT r.rolname, l.provider, l.label FROM pg_catalog.pg_shseclabel l ` +
	`JOIN pg_catalog.pg_roles r ON r.oid = l.objoid ` +
	`WHERE l.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND l.provider IN ('pgaadauth', 'pgaadauth-int')`

// principalRefresher runs principal_query; owned by the janitor.
type principalRefresher struct {
	running atomic.Bool
	last    atomic.Int64 // UnixNano of the last start
}

// maybeRefreshPrincipals starts a refresh when one is due.
func (s *Server) maybeRefreshPrincipals(now time.Time, force bool) {
	cfg := s.cfg.Load()
	es := s.entra.Load()
	if es == nil || cfg.Entra.PrincipalQuery == "" {
		return
	}
	pr := &s.principalsRefresh
	if !force && now.Sub(time.Unix(0, pr.last.Load())) < cfg.Entra.PrincipalRefreshInterval {
		return
	}
	if !pr.running.CompareAndSwap(false, true) {
		return
	}
	pr.last.Store(now.UnixNano())
	go func() {
		defer pr.running.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ServerConnectTimeout+30*time.Second)
		defer cancel()
		if err := s.refreshPrincipals(ctx, cfg, es); err != nil {
			s.log.Error("entra principal_query failed; keeping the principals in use", "err", err)
		}
	}()
}

// refreshPrincipals runs the query and installs configured + queried
// principals, ending the sessions of those that disappeared.
func (s *Server) refreshPrincipals(ctx context.Context, cfg *config.Config, es *entraSignIn) error {
	dbName := cfg.Entra.PrincipalQueryDatabase
	db, ok := cfg.LookupDatabase(dbName)
	if !ok {
		return fmt.Errorf("principal_query_database %q is not in [databases]", dbName)
	}
	user := db.User
	if user == "" {
		user = cfg.AuthUser
	}
	if user == "" {
		return errors.New("principal_query needs a forced user= on its database or auth_user")
	}
	p := s.pools.get(cfg, poolKey{db: dbName, user: user}, db)
	res, err := p.acquireRaw(ctx)
	if err != nil {
		return err
	}
	sc := res.Value()
	if dl, ok := ctx.Deadline(); ok {
		_ = sc.conn.SetDeadline(dl)
	}
	query := cfg.Entra.PrincipalQuery
	builtin := query == config.PrincipalQueryPGAADAuth
	if builtin {
		query = pgaadauthQuery
	}
	rows, err := sc.queryRows(query)
	_ = sc.conn.SetDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, errServerBroken) {
			p.discard(res)
		} else {
			p.release(res)
		}
		return err
	}
	p.release(res)
	found, problems := principalsFromRows(rows, builtin)
	if problems != nil {
		s.log.Warn("entra principal_query: some rows were skipped", "err", problems)
	}
	return es.mergePrincipals(s, cfg, found)
}

// principalsFromRows reads principal_query's rows: with the built-in
// pgaadauth query, security labels (role, provider, label); otherwise role,
// oid, type and an optional admin flag. Rows that do not fit are skipped
// and described in problems.
func principalsFromRows(rows [][]*string, builtin bool) (found []authn.Principal, problems error) {
	if builtin {
		labels := make([]authn.SecurityLabel, 0, len(rows))
		for _, r := range rows {
			if len(r) == 3 && r[0] != nil && r[1] != nil && r[2] != nil {
				labels = append(labels, authn.SecurityLabel{Role: *r[0], Provider: *r[1], Label: *r[2]})
			}
		}
		return authn.PrincipalsFromSecurityLabels(labels)
	}
	for i, r := range rows {
		if len(r) < 3 || r[0] == nil || r[1] == nil || r[2] == nil {
			problems = errors.Join(problems, fmt.Errorf("principal_query row %d: want role, oid, type[, admin] without NULLs", i+1))
			continue
		}
		admin := len(r) > 3 && r[3] != nil && (*r[3] == "t" || *r[3] == "true" || *r[3] == "1")
		found = append(found, authn.Principal{Role: *r[0], OID: strings.ToLower(*r[1]), Type: strings.ToLower(*r[2]), Admin: admin, Source: "principal_query"})
	}
	return found, problems
}

// mergePrincipals installs the configured principals plus those found by
// the query (the configuration wins for a role in both), and ends the
// sessions of principals that are gone (entra disconnect_on_revoke).
func (es *entraSignIn) mergePrincipals(s *Server, cfg *config.Config, queried []authn.Principal) error {
	configured := map[string]bool{}
	list := configPrincipals(cfg.Entra.Principals)
	for _, p := range list {
		configured[p.Role] = true
	}
	for _, p := range queried {
		if !configured[p.Role] {
			configured[p.Role] = true
			list = append(list, p)
		}
	}
	set, err := authn.NewPrincipals(list)
	if err != nil {
		return err
	}
	es.queried.Store(&queried)
	before := es.principals.Swap(set)
	if cfg.Entra.DisconnectOnRevoke {
		s.revoke(before.Removed(set))
	}
	return nil
}

// maxQueryRowsBytes bounds what queryRows keeps: the values of every row,
// as the server sent them. A principal_query that returns more (millions of
// principals, or a mistaken query) is refused rather than held in memory.
const maxQueryRowsBytes = 16 << 20

// errQueryTooLarge says a result was larger than maxQueryRowsBytes.
var errQueryTooLarge = fmt.Errorf("the query returned more than %d MiB of rows; nothing was used", maxQueryRowsBytes>>20)

// queryRows runs sql with the simple protocol and returns the text values
// of every row (nil for NULL). A server error is returned as *serverError,
// a result larger than maxQueryRowsBytes as errQueryTooLarge; the
// connection stays usable after either (the rest of the result is read and
// dropped).
func (sc *serverConn) queryRows(sql string) ([][]*string, error) {
	sc.paramsFP = ""
	if _, err := sc.conn.Write(appendQuery(nil, sql)); err != nil {
		return nil, fmt.Errorf("%w: %v", errServerBroken, err)
	}
	rd := msgReader{r: sc.conn, max: maxDecodedMessage}
	var rows [][]*string
	var qerr error
	kept := 0
	for {
		t, body, err := rd.readMessage()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errServerBroken, err)
		}
		switch t {
		case 'D':
			if qerr != nil {
				continue // dropping the rest
			}
			if kept += len(body); kept > maxQueryRowsBytes {
				rows, qerr = nil, errQueryTooLarge
				continue
			}
			row, err := parseDataRow(body)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", errServerBroken, err)
			}
			rows = append(rows, row)
		case 'E':
			if qerr == nil {
				sev, code, msg := parseErrorFields(body)
				qerr = &serverError{severity: sev, code: code, msg: msg}
			}
		case 'Z':
			return rows, qerr
		case 'G', 'H', 'W':
			return nil, fmt.Errorf("%w: unexpected COPY", errServerBroken)
		}
	}
}

func parseDataRow(body []byte) ([]*string, error) {
	if len(body) < 2 {
		return nil, errors.New("short DataRow")
	}
	n := int(binary.BigEndian.Uint16(body))
	rest := body[2:]
	if n > len(rest)/4 {
		// Each column takes at least its length word: do not let the
		// count alone size the row.
		return nil, errors.New("short DataRow")
	}
	row := make([]*string, n)
	for i := 0; i < n; i++ {
		if len(rest) < 4 {
			return nil, errors.New("short DataRow")
		}
		l := int(int32(binary.BigEndian.Uint32(rest)))
		rest = rest[4:]
		if l < 0 {
			continue
		}
		if l > len(rest) {
			return nil, errors.New("short DataRow")
		}
		v := string(rest[:l])
		row[i] = &v
		rest = rest[l:]
	}
	return row, nil
}

// queriedPrincipals returns the principals the last principal_query found.
func (es *entraSignIn) queriedPrincipals() []authn.Principal {
	if q := es.queried.Load(); q != nil {
		return *q
	}
	return nil
}
