//go:build !linux

package pooler

import (
	"errors"
	"net"
	"time"
)

// The event loop is Linux only (eventloop_linux.go); elsewhere every
// client keeps a goroutine, and these are never called.

type eventLoop struct{}

func newEventLoop() (*eventLoop, error) { return nil, errNoWatcher }

var errLoopTableFull = errors.New("no event loop")

func (*eventLoop) close()                            {}
func (*eventLoop) post(func())                       { panic("unreachable") }
func (*eventLoop) adopt(net.Conn) (*loopConn, error) { return nil, errors.New("no event loop") }

type loopEventHandler interface{ loopEvent(lc *loopConn, hup bool) }

type loopOwner struct{ h loopEventHandler }

type loopConn struct {
	net.Conn
	l *eventLoop
}

var errWouldBlock = errors.New("would block")

func (*loopConn) setOwner(*loopOwner)             {}
func (*loopConn) isClosed() bool                  { return true }
func (*loopConn) readNB([]byte) (int, error)      { panic("unreachable") }
func (*loopConn) writeNB([]byte) (int, error)     { panic("unreachable") }
func (*loopConn) readable() bool                  { panic("unreachable") }
func (*loopConn) SetReadDeadline(time.Time) error { panic("unreachable") }
