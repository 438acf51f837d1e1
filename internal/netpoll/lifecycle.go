package netpoll

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// State is where a connection is in its Lifecycle. States only move
// forward, in the order of the constants, so "closing or closed" is
// State() >= StateClosing. In the doc comments they go by their short
// names (New, Open...).
type State uint32

const (
	// StateNew: registered with the hub while the transport still takes the
	// socket over (hijack, handshake answer). Nothing is read or written
	// yet, and a Wake is ignored: the transport drains once after Start.
	StateNew State = iota
	// StateAborted: New, and the hub asked for the connection to be closed at
	// once (Close) before Start; Start hands the reason back.
	StateAborted
	// StateOpen: serving. The reader handles what the client sends, a writer
	// writes what the hub queued.
	StateOpen
	// StateQuitting: the reader ended the connection (the client's close, a
	// message that fails it): what the client sends next is ignored, and
	// the close goes out through the hub's queue, after what is already
	// queued. The writer that takes it closes the socket right after,
	// without waiting for the client.
	StateQuitting
	// StateClosing: the close is decided, and the goroutine whose Close moved
	// the connection here carries it out: no more events are written, the
	// socket is still open (a close frame going out, the client's answer
	// awaited).
	StateClosing
	// StateClosed: torn down, out of the poller and the socket closed. Final.
	StateClosed
)

