// Package modules wires the hub together with go.uber.org/fx: one module per
// area (logging, auth, operations, hub, transports, HTTP servers) and App,
// which bundles them for a configuration. With cmd/hubd's main, which runs
// App, it is the only package that knows fx; logic lives in the packages it
// wires.
//
// Lifecycle: fx starts hooks in the order they are appended (the order in
// which constructors run) and stops them in reverse. The resulting stop
// order is: the hub drains while the listeners still answer (readiness
// 503, new handshakes 503, close 1001 / hub.shutdown); the HTTP servers
// shut down; the transports' goroutines are waited for (bounded); the hub's
// maintenance stops; the broker and its Redis clients close last.
package modules

import (
	"log/slog"

	"go.uber.org/dig"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/hubd/hub/config"
)

// App is the whole server for cfg. Modules whose parts depend on the
// configuration (the Redis backplane, admission control) are chosen here,
// so that no provider returns nil.
func App(cfg config.Config) fx.Option {
	return fx.Options(
		fx.Supply(cfg),
		LogModule,
		AuthModule,
		opsModule(cfg),
		hubModule(cfg),
		TransportModule,
		HTTPModule,
	)
}

// FxLogger sends fx's own events to the hub's logger at debug level, its
// errors too: they carry fx's whole dependency chain, and the caller of
// fx.New, Start or Stop gets the same error back and reports its Cause
// (cmd/hubd prints one line). Use it with fx.WithLogger.
func FxLogger(log *slog.Logger) fxevent.Logger {
	l := &fxevent.SlogLogger{Logger: log}
	l.UseLogLevel(slog.LevelDebug)
	l.UseErrorLevel(slog.LevelDebug)
	return l
}

// Cause is the error of the constructor or hook that made fx fail,
// without the chain of the types that needed it ("could not build
// arguments for function ...: failed to build ..."); an error that is
// not fx's is returned as it is.
func Cause(err error) error {
	if err == nil {
		return nil
	}
	return dig.RootCause(err)
}
