package modules

import (
	"log/slog"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/transport/admit"
	"github.com/hubd/hub/transport/auth"
	"github.com/hubd/hub/transport/metrics"
	"github.com/hubd/hub/transport/upstream"
)

// OpsModule provides metrics (a private Prometheus registry), admission
// control for new connections, and the upstream (hub.send) client.
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
		newUpstream,
	),
)

func newUpstream(lc fx.Lifecycle, cfg config.Config, v *auth.Verifier, log *slog.Logger) *upstream.Upstream {
	u := upstream.New(upstream.Options{
		URL:        cfg.UpstreamURL,
		Secret:     cfg.UpstreamSecret,
		Timeout:    cfg.UpstreamTimeout,
		Rate:       cfg.SendRate,
		MaxPayload: cfg.MaxPayload,
		Auth:       v,
		Logger:     log,
	})
	lc.Append(fx.StopHook(u.Close))
	return u
}
