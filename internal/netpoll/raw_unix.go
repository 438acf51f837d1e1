//go:build unix

package netpoll

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw gives the socket of a plain TCP connection, for non-blocking reads
// and writes; nil for anything else (TLS).
func Raw(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// TryRead reads what the socket holds into b without waiting: 0 bytes and
// no error when there is nothing, io.EOF when the peer has closed.
func TryRead(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			k, e := unix.Read(int(fd), b)
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
			case e != nil:
				rerr = e
			case k == 0:
				rerr = io.EOF
			default:
				n = k
			}
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// TryWrite writes b with non-blocking write(2) calls until the kernel
// takes no more; it never waits.
func TryWrite(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			k, e := rawWrite(fd, b[n:])
			if k > 0 {
				n += k
			}
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				return true
			case e != nil:
				werr = e
				return true
			case k == 0:
				werr = errors.New("write returned 0 bytes")
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, err
	}
	return n, werr
}

// rawWrite is write(2) on a non-blocking socket as a raw system call: it
// cannot block, so the scheduler need not be told (no entersyscall and
// exitsyscall around each of a unicast run's one write per delivery).
func rawWrite(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
