package pooler

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/pooler/config"
)

// queueConns opens n connections to addr that nobody accepts yet: the
// kernel completes their handshakes and queues them on the listener.
func queueConns(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var out []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, c)
	}
	return out
}

// sslAnswer sends an SSLRequest on c and returns the pooler's one-byte
// answer, or the error (a reset connection).
func sslAnswer(c net.Conn) (byte, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), codeSSLRequest)
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// TestDrainListener: connections queued on a listening socket when a drain
// takes it away are served, not reset, and new connections go to the other
// socket of the SO_REUSEPORT group. The control case shows why: closing the
// socket outright resets what is queued on it.
func TestDrainListener(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(ini, []byte("[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\nunix_socket_dir =\nauth_type = trust\nauth_file = "+filepath.Join(dir, "users.txt")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"alice" ""`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(ini)
	if err != nil {
		t.Fatal(err)
	}
	const queued = 20
	lc := net.ListenConfig{Control: reusePortControl}
	for _, drain := range []bool{true, false} {
		name := map[bool]string{true: "drain", false: "plain close"}[drain]
		t.Run(name, func(t *testing.T) {
			s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler), AuditLogger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			conns := queueConns(t, addr, queued)
			// Another process joins the group.
			other, err := lc.Listen(context.Background(), "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			l := &listener{Listener: ln}
			if drain {
				s.drainListener(l)
			} else {
				l.Close()
			}
			served, reset := 0, 0
			for _, c := range conns {
				if b, err := sslAnswer(c); err == nil && b == 'N' {
					served++
				} else {
					reset++
				}
			}
			if drain && served != queued {
				t.Errorf("drain: %d of %d queued connections served, %d reset", served, queued, reset)
			}
			if !drain && reset == 0 {
				t.Errorf("plain close: no queued connection was reset (%d served); the kernel behaves differently from what the drain assumes", served)
			}
			t.Logf("%s: %d queued connections served, %d reset", name, served, reset)
			// New connections now reach the other socket only.
			fresh := queueConns(t, addr, 10)
			_ = other.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
			for range fresh {
				c, err := other.Accept()
				if err != nil {
					t.Fatalf("a new connection did not reach the other socket: %v", err)
				}
				c.Close()
			}
			for _, c := range conns {
				c.Close()
			}
			s.Shutdown(ShutdownImmediate)
			s.wg.Wait()
		})
	}
}
