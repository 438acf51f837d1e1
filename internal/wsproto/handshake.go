package wsproto

import (
	"crypto/sha1"
	"encoding/base64"
	"strings"
)

// Request is what the handshake checks need of an HTTP request. Header
// keys are in canonical form ("Sec-Websocket-Key"), as net/http gives
// them: an http.Header can be passed as it is.
type Request struct {
	Method     string
	ProtoMajor int
	ProtoMinor int
	Header     map[string][]string
}

// Refusal is the answer to a handshake the hub does not accept: the HTTP
// status, the contract's error code and message, and the headers the
// answer must carry.
type Refusal struct {
	Status  int
	Code    string
	Message string
	Header  [][2]string
}

// Handshake is an accepted opening handshake.
type Handshake struct {
	// Accept is the Sec-WebSocket-Accept value.
	Accept string
	// Deflate says permessage-deflate was negotiated; Extensions is then
	// the Sec-WebSocket-Extensions value of the answer.
	Deflate    bool
	Extensions string
}

// Refusal codes.
const (
	CodeBadHandshake     = "bad_handshake"
	CodeUpgradeRequired  = "upgrade_required"
	CodeMethodNotAllowed = "method_not_allowed"
)

// CheckRequest checks a client's opening handshake (RFC 6455 §4.2.1): a
// GET over HTTP/1.1 or later, Upgrade naming websocket and Connection
// naming Upgrade (tokens of comma-separated lists, in any case),
// Sec-WebSocket-Version 13 and one Sec-WebSocket-Key that is 16 bytes in
// base64. A request that is not an upgrade at all gets 426 (the endpoint
// speaks WebSocket only), another version 426 with the version the hub
// speaks (§4.4), anything else broken 400. With deflate, a
// permessage-deflate offer the hub can honour is accepted (see
// NegotiateDeflate).
func CheckRequest(r Request, deflate bool) (Handshake, *Refusal) {
	if r.Method != "GET" {
		return Handshake{}, &Refusal{Status: 405, Code: CodeMethodNotAllowed, Message: "use GET with a WebSocket upgrade",
			Header: [][2]string{{"Allow", "GET"}}}
	}
	if !hasToken(r.Header["Upgrade"], "websocket") {
		return Handshake{}, &Refusal{Status: 426, Code: CodeUpgradeRequired,
			Message: "this endpoint speaks WebSocket; use the SSE endpoint otherwise",
			Header:  [][2]string{{"Upgrade", "websocket"}, {"Connection", "Upgrade"}}}
	}
	bad := func(msg string) (Handshake, *Refusal) {
		return Handshake{}, &Refusal{Status: 400, Code: CodeBadHandshake, Message: msg}
	}
	if r.ProtoMajor < 1 || r.ProtoMajor == 1 && r.ProtoMinor < 1 {
		return bad("a WebSocket handshake needs HTTP/1.1")
	}
	if !hasToken(r.Header["Connection"], "upgrade") {
		return bad("the Connection header must name Upgrade")
	}
	if v := r.Header["Sec-Websocket-Version"]; len(v) != 1 || strings.TrimSpace(v[0]) != "13" {
		return Handshake{}, &Refusal{Status: 426, Code: CodeUpgradeRequired, Message: "this endpoint speaks WebSocket version 13",
			Header: [][2]string{{"Sec-WebSocket-Version", "13"}}}
	}
	keys := r.Header["Sec-Websocket-Key"]
	if len(keys) != 1 || !ValidKey(strings.TrimSpace(keys[0])) {
		return bad("Sec-WebSocket-Key must be one base64-encoded 16-byte value")
	}
	h := Handshake{Accept: AcceptKey(strings.TrimSpace(keys[0]))}
	if deflate {
		h.Extensions, h.Deflate = NegotiateDeflate(r.Header["Sec-Websocket-Extensions"])
	}
	return h, nil
}

// ValidKey reports whether key is a Sec-WebSocket-Key: 16 bytes in
// base64, padded.
func ValidKey(key string) bool {
	if len(key) != 24 {
		return false
	}
	b, err := base64.StdEncoding.Strict().DecodeString(key)
	return err == nil && len(b) == 16
}

// websocketGUID is RFC 6455's fixed GUID for the accept key.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey is the Sec-WebSocket-Accept answer to key (RFC 6455 §4.2.2).
func AcceptKey(key string) string {
	h := sha1.Sum([]byte(key + websocketGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// AppendResponse appends the 101 answer of an accepted handshake.
func AppendResponse(b []byte, h Handshake) []byte {
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = append(b, h.Accept...)
	if h.Extensions != "" {
		b = append(b, "\r\nSec-WebSocket-Extensions: "...)
		b = append(b, h.Extensions...)
	}
	return append(b, "\r\n\r\n"...)
}

// hasToken reports whether the comma-separated lists of values name token
// (ASCII case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.Trim(item, " \t"), token) {
				return true
			}
		}
	}
	return false
}
