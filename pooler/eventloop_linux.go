//go:build linux

package pooler

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The event loop. Go parks a goroutine on its poller for every socket read
// that would block, and wakes it through the scheduler when bytes arrive:
// twice per transaction for a pooler (the client's request, the server's
// answer). On a small machine that bookkeeping costs more CPU per
// transaction than a whole C pooler spends (bench/README.md, "Design
// data"). An eventLoop instead owns a set of sockets outright, on one
// epoll instance driven by one locked OS thread, and calls the owner of
// each socket that turns ready on that thread: the relay's loop path
// (loopclient.go) serves a transaction with no goroutine switch at all.
// When load is light the loop sleeps in Go's poller instead, through a
// second epoll instance (the gate), see sleepInPoller.
//
// A socket the loop owns is a loopConn, a net.Conn over the raw file
// descriptor. The loop takes it from a net.Conn by duplicating the
// descriptor and closing the original, so that Go's own poller no longer
// watches it: two pollers on one socket cost two wake-ups per event. The
// rest of the pooler keeps using it as a net.Conn (sign-in, SET queries,
// the console, fallbacks to a goroutine): a Read or Write that would block
// waits on a channel that the loop signals when the socket turns ready.
//
// Ownership of events: while a loopConn has an owner (setOwner), its
// readiness goes to that owner's handler on the loop thread and no
// goroutine may wait on it; without one, readiness wakes whoever waits in
// Read or Write.

// loopEventHandler is the owner of a loopConn's readiness.
type loopEventHandler interface {
	// loopEvent runs on the loop thread when lc turns readable (hup:
	// the peer closed its end, or the socket failed).
	loopEvent(lc *loopConn, hup bool)
}

// eventLoop is one epoll instance and the OS thread that drives it. It is
// started by Serve and closed when Serve returns.
type eventLoop struct {
	epfd   int
	wakefd int // an eventfd: posted work wakes the loop
	// sleeping is set while the loop sleeps, so that post writes the
	// eventfd only then.
	sleeping atomic.Bool

	// gate is a second epoll instance, registered with Go's poller, that
	// holds epfd only while the loop sleeps in Go's poller, so that the
	// loop's events wake no other thread while it is busy.
	gatefd     int
	gate       *os.File
	gateEv     syscall.EpollEvent // epfd's entry in the gate
	gateBroken bool
	// pollWait is the callback of a sleep in Go's poller; it fills events
	// and sets pollN and pollErr.
	pollWait func(fd uintptr) bool
	pollN    int
	pollErr  syscall.Errno
	events   []syscall.EpollEvent
	// handled counts the events since the loop last slept; perSleep is
	// its moving average over the last sleeps, times 16.
	handled  int
	perSleep int

	conns fdTable // by descriptor; events check the generation

	mu     sync.Mutex
	posted []func()
	spare  []func()
	closed bool

	done chan struct{}
}

// errLoopTableFull: adopt left the socket as it was (its descriptor is
// beyond fdTableSize); it works without the loop.
var errLoopTableFull = errors.New("descriptor beyond the event loop's table")

// fdTable finds the loopConn of a descriptor for the loop thread without
// a lock: slots in chunks allocated on first use and kept.
type fdTable struct {
	mu     sync.Mutex // allocates chunks
	chunks [fdTableSize / fdChunkSize]atomic.Pointer[[fdChunkSize]atomic.Pointer[loopConn]]
}

const (
	fdChunkSize = 1024
	fdTableSize = 1 << 22 // descriptors; beyond that a socket stays off the loop
)

func (t *fdTable) get(fd int32) *loopConn {
	if fd < 0 || fd >= fdTableSize {
		return nil
	}
	c := t.chunks[fd/fdChunkSize].Load()
	if c == nil {
		return nil
	}
	return c[fd%fdChunkSize].Load()
}

