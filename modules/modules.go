// Package modules wires the hub together with go.uber.org/fx: one module per
// area (logging, auth, hub, transports, HTTP servers) and App, which
// bundles them. With cmd/hubd's main, which runs App, it is the only
// package that knows fx; logic lives in the packages it wires.
package modules

import (
	"go.uber.org/fx"
)

// App is the whole server. Supply a config.Config (fx.Supply) to run it.
var App = fx.Options(
	LogModule,
	AuthModule,
	OpsModule,
	HubModule,
	TransportModule,
	HTTPModule,
)
