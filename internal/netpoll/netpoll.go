// Package netpoll lets a transport hold idle connections without a
// goroutine each: a Poller reports sockets that have something to read
// (Linux epoll, itself polled by the Go runtime), TryRead/TryWrite read
// and write a socket without ever waiting, a Pool of writers drains the
// connections the hub woke, and a Lifecycle is one connection's state
// from its registration to the close of its socket: the only way in and
// out of the poller. The WebSocket and the SSE endpoints both use it.
package netpoll

import "syscall"

// Watcher is a connection whose socket waits in a Poller (put there by
// Lifecycle.Watch). Readable runs once the socket has something to read,
// or the peer hung up: once per arming (one-shot), on a goroutine of its
// own that the poller starts and counts in its WaitGroup, and that lives
// as long as the read. It reads with Lifecycle.Read, which re-arms the
// socket.
type Watcher interface{ Readable() }

// rawFD returns the descriptor of a raw socket (-1 if it has none).
func rawFD(rc syscall.RawConn) int {
	fd := -1
	_ = rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}
