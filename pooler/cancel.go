package pooler

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// cancelRegistry maps the cancel keys the pooler hands to clients onto the
// clients, so that a CancelRequest reaches the server connection serving
// that client at that moment, and nobody else.
type cancelRegistry struct {
	srv *Server
	mu  sync.Mutex
	m   map[[8]byte]*clientConn
}

func newCancelRegistry(s *Server) *cancelRegistry {
	return &cancelRegistry{srv: s, m: map[[8]byte]*clientConn{}}
}

// register gives c a fresh random key.
func (r *cancelRegistry) register(c *clientConn) [8]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		k := newCancelKey()
		if _, dup := r.m[k]; !dup {
			r.m[k] = c
			return k
		}
	}
}

func (r *cancelRegistry) unregister(key [8]byte) {
	r.mu.Lock()
	delete(r.m, key)
	r.mu.Unlock()
}

// forward sends a CancelRequest for the client owning key to the server
// that client is attached to, using the server's own key. Unknown keys and
// idle clients are ignored, as PostgreSQL does.
func (r *cancelRegistry) forward(key [8]byte) {
	r.mu.Lock()
	c := r.m[key]
	r.mu.Unlock()
	if c == nil {
		r.srv.log.Debug("failed cancel request: no such key")
		return
	}
	c.mu.Lock()
	if adm := c.admin; adm != nil {
		c.mu.Unlock()
		adm.cancel()
		return
	}
	att := c.mu.att
	var network, target string
	var skey [8]byte
	tlsOn := false
	if att != nil && att.inFlight > 0 {
		network, target, skey, tlsOn = att.sc.network, att.sc.target, att.sc.key, att.sc.tlsOn
		// The server stays with this client until the cancel is done,
		// so that it cannot reach another client's query.
		att.sc.cancelling.Add(1)
		defer att.sc.cancelling.Done()
	}
	c.mu.Unlock()
	if target == "" {
		r.srv.log.Debug("cancel request for idle client")
		return
	}
	r.srv.cancelServer(network, target, skey, tlsOn)
}

// cancelServer sends a CancelRequest with the server's own key and waits
// until the server has taken it (or cancel_wait_timeout).
func (s *Server) cancelServer(network, target string, skey [8]byte, tlsOn bool) {
	r := s.cancels
	cfg := r.srv.cfg.Load()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.CancelWaitTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, target)
	if err != nil {
		r.srv.log.Warn("cancel request: connect to server failed", "err", err)
		return
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if tlsOn {
		tc, _, err := negotiateServerTLS(r.srv, conn, cfg.ServerTLS.Mode, network, target)
		if err != nil {
			r.srv.log.Warn("cancel request: TLS to server failed", "err", err)
			return
		}
		conn = tc
		defer conn.Close()
	}
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:], 16)
	binary.BigEndian.PutUint32(b[4:], codeCancelRequest)
	copy(b[8:], skey[:])
	if _, err := conn.Write(b); err != nil {
		return
	}
	// PostgreSQL closes the connection once it has taken the request;
	// wait for that so the cancel is in effect when we return.
	var one [1]byte
	_ = conn.SetReadDeadline(time.Now().Add(cfg.CancelWaitTimeout))
	_, _ = conn.Read(one[:])
}
