// Package api is the hub's HTTP service API: the broadcast endpoints
// (POST /api/broadcast, POST /api/broadcast/batch), the user disconnect
// (POST /api/users/{userId}/disconnect), a user's connections on every
// node (GET /api/users/{userId}/connections), the admin stats
// (GET /api/websocket/stats), the admin dashboard's time series
// (GET /api/admin/timeseries), health and readiness (GET /healthz,
// GET /readyz), Prometheus metrics (GET /metrics), the OpenAPI document
// of all of these (GET /api/openapi.json, from docs/openapi.yaml) and, in
// development mode only, ready-made tokens (GET /api/dev/tokens).
//
// Every error is answered with the protocol's JSON error body
// {"error":{"code":"...","message":"..."}}. The package owns request
// validation (a 400 invalid_request names the offending field), body size
// limits, the idempotency cache of the broadcast API and the limit on
// failed credentials; publishing itself is the hub's.
//
// The service and admin endpoints take an X-API-Key or a service or admin
// JWT in the Authorization header only: a cookie or a token query
// parameter is ignored there, so a page on another origin cannot use a
// browser's cookie against them. A POST with a body must say
// Content-Type: application/json (415 otherwise), and the body must be
// valid UTF-8 JSON (400 invalid_json otherwise, nothing is published). A
// client address that fails the credential check (a 401 answer) 20 times
// within a minute gets 429 rate_limited, with Retry-After, from these
// endpoints until that minute has passed, valid credentials included.
//
// Decisions where the protocol is silent:
//   - a missing "payload" is published as null;
//   - the credential check comes before the Content-Type and body checks,
//     so an unauthenticated caller learns nothing about a body;
//   - the failed-credential window starts with an address's first
//     failure (a fixed window, not a sliding one);
//   - field names are matched exactly (case-sensitively); an unknown field,
//     including a differently-cased known one, is a 400 naming it;
//   - "all": false is the same as no "all";
//   - duplicate ids in "userIds" get one event, listed once in the answer;
//   - an idempotencyKey is remembered per caller (Identity.UserID) for
//     10 minutes, only for accepted requests (202): a refused or failed
//     request may be retried with the same key. The repeated request's body
//     is not compared with the first one. In a batch, each message may carry
//     its own key, sharing the namespace of /api/broadcast. With a shared
//     store (Options.Idempotency), a repeat whose first request is still
//     publishing on another node waits for its answer up to 10 seconds,
//     then gets 409 in_flight; an unreachable store is a 503 unavailable
//     (nothing is published);
//   - publishing is still accepted while the node drains (queued events are
//     flushed and kept in the history); a hub failure then is a 503
//     shutting_down, otherwise a 500 internal_error;
//   - a method that a path does not serve is a 405 with the JSON error body
//     and an Allow header.
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/idem"
	"github.com/hubd/hub/internal/timeseries"
)

// DefaultMaxPayload is the largest request body accepted when
// Options.MaxPayload is zero: 64 KiB.
const DefaultMaxPayload = 64 << 10

// Limits of the broadcast API.
const (
	// MaxUserIDs is the most ids one broadcast may name.
	MaxUserIDs = 10000
	// MaxUserIDLen is the longest user id, in bytes.
	MaxUserIDLen = 256
	// MaxBatch is the most messages in one batch.
	MaxBatch = 1000
	// MaxIdempotencyKeyLen is the longest idempotency key, in bytes.
	MaxIdempotencyKeyLen = 256
	// IdempotencyTTL is how long an idempotency key is remembered.
	IdempotencyTTL = 10 * time.Minute
	// DefaultPublishTimeout is Options.PublishTimeout's default.
	DefaultPublishTimeout = time.Second
	// MaxIdempotencyKeys bounds the idempotency cache; beyond it the oldest
	// keys are forgotten first.
	MaxIdempotencyKeys = 100000
)

// clusterTimeout bounds the Cluster callback of the stats endpoint.
const clusterTimeout = 3 * time.Second

