// Package app starts the fully assembled hub (modules.App) on loopback
// ports for one test. It is the part of the test harness that imports
// modules (and so fx); the rest, which the tests of the packages below
// modules can import without a cycle, is hubtest.
package app

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/modules"
)

// logTail is how much of the logs a failed test shows.
const logTail = 8000000

// App is a running modules.App. Its fields are set by Start and read only.
type App struct {
	Config  config.Config    // the configuration it runs with
	Servers *modules.Servers // the public and internal listeners
	Hub     *hub.Hub
	URL     string          // public base URL: http://127.0.0.1:port
	API     string          // internal (service API) base URL
	WSURL   string          // the WebSocket endpoint: ws://127.0.0.1:port + Config.WSPath
	SSEURL  string          // the SSE endpoint: URL + Config.SSEPath
	Logs    *hubtest.Buffer // everything the app logged (JSON lines)

	t    testing.TB
	fx   *fx.App
	once sync.Once
}

// Start assembles and starts modules.App for t with the test
// configuration: both listeners on 127.0.0.1 with a free port, node
// "hub-test", HS256 tokens of hubtest.Secret, the API key hubtest.APIKey,
// a 3 s drain, debug logs in JSON into Logs; mod, when not nil, changes it
// before it is validated. The app stops when t ends (or at Stop), and a
// failed test shows the tail of its logs.
func Start(t testing.TB, mod func(*config.Config)) *App {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.NodeName = "hub-test"
	cfg.JWTSecret = hubtest.Secret
	cfg.JWTAlgorithms = []string{"HS256"}
	cfg.APIKeys = []string{hubtest.APIKey}
	cfg.ShutdownTimeout = 3 * time.Second
	cfg.LogLevel = "debug"
	cfg.LogFormat = "json"
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	a := &App{Config: cfg, Logs: &hubtest.Buffer{}, t: t}
	a.fx = fx.New(
		modules.App(cfg),
		fx.Replace(modules.NewLogger(cfg.LogLevel, cfg.LogFormat, a.Logs)),
		fx.WithLogger(modules.FxLogger),
		fx.Populate(&a.Servers, &a.Hub),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.fx.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	a.URL = "http://" + a.Servers.Addr()
	a.API = "http://" + a.Servers.InternalAddr()
	a.WSURL = "ws://" + a.Servers.Addr() + cfg.WSPath
	a.SSEURL = a.URL + cfg.SSEPath
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			logs := a.Logs.String()
			if len(logs) > logTail {
				logs = logs[len(logs)-logTail:]
			}
			t.Logf("hub logs (tail):\n%s", logs)
		}
	})
	return a
}

// Stop stops the app (the drain included) and fails the test if it does
// not stop cleanly. Only the first call stops it; a concurrent call waits
// for it. It may be called from any goroutine.
func (a *App) Stop() {
	a.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := a.fx.Stop(ctx); err != nil {
			a.t.Errorf("stop: %v", err)
		}
	})
}
