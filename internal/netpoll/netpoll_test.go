package netpoll_test

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubd/hub/internal/hubtest"
	"github.com/hubd/hub/internal/netpoll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTryReadTryWriteNeverWait(t *testing.T) {
	server, client := hubtest.TCPPair(t)
	rc := netpoll.Raw(server)
	if rc == nil {
		t.Skip("no raw sockets on this system")
	}
	buf := make([]byte, 64)
	if n, err := netpoll.TryRead(rc, buf); n != 0 || err != nil {
		t.Fatalf("empty socket: %d, %v; want 0, nil without waiting", n, err)
	}
	if _, err := client.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := netpoll.TryRead(rc, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			if string(buf[:n]) != "hi" {
				t.Fatalf("read %q", buf[:n])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the bytes never arrived")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	// The client does not read: writes fill the socket and then report a
	// partial write instead of blocking.
	big := make([]byte, 1<<20)
	total := 0
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("the socket never filled")
		}
		start := time.Now()
		n, err := netpoll.TryWrite(rc, big)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("TryWrite waited")
		}
		total += n
		if n < len(big) {
			break
		}
	}
	_ = client.Close()
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, err := netpoll.TryRead(rc, buf)
		// the client closed with unread data, so the kernel resets
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			break
		}
		if err != nil {
			t.Fatalf("after the peer closed: %v, want io.EOF or a reset", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the peer's close was never seen")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}
