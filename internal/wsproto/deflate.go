package wsproto

import (
	"compress/flate"
	"errors"
	"io"
	"strings"
	"sync"
)

// Deflate is permessage-deflate (RFC 7692) without context takeover in
// either direction: every message is compressed and inflated on its own,
// so a connection keeps no compression state between messages, and the
// hub can compress an event once for all of its recipients.

// DeflateResponse is the extension the hub answers an acceptable offer
// with (without the server_max_window_bits=15 echo, see NegotiateDeflate).
const DeflateResponse = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// NegotiateDeflate picks the first permessage-deflate offer of the
// Sec-WebSocket-Extensions values that the hub can honour and returns the
// answer for it. The hub always asks for server_no_context_takeover and
// client_no_context_takeover (RFC 7692 §7.1.1: the server may add the
// second one unasked) and compresses with a 32 KiB window. So an offer is
// declined, not half-accepted, when it limits the server's window below
// 15 bits, repeats a parameter, gives a parameter a value it may not have
// or an invalid one, or has a parameter the hub does not know (§7.1). An
// offer of server_max_window_bits=15 is accepted with that parameter
// echoed. client_max_window_bits (the client's own window) needs nothing:
// the hub inflates with any window. A header that does not parse offers
// nothing.
func NegotiateDeflate(values []string) (response string, ok bool) {
	exts, parsed := parseExtensions(values)
	if !parsed {
		return "", false
	}
offers:
	for _, e := range exts {
		if !strings.EqualFold(e.name, "permessage-deflate") {
			continue
		}
		seen := map[string]bool{}
		echo15 := false
		for _, p := range e.params {
			name := strings.ToLower(p.name)
			if seen[name] {
				continue offers
			}
			seen[name] = true
			switch name {
			case "server_no_context_takeover", "client_no_context_takeover":
				if p.hasValue {
					continue offers
				}
			case "server_max_window_bits":
				bits, ok := windowBits(p)
				if !ok || bits != 15 {
					continue offers // below 15: a window the hub cannot keep to
				}
				echo15 = true
			case "client_max_window_bits":
				if _, ok := windowBits(p); p.hasValue && !ok {
					continue offers
				}
			default:
				continue offers
			}
		}
		if echo15 {
			return DeflateResponse + "; server_max_window_bits=15", true
		}
		return DeflateResponse, true
	}
	return "", false
}

// windowBits reads a *_max_window_bits value: 8 to 15, decimal, no
// leading zero.
func windowBits(p extParam) (int, bool) {
	if !p.hasValue {
		return 0, false
	}
	switch v := p.value; {
	case len(v) == 1 && (v[0] == '8' || v[0] == '9'):
		return int(v[0] - '0'), true
	case len(v) == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5':
		return 10 + int(v[1]-'0'), true
	}
	return 0, false
}

type extension struct {
	name   string
	params []extParam
}

type extParam struct {
	name, value string
	hasValue    bool
}

// parseExtensions parses Sec-WebSocket-Extensions values (RFC 6455 §9.1:
// a comma-separated list of extension ; param[=token|quoted-string]).
func parseExtensions(values []string) ([]extension, bool) {
	var exts []extension
	for _, v := range values {
		s := v
		for {
			s = skipOWS(s)
			if s == "" {
				break
			}
			if s[0] == ',' { // empty list element
				s = s[1:]
				continue
			}
			var e extension
			e.name, s = readToken(s)
			if e.name == "" {
				return nil, false
			}
			for {
				s = skipOWS(s)
				if s == "" || s[0] == ',' {
					break
				}
				if s[0] != ';' {
					return nil, false
				}
				var p extParam
				p.name, s = readToken(skipOWS(s[1:]))
				if p.name == "" {
					return nil, false
				}
				s = skipOWS(s)
				if s != "" && s[0] == '=' {
					p.hasValue = true
					s = skipOWS(s[1:])
					var ok bool
					if s != "" && s[0] == '"' {
						p.value, s, ok = readQuoted(s)
					} else {
						p.value, s = readToken(s)
						ok = p.value != ""
					}
					if !ok {
						return nil, false
					}
				}
				e.params = append(e.params, p)
			}
			exts = append(exts, e)
		}
	}
	return exts, true
}

