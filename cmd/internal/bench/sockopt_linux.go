package bench

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): with a
// source address bound, the port is chosen at connect time from the whole
// 4-tuple, so that ports still in TIME_WAIT from an earlier run (reusable on
// loopback with the default net.ipv4.tcp_tw_reuse=2) do not make bind fail.
const ipBindAddressNoPort = 24

func controlSocket(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
