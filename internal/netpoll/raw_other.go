//go:build !unix

package netpoll

import (
	"net"
	"syscall"
)

// Raw: without non-blocking socket calls every connection writes and reads
// on goroutines of its own.
func Raw(net.Conn) syscall.RawConn { return nil }

// TryRead is never called where Raw gives nil.
func TryRead(syscall.RawConn, []byte) (int, error) {
	panic("netpoll: no raw socket reads on this system")
}

// TryWrite is never called where Raw gives nil.
func TryWrite(syscall.RawConn, []byte) (int, error) {
	panic("netpoll: no raw socket writes on this system")
}
