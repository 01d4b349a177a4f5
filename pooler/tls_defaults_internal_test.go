package pooler

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// TestTLSDefaults: with the default protocols ("secure", or none written)
// both legs refuse anything older than TLS 1.2, and the leg towards
// PostgreSQL never renegotiates (Go's server side never does).
func TestTLSDefaults(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt, kf := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	for _, protocols := range []string{"", "secure", "default"} {
		cfg := &config.Config{}
		cfg.ClientTLS = config.TLS{Mode: config.TLSRequire, CertFile: crt, KeyFile: kf, Protocols: protocols}
		cfg.ServerTLS = config.TLS{Mode: config.TLSVerifyFull, Protocols: protocols}
		c, err := buildClientTLS(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c.MinVersion != tls.VersionTLS12 || c.MaxVersion != tls.VersionTLS13 {
			t.Errorf("client leg, protocols %q: versions %s-%s", protocols, tls.VersionName(c.MinVersion), tls.VersionName(c.MaxVersion))
		}
		s, err := buildServerTLS(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if s.MinVersion != tls.VersionTLS12 || s.Renegotiation != tls.RenegotiateNever {
			t.Errorf("server leg, protocols %q: min %s, renegotiation %v", protocols, tls.VersionName(s.MinVersion), s.Renegotiation)
		}
		if per := serverTLSFor(s, config.TLSVerifyFull, "localhost"); per.MinVersion != tls.VersionTLS12 || per.Renegotiation != tls.RenegotiateNever {
			t.Errorf("per-connection server config: min %s, renegotiation %v", tls.VersionName(per.MinVersion), per.Renegotiation)
		}
	}
}
