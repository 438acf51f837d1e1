package netpoll

import (
	"sync"
	"sync/atomic"
	"testing"
)

type closeCounter struct{ n atomic.Int32 }

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

// nopWatcher is a Watcher that is never reported (its socket is never
// watched in these tests).
type nopWatcher struct{}

func (nopWatcher) Readable() {}

// TestLifecycleTransitions: every event from every state, as the table in
// Lifecycle's doc comment says.
func TestLifecycleTransitions(t *testing.T) {
	const (
		start    = "Start"
		closeEv  = "Close"
		quit     = "Quit"
		teardown = "Teardown"
	)
	tests := []struct {
		give  State
		event string
		want  State
		ok    bool  // Start: aborted; Close: the caller closes; Quit, Teardown: their result
		from  State // Close: the state it reports
	}{
		{give: StateNew, event: start, want: StateOpen},
		{give: StateNew, event: closeEv, want: StateAborted, from: StateNew},
		{give: StateNew, event: quit, want: StateNew},
		{give: StateNew, event: teardown, want: StateClosed, ok: true},

		{give: StateAborted, event: start, want: StateClosing, ok: true},
		{give: StateAborted, event: closeEv, want: StateAborted, from: StateAborted},
		{give: StateAborted, event: quit, want: StateAborted},
		{give: StateAborted, event: teardown, want: StateClosed, ok: true},

		{give: StateOpen, event: start, want: StateOpen},
		{give: StateOpen, event: closeEv, want: StateClosing, ok: true, from: StateOpen},
		{give: StateOpen, event: quit, want: StateQuitting, ok: true},
		{give: StateOpen, event: teardown, want: StateClosed, ok: true},

		{give: StateQuitting, event: start, want: StateQuitting},
		{give: StateQuitting, event: closeEv, want: StateClosing, ok: true, from: StateQuitting},
		{give: StateQuitting, event: quit, want: StateQuitting, ok: true},
		{give: StateQuitting, event: teardown, want: StateClosed, ok: true},

		{give: StateClosing, event: start, want: StateClosing},
		{give: StateClosing, event: closeEv, want: StateClosing, from: StateClosing},
		{give: StateClosing, event: quit, want: StateClosing},
		{give: StateClosing, event: teardown, want: StateClosed, ok: true},

		{give: StateClosed, event: start, want: StateClosed},
		{give: StateClosed, event: closeEv, want: StateClosed, from: StateClosed},
		{give: StateClosed, event: quit, want: StateClosed},
		{give: StateClosed, event: teardown, want: StateClosed},
	}
	for _, tt := range tests {
		t.Run(tt.give.String()+"/"+tt.event, func(t *testing.T) {
			var l Lifecycle[int]
			l.state.Store(uint32(tt.give))
			if tt.give == StateAborted {
				r := 42
				l.early.Store(&r)
			}
			var sock closeCounter
			var ok bool
			switch tt.event {
			case start:
				var r int
				r, ok = l.Start()
				if ok && r != 42 {
					t.Errorf("Start handed back %d, want the reason Close kept (42)", r)
				}
			case closeEv:
				var from State
				from, ok = l.Close(7)
				if from != tt.from {
					t.Errorf("Close reported %v, want %v", from, tt.from)
				}
				if r := l.early.Load(); tt.give == StateNew && (r == nil || *r != 7) {
					t.Errorf("Close in New kept %v, want 7 for Start", r)
				}
			case quit:
				ok = l.Quit()
			case teardown:
				ok = l.Teardown(nil, nopWatcher{}, &sock)
				if want := int32(0); ok {
					want = 1
					if n := sock.n.Load(); n != want {
						t.Errorf("socket closed %d times, want %d", n, want)
					}
				}
			}
			if got := l.State(); got != tt.want {
				t.Errorf("%v after %s: %v, want %v", tt.give, tt.event, got, tt.want)
			}
			if ok != tt.ok {
				t.Errorf("%s from %v reported %v, want %v", tt.event, tt.give, ok, tt.ok)
			}
			if l.State() < tt.give {
				t.Errorf("went back from %v to %v", tt.give, l.State())
			}
		})
	}
}

// TestLifecycleAbortBeforeStart: the hub's Close before Start is not lost:
// Start hands the reason back and the connection is Closing.
func TestLifecycleAbortBeforeStart(t *testing.T) {
	var l Lifecycle[string]
	if from, ok := l.Close("slow"); ok || from != StateNew {
		t.Fatalf("Close before Start: %v %v, want New and no close yet", from, ok)
	}
	r, aborted := l.Start()
	if !aborted || r != "slow" || l.State() != StateClosing {
		t.Fatalf("Start after Close: %q %v %v, want the reason, aborted, Closing", r, aborted, l.State())
	}
	if _, ok := l.Close("again"); ok {
		t.Fatal("a second close was handed out")
	}
}

// TestLifecycleRaces: goroutines that race to end a connection agree: one
// Close wins, one Teardown closes the socket, and the reader's Quit and the
// hub's Close never both think the other has not happened.
func TestLifecycleRaces(t *testing.T) {
	for range 200 {
		var l Lifecycle[int]
		l.Start()
		var wins, tears atomic.Int32
		var quitFirst atomic.Bool
		var closedFrom atomic.Uint32
		var sock closeCounter
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				if from, ok := l.Close(i); ok {
					wins.Add(1)
					closedFrom.Store(uint32(from))
				}
			})
			wg.Go(func() {
				if l.Teardown(nil, nopWatcher{}, &sock) {
					tears.Add(1)
				}
			})
		}
		wg.Go(func() {
			quitFirst.Store(l.Quit())
		})
		wg.Wait()
		if n := tears.Load(); n != 1 {
			t.Fatalf("%d teardowns, want 1", n)
		}
		if n := sock.n.Load(); n != 1 {
			t.Fatalf("socket closed %d times, want 1", n)
		}
		if n := wins.Load(); n > 1 {
			t.Fatalf("%d closes handed out, want at most 1", n)
		}
		if wins.Load() == 1 && quitFirst.Load() != (State(closedFrom.Load()) == StateQuitting) {
			t.Fatalf("Quit reported %v but the close came from %v", quitFirst.Load(), State(closedFrom.Load()))
		}
		if l.State() != StateClosed {
			t.Fatalf("ended %v, want closed", l.State())
		}
	}
}
