//go:build linux

package netpoll

import (
	"sync"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

type watcher struct {
	name string
	got  chan<- Watcher
}

func (w *watcher) Readable() { w.got <- w }

// TestPollerReportsReadableOnce: a registered socket is reported once per
// arming, even while its data stays unread; the loop ends when the last
// socket is removed (goleak).
func TestPollerReportsReadableOnce(t *testing.T) {
	server, client := hubtest.TCPPair(t)
	rc := Raw(server)
	if rc == nil {
		t.Skip("no raw sockets on this system")
	}
	var wg sync.WaitGroup
	got := make(chan Watcher, 1000) // a report per loop turn would fill it
	p := New(&wg)
	w := &watcher{name: "a", got: got}
	fd := rawFD(rc)
	if err := p.add(w, fd); err != nil {
		t.Skipf("no poller here: %v", err)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case x := <-got:
			if x != Watcher(w) {
				t.Fatalf("%s: dispatched %v", what, x)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: a readable socket was not reported", what)
		}
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	wait("first")
	// Nothing is read: the socket stays readable, but is not reported again
	// until it is re-armed.
	if _, err := client.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	p.rearm(w, fd)
	wait("after the re-arm")
	p.remove(w, fd)
	wg.Wait() // the loop ends with its last socket
	if n := len(got); n != 0 {
		t.Fatalf("%d more reports: a one-shot registration was reported again without a re-arm", n)
	}
}
