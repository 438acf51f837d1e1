package modules

import (
	"net/http"
	"time"

	"log/slog"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/transport/admit"
	"github.com/hubd/hub/transport/api"
	"github.com/hubd/hub/transport/auth"
	"github.com/hubd/hub/transport/httpx"
	"github.com/hubd/hub/transport/metrics"
	"github.com/hubd/hub/transport/sse"
	"github.com/hubd/hub/transport/upstream"
	"github.com/hubd/hub/transport/ws"
)

// TransportModule provides the WebSocket and SSE endpoints and the API.
var TransportModule = fx.Module("transport",
	fx.Provide(newWS, newSSE, newAPI),
)

type transportParams struct {
	fx.In
	Cfg      config.Config
	Hub      *hub.Hub
	Auth     *auth.Verifier
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	Admit    *admit.Controller
	Upstream *upstream.Upstream
}

func newWS(p transportParams) *ws.Handler {
	o := ws.Options{
		Hub:            p.Hub,
		Auth:           p.Auth,
		AllowedOrigins: p.Cfg.AllowedOrigins,
		PongTimeout:    p.Cfg.PongTimeout,
		Logger:         p.Log,
		Metrics:        p.Metrics,
	}
	if ctrl := p.Admit; ctrl != nil {
		// the WebSocket reader outlives the handler, so its per-IP slot is
		// released when the connection ends, not with the request
		o.Acquire = func(r *http.Request, resuming bool) (func(), bool, int, string, time.Duration) {
			return ctrl.Acquire(httpx.ClientIP(r), resuming)
		}
	}
	if p.Upstream.Enabled() {
		o.OnMessage = p.Upstream.HandleWS
		o.MaxSendFrame = p.Cfg.MaxPayload
	}
	return ws.New(o)
}

func newSSE(p transportParams) *sse.Handler {
	o := sse.Options{
		Hub:            p.Hub,
		Auth:           p.Auth,
		AllowedOrigins: p.Cfg.AllowedOrigins,
		Logger:         p.Log,
		Metrics:        p.Metrics,
	}
	if ctrl := p.Admit; ctrl != nil {
		// HTTP/1.1 streams outlive their handler: the slot is released when
		// the stream ends
		o.Acquire = func(r *http.Request, resuming bool) (func(), bool, int, string, time.Duration) {
			return ctrl.Acquire(httpx.ClientIP(r), resuming)
		}
	}
	return sse.New(o)
}

type apiParams struct {
	fx.In
	Cfg     config.Config
	Hub     *hub.Hub
	Auth    *auth.Verifier
	Dev     *DevTokens `optional:"true"`
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Broker  *redisbroker.Broker
	Idem    *idemStores
}

func newAPI(p apiParams) *api.API {
	o := api.Options{
		Hub:            p.Hub,
		Auth:           p.Auth,
		MaxPayload:     p.Cfg.MaxPayload,
		PublishTimeout: p.Cfg.PublishTimeout,
		Logger:         p.Log,
		Metrics:        p.Metrics.Handler(),
	}
	if p.Broker != nil {
		o.Ready = p.Broker.Ready
		o.Cluster = p.Broker.ClusterStats
	}
	if p.Idem != nil {
		o.Idempotency = p.Idem.api
	}
	if p.Dev != nil {
		dev := *p.Dev
		o.DevTokens = func() any { return dev }
	}
	return api.New(o)
}
