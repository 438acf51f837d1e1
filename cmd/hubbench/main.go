// Command hubbench measures a running hub over loopback (idle connection
// cost, fan-out, unicast, a reconnect storm) and prints one JSON line of
// results; see package cmd/internal/bench and docs/BENCHMARKS.md. `hubctl
// bench` is the same tool.
//
//	hubbench --url http://127.0.0.1:18181 --secret S --api-key K --pid 1234 \
//	    --scenario fanout --transport ws --conns 10000 --events 200
//	hubbench --url http://127.0.0.1:18181 --secret S --api-key K --hubd ./hubd \
//	    --scenario storm --mode drop --conns 19900 --devices-per-user 4 --csv storm.csv
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/hubd/hub/cmd/internal/bench"
)

func main() {
	if ok, err := bench.RawReader(os.Args[1:]); ok { // the rawwrite scenario's readers
		if err != nil {
			fmt.Fprintln(os.Stderr, "hubbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := bench.Run(context.Background(), "hubbench", os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "hubbench:", err)
		if _, ok := errors.AsType[*bench.UsageError](err); ok {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
