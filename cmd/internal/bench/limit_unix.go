//go:build unix

package bench

import (
	"fmt"
	"syscall"
)

// raiseFileLimit raises RLIMIT_NOFILE's soft limit to the hard limit.
func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("get file limit: %w", err)
	}
	if lim.Cur >= lim.Max {
		return nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise file limit: %w", err)
	}
	return nil
}
