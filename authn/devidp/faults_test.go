package devidp_test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/authn/devidp"
)

func TestServerFaults(t *testing.T) {
	p, srv := newIdP(t, devidp.Options{})
	disc := srv.URL + "/" + tenant + "/.well-known/openid-configuration"
	keysURL := srv.URL + "/" + tenant + "/discovery/keys"
	fetch := func(u string) (int, http.Header, []byte) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}

	p.SetServerFaults(devidp.ServerFaults{Down: true})
	if code, _, _ := fetch(disc); code != http.StatusServiceUnavailable {
		t.Errorf("down: discovery HTTP %d", code)
	}
	if _, err := devidp.RequestToken(context.Background(), http.DefaultClient, srv.URL, devidp.TokenSpec{OID: userID}); err != nil {
		t.Errorf("down: the mint endpoint is affected: %v", err)
	}

	p.SetServerFaults(devidp.ServerFaults{Garbage: devidp.Keys})
	if code, _, b := fetch(keysURL); code != http.StatusOK || json.Valid(b) {
		t.Errorf("garbage keys: HTTP %d, valid JSON %v", code, json.Valid(b))
	}
	if code, _, b := fetch(disc); code != http.StatusOK || !json.Valid(b) {
		t.Errorf("garbage keys only: discovery HTTP %d %q", code, b)
	}

	var written int64
	done := make(chan struct{})
	p.SetServerFaults(devidp.ServerFaults{Huge: devidp.Discovery, HugeSize: 100_000, OnHugeWritten: func(n int64) { written = n; close(done) }})
	code, hdr, b := fetch(disc)
	<-done
	if code != http.StatusOK || len(b) != 100_000 || written != 100_000 || hdr.Get("Content-Length") != "100000" || !json.Valid(b) {
		t.Errorf("huge: HTTP %d, %d bytes, %d written, Content-Length %q", code, len(b), written, hdr.Get("Content-Length"))
	}
	p.SetServerFaults(devidp.ServerFaults{Huge: devidp.Keys, HugeSize: 1000, HugeChunked: true})
	if _, hdr, b := fetch(keysURL); len(b) != 1000 || hdr.Get("Content-Length") != "" {
		t.Errorf("huge chunked: %d bytes, Content-Length %q", len(b), hdr.Get("Content-Length"))
	}

	// A slow IdP: the client's deadline ends the wait.
	p.SetServerFaults(devidp.ServerFaults{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, disc, nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Error("slow: answered at once")
	}

	p.SetServerFaults(devidp.ServerFaults{GraphDown: true})
	graphTok, err := p.Mint(devidp.TokenSpec{Type: devidp.TypeApp, Audience: devidp.GraphAudience})
	if err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/v1.0/directoryObjects/"+userID+"/checkMemberGroups", strings.NewReader(`{"groupIds":["`+grp+`"]}`))
	req.Header.Set("Authorization", "Bearer "+graphTok)
	if code, m := getJSON(t, req); code != http.StatusServiceUnavailable || m["error"] == nil {
		t.Errorf("Graph down: HTTP %d %v", code, m)
	}
	if code, _, _ := fetch(disc); code != http.StatusOK {
		t.Errorf("Graph down: discovery HTTP %d", code)
	}
	p.SetServerFaults(devidp.ServerFaults{})
	if f := p.ServerFaults(); f.GraphDown || f.Down {
		t.Errorf("faults not cleared: %+v", f)
	}
}

// TestHTTPClient: the in-process client reaches the handler without a
// socket, and honours the request's context.
func TestHTTPClient(t *testing.T) {
	p, err := devidp.New(devidp.Options{Tenants: []string{tenant}, BaseURL: "http://127.0.0.1:1", GenerateKey: func() (*rsa.PrivateKey, error) { return keys()[0], nil }})
	if err != nil {
		t.Fatal(err)
	}
	c := p.HTTPClient()
	resp, err := c.Get("http://127.0.0.1:1/" + tenant + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK || doc["issuer"] != p.Issuer(tenant, "2.0") {
		t.Errorf("HTTP %d %v %v", resp.StatusCode, doc, err)
	}
	resp.Body.Close()
	p.SetServerFaults(devidp.ServerFaults{Down: true})
	if resp, err := c.Get("http://127.0.0.1:1/" + tenant + "/discovery/keys"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("down: %v %v", resp, err)
	}
	p.SetServerFaults(devidp.ServerFaults{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1/"+tenant+"/discovery/keys", nil)
	if _, err := c.Do(req); err == nil {
		t.Error("slow: answered")
	}
}
