package config_test

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/hubd/hub/config"
)

func ExampleLoad() {
	env := map[string]string{
		"HUB_HISTORY_SIZE": "500",
		"HUB_BROKER":       "redis",
	}
	args := []string{"--history-size", "200", "--max-payload", "1MiB"}
	c, err := config.Load(args, func(k string) string { return env[k] })
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print(config.Usage())
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println(c.HistorySize, c.Broker, c.MaxPayload, c.HeartbeatInterval, c.DevMode())

	_, err = config.Load(nil, func(k string) string {
		if k == "HUB_HISTORY_SIZE" {
			return "abc"
		}
		return ""
	})
	fmt.Println(err)
	// Output:
	// 200 redis 1048576 25s true
	// config: HUB_HISTORY_SIZE (history_size): invalid value "abc": must be a non-negative integer
}
