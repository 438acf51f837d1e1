package wsproto_test

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/hubd/hub/internal/wsproto"
)

// What the tests feed and expect. A case gives the bytes a client sends as
// chops (each chop is one Feed, as one read of the socket would be) and
// the outcome as lines: one per event, then "fail CODE at chop N" when the
// stream fails, or "incomplete" when it ends inside a frame or a message.

var key = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// fr is a final masked client frame.
func fr(op wsproto.Opcode, p []byte) []byte { return frame(true, false, op, p) }

// frag is a non-final one.
func frag(op wsproto.Opcode, p []byte) []byte { return frame(false, false, op, p) }

func frame(fin, rsv1 bool, op wsproto.Opcode, p []byte) []byte {
	return wsproto.AppendClientFrame(nil, fin, rsv1, op, key, p)
}

// rsv sets the reserved bits (the value 1 to 7 as Autobahn counts them:
// 4 is RSV1, 2 RSV2, 1 RSV3) of a frame.
func rsv(bits byte, f []byte) []byte {
	f = bytes.Clone(f)
	f[0] |= bits << 4
	return f
}

// one puts frames in one chop.
func one(frames ...[]byte) [][]byte { return [][]byte{bytes.Join(frames, nil)} }

// each puts every frame in its own chop.
func each(frames ...[]byte) [][]byte { return frames }

// chops cuts the frames, together, into chops of size bytes.
func chops(size int, frames ...[]byte) [][]byte {
	all := bytes.Join(frames, nil)
	var out [][]byte
	for len(all) > size {
		out = append(out, all[:size])
		all = all[size:]
	}
	return append(out, all)
}

// octets cuts the frames into chops of one byte.
func octets(frames ...[]byte) [][]byte { return chops(1, frames...) }

// describe renders an event as the tables write it.
func describe(ev wsproto.Event) string {
	switch ev.Kind {
	case wsproto.EventMessage:
		return msg(ev.Op, ev.Data)
	case wsproto.EventPing:
		return "ping " + short(ev.Data)
	case wsproto.EventPong:
		return "pong " + short(ev.Data)
	case wsproto.EventClose:
		return fmt.Sprintf("close %d %s", ev.Code, short(ev.Data))
	}
	return fmt.Sprintf("event %d", ev.Kind)
}

// msg is the line of a message event.
func msg(op wsproto.Opcode, p []byte) string { return op.String() + " " + short(p) }

func text(s string) string { return msg(wsproto.OpText, []byte(s)) }

// short quotes a payload, or names its length and hash when long.
func short(p []byte) string {
	if len(p) <= 64 {
		return fmt.Sprintf("%q", p)
	}
	h := fnv.New64a()
	h.Write(p)
	return fmt.Sprintf("(%d bytes, fnv %016x)", len(p), h.Sum64())
}

func fail(code int) string { return fmt.Sprintf("fail %d", code) }

func failAt(code, chop int) string { return fmt.Sprintf("fail %d at chop %d", code, chop) }

// run feeds the chops (copies) to a Reader and returns the outcome lines.
func run(r *wsproto.Reader, give [][]byte) []string {
	var out []string
	closed := false
	for i, c := range give {
		err := r.Feed(bytes.Clone(c), func(ev wsproto.Event) bool {
			out = append(out, describe(ev))
			if ev.Kind == wsproto.EventClose {
				closed = true
			}
			return true
		})
		if err != nil {
			return append(out, failAt(err.Code, i+1))
		}
		if closed {
			return out // nothing is read after a close frame
		}
	}
	if r.Buffered() > 0 || r.InMessage() {
		out = append(out, "incomplete")
	}
	return out
}

// match compares outcome lines; a wanted "fail CODE" without a chop
// matches a failure at any chop.
func match(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] == want[i] {
			continue
		}
		if strings.HasPrefix(want[i], "fail ") && !strings.Contains(want[i], " at chop ") &&
			strings.HasPrefix(got[i], want[i]+" at chop ") {
			continue
		}
		return false
	}
	return true
}
