package ws

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// corkConn wraps a hijacked connection so that the frames written while it
// is corked go out in one write (one syscall) when it is uncorked.
// coder/websocket flushes its buffered writer after every message; corking
// below it turns a batch of queued messages into a single socket write.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
	bp     *[]byte // pooled buffer behind buf while corked
}

// Write buffers p while corked, and also while an earlier batch is only
// partly written (so that no frame ever overtakes the rest of another).
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked || len(c.buf) > 0 {
		if c.buf == nil {
			c.take()
		}
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// corkBufs holds cork buffers between batches, so an idle connection
// keeps none.
var corkBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (c *corkConn) take() {
	c.bp = corkBufs.Get().(*[]byte)
	c.buf = (*c.bp)[:0]
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	if c.buf == nil {
		c.take()
	}
	c.mu.Unlock()
}

// uncork writes what is buffered under a write deadline of d. With keep, a
// write that runs out of time (the peer's socket is full) keeps the rest
// buffered and reports pending: the caller finishes it later with
// uncork(longer, false). Otherwise the buffer goes back to the pool.
func (c *corkConn) uncork(d time.Duration, keep bool) (pending bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) > 0 {
		var n int
		_ = c.Conn.SetWriteDeadline(time.Now().Add(d))
		n, err = c.Conn.Write(c.buf)
		_ = c.Conn.SetWriteDeadline(time.Time{})
		var ne net.Error
		if err != nil && keep && errors.As(err, &ne) && ne.Timeout() {
			c.buf = c.buf[n:]
			return true, nil
		}
	}
	if c.bp != nil {
		*c.bp = (*c.bp)[:0]
		if cap(*c.bp) <= 64<<10 {
			corkBufs.Put(c.bp)
		}
		c.bp = nil
	}
	c.buf = nil
	return false, err
}

// Sizes of a connection's bufio reader and writer: clients send little, and
// frames written in a batch go to the cork buffer anyway.
const (
	smallReadBuf  = 256
	smallWriteBuf = 64
)

// corkWriter is the ResponseWriter given to websocket.Accept: its Hijack
// returns the connection wrapped in a corkConn and points the server's
// buffered writer at it.
type corkWriter struct {
	http.ResponseWriter
	conn *corkConn
}

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: nc}
	// net/http hands over 4 KiB read and write buffers; an idle push
	// connection needs neither (frames are batched in the cork buffer and
	// clients send little), so smaller ones replace them and the big ones
	// are left to the garbage collector. Bytes the client already sent stay
	// readable: the original reader is kept when it holds any.
	rd := brw.Reader
	if rd.Buffered() == 0 {
		rd = bufio.NewReaderSize(w.conn, smallReadBuf)
	}
	return w.conn, bufio.NewReadWriter(rd, bufio.NewWriterSize(w.conn, smallWriteBuf)), nil
}
