package modules

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// deferAccept is how long the kernel holds a new connection that has
// sent nothing yet before handing it to accept anyway.
const deferAccept = 5 // seconds

// listenControl sets TCP_DEFER_ACCEPT on the public listener: a connection
// is accepted once its first bytes (the request, a TLS ClientHello) are
// there, so that the handshake's first read finds them instead of waiting
// in the poller (one read, one wait and one wake-up fewer per connection).
// The listen backlog is the kernel's net.core.somaxconn (Go asks for it);
// see docs/BENCHMARKS.md, "Connect rate and TLS".
func listenControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAccept)
	}); err != nil {
		return err
	}
	return serr
}
