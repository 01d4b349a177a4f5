// Package faultproxy is a small TCP proxy for fault-injection tests: it sits
// between pgwarden and PostgreSQL (or any two TCP peers) and, on request,
// resets connections after a number of bytes, stops forwarding while keeping
// the sockets open (a half-open connection, as after a network partition),
// delays traffic or caps its bandwidth. Faults apply to the connections
// already open and to the ones accepted later, and are removed with Heal.
//
// Each accepted connection (a link) is forwarded by two goroutines, one per
// direction, reading into a 32 KiB buffer. Upstream is the direction from
// the accepting side (the proxy's client) to the upstream address; Downstream
// is the other one.
//
// The proxy knows nothing of the PostgreSQL protocol, except through the
// optional Front hook, which may run a handshake (an SSLRequest answered
// with a TLS handshake, for instance) on each accepted connection before
// anything is forwarded.
//
// It is meant for tests: every method is safe for concurrent use, and Close
// leaves no goroutine behind.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction is one of a link's two directions.
type Direction int

const (
	// Upstream is from the accepted connection to the upstream address.
	Upstream Direction = iota
	// Downstream is from the upstream address to the accepted connection.
	Downstream
)

func (d Direction) String() string {
	if d == Upstream {
		return "upstream"
	}
	return "downstream"
}

// bufSize is the read buffer of each direction of a link.
const bufSize = 32 << 10

// Proxy forwards TCP connections from its listener to an upstream address.
type Proxy struct {
	ln       net.Listener
	upstream string
	front    atomic.Pointer[func(net.Conn) (net.Conn, error)]

	mu struct {
		sync.Mutex
		links  map[*link]struct{}
		closed bool
		// blackhole: nothing is read or forwarded in either direction
		// until healed is closed.
		blackhole bool
		healed    chan struct{}
		dir       [2]dirFaults
	}
	accepted atomic.Int64
	resets   atomic.Int64
	wg       sync.WaitGroup
}

// dirFaults are the faults of one direction.
type dirFaults struct {
	latency time.Duration
	rate    int // bytes per second; 0 = unlimited
	// resetLeft is armed by ResetAfter: the bytes still to forward in
	// this direction (over all links) before the link carrying the next
	// one is reset; -1 when disarmed.
	resetLeft int64
}

// New starts a proxy listening on 127.0.0.1 (a free port) that forwards to
// upstream (host:port).
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, upstream: upstream}
	p.mu.links = map[*link]struct{}{}
	p.mu.healed = make(chan struct{})
	close(p.mu.healed)
	p.mu.dir[Upstream].resetLeft = -1
	p.mu.dir[Downstream].resetLeft = -1
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's listening port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetFront sets a hook run on each connection accepted from now on, before
// the upstream connection is made: it may talk to the accepted connection
// and returns the connection to forward from (a TLS server wrapped around
// it, say). An error closes the accepted connection; nil removes the hook.
func (p *Proxy) SetFront(f func(net.Conn) (net.Conn, error)) {
	if f == nil {
		p.front.Store(nil)
		return
	}
	p.front.Store(&f)
}

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Resets is the number of links reset by ResetAfter and ResetAll so far.
func (p *Proxy) Resets() int64 { return p.resets.Load() }

// Links is the number of links open now.
func (p *Proxy) Links() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.links)
}

// SetLatency delays each read in direction dir by d before it is written
// on (0 removes the delay). The delay applies per read, so a long stream
// is slowed as well.
func (p *Proxy) SetLatency(dir Direction, d time.Duration) {
	p.mu.Lock()
	p.mu.dir[dir].latency = d
	p.mu.Unlock()
}

// SetBandwidth caps direction dir at bytesPerSec (0 removes the cap).
func (p *Proxy) SetBandwidth(dir Direction, bytesPerSec int) {
	p.mu.Lock()
	p.mu.dir[dir].rate = bytesPerSec
	p.mu.Unlock()
}

// ResetAfter arms a one-shot reset: the next n bytes in direction dir
// (counted over all links) are forwarded, then the link that carries the
// byte after them is reset on both sides (TCP RST, SO_LINGER 0) with that
// byte and the rest of its read unforwarded. The reset waits until the
// peer has acknowledged the bytes forwarded, so it reads exactly n of them
// (on Linux). Choosing n inside a message cuts that message in two.
func (p *Proxy) ResetAfter(dir Direction, n int64) {
	p.mu.Lock()
	p.mu.dir[dir].resetLeft = n
	p.mu.Unlock()
}

// ResetAll resets every open link now (TCP RST both ways).
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.mu.links))
	for l := range p.mu.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.reset()
	}
}

// Blackhole stops (on) or resumes (off) all forwarding: open links stop
// reading and writing, with their sockets kept open, so that the peers see
// neither data nor a close (a half-open connection); new connections are
// accepted but not connected upstream. Data read before the blackhole and
// held back is forwarded when it ends, as after a healed partition.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.mu.blackhole {
		return
	}
	p.mu.blackhole = on
	if on {
		p.mu.healed = make(chan struct{})
	} else {
		close(p.mu.healed)
	}
}

