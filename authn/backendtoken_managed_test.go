package authn

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBackendTokenIMDSRequestShape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      IMDSOptions
		wantQuery map[string]string
	}{
		{"system assigned, default resource", IMDSOptions{},
			map[string]string{"api-version": "2018-02-01", "resource": "https://ossrdbms-aad.database.windows.net"}},
		{"client_id", IMDSOptions{ClientID: "11111111-2222-3333-4444-555555555555"},
			map[string]string{"api-version": "2018-02-01", "resource": "https://ossrdbms-aad.database.windows.net", "client_id": "11111111-2222-3333-4444-555555555555"}},
		{"object_id", IMDSOptions{ObjectID: "oid-1"},
			map[string]string{"api-version": "2018-02-01", "resource": "https://ossrdbms-aad.database.windows.net", "object_id": "oid-1"}},
		{"msi_res_id, US Gov resource given as scope", IMDSOptions{ResourceID: "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pgw",
			ProviderOptions: ProviderOptions{Resource: "https://ossrdbms-aad.database.usgovcloudapi.net/.default"}},
			map[string]string{"api-version": "2018-02-01", "resource": "https://ossrdbms-aad.database.usgovcloudapi.net",
				"msi_res_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pgw"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			exp := time.Now().Add(time.Hour).Truncate(time.Second)
			srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				btWriteToken(w, "mi-token", exp)
			})
			opts := tc.opts
			opts.Endpoint = srv.URL + "/metadata/identity/oauth2/token"
			p, err := NewIMDSProvider(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Name() != ProviderIMDS {
				t.Errorf("Name = %q", p.Name())
			}
			tok := btToken(t, p)
			if tok.Token != "mi-token" || !tok.ExpiresOn.Equal(exp) {
				t.Fatalf("token %v", tok)
			}
			reqs := srv.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodGet || r.Path != "/metadata/identity/oauth2/token" || r.Body != "" {
				t.Errorf("request %s %s body %q", r.Method, r.Path, r.Body)
			}
			if got := r.Header.Get("Metadata"); got != "true" {
				t.Errorf("Metadata header %q", got)
			}
			if len(r.Query) != len(tc.wantQuery) {
				t.Errorf("query %v, want %v", r.Query, tc.wantQuery)
			}
			for k, v := range tc.wantQuery {
				if got := r.Query[k]; len(got) != 1 || got[0] != v {
					t.Errorf("query %s = %v, want %q", k, got, v)
				}
			}
		})
	}
}

func TestBackendTokenIMDSOneIdentityOnly(t *testing.T) {
	t.Parallel()
	for _, o := range []IMDSOptions{{ClientID: "a", ObjectID: "b"}, {ClientID: "a", ResourceID: "c"}, {ObjectID: "b", ResourceID: "c"}} {
		if _, err := NewIMDSProvider(o); err == nil || !strings.Contains(err.Error(), "at most one") {
			t.Errorf("%+v: error %v", o, err)
		}
	}
	for _, o := range []AppServiceOptions{{ClientID: "a", PrincipalID: "b"}, {PrincipalID: "b", ResourceID: "c"}} {
		o.Endpoint, o.IdentityHeader = "http://127.0.0.1:1/msi/token", "h"
		if _, err := NewAppServiceProvider(o); err == nil || !strings.Contains(err.Error(), "at most one") {
			t.Errorf("%+v: error %v", o, err)
		}
	}
}

