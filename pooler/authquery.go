package pooler

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// auth_query: the secret of a user missing from auth_file is looked up on
// the server through a pool (auth database, auth_user), with the extended
// protocol and the user name as $1, as PgBouncer does. Results are cached as
// "dynamic" users, used for the server login as well.

type dynamicUsers struct {
	mu sync.Mutex
	m  map[string]string
}

var dynUsers = &dynamicUsers{m: map[string]string{}}

func (ps *poolSet) dynamicSecret(user string) (string, bool) {
	dynUsers.mu.Lock()
	defer dynUsers.mu.Unlock()
	s, ok := dynUsers.m[user]
	return s, ok
}

// authQuery runs auth_query for user; ok is false when the user does not
// exist (or has no usable password).
func (ps *poolSet) authQuery(ctx context.Context, cfg *config.Config, database, user string) (string, bool, error) {
	authUser, query := effectiveAuthUser(cfg, database)
	db, ok := cfg.LookupDatabase(database)
	if !ok {
		// PgBouncer skips auth_query for unknown databases: mock auth.
		return "", false, nil
	}
	authDB := database
	if db.AuthDBName != "" {
		authDB = db.AuthDBName
	} else if cfg.AuthDBName != "" {
		authDB = cfg.AuthDBName
	}
	adb, ok := cfg.LookupDatabase(authDB)
	if !ok {
		return "", false, newError(codeConfigError, "")
	}
	p := ps.get(cfg, poolKey{db: authDB, user: authUser}, adb)
	actx, cancel := context.WithTimeout(ctx, cfg.ServerConnectTimeout+time.Second)
	defer cancel()
	res, err := p.acquireRaw(actx)
	if err != nil {
		return "", false, err
	}
	sc := res.Value()
	_ = sc.conn.SetDeadline(time.Now().Add(cfg.ServerConnectTimeout))
	secret, found, err := sc.runAuthQuery(query, user)
	_ = sc.conn.SetDeadline(time.Time{})
	if err != nil {
		p.discard(res)
		return "", false, err
	}
	p.release(res)
	if !found {
		return "", false, nil
	}
	dynUsers.mu.Lock()
	dynUsers.m[user] = secret
	dynUsers.mu.Unlock()
	return secret, true, nil
}

func (sc *serverConn) runAuthQuery(query, user string) (string, bool, error) {
	b, p := appendMsg(nil, 'P')
	b = appendCString(b, "")
	b = appendCString(b, query)
	b = appendInt16(b, 0)
	b = finishMsg(b, p)
	b, p = appendMsg(b, 'B')
	b = appendCString(b, "")
	b = appendCString(b, "")
	b = appendInt16(b, 0)
	b = appendInt16(b, 1)
	b = appendInt32(b, int32(len(user)))
	b = append(b, user...)
	b = appendInt16(b, 0)
	b = finishMsg(b, p)
	b, p = appendMsg(b, 'E')
	b = appendCString(b, "")
	b = appendInt32(b, 0)
	b = finishMsg(b, p)
	b = append(b, 'S', 0, 0, 0, 4)
	if _, err := sc.conn.Write(b); err != nil {
		return "", false, err
	}
	rd := msgReader{r: sc.conn, max: maxAuthMessage * 2}
	var secret string
	found := false
	var qerr error
	for {
		t, body, err := rd.readMessage()
		if err != nil {
			return "", false, err
		}
		switch t {
		case 'D':
			row, err := parseDataRow(body)
			if err != nil {
				return "", false, fmt.Errorf("auth_query: %w", err)
			}
			if len(row) != 2 {
				qerr = fmt.Errorf("expected 2 columns from auth_query, not %d", len(row))
				continue
			}
			if row[0] != nil && *row[0] == user {
				found = true
				if row[1] != nil {
					secret = *row[1]
				} else {
					// A NULL password can never match.
					secret = "md5"
				}
			}
		case 'E':
			_, _, msg := parseErrorFields(body)
			qerr = fmt.Errorf("auth_query failed: %s", msg)
		case 'Z':
			if qerr != nil {
				return "", false, qerr
			}
			return secret, found, nil
		}
	}
}

// killPoolClients ends every client of p with pe (database removed,
// KILL). The server connections they hold are closed, after canceling the
// queries in progress on them, so that those end now rather than when the
// server next writes.
func (s *Server) killPoolClients(p *pool, pe *pgError) {
	s.mu.Lock()
	var victims []*clientConn
	var servers, busy []*serverConn
	for c := range s.mu.clients {
		c.mu.Lock()
		if c.pool == p {
			victims = append(victims, c)
			if att := c.mu.att; att != nil {
				servers = append(servers, att.sc)
				if att.inFlight > 0 {
					busy = append(busy, att.sc)
				}
			}
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.kill(pe)
	}
	var wg sync.WaitGroup
	for _, sc := range busy {
		wg.Go(func() { s.cancelServer(sc.network, sc.target, sc.key, sc.tlsOn) })
	}
	wg.Wait()
	for _, sc := range servers {
		_ = sc.conn.Close()
	}
}
