package pooler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Wire-level framing shared by the client and server legs. A message is a
// type byte, a 4-byte big-endian length that counts itself, and a body. The
// pooler decodes only the few messages it acts on and forwards everything
// else as runs of raw bytes.

const (
	// relayBufSize is the size of a pooled relay buffer; PostgreSQL itself
	// sends and receives in 8 KiB chunks.
	relayBufSize = 16 << 10
	// idleBufSize is the read buffer of an idle client: big enough for
	// most single requests, small enough to keep idle clients cheap.
	idleBufSize = 512
	// maxStartupPacket bounds the startup packet (PgBouncer's limit).
	maxStartupPacket = 10000
	// maxAuthMessage bounds password and SASL messages: Entra tokens are
	// several kilobytes long.
	maxAuthMessage = 64 << 10
	// maxDecodedMessage bounds messages the pooler decodes in full during
	// relaying (ParameterStatus, ErrorResponse, …).
	maxDecodedMessage = 1 << 20
)

var (
	errBadMessageLength = errors.New("invalid message length")
	errMessageTooLarge  = errors.New("message too large")
)

// bufPool holds relay buffers. A buffer is taken when a connection has bytes
// to move and given back when it goes idle, so idle clients hold none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// msgReader reads whole messages from one connection for the login phases
// (startup, auth, server login, console). It is not used on the relay's hot
// path. It is owned by one goroutine.
type msgReader struct {
	r   io.Reader
	buf []byte // grows as needed up to max
	max int
}

// readMessage returns the next message's type and body. The body is valid
// until the next call.
func (m *msgReader) readMessage() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(m.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 {
		return 0, nil, errBadMessageLength
	}
	n -= 4
	if n > m.max {
		return hdr[0], nil, fmt.Errorf("%w: %q of %d bytes", errMessageTooLarge, hdr[0], n)
	}
	if cap(m.buf) < n {
		m.buf = make([]byte, n)
	}
	body := m.buf[:n]
	if _, err := io.ReadFull(m.r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

// appendMsg starts a message of type t in dst and returns the position of
// its length field, to be fixed with finishMsg.
func appendMsg(dst []byte, t byte) ([]byte, int) {
	dst = append(dst, t, 0, 0, 0, 0)
	return dst, len(dst) - 4
}

func finishMsg(dst []byte, lenPos int) []byte {
	binary.BigEndian.PutUint32(dst[lenPos:], uint32(len(dst)-lenPos))
	return dst
}

func appendCString(dst []byte, s string) []byte {
	dst = append(dst, s...)
	return append(dst, 0)
}

func appendInt32(dst []byte, v int32) []byte {
	return binary.BigEndian.AppendUint32(dst, uint32(v))
}

func appendInt16(dst []byte, v int16) []byte {
	return binary.BigEndian.AppendUint16(dst, uint16(v))
}

// appendErrorResponse encodes an ErrorResponse (or NoticeResponse when t is
// 'N') with only S, V, C and M, as PgBouncer sends them.
func appendErrorResponse(dst []byte, t byte, severity, sqlstate, msg string) []byte {
	return appendErrorResponseHint(dst, t, severity, sqlstate, msg, "")
}

// appendErrorResponseHint is appendErrorResponse with a HINT field when
// hint is not empty.
func appendErrorResponseHint(dst []byte, t byte, severity, sqlstate, msg, hint string) []byte {
	dst, p := appendMsg(dst, t)
	dst = append(dst, 'S')
	dst = appendCString(dst, severity)
	dst = append(dst, 'V')
	dst = appendCString(dst, severity)
	dst = append(dst, 'C')
	dst = appendCString(dst, sqlstate)
	dst = append(dst, 'M')
	dst = appendCString(dst, msg)
	if hint != "" {
		dst = append(dst, 'H')
		dst = appendCString(dst, hint)
	}
	dst = append(dst, 0)
	return finishMsg(dst, p)
}

func appendReadyForQuery(dst []byte, status byte) []byte {
	return append(dst, 'Z', 0, 0, 0, 5, status)
}

func appendParameterStatus(dst []byte, name, value string) []byte {
	dst, p := appendMsg(dst, 'S')
	dst = appendCString(dst, name)
	dst = appendCString(dst, value)
	return finishMsg(dst, p)
}

func appendAuthRequest(dst []byte, kind int32, extra []byte) []byte {
	dst, p := appendMsg(dst, 'R')
	dst = appendInt32(dst, kind)
	dst = append(dst, extra...)
	return finishMsg(dst, p)
}

func appendQuery(dst []byte, sql string) []byte {
	dst, p := appendMsg(dst, 'Q')
	dst = appendCString(dst, sql)
	return finishMsg(dst, p)
}

// cstring splits a NUL-terminated string off the front of b.
func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// parseParameterStatus decodes a ParameterStatus body.
func parseParameterStatus(body []byte) (name, value string, ok bool) {
	name, rest, ok := cstring(body)
	if !ok {
		return "", "", false
	}
	value, _, ok = cstring(rest)
	return name, value, ok
}

// parseErrorFields decodes the fields of an ErrorResponse/NoticeResponse
// body that the pooler uses: severity, SQLSTATE and message.
func parseErrorFields(body []byte) (severity, code, msg string) {
	for len(body) > 0 && body[0] != 0 {
		f := body[0]
		v, rest, ok := cstring(body[1:])
		if !ok {
			break
		}
		switch f {
		case 'V':
			severity = v
		case 'S':
			if severity == "" {
				severity = v
			}
		case 'C':
			code = v
		case 'M':
			msg = v
		}
		body = rest
	}
	return
}

// writeAll writes b to c.
func writeAll(c io.Writer, b []byte) error {
	_, err := c.Write(b)
	return err
}

// quoteLiteral quotes s as a SQL string literal, as pg_quote_literal does
// (standard_conforming_strings on: only single quotes are doubled; a value
// with backslashes uses the E” form).
func quoteLiteral(s string) string {
	hasBackslash := false
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			hasBackslash = true
			break
		}
	}
	out := make([]byte, 0, len(s)+3)
	if hasBackslash {
		out = append(out, 'E')
	}
	out = append(out, '\'')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\'' || (hasBackslash && c == '\\') {
			out = append(out, c)
		}
		out = append(out, c)
	}
	return string(append(out, '\''))
}
