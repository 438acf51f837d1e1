//go:build !unix

package ws

import (
	"net"
	"syscall"
)

// rawOf: without non-blocking socket calls every connection writes through
// its flush goroutine and reads on a goroutine of its own.
func rawOf(net.Conn) syscall.RawConn { return nil }

func (c *corkConn) tryRead([]byte) (int, error)  { panic("ws: no raw socket reads on this system") }
func (c *corkConn) tryWrite([]byte) (int, error) { panic("ws: no raw socket writes on this system") }
