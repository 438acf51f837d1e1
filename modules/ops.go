package modules

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/transport/admit"
	"github.com/hubd/hub/transport/api"
	"github.com/hubd/hub/transport/auth"
	"github.com/hubd/hub/transport/metrics"
	"github.com/hubd/hub/transport/upstream"
)

// OpsModule provides metrics (a private Prometheus registry), admission
// control for new connections, the upstream (hub.send) client and, with
// HUB_BROKER=redis, the idempotency stores shared by the cluster.
var OpsModule = fx.Module("ops",
	fx.Provide(
		func() *metrics.Metrics { return metrics.New(nil) },
		func(cfg config.Config, m *metrics.Metrics) *admit.Controller {
			if cfg.ConnectRate <= 0 && cfg.MaxConnectionsPerIP <= 0 {
				return nil // nothing to limit: a nil controller admits all
			}
			return admit.New(admit.Options{
				Rate:    cfg.ConnectRate,
				Burst:   cfg.ConnectBurst,
				PerIP:   cfg.MaxConnectionsPerIP,
				Observe: m.Admission,
			})
		},
		newIdemStores,
		newUpstream,
	),
)

// idemPrefix prefixes the idempotency keys kept in Redis.
const idemPrefix = "hub:"

// idemStores are the idempotency stores of hub.send / POST /api/send and of
// the broadcast API. A nil *idemStores (memory broker) means each node
// remembers its keys in memory.
type idemStores struct {
	upstream upstream.IdempotencyStore
	api      api.IdempotencyStore
}

// newIdemStores returns, with HUB_BROKER=redis, stores on one Redis client
// of their own, closed by a stop hook. The hook is appended when the stores
// are built, before the HTTP servers (which depend on them) are, so it runs
// after the servers have stopped.
func newIdemStores(lc fx.Lifecycle, cfg config.Config, b *redisbroker.Broker) (*idemStores, error) {
	if cfg.Broker != "redis" {
		return nil, nil
	}
	o, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("HUB_REDIS_URL: %w", err)
	}
	// The stores' calls are bounded by the publish's context (the socket
	// reads too), and a claim is not idempotent: no retries.
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	c := redis.NewClient(o)
	lc.Append(fx.StopHook(c.Close))
	return &idemStores{
		upstream: upstream.NewRedisStore(c, idemPrefix),
		api:      healthGate{api.NewRedisIdempotency(c, idemPrefix), b},
	}, nil
}

// healthGate fails the idempotency store's Get and Claim at once, without
// waiting on Redis, while the broker's health loop finds Redis unresponsive
// (a publish would fail then anyway), so that a publish with a key fails
// as fast as one without.
type healthGate struct {
	api.IdempotencyStore
	b *redisbroker.Broker
}

func (g healthGate) Get(ctx context.Context, key string) (json.RawMessage, bool, error) {
	if err := g.b.Healthy(); err != nil {
		return nil, false, err
	}
	return g.IdempotencyStore.Get(ctx, key)
}

func (g healthGate) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if err := g.b.Healthy(); err != nil {
		return false, err
	}
	return g.IdempotencyStore.Claim(ctx, key, ttl)
}

func newUpstream(lc fx.Lifecycle, cfg config.Config, v *auth.Verifier, log *slog.Logger, idem *idemStores) *upstream.Upstream {
	o := upstream.Options{
		URL:        cfg.UpstreamURL,
		Secret:     cfg.UpstreamSecret,
		Timeout:    cfg.UpstreamTimeout,
		Rate:       cfg.SendRate,
		MaxPayload: cfg.MaxPayload,
		Auth:       v,
		Logger:     log,
	}
	if idem != nil {
		o.Store = idem.upstream
	}
	u := upstream.New(o)
	lc.Append(fx.StopHook(u.Close))
	return u
}
