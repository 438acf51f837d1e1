package ws

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/netpoll"
	"github.com/hubd/hub/internal/wsproto"
)

// corkConn is a hijacked connection and the order of everything written
// to it. Events are framed here, straight into one buffer, and go out with
// one socket write per batch; control frames (ping, pong, close) join the
// same buffer, each whole, so frames never interleave and nothing follows
// the close frame.
//
// A pool writer never blocks on a socket: on a plain TCP connection the
// batch is written with one non-blocking write(2), and whatever the kernel
// did not take stays buffered for a goroutine of the connection's own
// (flush), which waits with the write timeout without any lock held.
type corkConn struct {
	net.Conn
	raw syscall.RawConn // nil when the connection is not a plain socket (TLS)

	mu        sync.Mutex
	buf       []byte   // bytes to write next; appended under mu
	bp        *[]byte  // pooled buffer behind buf
	owned     bool     // a goroutine owns the socket and flushes buf until empty
	after     []func() // run once the owner has written everything (see then)
	closeSent bool     // a close frame went into the stream: no more frames
	// zmin: permessage-deflate was negotiated, and events whose envelope
	// has at least zmin bytes go out compressed; -1: not negotiated. Set
	// before the first write.
	zmin int32
	err  error // the write error that ended the stream
}

func newCorkConn(nc net.Conn) *corkConn {
	return &corkConn{Conn: nc, raw: netpoll.Raw(nc), zmin: -1}
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

// releaseBufLocked returns buf to the pool once it is empty (mu held).
func (c *corkConn) releaseBufLocked() {
	if c.bp != nil {
		*c.bp = c.buf[:0]
		putBuf(c.bp)
	}
	c.bp, c.buf = nil, nil
}

// writeFrames frames msgs as text frames into the buffer and commits it.
func (c *corkConn) writeFrames(msgs []*hub.Message) (pending bool, err error) {
	c.mu.Lock()
	if err := c.checkLocked(); err != nil {
		c.mu.Unlock()
		return false, err
	}
	for _, m := range msgs {
		if c.zmin >= 0 && len(m.Frame) >= int(c.zmin) {
			if z := m.Compressed(deflateFrame); z != nil {
				c.buf = wsproto.AppendFrame(c.buf, wsproto.OpText, true, z)
				continue
			}
		}
		c.buf = wsproto.AppendFrame(c.buf, wsproto.OpText, false, m.Frame)
	}
	pending, after, err := c.commitLocked()
	c.mu.Unlock()
	runAll(after)
	return pending, err
}

// preface puts b (the handshake's 101 answer) at the start of the write
// buffer, to go out with the first frames; called once, before anything
// else can write.
func (c *corkConn) preface(b []byte) {
	c.mu.Lock()
	if c.checkLocked() == nil {
		c.buf = append(c.buf, b...)
	}
	c.mu.Unlock()
}

// deflateFrame compresses an event's frame for hub.Message.Compressed
// (once per event); nil when that saves nothing.
func deflateFrame(frame []byte) []byte {
	z := wsproto.Deflate(make([]byte, 0, len(frame)/2+64), frame)
	if len(z) >= len(frame) {
		return nil
	}
	if cap(z)-len(z) > len(z)/4 { // kept as long as the event: no spare room
		z = append(make([]byte, 0, len(z)), z...)
	}
	return z
}

// maxQueuedPongs bounds what a socket that takes nothing may hold before
// pongs are dropped: a client that sends pings and never reads would
// otherwise grow the buffer without end (RFC 6455 lets an endpoint answer
// only the latest of several pings).
const maxQueuedPongs = 64 << 10

// writeControl queues one control frame and commits it; after a close
// frame nothing more is written (errClosed).
func (c *corkConn) writeControl(op wsproto.Opcode, payload []byte) (pending bool, err error) {
	c.mu.Lock()
	if err := c.checkLocked(); err != nil {
		c.mu.Unlock()
		return false, err
	}
	if op == wsproto.OpPong && c.owned && len(c.buf) >= maxQueuedPongs {
		c.mu.Unlock()
		return false, nil // dropped: the socket's owner is still stuck on earlier bytes
	}
	c.buf = wsproto.AppendFrame(c.buf, op, false, payload)
	if op == wsproto.OpClose {
		c.closeSent = true
	}
	pending, after, err := c.commitLocked()
	c.mu.Unlock()
	runAll(after)
	return pending, err
}

// then runs fn once everything written so far has gone to the socket (or
// failed): at once when no goroutine owns the socket, else when its owner
// gives it up. A frame that writeFrames or writeControl queued behind an
// owner is not on the wire when they return; closing the socket right
// after it would lose it.
func (c *corkConn) then(fn func()) {
	c.mu.Lock()
	if !c.owned {
		c.mu.Unlock()
		fn()
		return
	}
	c.after = append(c.after, fn)
	c.mu.Unlock()
}

// releaseLocked gives up the socket's ownership and returns what waits
// for it, to run after unlocking.
func (c *corkConn) releaseLocked() []func() {
	c.owned = false
	after := c.after
	c.after = nil
	return after
}

func runAll(fns []func()) {
	for _, fn := range fns {
		fn()
	}
}

func (c *corkConn) checkLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.closeSent {
		return errClosed
	}
	if c.bp == nil {
		c.bp = getBuf()
		c.buf = (*c.bp)[:0]
	}
	return nil
}

// commitLocked writes the buffer at once unless a goroutine already owns
// the socket (it will write it). The caller holds c.mu; the write itself
// happens with the lock released (this caller owns the socket meanwhile,
// and frames that come then join a fresh buffer and are written next). On
// a plain socket the write never blocks: pending reports that the kernel
// did not take everything, and the caller must then run flush on a
// goroutine of its own. On other connections (TLS) every batch is pending.
func (c *corkConn) commitLocked() (pending bool, after []func(), err error) {
	if c.owned {
		return false, nil, nil
	}
	c.owned = true
	if c.raw == nil {
		return true, nil, nil
	}
	for len(c.buf) > 0 {
		out, op := c.buf, c.bp
		c.buf, c.bp = nil, nil
		c.mu.Unlock()
		n, err := netpoll.TryWrite(c.raw, out)
		c.mu.Lock()
		if err != nil {
			c.err = err
			putBack(op, out)
			c.releaseBufLocked()
			return false, c.releaseLocked(), err
		}
		if n < len(out) {
			// The socket is full: what it did not take goes before what
			// came meanwhile, and the caller's flush goroutine writes it.
			rest := copy(out, out[n:])
			out = append(out[:rest], c.buf...)
			putBack(c.bp, c.buf)
			c.buf, c.bp = out, op
			return true, nil, nil
		}
		putBack(op, out)
	}
	c.releaseBufLocked()
	return false, c.releaseLocked(), nil
}

// putBack returns a written buffer to the pool.
func putBack(bp *[]byte, b []byte) {
	if bp != nil {
		*bp = b[:0]
		putBuf(bp)
	}
}

// flush is the owner's loop: it writes the buffer, outside the lock and
// under a write deadline of d per write (0: none), until the buffer is
// empty, then gives ownership up. The caller must own the socket.
func (c *corkConn) flush(d time.Duration) error {
	for {
		c.mu.Lock()
		if c.err != nil || len(c.buf) == 0 {
			err := c.err
			after := c.releaseLocked()
			c.releaseBufLocked()
			c.mu.Unlock()
			runAll(after)
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
