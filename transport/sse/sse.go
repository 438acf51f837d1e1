// Package sse is the hub's Server-Sent Events endpoint: the fallback
// transport for networks that break WebSocket.
//
// It owns the text/event-stream framing around the hub's pre-encoded records
// ([hub.Message.SSE]), the opening retry field, resume from the Last-Event-ID
// header (or the last_event_id query parameter), ": ping" heartbeat comments,
// the write timeout, the end-of-stream control events (hub.shutdown,
// hub.expired, hub.closed) and CORS for allowed origins.
//
// Who writes a stream depends on its protocol. An HTTP/1.1 stream is taken
// over from net/http once it is registered (hijack.go): the endpoint writes
// the response head and a chunked body itself, and the handler returns. Its
// queue is drained by the endpoint's pool writers ([netpoll.Pool]), one
// chunk per batch with a non-blocking write; a socket that cannot take a
// chunk at once, or a TLS one, is written by a goroutine of the stream's
// own until the queue is empty. On Linux the socket waits in the
// endpoint's epoll instance ([netpoll.Poller]) until the client sends
// something or leaves, so an idle stream holds no goroutine; elsewhere, and
// over TLS, a reader goroutine per stream notices the client leaving.
//
// Any other stream (HTTP/2, HTTP/1.0) stays on net/http, and its handler
// goroutine is its single writer: it registers the connection with the
// hub, then sleeps until the hub wakes it, drains the connection's queue
// with [hub.Conn.Next] and writes everything it got with one flush.
package sse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/internal/netpoll"
)

// Defaults of Options.
const (
	DefaultRetry        = 3 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// CORS answer headers.
const (
	corsAllowHeaders = "Authorization, Last-Event-ID, Content-Type"
	corsAllowMethods = "GET, OPTIONS"
	corsMaxAge       = "600"
)

// Options configure a Handler. The zero value of each field is its default.
type Options struct {
	// Hub is the hub the streams are registered with (required).
	Hub *hub.Hub
	// Auth verifies the client's token (required).
	Auth *auth.Verifier
	// AllowedOrigins are the HUB_ALLOWED_ORIGINS patterns (see
	// httpx.OriginAllowed). An allowed Origin gets a CORS answer, preflight
	// included; with no pattern only the request's own host is allowed. A
	// stream authenticated by the cookie whose request has an Origin that
	// is not allowed is refused with 403 origin_not_allowed.
	AllowedOrigins []string
	// Retry is the base reconnect hint sent in the retry field (default 3s);
	// each stream gets a value jittered by up to a third around it.
	Retry time.Duration
	// WriteTimeout is the deadline of each write and flush (default 10s).
	WriteTimeout time.Duration
	// Logger receives the endpoint's logs (default: slog.Default()).
	Logger *slog.Logger
	// Admit, when set, is asked before a stream is registered, after the
	// token was verified; resuming says whether the client sent a last event
	// id that the hub could have issued (hub.Hub.Resumable). When it answers !ok the request is refused with status and a JSON
	// error of code, with a Retry-After header when retryAfter > 0.
	Admit func(r *http.Request, resuming bool) (ok bool, status int, code string, retryAfter time.Duration)
	// Acquire is Admit for streams that outlive their handler (HTTP/1.1
	// streams are taken over from net/http): an admitted stream calls
	// release when it ends. It is used instead of Admit when set.
	Acquire func(r *http.Request, resuming bool) (release func(), ok bool, status int, code string, retryAfter time.Duration)
	// Metrics records handshakes and deliveries (nil: none).
	Metrics *metrics.Metrics
}

// Handler serves the SSE endpoint: GET opens a stream, OPTIONS answers CORS
// preflights, any other method is refused with 405.
type Handler struct {
	o    Options
	log  *slog.Logger
	wg   sync.WaitGroup // taken-over streams until they end, and their goroutines
	poll *netpoll.Poller
	pool *netpoll.Pool // writers of taken-over streams
}

// Wait blocks until every taken-over stream has ended and every goroutine
// of the endpoint with it (after the hub closed the streams).
func (h *Handler) Wait() { h.wg.Wait() }

var _ http.Handler = (*Handler)(nil)

// New returns a Handler for o.
func New(o Options) *Handler {
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &Handler{o: o, log: o.Logger}
	h.poll = netpoll.New(&h.wg)
	h.pool = netpoll.NewPool(runtime.GOMAXPROCS(0), netpoll.WriterSlice, o.Hub.Activity, &h.wg)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	allowed := h.cors(w, r)
	switch r.Method {
	case http.MethodGet:
		h.serveStream(w, r)
	case http.MethodOptions:
		w.Header().Set("Allow", corsAllowMethods)
		if allowed && r.Header.Get("Access-Control-Request-Method") != "" {
			hd := w.Header()
			hd.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			hd.Set("Access-Control-Allow-Methods", corsAllowMethods)
			hd.Set("Access-Control-Max-Age", corsMaxAge)
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", corsAllowMethods)
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET to open an event stream")
	}
}

// cors adds the CORS answer for an allowed cross-origin request and reports
// whether the request's Origin was allowed.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	hd := w.Header()
	hd.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" || !httpx.OriginAllowed(h.o.AllowedOrigins, origin, r.Host) {
		return false
	}
	hd.Set("Access-Control-Allow-Origin", origin)
	hd.Set("Access-Control-Allow-Credentials", "true")
	return true
}

