//go:build race

package modules_test

import "time"

// raceEnabled reports a -race build: the leak test opens fewer connections
// under the race detector to stay within its time budget.
const raceEnabled = true

// schedSlack is added to the contract's time bounds (/readyz within 100 ms,
// a publish within HUB_PUBLISH_TIMEOUT) where the tests measure them from
// a client in the same process: the race detector slows every goroutine,
// the measuring client's too, several times over. The run without -race
// checks the bounds as the contract states them.
const schedSlack = time.Second
