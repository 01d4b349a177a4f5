//go:build linux

package pooler

import (
	"errors"
	"net"
	"syscall"
)

// epollWatcher watches parked client sockets with one epoll instance of its
// own, beside the Go runtime's: each socket is armed one-shot
// (EPOLLONESHOT), so one readiness wakes its client once, and re-armed when
// the client is parked again. A pipe registered under id 0 stops run.
type epollWatcher struct {
	epfd         int
	stopR, stopW int
}

var errNoWatcher = errors.New("no socket watcher on this platform")

func newWatcher() (watcher, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, err
	}
	return &epollWatcher{epfd: epfd, stopR: p[0], stopW: p[1]}, nil
}

// withFD runs f on conn's file descriptor, which cannot be closed while f
// runs; it fails once the connection is closed.
func withFD(conn net.Conn, f func(fd int) error) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return errors.New("connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func (w *epollWatcher) watch(conn net.Conn, id uint64, again bool) error {
	return withFD(conn, func(fd int) error {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
		ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
		op := syscall.EPOLL_CTL_ADD
		if again {
			op = syscall.EPOLL_CTL_MOD
		}
		err := syscall.EpollCtl(w.epfd, op, fd, &ev)
		if err == syscall.ENOENT && again {
			err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
		}
		return err
	})
}

func (w *epollWatcher) forget(conn net.Conn) {
	_ = withFD(conn, func(fd int) error {
		return syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	})
}

func (w *epollWatcher) run(ready func(id uint64)) {
	defer func() {
		syscall.Close(w.epfd)
		syscall.Close(w.stopR)
	}()
	var evs [128]syscall.EpollEvent
	for {
		n, err := syscall.EpollWait(w.epfd, evs[:], -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for i := range n {
			id := uint64(uint32(evs[i].Fd)) | uint64(uint32(evs[i].Pad))<<32
			if id == 0 {
				return
			}
			ready(id)
		}
	}
}

func (w *epollWatcher) close() {
	_, _ = syscall.Write(w.stopW, []byte{0})
	syscall.Close(w.stopW)
}
