package pooler_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Micro-benchmarks of the hot paths, against the test cluster, with a
// client that writes pre-encoded messages and scans the answers in a
// fixed buffer, so that it allocates nothing itself: allocs/op is the
// pooler's (client and pooler share the process). Each relay benchmark
// runs the same round trip directly against PostgreSQL too; the
// difference is what the pooler adds.
//
//	go test -run '^$' -bench . -benchmem ./pooler/
//
// Compare before and after a hot-path change with benchstat:
//
//	go test -run '^$' -bench Relay -benchmem -count 10 ./pooler/ > old.txt
//	… change …
//	go test -run '^$' -bench Relay -benchmem -count 10 ./pooler/ > new.txt
//	benchstat old.txt new.txt

// rawConn signs in with pgconn and takes over its socket.
func rawConn(b *testing.B, dsn string) net.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = hc.Conn.Write([]byte{'X', 0, 0, 0, 4})
		hc.Conn.Close()
	})
	return hc.Conn
}

// readUntilReady reads messages into buf until ReadyForQuery. It fails on
// an ErrorResponse.
func readUntilReady(conn net.Conn, buf []byte) error {
	r, w := 0, 0
	for {
		for w-r >= 5 {
			typ := buf[r]
			l := int(binary.BigEndian.Uint32(buf[r+1:]))
			if w-r < 1+l {
				break
			}
			switch typ {
			case 'Z':
				if r+1+l != w {
					return fmt.Errorf("bytes after ReadyForQuery")
				}
				return nil
			case 'E':
				return fmt.Errorf("ErrorResponse: %q", buf[r+5:r+1+l])
			}
			r += 1 + l
		}
		if r > 0 {
			copy(buf, buf[r:w])
			w -= r
			r = 0
		}
		n, err := conn.Read(buf[w:])
		if err != nil {
			return err
		}
		w += n
	}
}

func encode(b *testing.B, msgs ...pgproto3.FrontendMessage) []byte {
	var out []byte
	var err error
	for _, m := range msgs {
		if out, err = m.Encode(out); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func benchRoundTrips(b *testing.B, conn net.Conn, req []byte) {
	buf := make([]byte, 64<<10)
	// Warm up: the pooler's server connection, buffers and caches.
	for range 100 {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readUntilReady(conn, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readUntilReady(conn, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelay: one client, one transaction per op, transaction pooling.
func BenchmarkRelay(b *testing.B) {
	in := startPooler(b, "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2")
	direct := fmt.Sprintf("host=127.0.0.1 port=%d user=alice password=alice-pw dbname=app sslmode=disable", pg.Port)
	pooled := in.dsn("alice", "alice-pw", "app")
	simple := encode(b, &pgproto3.Query{String: "SELECT 1"})
	extended := encode(b,
		&pgproto3.Parse{Query: "SELECT $1::int"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{0}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	)
	// A named statement prepared once and then executed (what drivers
	// with a statement cache send): Bind is rewritten by the pooler.
	prepare := encode(b, &pgproto3.Parse{Name: "bench_s1", Query: "SELECT $1::int"}, &pgproto3.Sync{})
	prepared := encode(b,
		&pgproto3.Bind{PreparedStatement: "bench_s1", Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{0}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	)
	for _, proto := range []struct {
		name       string
		setup, req []byte
	}{{"simple", nil, simple}, {"extended", nil, extended}, {"prepared", prepare, prepared}} {
		for _, target := range []struct{ name, dsn string }{{"direct", direct}, {"pgwarden", pooled}} {
			b.Run(proto.name+"/"+target.name, func(b *testing.B) {
				conn := rawConn(b, target.dsn)
				if proto.setup != nil {
					if _, err := conn.Write(proto.setup); err != nil {
						b.Fatal(err)
					}
					if err := readUntilReady(conn, make([]byte, 4096)); err != nil {
						b.Fatal(err)
					}
				}
				benchRoundTrips(b, conn, proto.req)
			})
		}
	}
}

// BenchmarkSignIn: the startup path, one TCP connection, startup packet,
// cleartext password, AuthenticationOk … ReadyForQuery and Terminate per
// op (auth_type = plain, so that the client spends no time in SCRAM).
func BenchmarkSignIn(b *testing.B) {
	in := startPooler(b, "auth_type = plain\npool_mode = transaction\ndefault_pool_size = 2")
	addr := fmt.Sprintf("127.0.0.1:%d", in.port)
	startup := encode(b, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{
		"user": "alice", "database": "app", "application_name": "bench", "client_encoding": "UTF8", "DateStyle": "ISO",
	}})
	password := encode(b, &pgproto3.PasswordMessage{Password: "alice-pw"})
	terminate := []byte{'X', 0, 0, 0, 4}
	buf := make([]byte, 16<<10)
	signIn := func() error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.Write(startup); err != nil {
			return err
		}
		// AuthenticationCleartextPassword is 9 bytes.
		if _, err := io.ReadFull(conn, buf[:9]); err != nil {
			return err
		}
		if buf[0] != 'R' || binary.BigEndian.Uint32(buf[5:]) != 3 {
			return fmt.Errorf("expected a cleartext password request, got %q", buf[:9])
		}
		if _, err := conn.Write(password); err != nil {
			return err
		}
		if err := readUntilReady(conn, buf); err != nil {
			return err
		}
		_, err = conn.Write(terminate)
		return err
	}
	for range 20 {
		if err := signIn(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := signIn(); err != nil {
			b.Fatal(err)
		}
	}
}
