package wsproto_test

import (
	"bytes"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/hubd/hub/internal/wsproto"
)

// parseAll parses b (a copy) into frames until it is incomplete or broken.
func parseAll(b []byte, limit int64, deflate bool) (frames []wsproto.Frame, perr *wsproto.Error) {
	b = bytes.Clone(b)
	for {
		f, n, err := wsproto.ParseFrame(b, limit, deflate)
		if err != nil || n == 0 {
			return frames, err
		}
		if n > len(b) {
			panic("ParseFrame took more than it was given")
		}
		f.Payload = bytes.Clone(f.Payload)
		frames = append(frames, f)
		b = b[n:]
	}
}

func fuzzSeeds(f *testing.F) {
	f.Add(fr(textOp, []byte(`{"type":"hub.pong"}`)), uint8(3), false)
	f.Add(append(frag(textOp, []byte("ab")), fr(contOp, []byte("cd"))...), uint8(1), false)
	f.Add(fr(pingOp, []byte("p")), uint8(2), false)
	f.Add(fr(textOp, bytes.Repeat([]byte("x"), 300)), uint8(7), false)
	f.Add(fr(textOp, bytes.Repeat([]byte("x"), 70000)), uint8(100), false)
	f.Add([]byte{0x81, 0x02, 'h', 'i'}, uint8(1), false)
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, uint8(4), false)
	f.Add(append(frag(textOp, []byte("\xce\xba\xe1")), fr(contOp, []byte("\xbd\xb9"))...), uint8(5), false)
	f.Add(append(fr(textOp, []byte("\xf4\x90\x80\x80")), fr(closeOp, code(1000, "bye"))...), uint8(3), false)
	f.Add(compressed(textOp, bytes.Repeat([]byte(`{"k":"v"}`), 100), 16), uint8(9), true)
	f.Add(frame(true, true, textOp, wsproto.Deflate(nil, make([]byte, 10000))), uint8(6), true)
}

// FuzzParseFrame: the parser gets a client's bytes in arbitrary pieces;
// the frames (or the error) must not depend on how the stream was cut,
// and a frame must never take more bytes than it was given.
func FuzzParseFrame(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, step uint8, deflate bool) {
		const limit = 1 << 16
		whole, werr := parseAll(data, limit, deflate)

		var got []wsproto.Frame
		var gerr *wsproto.Error
		var in []byte
		size := int(step)%64 + 1
	feed:
		for off := 0; off < len(data); off += size {
			in = append(in, data[off:min(off+size, len(data))]...)
			for {
				fr, n, err := wsproto.ParseFrame(in, limit, deflate)
				if err != nil {
					gerr = err
					break feed
				}
				if n == 0 {
					break
				}
				fr.Payload = bytes.Clone(fr.Payload)
				got = append(got, fr)
				in = in[n:]
			}
		}
		if (werr == nil) != (gerr == nil) || (werr != nil && *werr != *gerr) {
			t.Fatalf("error whole %v, in pieces of %d %v", werr, size, gerr)
		}
		if len(got) != len(whole) {
			t.Fatalf("%d frames whole, %d in pieces of %d", len(whole), len(got), size)
		}
		for i := range got {
			if got[i].Fin != whole[i].Fin || got[i].RSV1 != whole[i].RSV1 || got[i].Op != whole[i].Op || !bytes.Equal(got[i].Payload, whole[i].Payload) {
				t.Fatalf("frame %d differs in pieces of %d", i, size)
			}
		}
	})
}

// FuzzReader feeds random bytes through the whole reader (parser,
// assembler, control-frame rules, UTF-8, inflation): whole and in pieces
// it must say the same thing (the events, then the same failure, or the
// same incomplete end), never hand over a message over its limit, a text
// message that is not UTF-8, a control payload over 125 bytes, or
// anything after the close.
func FuzzReader(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, step uint8, deflate bool) {
		const limit = 4096
		feed := func(pieces [][]byte) []string {
			r := &wsproto.Reader{}
			r.Limit, r.Deflate = limit, deflate
			var out []string
			closed := false
			for _, p := range pieces {
				err := r.Feed(bytes.Clone(p), func(ev wsproto.Event) bool {
					if closed {
						t.Fatal("an event after the close")
					}
					switch ev.Kind {
					case wsproto.EventMessage:
						if len(ev.Data) > limit {
							t.Fatalf("a message of %d bytes, over the limit", len(ev.Data))
						}
						if ev.Op == wsproto.OpText && !utf8.Valid(ev.Data) {
							t.Fatalf("a text message that is not UTF-8: %q", ev.Data)
						}
					case wsproto.EventPing, wsproto.EventPong:
						if len(ev.Data) > 125 {
							t.Fatal("a control payload over 125 bytes")
						}
					case wsproto.EventClose:
						closed = true
						if ev.Code != 1005 && !wsproto.ValidCloseCode(ev.Code) || !utf8.Valid(ev.Data) {
							t.Fatalf("close %d %q", ev.Code, ev.Data)
						}
					}
					out = append(out, describe(ev))
					return true
				})
				if err != nil {
					return append(out, fail(err.Code)+" "+err.Reason)
				}
				if closed {
					return out
				}
			}
			if r.Buffered() > 0 || r.InMessage() {
				out = append(out, "incomplete")
			}
			return out
		}
		whole := feed([][]byte{data})
		pieces := feed(chops(int(step)%64+1, data))
		if !slices.Equal(whole, pieces) {
			t.Fatalf("whole: %q\nin pieces of %d: %q", whole, int(step)%64+1, pieces)
		}
	})
}