func (t *fdTable) set(fd int, lc *loopConn) {
	c := t.chunks[fd/fdChunkSize].Load()
	if c == nil {
		t.mu.Lock()
		if c = t.chunks[fd/fdChunkSize].Load(); c == nil {
			c = new([fdChunkSize]atomic.Pointer[loopConn])
			t.chunks[fd/fdChunkSize].Store(c)
		}
		t.mu.Unlock()
	}
	c[fd%fdChunkSize].Store(lc)
}

// clear empties fd's slot if it still holds lc.
func (t *fdTable) clear(fd int, lc *loopConn) {
	if c := t.chunks[fd/fdChunkSize].Load(); c != nil {
		c[fd%fdChunkSize].CompareAndSwap(lc, nil)
	}
}

// loopConnGen numbers loopConns, so that an event for a descriptor closed
// and reused meanwhile is not taken for the new one.
var loopConnGen atomic.Uint32

func newEventLoop() (*eventLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if e != 0 {
		syscall.Close(epfd)
		return nil, os.NewSyscallError("eventfd2", e)
	}
	wakefd := int(r)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(wakefd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(wakefd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	gatefd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err == nil {
		err = syscall.SetNonblock(gatefd, true)
	}
	if err != nil {
		syscall.Close(epfd)
		syscall.Close(wakefd)
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	l := &eventLoop{epfd: epfd, wakefd: wakefd, gatefd: gatefd, done: make(chan struct{}),
		gateEv: syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(epfd)}}
	l.gate = os.NewFile(uintptr(gatefd), "eventloop")
	go l.run()
	return l, nil
}

// close stops the loop and waits for it. The caller has closed every
// loopConn first.
func (l *eventLoop) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	l.wake()
	<-l.done
	syscall.Close(l.epfd)
	l.gate.Close()
	syscall.Close(l.wakefd)
}

// post runs f on the loop thread, soon.
func (l *eventLoop) post(f func()) {
	l.mu.Lock()
	l.posted = append(l.posted, f)
	l.mu.Unlock()
	if l.sleeping.Load() {
		l.wake()
	}
}

func (l *eventLoop) wake() {
	one := uint64(1)
	syscall.RawSyscall(syscall.SYS_WRITE, uintptr(l.wakefd), uintptr(unsafe.Pointer(&one)), 8)
}

// runPosted runs the functions posted so far; false once the loop is
// closed.
func (l *eventLoop) runPosted() bool {
	l.mu.Lock()
	fs := l.posted
	l.posted = l.spare[:0]
	closed := l.closed
	l.mu.Unlock()
	for i, f := range fs {
		f()
		fs[i] = nil
	}
	l.mu.Lock()
	l.spare = fs[:0]
	l.mu.Unlock()
	return !closed
}

func (l *eventLoop) hasPosted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.posted) > 0 || l.closed
}

func (l *eventLoop) run() {
	runtime.LockOSThread()
	defer close(l.done)
	l.events = make([]syscall.EpollEvent, 256)
	events := l.events
	raw, rawErr := l.gate.SyscallConn()
	l.pollWait = func(uintptr) bool {
		l.pollN, l.pollErr = epollWaitNow(l.epfd, l.events)
		return l.pollN != 0 || l.pollErr != 0
	}
	for {
		if !l.runPosted() {
			return
		}
		// Look without sleeping first: under load there is nearly
		// always something ready, and a blocking epoll_wait goes
		// through the runtime's system call bookkeeping.
		n, e := epollWaitNow(l.epfd, events)
		if n == 0 && e == 0 {
			l.sleeping.Store(true)
			if l.hasPosted() {
				l.sleeping.Store(false)
				continue
			}
			l.perSleep += l.handled*2 - l.perSleep/8
			ok := false
			if l.perSleep <= lightLoad*16 && rawErr == nil && !l.gateBroken {
				n, ok = l.sleepInPoller(raw)
			}
			if !ok {
				var err error
				n, err = syscall.EpollWait(l.epfd, events, -1)
				if err != nil {
					n = 0 // EINTR
				}
			}
			l.sleeping.Store(false)
			l.handled = 0
		}
		l.handled += n
		for i := range n {
			ev := &events[i]
			if int(ev.Fd) == l.wakefd {
				var b [8]byte
				syscall.RawSyscall(syscall.SYS_READ, uintptr(l.wakefd), uintptr(unsafe.Pointer(&b[0])), 8)
				continue
			}
			lc := l.conns.get(ev.Fd)
			if lc == nil || lc.gen != uint32(ev.Pad) {
				continue
			}
			lc.ready(ev.Events)
		}
	}
}

