package wsproto

import "encoding/binary"

// Frame is one parsed client frame. Payload is unmasked in place and
// aliases the bytes it was parsed from.
type Frame struct {
	Fin bool
	// RSV1 is permessage-deflate's "compressed" bit (RFC 7692 §6); the
	// parser lets it through only on data frames, and only when the
	// extension was negotiated. Whether the frame is the first of its
	// message is the Assembler's to check.
	RSV1    bool
	Op      Opcode
	Payload []byte
}

// MaxControlPayload is the longest payload of a control frame (RFC 6455
// §5.5).
const MaxControlPayload = 125

// ParseFrame parses the client frame at the start of b. It returns the
// number of bytes the frame took, or 0 (and no error) when b does not hold
// the whole frame yet: the caller keeps the bytes and calls again with
// more. A broken frame is reported as soon as its header shows it, before
// its payload has arrived (a length over maxPayload, a reserved bit or
// opcode, an unmasked or fragmented control frame). maxPayload bounds a data
// frame's payload; deflate says that permessage-deflate was negotiated
// (RSV1 allowed on data frames). The payload is unmasked in b, so a parsed
// frame cannot be parsed again.
//
// The length is not required in its minimal form (RFC 6455 §5.2 asks it of
// the sender; the hub accepts either).
func ParseFrame(b []byte, maxPayload int64, deflate bool) (Frame, int, *Error) {
	h, err := parseHeader(b, maxPayload, deflate)
	if err != nil || h.size == 0 {
		return Frame{}, 0, err
	}
	if uint64(len(b)-h.size) < h.length {
		return Frame{}, 0, nil
	}
	p := b[h.size : h.size+int(h.length)]
	mask(p, h.key)
	return Frame{Fin: h.fin, RSV1: h.rsv1, Op: h.op, Payload: p}, h.size + int(h.length), nil
}

// header is a client frame's header.
type header struct {
	fin, rsv1 bool
	op        Opcode
	length    uint64 // of the payload
	key       [4]byte
	size      int // of the header; 0 while it is incomplete
}

// parseHeader parses and checks the header at the start of b (see
// ParseFrame); size 0 and no error when b does not hold all of it yet.
func parseHeader(b []byte, maxPayload int64, deflate bool) (header, *Error) {
	if len(b) == 0 {
		return header{}, nil
	}
	b0 := b[0]
	h := header{fin: b0&0x80 != 0, rsv1: b0&0x40 != 0, op: Opcode(b0 & 0x0f)}
	if b0&0x30 != 0 || h.rsv1 && !deflate {
		return header{}, protocolError("reserved bits set, no extension was negotiated for them")
	}
	switch h.op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return header{}, protocolError("reserved opcode")
	}
	if h.rsv1 && (h.op.Control() || h.op == OpContinuation) {
		return header{}, protocolError("RSV1 set on a control frame or a continuation frame")
	}
	if !h.fin && h.op.Control() {
		return header{}, protocolError("fragmented control frame")
	}
	if len(b) < 2 {
		return header{}, nil
	}
	b1 := b[1]
	if b1&0x80 == 0 {
		return header{}, protocolError("client frames must be masked")
	}
	h.length = uint64(b1 & 0x7f)
	size := 2
	switch h.length {
	case 126:
		if len(b) < 4 {
			return header{}, nil
		}
		h.length, size = uint64(binary.BigEndian.Uint16(b[2:4])), 4
	case 127:
		if len(b) < 10 {
			return header{}, nil
		}
		h.length, size = binary.BigEndian.Uint64(b[2:10]), 10
		if h.length>>63 != 0 {
			return header{}, protocolError("invalid payload length")
		}
	}
	if h.op.Control() {
		if h.length > MaxControlPayload {
			return header{}, protocolError("control frame longer than 125 bytes")
		}
	} else if maxPayload < 0 || h.length > uint64(maxPayload) {
		return header{}, &Error{CloseMessageTooBig, "message too big"}
	}
	if len(b) < size+4 {
		return header{}, nil
	}
	copy(h.key[:], b[size:size+4])
	h.size = size + 4
	return h, nil
}

// mask XORs p with the masking key (RFC 6455 §5.3), eight bytes at a time.
func mask(p []byte, key [4]byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// AppendHeader appends the header of an unmasked (server) frame with a
// payload of n bytes.
func AppendHeader(b []byte, fin, rsv1 bool, op Opcode, n int) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	if rsv1 {
		b0 |= 0x40
	}
	switch {
	case n <= 125:
		return append(b, b0, byte(n))
	case n <= 0xffff:
		return append(b, b0, 126, byte(n>>8), byte(n))
	default:
		b = append(b, b0, 127)
		return binary.BigEndian.AppendUint64(b, uint64(n))
	}
}

// AppendFrame appends p as one unmasked, final frame of op; rsv1 marks a
// compressed message (permessage-deflate).
func AppendFrame(b []byte, op Opcode, rsv1 bool, p []byte) []byte {
	b = AppendHeader(b, true, rsv1, op, len(p))
	return append(b, p...)
}

// AppendClientFrame appends p as one masked (client) frame with the
// masking key key: what a client sends, for clients and tests.
func AppendClientFrame(b []byte, fin, rsv1 bool, op Opcode, key [4]byte, p []byte) []byte {
	start := len(b)
	b = AppendHeader(b, fin, rsv1, op, len(p))
	b[start+1] |= 0x80
	b = append(b, key[:]...)
	n := len(b)
	b = append(b, p...)
	mask(b[n:], key)
	return b
}
