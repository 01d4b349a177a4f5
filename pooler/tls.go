package pooler

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// TLS for both legs, built from client_tls_* and server_tls_*. The built
// configs are swapped atomically at RELOAD; connections already established
// keep theirs.

// alpnPostgres is the ALPN protocol name PostgreSQL 17 defined; libpq 17
// offers it on every TLS connection and requires it for direct TLS.
const alpnPostgres = "postgresql"

// TLS protocol bits, as libtls numbers them.
const (
	protoTLS10 = 1 << iota
	protoTLS11
	protoTLS12
	protoTLS13

	protoAll    = protoTLS10 | protoTLS11 | protoTLS12 | protoTLS13
	protoSecure = protoTLS12 | protoTLS13
)

// tlsVersions parses *_tls_protocols with libtls's grammar
// (tls_config_parse_protocols): words separated by ',' or ':', each
// optionally negated with '!', among all/legacy, secure/default, tlsv1 (every
// 1.x), tlsv1.0 … tlsv1.3; a list starting with a negation starts from
// "all". Go takes a version range, not a set, so a list with holes
// ("tlsv1.0,tlsv1.3") allows everything between its lowest and highest.
func tlsVersions(protocols string) (uint16, uint16, error) {
	if strings.TrimSpace(protocols) == "" {
		return tls.VersionTLS12, tls.VersionTLS13, nil
	}
	set := 0
	// Blanks also separate words here, as the config validator allows.
	for _, word := range strings.FieldsFunc(protocols, func(r rune) bool { return r == ',' || r == ':' || r == ' ' || r == '\t' }) {
		w := strings.ToLower(strings.TrimSpace(word))
		negate := false
		if strings.HasPrefix(w, "!") || strings.HasPrefix(w, "-") {
			negate = true
			w = strings.TrimSpace(w[1:])
			if set == 0 {
				set = protoAll
			}
		}
		var bits int
		switch w {
		case "all", "legacy", "tlsv1":
			bits = protoAll
		case "secure", "default":
			bits = protoSecure
		case "tlsv1.0":
			bits = protoTLS10
		case "tlsv1.1":
			bits = protoTLS11
		case "tlsv1.2":
			bits = protoTLS12
		case "tlsv1.3":
			bits = protoTLS13
		default:
			return 0, 0, fmt.Errorf("unknown TLS protocol %q", strings.TrimSpace(word))
		}
		if negate {
			set &^= bits
		} else {
			set |= bits
		}
	}
	var lo, hi uint16
	for i, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13} {
		if set&(1<<i) == 0 {
			continue
		}
		if lo == 0 {
			lo = v
		}
		hi = v
	}
	if lo == 0 {
		return 0, 0, fmt.Errorf("%q leaves no TLS protocol version enabled", protocols)
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
//
// As PgBouncer (libtls verify_client / verify_client_optional): verify-ca
// and verify-full require a client certificate signed by client_tls_ca_file;
// below that a certificate is asked for when a CA file is set and checked
// only if the client sends one. Neither mode matches a host name: there is
// none to match for a client.
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
	c := &tls.Config{
		Certificates:  []tls.Certificate{cert},
		MinVersion:    lo,
		MaxVersion:    hi,
		Renegotiation: tls.RenegotiateNever,
		// A client that offers ALPN must offer "postgresql", as with
		// PostgreSQL 17; clients that offer none are served as before.
		NextProtos: []string{alpnPostgres},
	}
	verify := t.Mode == config.TLSVerifyCA || t.Mode == config.TLSVerifyFull
	if verify && t.CAFile == "" {
		return nil, fmt.Errorf("client_tls_sslmode = %s needs client_tls_ca_file", t.Mode)
	}
	if t.CAFile != "" {
		pool, err := loadCAPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("client_tls_ca_file: %w", err)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if verify {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return c, nil
}

// buildServerTLS returns the base TLS config for connections to
// PostgreSQL, or nil when server TLS is disabled. Go's own verification is
// always off in it: serverTLSFor adds, per connection, the check the mode
// asks for (chain for verify-ca, chain and host name for verify-full,
// nothing below), against RootCAs (server_tls_ca_file; nil means the
// system's roots).
func buildServerTLS(cfg *config.Config) (*tls.Config, error) {
	t := cfg.ServerTLS
	if t.Mode == "" || t.Mode == config.TLSDisable {
		return nil, nil
	}
	lo, hi, err := tlsVersions(t.Protocols)
	if err != nil {
		return nil, fmt.Errorf("server_tls_protocols: %w", err)
	}
	c := &tls.Config{MinVersion: lo, MaxVersion: hi, Renegotiation: tls.RenegotiateNever, InsecureSkipVerify: true}
	if t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("server_tls_key_file and server_tls_cert_file must be set together")
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("server TLS client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
		// Present it whenever the server asks, as libpq and libtls do,
		// even if the server's list of acceptable CAs does not name
		// its issuer (Go would otherwise send no certificate).
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	if t.CAFile != "" {
		c.RootCAs, err = loadCAPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("server_tls_ca_file: %w", err)
		}
	}
	return c, nil
}

// serverTLSFor returns the config for one connection to host (the
// [databases] host as written, a name or an address) in the given
// server_tls_sslmode. allow, prefer and require encrypt without checking
// anything, as libpq does.
func serverTLSFor(base *tls.Config, mode config.TLSMode, host string) *tls.Config {
	c := base.Clone()
	if net.ParseIP(host) == nil {
		c.ServerName = host // SNI
	}
	if mode != config.TLSVerifyCA && mode != config.TLSVerifyFull {
		return c
	}
	roots := base.RootCAs
	checkHost := mode == config.TLSVerifyFull
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyServerCert(cs.PeerCertificates, roots, host, checkHost)
	}
	return c
}

// verifyServerCert checks a PostgreSQL server's certificate chain against
// roots (nil: the system's), and with checkHost its name against host.
// Extended key usages are not enforced (OpenSSL, under libpq and libtls,
// does not either).
func verifyServerCert(certs []*x509.Certificate, roots *x509.CertPool, host string, checkHost bool) error {
	if len(certs) == 0 {
		return errors.New("server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return err
	}
	if !checkHost {
		return nil
	}
	return verifyHostname(certs[0], host)
}

// verifyHostname matches host against the certificate's subjectAltNames,
// and, for a certificate that has none (still common for self-made
// PostgreSQL certificates), against its Common Name, as libpq and libtls
// do. Go itself no longer looks at the Common Name.
func verifyHostname(cert *x509.Certificate, host string) error {
	err := cert.VerifyHostname(host)
	if err == nil {
		return nil
	}
	if len(cert.DNSNames) == 0 && len(cert.IPAddresses) == 0 && matchCommonName(cert.Subject.CommonName, host) {
		return nil
	}
	return err
}

// matchCommonName compares a Common Name with a host name, without regard
// to case, letting a leading "*." stand for exactly one label.
func matchCommonName(cn, host string) bool {
	cn = strings.TrimSuffix(cn, ".")
	host = strings.TrimSuffix(host, ".")
	if cn == "" || host == "" {
		return false
	}
	if strings.EqualFold(cn, host) {
		return true
	}
	if rest, ok := strings.CutPrefix(cn, "*."); ok && net.ParseIP(host) == nil {
		first, tail, found := strings.Cut(host, ".")
		return found && first != "" && strings.EqualFold(rest, tail)
	}
	return false
}

// prefixConn replays bytes already read from a connection before reading
// from it again: the startup code reads a first byte to tell a direct TLS
// handshake from a startup packet.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
