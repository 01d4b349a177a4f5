//go:build !linux

package pooler

import "net"

// sockIO is the Linux raw-syscall fast path (rawio_linux.go); elsewhere
// there is none and callers use the net.Conn.
type sockIO struct{}

func newSockIO(net.Conn) *sockIO { return nil }

func (*sockIO) read([]byte) (int, error)  { panic("unreachable") }
func (*sockIO) write([]byte) (int, error) { panic("unreachable") }

func (*sockIO) forward(*sockIO, []byte) (int, error) { panic("unreachable") }
func (*sockIO) readable() bool                       { panic("unreachable") }
