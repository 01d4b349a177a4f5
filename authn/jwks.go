package authn

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
)

// Token versions, in [Token.Version] and [KeyInfo.Version].
const (
	// EntraV1 is a v1.0 token (iss https://sts.windows.net/{tid}/ in Azure).
	EntraV1 = "1.0"
	// EntraV2 is a v2.0 token (iss https://login.microsoftonline.com/{tid}/v2.0).
	EntraV2 = "2.0"
)

// entraMaxDocument caps a discovery document or key set (Neon uses 64 KiB;
// Entra's common key set is about 10 KiB).
const entraMaxDocument = 1 << 20

// KeyInfo describes one signing key the validator trusts, for SHOW JWKS.
type KeyInfo struct {
	// Tenant and Version ("1.0" or "2.0") name the key set.
	Tenant, Version string
	// Issuer is the iss of the tokens this set validates.
	Issuer string
	// KID is the key ID.
	KID string
	// JWKSURI is where the set is published.
	JWKSURI string
	// FetchedAt is when the set was fetched from the identity provider.
	FetchedAt time.Time
	// Source is [SourceNetwork] or [SourceCacheFile].
	Source string
}

// KeySetInfo describes the state of one key set (a tenant and a token
// version).
type KeySetInfo struct {
	// Tenant and Version ("1.0" or "2.0") name the set.
	Tenant, Version string
	// DiscoveryURL is the OpenID configuration document's URL.
	DiscoveryURL string
	// Issuer and JWKSURI come from the discovery document; empty if it was
	// never obtained.
	Issuer, JWKSURI string
	// Keys is the number of usable keys.
	Keys int
	// FetchedAt is when the keys in use were fetched (zero if none).
	FetchedAt time.Time
	// Source is [SourceNetwork] or [SourceCacheFile] ("" if no keys).
	Source string
	// LastAttempt is when a fetch last finished (zero if none did yet).
	LastAttempt time.Time
	// LastError is the error of that fetch, "" if it succeeded.
	LastError string
}

// entraKey is one usable signing key.
type entraKey struct {
	key *rsa.PublicKey
	// issuer is the non-standard JWK "issuer" member (a template that may
	// contain {tenantid}); when set in a v2 key set, only tokens with that
	// iss may use the key.
	issuer string
}

// entraKeySnap is an immutable view of a key set.
type entraKeySnap struct {
	issuer       string
	discoveryRaw json.RawMessage
	jwksURI      string
	jwksRaw      json.RawMessage
	keys         map[string]entraKey
	fetchedAt    time.Time
	source       string
}

// entraKeySet holds the keys of one tenant for one token version.
type entraKeySet struct {
	v               *Validator
	tenant, version string
	discoveryURL    string
	snap            atomic.Pointer[entraKeySnap]

	mu             sync.Mutex
	flight         *entraFlight
	lastUnknownKID time.Time
	lastAttempt    time.Time
	lastErr        error
}

// entraFlight is a fetch in progress; done is closed when it ends.
type entraFlight struct {
	done chan struct{}
	err  error
}

// start begins a fetch unless one is in flight, and returns the fetch.
func (s *entraKeySet) start(trigger string, discovery bool) *entraFlight {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(trigger, discovery)
}

func (s *entraKeySet) startLocked(trigger string, discovery bool) *entraFlight {
	if s.flight != nil {
		return s.flight
	}
	f := &entraFlight{done: make(chan struct{})}
	s.flight = f
	started := s.v.goBackground(func() {
		err := s.fetch(trigger, discovery)
		s.mu.Lock()
		s.flight = nil
		s.lastAttempt = s.v.cfg.Now()
		s.lastErr = err
		s.mu.Unlock()
		f.err = err
		close(f.done)
		if err == nil {
			s.v.persist()
		}
	})
	if !started {
		s.flight = nil
		f.err = errors.New("validator closed")
		close(f.done)
	}
	return f
}

