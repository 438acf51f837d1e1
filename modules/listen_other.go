//go:build !linux

package modules

import "syscall"

// listenControl does nothing where TCP_DEFER_ACCEPT does not exist.
func listenControl(_, _ string, _ syscall.RawConn) error { return nil }
