//go:build linux

package pooler

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// loopPair returns a loopConn on l and the plain TCP connection at its
// other end.
func loopPair(t *testing.T, l *eventLoop) (*loopConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	lc, err := l.adopt(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	return lc, peer
}

func newTestLoop(t *testing.T) *eventLoop {
	t.Helper()
	l, err := newEventLoop()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l
}

// TestLoopConn: a socket on the loop works as a net.Conn for goroutines:
// reads wait for bytes, writes larger than the socket buffer wait for the
// peer, deadlines and Close wake a waiting Read, and EOF is io.EOF.
func TestLoopConn(t *testing.T) {
	l := newTestLoop(t)
	lc, peer := loopPair(t, l)

	if lc.readable() {
		t.Fatal("readable before anything was sent")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = peer.Write([]byte("hello"))
	}()
	buf := make([]byte, 16)
	n, err := lc.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}

	// A write of 8 MiB waits for the peer to read.
	big := make([]byte, 8<<20)
	got := make(chan int, 1)
	go func() {
		n, _ := io.Copy(io.Discard, io.LimitReader(peer, int64(len(big))))
		got <- int(n)
	}()
	if n, err := lc.Write(big); err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n := <-got; n != len(big) {
		t.Fatalf("peer read %d bytes", n)
	}

	// A read deadline ends a waiting Read with a timeout.
	_ = lc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err = lc.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	// A deadline in the past set while a Read waits wakes it.
	_ = lc.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := lc.Read(buf)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = lc.SetReadDeadline(aLongTimeAgo)
	if err := <-done; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read woken by a past deadline: %v", err)
	}
	_ = lc.SetReadDeadline(time.Time{})

	// The peer's close is io.EOF, and makes the socket readable.
	peer.Close()
	waitUntil(t, lc.readable)
	if _, err := lc.Read(buf); err != io.EOF {
		t.Fatalf("Read after the peer closed: %v", err)
	}
}

// TestLoopConnClose: Close wakes a waiting Read with net.ErrClosed, and
// later calls fail the same way.
func TestLoopConnClose(t *testing.T) {
	l := newTestLoop(t)
	lc, _ := loopPair(t, l)
	done := make(chan error, 1)
	go func() {
		_, err := lc.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := lc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed socket: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the Read")
	}
	if _, err := lc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := lc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if !lc.readable() {
		t.Fatal("a closed socket must look unusable")
	}
}

type recordOwner struct{ events chan bool }

func (o *recordOwner) loopEvent(_ *loopConn, hup bool) { o.events <- hup }

// TestLoopConnOwner: with an owner, readiness goes to it on the loop
// thread (with the peer's close flagged), and back to goroutines without.
func TestLoopConnOwner(t *testing.T) {
	l := newTestLoop(t)
	lc, peer := loopPair(t, l)
	o := &recordOwner{events: make(chan bool, 16)}
	lc.setOwner(&loopOwner{h: o})
	if _, err := peer.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-o.events:
	case <-time.After(5 * time.Second):
		t.Fatal("the owner was not told")
	}
	buf := make([]byte, 8)
	l.post(func() {
		n, err := lc.readNB(buf)
		if err != nil || string(buf[:n]) != "ping" {
			t.Errorf("readNB = %q, %v", buf[:n], err)
		}
		if _, err := lc.readNB(buf); err != errWouldBlock {
			t.Errorf("readNB on an empty socket: %v", err)
		}
		o.events <- false
	})
	<-o.events
	peer.Close()
	deadline := time.After(5 * time.Second)
	for hup := false; !hup; {
		select {
		case hup = <-o.events:
		case <-deadline:
			t.Fatal("the owner was not told of the close")
		}
	}
	lc.setOwner(nil)
	if _, err := lc.Read(buf); err != io.EOF {
		t.Fatalf("Read without an owner: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not met in 5s")
		}
	}
}

// TestLoopWakeups: goroutines ping-ponging over loop sockets never miss a
// wake-up, whether the loop sleeps in epoll_wait or in Go's poller (few
// events per wake-up make it pick the poller, more the other).
func TestLoopWakeups(t *testing.T) {
	l := newTestLoop(t)
	const rounds = 3000
	for _, pairs := range []int{1, 8} {
		errs := make(chan error, pairs)
		for range pairs {
			lc, peer := loopPair(t, l)
			go func() {
				var b [1]byte
				for {
					if _, err := io.ReadFull(peer, b[:]); err != nil {
						return
					}
					if _, err := peer.Write(b[:]); err != nil {
						return
					}
				}
			}()
			go func() {
				var b [1]byte
				for i := range rounds {
					_ = lc.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := lc.Write([]byte{byte(i)}); err != nil {
						errs <- err
						return
					}
					if _, err := io.ReadFull(lc, b[:]); err != nil {
						errs <- fmt.Errorf("round %d: %w", i, err)
						return
					}
				}
				errs <- nil
			}()
		}
		for range pairs {
			if err := <-errs; err != nil {
				t.Fatalf("%d pairs: %v", pairs, err)
			}
		}
	}
}

// TestLoopWakeupAfterClose: a socket that turns ready and is closed before
// the loop reads its event must not leave the loop deaf: posted work still
// runs, whichever way the loop sleeps.
func TestLoopWakeupAfterClose(t *testing.T) {
	l := newTestLoop(t)
	for i := range 300 {
		lc, peer := loopPair(t, l)
		_, _ = peer.Write([]byte("x"))
		lc.Close()
		peer.Close()
		ran := make(chan struct{})
		l.post(func() { close(ran) })
		select {
		case <-ran:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the loop did not run posted work", i)
		}
	}
}
