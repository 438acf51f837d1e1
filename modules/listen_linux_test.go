package modules

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenDefersAccept: the public listener's socket has TCP_DEFER_ACCEPT,
// a connection that sends its request is accepted with the bytes there to
// read, and it has TCP keep-alive as Go would have set it (inherited from
// the listener).
func TestListenDefersAccept(t *testing.T) {
	ln, err := (&net.ListenConfig{Control: listenControl, KeepAlive: listenKeepAlive}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if got <= 0 {
		t.Fatalf("TCP_DEFER_ACCEPT = %d, want it set", got)
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 3)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "GET" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	src, err := s.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		var v int
		var verr error
		if err := src.Control(func(fd uintptr) { v, verr = unix.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil || verr != nil {
			t.Fatal(err, verr)
		}
		if v != o.want {
			t.Errorf("accepted socket: %s = %d, want %d", o.name, v, o.want)
		}
	}
}
