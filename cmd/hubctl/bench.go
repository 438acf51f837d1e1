package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/hubd/hub/cmd/internal/bench"
)

// hubctl bench is hubbench (cmd/internal/bench): idle, fanout and unicast
// runs against a hub on loopback, one JSON line of results.
func init() {
	commands["bench"] = &command{
		summary: "measure a hub on loopback: idle cost, fan-out, unicast (one JSON line)",
		run: func(ctx context.Context, s *streams, args []string) int {
			err := bench.Run(ctx, "hubctl bench", args, s.out, s.err)
			if _, usage := errors.AsType[*bench.UsageError](err); usage {
				fmt.Fprintf(s.err, "hubctl bench: %s\nRun `hubctl bench --help` for usage.\n", err)
				return exitUsage
			}
			switch {
			case err == nil, errors.Is(err, flag.ErrHelp):
				return exitOK
			default:
				return fail(s, "bench", err)
			}
		},
	}
}
