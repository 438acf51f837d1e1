package ws

import (
	"errors"
	"sync"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/netpoll"
	"github.com/hubd/hub/internal/wsproto"
)

// readBufSize is the size of the pooled buffer a readable socket is read
// into; an idle connection holds none.
const readBufSize = 4096

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// start runs once after the upgrade, on the handshake's goroutine: it
// handles first, what the client sent along with the upgrade request,
// then registers the socket with the poller. It reports true for a
// connection the poller cannot watch (TLS, or no epoll): readBlocking must
// then read it on a goroutine of its own until the connection ends.
func (c *conn) start(first []byte) (blocking bool) {
	if len(first) > 0 && !c.consume(first) {
		return false
	}
	switch err := c.life.Watch(c.h.poll, c, c.cork.raw); {
	case err == nil, errors.Is(err, netpoll.ErrClosed):
		return false // the poller reports it from now on; or it is over
	case !errors.Is(err, netpoll.ErrNotSocket):
		c.h.log.Debug("websocket: reading on a goroutine", "err", err)
	}
	return true
}

// readBlocking reads the client's frames on the calling goroutine until
// the connection ends (a socket the poller cannot watch).
func (c *conn) readBlocking() {
	if err := netpoll.ReadBlocking(c.cork.Conn, make([]byte, readBufSize), c.consume); err != nil {
		c.teardown()
	}
}

// Readable reads what the socket holds without waiting, handles every
// whole frame, and re-arms the socket in the poller (netpoll.Watcher).
func (c *conn) Readable() {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	if err := c.life.Read(c.h.poll, c, c.cork.raw, *bp, c.consume); err != nil {
		c.teardown() // the client went away
	}
}

// consume hands data to the connection's wsproto.Reader and handles
// every event; it reports false when reading should stop (the client's
// close frame, a frame that fails the connection, a teardown).
func (c *conn) consume(data []byte) bool {
	stop := false
	err := c.rd.Feed(data, func(ev wsproto.Event) bool {
		if !c.onEvent(ev) {
			stop = true
		}
		return !stop
	})
	if err != nil {
		c.failAfterAnswers(err.Code, err.Reason)
		return false
	}
	return !stop
}

func (c *conn) onEvent(ev wsproto.Event) bool {
	switch ev.Kind {
	case wsproto.EventMessage:
		return c.onMessage(ev.Op, ev.Data)
	case wsproto.EventPing:
		c.control(wsproto.OpPong, ev.Data)
		return true
	case wsproto.EventPong:
		c.pongSeq.Store(c.pingSeq.Load())
		return true
	default: // wsproto.EventClose
		return c.onClose(ev.Code)
	}
}

// onMessage handles a whole client message (wsproto has checked its size
// and, for text, its UTF-8). Once the connection is closing, messages are
// ignored while it waits for the client's close. A binary message fails
// the connection with 1003.
func (c *conn) onMessage(op wsproto.Opcode, data []byte) bool {
	switch {
	case c.life.State() >= netpoll.StateQuitting:
	case op == wsproto.OpBinary:
		c.failAfterAnswers(wsproto.CloseUnsupportedData, "binary messages are not supported")
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
	c.life.Quit()
	c.hc.Close(hub.Reason{Code: code, Text: text})
}

// onClose answers the client's close frame (code 1005: it had none),
// echoing its code, unless the hub's is already out, and closes the
// socket.
func (c *conn) onClose(code int) bool {
	if !c.life.Quit() {
		// the hub's close frame is out (or going): this is the answer
		c.closeThenTeardown(wsproto.ClosePayload(code, ""))
		return false
	}
	// the client closes first: its close is echoed after the answers
	// already queued, then the socket is closed
	c.hc.Close(hub.Reason{Code: code})
	return false
}

// closeThenTeardown writes a close frame and tears the connection down
// once the frame is on the wire (or could not be written). When the hub's
// own close frame went first (both sides closed at once), that one is the
// answer, and it may still wait behind the socket's owner: the teardown
// waits for it too.
func (c *conn) closeThenTeardown(payload []byte) {
	pending, err := c.cork.writeControl(wsproto.OpClose, payload)
	switch {
	case errors.Is(err, errClosed):
		c.cork.then(c.teardown)
	case err != nil:
		c.teardown()
	case pending: // this goroutine owns the socket: flush, then tear down
		c.flushAsync(true)
	default: // written, or queued behind the socket's owner
		c.cork.then(c.teardown)
	}
}

// control writes a control frame; after the close frame it is dropped.
func (c *conn) control(op wsproto.Opcode, payload []byte) {
	pending, err := c.cork.writeControl(op, payload)
	switch {
	case errors.Is(err, errClosed):
	case err != nil:
		c.fail()
	case pending:
		c.flushAsync(false)
	}
}
