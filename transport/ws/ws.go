// Package ws is the WebSocket endpoint of the hub: the handshake (RFC
// 6455 checks by internal/wsproto, then origin, token and limits; the 101
// answer written after taking the connection over from net/http), then the
// connection's life on the hub's own reader and writer, so that an idle
// connection holds no goroutine and no buffer: its socket waits in an epoll
// instance (internal/netpoll; Linux only, elsewhere and over TLS a reader
// goroutine per connection) until the client sends something, and a pool
// writer frames and writes events only while its queue has some
// (netpoll.Pool, cork.go). Ping frames and hub.ping heartbeats, token refresh and expiry,
// the closing handshake and the contract's close codes are here.
package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/internal/netpoll"
	"github.com/hubd/hub/internal/wsproto"
)

// MaxFrame is the largest client frame accepted (other than hub.send).
const MaxFrame = 4096

// Options configure the endpoint.
type Options struct {
	Hub            *hub.Hub
	Auth           *auth.Verifier
	AllowedOrigins []string      // HUB_ALLOWED_ORIGINS; empty: same host only
	PongTimeout    time.Duration // default 10s
	WriteTimeout   time.Duration // per batch of writes, default 10s
	Logger         *slog.Logger
	// Acquire is an optional admission check run after authentication; an
	// admitted connection calls release when it ends.
	Acquire func(r *http.Request, resuming bool) (release func(), ok bool, status int, code string, retryAfter time.Duration)

	// OnMessage handles client frames whose type the endpoint does not know
	// itself (hub.send); nil answers them with hub.error.
	OnMessage func(c *hub.Conn, typ string, frame []byte) bool
	// Metrics records handshakes and deliveries (nil: none).
	Metrics *metrics.Metrics
	// MaxSendFrame is the largest hub.send frame (HUB_MAX_PAYLOAD) when
	// OnMessage is set; other frames stay at MaxFrame.
	MaxSendFrame int64
	// Compression accepts permessage-deflate (HUB_WS_COMPRESSION) when a
	// client offers it in a form the hub can honour (no context takeover
	// either way, see wsproto.NegotiateDeflate). On such a connection,
	// events whose envelope has at least CompressionMin bytes
	// (HUB_WS_COMPRESSION_MIN; 0: every event) go out compressed, each
	// compressed once for all of its recipients (hub.Message.Compressed);
	// compressed client messages are inflated within the same limits.
	Compression    bool
	CompressionMin int
}

// Handler serves the WebSocket endpoint.
type Handler struct {
	o      Options
	log    *slog.Logger
	wg     sync.WaitGroup // connections until torn down, and every goroutine
	pool   *netpoll.Pool
	poll   *netpoll.Poller
	pinger pinger
	live   atomic.Int64 // connections not yet torn down
}

