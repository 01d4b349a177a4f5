package pooler_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

// TestTLSCertificateReload: the listener's certificate files are read
// again at RELOAD (console): a new client sees the new certificate while a
// session opened before keeps its connection; a RELOAD that finds a broken
// key pair fails and the certificate in use stays.
func TestTLSCertificateReload(t *testing.T) {
	f := newTLSFixture(t, t.TempDir(), nil)
	in := startPooler(t, "auth_type = scram-sha-256\npool_mode = transaction\n"+f.clientTLS("require"))
	dsn := in.tlsDSN("127.0.0.1", "alice", "alice-pw", "app", "sslmode=require")
	serial := func(st tls.ConnectionState) string {
		if len(st.PeerCertificates) == 0 {
			t.Fatal("no peer certificate")
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	old := mustConnect(t, dsn)
	oldSerial := serial(tlsState(t, old))

	// New files in place, as a certificate renewal does.
	ca := newTestCA(t, "renewed CA")
	c, k := ca.issue(t, "localhost", []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	if err := os.WriteFile(f.serverCert, c, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.serverKey, k, 0o600); err != nil {
		t.Fatal(err)
	}
	admin := mustConnect(t, in.tlsDSN("127.0.0.1", "admin", "admin-pw", "pgbouncer", "sslmode=require", "default_query_exec_mode=simple_protocol"))
	consoleOK(t, admin, "RELOAD")

	renewed := mustConnect(t, dsn)
	newSerial := serial(tlsState(t, renewed))
	if newSerial == oldSerial {
		t.Fatal("a client after RELOAD got the old certificate")
	}
	if want := ca.cert.Subject.CommonName; tlsState(t, renewed).PeerCertificates[0].Issuer.CommonName != want {
		t.Errorf("issuer %q, want %q", tlsState(t, renewed).PeerCertificates[0].Issuer.CommonName, want)
	}
	// The session from before goes on, on its original handshake.
	if n := queryInt(t, old, "SELECT 1"); n != 1 {
		t.Fatal(n)
	}
	if s := serial(tlsState(t, old)); s != oldSerial {
		t.Errorf("the old session's certificate changed")
	}

	// A key that does not match the certificate: RELOAD fails, the
	// renewed certificate stays in use.
	other, _ := ca.issue(t, "localhost", []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	if err := os.WriteFile(f.serverCert, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, msg := consoleErr(admin, "RELOAD"); msg == "" {
		t.Error("RELOAD accepted a certificate that does not match its key")
	} else {
		t.Logf("RELOAD with a mismatched key pair: %s %s", code, msg)
	}
	after := mustConnect(t, dsn)
	if s := serial(tlsState(t, after)); s != newSerial {
		t.Errorf("after a failed RELOAD the certificate changed")
	}
	queryInt(t, after, "SELECT 1")
}
