package wsproto

import "unicode/utf8"

// Assembler puts a client's data frames together into messages (RFC 6455
// §5.4): a text or binary frame starts a message, continuation frames
// carry it on, the final frame ends it. It checks what the frames of a
// message must agree on (no new message inside one, no continuation
// outside one, RSV1 only on the first frame), bounds the message's size,
// validates text as UTF-8 fragment by fragment (failing at the fragment
// that makes it invalid), and inflates compressed messages. Control frames
// do not go through it: they may come between the fragments and change
// nothing here.
//
// Between messages an Assembler holds no buffer.
type Assembler struct {
	// Limit is the largest message, in bytes (inflated, for a compressed
	// one): past it the connection fails with 1009.
	Limit int64

	size int64  // bytes of the message so far (compressed ones: as sent)
	buf  []byte // fragments so far, when there was more than one

	// Deflate says permessage-deflate was negotiated: a message whose first
	// frame has RSV1 set is compressed.
	Deflate bool

	op         Opcode // of the message in progress; 0 between messages
	compressed bool
	text       UTF8
}

// FrameLimit is the largest data frame payload the parser should accept
// for an assembler: Limit, and for a compressed message somewhat more,
// since deflate can make incompressible bytes a little longer (a stored
// block costs 5 bytes per 64 KiB, zlib's may be shorter).
func (a *Assembler) FrameLimit() int64 {
	if !a.Deflate {
		return a.Limit
	}
	return a.Limit + a.Limit/8 + 64
}

// InMessage reports whether a fragmented message is in progress.
func (a *Assembler) InMessage() bool { return a.op != 0 }

// Push takes the next data frame (text, binary or continuation) as
// ParseFrame returned it. When f ends a message, done is true and msg is
// the whole message (aliasing f.Payload for a message of one uncompressed
// frame, else a buffer of its own that the Assembler lets go). An *Error
// fails the connection: 1002 for frames out of order, 1009 for a message
// over Limit, 1007 for text that is not UTF-8 or a compressed message that
// does not inflate.
func (a *Assembler) Push(f Frame) (op Opcode, msg []byte, done bool, err *Error) {
	if err := a.check(f.Op, f.RSV1, uint64(len(f.Payload))); err != nil {
		a.reset()
		return 0, nil, false, err
	}
	if f.Op != OpContinuation {
		a.op, a.compressed, a.size = f.Op, f.RSV1, 0
		a.text.Reset()
	}
	a.size += int64(len(f.Payload))
	if a.op == OpText && !a.compressed && !a.text.Write(f.Payload) {
		a.reset()
		return 0, nil, false, &Error{CloseInvalidPayload, "text messages must be UTF-8"}
	}
	if !f.Fin {
		a.buf = append(a.buf, f.Payload...)
		return 0, nil, false, nil
	}
	op, msg = a.op, f.Payload
	if f.Op == OpContinuation {
		msg = append(a.buf, f.Payload...)
	}
	compressed := a.compressed
	if op == OpText && !compressed && !a.text.Done() {
		a.reset()
		return 0, nil, false, &Error{CloseInvalidPayload, "text messages must be UTF-8"}
	}
	a.reset()
	if compressed {
		msg, err = Inflate(nil, msg, a.Limit)
		if err != nil {
			return 0, nil, false, err
		}
		if op == OpText && !utf8.Valid(msg) {
			return 0, nil, false, &Error{CloseInvalidPayload, "text messages must be UTF-8"}
		}
	}
	return op, msg, true, nil
}

// check tells whether a data frame of op with n payload bytes may come
// next: in its place among the message's frames, RSV1 only where allowed,
// the message within its limit. It changes nothing, so the Reader can ask
// as soon as a frame's header is in.
func (a *Assembler) check(op Opcode, rsv1 bool, n uint64) *Error {
	size, compressed := int64(0), rsv1
	switch op {
	case OpText, OpBinary:
		if a.op != 0 {
			return protocolError("expected a continuation frame")
		}
		if rsv1 && !a.Deflate {
			return protocolError("RSV1 set, no extension was negotiated for it")
		}
	case OpContinuation:
		if a.op == 0 {
			return protocolError("continuation frame without a message")
		}
		if rsv1 {
			return protocolError("RSV1 set on a continuation frame")
		}
		size, compressed = a.size, a.compressed
	default:
		return protocolError(op.String() + " frame given to the assembler")
	}
	limit := a.Limit
	if compressed {
		limit = a.FrameLimit()
	}
	if n > uint64(max(limit-size, 0)) {
		return &Error{CloseMessageTooBig, "message too big"}
	}
	return nil
}

// textFrom returns the UTF-8 state a text frame of op would start from,
// or false when the frame is not text to validate as it comes (binary,
// compressed, or out of place).
func (a *Assembler) textFrom(op Opcode, rsv1 bool) (UTF8, bool) {
	switch {
	case op == OpText && !rsv1 && a.op == 0:
		return UTF8{}, true
	case op == OpContinuation && a.op == OpText && !a.compressed:
		return a.text, true
	}
	return UTF8{}, false
}

// reset ends the message in progress and lets its buffer go.
func (a *Assembler) reset() {
	a.op, a.compressed, a.size, a.buf = 0, false, 0, nil
	a.text.Reset()
}
