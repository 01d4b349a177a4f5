package pooler

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgwarden/pgwarden/pooler/config"
)

// The startup phase: everything a client sends before it is signed in.
// SSLRequest and GSSENCRequest are answered, a CancelRequest is routed and
// the connection closed, and a StartupMessage is parsed into a startup.

const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	protocolV3        = 3 << 16
)

// startup is what a client asked for in its StartupMessage.
type startup struct {
	user     string
	database string
	// params are the session parameters the client set (startup packet and
	// options -c), keyed by lower-case name.
	params map[string]string
	// appName is application_name as SHOW CLIENTS shows it; params is
	// dropped once the client is signed in.
	appName string
	// repl is the kind of replication connection asked for (replication=
	// true or database); replNone for an ordinary one.
	repl replKind
	// options is the raw options parameter of a replication connection,
	// passed on to its server as it is.
	options string
}

// errCancelHandled says the connection carried a CancelRequest that has been
// dealt with; the caller closes the connection silently.
var errCancelHandled = errors.New("cancel request handled")

// readStartup runs the pre-login exchange on a fresh client connection and
// returns the (possibly TLS-wrapped) connection and the parsed startup
// message. On error the caller sends the error (if it is a *pgError) and
// closes the connection.
func (s *Server) readStartup(c *clientConn) (*startup, error) {
	cfg := c.cfg
	for first := true; ; first = false {
		// Every packet of this phase is at least 8 bytes (length and
		// code), and a client sends nothing more before it gets an
		// answer, so reading up to 8 bytes at once never takes bytes of
		// the next packet.
		var hdr [8]byte
		got, err := io.ReadAtLeast(c, hdr[:], 1)
		if err != nil {
			return nil, err
		}
		if first && hdr[0] == tlsRecordHandshake && !c.unix {
			// A TLS ClientHello with no SSLRequest before it: PostgreSQL
			// 17's direct TLS (sslnegotiation=direct). Without client TLS
			// it falls through to "bad packet header", as in PgBouncer.
			if tcfg := s.clientTLSConfig(); tcfg != nil && cfg.ClientTLS.Mode != config.TLSDisable {
				alpn, err := s.acceptTLS(c, &prefixConn{Conn: c.conn, prefix: slices.Clone(hdr[:got])}, tcfg)
				if err != nil {
					return nil, err
				}
				if alpn != alpnPostgres {
					return nil, newError(codeProtocolViolation, "received direct SSL connection request without ALPN protocol negotiation extension")
				}
				continue
			}
		}
		if got < 4 {
			if _, err := io.ReadFull(c, hdr[got:4]); err != nil {
				return nil, err
			}
			got = 4
		}
		n := int(binary.BigEndian.Uint32(hdr[:4]))
		if n < 8 || n > maxStartupPacket {
			return nil, newError(codeProtocolViolation, fmt.Sprintf("bad packet header: '%08x'", binary.BigEndian.Uint32(hdr[:4])))
		}
		if _, err := io.ReadFull(c, hdr[got:8]); err != nil {
			return nil, err
		}
		code := binary.BigEndian.Uint32(hdr[4:8])
		body := make([]byte, n-8)
		if _, err := io.ReadFull(c, body); err != nil {
			return nil, err
		}
		switch code {
		case codeSSLRequest:
			if c.tls {
				return nil, newError(codeProtocolViolation, "SSLRequest received over an encrypted connection")
			}
			tcfg := s.clientTLSConfig()
			if c.unix || tcfg == nil || cfg.ClientTLS.Mode == config.TLSDisable {
				if _, err := c.conn.Write([]byte{'N'}); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := c.conn.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			// Nothing was read past the SSLRequest (the reads above take
			// exactly one packet from the socket), so plaintext injected
			// behind it can only end up in the handshake and fail it: no
			// "received unencrypted data after SSL request" case.
			if _, err := s.acceptTLS(c, c.conn, tcfg); err != nil {
				return nil, err
			}
			continue
		case codeGSSENCRequest:
			if _, err := c.conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
			continue
		case codeCancelRequest:
			if len(body) != 8 {
				return nil, errCancelHandled
			}
			var key [8]byte
			copy(key[:], body)
			// Close the cancel socket first so that timing tells the
			// sender nothing about whether the key matched.
			c.conn.Close()
			s.cancels.forward(key)
			return nil, errCancelHandled
		}
		if code>>16 != 3 {
			if code>>16 == 2 || code>>16 == 1 {
				return nil, newError(codeUnsupportedProtocol, "old V2 protocol not supported")
			}
			return nil, newError(codeProtocolViolation, fmt.Sprintf("bad packet header: '%08x%08x'", n, code))
		}
		// Logins over TCP need TLS from require up; Unix sockets are
		// exempt, and a CancelRequest (handled above) never needs it:
		// libpq before 17, pgJDBC and node-postgres send it in the clear.
		if !c.tls && !c.unix && tlsRequired(cfg.ClientTLS.Mode) {
			return nil, newError(codeSSLRequired, "")
		}
		return s.parseStartup(c, code&0xffff, body)
	}
}

// tlsRecordHandshake is the first byte of a TLS ClientHello record.
const tlsRecordHandshake = 0x16

// tlsRequired reports whether client_tls_sslmode refuses plaintext TCP
// logins.
func tlsRequired(m config.TLSMode) bool {
	return m == config.TLSRequire || m == config.TLSVerifyCA || m == config.TLSVerifyFull
}

// acceptTLS runs the server side of a TLS handshake on conn (the client
// socket, possibly with a replayed first byte) and makes the client
// connection use it, returning the negotiated ALPN protocol. A failed
// handshake is logged and returned as a plain error (not wrapping a
// timeout): nothing is sent to the client, which expects TLS records.
func (s *Server) acceptTLS(c *clientConn, conn net.Conn, tcfg *tls.Config) (string, error) {
	tc := tls.Server(conn, tcfg)
	if err := tc.Handshake(); err != nil {
		s.log.Warn("TLS handshake error", "client", c.remote, "err", err)
		return "", fmt.Errorf("client TLS handshake: %v", err)
	}
	c.writeMu.Lock()
	c.sio = nil // the plain socket's; TLS reads and writes go through tc
	c.conn = tc
	c.tls = true
	c.writeMu.Unlock()
	st := tc.ConnectionState()
	c.tlsDesc = tls.VersionName(st.Version) + "/" + tls.CipherSuiteName(st.CipherSuite)
	return st.NegotiatedProtocol, nil
}

// canonicalParam maps lower-case GUC names to the spelling PostgreSQL uses
// in ParameterStatus.
var canonicalParam = map[string]string{
	"datestyle":                     "DateStyle",
	"timezone":                      "TimeZone",
	"intervalstyle":                 "IntervalStyle",
	"client_encoding":               "client_encoding",
	"application_name":              "application_name",
	"standard_conforming_strings":   "standard_conforming_strings",
	"search_path":                   "search_path",
	"extra_float_digits":            "extra_float_digits",
	"default_transaction_read_only": "default_transaction_read_only",
}

func canonicalName(lower string) string {
	if c, ok := canonicalParam[lower]; ok {
		return c
	}
	return lower
}

// baseTrackedParams are always tracked per client and re-applied when the
// client lands on another server connection (PgBouncer's varcache, plus
// extra_float_digits, which pgJDBC sends in every startup packet).
var baseTrackedParams = []string{"client_encoding", "datestyle", "timezone", "standard_conforming_strings", "application_name", "extra_float_digits"}

func (s *Server) isTracked(cfg *config.Config, lower string) bool {
	for _, p := range baseTrackedParams {
		if p == lower {
			return true
		}
	}
	for _, p := range cfg.TrackExtraParameters {
		if strings.EqualFold(p, lower) {
			return true
		}
	}
	return false
}

func isIgnored(cfg *config.Config, name string) bool {
	for _, p := range cfg.IgnoreStartupParameters {
		if strings.EqualFold(p, name) {
			return true
		}
	}
	return false
}

// parseStartup decodes a v3 StartupMessage body. A client asking for a newer
// minor version or for _pq_ options is sent NegotiateProtocolVersion and
// carries on with 3.0.
func (s *Server) parseStartup(c *clientConn, minor uint32, body []byte) (*startup, error) {
	cfg := c.cfg
	if len(body) == 0 || body[len(body)-1] != 0 {
		return nil, newError(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
	}
	st := &startup{params: map[string]string{}}
	var unrecognized []string
	// First the replication parameter, wherever it is: it decides how
	// options is read (as PgBouncer does).
	for rest := body; len(rest) > 1; {
		k, r, ok := cstring(rest)
		if !ok {
			break
		}
		v, r2, ok := cstring(r)
		if !ok {
			break
		}
		rest = r2
		if k == "replication" {
			kind, ok := parseReplication(v)
			if !ok {
				return nil, &pgError{code: codeReplicationInvalid, arg: v, hint: `Valid values are: "false", 0, "true", 1, "database".`}
			}
			st.repl = kind
		}
	}
	rest := body
	for len(rest) > 1 {
		k, r, ok := cstring(rest)
		if !ok {
			return nil, newError(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
		}
		v, r2, ok := cstring(r)
		if !ok {
			return nil, newError(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
		}
		rest = r2
		lk := strings.ToLower(k)
		switch {
		case k == "user":
			st.user = v
		case k == "database":
			st.database = v
		case k == "replication":
		case k == "options" && st.repl != replNone:
			// As PgBouncer: the server connection is the client's
			// alone, so any option may go to it in its startup packet
			// (CREATE SUBSCRIPTION sends -c extra_float_digits=3,
			// which is not reported and so cannot be tracked).
			st.options = v
		case k == "options":
			if err := s.parseOptions(cfg, st, v); err != nil {
				return nil, err
			}
		case strings.HasPrefix(k, "_pq_."):
			unrecognized = append(unrecognized, k)
		case s.isTracked(cfg, lk):
			st.params[lk] = v
		case isIgnored(cfg, k):
		default:
			return nil, newError(codeUnsupportedStartupParam, k)
		}
	}
	if len(rest) != 1 {
		return nil, newError(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
	}
	if minor > 0 || len(unrecognized) > 0 {
		npv := &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unrecognized}
		b, _ := npv.Encode(nil)
		if err := writeAll(c, b); err != nil {
			return nil, err
		}
	}
	if st.user == "" {
		return nil, newError(codeNoUsername, "")
	}
	if st.database == "" {
		st.database = st.user
	}
	if cfg.ApplicationNameAddHost {
		app := st.params["application_name"]
		st.params["application_name"] = app + " - " + c.remote
	}
	st.appName = st.params["application_name"]
	return st, nil
}

// parseOptions handles the "options" startup parameter: only "-c k=v" and
// "--k=v" are allowed, with backslash escapes, and each key must be one the
// pooler tracks (or be ignored by ignore_startup_parameters = options).
func (s *Server) parseOptions(cfg *config.Config, st *startup, opts string) error {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(opts); i++ {
		ch := opts[i]
		switch {
		case ch == '\\' && i+1 < len(opts):
			i++
			cur.WriteByte(opts[i])
			inWord = true
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	ignoreAll := isIgnored(cfg, "options")
	for i := 0; i < len(words); i++ {
		w := words[i]
		var kv string
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			kv = words[i]
		case strings.HasPrefix(w, "-c") && len(w) > 2:
			kv = w[2:]
		case strings.HasPrefix(w, "--"):
			kv = w[2:]
		default:
			if ignoreAll {
				continue
			}
			return newError(codeUnsupportedOptions, "")
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return newError(codeUnsupportedOptions, "")
		}
		lk := strings.ToLower(strings.ReplaceAll(k, "-", "_"))
		switch {
		case s.isTracked(cfg, lk):
			st.params[lk] = v
		case ignoreAll || isIgnored(cfg, k):
		default:
			return newError(codeUnsupportedStartupParam, "options: "+k)
		}
	}
	return nil
}

// setLoginDeadline bounds the whole login phase by client_login_timeout.
func setLoginDeadline(c net.Conn, d time.Duration) {
	if d > 0 {
		_ = c.SetDeadline(time.Now().Add(d))
	}
}