// Heal removes every fault: blackhole, latency, bandwidth caps and armed
// resets.
func (p *Proxy) Heal() {
	p.Blackhole(false)
	p.mu.Lock()
	for i := range p.mu.dir {
		p.mu.dir[i] = dirFaults{resetLeft: -1}
	}
	p.mu.Unlock()
}

// Close stops the listener, closes every link and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.mu.closed = true
	links := make([]*link, 0, len(p.mu.links))
	for l := range p.mu.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		l := &link{p: p, down: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.mu.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.mu.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go l.run()
	}
}

// link is one proxied connection: down is the accepted side, up the
// upstream side.
type link struct {
	p        *Proxy
	down, up net.Conn
	mu       sync.Mutex // guards up (set once connected) and closing
	closing  bool
	done     chan struct{} // closed by close
	once     sync.Once
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer l.forget()
	if f := l.p.front.Load(); f != nil {
		c, err := (*f)(l.down)
		if err != nil {
			l.close()
			return
		}
		l.mu.Lock()
		l.down = c
		l.mu.Unlock()
	}
	// A blackhole also holds connection attempts.
	if !l.wait() {
		return
	}
	up, err := net.DialTimeout("tcp", l.p.upstream, 10*time.Second)
	if err != nil {
		l.close()
		return
	}
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		up.Close()
		return
	}
	l.up = up
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.pump(Downstream, up, l.down)
	}()
	l.pump(Upstream, l.down, up)
	wg.Wait()
}

func (l *link) forget() {
	l.p.mu.Lock()
	delete(l.p.mu.links, l)
	l.p.mu.Unlock()
}

// wait blocks while the proxy is blackholed; false when the link was
// closed meanwhile.
func (l *link) wait() bool {
	for {
		l.p.mu.Lock()
		bh, healed := l.p.mu.blackhole, l.p.mu.healed
		l.p.mu.Unlock()
		if !bh {
			return true
		}
		select {
		case <-healed:
		case <-l.done:
			return false
		}
	}
}

// pump forwards one direction until either side fails, then closes both.
func (l *link) pump(dir Direction, src, dst net.Conn) {
	defer l.close()
	buf := make([]byte, bufSize)
	for {
		if !l.wait() {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			readAt := time.Now()
			if !l.wait() {
				return
			}
			if !l.forward(dir, dst, buf[:n], readAt) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// forward writes b to dst with direction dir's faults applied; false when
// the link is finished.
func (l *link) forward(dir Direction, dst net.Conn, b []byte, readAt time.Time) bool {
	l.p.mu.Lock()
	f := &l.p.mu.dir[dir]
	latency, rate := f.latency, f.rate
	cut := -1
	if f.resetLeft >= 0 {
		if int64(len(b)) > f.resetLeft {
			cut = int(f.resetLeft)
			f.resetLeft = -1
		} else {
			f.resetLeft -= int64(len(b))
		}
	}
	l.p.mu.Unlock()
	if cut >= 0 {
		if cut > 0 {
			_, _ = dst.Write(b[:cut])
			waitSent(dst)
		}
		l.p.resets.Add(1)
		l.reset()
		return false
	}
	if latency > 0 {
		if d := time.Until(readAt.Add(latency)); d > 0 && !l.sleep(d) {
			return false
		}
	}
	for len(b) > 0 {
		chunk := b
		if rate > 0 {
			// About ten writes a second at the capped rate.
			chunk = b[:min(len(b), max(rate/10, 1))]
		}
		start := time.Now()
		if _, err := dst.Write(chunk); err != nil {
			return false
		}
		b = b[len(chunk):]
		if rate > 0 {
			want := time.Duration(float64(len(chunk)) / float64(rate) * float64(time.Second))
			if d := want - time.Since(start); d > 0 && !l.sleep(d) {
				return false
			}
		}
	}
	return true
}

// sleep waits d unless the link closes first.
func (l *link) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

// close closes both sides (a FIN to each peer).
func (l *link) close() {
	l.once.Do(func() {
		l.mu.Lock()
		l.closing = true
		down, up := l.down, l.up
		l.mu.Unlock()
		close(l.done)
		down.Close()
		if up != nil {
			up.Close()
		}
	})
}

// reset closes both sides with a TCP RST.
func (l *link) reset() {
	l.mu.Lock()
	down, up := l.down, l.up
	l.mu.Unlock()
	for _, c := range []net.Conn{down, up} {
		if tc, ok := underlyingTCP(c); ok {
			_ = tc.SetLinger(0)
		}
	}
	l.close()
}

// underlyingTCP finds the *net.TCPConn under c (through a Front hook's
// wrapper when it exposes NetConn, as *tls.Conn does).
func underlyingTCP(c net.Conn) (*net.TCPConn, bool) {
	for i := 0; i < 4 && c != nil; i++ {
		if tc, ok := c.(*net.TCPConn); ok {
			return tc, true
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = w.NetConn()
	}
	return nil, false
}

var _ io.Closer = (*Proxy)(nil)