// sleepInPoller waits for the loop's next events in Go's poller, through
// the gate, with the goroutine off its thread. It fills l.events and
// returns how many; false if the gate failed and the caller must wait in
// epoll_wait.
//
// Under light load the loop handles an event or two per wake-up, and
// sleeps as often. A thread blocked in epoll_wait keeps its P, and then
// the runtime's monitor thread polls every 20 µs instead of sleeping:
// more CPU per transaction at 1 client than the relay itself. Under load
// the loop sleeps rarely, and epoll_wait on its own thread wakes it
// sooner, so run picks by the events handled per sleep.
func (l *eventLoop) sleepInPoller(raw syscall.RawConn) (int, bool) {
	if epollCtl(l.gatefd, syscall.EPOLL_CTL_ADD, l.epfd, &l.gateEv) != 0 {
		return 0, false
	}
	l.pollN, l.pollErr = 0, 0
	runtime.UnlockOSThread()
	err := raw.Read(l.pollWait)
	runtime.LockOSThread()
	if e := epollCtl(l.gatefd, syscall.EPOLL_CTL_DEL, l.epfd, &l.gateEv); e != 0 {
		l.gateBroken = true // still in the gate: sleep in epoll_wait from now on
	}
	if err != nil || l.pollErr != 0 {
		return 0, err == nil && l.pollErr == syscall.EINTR // EINTR: look again
	}
	return l.pollN, true
}

// lightLoad is the most events between two sleeps for which the loop
// sleeps in Go's poller rather than in epoll_wait.
const lightLoad = 2

func epollCtl(epfd, op, fd int, ev *syscall.EpollEvent) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return e
}

func epollWaitNow(epfd int, events []syscall.EpollEvent) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(r), e
}

// adopt moves conn, a plain TCP or Unix socket, onto the loop: the returned
// loopConn replaces it, and conn is closed.
func (l *eventLoop) adopt(conn net.Conn) (*loopConn, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr syscall.Errno
	if err := rc.Control(func(s uintptr) {
		r, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		fd, derr = int(r), e
	}); err != nil {
		return nil, err
	}
	if derr != 0 {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	if fd >= fdTableSize {
		syscall.Close(fd)
		return nil, errLoopTableFull
	}
	nw := "tcp"
	if _, unix := conn.(*net.UnixConn); unix {
		nw = "unix"
	}
	lc := &loopConn{l: l, fd: fd, gen: loopConnGen.Add(1), network: nw, laddr: conn.LocalAddr(), raddr: conn.RemoteAddr(),
		rch: make(chan struct{}, 1), wch: make(chan struct{}, 1), closedCh: make(chan struct{})}
	// Go's poller forgets the socket as the original closes; the
	// duplicate keeps it open and non-blocking.
	conn.Close()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		syscall.Close(fd)
		return nil, net.ErrClosed
	}
	l.conns.set(fd, lc)
	l.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | (1 << 31) /* EPOLLET */, Fd: int32(fd), Pad: int32(lc.gen)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.conns.clear(fd, lc)
		syscall.Close(fd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return lc, nil
}

// loopConn is a socket owned by an eventLoop. It implements net.Conn for
// goroutines (one reader and one writer at a time, as with any net.Conn),
// and gives the loop's handlers non-blocking reads and writes.
type loopConn struct {
	l       *eventLoop
	fd      int
	gen     uint32
	network string
	laddr   net.Addr
	raddr   net.Addr

	// owner, when set, receives the readiness on the loop thread.
	owner atomic.Pointer[loopOwner]

	// rch and wch hold one token each: readiness seen since the last
	// wait. A waiter always tries the system call first, so a stale
	// token only costs one more try.
	rch, wch chan struct{}
	closedCh chan struct{}
	// rdl and wdl are the read and write deadlines (UnixNano; 0: none).
	rdl, wdl atomic.Int64
	// rtimer and wtimer belong to the reader and the writer.
	rtimer, wtimer *time.Timer

	// state counts the system calls in progress on fd; lcClosed is set
	// by Close. The descriptor is closed when both hold: closed, none in
	// progress.
	state     atomic.Int64
	closeOnce sync.Once
}

// loopOwner wraps a handler for the atomic pointer.
type loopOwner struct{ h loopEventHandler }

const lcClosed = 1 << 40

func (lc *loopConn) ready(events uint32) {
	if o := lc.owner.Load(); o != nil {
		// Owners never wait to write: only reading matters to them.
		if events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			o.h.loopEvent(lc, events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0)
		}
		return
	}
	if events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		select {
		case lc.rch <- struct{}{}:
		default:
		}
	}
	if events&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		select {
		case lc.wch <- struct{}{}:
		default:
		}
	}
}

