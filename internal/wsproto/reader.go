package wsproto

import "math"

// Reader turns the bytes a client sends, in whatever pieces they arrive,
// into what they mean to the server: messages, pings, pongs and the close
// frame, in order, or the *Error the connection fails with. It is the
// parser, the assembler and the control-frame rules together; the caller
// reads the socket and answers.
//
// A Reader holds the start of a frame that has not all arrived yet and the
// fragments of a message in progress; between messages, with no partial
// frame, it holds no buffer.
type Reader struct {
	Assembler
	in []byte // the start of a frame not complete yet

	// A text frame not complete yet is validated as its bytes arrive, by a
	// copy of the assembler's UTF-8 state that runs ahead: checked bytes
	// of its payload have been seen.
	ahead   UTF8
	checked int32 // a frame over 2 GiB is refused at its header
}

// EventKind says what an Event is.
type EventKind uint8

// The events of a client stream.
const (
	EventMessage EventKind = iota + 1 // a whole text or binary message
	EventPing                         // answer with a pong carrying Data
	EventPong
	EventClose // the client's close frame: Code (1005 for none) and reason Data
)

// Event is one thing the client said. Data aliases the bytes given to
// Feed (or the Reader's buffer) and is valid only during the callback.
type Event struct {
	Kind EventKind
	Op   Opcode // of a message: OpText or OpBinary
	Data []byte
	Code int // of a close
}

// Feed parses data after what earlier calls left incomplete, and calls on
// for every event in order. It stops when on returns false or after the
// close event (the rest is dropped: nothing is read after a close frame),
// and at the first broken frame, whose *Error it returns after the events
// before it. An incomplete frame at the end is kept for the next call.
// Payloads are unmasked in data.
func (r *Reader) Feed(data []byte, on func(Event) bool) *Error {
	if len(r.in) > 0 {
		r.in = append(r.in, data...)
		data = r.in
	}
	for len(data) > 0 {
		f, n, err := ParseFrame(data, r.FrameLimit(), r.Deflate)
		if err != nil {
			r.drop()
			return err
		}
		if n == 0 {
			if err := r.lookAhead(data); err != nil {
				r.drop()
				return err
			}
			break
		}
		data = data[n:]
		r.checked = 0
		var ev Event
		switch f.Op {
		case OpPing:
			ev = Event{Kind: EventPing, Data: f.Payload}
		case OpPong:
			ev = Event{Kind: EventPong, Data: f.Payload}
		case OpClose:
			code, reason, err := ParseClose(f.Payload)
			if err != nil {
				r.drop()
				return err
			}
			r.drop()
			on(Event{Kind: EventClose, Code: code, Data: reason})
			return nil
		default:
			op, msg, done, err := r.Push(f)
			if err != nil {
				r.drop()
				return err
			}
			if !done {
				continue
			}
			ev = Event{Kind: EventMessage, Op: op, Data: msg}
		}
		if !on(ev) {
			r.drop()
			return nil
		}
	}
	switch {
	case len(data) == 0:
		r.in = nil
	case len(r.in) > 0: // data is the tail of r.in
		r.in = r.in[:copy(r.in, data)]
	default:
		r.in = append([]byte(nil), data...)
	}
	return nil
}

// lookAhead checks the start of a data frame that has not all arrived
// (b holds its header and part of its payload): whether it may come next
// (Assembler.check, the size included) and, for text, whether the part of
// its payload at hand is still UTF-8. So a stream fails at the frame, and
// at the read, where it went wrong, not when the frame is complete.
func (r *Reader) lookAhead(b []byte) *Error {
	h, err := parseHeader(b, r.FrameLimit(), r.Deflate)
	if err != nil || h.size == 0 || h.op.Control() {
		return err
	}
	if err := r.check(h.op, h.rsv1, h.length); err != nil {
		return err
	}
	if r.checked == 0 {
		var ok bool
		if r.ahead, ok = r.textFrom(h.op, h.rsv1); !ok {
			return nil
		}
	}
	p := b[h.size:]
	if len(p) > math.MaxInt32 {
		return nil // checked counts in 32 bits; such a frame is checked whole
	}
	var tmp [256]byte // unmasked here: the frame is unmasked in place once whole
	for int(r.checked) < len(p) {
		n := copy(tmp[:], p[r.checked:])
		for i := range n {
			tmp[i] ^= h.key[(int(r.checked)+i)&3]
		}
		r.checked += int32(n)
		if !r.ahead.Write(tmp[:n]) {
			return &Error{CloseInvalidPayload, "text messages must be UTF-8"}
		}
	}
	return nil
}

// drop lets go of everything held: the stream ends here.
func (r *Reader) drop() {
	r.in, r.checked = nil, 0
	r.reset()
}

// Buffered is the number of bytes of a frame not complete yet that the
// Reader holds.
func (r *Reader) Buffered() int { return len(r.in) }
