package authn

import (
	"errors"
	"os"
)

// Environment variables read by NewProviderFromEnv.
const (
	btEnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	btEnvClientID           = "AZURE_CLIENT_ID"
	btEnvTenantID           = "AZURE_TENANT_ID"
	btEnvAuthorityHost      = "AZURE_AUTHORITY_HOST"
	btEnvIdentityEndpoint   = "IDENTITY_ENDPOINT"
	btEnvIdentityHeader     = "IDENTITY_HEADER"
	envIdentityServerThumb  = "IDENTITY_SERVER_THUMBPRINT"
	envIMDSEndpointAzureArc = "IMDS_ENDPOINT"
	envMSIEndpoint          = "MSI_ENDPOINT"
)

// EnvOptions configures [NewProviderFromEnvOptions].
type EnvOptions struct {
	ProviderOptions
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// IMDSEndpoint replaces [DefaultIMDSEndpoint] when IMDS is chosen.
	IMDSEndpoint string
}

// NewProviderFromEnv picks pgwarden's own token provider from the
// environment, as azidentity does, for the given resource (empty:
// [DefaultTokenResource]). See [NewProviderFromEnvOptions].
func NewProviderFromEnv(resource string) (*CachedProvider, error) {
	return NewProviderFromEnvOptions(EnvOptions{ProviderOptions: ProviderOptions{Resource: resource}})
}

// NewProviderFromEnvOptions picks a provider from the environment:
//
//   - AZURE_FEDERATED_TOKEN_FILE set: workload identity federation with
//     AZURE_CLIENT_ID and AZURE_TENANT_ID (both required) and
//     AZURE_AUTHORITY_HOST (default [DefaultAuthorityHost]);
//   - else IDENTITY_ENDPOINT set: App Service / Functions / Container Apps
//     with IDENTITY_HEADER (required); Service Fabric
//     (IDENTITY_SERVER_THUMBPRINT) and Azure Arc (IMDS_ENDPOINT) are refused
//     as unsupported;
//   - else MSI_ENDPOINT set (Cloud Shell, Azure ML): refused as unsupported;
//   - else managed identity through IMDS.
//
// For App Service and IMDS, AZURE_CLIENT_ID, if set, selects a user-assigned
// identity by client ID (as azidentity's DefaultAzureCredential does).
// Which one was picked is the provider's Name.
func NewProviderFromEnvOptions(opts EnvOptions) (*CachedProvider, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	clientID := getenv(btEnvClientID)
	if file := getenv(btEnvFederatedTokenFile); file != "" {
		if clientID == "" || getenv(btEnvTenantID) == "" {
			return nil, errors.New("authn: " + btEnvFederatedTokenFile + " is set but " + btEnvClientID + " or " + btEnvTenantID + " is not")
		}
		return NewWorkloadIdentityProvider(WorkloadIdentityOptions{
			ProviderOptions: opts.ProviderOptions,
			TenantID:        getenv(btEnvTenantID),
			ClientID:        clientID,
			TokenFile:       file,
			AuthorityHost:   getenv(btEnvAuthorityHost),
		})
	}
	if endpoint := getenv(btEnvIdentityEndpoint); endpoint != "" {
		header := getenv(btEnvIdentityHeader)
		switch {
		case header != "" && getenv(envIdentityServerThumb) != "":
			return nil, errors.New("authn: Service Fabric managed identity (" + envIdentityServerThumb + ") is not supported")
		case header == "" && getenv(envIMDSEndpointAzureArc) != "":
			return nil, errors.New("authn: Azure Arc managed identity (" + btEnvIdentityEndpoint + " with " + envIMDSEndpointAzureArc + ") is not supported")
		case header == "":
			return nil, errors.New("authn: " + btEnvIdentityEndpoint + " is set but " + btEnvIdentityHeader + " is not")
		}
		return NewAppServiceProvider(AppServiceOptions{
			ProviderOptions: opts.ProviderOptions,
			Endpoint:        endpoint,
			IdentityHeader:  header,
			ClientID:        clientID,
		})
	}
	if getenv(envMSIEndpoint) != "" {
		return nil, errors.New("authn: Cloud Shell / Azure ML managed identity (" + envMSIEndpoint + ") is not supported")
	}
	return NewIMDSProvider(IMDSOptions{
		ProviderOptions: opts.ProviderOptions,
		Endpoint:        opts.IMDSEndpoint,
		ClientID:        clientID,
	})
}
