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
	"github.com/hubd/hub/internal/admit"
	"github.com/hubd/hub/internal/auth"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/transport/api"
	"github.com/hubd/hub/transport/upstream"
)

// opsModule provides metrics (a private Prometheus registry), the admin
// dashboard's time series, the upstream (hub.send) client and, when
// configured, admission control for new connections (HUB_CONNECT_RATE,
// HUB_MAX_CONNECTIONS_PER_IP) and the idempotency stores shared by a
// cluster (HUB_BROKER=redis). Without them,
// every connection is admitted and each node remembers its idempotency
// keys in memory.
func opsModule(cfg config.Config) fx.Option {
	opts := []fx.Option{fx.Provide(func() *metrics.Metrics { return metrics.New(nil) }, newUpstream, newSeries)}
	if cfg.ConnectRate > 0 || cfg.MaxConnectionsPerIP > 0 {
		opts = append(opts, fx.Provide(newAdmission))
	}
	if cfg.Broker == "redis" || cfg.Broker == "redis-cluster" {
		opts = append(opts, fx.Provide(newIdemRedis, newUpstreamIdem, newAPIIdem))
	}
	return fx.Module("ops", opts...)
}

func newAdmission(cfg config.Config, m *metrics.Metrics) *admit.Controller {
	return admit.New(admit.Options{
		Rate:    cfg.ConnectRate,
		Burst:   cfg.ConnectBurst,
		PerIP:   cfg.MaxConnectionsPerIP,
		Observe: m.Admission,
	})
}

// idemPrefix prefixes the idempotency keys kept in Redis.
const idemPrefix = "hub:"

// idemRedis is the Redis client of the idempotency stores.
type idemRedis struct{ redis.UniversalClient }

// newIdemRedis opens the idempotency stores' own client, closed by a stop
// hook. The hook is appended before the HTTP servers (which depend on the
// stores) are built, so it runs after the servers have stopped.
func newIdemRedis(lc fx.Lifecycle, cfg config.Config) (idemRedis, error) {
	var c redis.UniversalClient
	if cfg.Broker == "redis-cluster" {
		o, err := redis.ParseClusterURL(cfg.RedisURL)
		if err != nil {
			return idemRedis{}, fmt.Errorf("HUB_REDIS_URL: %w", err)
		}
		o.ContextTimeoutEnabled = true
		o.MaxRetries = -1
		c = redis.NewClusterClient(o)
	} else {
		o, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return idemRedis{}, fmt.Errorf("HUB_REDIS_URL: %w", err)
		}
		// every call bounded by its context; no retries: a claim is not
		// idempotent
		o.ContextTimeoutEnabled = true
		o.MaxRetries = -1
		c = redis.NewClient(o)
	}
	lc.Append(fx.StopHook(c.Close))
	return idemRedis{c}, nil
}

func newUpstreamIdem(c idemRedis) upstream.IdempotencyStore {
	return upstream.NewRedisStore(c, idemPrefix)
}

func newAPIIdem(c idemRedis, b *redisbroker.Broker) api.IdempotencyStore {
	return healthGate{api.NewRedisIdempotency(c, idemPrefix), b}
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

type upstreamParams struct {
	fx.In
	LC    fx.Lifecycle
	Cfg   config.Config
	Auth  *auth.Verifier
	Log   *slog.Logger
	Store upstream.IdempotencyStore `optional:"true"` // shared by a cluster
}

func newUpstream(p upstreamParams) *upstream.Upstream {
	u := upstream.New(upstream.Options{
		URL:        p.Cfg.UpstreamURL,
		Secret:     p.Cfg.UpstreamSecret,
		Timeout:    p.Cfg.UpstreamTimeout,
		Rate:       p.Cfg.SendRate,
		MaxPayload: p.Cfg.MaxPayload,
		Auth:       p.Auth,
		Logger:     p.Log,
		Store:      p.Store,
		// a cookie-authenticated /api/send must come from an allowed origin
		AllowedOrigins: p.Cfg.AllowedOrigins,
	})
	p.LC.Append(fx.StopHook(u.Close))
	return u
}
