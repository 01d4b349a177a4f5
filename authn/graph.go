package authn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// entraGraphCacheMax bounds the Graph answer cache.
const entraGraphCacheMax = 10000

type entraGraphKey struct{ tenant, oid, group string }

type entraGraphAnswer struct {
	member bool
	until  time.Time
}

type entraGraphFlight struct {
	done   chan struct{}
	member bool
	err    error
}

// entraGraph asks Microsoft Graph whether a directory object is a
// (transitive) member of a group, with a TTL cache and one request in flight
// per question.
type entraGraph struct {
	v       *Validator
	mu      sync.Mutex
	cache   map[entraGraphKey]entraGraphAnswer
	flights map[entraGraphKey]*entraGraphFlight
}

func newEntraGraph(v *Validator) *entraGraph {
	return &entraGraph{v: v, cache: map[entraGraphKey]entraGraphAnswer{}, flights: map[entraGraphKey]*entraGraphFlight{}}
}

// isMember answers whether object oid of tenant is a member of group. The
// URL is built from the configured endpoint and the (GUID) object IDs; no
// URL from a token is ever used.
func (g *entraGraph) isMember(ctx context.Context, tenant, oid, group string) (bool, error) {
	v := g.v
	k := entraGraphKey{tenant, oid, group}
	now := v.cfg.Now()
	g.mu.Lock()
	if a, ok := g.cache[k]; ok && now.Before(a.until) {
		g.mu.Unlock()
		v.obs.GraphLookup(GraphLookupEvent{Tenant: tenant, OID: oid, Group: group, Result: entraGraphResult(a.member, nil), Cached: true})
		return a.member, nil
	}
	f := g.flights[k]
	if f == nil {
		f = &entraGraphFlight{done: make(chan struct{})}
		g.flights[k] = f
		started := v.goBackground(func() {
			start := time.Now()
			f.member, f.err = g.call(tenant, oid, group)
			d := time.Since(start)
			g.mu.Lock()
			delete(g.flights, k)
			if f.err == nil {
				if len(g.cache) >= entraGraphCacheMax {
					g.sweepLocked(v.cfg.Now())
				}
				g.cache[k] = entraGraphAnswer{member: f.member, until: v.cfg.Now().Add(v.cfg.GraphCacheTTL)}
			}
			g.mu.Unlock()
			if f.err != nil {
				v.log.Warn("entra: Graph membership lookup failed", "tenant", tenant, "oid", oid, "group", group, "err", f.err)
			}
			v.obs.GraphLookup(GraphLookupEvent{Tenant: tenant, OID: oid, Group: group,
				Result: entraGraphResult(f.member, f.err), Err: f.err, Duration: d})
			close(f.done)
		})
		if !started {
			delete(g.flights, k)
			f.err = errors.New("validator closed")
			close(f.done)
		}
	}
	g.mu.Unlock()
	select {
	case <-f.done:
		return f.member, f.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// sweepLocked drops expired answers, or everything if none has expired.
func (g *entraGraph) sweepLocked(now time.Time) {
	for k, a := range g.cache {
		if !now.Before(a.until) {
			delete(g.cache, k)
		}
	}
	if len(g.cache) >= entraGraphCacheMax {
		clear(g.cache)
	}
}

// flush forgets every cached answer.
func (g *entraGraph) flush() {
	g.mu.Lock()
	clear(g.cache)
	g.mu.Unlock()
}

func entraGraphResult(member bool, err error) string {
	switch {
	case err != nil:
		return GraphError
	case member:
		return GraphMember
	}
	return GraphNotMember
}

// call does POST {graph}/v1.0/directoryObjects/{oid}/checkMemberGroups.
func (g *entraGraph) call(tenant, oid, group string) (bool, error) {
	v := g.v
	if v.cfg.GraphToken == nil {
		return false, errors.New("no Graph token source configured")
	}
	ctx, cancel := context.WithTimeout(v.ctx, v.cfg.HTTPTimeout)
	defer cancel()
	tok, err := v.cfg.GraphToken(ctx, tenant)
	if err != nil {
		return false, fmt.Errorf("getting a token for Graph: %w", err)
	}
	body, _ := json.Marshal(map[string][]string{"groupIds": {group}})
	u := v.cfg.GraphEndpoint + "/v1.0/directoryObjects/" + url.PathEscape(oid) + "/checkMemberGroups"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "pgwarden")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, entraMaxDocument))
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		// The object no longer exists: not a member.
		return false, nil
	default:
		return false, fmt.Errorf("POST %s: HTTP status %d: %s", u, resp.StatusCode, entraGraphErrorText(data))
	}
	var out struct {
		Value []string `json:"value"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return false, fmt.Errorf("POST %s: %w", u, err)
	}
	for _, id := range out.Value {
		if strings.EqualFold(id, group) {
			return true, nil
		}
	}
	return false, nil
}

// entraGraphErrorText extracts error.code and error.message from a Graph
// error body, cut short.
func entraGraphErrorText(data []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error.Code == "" {
		return "(no Graph error)"
	}
	s := e.Error.Code + ": " + e.Error.Message
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
