// Package ws is the WebSocket endpoint of the hub, on
// github.com/coder/websocket: handshake (origin, token, limits), one reader
// and at most one writer per connection (the writer runs only while the
// connection's queue has something), ping frames and hub.ping heartbeats,
// token refresh and expiry, and the contract's close codes.
package ws

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/transport/auth"
	"github.com/hubd/hub/transport/httpx"
	"github.com/hubd/hub/transport/metrics"
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
}

// Handler serves the WebSocket endpoint.
type Handler struct {
	o    Options
	log  *slog.Logger
	wg   sync.WaitGroup // readers, writers and ping goroutines
	pool *writerPool
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
	h.pool = &writerPool{max: runtime.GOMAXPROCS(0), slice: writerSlice, wg: &h.wg}
	return h
}

// Wait blocks until every writer and ping goroutine has ended (after the
// connections have closed).
func (h *Handler) Wait() { h.wg.Wait() }

var bufPool = sync.Pool{New: func() any { b := make([]*hub.Message, 0, 64); return &b }}

// ServeHTTP performs the handshake and runs the connection's reader.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET with a WebSocket upgrade")
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		h.refuse(w, http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket; use the SSE endpoint otherwise")
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
	last := r.URL.Query().Get("last_event_id")
	release := func() {}
	if h.o.Acquire != nil {
		rel, ok, status, code, after := h.o.Acquire(r, last != "")
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
		h.refuse(w, status, code, msg)
		return
	}
	cw := &corkWriter{ResponseWriter: w, timeout: h.o.WriteTimeout}
	wsc, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // the origin was checked above
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		h.o.Hub.Unregister(hc)
		release()
		h.log.Debug("websocket accept failed", "err", err)
		return
	}
	limit := int64(MaxFrame)
	if h.o.OnMessage != nil && h.o.MaxSendFrame > limit {
		limit = h.o.MaxSendFrame
	}
	wsc.SetReadLimit(limit)
	h.o.Metrics.Handshake(hub.TransportWebSocket, metrics.OutcomeAccepted, "")
	c.ws, c.cork, c.hc, c.user = wsc, cw.conn, hc, id.UserID
	c.ready.Store(true)
	if r := c.early.Load(); r != nil {
		c.Abort(*r)
	}
	h.pool.push(c)
	// The reader runs on a goroutine of its own and the handler returns:
	// the request, net/http's connection state and its 4 KiB buffers, and
	// the handler's grown stack are then garbage, which is most of what an
	// idle connection would otherwise hold.
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer release()
		defer h.o.Hub.Unregister(hc)
		c.readLoop(context.Background())
		_ = wsc.CloseNow()
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
type conn struct {
	h     *Handler
	ws    *websocket.Conn
	cork  *corkConn
	hc    *hub.Conn
	user  string
	ready atomic.Bool
	early atomic.Pointer[hub.Reason] // an Abort that came before ready
	dead  atomic.Bool
	ping  atomic.Bool
}

// Wake starts a writer; the hub calls it once per empty→non-empty change.
func (c *conn) Wake() {
	if c.ready.Load() {
		c.h.pool.push(c)
	}
}

// Abort closes at once (slow consumer, drain timeout).
func (c *conn) Abort(r hub.Reason) {
	if !c.ready.Load() {
		// Cut before the upgrade finished: ServeHTTP closes it once ready.
		c.early.Store(&r)
		if !c.ready.Load() {
			return
		}
	}
	if !c.dead.CompareAndSwap(false, true) {
		return
	}
	c.h.wg.Add(1)
	go func() {
		defer c.h.wg.Done()
		c.close(r)
	}()
}

// Heartbeat sends a ping frame (and hub.ping when idle) and closes the
// connection when no pong comes within the pong timeout.
func (c *conn) Heartbeat(idle bool) {
	if !c.ready.Load() || c.dead.Load() {
		return
	}
	if idle {
		c.hc.Send(hub.Ping)
	}
	if !c.ping.CompareAndSwap(false, true) {
		return
	}
	c.h.wg.Add(1)
	go func() {
		defer c.h.wg.Done()
		defer c.ping.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), c.h.o.PongTimeout)
		defer cancel()
		if err := c.ws.Ping(ctx); err != nil && !c.dead.Load() {
			c.h.log.Debug("websocket pong timeout", "conn", c.hc.ID())
			_ = c.ws.CloseNow()
		}
	}()
}

