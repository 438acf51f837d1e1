package ws

import (
	"encoding/binary"
	"unicode/utf8"
)

// WebSocket opcodes (RFC 6455, section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// Close codes the endpoint sends on a broken client stream.
const (
	closeNormal          = 1000
	closeProtocolError   = 1002
	closeUnsupportedData = 1003
	closeInvalidPayload  = 1007
	closeMessageTooBig   = 1009
)

// frame is one parsed client frame; payload is unmasked in place and
// aliases the buffer it was parsed from.
type frame struct {
	fin     bool
	op      byte
	payload []byte
}

// protoError is a broken client stream: the connection is failed with
// this close code and reason.
type protoError struct {
	code int
	text string
}

// parseFrame parses the client frame at the start of b. It returns the
// number of bytes the frame took, 0 (and no error) when b does not hold the
// whole frame yet. limit bounds a data frame's payload. A frame's payload is
// unmasked in b, so a parsed frame cannot be parsed again.
func parseFrame(b []byte, limit int64) (frame, int, *protoError) {
	if len(b) < 2 {
		return frame{}, 0, nil
	}
	b0, b1 := b[0], b[1]
	if b0&0x70 != 0 {
		return frame{}, 0, &protoError{closeProtocolError, "reserved bits set, no extension was negotiated"}
	}
	op := b0 & 0x0f
	switch op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return frame{}, 0, &protoError{closeProtocolError, "unknown opcode"}
	}
	if b1&0x80 == 0 {
		return frame{}, 0, &protoError{closeProtocolError, "client frames must be masked"}
	}
	n := uint64(b1 & 0x7f)
	hdr := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return frame{}, 0, nil
		}
		n, hdr = uint64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return frame{}, 0, nil
		}
		n, hdr = binary.BigEndian.Uint64(b[2:10]), 10
		if n>>63 != 0 {
			return frame{}, 0, &protoError{closeProtocolError, "invalid payload length"}
		}
	}
	fin := b0&0x80 != 0
	if op >= opClose {
		if !fin {
			return frame{}, 0, &protoError{closeProtocolError, "fragmented control frame"}
		}
		if n > 125 {
			return frame{}, 0, &protoError{closeProtocolError, "control frame longer than 125 bytes"}
		}
	} else if n > uint64(limit) {
		return frame{}, 0, &protoError{closeMessageTooBig, "frame too large"}
	}
	hdr += 4 // masking key
	if len(b) < hdr || uint64(len(b)-hdr) < n {
		return frame{}, 0, nil
	}
	key := b[hdr-4 : hdr]
	p := b[hdr : hdr+int(n)]
	for i := range p {
		p[i] ^= key[i&3]
	}
	return frame{fin: fin, op: op, payload: p}, hdr + int(n), nil
}

// appendControl appends an unmasked control frame (payload at most 125
// bytes).
func appendControl(b []byte, op byte, payload []byte) []byte {
	b = append(b, 0x80|op, byte(len(payload)))
	return append(b, payload...)
}

// closePayload is a close frame's body: the code and the reason, the
// reason cut (on a rune boundary) to fit the 125-byte limit.
func closePayload(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return append(p, reason...)
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455, section 7.4).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