// New returns the endpoint handler.
func New(o Options) *Handler {
	if o.PongTimeout <= 0 {
		o.PongTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &Handler{o: o, log: o.Logger}
	h.pool = netpoll.NewPool(runtime.GOMAXPROCS(0), netpoll.WriterSlice, o.Hub.Activity, &h.wg)
	h.poll = netpoll.New(&h.wg)
	h.pinger.h = h
	return h
}

// Wait blocks until every connection is torn down and every goroutine of
// the endpoint has ended (after the hub closed the connections).
func (h *Handler) Wait() { h.wg.Wait() }

var bufPool = sync.Pool{New: func() any { b := make([]*hub.Message, 0, 64); return &b }}

// ServeHTTP performs the handshake and runs the connection's reader.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET with a WebSocket upgrade")
		return
	}
	hs, refusal := wsproto.CheckRequest(wsproto.Request{Method: r.Method, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor, Header: r.Header}, h.o.Compression)
	if refusal != nil {
		for _, kv := range refusal.Header {
			w.Header().Set(kv[0], kv[1])
		}
		h.refuse(w, refusal.Status, refusal.Code, refusal.Message)
		return
	}
	if !httpx.OriginAllowed(h.o.AllowedOrigins, r.Header.Get("Origin"), r.Host) {
		h.refuse(w, http.StatusForbidden, "origin_not_allowed", "origin not allowed")
		return
	}
	id, aerr := h.o.Auth.Authenticate(r)
	if aerr != nil {
		h.o.Metrics.Handshake(hub.TransportWebSocket, metrics.OutcomeRefused, aerr.Code)
		auth.WriteError(w, aerr)
		return
	}
	last := httpx.QueryValue(r.URL.RawQuery, "last_event_id")
	release := func() {}
	if h.o.Acquire != nil {
		// only an id the hub could have issued counts as a resume: a flood
		// of made-up ids cannot take the share reserved for resumes
		rel, ok, status, code, after := h.o.Acquire(r, h.o.Hub.Resumable(last))
		if !ok {
			httpx.RetryAfter(w, after)
			h.refuse(w, status, code, "connection refused by admission control; retry later")
			return
		}
		if rel != nil {
			release = rel
		}
	}
	c := &conn{h: h}
	hc, err := h.o.Hub.Register(hub.ConnInfo{
		UserID:         id.UserID,
		Transport:      hub.TransportWebSocket,
		TokenExpiresAt: id.ExpiresAt,
		LastEventID:    last,
	}, c)
	if err != nil {
		release()
		status, code, msg := registerError(err)
		if status == http.StatusServiceUnavailable {
			// draining or the broker unreachable: another node, or this
			// one a moment later, will take it
			httpx.RetryAfter(w, httpx.UnavailableRetry)
		}
		h.refuse(w, status, code, msg)
		return
	}
	// The connection is taken over from net/http: the hub answers 101
	// itself (RFC 6455 §4.2.2) and reads and writes the socket from here.
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.o.Hub.Unregister(hc)
		release()
		h.log.Debug("websocket: the connection cannot be taken over", "err", err)
		h.refuse(w, http.StatusInternalServerError, "internal_error", "the connection could not be upgraded")
		return
	}
	_ = nc.SetDeadline(time.Time{}) // the server's read and write timeouts end with the request
	var first []byte                // what the client sent right after the request
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		first = bytes.Clone(b)
	}
	limit := int64(MaxFrame)
	if h.o.OnMessage != nil && h.o.MaxSendFrame > limit {
		limit = h.o.MaxSendFrame
	}
	h.o.Metrics.Handshake(hub.TransportWebSocket, metrics.OutcomeAccepted, "")
	c.cork, c.hc, c.user, c.release = newCorkConn(nc), hc, id.UserID, release
	c.rd.Limit, c.rd.Deflate = limit, hs.Deflate
	if hs.Deflate {
		c.cork.zmin = int32(min(max(h.o.CompressionMin, 0), math.MaxInt32))
	}
	// The 101 goes out with the first frames (hub.connected), in one write.
	c.cork.preface(wsproto.AppendResponse(nil, hs))
	c.head.Store(true)
	h.live.Add(1)
	h.wg.Add(1) // until teardown
	if r, aborted := c.life.Start(); aborted {
		c.closeAsync(r) // the hub aborted it during the upgrade
	}
	h.pool.Push(c)
	// What the client sent right after the upgrade request is read first;
	// then the socket waits in the poller (no goroutine while idle, none
	// started for it), or, on a connection the poller cannot watch (TLS),
	// on a reader goroutine.
	h.wg.Add(1)
	if !c.start(first) {
		h.wg.Done()
		return
	}
	go func() {
		defer h.wg.Done()
		c.readBlocking()
	}()
}

// refuse answers a refused handshake and counts it.
func (h *Handler) refuse(w http.ResponseWriter, status int, code, msg string) {
	h.o.Metrics.Handshake(hub.TransportWebSocket, metrics.OutcomeRefused, code)
	httpx.WriteError(w, status, code, msg)
}