// setOwner hands the socket's readiness to o (nil: back to goroutines).
// Handing it to an owner does not report readiness seen before: the new
// owner looks at the socket itself (usually by posting a first call of
// its handler).
func (lc *loopConn) setOwner(o *loopOwner) { lc.owner.Store(o) }

func (lc *loopConn) incref() bool {
	for {
		v := lc.state.Load()
		if v&lcClosed != 0 {
			return false
		}
		if lc.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

func (lc *loopConn) decref() {
	if lc.state.Add(-1) == lcClosed {
		lc.destroy()
	}
}

func (lc *loopConn) destroy() {
	lc.closeOnce.Do(func() {
		l := lc.l
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, lc.fd, nil)
		l.conns.clear(lc.fd, lc)
		syscall.Close(lc.fd)
	})
}

// Close closes the socket; a Read or Write waiting on it returns
// net.ErrClosed.
func (lc *loopConn) Close() error {
	for {
		v := lc.state.Load()
		if v&lcClosed != 0 {
			return lc.opError("close", net.ErrClosed)
		}
		if lc.state.CompareAndSwap(v, v|lcClosed) {
			close(lc.closedCh)
			if v == 0 {
				lc.destroy()
			}
			if lc.owner.Load() != nil {
				// The descriptor is gone from the epoll set, so no
				// readiness will ever tell the owner: the loop
				// tells it, and its next read finds the socket
				// closed.
				lc.l.post(lc.closedEvent)
			}
			return nil
		}
	}
}

// closedEvent runs on the loop thread after Close of an owned socket.
func (lc *loopConn) closedEvent() {
	if o := lc.owner.Load(); o != nil {
		o.h.loopEvent(lc, true)
	}
}

func (lc *loopConn) isClosed() bool { return lc.state.Load()&lcClosed != 0 }

// readNB reads without waiting: n > 0, or io.EOF, or errWouldBlock, or
// another error.
func (lc *loopConn) readNB(b []byte) (int, error) {
	if !lc.incref() {
		return 0, net.ErrClosed
	}
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(lc.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			lc.decref()
			if n == 0 {
				return 0, io.EOF
			}
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			lc.decref()
			return 0, errWouldBlock
		default:
			lc.decref()
			return 0, os.NewSyscallError("read", e)
		}
	}
}