// drain runs on a pool writer: it frames every queued event and writes
// each batch with one non-blocking socket write until the queue is empty.
// A socket that cannot take a batch at once (a slow reader, or TLS) is
// handed to a goroutine of its own, so a pool writer never waits on one.
func (c *conn) drain() {
	bp := bufPool.Get().(*[]*hub.Message)
	defer func() {
		clear(*bp)
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}()
	for {
		msgs, reason := c.hc.Next((*bp)[:0])
		*bp = msgs
		if len(msgs) > 0 {
			pending, err := c.cork.writeFrames(msgs)
			if err != nil {
				c.fail()
				return
			}
			c.delivered(msgs)
			clear(msgs)
			if pending {
				c.h.wg.Add(1)
				go func() {
					defer c.h.wg.Done()
					if err := c.cork.flush(c.h.o.WriteTimeout); err != nil {
						c.fail()
						return
					}
					c.writeLoop()
				}()
				return
			}
			continue
		}
		if reason != nil && c.dead.CompareAndSwap(false, true) {
			// the close handshake waits for the peer: not on a pool writer
			c.h.wg.Add(1)
			go func() {
				defer c.h.wg.Done()
				c.close(*reason)
			}()
		}
		return
	}
}

// writeLoop is drain on a connection's own goroutine, waiting on the socket
// with the write timeout: it serves a connection whose socket was full
// until its queue is empty again; the next Wake goes back to the pool.
func (c *conn) writeLoop() {
	bp := bufPool.Get().(*[]*hub.Message)
	defer func() {
		clear(*bp)
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}()
	for {
		msgs, reason := c.hc.Next((*bp)[:0])
		*bp = msgs
		if len(msgs) > 0 {
			pending, err := c.cork.writeFrames(msgs)
			if err == nil && pending {
				err = c.cork.flush(c.h.o.WriteTimeout)
			}
			if err != nil {
				c.fail()
				return
			}
			c.delivered(msgs)
			clear(msgs)
			continue
		}
		if reason != nil && c.dead.CompareAndSwap(false, true) {
			c.close(*reason)
		}
		return
	}
}

// fail ends a connection whose socket write failed.
func (c *conn) fail() {
	c.dead.Store(true)
	_ = c.ws.CloseNow()
}

func (c *conn) delivered(msgs []*hub.Message) {
	c.h.o.Metrics.DeliveredMessages(hub.TransportWebSocket, msgs)
	c.h.o.Metrics.QueueDepth(hub.TransportWebSocket, len(msgs))
}

func (c *conn) close(r hub.Reason) {
	_ = c.ws.Close(websocket.StatusCode(r.Code), r.Text)
}

type clientFrame struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

// readLoop reads client frames until the connection ends.
func (c *conn) readLoop(ctx context.Context) {
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			c.dead.Store(true)
			c.close(hub.Reason{Code: int(websocket.StatusUnsupportedData), Text: "binary frames are not supported"})
			return
		}
		if !c.handle(data) {
			return
		}
	}
}

func (c *conn) sendError(code, msg string) {
	c.hc.Send(hub.Control("hub.error", map[string]string{"code": code, "message": msg}))
}

// handle processes one client frame; false ends the read loop.
func (c *conn) handle(data []byte) bool {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		if len(data) > MaxFrame {
			c.dead.Store(true)
			c.close(hub.Reason{Code: int(websocket.StatusMessageTooBig), Text: "frame too large"})
			return false
		}
		c.sendError("invalid_message", "frames must be JSON objects")
		return true
	}
	if len(data) > MaxFrame && f.Type != "hub.send" {
		c.dead.Store(true)
		c.close(hub.Reason{Code: int(websocket.StatusMessageTooBig), Text: "frame too large"})
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
	if c.h.o.OnMessage != nil && c.h.o.OnMessage(c.hc, f.Type, data) {
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