// registerError maps a hub registration error to the contract's answer.
func registerError(err error) (int, string, string) {
	switch {
	case errors.Is(err, hub.ErrShuttingDown):
		return http.StatusServiceUnavailable, "shutting_down", "the node is draining; reconnect to another node"
	case errors.Is(err, hub.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable", "the broker is unreachable; retry later"
	case errors.Is(err, hub.ErrTooManyConnections):
		return http.StatusTooManyRequests, "too_many_connections", err.Error()
	default:
		return http.StatusInternalServerError, "internal_error", "could not register the connection"
	}
}

// conn is one WebSocket connection; it is the hub.Sink of its hub.Conn.
//
// Its state is life (netpoll.Lifecycle, whose doc comment has the
// transitions and who owns the socket when): New until ServeHTTP has
// taken the socket over, Open while serving, Quitting once the reader
// ended it (the client's close frame, a frame that fails it: the close
// frame goes out through the hub's queue, after the answers already
// queued, and the writer closes the socket right after it), Closing once
// the close is decided and taken by one goroutine (the close frame going
// out; unless the reader ended it, the client's answer awaited for
// closeWait), Closed once torn down (teardown). Writes are ordered by cork
// (corkConn), reads by the poller's one-shot reports.
type conn struct {
	h       *Handler
	cork    *corkConn
	hc      *hub.Conn
	user    string
	release func() // admission slot
	life    netpoll.Lifecycle[hub.Reason]
	head    atomic.Bool // the 101 answer may still wait in the write buffer

	// read state, owned by whoever reads (one at a time): the reader of
	// the client's frames (Limit: the largest client message)
	rd wsproto.Reader

	pingSeq atomic.Uint64 // last ping frame sent
	pongSeq atomic.Uint64 // last ping answered by a pong

	closeTimer atomic.Pointer[time.Timer] // waiting for the peer's close frame
}

// Wake starts a writer; the hub calls it once per empty→non-empty change.
func (c *conn) Wake() {
	if c.life.State() >= netpoll.StateOpen {
		c.h.pool.Push(c)
	}
}

// Abort closes at once (slow consumer, drain timeout); before the upgrade
// finished, ServeHTTP does it once the connection starts.
func (c *conn) Abort(r hub.Reason) {
	if _, ok := c.life.Close(r); ok {
		c.closeAsync(r)
	}
}

// closeAsync closes on a goroutine: the hub may hold its locks.
func (c *conn) closeAsync(r hub.Reason) {
	c.h.wg.Add(1)
	go func() {
		defer c.h.wg.Done()
		c.close(r)
	}()
}

// Heartbeat queues a ping frame (sent by the pinger, outside the hub's
// locks) and, when the connection was idle, hub.ping.
func (c *conn) Heartbeat(idle bool) {
	if s := c.life.State(); s < netpoll.StateOpen || s >= netpoll.StateClosing {
		return
	}
	if idle {
		c.hc.Send(hub.Ping)
	}
	c.h.pinger.add(c)
}

// Drain runs on a pool writer (netpoll.Pool).
func (c *conn) Drain() { c.drain(false) }

// drain frames every queued event and writes each batch with one socket
// write until the queue is empty. On a pool writer (own false) a socket
// that cannot take a batch at once (a slow reader, or TLS) is handed to a
// goroutine of the connection's own, which finishes the write with the
// write timeout and goes on draining (own true) until the queue is empty;
// the next Wake goes back to the pool. So a pool writer never waits on a
// socket.
func (c *conn) drain(own bool) {
	bp := bufPool.Get().(*[]*hub.Message)
	defer func() {
		clear(*bp)
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}()
	for {
		msgs, reason := c.hc.Next((*bp)[:0])
		*bp = msgs
		if len(msgs) == 0 && reason == nil && c.head.Swap(false) {
			// Nothing was queued yet (a cluster node still subscribing):
			// the 101 answer goes out on its own.
			msgs = nil
		} else if len(msgs) == 0 {
			if reason == nil {
				return
			}
			switch from, ok := c.life.Close(*reason); {
			case !ok: // closing already
			case from == netpoll.StateQuitting:
				// the reader ended it: close and do not wait for the
				// client (1005: the client's close had no status)
				c.closeThenTeardown(wsproto.ClosePayload(reason.Code, reason.Text))
			default:
				c.close(*reason) // does not wait for the peer
			}
			return
		}
		pending, err := c.cork.writeFrames(msgs)
		if errors.Is(err, errClosed) {
			clear(msgs) // closing: what comes after the close frame is dropped
			continue
		}
		if err == nil && pending && own {
			err, pending = c.cork.flush(c.h.o.WriteTimeout), false
		}
		if err != nil {
			c.fail()
			return
		}
		if len(msgs) > 0 {
			if c.head.Load() {
				c.head.Store(false) // the 101 went with them
			}
			c.delivered(msgs)
			clear(msgs)
		}
		if pending {
			c.h.wg.Add(1)
			go func() {
				defer c.h.wg.Done()
				if err := c.cork.flush(c.h.o.WriteTimeout); err != nil {
					c.fail()
					return
				}
				c.drain(true)
			}()
			return
		}
	}
}

func (c *conn) delivered(msgs []*hub.Message) {
	c.h.o.Metrics.DeliveredMessages(hub.TransportWebSocket, msgs)
	c.h.o.Metrics.QueueDepth(hub.TransportWebSocket, len(msgs))
}

// close starts the closing handshake of a connection its caller moved to
// Closing (life.Close): the close frame goes out after what is already
// written, and the socket is closed when the client answers, or after
// closeWait.
func (c *conn) close(r hub.Reason) {
	pending, err := c.cork.writeControl(wsproto.OpClose, wsproto.ClosePayload(r.Code, r.Text))
	if errors.Is(err, errClosed) {
		return // a close frame is already out
	}
	if err != nil {
		c.teardown()
		return
	}
	t := time.AfterFunc(closeWait, c.teardown)
	c.closeTimer.Store(t)
	if c.life.State() == netpoll.StateClosed {
		t.Stop() // torn down meanwhile, perhaps before the timer was there to stop
	}
	if pending {
		c.flushAsync(false)
	}
}

// closeWait is how long a closing connection waits for the client's close
// frame before its socket is closed anyway.
const closeWait = 5 * time.Second

// fail closes the socket at once, without a close frame (a write failed,
// no pong came).
func (c *conn) fail() { c.teardown() }

// flushAsync lets a goroutine write what the socket did not take; with
// thenClose the socket is closed after it (a failed connection's last
// close frame).
func (c *conn) flushAsync(thenClose bool) {
	c.h.wg.Add(1)
	go func() {
		defer c.h.wg.Done()
		err := c.cork.flush(c.h.o.WriteTimeout)
		if err != nil || thenClose {
			c.teardown()
		}
	}()
}

// teardown ends the connection once: out of the poller, socket closed
// (life.Teardown), unregistered from the hub, admission slot released.
func (c *conn) teardown() {
	if !c.life.Teardown(c.h.poll, c, c.cork.Conn) {
		return
	}
	if t := c.closeTimer.Load(); t != nil {
		t.Stop()
	}
	c.h.o.Hub.Unregister(c.hc)
	c.release()
	if c.h.live.Add(-1) == 0 {
		c.h.pinger.wake()
	}
	c.h.wg.Done()
}

type clientFrame struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

func (c *conn) sendError(code, msg string) {
	c.hc.Send(hub.Control("hub.error", map[string]string{"code": code, "message": msg}))
}

// handle processes one client frame; false ends the read loop.
func (c *conn) handle(data []byte) bool {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		if len(data) > MaxFrame {
			c.failAfterAnswers(wsproto.CloseMessageTooBig, "message too big")
			return false
		}
		c.sendError("invalid_message", "frames must be JSON objects")
		return true
	}
	if len(data) > MaxFrame && f.Type != "hub.send" {
		c.failAfterAnswers(wsproto.CloseMessageTooBig, "message too big")
		return false
	}
	switch f.Type {
	case "hub.pong":
		return true
	case "hub.refresh":
		c.refresh(f.Token)
		return true
	case "":
		c.sendError("invalid_message", "missing type")
		return true
	}
	// data is the read buffer: the hook may keep what it is given
	if c.h.o.OnMessage != nil && c.h.o.OnMessage(c.hc, f.Type, bytes.Clone(data)) {
		return true
	}
	if f.Type == "hub.send" {
		var s struct {
			Ref string `json:"ref"`
		}
		_ = json.Unmarshal(data, &s)
		c.hc.Send(hub.Control("hub.nack", map[string]any{
			"ref":       s.Ref,
			"retryable": false,
			"error":     map[string]string{"code": "upstream_disabled", "message": "no upstream is configured on this hub"},
		}))
		return true
	}
	c.sendError("unknown_type", "unknown message type")
	return true
}

func (c *conn) refresh(token string) {
	id, err := c.h.o.Auth.Verify(token)
	if err != nil || id.UserID != c.user {
		c.hc.Close(hub.ReasonUnauthorized)
		return
	}
	c.hc.SetTokenExpiry(id.ExpiresAt)
	payload := map[string]string{}
	if !id.ExpiresAt.IsZero() {
		payload["tokenExpiresAt"] = id.ExpiresAt.UTC().Format(hub.TimeFormat)
	}
	c.hc.Send(hub.Control("hub.refreshed", payload))
}
