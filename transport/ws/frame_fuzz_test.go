package ws

import (
	"bytes"
	"testing"
)

// parseAll parses b (a copy) into frames until it is incomplete or broken.
func parseAll(b []byte, limit int64) (frames []frame, rest int, perr *protoError) {
	b = bytes.Clone(b)
	for {
		f, n, err := parseFrame(b, limit)
		if err != nil {
			return frames, len(b), err
		}
		if n == 0 {
			return frames, len(b), nil
		}
		if n > len(b) {
			panic("parseFrame took more than it was given")
		}
		f.payload = bytes.Clone(f.payload)
		frames = append(frames, f)
		b = b[n:]
	}
}

// FuzzParseFrame: the reader gets a client's bytes in arbitrary pieces; the
// frames (or the error) must not depend on how the stream was cut, and a
// frame must never take more bytes than it was given.
func FuzzParseFrame(f *testing.F) {
	f.Add(maskedFrame(true, opText, []byte(`{"type":"hub.pong"}`)), uint8(3))
	f.Add(append(maskedFrame(false, opText, []byte("ab")), maskedFrame(true, opContinuation, []byte("cd"))...), uint8(1))
	f.Add(maskedFrame(true, opPing, []byte("p")), uint8(2))
	f.Add(maskedFrame(true, opText, bytes.Repeat([]byte("x"), 300)), uint8(7))
	f.Add(maskedFrame(true, opText, bytes.Repeat([]byte("x"), 70000)), uint8(100))
	f.Add([]byte{0x81, 0x02, 'h', 'i'}, uint8(1))
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		const limit = 1 << 16
		whole, _, werr := parseAll(data, limit)

		// The same bytes, fed in pieces of step bytes, the way consume
		// keeps an incomplete frame for the next read.
		var got []frame
		var gerr *protoError
		var in []byte
		size := int(step)%64 + 1
	feed:
		for off := 0; off < len(data); off += size {
			in = append(in, data[off:min(off+size, len(data))]...)
			for {
				fr, n, err := parseFrame(in, limit)
				if err != nil {
					gerr = err
					break feed
				}
				if n == 0 {
					break
				}
				fr.payload = bytes.Clone(fr.payload)
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
			if got[i].fin != whole[i].fin || got[i].op != whole[i].op || !bytes.Equal(got[i].payload, whole[i].payload) {
				t.Fatalf("frame %d differs in pieces of %d", i, size)
			}
		}
	})
}

func TestParseFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte{'q'}, n)
		fr, used, err := parseFrame(maskedFrame(true, opText, p), 1<<20)
		if err != nil || used == 0 || !fr.fin || fr.op != opText || !bytes.Equal(fr.payload, p) {
			t.Fatalf("%d bytes: used %d, err %v, frame fin=%v op=%d len=%d", n, used, err, fr.fin, fr.op, len(fr.payload))
		}
		// every proper prefix is incomplete, not an error
		b := maskedFrame(true, opText, p)
		for _, k := range []int{0, 1, 2, 3, len(b) / 2, len(b) - 1} {
			if _, used, err := parseFrame(bytes.Clone(b[:k]), 1<<20); used != 0 || err != nil {
				t.Fatalf("%d bytes, prefix %d: used %d, err %v", n, k, used, err)
			}
		}
	}
}
