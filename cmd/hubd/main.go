// Command hubd is the hub server. Configuration: defaults < --config FILE <
// HUB_* environment < flags; see docs/OPERATIONS.md. Without a JWT key it
// refuses to start unless --dev (or HUB_DEV=true) asks for development mode.
// hubd --version prints the module version, the commit and the Go version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"go.uber.org/fx"

	"github.com/hubd/hub/config"
	"github.com/hubd/hub/modules"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Print(config.Usage())
			os.Exit(0)
		}
		if errors.Is(err, config.ErrVersion) {
			fmt.Print(version(debug.ReadBuildInfo()))
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "hubd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, warnings, err := config.Load(args, os.Environ())
	if err != nil {
		// no logger yet: the warnings (a misspelt key, often the cause of
		// the error) go to stderr before it
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, "hubd: warning:", w)
		}
		return err
	}
	app := fx.New(
		modules.App(cfg),
		fx.Invoke(func(log *slog.Logger) {
			for _, w := range warnings {
				log.Warn(w)
			}
		}),
		fx.WithLogger(modules.FxLogger),
		fx.StartTimeout(30*time.Second),
		fx.StopTimeout(cfg.ShutdownTimeout+10*time.Second),
	)
	if err := app.Err(); err != nil {
		return modules.Cause(err)
	}
	// Catch signals before starting: the listener accepts (and development
	// mode prints its banner) during Start, and a SIGTERM that comes right
	// after must drain, not kill the process.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		return modules.Cause(err)
	}
	select {
	case <-sig:
	case <-app.Done():
	}
	stopCtx, cancel2 := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+10*time.Second)
	defer cancel2()
	return app.Stop(stopCtx)
}
