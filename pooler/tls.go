package pooler

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// TLS for both legs, built from client_tls_* and server_tls_*. The built
// configs are swapped atomically at RELOAD; connections already established
// keep theirs.

func tlsVersions(protocols string) (uint16, uint16, error) {
	p := strings.ToLower(strings.TrimSpace(protocols))
	switch p {
	case "", "secure", "default":
		return tls.VersionTLS12, tls.VersionTLS13, nil
	case "all", "legacy":
		return tls.VersionTLS10, tls.VersionTLS13, nil
	}
	var lo, hi uint16
	for _, v := range strings.Split(p, ",") {
		var ver uint16
		switch strings.TrimSpace(v) {
		case "tlsv1.0", "tlsv1":
			ver = tls.VersionTLS10
		case "tlsv1.1":
			ver = tls.VersionTLS11
		case "tlsv1.2":
			ver = tls.VersionTLS12
		case "tlsv1.3":
			ver = tls.VersionTLS13
		default:
			return 0, 0, fmt.Errorf("unknown TLS protocol %q", v)
		}
		if lo == 0 || ver < lo {
			lo = ver
		}
		if ver > hi {
			hi = ver
		}
	}
	return lo, hi, nil
}

func loadCAPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates found", file)
	}
	return pool, nil
}

// buildClientTLS returns the listener-side TLS config, or nil when client
// TLS is disabled.
func buildClientTLS(cfg *config.Config) (*tls.Config, error) {
	t := cfg.ClientTLS
	if t.Mode == "" || t.Mode == config.TLSDisable {
		return nil, nil
	}
	if t.KeyFile == "" || t.CertFile == "" {
		return nil, fmt.Errorf("client_tls_sslmode = %s needs client_tls_key_file and client_tls_cert_file", t.Mode)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("client TLS certificate: %w", err)
	}
	lo, hi, err := tlsVersions(t.Protocols)
	if err != nil {
		return nil, fmt.Errorf("client_tls_protocols: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: lo, MaxVersion: hi, Renegotiation: tls.RenegotiateNever}
	if t.CAFile != "" {
		pool, err := loadCAPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("client_tls_ca_file: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if t.Mode == config.TLSVerifyCA || t.Mode == config.TLSVerifyFull {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return c, nil
}

// buildServerTLS returns the TLS config for connections to PostgreSQL, or
// nil when server TLS is disabled. verify-full also checks the host name
// (set per connection).
func buildServerTLS(cfg *config.Config) (*tls.Config, error) {
	t := cfg.ServerTLS
	if t.Mode == "" || t.Mode == config.TLSDisable {
		return nil, nil
	}
	lo, hi, err := tlsVersions(t.Protocols)
	if err != nil {
		return nil, fmt.Errorf("server_tls_protocols: %w", err)
	}
	c := &tls.Config{MinVersion: lo, MaxVersion: hi, Renegotiation: tls.RenegotiateNever}
	if t.CertFile != "" && t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("server TLS client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	var roots *x509.CertPool
	if t.CAFile != "" {
		roots, err = loadCAPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("server_tls_ca_file: %w", err)
		}
	}
	switch t.Mode {
	case config.TLSVerifyFull:
		c.RootCAs = roots
	case config.TLSVerifyCA:
		// Verify the chain but not the host name.
		c.InsecureSkipVerify = true
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyChain(raw, roots)
		}
	default:
		// allow, prefer, require: encrypt without verifying, as libpq.
		c.InsecureSkipVerify = true
	}
	return c, nil
}

func verifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return fmt.Errorf("server sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err
}
