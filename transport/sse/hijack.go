package sse

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/transport/metrics"
	"github.com/hubd/hub/transport/netpoll"
)

// An HTTP/1.1 stream is taken over from net/http once its headers are
// decided: the handler returns, so the request, net/http's connection state
// with its 4 KiB buffers and the handler's stack are freed. On Linux an idle
// stream then holds no goroutine at all: its socket waits in the endpoint's
// epoll instance (transport/netpoll) until the client sends something or
// leaves; elsewhere, and on TLS, one reader goroutine notices the client
// leaving. A writer runs only while the queue has something, as on
// WebSocket. The body is chunked, so the response stays a
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
		s.startWriter()
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

// readable drops what the client sent (it should send nothing) and notices
// it leaving; then the socket is re-armed.
func (s *hijacked) readable() {
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

// dispatch reads a stream the poller reported readable, on a goroutine
// that lives as long as the read.
func (h *Handler) dispatch(w netpoll.Watcher) {
	s := w.(*hijacked)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s.readable()
	}()
}

func (s *hijacked) startWriter() {
	s.h.wg.Add(1)
	go func() {
		defer s.h.wg.Done()
		s.writeLoop()
	}()
}

var hijackBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeLoop drains the queue into chunks, one socket write per batch, and
// ends when the queue is empty; a close reason writes the last record and
// the last chunk and closes the connection.
func (s *hijacked) writeLoop() {
	var msgs []*hub.Message
	for {
		msgs, reason := s.conn.Next(msgs[:0])
		if s.dead.Load() {
			return
		}
		var payload []byte
		bp := hijackBufs.Get().(*[]byte)
		payload = (*bp)[:0]
		if s.first {
			s.first = false
			payload = appendRetry(payload, s.retry)
		}
		for _, m := range msgs {
			payload = append(payload, m.SSE...)
		}
		if reason != nil {
			payload = append(payload, closeRecord(*reason, s.h.jitter())...)
		}
		err := s.writeChunk(payload, reason != nil)
		*bp = payload[:0]
		if cap(payload) <= 64<<10 {
			hijackBufs.Put(bp)
		}
		if err != nil {
			s.end()
			return
		}
		if len(msgs) > 0 {
			s.h.o.Metrics.DeliveredMessages(hub.TransportSSE, msgs)
			s.h.o.Metrics.QueueDepth(hub.TransportSSE, len(msgs))
			clear(msgs)
		}
		if reason != nil {
			s.end()
			return
		}
		if len(msgs) == 0 {
			return
		}
	}
}

// writeChunk writes p as one chunk (and the last chunk when last) under
// the write deadline, in one socket write.
func (s *hijacked) writeChunk(p []byte, last bool) error {
	if len(p) == 0 && !last {
		return nil
	}
	b := make([]byte, 0, len(p)+24)
	if len(p) > 0 {
		b = strconv.AppendInt(b, int64(len(p)), 16)
		b = append(b, "\r\n"...)
		b = append(b, p...)
		b = append(b, "\r\n"...)
	}
	if last {
		b = append(b, "0\r\n\r\n"...)
	}
	_ = s.nc.SetWriteDeadline(time.Now().Add(s.h.o.WriteTimeout))
	_, err := s.nc.Write(b)
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
	s.nc, s.first, s.release, s.fd = nc, true, release, -1
	// Bytes the client sent after its request (it should send none) stay in
	// net/http's reader, which is dropped with it.
	_ = brw
	h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeAccepted, "")
	h.wg.Add(1) // the stream, until end
	s.ready.Store(true)
	if r := s.early.Load(); r != nil {
		s.Abort(*r)
	}
	s.startWriter()
	if s.raw = netpoll.Raw(nc); s.raw != nil {
		fd := netpoll.FD(s.raw)
		s.mu.Lock()
		err := errEnded
		if !s.ended {
			if err = h.poll.Add(s, fd); err == nil {
				s.fd = fd
			}
		}
		s.mu.Unlock()
		if err == nil || err == errEnded {
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

var errEnded = errors.New("stream ended")

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
