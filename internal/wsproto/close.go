package wsproto

import (
	"encoding/binary"
	"unicode/utf8"
)

// ClosePayload is the body of a close frame with code and reason: the
// code, then the reason cut on a rune boundary so that the body fits a
// control frame's 125 bytes. Code 0 and 1005 (no status) give an empty
// body.
func ClosePayload(code int, reason string) []byte {
	if code == 0 || code == CloseNoStatus {
		return nil
	}
	if len(reason) > MaxControlPayload-2 {
		reason = reason[:MaxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return append(p, reason...)
}

// ParseClose reads a client's close frame body (RFC 6455 §5.5.1, §7.4):
// empty (code 1005, no status), or a code a peer may send and a UTF-8
// reason. A one-byte body or a code that may not be sent fails with 1002,
// a reason that is not UTF-8 with 1007.
func ParseClose(p []byte) (code int, reason []byte, err *Error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, nil, nil
	case len(p) == 1:
		return 0, nil, protocolError("invalid close frame")
	}
	code = int(binary.BigEndian.Uint16(p))
	if !ValidCloseCode(code) {
		return 0, nil, protocolError("invalid close code")
	}
	if !utf8.Valid(p[2:]) {
		return 0, nil, &Error{CloseInvalidPayload, "close reason must be UTF-8"}
	}
	return code, p[2:], nil
}

// ValidCloseCode reports whether a peer may send code in a close frame:
// the codes RFC 6455 §7.4.1 and the IANA registry define for sending
// (1000-1003, 1007-1014), and those for libraries and applications
// (3000-4999). 1004, 1005, 1006 and 1015 are reserved and never sent.
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
