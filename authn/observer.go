package authn

import "time"

// Observer receives the events a metrics layer counts. Set it in
// [EntraConfig.Observer]; embed [NopObserver] to implement only some
// methods. Methods are called synchronously, possibly from many goroutines
// at once, and must return quickly.
type Observer interface {
	// JWKSFetch reports one discovery or key set request and its result.
	JWKSFetch(JWKSFetchEvent)
	// KeysLoaded reports a key set installed, from the network or from the
	// cache file; its FetchedAt is the last success time of that set.
	KeysLoaded(KeysLoadedEvent)
	// TokenCache reports a validated-token cache lookup: hit means no RSA
	// verification was needed.
	TokenCache(hit bool)
	// SignatureCheck reports one RSA signature verification and whether it
	// succeeded.
	SignatureCheck(ok bool)
	// GraphLookup reports a group membership question answered by
	// Microsoft Graph or by its cache.
	GraphLookup(GraphLookupEvent)
}

// NopObserver implements [Observer] with methods that do nothing.
type NopObserver struct{}

// JWKSFetch does nothing.
func (NopObserver) JWKSFetch(JWKSFetchEvent) {}

// KeysLoaded does nothing.
func (NopObserver) KeysLoaded(KeysLoadedEvent) {}

// TokenCache does nothing.
func (NopObserver) TokenCache(bool) {}

// SignatureCheck does nothing.
func (NopObserver) SignatureCheck(bool) {}

// GraphLookup does nothing.
func (NopObserver) GraphLookup(GraphLookupEvent) {}

// Triggers of a key set fetch, in [JWKSFetchEvent.Trigger].
const (
	// TriggerStart: the fetch made by NewValidator.
	TriggerStart = "start"
	// TriggerInterval: the periodic refresh.
	TriggerInterval = "interval"
	// TriggerRetry: a retry after a failed refresh.
	TriggerRetry = "retry"
	// TriggerUnknownKID: a token named a kid that no cached key has.
	TriggerUnknownKID = "unknown_kid"
	// TriggerManual: [Validator.Refresh] was called (e.g. by RELOAD).
	TriggerManual = "manual"
)

// Key sources, in [KeyInfo.Source] and [KeysLoadedEvent.Source].
const (
	// SourceNetwork: fetched from the identity provider.
	SourceNetwork = "network"
	// SourceCacheFile: read from EntraConfig.JWKSCacheFile.
	SourceCacheFile = "cache file"
)

// JWKSFetchEvent describes one HTTP request for a discovery document or a
// key set.
type JWKSFetchEvent struct {
	// Tenant and Version ("1.0" or "2.0") name the key set.
	Tenant, Version string
	// Kind is "discovery" or "jwks".
	Kind string
	// URL is the URL requested.
	URL string
	// Trigger is one of the Trigger* constants.
	Trigger string
	// Err is nil on success.
	Err error
	// Duration is the time the request took.
	Duration time.Duration
}

// KeysLoadedEvent describes a key set installed in the validator.
type KeysLoadedEvent struct {
	// Tenant and Version ("1.0" or "2.0") name the key set.
	Tenant, Version string
	// Issuer is the iss value tokens validated with this set carry.
	Issuer string
	// Keys is the number of usable RS256 keys in the set.
	Keys int
	// Source is [SourceNetwork] or [SourceCacheFile].
	Source string
	// FetchedAt is when the set was fetched from the identity provider.
	FetchedAt time.Time
	// Added and Removed list the kids that appeared and disappeared.
	Added, Removed []string
}

// Results of a Graph membership lookup, in [GraphLookupEvent.Result].
const (
	// GraphMember: the principal is a (transitive) member.
	GraphMember = "member"
	// GraphNotMember: it is not.
	GraphNotMember = "not_member"
	// GraphError: no answer (no token source, HTTP or decoding error).
	GraphError = "error"
)

// GraphLookupEvent describes one group membership question.
type GraphLookupEvent struct {
	// Tenant, OID and Group identify the question: is object OID of Tenant
	// a member of group Group?
	Tenant, OID, Group string
	// Result is one of GraphMember, GraphNotMember, GraphError.
	Result string
	// Cached is true when the answer came from the cache.
	Cached bool
	// Err is set when Result is GraphError.
	Err error
	// Duration is the time the HTTP call took (zero when cached).
	Duration time.Duration
}
