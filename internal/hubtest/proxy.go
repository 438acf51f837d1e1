package hubtest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP forwarder on a loopback port to a target address, for a
// network the test can break: Cut closes every connection and refuses new
// ones (accepting and closing them) until Restore; Freeze makes the
// connections open now stop forwarding in both directions without closing
// (a dead NAT entry, a hung peer), while later ones forward normally.
// FromTarget and ToTarget count the bytes it forwarded each way.
// It stops, with every goroutine it started, when the test ends.
type Proxy struct {
	ln         net.Listener
	target     string
	closed     chan struct{}
	fromTarget atomic.Int64
	toTarget   atomic.Int64

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]*link
	wg    sync.WaitGroup
}

// link is one proxied connection pair; gate, when set, holds its bytes
// (a frozen link).
type link struct {
	gate atomic.Pointer[chan struct{}]
}

// StartProxy starts a Proxy to target (host:port).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &Proxy{ln: ln, target: target, closed: make(chan struct{}), conns: map[net.Conn]*link{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port, to dial instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every connection through the proxy and refuses new ones
// until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

// Freeze stops every connection open now from forwarding, without closing
// it; connections made later are not frozen.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	gate := make(chan struct{}) // never closed: frozen for good
	for _, l := range p.conns {
		l.gate.Store(&gate)
	}
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.down { // cut while dialling
			p.mu.Unlock()
			c.Close()
			up.Close()
			continue
		}
		l := &link{}
		p.conns[c] = l
		p.conns[up] = l
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(l, c, up, &p.fromTarget)
		go p.pipe(l, up, c, &p.toTarget)
	}
}

// FromTarget is the number of bytes forwarded so far from the target to
// the proxy's clients (what the target sent on the wire).
func (p *Proxy) FromTarget() int64 { return p.fromTarget.Load() }

// ToTarget is the number of bytes forwarded so far from the proxy's
// clients to the target.
func (p *Proxy) ToTarget() int64 { return p.toTarget.Load() }

// pipe copies src to dst, holding what it read while l is frozen, and adds
// what it wrote to count; when either side ends, both are closed.
func (p *Proxy) pipe(l *link, dst, src net.Conn, count *atomic.Int64) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if g := l.gate.Load(); g != nil {
				select {
				case <-*g:
				case <-p.closed:
				}
				break
			}
			w, werr := dst.Write(buf[:n])
			count.Add(int64(w))
			if werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *Proxy) close() {
	p.ln.Close()
	close(p.closed)
	p.Cut()
	p.wg.Wait()
}
