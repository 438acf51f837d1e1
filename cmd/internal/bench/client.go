package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hubd/hub/internal/wsproto"
)

// client is one benchmark connection: a raw WebSocket or SSE client on a
// net.Conn with a bufio.Reader, so that the load generator stays light and
// never becomes the bottleneck (no per-message allocation on the read path).
type client struct {
	nc      net.Conn
	br      *bufio.Reader
	rd      *bufio.Reader // SSE: line reader over the chunked body
	ws      bool
	deflate bool // permessage-deflate negotiated
	user    int
	hello   []byte // the hub.connected message

	frame []byte // WebSocket message being assembled
	zbuf  []byte // an inflated message
	rx    int64  // bytes read from the socket after hub.connected (read loop only)

	// Filled by the read loop only; read after it ended.
	seqs []uint32              // event sequence numbers received, in order
	lats []int64               // latency of each event, nanoseconds
	err  atomic.Pointer[error] // why the read loop ended
}

// eventHandler is called by the read loop for every application event.
type eventHandler func(c *client, sent int64, seq uint32, now int64)

var (
	connectedMark = []byte(`"type":"hub.connected"`)
	payloadMark   = []byte(`"payload":[`)
)

// dialTimeout bounds one connection's TCP, TLS and hub handshakes.
const dialTimeout = 30 * time.Second

