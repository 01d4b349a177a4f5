package authn

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func btEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestBackendTokenProviderFromEnvSelection(t *testing.T) {
	t.Parallel()
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.Method == http.MethodPost {
			btEntraAnswer(w, "from-entra")
			return
		}
		btWriteToken(w, "from-mi", time.Now().Add(time.Hour))
	})
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("federated"), 0o600)

	tests := []struct {
		name     string
		env      map[string]string
		provider string
		path     string
		check    func(t *testing.T, r btSeen)
	}{
		{"workload identity wins", map[string]string{
			"AZURE_FEDERATED_TOKEN_FILE": file, "AZURE_CLIENT_ID": "wi-client", "AZURE_TENANT_ID": "wi-tenant",
			"AZURE_AUTHORITY_HOST": srv.URL + "/", "IDENTITY_ENDPOINT": srv.URL + "/msi", "IDENTITY_HEADER": "h",
		}, ProviderWorkloadIdentity, "/wi-tenant/oauth2/v2.0/token", func(t *testing.T, r btSeen) {
			if r.Form.Get("client_assertion") != "federated" || r.Form.Get("client_id") != "wi-client" {
				t.Errorf("form %v", r.Form)
			}
		}},
		{"App Service", map[string]string{
			"IDENTITY_ENDPOINT": srv.URL + "/msi/token", "IDENTITY_HEADER": "hdr",
		}, ProviderAppService, "/msi/token", func(t *testing.T, r btSeen) {
			if r.Header.Get("X-IDENTITY-HEADER") != "hdr" || r.Query.Get("api-version") != "2019-08-01" || r.Query.Has("client_id") {
				t.Errorf("request %v %v", r.Header, r.Query)
			}
		}},
		{"App Service, user-assigned via AZURE_CLIENT_ID", map[string]string{
			"IDENTITY_ENDPOINT": srv.URL + "/msi/token", "IDENTITY_HEADER": "hdr", "AZURE_CLIENT_ID": "ua",
		}, ProviderAppService, "/msi/token", func(t *testing.T, r btSeen) {
			if r.Query.Get("client_id") != "ua" {
				t.Errorf("query %v", r.Query)
			}
		}},
		{"IMDS by default", map[string]string{}, ProviderIMDS, "/imds", func(t *testing.T, r btSeen) {
			if r.Header.Get("Metadata") != "true" || r.Query.Get("api-version") != "2018-02-01" || r.Query.Has("client_id") ||
				r.Query.Get("resource") != "https://ossrdbms-aad.database.windows.net" {
				t.Errorf("request %v %v", r.Header, r.Query)
			}
		}},
		{"IMDS, user-assigned via AZURE_CLIENT_ID", map[string]string{"AZURE_CLIENT_ID": "ua", "AZURE_TENANT_ID": "ignored"}, ProviderIMDS, "/imds", func(t *testing.T, r btSeen) {
			if r.Query.Get("client_id") != "ua" {
				t.Errorf("query %v", r.Query)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.count()
			p, err := NewProviderFromEnvOptions(EnvOptions{Getenv: btEnv(tc.env), IMDSEndpoint: srv.URL + "/imds"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Name() != tc.provider {
				t.Fatalf("picked %q, want %q", p.Name(), tc.provider)
			}
			btToken(t, p)
			reqs := srv.requests()
			if len(reqs) != before+1 {
				t.Fatalf("%d requests", len(reqs)-before)
			}
			r := reqs[before]
			if r.Path != tc.path {
				t.Errorf("path %q, want %q", r.Path, tc.path)
			}
			tc.check(t, r)
		})
	}
}

func TestBackendTokenProviderFromEnvErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		env  map[string]string
		want string
	}{
		"federated file without client": {map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/f", "AZURE_TENANT_ID": "t"}, "AZURE_CLIENT_ID"},
		"federated file without tenant": {map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/f", "AZURE_CLIENT_ID": "c"}, "AZURE_TENANT_ID"},
		"plain http authority":          {map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/f", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_AUTHORITY_HOST": "http://login.example.com/"}, "https"},
		"endpoint without header":       {map[string]string{"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi"}, "IDENTITY_HEADER"},
		"service fabric":                {map[string]string{"IDENTITY_ENDPOINT": "https://127.0.0.1:2377/", "IDENTITY_HEADER": "h", "IDENTITY_SERVER_THUMBPRINT": "ab"}, "Service Fabric"},
		"azure arc":                     {map[string]string{"IDENTITY_ENDPOINT": "http://127.0.0.1:40342/metadata/identity/oauth2/token", "IMDS_ENDPOINT": "http://127.0.0.1:40342"}, "Azure Arc"},
		"cloud shell":                   {map[string]string{"MSI_ENDPOINT": "http://localhost:50342/oauth2/token"}, "Cloud Shell"},
	}
	for name, tc := range tests {
		if _, err := NewProviderFromEnvOptions(EnvOptions{Getenv: btEnv(tc.env)}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", name, err, tc.want)
		}
	}
}

// NewProviderFromEnv reads the real environment (no t.Parallel: t.Setenv).
func TestBackendTokenProviderFromEnvReal(t *testing.T) {
	for _, k := range []string{"AZURE_FEDERATED_TOKEN_FILE", "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "AZURE_CLIENT_ID"} {
		t.Setenv(k, "")
	}
	t.Setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
	t.Setenv("IDENTITY_HEADER", "h")
	p, err := NewProviderFromEnv("")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Name() != ProviderAppService {
		t.Fatalf("picked %q", p.Name())
	}
}
