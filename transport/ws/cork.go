package ws

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/hubd/hub/hub"
)

// corkConn wraps a hijacked connection and owns the order of everything
// written to it. The hub's events are framed here, straight into one
// buffer, and go out with one socket write per batch; coder/websocket
// writes only control frames (ping, pong, close), each in one Write call
// (its bufio writer is large enough for any control frame), which join the
// same buffer when a batch is in flight, so frames never interleave.
//
// A pool writer never blocks on a socket: on a plain TCP connection the
// batch is written with one non-blocking write(2), and whatever the kernel
// did not take stays buffered for a goroutine of the connection's own
// (flush), which waits with the write timeout without any lock held.
type corkConn struct {
	net.Conn
	raw     syscall.RawConn // nil when the connection is not a plain socket (TLS)
	timeout time.Duration   // write deadline of a flush started by Write

	mu        sync.Mutex
	buf       []byte  // bytes to write next; appended under mu
	bp        *[]byte // pooled buffer behind buf
	owned     bool    // a goroutine owns the socket and flushes buf until empty
	closeSent bool    // a close frame went into the stream: no more frames
	err       error   // the write error that ended the stream
}

func newCorkConn(nc net.Conn, timeout time.Duration) *corkConn {
	c := &corkConn{Conn: nc, timeout: timeout}
	if sc, ok := nc.(syscall.Conn); ok {
		if _, isTCP := nc.(*net.TCPConn); isTCP {
			if raw, err := sc.SyscallConn(); err == nil {
				c.raw = raw
			}
		}
	}
	return c
}

// errClosed is returned for frames offered after the close frame.
var errClosed = errors.New("websocket: close frame already sent")

// corkBufs holds write buffers between batches, so an idle connection
// keeps none.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return corkBufs.Get().(*[]byte) }

func putBuf(bp *[]byte) {
	if bp == nil || cap(*bp) > 64<<10 {
		return
	}
	*bp = (*bp)[:0]
	corkBufs.Put(bp)
}

// appendLocked appends p to buf (mu held).
func (c *corkConn) appendLocked(p []byte) {
	if c.bp == nil {
		c.bp = getBuf()
		c.buf = (*c.bp)[:0]
	}
	c.buf = append(c.buf, p...)
}

// releaseBufLocked returns buf to the pool once it is empty (mu held).
func (c *corkConn) releaseBufLocked() {
	if c.bp != nil {
		*c.bp = c.buf[:0]
		putBuf(c.bp)
	}
	c.bp, c.buf = nil, nil
}

// Write is coder/websocket's path (control frames, each in one call): it
// joins the buffer when a batch is in flight, or else is written at once.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if len(p) > 0 && p[0] == 0x88 { // FIN + close opcode
		c.closeSent = true
	}
	if c.owned {
		c.appendLocked(p)
		c.mu.Unlock()
		return len(p), nil
	}
	// Nobody owns the socket: this caller does, for this one write.
	c.owned = true
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	if err != nil && c.err == nil {
		c.err = err
	}
	if len(c.buf) > 0 && c.err == nil {
		// Frames came meanwhile: write them too before giving up ownership.
		c.mu.Unlock()
		if ferr := c.flush(c.timeout); ferr != nil && err == nil {
			err = ferr
		}
		return n, err
	}
	c.owned = false
	c.releaseBufLocked()
	c.mu.Unlock()
	return n, err
}

// writeFrames frames msgs as text frames into the buffer and, unless a
// goroutine already owns the socket, writes the buffer at once. On a plain
// socket the write never blocks: pending reports that the kernel did not
// take everything, and the caller must then run flush on a goroutine of its
// own. On other connections (TLS) every batch is pending.
func (c *corkConn) writeFrames(msgs []*hub.Message) (pending bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false, c.err
	}
	if c.closeSent {
		return false, errClosed
	}
	if c.bp == nil {
		c.bp = getBuf()
		c.buf = (*c.bp)[:0]
	}
	for _, m := range msgs {
		c.buf = appendTextFrame(c.buf, m.Frame)
	}
	if c.owned {
		return false, nil // the owner writes it
	}
	if c.raw == nil {
		c.owned = true
		return true, nil
	}
	n, err := c.tryWrite(c.buf)
	if err != nil {
		c.err = err
		c.releaseBufLocked()
		return false, err
	}
	if n == len(c.buf) {
		c.releaseBufLocked()
		return false, nil
	}
	rest := copy(c.buf, c.buf[n:])
	c.buf = c.buf[:rest]
	c.owned = true
	return true, nil
}

// tryWrite writes b with non-blocking write(2) calls until the kernel
// takes no more; it never waits.
func (c *corkConn) tryWrite(b []byte) (int, error) {
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			k, e := syscall.Write(int(fd), b[n:])
			if k > 0 {
				n += k
			}
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return true
			case e != nil:
				werr = e
				return true
			case k == 0:
				werr = errors.New("write returned 0 bytes")
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, err
	}
	return n, werr
}

// flush is the owner's loop: it writes the buffer, outside the lock and
// under a write deadline of d per write (0: none), until the buffer is
// empty, then gives ownership up. The caller must own the socket.
func (c *corkConn) flush(d time.Duration) error {
	for {
		c.mu.Lock()
		if c.err != nil || len(c.buf) == 0 {
			err := c.err
			c.owned = false
			c.releaseBufLocked()
			c.mu.Unlock()
			return err
		}
		// Write what is buffered while new frames go to a fresh buffer.
		out, op := c.buf, c.bp
		c.buf, c.bp = nil, nil
		c.mu.Unlock()

		if d > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(d))
		}
		_, err := c.Conn.Write(out)
		if d > 0 {
			_ = c.Conn.SetWriteDeadline(time.Time{})
		}
		if op != nil {
			*op = out[:0]
			putBuf(op)
		}
		if err != nil {
			c.mu.Lock()
			if c.err == nil {
				c.err = err
			}
			c.mu.Unlock()
		}
	}
}

// appendTextFrame appends p as one unmasked, final text frame.
func appendTextFrame(b, p []byte) []byte {
	n := len(p)
	switch {
	case n <= 125:
		b = append(b, 0x81, byte(n))
	case n <= 0xffff:
		b = append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x81, 127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, p...)
}

// Sizes of a connection's bufio reader and writer: clients send little,
// and coder/websocket writes only control frames through the writer; at
// 2+125 bytes the largest control frame fits it whole, so each reaches
// corkConn.Write in one call.
const (
	smallReadBuf  = 256
	smallWriteBuf = 128
)

// corkWriter is the ResponseWriter given to websocket.Accept: its Hijack
// returns the connection wrapped in a corkConn and points the server's
// buffered writer at it.
type corkWriter struct {
	http.ResponseWriter
	conn    *corkConn
	timeout time.Duration
}

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = newCorkConn(nc, w.timeout)
	// net/http hands over 4 KiB read and write buffers; an idle push
	// connection needs neither (events are framed in the cork buffer and
	// clients send little), so smaller ones replace them and the big ones
	// are left to the garbage collector. Bytes the client already sent stay
	// readable: the original reader is kept when it holds any.
	rd := brw.Reader
	if rd.Buffered() == 0 {
		rd = bufio.NewReaderSize(w.conn, smallReadBuf)
	}
	return w.conn, bufio.NewReadWriter(rd, bufio.NewWriterSize(w.conn, smallWriteBuf)), nil
}