// serveStream authenticates, registers and then writes the stream until it
// ends.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request) {
	id, aerr := h.o.Auth.Authenticate(r)
	if aerr == nil {
		// a page on another origin can make the browser send the cookie
		// (EventSource withCredentials), never the header
		aerr = auth.CheckCookieOrigin(r, id, h.o.AllowedOrigins)
	}
	if aerr != nil {
		h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeRefused, aerr.Code)
		auth.WriteError(w, aerr)
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = httpx.QueryValue(r.URL.RawQuery, "last_event_id")
	}
	// An id that is not valid cannot be known: the hub answers
	// recovered:false, so it is passed on rather than refused.

	// only an id the hub could have issued counts as a resume: a flood of
	// made-up ids cannot take the share reserved for resumes
	resuming := h.o.Hub.Resumable(lastID)
	release := func() {}
	if h.o.Acquire != nil {
		rel, ok, status, code, after := h.o.Acquire(r, resuming)
		if !ok {
			httpx.RetryAfter(w, after)
			h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeRefused, code)
			httpx.WriteError(w, status, code, refusalMessage(code, status))
			return
		}
		if rel != nil {
			release = rel
		}
	} else if h.o.Admit != nil {
		if ok, status, code, after := h.o.Admit(r, resuming); !ok {
			if after > 0 {
				w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(after.Seconds())), 10))
			}
			if status == 0 {
				status = http.StatusServiceUnavailable
			}
			if code == "" {
				code = "unavailable"
			}
			h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeRefused, code)
			httpx.WriteError(w, status, code, refusalMessage(code, status))
			return
		}
	}

	if canHijack(w, r) {
		hs := &hijacked{h: h, retry: h.jitter()}
		conn, err := h.o.Hub.Register(hub.ConnInfo{
			UserID:         id.UserID,
			Transport:      hub.TransportSSE,
			TokenExpiresAt: id.ExpiresAt,
			LastEventID:    lastID,
		}, hs)
		if err != nil {
			release()
			h.refuse(w, err)
			return
		}
		hs.conn = conn
		h.serveHijacked(w, hs, conn, release)
		return
	}
	defer release()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	s := &stream{
		wake:   make(chan struct{}, 1),
		cancel: cancel,
		rc:     http.NewResponseController(w),
	}
	conn, err := h.o.Hub.Register(hub.ConnInfo{
		UserID:         id.UserID,
		Transport:      hub.TransportSSE,
		TokenExpiresAt: id.ExpiresAt,
		LastEventID:    lastID,
	}, s)
	if err != nil {
		h.refuse(w, err)
		return
	}
	s.conn.Store(conn)
	h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeAccepted, "")
	defer h.o.Hub.Unregister(conn)
	defer s.finish()

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Accel-Buffering", "no")
	if r.ProtoMajor == 1 && r.ProtoMinor == 1 {
		hd.Set("Connection", "keep-alive")
	}
	w.WriteHeader(http.StatusOK)

	log := h.log.With("conn", conn.ID(), "user", conn.UserID())
	log.Debug("sse stream opened", "proto", r.Proto, "resume", lastID != "")
	reason, err := h.run(ctx, w, s, conn)
	switch {
	case err != nil:
		log.Debug("sse stream ended", "err", err)
	case reason != nil:
		log.Debug("sse stream closed", "reason", reason.String())
	default:
		log.Debug("sse stream ended", "cause", context.Cause(ctx))
	}
	if ab := s.aborted.Load(); ab != nil {
		log.Debug("sse stream aborted", "reason", ab.String())
	}
}

