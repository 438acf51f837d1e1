//go:build linux

package netpoll

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hubd/hub/internal/hubtest"
)

// sockWatcher reads its socket the way the transports do: Readable runs
// Lifecycle.Read, which re-arms the socket.
type sockWatcher struct {
	l    *Lifecycle[int]
	p    *Poller
	rc   syscall.RawConn
	got  chan string
	errs chan error
}

func (w *sockWatcher) Readable() {
	buf := make([]byte, 64)
	err := w.l.Read(w.p, w, w.rc, buf, func(b []byte) bool {
		w.got <- string(b)
		return true
	})
	if err != nil {
		w.errs <- err
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// holds reports whether p has fd registered.
func (p *Poller) holds(fd int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.conns[int32(fd)]
	return ok
}

// TestLifecycleWatchReadTeardown: a watched socket is read when the client
// writes, again after Read re-armed it; the client leaving comes back as
// Read's error; Teardown takes the socket out of the poller before it
// closes it, and the poller's loop ends with it; a torn-down connection
// cannot be watched again.
func TestLifecycleWatchReadTeardown(t *testing.T) {
	server, client := hubtest.TCPPair(t)
	rc := Raw(server)
	var wg sync.WaitGroup
	p := New(&wg)
	var l Lifecycle[int]
	l.Start()
	w := &sockWatcher{l: &l, p: p, rc: rc, got: make(chan string, 16), errs: make(chan error, 1)}
	if err := l.Watch(p, w, rc); err != nil {
		t.Fatal(err)
	}
	fd := rawFD(rc)
	read := func(want string) {
		t.Helper()
		var s string
		for s != want {
			select {
			case b := <-w.got:
				s += b
			case err := <-w.errs:
				t.Fatalf("read %q, then %v", s, err)
			case <-time.After(10 * time.Second):
				t.Fatalf("read %q, want %q", s, want)
			}
		}
	}
	for _, msg := range []string{"hello", "again"} { // the second needs the re-arm
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		read(msg)
	}
	_ = client.Close()
	select {
	case err := <-w.errs:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("the client left: %v, want io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client leaving was not reported")
	}
	sock := closerFunc(func() error {
		if p.holds(fd) {
			t.Error("the socket was closed while still in the poller")
		}
		return server.Close()
	})
	if !l.Teardown(p, w, sock) {
		t.Fatal("Teardown did not tear down")
	}
	wg.Wait() // the loop ends with its last socket
	if _, err := server.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Teardown: %v, want the socket closed", err)
	}
	if err := l.Watch(p, w, rc); !errors.Is(err, ErrClosed) {
		t.Fatalf("Watch after Teardown: %v, want ErrClosed", err)
	}
	if p.holds(fd) {
		t.Fatal("a torn-down connection was watched again")
	}
	if err := l.Watch(p, w, nil); !errors.Is(err, ErrNotSocket) {
		t.Fatalf("Watch without a socket: %v, want ErrNotSocket", err)
	}
}

// TestLifecycleWatchRacesTeardown: Watch and Teardown at the same time
// (the handshake's goroutine registering the socket while the hub's close
// tears it down) never leave a closed socket in the poller.
func TestLifecycleWatchRacesTeardown(t *testing.T) {
	var wg sync.WaitGroup
	p := New(&wg)
	for range 100 {
		server, _ := hubtest.TCPPair(t)
		rc := Raw(server)
		fd := rawFD(rc)
		var l Lifecycle[int]
		l.Start()
		w := &sockWatcher{l: &l, p: p, rc: rc, got: make(chan string, 16), errs: make(chan error, 1)}
		var race sync.WaitGroup
		race.Go(func() {
			if err := l.Watch(p, w, rc); err != nil && !errors.Is(err, ErrClosed) {
				t.Error(err)
			}
		})
		race.Go(func() {
			l.Teardown(p, w, closerFunc(func() error {
				if p.holds(fd) {
					t.Error("the socket was closed while still in the poller")
				}
				return server.Close()
			}))
		})
		race.Wait()
		if p.holds(fd) {
			t.Fatal("a torn-down socket stayed in the poller")
		}
	}
	wg.Wait() // nothing is left in the poller: its loop has ended
}

// TestLifecycleReadableAtWatch: a socket that is readable as it is watched
// is reported at once, possibly before Watch returns; the read must still
// re-arm it, or the next bytes (or the client leaving) go unnoticed.
func TestLifecycleReadableAtWatch(t *testing.T) {
	var wg sync.WaitGroup
	p := New(&wg)
	for i := range 300 {
		server, client := hubtest.TCPPair(t)
		rc := Raw(server)
		var l Lifecycle[int]
		l.Start()
		w := &sockWatcher{l: &l, p: p, rc: rc, got: make(chan string, 16), errs: make(chan error, 1)}
		if _, err := client.Write([]byte("a")); err != nil {
			t.Fatal(err)
		}
		if err := l.Watch(p, w, rc); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"a", "b"} {
			select {
			case got := <-w.got:
				if got != want {
					t.Fatalf("iteration %d: read %q, want %q", i, got, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("iteration %d: %q was not reported (the socket was not re-armed)", i, want)
			}
			if want == "a" {
				if _, err := client.Write([]byte("b")); err != nil {
					t.Fatal(err)
				}
			}
		}
		l.Teardown(p, w, server)
		_ = client.Close()
	}
	wg.Wait()
}