func skipOWS(s string) string { return strings.TrimLeft(s, " \t") }

// readToken splits off the RFC 7230 token at the start of s.
func readToken(s string) (string, string) {
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// readQuoted splits off the quoted-string at the start of s, unquoted.
func readQuoted(s string) (string, string, bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], true
		case '\\':
			if i+1 == len(s) {
				return "", "", false
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false
}

// deflateLevel trades ratio for time; an event is compressed once for all
// of its recipients.
const deflateLevel = flate.BestSpeed

type deflater struct {
	fw  *flate.Writer
	out appendWriter
}

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

var deflaters = sync.Pool{New: func() any {
	d := &deflater{}
	d.fw, _ = flate.NewWriter(&d.out, deflateLevel)
	return d
}}

// Deflate appends p compressed as the body of one permessage-deflate
// message without context takeover (a fresh window; RFC 7692 §7.2.1: the
// compressed data ends with a sync flush whose last 4 bytes, 00 00 ff ff,
// are left out).
func Deflate(dst, p []byte) []byte {
	d := deflaters.Get().(*deflater)
	d.out.b = dst
	d.fw.Reset(&d.out)
	_, _ = d.fw.Write(p) // an appendWriter does not fail
	_ = d.fw.Flush()
	out := d.out.b
	d.out.b = nil
	deflaters.Put(d)
	return out[:len(out)-4]
}

// deflateTail ends a message body for the flate reader: the 4 bytes the
// sender left out (RFC 7692 §7.2.2), then an empty final stored block, so
// that the reader meets the end of the stream instead of running out of
// input.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflateSource is the message body, then deflateTail; a ByteReader, so
// the flate reader reads it without a bufio.Reader of its own.
type inflateSource struct {
	p    []byte
	tail int
}

func (s *inflateSource) Read(b []byte) (int, error) {
	if len(s.p) > 0 {
		n := copy(b, s.p)
		s.p = s.p[n:]
		return n, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	n := copy(b, deflateTail[s.tail:])
	s.tail += n
	return n, nil
}

func (s *inflateSource) ReadByte() (byte, error) {
	if len(s.p) > 0 {
		c := s.p[0]
		s.p = s.p[1:]
		return c, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	c := deflateTail[s.tail]
	s.tail++
	return c, nil
}

type inflater struct {
	fr  io.ReadCloser
	src inflateSource
}

// inflaters holds flate readers (about 40 KiB each) between messages, so
// that no connection keeps one.
var inflaters sync.Pool

// Inflate appends the message that the permessage-deflate body p inflates
// to, to dst. A message over limit bytes fails with 1009 as soon as the
// reader passes the limit (a small body cannot make the hub inflate more),
// a body that does not inflate with 1007.
func Inflate(dst, p []byte, limit int64) ([]byte, *Error) {
	in, _ := inflaters.Get().(*inflater)
	if in == nil {
		in = &inflater{}
		in.src = inflateSource{p: p}
		in.fr = flate.NewReader(&in.src)
	} else {
		in.src = inflateSource{p: p}
		_ = in.fr.(flate.Resetter).Reset(&in.src, nil)
	}
	defer func() {
		in.src = inflateSource{}
		inflaters.Put(in)
	}()
	start := len(dst)
	if free := cap(dst) - len(dst); int64(free) <= limit && free < 2*len(p)+64 {
		grow := min(limit+1, int64(3*len(p)+64))
		dst = append(dst[:cap(dst)], make([]byte, grow)...)[:len(dst)]
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		room := dst[len(dst):cap(dst)]
		if left := limit + 1 - int64(len(dst)-start); int64(len(room)) > left {
			room = room[:left]
		}
		n, err := in.fr.Read(room)
		dst = dst[:len(dst)+n]
		if int64(len(dst)-start) > limit {
			return dst[:start], &Error{CloseMessageTooBig, "message too big"}
		}
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return dst[:start], &Error{CloseInvalidPayload, "compressed message does not inflate"}
		}
	}
}