// Options configure an API. Hub and Auth are required; the zero value of
// every other field is its default.
type Options struct {
	// Hub publishes events, disconnects users and reports stats.
	Hub *hub.Hub
	// Auth authenticates services (API keys, service/admin JWTs) and admins.
	Auth *auth.Verifier
	// MaxPayload is the largest request body in bytes (default 64 KiB).
	MaxPayload int64
	// Ready reports readiness for /readyz: nil error means ready. A nil func
	// means always ready (while the hub is not draining).
	Ready func() error
	// Metrics is served at GET /metrics when not nil.
	Metrics http.Handler
	// Cluster, when set, returns cluster-wide stats, put under "cluster" in
	// the stats answer.
	Cluster func(ctx context.Context) (any, error)
	// DevTokens, in development mode only, returns what GET /api/dev/tokens
	// answers (200 JSON). Nil: the route is not registered.
	DevTokens func() any
	// Logger receives the API's logs (default slog.Default()). Tokens and
	// API keys are never logged.
	Logger *slog.Logger
	// PublishTimeout bounds a publish call (default DefaultPublishTimeout):
	// it is answered within it even when the broker hangs. In a batch,
	// each message has its own.
	PublishTimeout time.Duration
	// Idempotency remembers the broadcast API's idempotency keys; nil means
	// an in-memory cache of MaxIdempotencyKeys keys (per process: give
	// every node the same shared store, such as NewRedisIdempotency, for a
	// key to publish once across the nodes).
	Idempotency IdempotencyStore
	// ClientIP names the client address that failed credentials are
	// counted against; nil means httpx.ClientIP (the TCP peer).
	ClientIP func(*http.Request) string
	// Series, when set, is served at GET /api/admin/timeseries (admin JWT)
	// for the admin dashboard.
	Series *timeseries.Sampler
}

// API serves the hub's service, admin and health endpoints. Build it with
// New; it starts no goroutine.
type API struct {
	hub        *hub.Hub
	auth       *auth.Verifier
	maxPayload int64
	ready      func() error
	metrics    http.Handler
	cluster    func(ctx context.Context) (any, error)
	devTokens  func() any
	log        *slog.Logger
	idem       *idem.Once[json.RawMessage]
	timeout    time.Duration
	clientIP   func(*http.Request) string
	fails      *failLimit
	series     *timeseries.Sampler
}

// New builds an API from o.
func New(o Options) *API {
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.ClientIP == nil {
		o.ClientIP = httpx.ClientIP
	}
	return &API{
		hub:        o.Hub,
		auth:       o.Auth,
		maxPayload: o.MaxPayload,
		ready:      o.Ready,
		metrics:    o.Metrics,
		cluster:    o.Cluster,
		devTokens:  o.DevTokens,
		log:        o.Logger,
		idem:       newOnce(o.Idempotency, o.Logger, o.PublishTimeout),
		timeout:    o.PublishTimeout,
		clientIP:   o.ClientIP,
		fails:      newFailLimit(),
		series:     o.Series,
	}
}

// RegisterPublic adds GET /healthz, GET /readyz and, when DevTokens is set,
// GET /api/dev/tokens to mux.
func (a *API) RegisterPublic(mux *http.ServeMux) {
	handle(mux, http.MethodGet, "/healthz", a.healthz)
	handle(mux, http.MethodGet, "/readyz", a.readyz)
	if a.devTokens != nil {
		handle(mux, http.MethodGet, "/api/dev/tokens", a.devTokensHandler)
	}
}

// RegisterInternal adds POST /api/broadcast, POST /api/broadcast/batch,
// POST /api/users/{userId}/disconnect, GET /api/users/{userId}/connections,
// GET /api/websocket/stats, GET /api/openapi.json, GET /metrics when
// Metrics is set and GET /api/admin/timeseries when Series is set to mux.
func (a *API) RegisterInternal(mux *http.ServeMux) {
	handle(mux, http.MethodPost, "/api/broadcast", a.broadcast)
	handle(mux, http.MethodPost, "/api/broadcast/batch", a.batch)
	handle(mux, http.MethodPost, "/api/users/{userId}/disconnect", a.disconnect)
	handle(mux, http.MethodGet, "/api/users/{userId}/connections", a.connections)
	handle(mux, http.MethodGet, "/api/websocket/stats", a.stats)
	if a.series != nil {
		handle(mux, http.MethodGet, "/api/admin/timeseries", a.timeSeries)
	}
	if a.metrics != nil {
		mux.Handle("GET /metrics", a.metrics)
		mux.HandleFunc("/metrics", methodNotAllowed(http.MethodGet))
	}
	// the API's own description (docs/openapi.yaml), no credentials
	handle(mux, http.MethodGet, "/api/openapi.json", a.openapi)
}

// handle registers h for method and path, and a JSON 405 for the other
// methods on the same path.
func handle(mux *http.ServeMux, method, path string, h http.HandlerFunc) {
	mux.HandleFunc(method+" "+path, h)
	mux.HandleFunc(path, methodNotAllowed(method))
}

