package modules

import (
	"log/slog"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
)

// HubModule provides the *hub.Hub and starts its maintenance loop. Its
// drain runs in the HTTP module's stop hook, before the servers stop.
var HubModule = fx.Module("hub",
	fx.Provide(newHub),
)

func newHub(lc fx.Lifecycle, cfg config.Config, log *slog.Logger) *hub.Hub {
	h := hub.New(hub.Options{
		Node:            cfg.NodeName,
		SendQueue:       cfg.SendQueue,
		HistorySize:     cfg.HistorySize,
		HistoryTTL:      cfg.HistoryTTL,
		MaxConnsPerUser: cfg.MaxConnectionsPerUser,
		MaxConns:        cfg.MaxConnections,
		Heartbeat:       cfg.HeartbeatInterval,
		Logger:          log,
	})
	lc.Append(fx.StartStopHook(h.Start, h.Stop))
	return h
}
