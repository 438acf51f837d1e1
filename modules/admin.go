package modules

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/hub/redisbroker"
	"github.com/hubd/hub/internal/httpx"
	"github.com/hubd/hub/internal/metrics"
	"github.com/hubd/hub/internal/timeseries"
	"github.com/hubd/hub/web"
)

type seriesParams struct {
	fx.In
	LC      fx.Lifecycle
	Hub     *hub.Hub
	Metrics *metrics.Metrics
	Log     *slog.Logger
	Broker  *redisbroker.Broker `optional:"true"` // HUB_BROKER=redis or redis-cluster
}

// newSeries samples the admin dashboard's time series every second (GET
// /api/admin/timeseries) from the hub, its metrics registry and, on a
// cluster, the broker's health and node reports. It starts after the hub
// and stops before it.
func newSeries(p seriesParams) *timeseries.Sampler {
	o := timeseries.Options{Hub: p.Hub, Gatherer: p.Metrics.Registry(), Logger: p.Log}
	if b := p.Broker; b != nil {
		o.Broker = b.Healthy
		o.Nodes = func(ctx context.Context) ([]timeseries.NodeCount, error) {
			ns, err := b.NodeStats(ctx)
			if err != nil {
				return nil, err
			}
			out := make([]timeseries.NodeCount, len(ns))
			for i, n := range ns {
				out[i] = timeseries.NodeCount{Node: n.Node, Connections: n.TotalConnections}
			}
			return out, nil
		}
	}
	s := timeseries.New(o)
	p.LC.Append(fx.StartStopHook(s.Start, s.Close))
	return s
}

// registerAdmin serves the admin dashboard at /admin on mux: the
// listener of the service API, whose endpoints the page calls on its own
// origin.
func registerAdmin(mux *http.ServeMux) {
	h := web.NewAdminHandler()
	mux.Handle("/admin", h)
	mux.Handle("/admin/", h)
}

// consoleAPI tells the console page where the service API is (see
// web.Options.ConsoleAPI): nil (the page's origin) without an internal
// listener; in development mode over plain HTTP, the internal listener's
// base URL, whose API answers the page's CORS requests (devConsoleCORS);
// otherwise web.APIUnreachable, and the page says why it cannot use it
// (outside development mode the internal listener is meant to stay
// private, and an HTTPS page may not call a plain-HTTP listener).
func consoleAPI(cfg config.Config, s *Servers) func(*http.Request) string {
	if cfg.InternalAddr == "" {
		return nil
	}
	if !cfg.Dev || cfg.TLSCertFile != "" {
		return func(*http.Request) string { return web.APIUnreachable }
	}
	return func(r *http.Request) string {
		host, port, err := net.SplitHostPort(s.InternalAddr())
		if err != nil {
			return web.APIUnreachable
		}
		if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
			// listening on every address: the one the page came to
			host = requestHostname(r)
		}
		return "http://" + net.JoinHostPort(host, port)
	}
}

// devConsoleCORS answers the console page's cross-origin calls to the
// internal listener in development mode (see consoleAPI): from an origin on
// the public listener's port whose host is a loopback one or the host this
// request came to, or from an origin HUB_ALLOWED_ORIGINS allows. The API
// takes its credential from the Authorization header only, so the page
// sends the admin token it holds, never a cookie.
func devConsoleCORS(cfg config.Config, s *Servers, next http.Handler) http.Handler {
	return httpx.CORSFunc(func(origin string, r *http.Request) bool {
		if len(cfg.AllowedOrigins) > 0 && httpx.OriginAllowed(cfg.AllowedOrigins, origin, "") {
			return true
		}
		u, err := url.Parse(origin)
		if err != nil || u.Scheme != "http" {
			return false
		}
		_, publicPort, err := net.SplitHostPort(s.Addr())
		if err != nil || u.Port() != publicPort {
			return false
		}
		host := strings.ToLower(u.Hostname())
		if host == "localhost" || host == requestHostname(r) {
			return true
		}
		ip, err := netip.ParseAddr(host)
		return err == nil && ip.IsLoopback()
	}, "GET, POST, OPTIONS", next)
}

// requestHostname is the host name a request was sent to, without its
// port, in lower case.
func requestHostname(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.Trim(host, "[]"))
}
