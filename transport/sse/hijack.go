package sse

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
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

// hijacked is the hub.Sink of a taken-over HTTP/1.1 stream.
type hijacked struct {
	h       *Handler
	conn    *hub.Conn
	nc      net.Conn
	raw     syscall.RawConn // nc's socket when it is a plain TCP one, else nil
	release func()          // admission slot
	retry   int64           // the opening retry field, written with the first batch

	ready atomic.Bool
	early atomic.Pointer[hub.Reason] // an Abort that came before ready
	dead  atomic.Bool
	first bool // the opening retry field is still to be written; writer only

	mu    sync.Mutex
	fd    int  // the socket's descriptor while it is in the poller, else -1
	ended bool // end ran
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
	if s.ready.Load() {
		s.h.pool.Push(s)
	}
}

// Abort ends the stream at once (slow consumer, drain timeout).
func (s *hijacked) Abort(r hub.Reason) {
	if !s.ready.Load() {
		s.early.Store(&r)
		if !s.ready.Load() {
			return
		}
	}
	s.dead.Store(true)
	// not synchronously: the hub may hold its locks, and end unregisters
	s.h.wg.Add(1)
	go func() {
		defer s.h.wg.Done()
		s.end()
	}()
}

// Heartbeat queues a ": ping" comment every interval.
func (s *hijacked) Heartbeat(bool) {
	if s.ready.Load() && !s.dead.Load() {
		s.conn.Send(hub.Ping)
	}
}

// end ends the stream once: out of the poller, socket closed, unregistered
// from the hub, admission slot released.
func (s *hijacked) end() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	fd := s.fd
	s.fd = -1
	s.mu.Unlock()
	s.dead.Store(true)
	if fd >= 0 {
		s.h.poll.Remove(s, fd) // before the descriptor is closed (and reused)
	}
	_ = s.nc.Close()
	s.h.o.Hub.Unregister(s.conn)
	s.release()
	s.h.wg.Done() // the stream's own count, from serveHijacked
}

// Readable drops what the client sent (it should send nothing) and
// notices it leaving; then the socket is re-armed (netpoll.Watcher).
func (s *hijacked) Readable() {
	var b [512]byte
	for range 16 {
		n, err := netpoll.TryRead(s.raw, b[:])
		if err != nil {
			s.end() // EOF, a reset: the stream is over
			return
		}
		if n < len(b) {
			break
		}
	}
	s.mu.Lock()
	fd := s.fd
	s.mu.Unlock()
	if fd >= 0 {
		s.h.poll.Rearm(s, fd)
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
		if s.dead.Load() {
			return
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
	s.nc, s.first, s.release, s.fd = nc, true, release, -1
	// Bytes the client sent after its request (it should send none) stay in
	// net/http's reader, which is dropped with it.
	_ = brw
	h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeAccepted, "")
	h.wg.Add(1) // the stream, until end
	s.raw = netpoll.Raw(nc)
	s.ready.Store(true)
	if r := s.early.Load(); r != nil {
		s.Abort(*r)
	}
	h.pool.Push(s) // hub.connected and what came before ready
	if s.raw != nil {
		fd := netpoll.FD(s.raw)
		s.mu.Lock()
		var err error
		if !s.ended { // else it ended already: nothing to watch
			if err = h.poll.Add(s, fd); err == nil {
				s.fd = fd
			}
		}
		s.mu.Unlock()
		if err == nil {
			return
		}
		h.log.Debug("sse: reading on a goroutine", "err", err)
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		readUntilGone(nc)
		s.end()
	}()
}

// readUntilGone reads (and drops) what the client sends until the
// connection ends: that is how a stream notices its client left.
func readUntilGone(nc net.Conn) {
	var b [64]byte
	for {
		if _, err := nc.Read(b[:]); err != nil {
			return // EOF, a reset or our own close: the stream is over
		}
	}
}
