package ws

import (
	"encoding/binary"
	"errors"
	"sync"
	"unicode/utf8"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/netpoll"
)

// readBufSize is the size of the pooled buffer a readable socket is read
// into; an idle connection holds none.
const readBufSize = 4096

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// dispatch reads a connection the poller reported readable, on a goroutine
// that lives as long as the read.
func (h *Handler) dispatch(w netpoll.Watcher) {
	c := w.(*conn)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		c.readable()
	}()
}

// start runs once after the upgrade: it handles what the client sent along
// with the upgrade request, then registers the socket with the poller, or,
// on a connection the poller cannot watch (TLS, or no epoll), reads on this
// goroutine until the connection ends.
func (c *conn) start() {
	if len(c.in) > 0 {
		early := c.in
		c.in = nil
		if !c.consume(early) {
			return
		}
	}
	if c.cork.raw != nil {
		fd := netpoll.FD(c.cork.raw)
		c.closeMu.Lock()
		if c.torn.Load() {
			c.closeMu.Unlock()
			return
		}
		err := c.h.poll.Add(c, fd)
		if err == nil {
			c.fd = fd
		}
		c.closeMu.Unlock()
		if err == nil {
			return
		}
		c.h.log.Debug("websocket: reading on a goroutine", "err", err)
	}
	c.readBlocking()
}

// readable reads what the socket holds without waiting, handles every
// whole frame, and re-arms the socket in the poller.
func (c *conn) readable() {
	if c.torn.Load() {
		return
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for range 16 { // then let others have a turn: the socket is re-armed
		n, err := netpoll.TryRead(c.cork.raw, buf)
		if n > 0 && !c.consume(buf[:n]) {
			return
		}
		if err != nil {
			c.teardown() // the client went away
			return
		}
		if n < len(buf) {
			break
		}
	}
	c.closeMu.Lock()
	fd := c.fd
	c.closeMu.Unlock()
	if fd >= 0 {
		c.h.poll.Rearm(c, fd)
	}
}

// readBlocking reads on the calling goroutine until the connection ends.
func (c *conn) readBlocking() {
	buf := make([]byte, readBufSize)
	for {
		n, err := c.cork.Conn.Read(buf)
		if n > 0 && !c.consume(buf[:n]) {
			return
		}
		if err != nil {
			c.teardown()
			return
		}
	}
}

// consume parses data (after what an earlier read left incomplete) and
// handles every whole frame; it reports false when reading should stop
// (the connection is being torn down).
func (c *conn) consume(data []byte) bool {
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	for len(data) > 0 {
		f, n, perr := parseFrame(data, c.limit)
		if perr != nil {
			c.protocolFail(perr.code, perr.text)
			return false
		}
		if n == 0 {
			break
		}
		data = data[n:]
		if !c.onFrame(f) {
			return false
		}
	}
	switch {
	case len(data) == 0:
		c.in = nil
	case len(c.in) > 0: // data is the tail of c.in
		c.in = c.in[:copy(c.in, data)]
	default:
		c.in = append([]byte(nil), data...)
	}
	return true
}

func (c *conn) onFrame(f frame) bool {
	switch f.op {
	case opText, opBinary:
		if c.fragOp != 0 {
			c.protocolFail(closeProtocolError, "expected a continuation frame")
			return false
		}
		if !f.fin {
			c.fragOp = f.op
			c.frag = append([]byte(nil), f.payload...)
			return true
		}
		return c.onMessage(f.op, f.payload)
	case opContinuation:
		if c.fragOp == 0 {
			c.protocolFail(closeProtocolError, "continuation frame without a message")
			return false
		}
		if int64(len(c.frag)+len(f.payload)) > c.limit {
			c.protocolFail(closeMessageTooBig, "frame too large")
			return false
		}
		c.frag = append(c.frag, f.payload...)
		if !f.fin {
			return true
		}
		op, data := c.fragOp, c.frag
		c.fragOp, c.frag = 0, nil
		return c.onMessage(op, data)
	case opPing:
		c.control(opPong, f.payload)
		return true
	case opPong:
		c.pongSeq.Store(c.pingSeq.Load())
		return true
	default: // opClose
		return c.onClose(f.payload)
	}
}

// onMessage handles a whole client message. Once the connection is
// closing, messages are ignored while it waits for the client's close. A
// binary message fails the connection with 1003, a text message that is
// not UTF-8 with 1007 (RFC 6455 §8.1).
func (c *conn) onMessage(op byte, data []byte) bool {
	switch {
	case c.dead.Load() || c.quit.Load():
	case op == opBinary:
		c.failAfterAnswers(closeUnsupportedData, "binary frames are not supported")
		return false
	case !utf8.Valid(data):
		c.failAfterAnswers(closeInvalidPayload, "text frames must be UTF-8")
		return false
	default:
		c.handle(data)
	}
	return true
}

// failAfterAnswers fails the connection from the reader: no more client
// frames are read, the close frame with code goes out after the answers
// already queued for the frames that came before (hub.error,
// hub.refreshed, a rate-limit hub.nack), and the socket is closed right
// after it.
func (c *conn) failAfterAnswers(code int, text string) {
	c.failing.Store(true)
	c.quit.Store(true)
	c.hc.Close(hub.Reason{Code: code, Text: text})
}

// onClose answers the client's close frame (echoing its code) unless the
// hub's is already out, and closes the socket.
func (c *conn) onClose(p []byte) bool {
	var reply []byte
	switch {
	case len(p) == 1:
		c.protocolFail(closeProtocolError, "invalid close frame")
		return false
	case len(p) >= 2:
		if !validCloseCode(int(binary.BigEndian.Uint16(p))) {
			c.protocolFail(closeProtocolError, "invalid close code")
			return false
		}
		if !utf8.Valid(p[2:]) {
			c.protocolFail(closeInvalidPayload, "close reason must be UTF-8")
			return false
		}
		reply = p[:2]
	}
	if c.dead.Load() {
		// the hub's close frame is out (or going): this is the answer
		c.closeThenTeardown(reply)
		return false
	}
	// the client closes first: its close is echoed after the answers
	// already queued, then the socket is closed
	code := 0 // no status: an empty close frame answers it
	if len(reply) == 2 {
		code = int(binary.BigEndian.Uint16(reply))
	}
	c.failing.Store(true)
	c.quit.Store(true)
	c.hc.Close(hub.Reason{Code: code})
	return false
}

// protocolFail fails the connection: a close frame with code after the
// answers already queued, then the socket is closed without waiting for
// the client.
func (c *conn) protocolFail(code int, text string) {
	c.failAfterAnswers(code, text)
}

// closeThenTeardown writes a close frame and tears the connection down
// once the frame is on the wire (or could not be written).
func (c *conn) closeThenTeardown(payload []byte) {
	pending, err := c.cork.writeControl(opClose, payload)
	switch {
	case err != nil:
		c.teardown()
	case pending: // this goroutine owns the socket: flush, then tear down
		c.flushAsync(true)
	default: // written, or queued behind the socket's owner
		c.cork.then(c.teardown)
	}
}

// control writes a control frame; after the close frame it is dropped.
func (c *conn) control(op byte, payload []byte) {
	pending, err := c.cork.writeControl(op, payload)
	switch {
	case errors.Is(err, errClosed):
	case err != nil:
		c.fail()
	case pending:
		c.flushAsync(false)
	}
}
