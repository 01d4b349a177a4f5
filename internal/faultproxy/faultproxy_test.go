package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echo starts a TCP echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func start(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes b and reads len(b) bytes back within d.
func roundTrip(c net.Conn, b []byte, d time.Duration) ([]byte, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Write(b); errc <- err }()
	got := make([]byte, len(b))
	_, err := io.ReadFull(c, got)
	if werr := <-errc; err == nil {
		err = werr
	}
	return got, err
}

func TestForward(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	msg := bytes.Repeat([]byte("pgwarden "), 20000)
	got, err := roundTrip(c, msg, 10*time.Second)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the proxy: %v", err)
	}
	if p.Accepted() != 1 || p.Links() != 1 {
		t.Fatalf("accepted %d, links %d", p.Accepted(), p.Links())
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.Links() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("link not closed after the client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResetAfter(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("warm"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.ResetAfter(Downstream, 1000)
	if _, err := c.Write(make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	// Exactly the 1000 bytes before the cut arrive, then the reset.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) || n != 1000 {
		t.Fatalf("want 1000 bytes and a connection reset, got %d bytes and %v", n, err)
	}
	if p.Resets() != 1 {
		t.Fatalf("resets = %d", p.Resets())
	}
	// One-shot: the next connection is not reset.
	c2 := dial(t, p)
	if _, err := roundTrip(c2, make([]byte, 5000), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestResetAll(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.ResetAll()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want a connection reset, got %v", err)
	}
}

func TestBlackhole(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole(true)
	// Nothing comes back, and the connection stays open.
	_, err := roundTrip(c, []byte("held"), 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a timeout while blackholed, got %v", err)
	}
	// A new connection is accepted but goes nowhere.
	c2 := dial(t, p)
	if _, err := roundTrip(c2, []byte("y"), 200*time.Millisecond); err == nil {
		t.Fatal("a new connection got through the blackhole")
	}
	p.Heal()
	// What was held back arrives once healed.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after heal: %q %v", got, err)
	}
	got2 := make([]byte, 1)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, got2); err != nil || string(got2) != "y" {
		t.Fatalf("new connection after heal: %q %v", got2, err)
	}
}

func TestLatencyAndBandwidth(t *testing.T) {
	p := start(t)
	c := dial(t, p)
	p.SetLatency(Upstream, 100*time.Millisecond)
	start := time.Now()
	if _, err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("round trip took %v with 100ms latency", el)
	}
	p.Heal()
	p.SetBandwidth(Downstream, 100<<10)
	start = time.Now()
	if _, err := roundTrip(c, make([]byte, 50<<10), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("50 KiB at 100 KiB/s took %v", el)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	base := runtime.NumGoroutine()
	up := echo(t)
	p, err := New(up)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	p.Blackhole(true)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	// Closing the proxy also closes its upstream connections, so the
	// echo server is left with its accept loop only.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+1 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, base %d", runtime.NumGoroutine(), base)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDNS(t *testing.T) {
	d, err := NewDNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	d.Set("db.example.test", net.IPv4(127, 0, 0, 7))
	r := d.Resolver()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, "db.example.test")
	if err != nil || len(addrs) != 1 || addrs[0] != "127.0.0.7" {
		t.Fatalf("lookup: %v %v", addrs, err)
	}
	d.SetMode(DNSNXDomain)
	_, err = r.LookupHost(ctx, "db.example.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("NXDOMAIN: %v", err)
	}
	d.SetMode(DNSSilent)
	sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	start := time.Now()
	if _, err := r.LookupHost(sctx, "db.example.test"); err == nil {
		t.Fatal("a silent server answered")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("a silent lookup took %v past its 300ms deadline", el)
	}
	d.SetMode(DNSAnswer)
	if _, err := r.LookupHost(ctx, "db.example.test"); err != nil {
		t.Fatal(err)
	}
}
