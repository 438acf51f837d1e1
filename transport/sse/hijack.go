package sse

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/internal/netpoll"
)

// An HTTP/1.1 stream is taken over from net/http once its headers are
// decided: the handler returns, so the request, net/http's connection state
// with its 4 KiB buffers and the handler's stack are freed. On Linux an idle
// stream then holds no goroutine at all: its socket waits in the endpoint's
// epoll instance (internal/netpoll) until the client sends something or
// leaves; elsewhere, and on TLS, one reader goroutine notices the client
// leaving. Events are written by the endpoint's pool writers
// (netpoll.Pool), one chunk per batch with a non-blocking write, as on
// WebSocket; a socket that cannot take a chunk at once gets a goroutine of
// its own until its queue is empty. The body is chunked, so the response stays a
// well-formed HTTP/1.1 keep-alive response; the connection is closed when
// the stream ends. HTTP/2 streams cannot be taken over and keep the
// handler-as-writer path of stream.

// hijacked is the hub.Sink of a taken-over HTTP/1.1 stream. Its state is
// life (netpoll.Lifecycle, whose doc comment has the transitions and who
// owns the socket when): New until serveHijacked has written the response
// head, Open while serving, Closing once the hub aborted it (no more
// writes), Closed once ended. The reader never quits (it only notices the
// client leaving), and a close reason from the queue is written as the
// last chunk and ends the stream at once.
type hijacked struct {
	h       *Handler
	conn    *hub.Conn
	nc      net.Conn
	raw     syscall.RawConn // nc's socket when it is a plain TCP one, else nil
	release func()          // admission slot
	retry   int64           // the opening retry field, written with the first batch

	life  netpoll.Lifecycle[hub.Reason]
	first bool // the opening retry field is still to be written; writer only
}

var _ hub.Sink = (*hijacked)(nil)

// canHijack reports whether r's stream can be taken over.
func canHijack(w http.ResponseWriter, r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		return false
	}
	for {
		switch x := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return false
		}
	}
}

// Wake starts a writer (once per empty→non-empty change, see hub.Sink).
func (s *hijacked) Wake() {
	if s.life.State() >= netpoll.StateOpen {
		s.h.pool.Push(s)
	}
}

// Abort ends the stream at once (slow consumer, drain timeout); before the
// head is out, serveHijacked does it once the stream starts.
func (s *hijacked) Abort(r hub.Reason) {
	if _, ok := s.life.Close(r); ok {
		s.endAsync()
	}
}

// endAsync ends the stream on a goroutine: the hub may hold its locks, and
// end unregisters.
func (s *hijacked) endAsync() {
	s.h.wg.Add(1)
	go func() {
		defer s.h.wg.Done()
		s.end()
	}()
}

// Heartbeat queues a ": ping" comment every interval.
func (s *hijacked) Heartbeat(bool) {
	if s.life.State() == netpoll.StateOpen {
		s.conn.Send(hub.Ping)
	}
}

// end ends the stream once: out of the poller, socket closed
// (life.Teardown), unregistered from the hub, admission slot released.
func (s *hijacked) end() {
	if !s.life.Teardown(s.h.poll, s, s.nc) {
		return
	}
	s.h.o.Hub.Unregister(s.conn)
	s.release()
	s.h.wg.Done() // the stream's own count, from serveHijacked
}

// Readable drops what the client sent (it should send nothing) and
// notices it leaving; then the socket is re-armed (netpoll.Watcher).
func (s *hijacked) Readable() {
	var b [512]byte
	if err := s.life.Read(s.h.poll, s, s.raw, b[:], nil); err != nil {
		s.end() // EOF, a reset: the stream is over
	}
}

var hijackBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Drain runs on a pool writer (netpoll.Pool).
func (s *hijacked) Drain() { s.drain(false) }

// drain writes each batch as one chunk until the queue is empty. On a pool
// writer (own false) the write is non-blocking, and a socket that cannot
// take the chunk at once (a slow reader), or a TLS one, gets the rest on a
// goroutine of the stream's own, which goes on draining (own true, waiting
// on the socket with the write timeout); the next Wake goes back to the
// pool. So a pool writer never waits on a socket.
func (s *hijacked) drain(own bool) {
	var msgs []*hub.Message
	for {
		var reason *hub.Reason
		msgs, reason = s.conn.Next(msgs[:0])
		if s.life.State() >= netpoll.StateClosing {
			return // aborted, or ended
		}
		bp, chunk := s.chunk(msgs, reason)
		written := 0
		var err error
		switch {
		case len(chunk) == 0:
		case own:
			err = s.write(chunk)
			written = len(chunk)
		case s.raw != nil:
			written, err = netpoll.TryWrite(s.raw, chunk)
		}
		if err == nil && written < len(chunk) {
			rest := chunk[written:]
			s.h.wg.Add(1)
			go func() {
				defer s.h.wg.Done()
				err := s.write(rest)
				putChunk(bp)
				if s.finish(msgs, reason, err) {
					s.drain(true)
				}
			}()
			return
		}
		putChunk(bp)
		if !s.finish(msgs, reason, err) || len(msgs) == 0 {
			return
		}
	}
}

