//go:build linux

package netpoll

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller tells which idle connections have something to read, so that an
// idle connection holds no goroutine: every connection's socket is in one
// epoll instance (one-shot: reported once, then re-armed after the read),
// and that instance is itself polled by the Go runtime's network poller, so
// the loop goroutine parks like any network read instead of holding a
// thread in epoll_wait. The loop runs only while a connection is
// registered.
type Poller struct {
	mu    sync.Mutex
	f     *os.File // the epoll instance; nil while no connection is registered
	epfd  int
	conns map[int32]Watcher
	wg    *sync.WaitGroup
}

// New returns a poller whose loop, and the goroutines that run
// Watcher.Readable, are counted in wg.
func New(wg *sync.WaitGroup) *Poller {
	return &Poller{conns: make(map[int32]Watcher), wg: wg}
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// add registers the socket fd for w; w is reported once the socket is
// readable (or hung up) and must then be re-armed with rearm. Only
// Lifecycle calls add, rearm and remove.
func (p *Poller) add(c Watcher, fd int) error {
	p.mu.Lock()
	if p.f == nil {
		if err := p.startLocked(); err != nil {
			p.mu.Unlock()
			return err
		}
	}
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		f := p.detachIfEmptyLocked()
		p.mu.Unlock()
		closeFile(f)
		return os.NewSyscallError("epoll_ctl add", err)
	}
	p.conns[int32(fd)] = c
	p.mu.Unlock()
	return nil
}

func (p *Poller) startLocked() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(epfd), "netpoll-epoll") // non-blocking: polled by the runtime
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return err
	}
	p.f, p.epfd = f, epfd
	p.wg.Add(1)
	go p.loop(rc)
	return nil
}

// rearm asks for the next readiness report of w's socket.
func (p *Poller) rearm(c Watcher, fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[int32(fd)] != c {
		return // removed (and the descriptor perhaps reused)
	}
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(fd)}
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// remove unregisters w's socket; it must come before the socket is closed
// (its descriptor may be reused at once): Lifecycle.Teardown.
func (p *Poller) remove(c Watcher, fd int) {
	p.mu.Lock()
	if p.conns[int32(fd)] != c {
		p.mu.Unlock()
		return
	}
	delete(p.conns, int32(fd))
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	f := p.detachIfEmptyLocked()
	p.mu.Unlock()
	closeFile(f)
}

// detachIfEmptyLocked lets the epoll instance go when nothing is
// registered; the caller closes it after unlocking (closing waits for the
// loop's read, which may itself be waiting for p.mu), and the loop then
// wakes with an error and ends. A later Add starts a new instance.
func (p *Poller) detachIfEmptyLocked() *os.File {
	if len(p.conns) > 0 || p.f == nil {
		return nil
	}
	f := p.f
	p.f, p.epfd = nil, -1
	return f
}

func closeFile(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}

func (p *Poller) loop(rc syscall.RawConn) {
	defer p.wg.Done()
	events := make([]unix.EpollEvent, 128)
	var ready []Watcher
	for {
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, err := unix.EpollWait(int(fd), events, 0)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if n <= 0 {
					return false // nothing ready: park until the instance is readable
				}
				p.mu.Lock()
				for _, ev := range events[:n] {
					if c := p.conns[ev.Fd]; c != nil {
						ready = append(ready, c)
					}
				}
				p.mu.Unlock()
				return true
			}
		})
		if err != nil {
			return // closed: nothing is registered any more
		}
		for _, c := range ready {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				c.Readable()
			}()
		}
		clear(ready)
		ready = ready[:0]
	}
}
