// Package wsproto is the WebSocket protocol (RFC 6455, and RFC 7692's
// permessage-deflate) as pure functions on bytes, for a server: the
// handshake request checks and the accept key, the frame header parse
// (incremental: a frame is parsed once all of it is there) and append,
// fragment assembly, the control-frame rules, close payloads and codes,
// UTF-8 validation (incremental across fragments, failing fast) and
// compression. It owns no socket and starts no goroutine: the WebSocket
// endpoint (transport/ws) reads and writes, and asks this package what the
// bytes mean.
//
// What the hub answers a broken stream with is an *Error: the close code
// and reason to fail the connection with (RFC 6455 §7.1.7).
package wsproto

import "strconv"

// Opcode is a frame's opcode (RFC 6455 §5.2).
type Opcode byte

// The opcodes RFC 6455 defines; the others are reserved.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xa
)

// Control reports whether o is a control opcode (close, ping, pong and the
// reserved 0xb-0xf).
func (o Opcode) Control() bool { return o&0x8 != 0 }

func (o Opcode) String() string {
	switch o {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return "opcode " + strconv.Itoa(int(o))
}

// Close codes (RFC 6455 §7.4.1) the hub sends or has to know.
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseUnsupportedData = 1003
	CloseNoStatus        = 1005 // never sent: a close frame without a code
	CloseAbnormal        = 1006 // never sent: the connection ended without a close frame
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseMessageTooBig   = 1009
	CloseInternalError   = 1011
)

// Error is a client stream the hub must fail: the close frame it sends
// carries Code and Reason.
type Error struct {
	Code   int
	Reason string
}

func (e *Error) Error() string {
	return "websocket: " + e.Reason + " (close " + strconv.Itoa(e.Code) + ")"
}

func protocolError(reason string) *Error { return &Error{CloseProtocolError, reason} }
