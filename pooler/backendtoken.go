package pooler

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/pgwarden/pgwarden/authn"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// Backend Entra tokens: with server_auth = managed_identity, app_service,
// workload_identity, client_secret or client_certificate, server
// connections log in with pgwarden's own access token as the password. The
// providers (authn) cache and refresh the token; one provider per kind and
// settings is shared by all pools.

func isTokenProvider(kind string) bool {
	switch kind {
	case config.ServerAuthManagedIdentity, config.ServerAuthAppService, config.ServerAuthWorkloadIdentity,
		config.ServerAuthClientSecret, config.ServerAuthClientCertificate:
		return true
	}
	return false
}

// tokenProviders holds the providers built so far, keyed by kind and the
// settings they were built from (a reload with other settings builds anew).
type tokenProviders struct {
	mu sync.Mutex
	m  map[string]*authn.CachedProvider
}

func (s *Server) tokenProvider(cfg *config.Config, kind string) (authn.TokenProvider, error) {
	e := cfg.Entra
	key := strings.Join([]string{kind, e.ClientID, e.ObjectID, e.ResourceID, e.TenantID, e.ClientSecretFile, e.ClientCertFile, e.TokenResource, e.IMDSEndpoint, e.TokenEndpointAuthority}, "\x00")
	tp := &s.tokens
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if p, ok := tp.m[key]; ok {
		return p, nil
	}
	p, err := newTokenProvider(e, kind, s.log, s.opts.Observer)
	if err != nil {
		return nil, err
	}
	if tp.m == nil {
		tp.m = map[string]*authn.CachedProvider{}
	}
	tp.m[key] = p
	return p, nil
}

func newTokenProvider(e config.Entra, kind string, log *slog.Logger, obs Observer) (*authn.CachedProvider, error) {
	po := authn.ProviderOptions{Resource: e.TokenResource}
	po.Cache.Observer = func(ev authn.RefreshEvent) {
		obs.BackendTokenRefresh(ev)
		// A failed refresh keeps the current token while it lasts; say so.
		switch ev.Result {
		case authn.RefreshOK:
			log.Debug("entra token refreshed", "provider", ev.Provider, "resource", e.TokenResource, "expires", ev.ExpiresOn)
		case authn.RefreshFailedKeptToken:
			log.Warn("entra token refresh failed; using the current token until it expires", "provider", ev.Provider, "resource", e.TokenResource, "expires", ev.ExpiresOn, "err", ev.Err)
		default:
			log.Error("entra token refresh failed", "provider", ev.Provider, "resource", e.TokenResource, "err", ev.Err)
		}
	}
	env := func(name, fallback string) string {
		if fallback != "" {
			return fallback
		}
		return os.Getenv(name)
	}
	switch kind {
	case config.ServerAuthManagedIdentity:
		return authn.NewIMDSProvider(authn.IMDSOptions{ProviderOptions: po, Endpoint: e.IMDSEndpoint, ClientID: e.ClientID, ObjectID: e.ObjectID, ResourceID: e.ResourceID})
	case config.ServerAuthAppService:
		return authn.NewAppServiceProvider(authn.AppServiceOptions{ProviderOptions: po, Endpoint: os.Getenv("IDENTITY_ENDPOINT"), IdentityHeader: os.Getenv("IDENTITY_HEADER"),
			ClientID: e.ClientID, PrincipalID: e.ObjectID, ResourceID: e.ResourceID})
	case config.ServerAuthWorkloadIdentity:
		return authn.NewWorkloadIdentityProvider(authn.WorkloadIdentityOptions{ProviderOptions: po, TenantID: env("AZURE_TENANT_ID", e.TenantID),
			ClientID: env("AZURE_CLIENT_ID", e.ClientID), TokenFile: os.Getenv("AZURE_FEDERATED_TOKEN_FILE"), AuthorityHost: env("AZURE_AUTHORITY_HOST", e.TokenEndpointAuthority)})
	case config.ServerAuthClientSecret:
		b, err := os.ReadFile(e.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("client_secret_file: %w", err)
		}
		return authn.NewClientSecretProvider(authn.ClientSecretOptions{ProviderOptions: po, TenantID: e.TenantID, ClientID: e.ClientID,
			ClientSecret: strings.TrimSpace(string(b)), AuthorityHost: e.TokenEndpointAuthority})
	case config.ServerAuthClientCertificate:
		return authn.NewClientCertificateProvider(authn.ClientCertificateOptions{ProviderOptions: po, TenantID: e.TenantID, ClientID: e.ClientID,
			CertificateFile: e.ClientCertFile, AuthorityHost: e.TokenEndpointAuthority})
	}
	return nil, errors.New("unknown server_auth " + kind)
}
