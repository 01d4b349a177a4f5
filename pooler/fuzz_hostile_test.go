package pooler

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// hostileServer is what the pooler's server connections reach in the
// backend fuzz targets: a socket that answers with the fuzz input. It is
// not a model of PostgreSQL; it only knows enough to sit in the right
// place of the conversation (it waits for the pooler's startup packet,
// takes part in TLS when the input says 'S', and puts the pooler's SCRAM
// nonce where the input says {nonce}).
type hostileServer struct {
	ln    net.Listener
	conns chan net.Conn
	tls   *tls.Config
}

func newHostileServer(tb testing.TB, tlsCfg *tls.Config) *hostileServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(tb, err)
	h := &hostileServer{ln: ln, conns: make(chan net.Conn, 16), tls: tlsCfg}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(h.conns)
				return
			}
			h.conns <- c
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return h
}

func (h *hostileServer) port() int { return h.ln.Addr().(*net.TCPAddr).Port }

// serve runs play on the first connection the pooler opens during the
// current input and closes any others (a second login, a cancel request).
// When the input is done, the connection is closed, which ends play.
func (h *hostileServer) serve(t *testing.T, play func(net.Conn)) {
	// Connections left over from an earlier input.
	for drained := false; !drained; {
		select {
		case c := <-h.conns:
			if c != nil {
				c.Close()
			}
		default:
			drained = true
		}
	}
	var mu sync.Mutex
	var cur net.Conn
	stopped := false
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		first := true
		for {
			select {
			case <-done:
				return
			case c, ok := <-h.conns:
				if !ok {
					return
				}
				mu.Lock()
				run := first && !stopped
				if run {
					first, cur = false, c
				}
				mu.Unlock()
				if run {
					play(c)
				}
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		stopped = true
		if cur != nil {
			cur.Close()
		}
		mu.Unlock()
		close(done)
		<-finished
	})
}

// poolerMsg is one message the pooler sent to the hostile server.
type poolerMsg struct {
	typ  byte // 0 for the startup packet
	body []byte
}

// hostileConn is one pooler connection the hostile server is on.
type hostileConn struct {
	conn net.Conn
	msgs chan poolerMsg // what the pooler sends, in order
}

// accept reads the pooler's opening: with expectSSL, its SSLRequest, which
// answer (the first byte of the script) answers; on 'S' a TLS handshake
// follows. It returns nil when the conversation is over already.
func (h *hostileServer) accept(c net.Conn, expectSSL bool, answer byte) *hostileConn {
	_ = c.SetDeadline(time.Now().Add(fuzzReadTimeout))
	if expectSSL {
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return nil
		}
		if binary.BigEndian.Uint32(req[4:]) != codeSSLRequest {
			return nil
		}
		if _, err := c.Write([]byte{answer}); err != nil {
			return nil
		}
		switch answer {
		case 'S':
			tc := tls.Server(c, h.tls)
			if tc.Handshake() != nil {
				return nil
			}
			c = tc
		case 'N':
		default:
			return nil
		}
	}
	hc := &hostileConn{conn: c, msgs: make(chan poolerMsg, 256)}
	go hc.readLoop()
	return hc
}

// readLoop reads the pooler's startup packet and then its messages.
func (hc *hostileConn) readLoop() {
	defer close(hc.msgs)
	var hdr [5]byte
	if _, err := io.ReadFull(hc.conn, hdr[:4]); err != nil {
		return
	}
	n := int(binary.BigEndian.Uint32(hdr[:4]))
	if n < 4 || n > 1<<20 {
		return
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(hc.conn, body); err != nil {
		return
	}
	hc.push(poolerMsg{0, body})
	for {
		if _, err := io.ReadFull(hc.conn, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[1:]))
		if n < 4 || n > 64<<20 {
			return
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(hc.conn, body); err != nil {
			return
		}
		hc.push(poolerMsg{hdr[0], body})
	}
}

func (hc *hostileConn) push(m poolerMsg) {
	select {
	case hc.msgs <- m:
	default: // nobody is looking for that many
	}
}

// waitFor returns the first message from the pooler for which want is
// true, skipping others; ok is false when the pooler stopped sending.
func (hc *hostileConn) waitFor(want func(poolerMsg) bool) (poolerMsg, bool) {
	timer := time.NewTimer(fuzzReadTimeout)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-hc.msgs:
			if !ok {
				return poolerMsg{}, false
			}
			if want(m) {
				return m, true
			}
		case <-timer.C:
			return poolerMsg{}, false
		}
	}
}

// clientNonce waits for the pooler's SASLInitialResponse and returns the
// nonce in its client-first-message.
func (hc *hostileConn) clientNonce() (string, bool) {
	m, ok := hc.waitFor(func(m poolerMsg) bool { return m.typ == 'p' && bytes.Contains(m.body, []byte("r=")) })
	if !ok {
		return "", false
	}
	i := bytes.Index(m.body, []byte("r="))
	r := m.body[i+2:]
	if j := bytes.IndexByte(r, ','); j >= 0 {
		r = r[:j]
	}
	return string(r), true
}

// play writes the script frame by frame (nextFrame), putting the pooler's
// SCRAM nonce in place of {nonce} once a SASL request was sent (before
// that the pooler has no nonce to wait for), then closes its write side
// and reads until the pooler hangs up.
func (hc *hostileConn) play(script []byte) {
	nonce := ""
	saslAsked := false // the pooler was sent a SASL request: its nonce comes
	for len(script) > 0 {
		var frame []byte
		frame, script = nextFrame(script)
		if saslAsked && bytes.Contains(frame, []byte("{nonce}")) {
			if nonce == "" {
				var ok bool
				if nonce, ok = hc.clientNonce(); !ok {
					break
				}
			}
			frame = substitute(frame, "{nonce}", nonce)
		}
		if _, err := hc.conn.Write(frame); err != nil {
			break
		}
		if len(frame) >= 9 && frame[0] == 'R' && binary.BigEndian.Uint32(frame[5:9]) == 10 {
			saslAsked = true
		}
	}
	hc.finish()
}

// finish closes the write side and waits for the pooler to close.
func (hc *hostileConn) finish() {
	closeWrite(hc.conn)
	for range hc.msgs {
	}
}
