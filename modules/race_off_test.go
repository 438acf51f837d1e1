//go:build !race

package modules_test

import "time"

// raceEnabled reports a -race build: the leak test opens fewer connections
// under the race detector to stay within its time budget.
const raceEnabled = false

// schedSlack is added to the contract's time bounds where a test measures
// them from a client in the same process; see race_on_test.go.
const schedSlack time.Duration = 0