// fetch gets the discovery document (when asked, or when none is known) and
// the key set, and installs them. On failure the keys in use stay. The
// caller writes the cache file after a success.
func (s *entraKeySet) fetch(trigger string, discovery bool) error {
	v := s.v
	old := s.snap.Load()
	var issuer, jwksURI string
	var discRaw json.RawMessage
	if discovery || old == nil {
		body, err := v.get(s, "discovery", s.discoveryURL, trigger)
		if err != nil {
			v.log.Warn("entra: discovery failed; keeping the keys in use", "tenant", s.tenant, "version", s.version, "url", s.discoveryURL, "trigger", trigger, "err", err)
			return err
		}
		issuer, jwksURI, err = entraParseDiscovery(body, s.tenant)
		if err != nil {
			v.log.Warn("entra: bad discovery document; keeping the keys in use", "tenant", s.tenant, "version", s.version, "url", s.discoveryURL, "err", err)
			return err
		}
		discRaw = body
	} else {
		issuer, jwksURI, discRaw = old.issuer, old.jwksURI, old.discoveryRaw
	}
	body, err := v.get(s, "jwks", jwksURI, trigger)
	if err != nil {
		v.log.Warn("entra: key set fetch failed; keeping the keys in use", "tenant", s.tenant, "version", s.version, "url", jwksURI, "trigger", trigger, "err", err)
		return err
	}
	keys, err := v.parseJWKS(body, jwksURI)
	if err != nil {
		v.log.Warn("entra: bad key set; keeping the keys in use", "tenant", s.tenant, "version", s.version, "url", jwksURI, "err", err)
		return err
	}
	s.install(&entraKeySnap{
		issuer: issuer, discoveryRaw: discRaw, jwksURI: jwksURI, jwksRaw: body,
		keys: keys, fetchedAt: v.cfg.Now(), source: SourceNetwork,
	})
	return nil
}

// install replaces the key set, logs kid changes and tells the observer.
func (s *entraKeySet) install(n *entraKeySnap) {
	old := s.snap.Swap(n)
	var added, removed []string
	for kid := range n.keys {
		if old == nil || !entraHasKey(old.keys, kid) {
			added = append(added, kid)
		}
	}
	if old != nil {
		for kid := range old.keys {
			if !entraHasKey(n.keys, kid) {
				removed = append(removed, kid)
			}
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	if len(added) > 0 || len(removed) > 0 || old == nil || old.issuer != n.issuer {
		s.v.log.Info("entra: signing keys loaded", "tenant", s.tenant, "version", s.version, "issuer", n.issuer,
			"source", n.source, "keys", len(n.keys), "added", added, "removed", removed)
	}
	s.v.obs.KeysLoaded(KeysLoadedEvent{
		Tenant: s.tenant, Version: s.version, Issuer: n.issuer, Keys: len(n.keys),
		Source: n.source, FetchedAt: n.fetchedAt, Added: added, Removed: removed,
	})
}

func entraHasKey(m map[string]entraKey, kid string) bool { _, ok := m[kid]; return ok }

// get fetches a document with the validator's client, timeout and size cap.
func (v *Validator) get(s *entraKeySet, kind, u, trigger string) (body []byte, err error) {
	start := time.Now()
	defer func() {
		v.obs.JWKSFetch(JWKSFetchEvent{Tenant: s.tenant, Version: s.version, Kind: kind, URL: u,
			Trigger: trigger, Err: err, Duration: time.Since(start)})
	}()
	ctx, cancel := context.WithTimeout(v.ctx, v.cfg.HTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "pgwarden")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("GET %s: HTTP status %d", u, resp.StatusCode)
	}
	// The cap stops the read: a declared size over it is refused before
	// any of the body is read, and an undeclared one is read only up to
	// one byte past the cap. Closing the unread body drops the connection.
	if resp.ContentLength > entraMaxDocument {
		return nil, fmt.Errorf("GET %s: document of %d bytes is larger than %d bytes", u, resp.ContentLength, entraMaxDocument)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, entraMaxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > entraMaxDocument {
		return nil, fmt.Errorf("GET %s: document larger than %d bytes", u, entraMaxDocument)
	}
	return body, nil
}

// entraParseDiscovery reads issuer and jwks_uri from an OpenID configuration
// document, substituting {tenantid}.
func entraParseDiscovery(body []byte, tenant string) (issuer, jwksURI string, err error) {
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", "", fmt.Errorf("discovery document: %w", err)
	}
	if doc.Issuer == "" || doc.JWKSURI == "" {
		return "", "", errors.New("discovery document has no issuer or jwks_uri")
	}
	issuer = strings.ReplaceAll(doc.Issuer, "{tenantid}", tenant)
	jwksURI = strings.ReplaceAll(doc.JWKSURI, "{tenantid}", tenant)
	if _, err := entraCheckURL("jwks_uri", jwksURI); err != nil {
		return "", "", err
	}
	return issuer, jwksURI, nil
}

// parseJWKS returns the usable keys of a key set: RSA, use sig (or none),
// alg RS256 (or none), a kid, at least 2048 bits, consistent with its x5c
// certificate if it has one. Other keys are skipped; a set without any
// usable key is an error.
func (v *Validator) parseJWKS(body []byte, from string) (map[string]entraKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	keys := make(map[string]entraKey, len(doc.Keys))
	var skipped []string
	for i, raw := range doc.Keys {
		var m jwkset.JWKMarshal
		var extra struct {
			Issuer string `json:"issuer"`
		}
		if json.Unmarshal(raw, &m) != nil || json.Unmarshal(raw, &extra) != nil {
			skipped = append(skipped, fmt.Sprintf("#%d: not a JWK", i))
			continue
		}
		if m.KTY != jwkset.KtyRSA || (m.USE != "" && m.USE != jwkset.UseSig) ||
			(m.ALG != "" && m.ALG != jwkset.AlgRS256) || m.KID == "" {
			skipped = append(skipped, fmt.Sprintf("%q: not an RS256 signing key", m.KID))
			continue
		}
		m.D, m.P, m.Q, m.DP, m.DQ, m.QI, m.OTH, m.K = "", "", "", "", "", "", nil, ""
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%q: %v", m.KID, err))
			continue
		}
		pub, ok := jwk.Key().(*rsa.PublicKey)
		if !ok || pub.N.BitLen() < 2048 || pub.E < 3 || pub.E%2 == 0 || pub.E > 1<<31-1 {
			skipped = append(skipped, fmt.Sprintf("%q: weak or invalid RSA key", m.KID))
			continue
		}
		if _, dup := keys[m.KID]; dup {
			skipped = append(skipped, fmt.Sprintf("%q: duplicate kid", m.KID))
			continue
		}
		keys[m.KID] = entraKey{key: pub, issuer: extra.Issuer}
	}
	if len(skipped) > 0 {
		v.log.Warn("entra: key set entries skipped", "url", from, "skipped", skipped)
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no usable RS256 key")
	}
	return keys, nil
}

