package devidp

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Documents selects the documents a validator fetches, for [ServerFaults].
type Documents uint8

const (
	// Discovery is the OpenID configuration documents (v1 and v2).
	Discovery Documents = 1 << iota
	// Keys is the key sets (JWKS, v1 and v2).
	Keys
	// AllDocuments is Discovery and Keys.
	AllDocuments = Discovery | Keys
)

// DefaultHugeSize is the size of a huge document when ServerFaults.HugeSize is
// zero: 50 MiB.
const DefaultHugeSize = 50 << 20

// ServerFaults make the IdP misbehave the ways a real identity provider can, for
// reliability tests. The zero value is a healthy IdP. The mint endpoint
// (POST /dev/token) and [IdP.Mint] are never affected.
type ServerFaults struct {
	// Down answers every endpoint with HTTP 503, as a load balancer in
	// front of an unavailable identity provider does.
	Down bool
	// Delay holds each discovery, key set, token and Graph response for
	// this long before answering (a slow identity provider). A request
	// whose client gives up first is not answered.
	Delay time.Duration
	// Garbage answers the selected documents with HTTP 200 and a body that
	// is not JSON (an HTML page followed by binary bytes).
	Garbage Documents
	// Huge answers the selected documents with HTTP 200 and a syntactically
	// valid JSON document of HugeSize bytes, streamed from a small buffer
	// so the IdP itself stays small. The response's byte count is reported
	// to OnHugeWritten.
	Huge Documents
	// HugeSize is the size of a huge document; default [DefaultHugeSize].
	HugeSize int64
	// HugeChunked sends a huge document without a Content-Length header,
	// so the client learns its size only by reading it.
	HugeChunked bool
	// OnHugeWritten, if set, is called when a huge response ends, with the
	// number of body bytes written before the client went away (or all of
	// them).
	OnHugeWritten func(written int64)
	// GraphDown answers Graph requests with HTTP 503 (Graph unavailable
	// while the rest of the identity provider works).
	GraphDown bool
}

// SetServerFaults replaces the IdP's server faults; the zero ServerFaults
// heals it.
func (p *IdP) SetServerFaults(f ServerFaults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// ServerFaults returns the server faults in force.
func (p *IdP) ServerFaults() ServerFaults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// endpoint kinds, for faults.
const (
	epOther = iota
	epDiscovery
	epKeys
	epToken
	epGraph
	epMint
)

func endpointKind(path string) int {
	switch {
	case path == "/dev/token":
		return epMint
	case strings.HasSuffix(path, "/.well-known/openid-configuration"):
		return epDiscovery
	case strings.HasSuffix(path, "/discovery/keys"), strings.HasSuffix(path, "/discovery/v2.0/keys"):
		return epKeys
	case strings.HasPrefix(path, "/v1.0/"):
		return epGraph
	case strings.Contains(path, "/oauth2/"), path == "/metadata/identity/oauth2/token", path == "/msi/token":
		return epToken
	}
	return epOther
}

// serveFault answers r according to the faults in force and reports
// whether it did; false means the request is served normally.
func (p *IdP) serveFault(w http.ResponseWriter, r *http.Request) bool {
	f := p.ServerFaults()
	kind := endpointKind(r.URL.Path)
	if kind == epMint {
		return false
	}
	if f.Down {
		http.Error(w, "identity provider unavailable (devidp fault)", http.StatusServiceUnavailable)
		return true
	}
	if f.Delay > 0 && kind != epOther {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	var doc Documents
	switch kind {
	case epDiscovery:
		doc = Discovery
	case epKeys:
		doc = Keys
	case epGraph:
		if f.GraphDown {
			graphError(w, http.StatusServiceUnavailable, "serviceNotAvailable", "Graph is unavailable (devidp fault)")
			return true
		}
	}
	switch {
	case doc == 0:
	case f.Garbage&doc != 0:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(garbage)
		return true
	case f.Huge&doc != 0:
		n := f.HugeSize
		if n <= 0 {
			n = DefaultHugeSize
		}
		written := writeHuge(w, n, f.HugeChunked)
		if f.OnHugeWritten != nil {
			f.OnHugeWritten(written)
		}
		return true
	}
	return false
}

// garbage is what a broken proxy or a captive portal might answer.
var garbage = append([]byte("<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>\n"),
	0x00, 0xff, 0xfe, 0x7b, 0x22, 0x6b, 0x65, 0x79, 0x73, 0x22, 0x3a, 0x5b, 0x80, 0x81)

// writeHuge writes a JSON key set of n bytes, {"keys":[],"pad":"xxx…"},
// and returns the number of body bytes written.
func writeHuge(w http.ResponseWriter, n int64, chunked bool) int64 {
	head, tail := []byte(`{"keys":[],"pad":"`), []byte(`"}`)
	pad := n - int64(len(head)+len(tail))
	if pad < 0 {
		pad = 0
	}
	w.Header().Set("Content-Type", "application/json")
	if !chunked {
		w.Header().Set("Content-Length", strconv.FormatInt(int64(len(head))+pad+int64(len(tail)), 10))
	}
	w.WriteHeader(http.StatusOK)
	if chunked {
		// Send the header now, so that net/http cannot count a small
		// document and add a Content-Length itself.
		http.NewResponseController(w).Flush()
	}
	var written int64
	write := func(b []byte) bool {
		m, err := w.Write(b)
		written += int64(m)
		return err == nil
	}
	if !write(head) {
		return written
	}
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for pad > 0 {
		c := chunk[:min(pad, int64(len(chunk)))]
		if !write(c) {
			return written
		}
		pad -= int64(len(c))
	}
	write(tail)
	return written
}

// HTTPClient returns an HTTP client that reaches the IdP in process,
// without a socket: requests are served by [IdP.Handler] directly, and any
// host in the URL reaches this IdP. It is for tests that run under
// testing/synctest (whose fake clock stands still while a goroutine waits
// on the network); others should serve the handler with net/http/httptest.
// Responses are buffered whole, so a huge document fault makes a large
// allocation here: use a real server for those.
func (p *IdP) HTTPClient() *http.Client {
	h := p.Handler()
	return &http.Client{
		Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if err := req.Context().Err(); err != nil {
				return nil, err
			}
			r := req.Clone(req.Context())
			r.RequestURI = req.URL.RequestURI()
			r.RemoteAddr = "127.0.0.1:1"
			if r.Body == nil {
				r.Body = http.NoBody
			}
			rec := &recorder{hdr: http.Header{}}
			h.ServeHTTP(rec, r)
			if err := req.Context().Err(); err != nil {
				return nil, err // the client gave up while the handler waited
			}
			rec.WriteHeader(http.StatusOK)
			return &http.Response{
				Status:        strconv.Itoa(rec.status) + " " + http.StatusText(rec.status),
				StatusCode:    rec.status,
				Proto:         "HTTP/1.1",
				ProtoMajor:    1,
				ProtoMinor:    1,
				Header:        rec.hdr,
				Body:          io.NopCloser(bytes.NewReader(rec.body.Bytes())),
				ContentLength: int64(rec.body.Len()),
				Request:       req,
			}, nil
		}),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// recorder is a ResponseWriter that keeps the response in memory.
type recorder struct {
	hdr    http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.hdr }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}