// writeNB writes what the socket takes without waiting: all of b, or a
// part and errWouldBlock, or an error.
func (lc *loopConn) writeNB(b []byte) (int, error) {
	if !lc.incref() {
		return 0, net.ErrClosed
	}
	done := 0
	for done < len(b) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(lc.fd), uintptr(unsafe.Pointer(&b[done])), uintptr(len(b)-done))
		switch e {
		case 0:
			done += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			lc.decref()
			return done, errWouldBlock
		default:
			lc.decref()
			return done, os.NewSyscallError("write", e)
		}
	}
	lc.decref()
	return done, nil
}

// errWouldBlock: the socket is not ready; the loop will say when it is.
var errWouldBlock = errors.New("would block")

// Read is net.Conn's Read.
func (lc *loopConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if err := lc.expired(&lc.rdl, "read"); err != nil {
			return 0, err
		}
		n, err := lc.readNB(b)
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF:
			return 0, io.EOF
		case err != errWouldBlock:
			return 0, lc.opError("read", err)
		}
		if err := lc.wait(lc.rch, &lc.rdl, &lc.rtimer, "read"); err != nil {
			return 0, err
		}
	}
}

// Write is net.Conn's Write.
func (lc *loopConn) Write(b []byte) (int, error) {
	done := 0
	for {
		if err := lc.expired(&lc.wdl, "write"); err != nil {
			return done, err
		}
		n, err := lc.writeNB(b[done:])
		done += n
		switch {
		case err == nil:
			return done, nil
		case err != errWouldBlock:
			return done, lc.opError("write", err)
		}
		if err := lc.wait(lc.wch, &lc.wdl, &lc.wtimer, "write"); err != nil {
			return done, err
		}
	}
}

func (lc *loopConn) expired(dl *atomic.Int64, op string) error {
	if lc.isClosed() {
		return lc.opError(op, net.ErrClosed)
	}
	if d := dl.Load(); d != 0 && time.Now().UnixNano() >= d {
		return lc.opError(op, os.ErrDeadlineExceeded)
	}
	return nil
}

// wait waits for a readiness token on ch, the deadline, or Close.
func (lc *loopConn) wait(ch chan struct{}, dl *atomic.Int64, tp **time.Timer, op string) error {
	var tc <-chan time.Time
	if d := dl.Load(); d != 0 {
		left := time.Duration(d - time.Now().UnixNano())
		if left <= 0 {
			return lc.opError(op, os.ErrDeadlineExceeded)
		}
		if *tp == nil {
			*tp = time.NewTimer(left)
		} else {
			(*tp).Reset(left)
		}
		tc = (*tp).C
		defer (*tp).Stop()
	}
	select {
	case <-ch:
	case <-tc:
	case <-lc.closedCh:
		return lc.opError(op, net.ErrClosed)
	}
	return nil
}

func (lc *loopConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: lc.network, Source: lc.laddr, Addr: lc.raddr, Err: err}
}

func (lc *loopConn) LocalAddr() net.Addr  { return lc.laddr }
func (lc *loopConn) RemoteAddr() net.Addr { return lc.raddr }

func (lc *loopConn) SetDeadline(t time.Time) error {
	_ = lc.SetReadDeadline(t)
	return lc.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline and wakes a waiting Read to look
// at it.
func (lc *loopConn) SetReadDeadline(t time.Time) error {
	lc.rdl.Store(deadlineNanos(t))
	select {
	case lc.rch <- struct{}{}:
	default:
	}
	return nil
}

func (lc *loopConn) SetWriteDeadline(t time.Time) error {
	lc.wdl.Store(deadlineNanos(t))
	select {
	case lc.wch <- struct{}{}:
	default:
	}
	return nil
}

func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

// readable is sockIO.readable for a socket on the loop: whether it has
// bytes, an EOF or an error to read, without consuming anything.
func (lc *loopConn) readable() bool {
	if !lc.incref() {
		return true
	}
	defer lc.decref()
	var b [1]byte
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(lc.fd), uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if e != syscall.EINTR {
			return e != syscall.EAGAIN
		}
	}
}
