//go:build linux

package pooler

import (
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (near, far *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// waitReadable polls s.readable for up to a second (the peer's bytes or
// FIN take a moment to arrive).
func waitReadable(s *sockIO) bool {
	deadline := time.Now().Add(time.Second)
	for !s.readable() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func TestSockIOReadable(t *testing.T) {
	t.Run("quiet", func(t *testing.T) {
		near, _ := tcpPair(t)
		if newSockIO(near).readable() {
			t.Fatal("a quiet socket is readable")
		}
	})
	t.Run("data, not consumed", func(t *testing.T) {
		near, far := tcpPair(t)
		s := newSockIO(near)
		if _, err := far.Write([]byte("E")); err != nil {
			t.Fatal(err)
		}
		if !waitReadable(s) {
			t.Fatal("unsolicited bytes not seen")
		}
		b := make([]byte, 4)
		if n, err := s.read(b); n != 1 || err != nil || b[0] != 'E' {
			t.Fatalf("peek consumed the byte: %d %v %q", n, err, b[:n])
		}
	})
	t.Run("closed by the peer", func(t *testing.T) {
		near, far := tcpPair(t)
		far.Close()
		if !waitReadable(newSockIO(near)) {
			t.Fatal("the peer's FIN not seen")
		}
	})
	t.Run("reset by the peer", func(t *testing.T) {
		near, far := tcpPair(t)
		_ = far.SetLinger(0)
		far.Close()
		if !waitReadable(newSockIO(near)) {
			t.Fatal("the peer's RST not seen")
		}
	})
	t.Run("closed here", func(t *testing.T) {
		near, _ := tcpPair(t)
		s := newSockIO(near)
		near.Close()
		if !s.readable() {
			t.Fatal("a closed socket is not readable")
		}
	})
}

// BenchmarkSockIOReadable is the check a server connection taken from the
// pool gets (pool.usable): its cost is added to every transaction that
// reuses an idle server.
func BenchmarkSockIOReadable(b *testing.B) {
	near, _ := tcpPair(b)
	s := newSockIO(near)
	b.ReportAllocs()
	for b.Loop() {
		if s.readable() {
			b.Fatal("readable")
		}
	}
}
