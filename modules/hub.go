package modules

import (
	"context"
	"fmt"
	"log/slog"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/metrics"
)

// hubModule provides the *hub.Hub and, with HUB_BROKER=redis, the Redis
// backplane. The broker starts before the hub takes connections and closes
// last; the hub drains before the HTTP servers stop (drainOnStop).
func hubModule(cfg config.Config) fx.Option {
	opts := []fx.Option{fx.Provide(newHub), fx.Invoke(drainOnStop)}
	if cfg.Broker == "redis" || cfg.Broker == "redis-cluster" {
		opts = append(opts, fx.Provide(newBroker))
	}
	return fx.Module("hub", opts...)
}

func newBroker(cfg config.Config, log *slog.Logger, m *metrics.Metrics) (*redisbroker.Broker, error) {
	bm := m.Broker(redisbroker.Ops...) // hub_broker_*
	b, err := redisbroker.New(redisbroker.Options{
		URL:         cfg.RedisURL,
		Cluster:     cfg.Broker == "redis-cluster",
		Node:        cfg.NodeName,
		HistorySize: cfg.HistorySize,
		HistoryTTL:  cfg.HistoryTTL,
		// each stream in Redis is bounded like a user's history here
		HistoryMaxBytes: cfg.HistoryMaxBytes,
		Logger:          log,
		// every Redis call of a publish and of /readyz within it
		PublishTimeout: cfg.PublishTimeout,
		Metrics:        bm,
	})
	if err != nil {
		return nil, fmt.Errorf("HUB_REDIS_URL: %w", err)
	}
	bm.SetSubscribedUsers(b.SubscribedUsers)
	return b, nil
}

type hubParams struct {
	fx.In
	LC      fx.Lifecycle
	Cfg     config.Config
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Broker  *redisbroker.Broker `optional:"true"` // HUB_BROKER=redis or redis-cluster
}

func newHub(p hubParams) *hub.Hub {
	o := hub.Options{
		Node:        p.Cfg.NodeName,
		SendQueue:   p.Cfg.SendQueue,
		HistorySize: p.Cfg.HistorySize,
		HistoryTTL:  p.Cfg.HistoryTTL,
		// HUB_HISTORY_TOTAL_BYTES bounds what this node holds in memory:
		// with the Redis broker the history is in Redis, and it holds none
		HistoryMaxBytes:   p.Cfg.HistoryMaxBytes,
		HistoryTotalBytes: p.Cfg.HistoryTotalBytes,
		MaxConnsPerUser:   p.Cfg.MaxConnectionsPerUser,
		MaxConns:          p.Cfg.MaxConnections,
		Heartbeat:         p.Cfg.HeartbeatInterval,
		Logger:            p.Log,
		Observer:          p.Metrics,
	}
	if b := p.Broker; b != nil {
		o.Broker = b
	}
	h := hub.New(o)
	p.Metrics.SetHub(h)
	if b := p.Broker; b != nil {
		p.LC.Append(fx.Hook{
			OnStart: func(ctx context.Context) error {
				if err := b.Start(ctx, h); err != nil {
					return fmt.Errorf("HUB_REDIS_URL: %w", err)
				}
				return nil
			},
			OnStop: func(context.Context) error { return b.Close() },
		})
	}
	p.LC.Append(fx.StartStopHook(h.Start, h.Stop))
	return h
}

// drainOnStop drains the hub when the app stops, within
// HUB_SHUTDOWN_TIMEOUT: every WebSocket gets close 1001 and every SSE
// stream hub.shutdown after its queue is flushed, and what is left at the
// timeout is cut. It takes *Servers only so that fx appends its hook after
// the servers' and so runs it before them: the listeners keep answering
// (readiness 503, new handshakes 503) while the hub drains, and the
// servers' Shutdown does not wait on streams that the drain ends.
func drainOnStop(lc fx.Lifecycle, cfg config.Config, h *hub.Hub, log *slog.Logger, _ *Servers) {
	lc.Append(fx.StopHook(func(ctx context.Context) {
		log.Info("draining", "timeout", cfg.ShutdownTimeout.String())
		drainCtx, cancel := context.WithTimeout(ctx, cfg.ShutdownTimeout)
		defer cancel()
		if err := h.Shutdown(drainCtx); err != nil {
			log.Warn("drain timeout: remaining connections cut", "err", err)
		}
	}))
}
