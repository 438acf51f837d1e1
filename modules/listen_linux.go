package modules

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// deferAccept is how long the kernel holds a new connection that has
// sent nothing yet before handing it to accept anyway.
const deferAccept = 5 // seconds

// listenKeepAlive is net.ListenConfig.KeepAlive: off, because accepted
// sockets inherit the listener's keep-alive settings (listenControl), so
// Go need not set them again on every accepted connection (four system
// calls per connection).
const listenKeepAlive = -1

// listenControl prepares the public listener's socket:
//   - TCP_DEFER_ACCEPT: a connection is accepted once its first bytes (the
//     request, a TLS ClientHello) are there, so that the handshake's
//     first read finds them instead of waiting in the poller;
//   - TCP keep-alive as Go sets it on accepted connections by default
//     (probes after 15 s idle, every 15 s, 9 of them), inherited by every
//     accepted socket.
//
// The listen backlog is the kernel's net.core.somaxconn (Go asks for it);
// see docs/BENCHMARKS.md, "Connect rate and TLS".
func listenControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range [...]struct{ level, opt, v int }{
			{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAccept},
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		} {
			if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
