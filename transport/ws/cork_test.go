package ws

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubd/hub/hub"
	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/wsproto"
)

// readFrame is an independent reader of one unmasked server frame, with
// no reserved bit set.
func readFrame(r io.Reader) (fin bool, opcode wsproto.Opcode, payload []byte, err error) {
	fin, rsv1, opcode, payload, err := readFrameRSV1(r)
	if err == nil && rsv1 {
		err = errors.New("RSV1 set")
	}
	return fin, opcode, payload, err
}

// readFrameRSV1 reads one unmasked server frame that may have RSV1 set
// (a compressed message).
func readFrameRSV1(r io.Reader) (fin, rsv1 bool, opcode wsproto.Opcode, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	fin, rsv1, opcode = h[0]&0x80 != 0, h[0]&0x40 != 0, wsproto.Opcode(h[0]&0x0f)
	if h[0]&0x30 != 0 || h[1]&0x80 != 0 {
		return fin, rsv1, opcode, nil, fmt.Errorf("bad header % x (RSV2, RSV3 or mask set)", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
		if n < 126 {
			return fin, rsv1, opcode, nil, fmt.Errorf("length %d not in minimal form", n)
		}
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
		if n <= 0xffff {
			return fin, rsv1, opcode, nil, fmt.Errorf("length %d not in minimal form", n)
		}
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(r, payload)
	return
}

// inflate is an independent permessage-deflate reader (compress/flate,
// the 4 bytes RFC 7692 §7.2.2 leaves out put back).
func inflate(p []byte) ([]byte, error) {
	return io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}))))
}

func TestAppendTextFrameLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 100000} {
		p := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
		b := wsproto.AppendFrame([]byte("prefix"), wsproto.OpText, false, p)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatalf("%d: appended over what was there", n)
		}
		fin, op, got, err := readFrame(bytes.NewReader(b[len("prefix"):]))
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if !fin || op != 1 || !bytes.Equal(got, p) {
			t.Fatalf("%d: fin=%v opcode=%d len=%d", n, fin, op, len(got))
		}
	}
}

// TestCorkFullSocketKeepsOrder fills a socket whose reader has stopped:
// the non-blocking write reports pending instead of waiting, frames and a
// control frame written meanwhile queue behind the unwritten rest, and the
// owner's flush delivers all of it in order once the reader reads again.
func TestCorkFullSocketKeepsOrder(t *testing.T) {
	server, client := hubtest.TCPPair(t)
	c := newCorkConn(server)
	if c.raw == nil {
		t.Fatal("a TCP connection should be written with non-blocking writes")
	}
	pad := bytes.Repeat([]byte("x"), 4000)
	frame := func(i int) *hub.Message {
		return &hub.Message{Frame: append([]byte(strconv.Itoa(i)+":"), pad...)}
	}
	sent := 0
	pending := false
	for !pending {
		if sent > 100000 { // 400 MB: the socket should have been full long ago
			t.Fatal("writeFrames never reported a full socket")
		}
		start := time.Now()
		var err error
		pending, err = c.writeFrames([]*hub.Message{frame(sent), frame(sent + 1)})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("writeFrames blocked for %v", d)
		}
		sent += 2
	}
	// The socket is owned now: more frames and a control frame queue up.
	if p, err := c.writeFrames([]*hub.Message{frame(sent)}); err != nil || p {
		t.Fatalf("writeFrames while owned = %v, %v; want queued", p, err)
	}
	sent++
	if p, err := c.writeControl(wsproto.OpPing, []byte("hi")); err != nil || p {
		t.Fatalf("control frame while owned = %v, %v; want queued", p, err)
	}
	// A client that pings and never reads cannot grow the buffer without
	// end: pongs behind a stuck socket are dropped past a bound.
	for range 5000 {
		if _, err := c.writeControl(wsproto.OpPong, bytes.Repeat([]byte("p"), 100)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.buf); n > maxQueuedPongs+4*4096+200 {
		t.Fatalf("%d bytes queued behind a full socket after 5,000 pongs", n)
	}
	// What waits for the queued frames to be written runs only then.
	var ran atomic.Bool
	c.then(func() { ran.Store(true) })
	if ran.Load() {
		t.Fatal("then ran while the frames were still queued behind the owner")
	}

	type result struct {
		frames int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		r := bufio.NewReader(client)
		for i := 0; ; i++ {
			_, op, p, err := readFrame(r)
			if err != nil {
				done <- result{i, err}
				return
			}
			if i < sent {
				if op != 1 || !bytes.HasPrefix(p, []byte(strconv.Itoa(i)+":")) {
					done <- result{i, fmt.Errorf("frame %d: opcode %d, starts %q", i, op, p[:min(len(p), 10)])}
					return
				}
				continue
			}
			if op != 9 || string(p) != "hi" {
				done <- result{i, fmt.Errorf("after the events: opcode %d payload %q, want the ping", op, p)}
				return
			}
			done <- result{i + 1, nil}
			return
		}
	}()
	if err := c.flush(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !ran.Load() {
		t.Fatal("then did not run when the owner gave the socket up")
	}
	select {
	case r := <-done:
		if r.err != nil || r.frames != sent+1 {
			t.Fatalf("read %d frames of %d: %v", r.frames, sent+1, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reader did not finish")
	}
	if c.owned || c.buf != nil {
		t.Fatalf("after flush: owned=%v buffered=%d", c.owned, len(c.buf))
	}
	ran.Store(false)
	c.then(func() { ran.Store(true) })
	if !ran.Load() {
		t.Fatal("then on an idle socket did not run at once")
	}
}

// TestCorkNoFrameAfterClose: once the close frame is written, no frame
// may follow it on the wire.
func TestCorkNoFrameAfterClose(t *testing.T) {
	server, client := hubtest.TCPPair(t)
	c := newCorkConn(server)
	if _, err := c.writeFrames([]*hub.Message{{Frame: []byte("one")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.writeControl(wsproto.OpClose, wsproto.ClosePayload(1000, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.writeFrames([]*hub.Message{{Frame: []byte("two")}}); !errors.Is(err, errClosed) {
		t.Fatalf("frame after close: err = %v, want errClosed", err)
	}
	if _, err := c.writeControl(wsproto.OpPong, nil); !errors.Is(err, errClosed) {
		t.Fatalf("pong after close: err = %v, want errClosed", err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(client)
	if _, op, p, err := readFrame(r); err != nil || op != 1 || string(p) != "one" {
		t.Fatalf("first frame: %d %q %v", op, p, err)
	}
	if _, op, _, err := readFrame(r); err != nil || op != 8 {
		t.Fatalf("second frame: opcode %d, %v; want close", op, err)
	}
	server.Close()
	if _, _, _, err := readFrame(r); err == nil {
		t.Fatal("a frame followed the close frame")
	}
}
