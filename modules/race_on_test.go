//go:build race

package modules_test

// raceEnabled reports a -race build; the leak test opens fewer connections
// under the race detector to stay within its time budget. (This file and
// race_off_test.go belong to the leak test.)
const raceEnabled = true