// run is the single writer loop of a stream that is not taken over
// (HTTP/2, HTTP/1.0). It returns the close reason
// the hub asked for, or the write error that ended the stream; both nil when
// the client went away or the stream was aborted.
func (h *Handler) run(ctx context.Context, w http.ResponseWriter, s *stream, conn *hub.Conn) (*hub.Reason, error) {
	// The retry field comes first, in the record of hub.connected (so that
	// clients which hand out every record see it with that event) and in
	// the same flush.
	pending := appendRetry(nil, h.jitter())
	var buf []*hub.Message
	for {
		if ctx.Err() != nil {
			return nil, nil
		}
		msgs, reason := conn.Next(buf[:0])
		if reason != nil {
			pending = append(pending, closeRecord(*reason, h.jitter())...)
		}
		if len(msgs) > 0 || len(pending) > 0 {
			if err := h.write(w, s, pending, msgs); err != nil {
				return nil, err
			}
			if len(msgs) > 0 {
				h.o.Metrics.DeliveredMessages(hub.TransportSSE, msgs)
				h.o.Metrics.QueueDepth(hub.TransportSSE, len(msgs))
			}
			pending = pending[:0]
		}
		clear(msgs) // let the messages go; keep the slice
		buf = msgs
		if reason != nil {
			return reason, nil
		}
		if len(msgs) > 0 {
			continue // Next must run until it comes back empty
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil, nil
		}
	}
}

// write writes pre and the records of msgs under one write deadline, then
// flushes once and clears the deadline (issue 22): it bounds this write
// only. Left armed, it ended a stream that stayed idle for WriteTimeout
// (the heartbeat interval, 25 s by default, is longer than the write
// timeout): on HTTP/2 the deadline is a timer that resets the stream
// (RST_STREAM INTERNAL_ERROR) when it passes, write in progress or not; on
// HTTP/1.1 the next write would fail at once.
func (h *Handler) write(w http.ResponseWriter, s *stream, pre []byte, msgs []*hub.Message) error {
	if err := s.setDeadline(time.Now().Add(h.o.WriteTimeout)); err != nil {
		return err
	}
	if len(pre) > 0 {
		if _, err := w.Write(pre); err != nil {
			return fmt.Errorf("write stream: %w", err)
		}
	}
	for _, m := range msgs {
		if _, err := w.Write(m.SSE); err != nil {
			return fmt.Errorf("write stream: %w", err)
		}
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush stream: %w", err)
	}
	return s.setDeadline(time.Time{})
}

// jitter returns the reconnect hint of one stream in milliseconds: the base
// plus or minus up to a third of it, at least 1.
func (h *Handler) jitter() int64 {
	base := h.o.Retry.Milliseconds()
	if base < 3 {
		return max(base, 1)
	}
	spread := base / 3
	return base - spread + rand.Int64N(2*spread+1)
}

func appendRetry(b []byte, ms int64) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, ms, 10)
	return append(b, '\n')
}