func methodNotAllowed(method string) http.HandlerFunc {
	allow := method
	if method == http.MethodGet {
		allow = "GET, HEAD"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+method+" on this path")
	}
}

// healthz answers 200 {"status":"ok"} while the process runs.
func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	noStore(w)
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 {"status":"ready"}, or 503 shutting_down while the hub
// drains, or 503 not_ready when Ready returns an error.
func (a *API) readyz(w http.ResponseWriter, _ *http.Request) {
	noStore(w)
	if a.hub.Draining() {
		httpx.WriteError(w, http.StatusServiceUnavailable, "shutting_down", "the node is draining")
		return
	}
	if a.ready != nil {
		if err := a.ready(); err != nil {
			httpx.WriteError(w, http.StatusServiceUnavailable, "not_ready", "not ready: "+err.Error())
			return
		}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// devTokensHandler answers DevTokens() (development mode only).
func (a *API) devTokensHandler(w http.ResponseWriter, _ *http.Request) {
	noStore(w)
	httpx.WriteJSON(w, http.StatusOK, a.devTokens())
}

// statsBody is the stats answer: the hub's stats plus cluster-wide totals.
type statsBody struct {
	hub.Stats
	Cluster any `json:"cluster,omitempty"`
}

// stats answers this node's connection counts to an admin JWT.
func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	id, ok := a.authenticate(w, r)
	if !ok {
		return
	}
	if id.APIKey || !id.HasRole(auth.RoleAdmin) {
		httpx.WriteError(w, http.StatusForbidden, auth.CodeForbidden, "this endpoint needs a JWT with the admin role")
		return
	}
	body := statsBody{Stats: a.hub.Stats()}
	if a.cluster != nil {
		ctx, cancel := context.WithTimeout(r.Context(), clusterTimeout)
		c, err := a.cluster(ctx)
		cancel()
		if err != nil {
			a.log.Warn("cluster stats unavailable", "err", err)
			c = map[string]any{"error": map[string]string{"code": "unavailable", "message": "cluster stats unavailable"}}
		}
		body.Cluster = c
	}
	noStore(w)
	httpx.WriteJSON(w, http.StatusOK, body)
}

// disconnect closes every connection of the path's user on this node. It
// needs no body; one that is sent must still be application/json.
func (a *API) disconnect(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.authenticate(w, r); !ok {
		return
	}
	if r.ContentLength != 0 {
		if _, e := a.readBody(w, r); e != nil {
			e.write(w)
			return
		}
	}
	user := r.PathValue("userId")
	if user == "" || len(user) > MaxUserIDLen {
		httpx.WriteError(w, http.StatusBadRequest, "invalid_request", "userId: must be 1 to 256 bytes")
		return
	}
	n := a.hub.DisconnectUser(user)
	httpx.WriteJSON(w, http.StatusOK, map[string]int{"closed": n})
}

// connectionsBody is the answer of GET /api/users/{userId}/connections.
type connectionsBody struct {
	UserID      string           `json:"userId"`
	Connections []connectionItem `json:"connections"`
}

type connectionItem struct {
	ConnectionID string `json:"connectionId"`
	Transport    string `json:"transport"`
	Node         string `json:"node"`
	ConnectedAt  string `json:"connectedAt"` // RFC 3339, milliseconds, UTC
}

// connections lists the path's user's live connections on every node
// (from the broker in a cluster): 200 with [] for a user with none, 503
// unavailable when the broker cannot be read.
func (a *API) connections(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.authenticate(w, r); !ok {
		return
	}
	user := r.PathValue("userId")
	if user == "" || len(user) > MaxUserIDLen {
		httpx.WriteError(w, http.StatusBadRequest, "invalid_request", "userId: must be 1 to 256 bytes")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	conns, err := a.hub.Connections(ctx, user)
	if err != nil {
		a.log.Error("connections: broker unavailable", "err", err)
		httpx.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the broker is unreachable; the connections cannot be listed")
		return
	}
	body := connectionsBody{UserID: user, Connections: make([]connectionItem, len(conns))}
	for i, c := range conns {
		body.Connections[i] = connectionItem{
			ConnectionID: c.ConnectionID,
			Transport:    c.Transport,
			Node:         c.Node,
			ConnectedAt:  c.ConnectedAt.UTC().Format(hub.TimeFormat),
		}
	}
	noStore(w)
	httpx.WriteJSON(w, http.StatusOK, body)
}

func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
}
