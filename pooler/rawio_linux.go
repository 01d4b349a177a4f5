//go:build linux

package pooler

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sockIO reads and writes a plain (non-TLS) TCP or Unix socket for the
// relay's hot path. It goes through the socket's own poller (syscall.RawConn),
// so deadlines, Close and the goroutine's parking while the socket is not
// ready behave exactly as with net.Conn's Read and Write; only the system
// call itself is made without the runtime's syscall bookkeeping (the socket
// is non-blocking, so the call never blocks).
//
// Why: with net.Conn, every read(2) and write(2) enters the runtime's
// syscall state, and when the process had gone idle between two requests
// (every Go P idle, the usual case for a pooler that waits on its clients)
// that entry wakes the runtime's monitor thread, which then spins in short
// sleeps until the process idles again. With one client that is most of
// the pooler's CPU per transaction (bench/RESULTS.md has the profiles).
//
// The state of a call lives in the struct so that its closures, bound
// once, make no allocation per call. Whose struct matters: a write's
// bookkeeping after write(2) returns can run after the peer has already
// answered and another goroutine has acted on the answer. So the state of
// writes to a server lives with the writer (the client's sockIO.fwd, used by
// its session goroutine), never with the server connection, which passes
// from client to client as soon as its ReadyForQuery is read; a server's
// reader (the session goroutine or the pump of the client that holds it)
// finishes its bookkeeping before it can hand the server on, so the read
// state may live with the server connection. Writes to a client go through
// its own w under its writeMu.
type sockIO struct {
	rc  syscall.RawConn
	net string

	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool

	w   rawWriter // writes to this socket (a client's: under its writeMu)
	fwd rawWriter // a client's session goroutine's writes to its server

	// peek state: a server connection's holder (or the janitor) looks
	// at it while it is idle.
	pbuf   [1]byte
	pn     uintptr
	perr   syscall.Errno
	peekFn func(fd uintptr)
}

// rawWriter is the state of one writer's calls.
type rawWriter struct {
	buf []byte
	err syscall.Errno
	fn  func(fd uintptr) bool
}

func (w *rawWriter) bind() { w.fn = w.do }

func (w *rawWriter) do(fd uintptr) bool {
	for len(w.buf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.buf[0])), uintptr(len(w.buf)))
		switch e {
		case 0:
			w.buf = w.buf[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.err = e
			return true
		}
	}
	return true
}

// write writes all of b to the socket of rc (net names its network for
// errors), or fails.
func (w *rawWriter) write(rc syscall.RawConn, nw string, b []byte) (int, error) {
	w.buf, w.err = b, 0
	err := rc.Write(w.fn)
	left, e := len(w.buf), w.err
	w.buf = nil
	switch {
	case err != nil:
		return len(b) - left, err
	case e != 0:
		return len(b) - left, &net.OpError{Op: "write", Net: nw, Err: os.NewSyscallError("write", e)}
	}
	return len(b), nil
}

// newSockIO returns the raw reader and writer of conn, or nil when conn is
// not a plain socket (TLS, or anything else): callers then use conn itself.
func newSockIO(conn net.Conn) *sockIO {
	var sc syscall.Conn
	nw := "tcp"
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc, nw = c, "unix"
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sockIO{rc: rc, net: nw}
	s.readFn = s.doRead
	s.w.bind()
	s.fwd.bind()
	s.peekFn = s.doPeek
	return s
}

func (s *sockIO) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch e {
		case 0:
			s.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			s.rerr = e
			return true
		}
	}
}

// read is net.Conn's Read: at least one byte, or an error (io.EOF when the
// peer closed).
func (s *sockIO) read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = b, 0, 0
	err := s.rc.Read(s.readFn)
	n, e := s.rn, s.rerr
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case e != 0:
		return 0, &net.OpError{Op: "read", Net: s.net, Err: os.NewSyscallError("read", e)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// write is net.Conn's Write on this socket, with its own writer state (w).
func (s *sockIO) write(b []byte) (int, error) { return s.w.write(s.rc, s.net, b) }

// forward writes b to the server socket to with this client's forwarding
// state (fwd): the session goroutine's writes to its server.
func (s *sockIO) forward(to *sockIO, b []byte) (int, error) { return s.fwd.write(to.rc, to.net, b) }

func (s *sockIO) doPeek(fd uintptr) {
	for {
		s.pn, _, s.perr = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&s.pbuf[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if s.perr != syscall.EINTR {
			return
		}
	}
}

// readable reports, without waiting and without consuming anything,
// whether the socket has something to read: bytes, the peer's close (EOF)
// or an error such as a reset. On a server connection idle in its pool,
// where nothing is expected, any of these means it must not be reused.
// One recvfrom(MSG_PEEK|MSG_DONTWAIT) without the runtime's syscall
// bookkeeping; it does not allocate.
func (s *sockIO) readable() bool {
	if err := s.rc.Control(s.peekFn); err != nil {
		return true // closed
	}
	return s.perr != syscall.EAGAIN
}
