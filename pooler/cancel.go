package pooler

import (
	"context"
	"encoding/binary"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// Cancel keys with peering on (peer_id > 0) are laid out as PgBouncer 1.21
// and later lay them out, so that pgwarden and PgBouncer processes can be
// peers of each other: byte 0 is random with its sign bit clear, bytes 1
// and 2 are the owner's peer_id (low byte first), bytes 3 to 7 are random
// except the low two bits of byte 7, a time-to-live. A key is handed out
// with TTL 3; a process that forwards a key to its owner sends it with TTL
// 0, so it is forwarded once at most: a forwarded key that is again not
// the receiver's is dropped, never sent on (PgBouncer counts down by one;
// either way nothing loops).
const cancelTTLMask = 0x03

// cancelRegistry maps the cancel keys the pooler hands to clients onto the
// clients, so that a CancelRequest reaches the server connection serving
// that client at that moment, and nobody else. Keys are stored with the TTL
// bits set, whatever TTL a request carries.
type cancelRegistry struct {
	srv *Server
	mu  sync.Mutex
	m   map[[8]byte]*clientConn
	// slots caps the cancels forwarded to each peer at once (its
	// pool_size), by peer id.
	slots map[int]chan struct{}
}

func newCancelRegistry(s *Server) *cancelRegistry {
	return &cancelRegistry{srv: s, m: map[[8]byte]*clientConn{}, slots: map[int]chan struct{}{}}
}

// normalKey is the form a key is stored in: TTL bits set.
func normalKey(k [8]byte) [8]byte {
	k[7] |= cancelTTLMask
	return k
}

// register gives c a fresh random key, carrying peer_id when peering is on.
func (r *cancelRegistry) register(c *clientConn) [8]byte {
	peer := r.srv.cfg.Load().PeerID
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		k := newCancelKey()
		if peer > 0 {
			k[1], k[2] = byte(peer), byte(peer>>8)
			k[7] |= cancelTTLMask
		}
		if _, dup := r.m[normalKey(k)]; !dup {
			r.m[normalKey(k)] = c
			return k
		}
	}
}

func (r *cancelRegistry) unregister(key [8]byte) {
	r.mu.Lock()
	delete(r.m, normalKey(key))
	r.mu.Unlock()
}

// forward handles a CancelRequest: a key of one of our clients goes to the
// server that client is attached to, using the server's own key; with
// peering on, a key another peer handed out goes to that peer (once).
// Unknown keys and idle clients are ignored, as PostgreSQL does.
//
// The key is a secret: it is found by a map lookup (hashed with the map's
// random per-process seed), never compared byte by byte, so the time taken
// tells nothing about how much of a guessed key was right.
func (r *cancelRegistry) forward(key [8]byte) {
	r.mu.Lock()
	c := r.m[normalKey(key)]
	r.mu.Unlock()
	if c == nil {
		// Looked up first, so that keys handed out before a RELOAD
		// changed peer_id still work here.
		cfg := r.srv.cfg.Load()
		owner := int(key[1]) | int(key[2])<<8
		if cfg.PeerID > 0 && owner != cfg.PeerID {
			r.toPeer(cfg, owner, key)
			return
		}
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
		att.sc.cancels.Add(1)
		defer func(sc *serverConn) {
			sc.cancels.Add(-1)
			sc.cancelling.Done()
		}(att.sc)
	} else if r := c.mu.repl; r != nil {
		// A replication client's server is its own: the cancel always
		// goes there (pgwarden does not follow what runs on it).
		network, target, skey, tlsOn = r.sc.network, r.sc.target, r.sc.key, r.sc.tlsOn
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
	d := net.Dialer{Resolver: s.opts.Resolver}
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

// toPeer forwards a CancelRequest to the peer that handed out its key, with
// the TTL bits cleared so that the peer does not send it on again.
func (r *cancelRegistry) toPeer(cfg *config.Config, owner int, key [8]byte) {
	if key[7]&cancelTTLMask == 0 {
		r.srv.log.Debug("failed to forward cancel request: it was forwarded to us already (TTL exhausted)", "peer_id", owner)
		return
	}
	p := cfg.PeerByID(owner)
	if p == nil {
		r.srv.log.Debug("failed to forward cancel request: no such peer in [peers]", "peer_id", owner)
		return
	}
	slot := r.peerSlot(cfg, p)
	timer := time.NewTimer(cfg.CancelWaitTimeout)
	select {
	case slot <- struct{}{}:
		timer.Stop()
		defer func() { <-slot }()
	case <-timer.C:
		r.srv.log.Warn("cancel request not forwarded: too many cancels in flight to this peer (pool_size)", "peer_id", owner)
		return
	}
	key[7] &^= cancelTTLMask
	network, addr := peerAddress(p)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.CancelWaitTimeout)
	defer cancel()
	d := net.Dialer{Resolver: r.srv.opts.Resolver}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		r.srv.log.Warn("cancel request: connect to peer failed", "peer_id", owner, "addr", addr, "err", err)
		return
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Plaintext, as PgBouncer sends it to its peers: the key is the only
	// secret on this connection.
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:], 16)
	binary.BigEndian.PutUint32(b[4:], codeCancelRequest)
	copy(b[8:], key[:])
	if _, err := conn.Write(b); err != nil {
		r.srv.log.Warn("cancel request: send to peer failed", "peer_id", owner, "err", err)
		return
	}
	r.srv.log.Debug("cancel request forwarded to peer", "peer_id", owner, "addr", addr)
	// The peer closes the connection once it has passed the request on.
	var one [1]byte
	_, _ = conn.Read(one[:])
}

// peerSlot returns the semaphore bounding the cancels in flight to p,
// sized by its pool_size (default_pool_size when 0).
func (r *cancelRegistry) peerSlot(cfg *config.Config, p *config.Peer) chan struct{} {
	size := p.PoolSize
	if size <= 0 {
		size = cfg.DefaultPoolSize
	}
	size = max(size, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := r.slots[p.ID]
	if ch == nil || cap(ch) != size {
		// A RELOAD changed pool_size: cancels in flight finish on
		// the old channel.
		ch = make(chan struct{}, size)
		r.slots[p.ID] = ch
	}
	return ch
}

// peerAddress is where a peer listens: host:port, or its Unix socket
// .s.PGSQL.<port> in the directory host names ("@dir" is Linux's abstract
// namespace).
func peerAddress(p *config.Peer) (network, addr string) {
	port := strconv.Itoa(p.Port)
	if strings.HasPrefix(p.Host, "/") || strings.HasPrefix(p.Host, "@") {
		return "unix", filepath.Join(p.Host, ".s.PGSQL."+port)
	}
	return "tcp", net.JoinHostPort(p.Host, port)
}
