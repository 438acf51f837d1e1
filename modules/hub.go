package modules

import (
	"context"
	"fmt"
	"log/slog"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/transport/metrics"
)

// HubModule provides the *hub.Hub and, with HUB_BROKER=redis, the Redis
// backplane. The broker starts before the hub takes connections and closes
// last; the hub's drain runs in the HTTP module's stop hook, before the
// servers stop.
var HubModule = fx.Module("hub",
	fx.Provide(newBroker, newHub),
)

// newBroker returns the Redis broker, or nil for the in-memory default.
func newBroker(cfg config.Config, log *slog.Logger) (*redisbroker.Broker, error) {
	if cfg.Broker != "redis" {
		return nil, nil
	}
	b, err := redisbroker.New(redisbroker.Options{
		URL:         cfg.RedisURL,
		Node:        cfg.NodeName,
		HistorySize: cfg.HistorySize,
		HistoryTTL:  cfg.HistoryTTL,
		Logger:      log,
		// every Redis call of a publish and of /readyz within it
		PublishTimeout: cfg.PublishTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("HUB_REDIS_URL: %w", err)
	}
	return b, nil
}

func newHub(lc fx.Lifecycle, cfg config.Config, log *slog.Logger, m *metrics.Metrics, b *redisbroker.Broker) *hub.Hub {
	o := hub.Options{
		Node:            cfg.NodeName,
		SendQueue:       cfg.SendQueue,
		HistorySize:     cfg.HistorySize,
		HistoryTTL:      cfg.HistoryTTL,
		MaxConnsPerUser: cfg.MaxConnectionsPerUser,
		MaxConns:        cfg.MaxConnections,
		Heartbeat:       cfg.HeartbeatInterval,
		Logger:          log,
		Observer:        m,
	}
	if b != nil {
		o.Broker = b
	}
	h := hub.New(o)
	m.SetHub(h)
	if b != nil {
		lc.Append(fx.Hook{
			OnStart: func(ctx context.Context) error {
				if err := b.Start(ctx, h); err != nil {
					return fmt.Errorf("HUB_REDIS_URL: %w", err)
				}
				return nil
			},
			OnStop: func(context.Context) error { return b.Close() },
		})
	}
	lc.Append(fx.StartStopHook(h.Start, h.Stop))
	return h
}