var stateNames = [...]string{"new", "aborted", "open", "quitting", "closing", "closed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Lifecycle is the life of one connection of a transport (a WebSocket, a
// taken-over SSE stream) from its registration with the hub to the close
// of its socket, in one word that only moves forward, and its socket's
// place in the Poller. It replaces per-transport flags (ready, dead, torn,
// quit...): every transition is one atomic step, so two goroutines that
// race to end a connection (the hub's close, the client's, a failed write,
// a missing pong) agree on which of them does it. R is the transport's
// close reason. The zero value is New (StateNew).
//
// Transitions (anything else leaves the state as it is):
//
//	from      Start        Close(r)                 Quit       Teardown
//	New       Open         Aborted (r kept)         -          Closed
//	Aborted   Closing (r)  -                        -          Closed
//	Open      -            Closing (caller closes)  Quitting   Closed
//	Quitting  -            Closing (caller closes)  (stays)    Closed
//	Closing   -            -                        -          Closed
//	Closed    -            -                        -          -
//
// Who calls what, and who owns the socket meanwhile:
//
//   - The handler calls Start once, when the connection is ready to be
//     written (New → Open). It then either puts the socket in the poller
//     (Watch) or reads it on a goroutine of its own (ReadBlocking, for
//     TLS or where there is no epoll). Before Watch the goroutine that
//     runs the handshake reads the bytes that came with it.
//   - Reading: one reader at a time. A watched socket is reported once
//     per arming (one-shot epoll): the poller runs Watcher.Readable on a
//     goroutine, which reads with Read and re-arms the socket when done,
//     handing reading back to the poller; once the reader stops (the
//     client's close frame, a frame that fails the connection) the socket
//     is not re-armed.
//   - Writing: the hub wakes the transport once per empty→non-empty
//     change of the queue, so there is one writer at a time (a pool
//     writer, or the goroutine the connection gets when its socket is
//     full); the transport orders its own control frames against it. A
//     writer checks State before writing events: from Closing on it
//     writes none.
//   - Closing: Close (by the hub's Abort, or by the writer that took the
//     hub's close reason from the queue) and Quit (by the reader) decide
//     the end; exactly one Close returns ok, and its caller closes.
//   - Teardown may come from any goroutine (the close's timer, a failed
//     read or write, the pinger); the first one wins. It is the one place
//     that closes a watched socket, and it takes the socket out of the
//     poller before closing it (a closed descriptor's number is reused at
//     once). A read in progress keeps the descriptor alive until it
//     returns (the runtime counts it), so it fails instead of reading
//     another socket.
type Lifecycle[R any] struct {
	state atomic.Uint32
	fd    atomic.Int32      // the socket's descriptor + 1 while it is in the poller, else 0 (written under mu)
	mu    sync.Mutex        // orders Watch against Teardown
	early atomic.Pointer[R] // the reason of the first Close in New, for Start
}

// ErrClosed is returned by Watch for a connection already torn down:
// there is nothing to watch.
var ErrClosed = errors.New("netpoll: connection closed")

// ErrNotSocket is returned by Watch for a connection without a raw socket
// (TLS): it is read on a goroutine of its own.
var ErrNotSocket = errors.New("netpoll: not a plain socket")

// State reports where the connection is.
func (l *Lifecycle[R]) State() State { return State(l.state.Load()) }

func (l *Lifecycle[R]) cas(from, to State) bool {
	return l.state.CompareAndSwap(uint32(from), uint32(to))
}

// Start moves a New connection to Open. If the hub closed it before
// (Aborted), the connection goes to Closing instead and Start returns the
// reason with aborted true: the caller then closes it, as Close's caller
// would have. Called once.
func (l *Lifecycle[R]) Start() (r R, aborted bool) {
	if l.cas(StateNew, StateOpen) {
		return r, false
	}
	if l.cas(StateAborted, StateClosing) {
		return *l.early.Load(), true
	}
	return r, false
}

// Close decides that the connection closes with r. From Open or Quitting
// it moves to Closing and returns the state it left with ok true: the
// caller, the only one, closes the connection (from Quitting, without
// waiting for the client). From New the reason is kept for Start
// (Aborted). Otherwise the close is already decided and Close returns the
// current state with ok false. Close closes nothing itself.
func (l *Lifecycle[R]) Close(r R) (from State, ok bool) {
	for {
		switch s := l.State(); s {
		case StateOpen, StateQuitting:
			if l.cas(s, StateClosing) {
				return s, true
			}
		case StateNew:
			l.early.CompareAndSwap(nil, &r)
			if l.cas(StateNew, StateAborted) {
				return StateNew, false
			}
		default:
			return s, false
		}
	}
}

// Quit is the reader ending the connection: Open moves to Quitting, and
// Quit reports true while the connection is Quitting; the reader then asks
// for the close through the hub's queue. It reports false once the close
// is decided otherwise (Closing, Closed): the close is already on its way.
func (l *Lifecycle[R]) Quit() bool {
	return l.cas(StateOpen, StateQuitting) || l.State() == StateQuitting
}

// Teardown ends the connection once, from any state: it moves to Closed,
// takes the socket out of p (where Watch put it) and then closes sock.
// Only the first call does it and reports true; its caller then releases
// what the connection holds (hub registration, admission slot).
func (l *Lifecycle[R]) Teardown(p *Poller, w Watcher, sock io.Closer) bool {
	for {
		s := l.State()
		if s == StateClosed {
			return false
		}
		if l.cas(s, StateClosed) {
			break
		}
	}
	l.mu.Lock()
	fd := l.fd.Swap(0)
	l.mu.Unlock()
	if fd > 0 {
		p.remove(w, int(fd-1)) // before the descriptor is closed (and reused)
	}
	_ = sock.Close()
	return true
}

// Watch puts the socket of rc in p: from then on, w.Readable runs once the
// socket has something to read or the client left. It fails with ErrClosed
// when the connection was torn down (nothing to watch), with ErrNotSocket
// when rc is nil, and with the poller's error where there is no epoll: the
// caller then reads with ReadBlocking.
func (l *Lifecycle[R]) Watch(p *Poller, w Watcher, rc syscall.RawConn) error {
	if rc == nil {
		return ErrNotSocket
	}
	fd := rawFD(rc)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.State() == StateClosed {
		return ErrClosed
	}
	// The descriptor is known before the socket is in the poller: a socket
	// readable at once is reported before add returns, and its read must
	// find the descriptor to re-arm it.
	l.fd.Store(int32(fd) + 1)
	if err := p.add(w, fd); err != nil {
		l.fd.Store(0)
		return err
	}
	return nil
}

// readTurns is how many bufferfuls one Read takes before it lets other
// connections have a turn (the socket is re-armed and reported again).
const readTurns = 16

// Read is Watcher.Readable's loop: it reads what rc holds into buf without
// waiting and hands every piece to consume (nil drops what is read), then
// re-arms the socket in p. It does not re-arm once consume reports false
// (the connection stops reading), nor once the connection is torn down; it
// returns the read's error when the socket failed (io.EOF, a reset): the
// caller tears the connection down.
func (l *Lifecycle[R]) Read(p *Poller, w Watcher, rc syscall.RawConn, buf []byte, consume func([]byte) bool) error {
	if l.State() == StateClosed {
		return nil
	}
	for range readTurns {
		n, err := TryRead(rc, buf)
		if n > 0 && consume != nil && !consume(buf[:n]) {
			return nil
		}
		if err != nil {
			return err
		}
		if n < len(buf) {
			break
		}
	}
	if fd := l.fd.Load(); fd > 0 {
		p.rearm(w, int(fd-1))
	}
	return nil
}

// ReadBlocking reads nc on the calling goroutine, for a connection the
// poller cannot watch, handing every piece to consume (nil drops what is
// read) until consume reports false (it returns nil) or the read fails
// (it returns the error: the caller tears the connection down).
func ReadBlocking(nc net.Conn, buf []byte, consume func([]byte) bool) error {
	for {
		n, err := nc.Read(buf)
		if n > 0 && consume != nil && !consume(buf[:n]) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