// entraCacheFile is the JSON layout of EntraConfig.JWKSCacheFile.
type entraCacheFile struct {
	Format    string          `json:"format"`
	Authority string          `json:"authority"`
	WrittenAt time.Time       `json:"written_at"`
	Sets      []entraCacheSet `json:"sets"`
}

type entraCacheSet struct {
	Tenant       string          `json:"tenant"`
	Version      string          `json:"version"`
	DiscoveryURL string          `json:"discovery_url"`
	Discovery    json.RawMessage `json:"discovery"`
	JWKS         json.RawMessage `json:"jwks"`
	FetchedAt    time.Time       `json:"fetched_at"`
}

const entraCacheFormat = "pgwarden-entra-jwks/1"

// persist writes every loaded set to the cache file, atomically.
func (v *Validator) persist() {
	if v.cfg.JWKSCacheFile == "" {
		return
	}
	v.persistMu.Lock()
	defer v.persistMu.Unlock()
	f := entraCacheFile{Format: entraCacheFormat, Authority: v.cfg.Authority, WrittenAt: v.cfg.Now().UTC()}
	for _, s := range v.setList {
		snap := s.snap.Load()
		if snap == nil {
			continue
		}
		f.Sets = append(f.Sets, entraCacheSet{
			Tenant: s.tenant, Version: s.version, DiscoveryURL: s.discoveryURL,
			Discovery: snap.discoveryRaw, JWKS: snap.jwksRaw, FetchedAt: snap.fetchedAt.UTC(),
		})
	}
	data, err := json.MarshalIndent(&f, "", "  ")
	if err == nil {
		err = entraWriteFileAtomic(v.cfg.JWKSCacheFile, append(data, '\n'))
	}
	if err != nil {
		v.log.Warn("entra: cannot write the JWKS cache file", "path", v.cfg.JWKSCacheFile, "err", err)
	}
}

