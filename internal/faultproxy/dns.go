package faultproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
)

// DNSMode is how a DNS server answers.
type DNSMode int

const (
	// DNSAnswer answers A queries for the names set with Set (AAAA
	// queries get an empty answer) and NXDOMAIN for any other name.
	DNSAnswer DNSMode = iota
	// DNSNXDomain answers every query with NXDOMAIN: the names stopped
	// resolving.
	DNSNXDomain
	// DNSServFail answers every query with SERVFAIL.
	DNSServFail
	// DNSSilent answers nothing: lookups run into their deadline.
	DNSSilent
)

// DNS is a tiny DNS server on UDP 127.0.0.1 (a free port) for tests whose
// host names must stop resolving on request. Point a Go resolver at it
// with Resolver.
type DNS struct {
	pc      net.PacketConn
	queries atomic.Int64
	mu      sync.Mutex
	names   map[string]net.IP // lower case, with the final dot
	mode    DNSMode
	wg      sync.WaitGroup
}

// NewDNS starts a DNS server that knows no names yet.
func NewDNS() (*DNS, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: dns: %w", err)
	}
	d := &DNS{pc: pc, names: map[string]net.IP{}}
	d.wg.Add(1)
	go d.serve()
	return d, nil
}

// Addr is the server's UDP address.
func (d *DNS) Addr() string { return d.pc.LocalAddr().String() }

// Set makes name resolve to the IPv4 address ip.
func (d *DNS) Set(name string, ip net.IP) {
	d.mu.Lock()
	d.names[fqdn(name)] = ip.To4()
	d.mu.Unlock()
}

// SetMode switches how queries are answered.
func (d *DNS) SetMode(m DNSMode) {
	d.mu.Lock()
	d.mode = m
	d.mu.Unlock()
}

// Queries is the number of queries received so far.
func (d *DNS) Queries() int64 { return d.queries.Load() }

// Resolver returns a Go resolver that sends every query to this server.
func (d *DNS) Resolver() *net.Resolver {
	addr := d.Addr()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			if strings.HasPrefix(network, "tcp") {
				// This server speaks UDP only; the Go resolver
				// falls back to TCP for truncated answers, which it
				// never sends.
				return nil, errors.New("faultproxy: dns: no TCP")
			}
			c, err := nd.DialContext(ctx, "udp", addr)
			if err != nil {
				return nil, err
			}
			// The Go resolver gives up on a cancelled lookup only when
			// its read times out (resolv.conf's timeout, 5 s by
			// default); closing the socket ends it at once, so that a
			// test counting goroutines need not wait for that.
			context.AfterFunc(ctx, func() { c.Close() })
			return c, nil
		},
	}
}

// Close stops the server.
func (d *DNS) Close() error {
	err := d.pc.Close()
	d.wg.Wait()
	return err
}

func fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

const (
	dnsTypeA     = 1
	rcodeNoError = 0
	rcodeSrvFail = 2
	rcodeNXName  = 3
)

func (d *DNS) serve() {
	defer d.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		d.queries.Add(1)
		if resp := d.answer(buf[:n]); resp != nil {
			_, _ = d.pc.WriteTo(resp, from)
		}
	}
}

// answer builds the response to query q, or nil to stay silent.
func (d *DNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	// The question: labels up to a zero byte, then type and class.
	i := 12
	var labels []string
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	question := q[12 : i+4]
	name := fqdn(strings.Join(labels, "."))

	d.mu.Lock()
	mode := d.mode
	ip, known := d.names[name]
	d.mu.Unlock()
	rcode := rcodeNoError
	var rdata []byte
	switch mode {
	case DNSSilent:
		return nil
	case DNSNXDomain:
		rcode = rcodeNXName
	case DNSServFail:
		rcode = rcodeSrvFail
	default:
		switch {
		case !known:
			rcode = rcodeNXName
		case qtype == dnsTypeA:
			rdata = ip
		}
	}
	resp := make([]byte, 0, 12+len(question)+16)
	resp = append(resp, q[0], q[1])
	// QR, AA, the query's RD; RA; the rcode.
	resp = append(resp, 0x84|q[2]&0x01, 0x80|byte(rcode))
	ancount := 0
	if rdata != nil {
		ancount = 1
	}
	resp = binary.BigEndian.AppendUint16(resp, 1)
	resp = binary.BigEndian.AppendUint16(resp, uint16(ancount))
	resp = binary.BigEndian.AppendUint16(resp, 0)
	resp = binary.BigEndian.AppendUint16(resp, 0)
	resp = append(resp, question...)
	if rdata != nil {
		resp = append(resp, 0xc0, 12) // the name: a pointer to the question's
		resp = binary.BigEndian.AppendUint16(resp, dnsTypeA)
		resp = binary.BigEndian.AppendUint16(resp, 1) // IN
		resp = binary.BigEndian.AppendUint32(resp, 0) // TTL: never cached
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
		resp = append(resp, rdata...)
	}
	return resp
}
