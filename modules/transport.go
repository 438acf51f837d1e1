package modules

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/admit"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/internal/timeseries"
	"github.com/hubd/hub/transport/api"
	"github.com/hubd/hub/transport/sse"
	"github.com/hubd/hub/transport/upstream"
	"github.com/hubd/hub/transport/ws"
)

// TransportModule provides the WebSocket and SSE endpoints and the API.
// The endpoints' goroutines (readers, writer pools, streams being flushed)
// are waited for when the app stops, after the hub has drained and the
// servers have stopped, for at most transportWait: a client that never
// reads cannot hold the process past HUB_SHUTDOWN_TIMEOUT by much.
var TransportModule = fx.Module("transport",
	fx.Provide(newWS, newSSE, newAPI),
)

// transportWait bounds the wait for the endpoints' goroutines at stop.
const transportWait = 500 * time.Millisecond

type transportParams struct {
	fx.In
	LC       fx.Lifecycle
	Cfg      config.Config
	Hub      *hub.Hub
	Auth     *auth.Verifier
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	Admit    *admit.Controller `optional:"true"` // nil admits every connection
	Upstream *upstream.Upstream
}

// waitOnStop appends a stop hook that waits for wait, at most
// transportWait (or the stop context's end).
func waitOnStop(p transportParams, name string, wait func()) {
	p.LC.Append(fx.StopHook(func(ctx context.Context) {
		done := make(chan struct{})
		go func() {
			wait()
			close(done)
		}()
		t := time.NewTimer(transportWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			p.Log.Warn("stop: endpoint goroutines still running", "endpoint", name)
		case <-ctx.Done():
		}
	}))
}

// acquire is the endpoints' admission step: a slot of the client's address
// (the TCP peer, or the X-Forwarded-For address a trusted proxy gives: see
// httpx.NewClientIP), held until the connection ends; nil (admit all)
// without a controller.
func (p transportParams) acquire() func(r *http.Request, resuming bool) (func(), bool, int, string, time.Duration) {
	ctrl := p.Admit
	if ctrl == nil {
		return nil
	}
	clientIP := httpx.NewClientIP(p.Cfg.TrustedProxies)
	return func(r *http.Request, resuming bool) (func(), bool, int, string, time.Duration) {
		return ctrl.Acquire(clientIP(r), resuming)
	}
}

func newWS(p transportParams) *ws.Handler {
	o := ws.Options{
		Hub:            p.Hub,
		Auth:           p.Auth,
		AllowedOrigins: p.Cfg.AllowedOrigins,
		PongTimeout:    p.Cfg.PongTimeout,
		Logger:         p.Log,
		Metrics:        p.Metrics,
		Compression:    p.Cfg.WSCompression,
		CompressionMin: p.Cfg.WSCompressionMin,
	}
	o.Acquire = p.acquire() // released when the connection ends, not with the request
	if p.Upstream.Enabled() {
		o.OnMessage = p.Upstream.HandleWS
		o.MaxSendFrame = p.Cfg.MaxPayload
	}
	h := ws.New(o)
	waitOnStop(p, "websocket", h.Wait)
	return h
}

func newSSE(p transportParams) *sse.Handler {
	o := sse.Options{
		Hub:            p.Hub,
		Auth:           p.Auth,
		AllowedOrigins: p.Cfg.AllowedOrigins,
		Logger:         p.Log,
		Metrics:        p.Metrics,
	}
	o.Acquire = p.acquire() // HTTP/1.1 streams outlive their handler: released when the stream ends
	h := sse.New(o)
	waitOnStop(p, "sse", h.Wait)
	return h
}

type apiParams struct {
	fx.In
	Cfg     config.Config
	Hub     *hub.Hub
	Auth    *auth.Verifier
	Dev     *DevTokens `optional:"true"`
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Broker  *redisbroker.Broker  `optional:"true"` // HUB_BROKER=redis or redis-cluster
	Idem    api.IdempotencyStore `optional:"true"` // shared by a cluster
	Series  *timeseries.Sampler
}

func newAPI(p apiParams) *api.API {
	o := api.Options{
		Hub:            p.Hub,
		Auth:           p.Auth,
		MaxPayload:     p.Cfg.MaxPayload,
		PublishTimeout: p.Cfg.PublishTimeout,
		Logger:         p.Log,
		Metrics:        p.Metrics.Handler(),
		// failed credentials count against the client's address, not a proxy's
		ClientIP: httpx.NewClientIP(p.Cfg.TrustedProxies),
		Series:   p.Series,
	}
	if p.Broker != nil {
		o.Ready = p.Broker.Ready
		o.Cluster = p.Broker.ClusterStats
	}
	o.Idempotency = p.Idem
	if p.Dev != nil {
		dev := *p.Dev
		o.DevTokens = func() any { return dev }
	}
	return api.New(o)
}
