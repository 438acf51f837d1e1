package sse

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/transport/metrics"
)

// An HTTP/1.1 stream is taken over from net/http once its headers are
// decided: the handler returns, so the request, net/http's connection state
// with its 4 KiB buffers and the handler's stack are freed, and an idle
// stream costs one goroutine (a reader that notices the client leaving)
// instead of two plus those buffers. A writer runs only while the queue has
// something, as on WebSocket. The body is chunked, so the response stays a
// well-formed HTTP/1.1 keep-alive response; the connection is closed when
// the stream ends. HTTP/2 streams cannot be taken over and keep the
// handler-as-writer path of stream.

// hijacked is the hub.Sink of a taken-over HTTP/1.1 stream.
type hijacked struct {
	h     *Handler
	conn  *hub.Conn
	nc    net.Conn
	retry int64 // the opening retry field, written with the first batch

	ready atomic.Bool
	early atomic.Pointer[hub.Reason] // an Abort that came before ready
	dead  atomic.Bool
	once  sync.Once // closes nc
	first bool      // the opening retry field is still to be written; writer only
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
	s.close()
}

// Heartbeat queues a ": ping" comment every interval.
func (s *hijacked) Heartbeat(bool) {
	if s.ready.Load() && !s.dead.Load() {
		s.conn.Send(hub.Ping)
	}
}

func (s *hijacked) close() {
	s.once.Do(func() { _ = s.nc.Close() })
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
			s.dead.Store(true)
			s.close()
			return
		}
		if len(msgs) > 0 {
			s.h.o.Metrics.DeliveredMessages(hub.TransportSSE, msgs)
			s.h.o.Metrics.QueueDepth(hub.TransportSSE, len(msgs))
			clear(msgs)
		}
		if reason != nil {
			s.dead.Store(true)
			s.close()
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
	s.nc, s.first = nc, true
	// Bytes the client sent after its request (it should send none) stay in
	// net/http's reader, which is dropped with it.
	_ = brw
	h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeAccepted, "")
	s.ready.Store(true)
	if r := s.early.Load(); r != nil {
		s.Abort(*r)
	}
	s.startWriter()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer release()
		defer h.o.Hub.Unregister(conn)
		defer s.close()
		readUntilGone(nc)
		s.dead.Store(true)
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
