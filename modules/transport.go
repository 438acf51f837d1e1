package modules

import (
	"log/slog"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/transport/api"
	"github.com/hubd/hub/transport/auth"
	"github.com/hubd/hub/transport/sse"
	"github.com/hubd/hub/transport/ws"
)

// TransportModule provides the WebSocket and SSE endpoints and the API.
var TransportModule = fx.Module("transport",
	fx.Provide(newWS, newSSE, newAPI),
)

func newWS(cfg config.Config, h *hub.Hub, v *auth.Verifier, log *slog.Logger) *ws.Handler {
	return ws.New(ws.Options{
		Hub:            h,
		Auth:           v,
		AllowedOrigins: cfg.AllowedOrigins,
		PongTimeout:    cfg.PongTimeout,
		Logger:         log,
	})
}

func newSSE(cfg config.Config, h *hub.Hub, v *auth.Verifier, log *slog.Logger) *sse.Handler {
	return sse.New(sse.Options{
		Hub:            h,
		Auth:           v,
		AllowedOrigins: cfg.AllowedOrigins,
		Logger:         log,
	})
}

type apiParams struct {
	fx.In
	Cfg  config.Config
	Hub  *hub.Hub
	Auth *auth.Verifier
	Dev  *DevTokens `optional:"true"`
	Log  *slog.Logger
}

func newAPI(p apiParams) *api.API {
	o := api.Options{
		Hub:        p.Hub,
		Auth:       p.Auth,
		MaxPayload: p.Cfg.MaxPayload,
		Logger:     p.Log,
	}
	if p.Dev != nil {
		dev := *p.Dev
		o.DevTokens = func() any { return dev }
	}
	return api.New(o)
}
