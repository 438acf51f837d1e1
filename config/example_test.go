package config_test

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/hubd/hub/config"
)

func ExampleLoad() {
	env := []string{
		"HUB_JWT_SECRET=example-secret-0123456789abcdef-0123",
		"HUB_HISTORY_SIZE=500",
		"HUB_BROKER=redis",
		"HUB_HISTROY_TTL=1m", // misspelt: a warning, not an error
	}
	args := []string{"--history-size", "200", "--max-payload", "1MiB"}
	c, warnings, err := config.Load(args, env) // os.Args[1:], os.Environ() in a program
	for _, w := range warnings {
		fmt.Println(w)
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print(config.Usage())
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println(c.HistorySize, c.Broker, c.MaxPayload, c.HeartbeatInterval, c.Dev, c.Addr)

	_, _, err = config.Load([]string{"--dev"}, []string{"HUB_HISTORY_SIZE=abc"})
	fmt.Println(err)
	// Output:
	// config: HUB_HISTROY_TTL is not a configuration key and is ignored (did you mean HUB_HISTORY_TTL?)
	// 200 redis 1048576 25s false :8080
	// config: HUB_HISTORY_SIZE (history_size): invalid value "abc": must be a non-negative integer
}