// finish counts a written batch, and ends the stream after a failed write
// or its close reason; it reports whether the stream goes on.
func (s *hijacked) finish(msgs []*hub.Message, reason *hub.Reason, err error) bool {
	if err != nil {
		s.end()
		return false
	}
	if len(msgs) > 0 {
		s.h.o.Metrics.DeliveredMessages(hub.TransportSSE, msgs)
		s.h.o.Metrics.QueueDepth(hub.TransportSSE, len(msgs))
		clear(msgs)
	}
	if reason != nil {
		s.end()
		return false
	}
	return true
}

// sizeRoom is the room kept before a chunk's data for its size line (at
// most 8 hex digits and CRLF).
const sizeRoom = 10

// chunk builds the next chunk in a pooled buffer: the opening retry field
// with the first batch, the events' records, and for a close reason the
// closing record and the last chunk. It is empty when there is nothing to
// write. Writer only.
func (s *hijacked) chunk(msgs []*hub.Message, reason *hub.Reason) (*[]byte, []byte) {
	bp := hijackBufs.Get().(*[]byte)
	b := append((*bp)[:0], make([]byte, sizeRoom)...)
	if s.first {
		s.first = false
		b = appendRetry(b, s.retry)
	}
	for _, m := range msgs {
		b = append(b, m.SSE...)
	}
	if reason != nil {
		b = append(b, closeRecord(*reason, s.h.jitter())...)
	}
	start := sizeRoom
	if n := len(b) - sizeRoom; n > 0 {
		var hdr [sizeRoom]byte
		h := append(strconv.AppendInt(hdr[:0], int64(n), 16), "\r\n"...)
		start = sizeRoom - len(h)
		copy(b[start:], h)
		b = append(b, "\r\n"...)
	}
	if reason != nil {
		b = append(b, "0\r\n\r\n"...)
	}
	*bp = b
	return bp, b[start:]
}

func putChunk(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		*bp = (*bp)[:0]
		hijackBufs.Put(bp)
	}
}

// write writes b under the write timeout, waiting on the socket. The
// deadline is cleared afterwards: the stream goes back to the pool writers,
// whose non-blocking writes would fail on a deadline left behind (see
// serveHijacked).
func (s *hijacked) write(b []byte) error {
	_ = s.nc.SetWriteDeadline(time.Now().Add(s.h.o.WriteTimeout))
	_, err := s.nc.Write(b)
	_ = s.nc.SetWriteDeadline(time.Time{})
	return err
}

// serveHijacked takes the stream over after Register: it writes the
// response head, starts the reader and the first writer, and returns.
func (h *Handler) serveHijacked(w http.ResponseWriter, s *hijacked, conn *hub.Conn, release func()) {
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	hd.Set("Connection", "keep-alive")
	hd.Set("Transfer-Encoding", "chunked")
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.o.Hub.Unregister(conn)
		release()
		http.Error(w, "stream unavailable", http.StatusInternalServerError)
		return
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	hd.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	_ = hd.Write(&head)
	head.WriteString("\r\n")
	_ = nc.SetWriteDeadline(time.Now().Add(h.o.WriteTimeout))
	if _, err := nc.Write(head.Bytes()); err != nil {
		_ = nc.Close()
		h.o.Hub.Unregister(conn)
		release()
		return
	}
	// No deadline may stay on the connection once the head is out (issue
	// 22). The head's write deadline, left behind, cut every stream at its
	// first write WriteTimeout after the open: the pool writers' writes and
	// the poller's reads go through syscall.RawConn, which never waits but
	// fails at once with os.ErrDeadlineExceeded when a deadline set on the
	// connection has passed, and the stream then ends without its last
	// chunk. Deadlines of the http.Server (ReadTimeout, WriteTimeout) may
	// also survive the Hijack (its documentation leaves clearing them to
	// the caller): both go. A write that can wait (write) sets its own
	// deadline and clears it.
	_ = nc.SetDeadline(time.Time{})
	s.nc, s.first, s.release = nc, true, release
	// Bytes the client sent after its request (it should send none) stay in
	// net/http's reader, which is dropped with it.
	_ = brw
	h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeAccepted, "")
	h.wg.Add(1) // the stream, until end
	s.raw = netpoll.Raw(nc)
	if _, aborted := s.life.Start(); aborted {
		s.endAsync() // the hub aborted it while the head was written
	}
	h.pool.Push(s) // hub.connected and what came before Start
	switch err := s.life.Watch(h.poll, s, s.raw); {
	case err == nil, errors.Is(err, netpoll.ErrClosed):
		return // the poller reports it from now on; or it is over
	case !errors.Is(err, netpoll.ErrNotSocket):
		h.log.Debug("sse: reading on a goroutine", "err", err)
	}
	// Reading (and dropping) what the client sends until the connection
	// ends is how a stream notices its client left: EOF, a reset, or our
	// own close.
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		_ = netpoll.ReadBlocking(nc, make([]byte, 64), nil)
		s.end()
	}()
}
