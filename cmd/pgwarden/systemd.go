package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// sdNotifier sends service state to systemd (sd_notify) over the datagram
// socket named by NOTIFY_SOCKET; without it every call does nothing.
type sdNotifier struct {
	addr *net.UnixAddr
}

// newSDNotifier reads NOTIFY_SOCKET and removes it from the environment, so
// that a child process cannot speak for this service.
func newSDNotifier() *sdNotifier {
	path := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	if path == "" {
		return &sdNotifier{}
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return &sdNotifier{} // vsock and other transports are not used here
	}
	return &sdNotifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
}

// notify sends one state message, such as "READY=1"; errors are returned
// for the log but never stop pgwarden.
func (n *sdNotifier) notify(state string) error {
	if n == nil || n.addr == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// reloading is the message systemd's Type=notify-reload expects when a
// reload starts: RELOADING=1 with the CLOCK_MONOTONIC time in microseconds.
func reloading() string {
	var ts syscall.Timespec
	if err := clockGettimeMonotonic(&ts); err != nil {
		return "RELOADING=1"
	}
	usec := ts.Sec*1e6 + ts.Nsec/1e3
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", usec)
}

// clockGettimeMonotonic reads CLOCK_MONOTONIC.
func clockGettimeMonotonic(ts *syscall.Timespec) error {
	const clockMonotonic = 1
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(ts)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