func TestBackendTokenAppServiceRequestShape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		opts      AppServiceOptions
		wantQuery map[string]string
	}{
		{"system assigned", AppServiceOptions{},
			map[string]string{"api-version": "2019-08-01", "resource": "https://ossrdbms-aad.database.windows.net"}},
		{"client_id", AppServiceOptions{ClientID: "cid"},
			map[string]string{"api-version": "2019-08-01", "resource": "https://ossrdbms-aad.database.windows.net", "client_id": "cid"}},
		{"principal_id", AppServiceOptions{PrincipalID: "pid"},
			map[string]string{"api-version": "2019-08-01", "resource": "https://ossrdbms-aad.database.windows.net", "principal_id": "pid"}},
		{"mi_res_id", AppServiceOptions{ResourceID: "/subscriptions/s/x"},
			map[string]string{"api-version": "2019-08-01", "resource": "https://ossrdbms-aad.database.windows.net", "mi_res_id": "/subscriptions/s/x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				// App Service 2019-08-01 answers expires_on as epoch seconds
				w.Write([]byte(`{"access_token":"as-token","expires_on":"4102444800","resource":"https://ossrdbms-aad.database.windows.net","token_type":"Bearer","client_id":"cid"}`))
			})
			opts := tc.opts
			opts.Endpoint = srv.URL + "/msi/token"
			opts.IdentityHeader = "identity-header-secret"
			p, err := NewAppServiceProvider(opts)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name() != ProviderAppService {
				t.Errorf("Name = %q", p.Name())
			}
			tok := btToken(t, p)
			if tok.Token != "as-token" || tok.ExpiresOn.Unix() != 4102444800 {
				t.Fatalf("token %v", tok)
			}
			r := srv.requests()[0]
			if r.Method != http.MethodGet || r.Path != "/msi/token" {
				t.Errorf("request %s %s", r.Method, r.Path)
			}
			if got := r.Header.Get("X-IDENTITY-HEADER"); got != "identity-header-secret" {
				t.Errorf("X-IDENTITY-HEADER %q", got)
			}
			if r.Header.Get("Metadata") != "" {
				t.Error("Metadata header sent to App Service")
			}
			if len(r.Query) != len(tc.wantQuery) {
				t.Errorf("query %v, want %v", r.Query, tc.wantQuery)
			}
			for k, v := range tc.wantQuery {
				if got := r.Query[k]; len(got) != 1 || got[0] != v {
					t.Errorf("query %s = %v, want %q", k, got, v)
				}
			}
		})
	}
	if _, err := NewAppServiceProvider(AppServiceOptions{Endpoint: "http://127.0.0.1:1/"}); err == nil {
		t.Error("missing IDENTITY_HEADER accepted")
	}
	if _, err := NewAppServiceProvider(AppServiceOptions{IdentityHeader: "h"}); err == nil {
		t.Error("missing IDENTITY_ENDPOINT accepted")
	}
}

func TestBackendTokenAppServiceErrorHidesHeader(t *testing.T) {
	t.Parallel()
	const header = "X9f3-identity-header-value"
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"statusCode":400,"message":"Bad X-IDENTITY-HEADER ` + r.Header.Get("X-IDENTITY-HEADER") + `"}`))
	})
	p, _ := NewAppServiceProvider(AppServiceOptions{Endpoint: srv.URL, IdentityHeader: header})
	err := btTokenErr(t, p)
	if strings.Contains(err.Error(), header) || !strings.Contains(err.Error(), "Bad X-IDENTITY-HEADER [REDACTED]") {
		t.Fatalf("error %q", err)
	}
}

// N concurrent Token calls on a cold cache make one request.
func TestBackendTokenProviderConcurrentCallsOneRequest(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := newBTServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		<-release
		btWriteToken(w, "shared", time.Now().Add(time.Hour))
	})
	p, err := NewIMDSProvider(IMDSOptions{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	var wg sync.WaitGroup
	var started sync.WaitGroup
	errs := make(chan error, n)
	started.Add(n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			tok, err := p.Token(context.Background())
			if err == nil && tok.Token != "shared" {
				err = &ProviderError{Provider: "test", Description: "wrong token"}
			}
			errs <- err
		}()
	}
	started.Wait()
	time.Sleep(20 * time.Millisecond) // let the callers pile up on the one refresh
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		btToken(t, p)
	}
	if got := srv.count(); got != 1 {
		t.Fatalf("%d requests for %d concurrent callers, want 1", got, n)
	}
}
