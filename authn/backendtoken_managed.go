package authn

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// DefaultIMDSEndpoint is the token endpoint of the Azure Instance Metadata
// Service (VMs, VM scale sets, AKS nodes).
const DefaultIMDSEndpoint = "http://169.254.169.254/metadata/identity/oauth2/token"

const (
	btIMDSAPIVersion       = "2018-02-01"
	btAppServiceAPIVersion = "2019-08-01"
)

// IMDSOptions configures [NewIMDSProvider]. At most one of ClientID,
// ObjectID and ResourceID may be set; none selects the system-assigned
// identity (one is required when the VM has several user-assigned identities).
type IMDSOptions struct {
	ProviderOptions
	// Endpoint is the IMDS token URL (default [DefaultIMDSEndpoint]).
	Endpoint string
	// ClientID selects a user-assigned identity by client ID (query client_id).
	ClientID string
	// ObjectID selects a user-assigned identity by object ID (query object_id).
	ObjectID string
	// ResourceID selects a user-assigned identity by ARM resource ID (query
	// msi_res_id).
	ResourceID string
}

// NewIMDSProvider returns a cached provider of managed identity tokens from
// IMDS: GET {Endpoint}?api-version=2018-02-01&resource=…[&client_id=…|
// &object_id=…|&msi_res_id=…] with header "Metadata: true", never through a
// proxy (unless Options.HTTPClient says otherwise).
func NewIMDSProvider(opts IMDSOptions) (*CachedProvider, error) {
	fetch, err := newIMDSFetch(opts)
	if err != nil {
		return nil, err
	}
	return NewCachedProvider(ProviderIMDS, fetch, opts.Cache), nil
}

func newIMDSFetch(opts IMDSOptions) (FetchFunc, error) {
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = DefaultIMDSEndpoint
	}
	u, err := btParseEndpoint("IMDS endpoint", endpoint, false)
	if err != nil {
		return nil, err
	}
	id, err := btOneIdentity("IMDS",
		[2]string{"client_id", opts.ClientID},
		[2]string{"object_id", opts.ObjectID},
		[2]string{"msi_res_id", opts.ResourceID})
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("api-version", btIMDSAPIVersion)
	q.Set("resource", btMIResource(opts.resource()))
	if id[0] != "" {
		q.Set(id[0], id[1])
	}
	u.RawQuery = q.Encode()
	target := u.String()
	r := &btRequest{
		provider:        ProviderIMDS,
		client:          opts.httpClient(true),
		policy:          opts.Retry,
		managedIdentity: true,
		now:             opts.now,
		build: func(ctx context.Context) (*http.Request, []string, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return nil, nil, err
			}
			req.Header.Set("Metadata", "true")
			req.Header.Set("Accept", "application/json")
			return req, nil, nil
		},
	}
	return r.do, nil
}

// AppServiceOptions configures [NewAppServiceProvider] (App Service, Azure
// Functions, Container Apps). At most one of ClientID, PrincipalID and
// ResourceID may be set; none selects the system-assigned identity.
type AppServiceOptions struct {
	ProviderOptions
	// Endpoint is the value of IDENTITY_ENDPOINT (required).
	Endpoint string
	// IdentityHeader is the value of IDENTITY_HEADER (required), sent as the
	// X-IDENTITY-HEADER header. It is a secret: it never appears in errors.
	IdentityHeader string
	// ClientID selects a user-assigned identity by client ID (query client_id).
	ClientID string
	// PrincipalID selects a user-assigned identity by object (principal) ID
	// (query principal_id).
	PrincipalID string
	// ResourceID selects a user-assigned identity by ARM resource ID (query
	// mi_res_id).
	ResourceID string
}

// NewAppServiceProvider returns a cached provider of managed identity tokens
// from the App Service identity endpoint: GET
// {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…[&client_id=…|
// &principal_id=…|&mi_res_id=…] with header "X-IDENTITY-HEADER:
// {IDENTITY_HEADER}", never through a proxy (unless Options.HTTPClient says
// otherwise). Retries as for IMDS.
func NewAppServiceProvider(opts AppServiceOptions) (*CachedProvider, error) {
	fetch, err := newAppServiceFetch(opts)
	if err != nil {
		return nil, err
	}
	return NewCachedProvider(ProviderAppService, fetch, opts.Cache), nil
}

func newAppServiceFetch(opts AppServiceOptions) (FetchFunc, error) {
	if opts.Endpoint == "" {
		return nil, errors.New("authn: App Service identity endpoint (IDENTITY_ENDPOINT) is not set")
	}
	if opts.IdentityHeader == "" {
		return nil, errors.New("authn: App Service identity header (IDENTITY_HEADER) is not set")
	}
	u, err := btParseEndpoint("App Service identity endpoint", opts.Endpoint, false)
	if err != nil {
		return nil, err
	}
	id, err := btOneIdentity("App Service",
		[2]string{"client_id", opts.ClientID},
		[2]string{"principal_id", opts.PrincipalID},
		[2]string{"mi_res_id", opts.ResourceID})
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("api-version", btAppServiceAPIVersion)
	q.Set("resource", btMIResource(opts.resource()))
	if id[0] != "" {
		q.Set(id[0], id[1])
	}
	u.RawQuery = q.Encode()
	target := u.String()
	header := opts.IdentityHeader
	r := &btRequest{
		provider:        ProviderAppService,
		client:          opts.httpClient(true),
		policy:          opts.Retry,
		managedIdentity: true,
		now:             opts.now,
		build: func(ctx context.Context) (*http.Request, []string, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return nil, nil, err
			}
			req.Header.Set("X-IDENTITY-HEADER", header)
			req.Header.Set("Accept", "application/json")
			return req, []string{header}, nil
		},
	}
	return r.do, nil
}

// btOneIdentity returns the one set (name, value) pair, or an error when
// more than one is set.
func btOneIdentity(what string, pairs ...[2]string) ([2]string, error) {
	var found [2]string
	var names []string
	for _, p := range pairs {
		if p[1] != "" {
			found = p
			names = append(names, p[0])
		}
	}
	if len(names) > 1 {
		return [2]string{}, errors.New("authn: " + what + " managed identity: give at most one of " + strings.Join(names, ", "))
	}
	return found, nil
}

// btMIResource turns a scope into the resource managed identity endpoints
// expect (MSAL strips "/.default" the same way).
func btMIResource(resource string) string {
	return strings.TrimSuffix(resource, "/.default")
}