// entraWriteFileAtomic writes data to a temporary file next to path, syncs
// it and renames it over path, so readers see the old or the new file.
func entraWriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// loadCacheFile installs the sets found in the cache file that belong to the
// configured authority and tenants. Problems are logged, never fatal.
func (v *Validator) loadCacheFile() {
	if v.cfg.JWKSCacheFile == "" {
		return
	}
	data, err := os.ReadFile(v.cfg.JWKSCacheFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			v.log.Warn("entra: cannot read the JWKS cache file", "path", v.cfg.JWKSCacheFile, "err", err)
		}
		return
	}
	var f entraCacheFile
	if err := json.Unmarshal(data, &f); err != nil || f.Format != entraCacheFormat {
		v.log.Warn("entra: ignoring an unreadable JWKS cache file", "path", v.cfg.JWKSCacheFile, "err", err, "format", f.Format)
		return
	}
	if f.Authority != v.cfg.Authority {
		v.log.Warn("entra: ignoring the JWKS cache file: it was written for another authority",
			"path", v.cfg.JWKSCacheFile, "file_authority", f.Authority, "authority", v.cfg.Authority)
		return
	}
	for _, c := range f.Sets {
		s := v.set(c.Tenant, c.Version)
		if s == nil || s.discoveryURL != c.DiscoveryURL {
			continue
		}
		issuer, jwksURI, err := entraParseDiscovery(c.Discovery, s.tenant)
		if err != nil {
			v.log.Warn("entra: ignoring a cached discovery document", "tenant", c.Tenant, "version", c.Version, "err", err)
			continue
		}
		keys, err := v.parseJWKS(c.JWKS, v.cfg.JWKSCacheFile)
		if err != nil {
			v.log.Warn("entra: ignoring a cached key set", "tenant", c.Tenant, "version", c.Version, "err", err)
			continue
		}
		s.install(&entraKeySnap{
			issuer: issuer, discoveryRaw: c.Discovery, jwksURI: jwksURI, jwksRaw: c.JWKS,
			keys: keys, fetchedAt: c.FetchedAt, source: SourceCacheFile,
		})
	}
}

// set returns the key set of tenant and version, or nil.
func (v *Validator) set(tenant, version string) *entraKeySet {
	p := v.sets[tenant]
	if p == nil {
		return nil
	}
	switch version {
	case EntraV1:
		return p[0]
	case EntraV2:
		return p[1]
	}
	return nil
}

// refreshAll fetches every set (discovery and keys) and waits for all of
// them, or for ctx.
func (v *Validator) refreshAll(ctx context.Context, trigger string) error {
	flights := make([]*entraFlight, len(v.setList))
	for i, s := range v.setList {
		flights[i] = s.start(trigger, true)
	}
	var errs []error
	for i, f := range flights {
		select {
		case <-f.done:
			if f.err != nil {
				s := v.setList[i]
				errs = append(errs, fmt.Errorf("tenant %s v%s: %w", s.tenant, s.version, f.err))
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// loop refreshes every set at RefreshInterval, and retries failures with a
// doubling delay, until the validator is closed.
func (v *Validator) loop(delay time.Duration, trigger string) {
	backoff := v.cfg.RetryInterval
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-v.ctx.Done():
			return
		case <-t.C:
		}
		if err := v.refreshAll(v.ctx, trigger); err != nil {
			if v.ctx.Err() != nil {
				return
			}
			trigger, delay = TriggerRetry, backoff
			backoff = min(2*backoff, v.cfg.RefreshInterval)
		} else {
			trigger, delay = TriggerInterval, v.cfg.RefreshInterval
			backoff = v.cfg.RetryInterval
		}
		t.Reset(delay)
	}
}

// Keys lists the signing keys in use, sorted by tenant, version and kid.
func (v *Validator) Keys() []KeyInfo {
	var out []KeyInfo
	for _, s := range v.setList {
		snap := s.snap.Load()
		if snap == nil {
			continue
		}
		kids := make([]string, 0, len(snap.keys))
		for kid := range snap.keys {
			kids = append(kids, kid)
		}
		slices.Sort(kids)
		for _, kid := range kids {
			out = append(out, KeyInfo{Tenant: s.tenant, Version: s.version, Issuer: snap.issuer, KID: kid,
				JWKSURI: snap.jwksURI, FetchedAt: snap.fetchedAt, Source: snap.source})
		}
	}
	return out
}

// KeySets describes every key set (one per tenant and token version),
// including those whose keys could not be obtained.
func (v *Validator) KeySets() []KeySetInfo {
	out := make([]KeySetInfo, 0, len(v.setList))
	for _, s := range v.setList {
		i := KeySetInfo{Tenant: s.tenant, Version: s.version, DiscoveryURL: s.discoveryURL}
		if snap := s.snap.Load(); snap != nil {
			i.Issuer, i.JWKSURI, i.Keys, i.FetchedAt, i.Source = snap.issuer, snap.jwksURI, len(snap.keys), snap.fetchedAt, snap.source
		}
		s.mu.Lock()
		i.LastAttempt = s.lastAttempt
		if s.lastErr != nil {
			i.LastError = s.lastErr.Error()
		}
		s.mu.Unlock()
		out = append(out, i)
	}
	return out
}
