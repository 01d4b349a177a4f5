package pooler

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// listener is one listening socket of the Server.
type listener struct {
	net.Listener
	unix bool
	// inherited sockets came from the service manager, which keeps its
	// own copy: closing ours leaves the socket open and its queue intact
	// for the next process, so it is not drained.
	inherited bool
	// draining is set when Shutdown takes the socket away; accept errors
	// then end the accept loop.
	draining atomic.Bool
}

// drainListener takes l out of service without resetting a connection:
// it accepts what is queued with non-blocking accepts and, in the same
// step, shuts the socket down, which takes it out of its SO_REUSEPORT
// group so that the kernel routes new connections to the other processes.
// The connections taken from the queue are served as usual.
//
// The kernel resets what is queued on a listening socket when it closes;
// a connection whose handshake is still in flight at that moment (a window
// of about one round trip) is reset too, unless net.ipv4.tcp_migrate_req =
// 1 lets the kernel move it to another socket of the group.
func (s *Server) drainListener(l *listener) {
	l.draining.Store(true)
	if l.inherited || l.unix {
		l.Close()
		return
	}
	var fds []int
	if sc, ok := l.Listener.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				for {
					nfd, _, err := syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
					if err == syscall.EINTR || err == syscall.ECONNABORTED {
						continue
					}
					if err != nil {
						break // EAGAIN: the queue is empty
					}
					fds = append(fds, nfd)
				}
				_ = syscall.Shutdown(int(fd), syscall.SHUT_RD)
			})
		}
	}
	l.Close()
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "client")
		conn, err := net.FileConn(f)
		f.Close()
		if err != nil {
			s.log.Warn("drain: cannot use a queued connection", "err", err)
			continue
		}
		s.serveConn(conn, false)
	}
	if len(fds) > 0 {
		s.log.Info("listener drained", "addr", l.Addr().String(), "queued_connections", len(fds))
	}
}

// activationListeners adopts the listening sockets passed by a service
// manager (systemd socket activation, sd_listen_fds): file descriptors 3
// to 3+LISTEN_FDS-1 when LISTEN_PID is this process. The variables are
// removed from the environment so that no child process takes them.
func activationListeners() ([]*listener, error) {
	pid, nfds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || nfds == "" {
		return nil, nil
	}
	names := os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 || n > 1024 {
		return nil, fmt.Errorf("socket activation: invalid LISTEN_FDS %q", nfds)
	}
	nameList := strings.Split(names, ":")
	var out []*listener
	for i := range n {
		fd := 3 + i
		syscall.CloseOnExec(fd)
		name := fmt.Sprintf("LISTEN_FD_%d", fd)
		if i < len(nameList) && nameList[i] != "" {
			name = nameList[i]
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: file descriptor %d (%s) is not a listening socket: %w", fd, name, err)
		}
		_, unix := ln.(*net.UnixListener)
		if ul, ok := ln.(*net.UnixListener); ok {
			// The socket file belongs to the service manager.
			ul.SetUnlinkOnClose(false)
		}
		out = append(out, &listener{Listener: ln, unix: unix, inherited: true})
	}
	return out, nil
}