// dial opens the connection from local, performs the handshake of req
// (built by request) and reads until hub.connected.
func dial(ctx context.Context, base *url.URL, tlsConf *tls.Config, req []byte, local net.IP, ws, deflate bool, bufSize int) (*client, error) {
	// no TCP keep-alive: four system calls per connection fewer, and the
	// hub's pings check the connection anyway
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 10 * time.Second, Control: controlSocket, KeepAlive: -1}
	nc, err := d.DialContext(ctx, "tcp", base.Host)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	// the whole handshake within dialTimeout (a deadline, not a context:
	// no timer per connection)
	_ = nc.SetDeadline(time.Now().Add(dialTimeout))
	if tlsConf != nil {
		tc := tls.Client(nc, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	c := &client{nc: nc, ws: ws}
	c.br = bufio.NewReaderSize(countingReader{nc, &c.rx}, bufSize)
	if err := c.handshake(base, req, deflate, bufSize); err != nil {
		nc.Close()
		return nil, err
	}
	c.rx = 0 // what the handshake read (the 101, hub.connected) is not counted
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *int64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	*r.n += int64(n)
	return n, err
}

// chromiumOffer is the extension offer Chromium makes.
const chromiumOffer = "permessage-deflate; client_max_window_bits"

// request builds the handshake request for token, resuming from lastID
// when it is not empty (a WebSocket key of zeros is replaced by handshake).
func request(base *url.URL, path, token, lastID string, ws, deflate bool) []byte {
	var req []byte
	target := path + "?token=" + url.QueryEscape(token)
	if ws && lastID != "" {
		target += "&last_event_id=" + url.QueryEscape(lastID)
	}
	req = append(req, "GET "+target+" HTTP/1.1\r\nHost: "+base.Host+"\r\n"...)
	if ws {
		req = append(req, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
		req = append(req, keyPlaceholder...)
		req = append(req, "\r\n"...)
		if deflate {
			req = append(req, "Sec-WebSocket-Extensions: "+chromiumOffer+"\r\n"...)
		}
	} else {
		req = append(req, "Accept: text/event-stream\r\n"...)
		if lastID != "" {
			req = append(req, "Last-Event-ID: "+lastID+"\r\n"...)
		}
	}
	return append(req, "\r\n"...)
}

// keyPlaceholder stands for the Sec-WebSocket-Key in a built request.
const keyPlaceholder = "AAAAAAAAAAAAAAAAAAAAAA=="

func (c *client) handshake(base *url.URL, req []byte, deflate bool, bufSize int) error {
	if c.ws {
		// a fresh key each time, in a copy of the request
		var key [16]byte
		_, _ = rand.Read(key[:])
		req = bytes.Clone(req)
		i := bytes.Index(req, []byte(keyPlaceholder))
		base64.StdEncoding.Encode(req[i:i+len(keyPlaceholder)], key[:])
	}
	if _, err := c.nc.Write(req); err != nil {
		return fmt.Errorf("write handshake: %w", err)
	}
	want := "200"
	if c.ws {
		want = "101"
	}
	ext, chunked, err := readHead(c.br, want)
	if errors.Is(err, errOtherStatus) {
		hreq, _ := http.NewRequest(http.MethodGet, base.String(), nil)
		resp, err := http.ReadResponse(c.br, hreq)
		if err != nil {
			return fmt.Errorf("read handshake: %w", err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &refusedError{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(bytes.TrimSpace(b))}
	}
	if err != nil {
		return fmt.Errorf("read handshake: %w", err)
	}
	if c.ws && ext != "" {
		if !deflate || !strings.HasPrefix(ext, "permessage-deflate") || !strings.Contains(ext, "client_no_context_takeover") {
			return fmt.Errorf("handshake: unexpected extensions %q", ext)
		}
		c.deflate = true
	}
	if deflate && !c.deflate {
		return errors.New("handshake: the hub did not accept permessage-deflate")
	}
	if !c.ws {
		var body io.Reader = c.br
		if chunked {
			body = httputil.NewChunkedReader(c.br)
		}
		c.rd = bufio.NewReaderSize(body, bufSize)
	}
	for {
		msg, err := c.next()
		if err != nil {
			return fmt.Errorf("wait for hub.connected: %w", err)
		}
		if bytes.Contains(msg, connectedMark) {
			c.hello = bytes.Clone(msg)
			return nil
		}
	}
}

// errOtherStatus: the answer's status is not the one wanted (nothing of
// it was consumed).
var errOtherStatus = errors.New("another status")

// readHead reads a response head whose status is want, without building an
// http.Response (the load generator must stay light), and returns its
// Sec-WebSocket-Extensions and whether its body is chunked.
func readHead(br *bufio.Reader, want string) (ext string, chunked bool, err error) {
	status, err := br.Peek(len("HTTP/1.1 200"))
	if err != nil {
		return "", false, err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.")) || string(status[9:]) != want {
		return "", false, errOtherStatus
	}
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return "", false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if first {
			continue
		}
		if len(line) == 0 {
			return ext, chunked, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return "", false, fmt.Errorf("malformed header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Extensions")):
			ext = string(value)
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		}
	}
}

// next returns the next message (a WebSocket text message or an SSE data
// line); the slice is valid until the next call.
func (c *client) next() ([]byte, error) {
	if c.ws {
		return c.nextFrame()
	}
	for {
		line, err := c.rd.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if rest, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			return bytes.TrimRight(rest, "\r\n"), nil
		}
	}
}

const (
	opCont  = 0
	opText  = 1
	opClose = 8
	opPing  = 9
	opPong  = 10
)

func (c *client) nextFrame() ([]byte, error) {
	c.frame = c.frame[:0]
	compressed := false
	for {
		var h [8]byte
		if _, err := io.ReadFull(c.br, h[:2]); err != nil {
			return nil, err
		}
		fin, rsv1, op, masked := h[0]&0x80 != 0, h[0]&0x40 != 0, h[0]&0x0f, h[1]&0x80 != 0
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(c.br, h[:2]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(h[:2]))
		case 127:
			if _, err := io.ReadFull(c.br, h[:8]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(h[:8])
		}
		if masked {
			return nil, errors.New("masked frame from server")
		}
		if n > 1<<24 {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		start := len(c.frame)
		c.frame = append(c.frame, make([]byte, n)...)
		if _, err := io.ReadFull(c.br, c.frame[start:]); err != nil {
			return nil, err
		}
		switch op {
		case opPing:
			if err := c.writeFrame(opPong, c.frame[start:]); err != nil {
				return nil, err
			}
			c.frame = c.frame[:start]
			continue
		case opPong:
			c.frame = c.frame[:start]
			continue
		case opClose:
			code, echo := 0, []byte(nil)
			if n >= 2 {
				code, echo = int(binary.BigEndian.Uint16(c.frame[start:])), c.frame[start:start+2]
			}
			// Answered as RFC 6455 (5.5.1) asks and as browsers do: the
			// close frame with the hub's code. The hub then closes at once
			// instead of waiting for the socket to end (or, with no answer
			// at all, for its close wait: a drain that ran into its timeout).
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_ = c.writeFrame(opClose, echo)
			_ = c.nc.SetWriteDeadline(time.Time{})
			return nil, fmt.Errorf("closed by server: %d %s", code, c.frame[min(start+2, len(c.frame)):])
		case opText, opCont:
		default:
			return nil, fmt.Errorf("unexpected opcode %d", op)
		}
		if rsv1 && (!c.deflate || op != opText || start != 0) {
			return nil, errors.New("RSV1 on a frame that cannot be compressed")
		}
		compressed = compressed || rsv1
		if compressed && fin {
			var werr *wsproto.Error
			if c.zbuf, werr = wsproto.Inflate(c.zbuf[:0], c.frame, 1<<24); werr != nil {
				return nil, werr
			}
			return c.zbuf, nil
		}
		if fin {
			return c.frame, nil
		}
	}
}

// writeFrame writes a masked control frame (mask key zero: the payload is
// unchanged).
func (c *client) writeFrame(op byte, payload []byte) error {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	b := make([]byte, 0, 6+len(payload))
	b = append(b, 0x80|op, 0x80|byte(len(payload)), 0, 0, 0, 0)
	b = append(b, payload...)
	_, err := c.nc.Write(b)
	return err
}

// readLoop reads events until the connection ends, calling on for each
// application event whose payload is [sentUnixNano, seq, ...].
func (c *client) readLoop(on eventHandler) {
	for {
		msg, err := c.next()
		if err != nil {
			c.err.Store(&err)
			return
		}
		now := time.Now().UnixNano()
		i := bytes.Index(msg, payloadMark)
		if i < 0 {
			continue // hub.ping or another control event
		}
		rest := msg[i+len(payloadMark):]
		sent, rest, ok1 := parseInt(rest)
		if !ok1 || len(rest) == 0 || rest[0] != ',' {
			continue
		}
		seq, _, ok2 := parseInt(rest[1:])
		if !ok2 {
			continue
		}
		on(c, sent, uint32(seq), now)
	}
}

func parseInt(b []byte) (int64, []byte, bool) {
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, b, false
	}
	n, err := strconv.ParseInt(string(b[:i]), 10, 64)
	return n, b[i:], err == nil
}

// close ends the connection (a WebSocket gets a close frame first).
func (c *client) close() {
	if c.ws {
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.writeFrame(opClose, []byte{0x03, 0xe8}) // 1000
	}
	_ = c.nc.Close()
}