// closeRecord is the last record of a stream closed by the hub with r.
func closeRecord(r hub.Reason, retryMs int64) []byte {
	var b []byte
	switch r {
	case hub.ReasonShutdown:
		b = appendRetry(b, retryMs)
		b = append(b, "event: hub.shutdown\ndata: {\"type\":\"hub.shutdown\",\"payload\":{\"retryMs\":"...)
		b = strconv.AppendInt(b, retryMs, 10)
		b = append(b, "}}\n\n"...)
	case hub.ReasonTokenExpired:
		b = append(b, "event: hub.expired\ndata: {\"type\":\"hub.expired\"}\n\n"...)
	default:
		b = append(b, "event: hub.closed\ndata: {\"type\":\"hub.closed\",\"payload\":{\"code\":"...)
		b = strconv.AppendInt(b, int64(r.Code), 10)
		b = append(b, `,"reason":`...)
		b = strconv.AppendQuote(b, r.Text) // our own ASCII texts: a valid JSON string
		b = append(b, "}}\n\n"...)
	}
	return b
}

// refuse answers a registration error.
func (h *Handler) refuse(w http.ResponseWriter, err error) {
	rec := &codeRecorder{ResponseWriter: w}
	defer func() { h.o.Metrics.Handshake(hub.TransportSSE, metrics.OutcomeRefused, rec.code) }()
	w = rec
	var le *hub.LimitError
	switch {
	case errors.Is(err, hub.ErrShuttingDown):
		httpx.RetryAfter(w, httpx.UnavailableRetry)
		httpx.WriteError(w, http.StatusServiceUnavailable, "shutting_down", "the node is draining; reconnect to another node")
	case errors.Is(err, hub.ErrUnavailable):
		httpx.RetryAfter(w, httpx.UnavailableRetry)
		httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the broker is unreachable; retry later")
	case errors.As(err, &le):
		httpx.WriteError(w, http.StatusTooManyRequests, "too_many_connections",
			"too many connections for this "+le.Scope+" (limit "+strconv.Itoa(le.Limit)+")")
	case errors.Is(err, hub.ErrTooManyConnections):
		httpx.WriteError(w, http.StatusTooManyRequests, "too_many_connections", "too many connections")
	default:
		h.log.Error("sse register", "err", err)
		httpx.WriteError(w, http.StatusInternalServerError, "internal_error", "could not open the stream")
	}
}

func refusalMessage(code string, status int) string {
	switch code {
	case "too_many_connections":
		return "too many connections"
	case "shutting_down":
		return "the node is draining; reconnect to another node"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "connection refused"
}

// stream is the hub.Sink of one SSE connection.
type stream struct {
	wake   chan struct{} // capacity 1
	cancel context.CancelFunc
	rc     *http.ResponseController
	conn   atomic.Pointer[hub.Conn]

	mu      sync.Mutex // orders Abort against the end of the handler
	done    bool
	aborted atomic.Pointer[hub.Reason]
}

var _ hub.Sink = (*stream)(nil)

// Wake implements hub.Sink.
func (s *stream) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Abort implements hub.Sink: it ends the stream at once, unblocking a write
// in progress by moving its deadline to now.
func (s *stream) Abort(r hub.Reason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.aborted.Store(&r)
	s.cancel()
	_ = s.rc.SetWriteDeadline(time.Now())
}

// Heartbeat implements hub.Sink: every interval the stream gets a ": ping"
// comment, through the queue so that it never interleaves with a record.
func (s *stream) Heartbeat(bool) {
	if c := s.conn.Load(); c != nil {
		c.Send(hub.Ping)
	}
}

// errAborted ends the writer of an aborted stream.
var errAborted = errors.New("stream aborted")

// setDeadline sets the write deadline (the zero time clears it) unless the
// stream was aborted (whose deadline of now must stay).
func (s *stream) setDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted.Load() != nil {
		return errAborted
	}
	if err := s.rc.SetWriteDeadline(t); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("set write deadline: %w", err)
	}
	return nil
}

// finish marks the handler as returning: the response must not be touched
// afterwards. A stream that ended normally gets its write deadline cleared
// so that a kept-alive connection is not cut later by it.
func (s *stream) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.aborted.Load() == nil {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
}

// codeRecorder notes the error code a refusal writes, for metrics.
type codeRecorder struct {
	http.ResponseWriter
	code string
}

func (c *codeRecorder) Write(b []byte) (int, error) {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil {
		c.code = e.Error.Code
	}
	return c.ResponseWriter.Write(b)
}
