//go:build !linux

package modules

import "syscall"

// listenKeepAlive is net.ListenConfig.KeepAlive: Go's default.
const listenKeepAlive = 0

// listenControl does nothing where TCP_DEFER_ACCEPT does not exist.
func listenControl(_, _ string, _ syscall.RawConn) error { return nil }
