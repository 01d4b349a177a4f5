package faultproxy

import (
	"net"
	"syscall"
	"time"
	"unsafe"
)

// waitSent waits (up to a second) until the peer has acknowledged every
// byte written to c, so that a reset that follows does not discard them
// from the send queue: the peer then reads exactly what was forwarded
// before it sees the reset.
func waitSent(c net.Conn) {
	tc, ok := underlyingTCP(c)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		var n int32
		var errno syscall.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
		}); err != nil || errno != 0 || n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
